"""Starting a function on one process per GPU, on one or several machines.

`launch(main, num_gpus_per_machine, num_machines, machine_rank, dist_url, args)` either
- runs `main(*args)` in this process (a job of one process),
- joins the job a launcher already set up (torchrun; SLURM's srun with one task per GPU), or
- spawns one process per GPU of this machine and joins them to the job at `dist_url`.
NCCL is used on GPUs, gloo on CPU (where several processes are allowed, e.g. for tests). If any
process raises or dies, the others are ended and `launch` raises with that process's traceback;
a process stopped by a user error (`USER_ERRORS`) prints its message alone instead.
"""
import contextlib
import ctypes
import datetime
import errno
import logging
import os
import signal
import socket
import sys
import traceback
from typing import Any, Callable, Iterator, Optional, Sequence
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm
from .errors import EXIT_USER_ERROR, USER_ERRORS, LaunchError, TrainingInterrupted, user_error_message
from .rendezvous import DEFAULT_JOIN_TIMEOUT, check_dist_url, join_process_group

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _check_port_free(dist_url: str) -> None:
    """Raises a clear error if the rendezvous port of a tcp:// URL is taken on this machine."""
    url = urlparse(dist_url)
    if url.scheme != "tcp" or url.port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", url.port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"--dist-url {dist_url}: port {url.port} is already in use on this machine; "
                    f"choose another port, or --dist-url auto on a single machine"
                ) from None
            raise


def _launcher_env(num_gpus_per_machine: int, num_machines: int) -> Optional[dict]:
    """Rank information when a launcher started this process as one rank of the job, else None.

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK. SLURM sets SLURM_PROCID and SLURM_NTASKS for every
    task; it is a rank of the job only when srun started one task per GPU (SLURM_NTASKS equals the
    job's world size); with one task per machine, `launch` spawns the GPUs' processes itself.
    """
    env = os.environ
    if {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= env.keys():
        return {
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env["LOCAL_RANK"]),
            "local_size": int(env.get("LOCAL_WORLD_SIZE", num_gpus_per_machine)),
        }
    world_size = num_machines * num_gpus_per_machine
    if "SLURM_PROCID" in env and world_size > 1 and int(env.get("SLURM_NTASKS", 1)) == world_size:
        return {
            "rank": int(env["SLURM_PROCID"]),
            "world_size": world_size,
            "local_rank": int(env.get("SLURM_LOCALID", 0)),
            "local_size": num_gpus_per_machine,
        }
    return None


def _local_device_index(local_rank: int, local_size: int) -> int:
    """The index, among the GPUs this process sees, of its own GPU: its local rank when it sees every
    GPU of its machine; 0 when it sees one (srun --gpus-per-task=1, a GPU cgroup, a launcher setting
    CUDA_VISIBLE_DEVICES per process)."""
    visible = torch.cuda.device_count()
    if visible >= local_size:
        return local_rank
    if visible == 1:
        return 0
    raise LaunchError(
        f"Local rank {local_rank} of {local_size} processes sees {visible} GPUs: neither its own GPU alone nor "
        f"every GPU of the machine, so it cannot tell which one is its own; give each process one GPU "
        f"(srun --gpus-per-task=1) or all of them"
    )


