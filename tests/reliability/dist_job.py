"""A two-process gloo job for the distributed-failure tests: `python dist_job.py MODE PID_DIR`.

Each rank writes its pid to PID_DIR/rank<R>.pid once both are up. Then rank 1 raises (MODE "raise")
or waits to be killed from outside (MODE "wait"), while rank 0 waits for it in a collective, which
gloo would let wait for 30 minutes.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from d2mask.engine import launch  # noqa: E402
from d2mask.utils import comm  # noqa: E402


def main(mode: str, pid_dir: str) -> None:
    comm.synchronize()
    path = os.path.join(pid_dir, f"rank{comm.get_rank()}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    comm.synchronize()
    if comm.get_rank() == 1:
        if mode == "raise":
            raise RuntimeError("boom on rank 1")
        time.sleep(600)
    comm.synchronize()


if __name__ == "__main__":
    launch(main, 2, dist_url="auto", args=(sys.argv[1], sys.argv[2]))
