import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp

from d2mask.engine import launch
from d2mask.utils import comm
from tests.common import REPO as ROOT


def _fail_on_rank1(mode):
    if comm.get_rank() == 1:
        if mode == "raise":
            raise ValueError("boom on rank 1")
        os.kill(os.getpid(), signal.SIGKILL)
    comm.synchronize()  # rank 0 waits for a rank that never comes


# When rank 1 fails, rank 0's collective breaks and rank 0 fails too, moments later. The launcher
# reports the first ended process it finds, which on a loaded machine can be either; each failing
# rank prints its own traceback first, so the cause is always in the output.


def test_raising_rank_ends_the_job_with_its_traceback(capfd):
    with pytest.raises(mp.ProcessRaisedException):
        launch(_fail_on_rank1, 2, args=("raise",))
    err = capfd.readouterr().err
    assert "Rank 1 failed" in err and "ValueError: boom on rank 1" in err


def test_killed_rank_ends_the_job():
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)) as info:
        launch(_fail_on_rank1, 2, args=("kill",))
    if isinstance(info.value, mp.ProcessExitedException):
        assert info.value.error_index == 1 and "process 1 terminated with signal SIGKILL" in str(info.value)
    else:
        assert info.value.error_index == 0  # the collective the kill broke


def test_torchrun_processes_are_not_spawned_again(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from d2mask.engine import launch
        from d2mask.utils import comm

        def main(out):
            with open(os.path.join(out, f"pid{{os.getpid()}}"), "w") as f:
                f.write(f"{{comm.get_rank()}} {{comm.get_world_size()}} {{comm.get_local_rank()}}")

        if __name__ == "__main__":
            launch(main, 2, args=({str(tmp_path)!r},))
    """))
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), str(script)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # a hang detector
    assert proc.returncode == 0, proc.stderr
    records = sorted((tmp_path / f).read_text() for f in os.listdir(tmp_path) if f.startswith("pid"))
    assert records == ["0 2 0", "1 2 1"]  # two processes, not four


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is already in use"):
            launch(print, 2, dist_url=f"tcp://127.0.0.1:{port}")


def test_auto_url_needs_one_machine():
    with pytest.raises(ValueError, match="one machine"):
        launch(print, 2, num_machines=2, machine_rank=0, dist_url="auto")


def test_more_gpus_than_present_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="--num-gpus 2 asks for more GPUs than this machine has"):
        launch(print, 2)


def test_single_process_runs_in_place():
    calls = []
    launch(lambda *a: calls.append(a), 1, args=(1, 2))
    assert calls == [(1, 2)]