def _join_launched_job(
    info: dict, dist_url: Optional[str], timeout: datetime.timedelta, join_timeout: datetime.timedelta
) -> None:
    """Initialises torch.distributed for a process started by torchrun or srun."""
    if torch.cuda.is_available():
        torch.cuda.set_device(_local_device_index(info["local_rank"], info["local_size"]))
    if dist_url in (None, "auto") or dist_url.startswith("env://"):
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise RuntimeError(
                "This process was started by a launcher without MASTER_ADDR/MASTER_PORT; pass "
                "--dist-url tcp://HOST:PORT naming the machine of rank 0 (see docs/training.md)"
            )
        dist_url = "env://"
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    join_process_group(
        backend, dist_url, world_size=info["world_size"], rank=info["rank"], ranks_per_machine=info["local_size"],
        timeout=timeout, join_timeout=join_timeout,
    )
    comm.create_local_process_group(info["local_size"])


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
    join_timeout: datetime.timedelta = DEFAULT_JOIN_TIMEOUT,
) -> None:
    """Runs `main_func(*args)` on every process of a (possibly) distributed job.

    Args:
        main_func: the function each process runs; with several processes it must be picklable
            (defined at module level), as must `args`.
        num_gpus_per_machine: processes per machine, one per GPU. Without GPUs, several processes
            run on the CPU with gloo.
        num_machines: machines in the job.
        machine_rank: this machine's index, 0 on the machine at `dist_url`.
        dist_url: rendezvous of the job, "tcp://HOST:PORT" (HOST: machine 0) or "auto" (a free
            local port; one machine only).
        args: arguments of `main_func`.
        timeout: how long collective operations may wait for each other.
        join_timeout: how long the processes wait for each other to join the job; meanwhile each
            logs, every minute, the ranks and machines it waits for and at which address.

    Raises:
        LaunchError: no processes or machines, a machine rank outside the machines, more processes
            per machine than GPUs, "auto" with several machines, a `dist_url` that is not an
            address, a rendezvous port in use, processes that did not join within `join_timeout`;
            or a process stopped on a user error, which it printed.
        TrainingInterrupted: the processes stopped on a signal, after a checkpoint.
        torch.multiprocessing.ProcessRaisedException / ProcessExitedException: a process raised
            (its traceback is in the message) or died; the others were ended.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise LaunchError(
            f"--num-gpus {num_gpus_per_machine} --num-machines {num_machines}: each must be at least 1"
        )
    if not 0 <= machine_rank < num_machines:
        raise LaunchError(
            f"--machine-rank {machine_rank} with --num-machines {num_machines}: the rank must be 0 to {num_machines - 1}"
        )
    check_dist_url(dist_url)
    launched = _launcher_env(num_gpus_per_machine, num_machines)
    if launched is not None:
        if not dist.is_initialized():
            _join_launched_job(launched, dist_url, timeout, join_timeout)
        main_func(*args)
        return

    world_size = num_machines * num_gpus_per_machine
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise LaunchError(
            f"--num-gpus {num_gpus_per_machine} asks for more GPUs than this machine has "
            f"({torch.cuda.device_count()} visible)"
        )
    if world_size == 1:
        main_func(*args)
        return
    if not torch.cuda.is_available():
        logger.warning(f"No GPU found: starting {num_gpus_per_machine} processes on the CPU (gloo)")
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise LaunchError(
                "--dist-url auto works on one machine only; with several machines pass "
                "--dist-url tcp://HOST:PORT naming machine 0"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    elif machine_rank == 0:
        _check_port_free(dist_url)

    context = mp.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout, join_timeout),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    try:
        with _forwarding_signals(context.processes):
            while not context.join():
                pass
    except mp.ProcessExitedException as e:
        if e.exit_code == EXIT_USER_ERROR:
            raise LaunchError(f"Process {e.error_index} of the job stopped on the error it printed above") from None
        if e.exit_code is not None and e.exit_code > 128:  # a rank's TrainingInterrupted: all stopped so
            raise TrainingInterrupted(e.exit_code - 128) from None
        raise


# Signals a cluster sends to the launching process only (Kubernetes signals a container's first
# process), forwarded to the ranks, which checkpoint and stop (hooks.SignalCheckpointer). Not
# SIGINT: Ctrl-C reaches every process of the terminal's process group already.
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def _forwarding_signals(processes: Sequence[Any]) -> Iterator[None]:
    def forward(signum: int, frame) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the launching process dies (even by SIGKILL),
    so that no rank outlives the job."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: datetime.timedelta,
    join_timeout: datetime.timedelta,
) -> None:
    _die_with_parent()
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        # before init_process_group, so that NCCL binds this process to its own GPU
        torch.cuda.set_device(_local_device_index(local_rank, num_gpus_per_machine))
    rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        join_process_group(
            "nccl" if has_gpu else "gloo", dist_url, world_size=world_size, rank=rank,
            ranks_per_machine=num_gpus_per_machine, timeout=timeout, join_timeout=join_timeout,
        )
        comm.create_local_process_group(num_gpus_per_machine)
        comm.synchronize()
        main_func(*args)
    except USER_ERRORS as e:
        # its message says what to fix; every rank's traceback would bury it
        sys.stderr.write(f"Rank {rank}: {user_error_message(e)}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_USER_ERROR) from None
    except TrainingInterrupted:
        raise  # stopped by a signal after its checkpoint, which it logged
    except BaseException:
        # The launching process re-raises one failure, which may be another rank's consequence of
        # this one (a broken collective); printed here, the first failure is always in the output.
        sys.stderr.write(f"Rank {rank} failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        raise
    # Not after a failure: tearing down NCCL with peers gone can block. After a barrier, so that no
    # rank tears down while another still uses the group (rank 0 also serves the rendezvous store);
    # without it, a CI run once saw a rank abort in teardown ("terminate called without an active exception").
    comm.synchronize()
    dist.destroy_process_group()
