"""A 2-process gloo job with a failing rank ends quickly and completely: a non-zero exit, the failing
rank's message, and no process left behind. Runs `dist_job.py` as a user runs a script."""
import os
import signal
import subprocess
import sys
import time

import pytest

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_job.py")
# Hang detectors, not speed requirements: after a failure gloo alone would wait 30 minutes, so these
# bounds tell a hang from a slow end even on a loaded 2-core machine and never fail a working job.
DEADLINE = 300  # seconds from the failure to the end of the job
START_UP = 300  # seconds for three interpreters to import torch and meet
GONE = 60  # seconds for the kernel to deliver the parent-death signals


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; only its exit status is left to collect


def _start(mode, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, JOB, mode, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + START_UP
    pid_files = [tmp_path / f"rank{r}.pid" for r in range(2)]
    while not all(p.exists() for p in pid_files):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the job did not start its two ranks:\n{err[-3000:]}")
        time.sleep(0.05)
    return proc, [int(p.read_text()) for p in pid_files]


def _finish(proc):
    try:
        _, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the job was still running {DEADLINE}s after the failure")
    return proc.returncode, err


def _assert_all_gone(pids):
    deadline = time.monotonic() + GONE  # the kernel delivers a parent-death signal asynchronously
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "processes of the job outlived it"


def test_a_raising_rank_ends_the_job_with_its_message(tmp_path):
    proc, ranks = _start("raise", tmp_path)
    code, err = _finish(proc)
    assert code != 0
    assert "Rank 1 failed" in err and "RuntimeError: boom on rank 1" in err
    _assert_all_gone(ranks)


def test_a_rank_killed_from_outside_ends_the_job(tmp_path):
    proc, ranks = _start("wait", tmp_path)
    os.kill(ranks[1], signal.SIGKILL)
    code, err = _finish(proc)
    assert code != 0
    # the launcher reports rank 1's death, or rank 0's collective that it broke, whichever it sees first
    assert "process 1 terminated with signal SIGKILL" in err or "Rank 0 failed" in err
    _assert_all_gone(ranks)


def test_killing_the_launching_process_ends_every_rank(tmp_path):
    proc, ranks = _start("wait", tmp_path)
    proc.kill()
    proc.communicate(timeout=DEADLINE)
    _assert_all_gone(ranks)
