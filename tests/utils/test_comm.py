import numpy as np
import torch

from d2mask.engine import launch
from d2mask.utils import comm


def test_single_process_helpers():
    assert comm.get_world_size() == 1 and comm.get_rank() == 0
    assert comm.get_local_rank() == 0 and comm.get_local_size() == 1
    assert comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.gather(3) == [3]
    d = {"x": torch.tensor(2.0)}
    assert comm.reduce_dict(d) is d
    np.random.seed(5)
    first = comm.shared_random_seed()
    np.random.seed(5)
    assert comm.shared_random_seed() == first


def _collectives(out_dir):
    rank = comm.get_rank()
    result = {
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "all_gather": comm.all_gather(("r", rank)),
        "gather": comm.gather(rank * 10),
        "reduce_sum": {k: float(v) for k, v in comm.reduce_dict(
            {"b": torch.tensor(float(rank)), "a": torch.tensor(1.0 + rank)}, average=False).items()},
        "reduce_avg": {k: float(v) for k, v in comm.reduce_dict({"a": torch.tensor(1.0 + rank)}).items()},
    }
    np.random.seed(100 + rank)  # different on each rank; the shared seed is still rank 0's
    result["shared_seed"] = comm.shared_random_seed()
    comm.synchronize()
    torch.save(result, f"{out_dir}/rank{rank}.pt")


def test_collectives_across_two_gloo_processes(tmp_path):
    launch(_collectives, 2, dist_url="auto", args=(str(tmp_path),))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    for rank, r in enumerate((r0, r1)):
        assert r["world_size"] == 2 and r["local_size"] == 2 and r["local_rank"] == rank
        assert r["all_gather"] == [("r", 0), ("r", 1)]
        assert r["shared_seed"] == r0["shared_seed"]
    assert r0["gather"] == [0, 10] and r1["gather"] == []
    # reduce_dict's result is defined on rank 0
    assert r0["reduce_sum"] == {"a": 3.0, "b": 1.0}
    assert r0["reduce_avg"] == {"a": 1.5}
