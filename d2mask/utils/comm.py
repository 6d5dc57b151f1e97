"""Helpers for code that runs the same in one process and in a torch.distributed job.

Every function works without an initialised process group (it then acts as a job of one process),
so model, data and engine code call them unconditionally.
"""
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "shared_random_seed",
    "reduce_dict",
    "create_local_process_group",
]

# The processes of this machine, created by `create_local_process_group` (called by `launch`).
_LOCAL_PROCESS_GROUP: Optional[dist.ProcessGroup] = None
_GLOO_GROUP: Optional[dist.ProcessGroup] = None


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 without torch.distributed)."""
    return dist.get_world_size() if _initialized() else 1


def get_rank() -> int:
    """This process's rank in the job (0 without torch.distributed)."""
    return dist.get_rank() if _initialized() else 0


def get_local_rank() -> int:
    """This process's rank among the processes of its machine; also the index of its GPU."""
    if not _initialized():
        return 0
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_rank(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_RANK", 0))


def get_local_size() -> int:
    """Number of processes of the job running on this machine."""
    if not _initialized():
        return 1
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_WORLD_SIZE", get_world_size()))


def is_main_process() -> bool:
    return get_rank() == 0


def create_local_process_group(num_workers_per_machine: int) -> None:
    """Creates the group of processes sharing this machine (ranks are numbered machine by machine).

    Collective: every process of the job must call it, with the same argument.
    """
    global _LOCAL_PROCESS_GROUP
    world_size = get_world_size()
    if world_size % num_workers_per_machine != 0:
        raise ValueError(
            f"World size {world_size} is not a multiple of the {num_workers_per_machine} processes per machine"
        )
    machine = get_rank() // num_workers_per_machine
    for i in range(world_size // num_workers_per_machine):
        ranks = list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine))
        group = dist.new_group(ranks)  # new_group is collective over all ranks, even non-members
        if i == machine:
            _LOCAL_PROCESS_GROUP = group


def synchronize() -> None:
    """A barrier across all processes; a no-op in a job of one process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        # NCCL's barrier must know the device, or it guesses one from the rank
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _object_group() -> Optional[dist.ProcessGroup]:
    """The group for pickled-object collectives: a gloo group under NCCL, so that they never take
    GPU memory or NCCL streams; the default group (None) otherwise."""
    global _GLOO_GROUP
    if dist.get_backend() != dist.Backend.NCCL:
        return None
    if _GLOO_GROUP is None:
        _GLOO_GROUP = dist.new_group(backend="gloo")
    return _GLOO_GROUP


def all_gather(data: Any, group: Optional[dist.ProcessGroup] = None) -> List[Any]:
    """Every process's `data` (any picklable object), in rank order, returned on every process."""
    if get_world_size() == 1:
        return [data]
    group = group or _object_group()
    out: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, data, group=group)
    return out


def gather(data: Any, dst: int = 0, group: Optional[dist.ProcessGroup] = None) -> List[Any]:
    """Every process's `data` in rank order on rank `dst`; an empty list on the other ranks."""
    if get_world_size() == 1:
        return [data]
    group = group or _object_group()
    if dist.get_rank(group) == dst:
        out: List[Any] = [None] * dist.get_world_size(group)
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random integer drawn by rank 0 and returned on every rank (e.g. to seed a sampler)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def reduce_dict(input_dict: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """Sums (or averages) scalar tensors over all processes; the result is valid on rank 0 only.

    Args:
        input_dict: the same keys on every process, each a scalar tensor.
        average: divide the sum by the world size.
    """
    world_size = get_world_size()
    if world_size == 1:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k] for k in names])  # one collective for all the keys
        dist.reduce(values, dst=0)
        if average and dist.get_rank() == 0:
            values /= world_size
    return dict(zip(names, values))
