"""Preemption: SIGTERM, SIGINT and a configured requeue signal end a run of tools/train_net.py after its
current iteration with an atomic checkpoint of it, one log line, exit status 128 + the signal's
number and no temporary file; `--resume` then ends with the weights of an uninterrupted run.

Timeouts here detect hangs; nothing is timed.
"""
import os
import re
import signal
import subprocess
import sys
import time
import traceback

import pytest
import torch

from d2mask.engine import report_user_errors
from tests.reliability.test_kill_during_checkpoints import (
    FSYNC_DELAY,
    REPO,
    TRAIN_NET,
    _argv,
    _last_checkpoint,
    _load_train_net,
    _save_leftovers,
    _wait_until,
)

STOPPED = re.compile(r"Stopped by (SIG\w+) after iteration (\d+): saved (\S+); continue with --resume")


def _fork_main(train_net, argv, log_path, slow_disk=False):
    """train_net's main (its user errors reported as one line) in a forked child; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        sys.stdout = sys.stderr = open(log_path, "w", buffering=1)
        if slow_disk:
            fsync = os.fsync
            os.fsync = lambda fd: (time.sleep(FSYNC_DELAY), fsync(fd))[1]
        report_user_errors(train_net.main, train_net.default_argument_parser().parse_args(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _exit_status(pid, log_path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status), f"ended by signal {os.WTERMSIG(status)}:\n{log_path.read_text()[-3000:]}"
            return os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"still running {timeout}s after the signal:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.01)


def test_sigterm_during_saves_checkpoints_the_current_iteration_and_resume_is_exact(tmp_path):
    train_net = _load_train_net()
    out, root = tmp_path / "out", tmp_path / "datasets"
    last_iter = None
    # a checkpoint every iteration on a slow disk: most signals arrive while a save is under way
    for attempt in range(3):
        before = _last_checkpoint(out)
        log = tmp_path / f"run{attempt}.log"
        pid = _fork_main(train_net, _argv(out, root, 100000), log, slow_disk=True)
        _wait_until(lambda: _last_checkpoint(out) not in (None, before), pid, log, "new checkpoint")
        time.sleep(0.05 * attempt)
        os.kill(pid, signal.SIGTERM)
        assert _exit_status(pid, log) == 128 + signal.SIGTERM

        stopped = STOPPED.findall(log.read_text())
        assert len(stopped) == 1, log.read_text()[-3000:]
        name, iteration = stopped[0][0], int(stopped[0][1])
        assert name == "SIGTERM" and stopped[0][2] == str(out / f"model_{iteration:07d}.pth")
        assert _last_checkpoint(out) == f"model_{iteration:07d}.pth"
        assert torch.load(out / _last_checkpoint(out), weights_only=True)["iteration"] == iteration
        assert not _save_leftovers(out), _save_leftovers(out)
        assert not (out / "model_final.pth").exists()
        assert f"Starting training from iteration {0 if last_iter is None else last_iter + 1}" in log.read_text()
        last_iter = iteration

    # a new run (no --resume) into the interrupted run's directory is refused, naming it
    log = tmp_path / "new_run.log"
    pid = _fork_main(train_net, [a for a in _argv(out, root, 100000) if a != "--resume"], log)
    assert _exit_status(pid, log) == 2
    assert f"ConfigError: OUTPUT_DIR {out} holds the checkpoints of an earlier run (last: " \
           f"model_{last_iter:07d}.pth, iteration {last_iter})" in log.read_text()

    # the command line resumes after the last checkpoint and ends with an uninterrupted run's weights
    max_iter = last_iter + 4
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *_argv(out, root, max_iter)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Starting training from iteration {last_iter + 1}" in proc.stdout
    log = tmp_path / "reference.log"
    pid = _fork_main(train_net, _argv(tmp_path / "reference", root, max_iter, period=max_iter), log)
    assert _exit_status(pid, log) == 0, log.read_text()[-3000:]
    resumed = torch.load(out / "model_final.pth", weights_only=True)["model"]
    reference = torch.load(tmp_path / "reference" / "model_final.pth", weights_only=True)["model"]
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1])
def test_sigint_and_a_configured_requeue_signal_stop_with_a_checkpoint(tmp_path, signum):
    train_net = _load_train_net()
    out, log = tmp_path / "out", tmp_path / "run.log"
    argv = _argv(out, tmp_path / "datasets", 100000, period=100000) + [
        "SOLVER.CHECKPOINT_SIGNALS=['SIGTERM','SIGINT','SIGUSR1']",
        "DATALOADER.NUM_WORKERS=1",  # a worker, which must not die of the signal
    ]
    pid = _fork_main(train_net, argv, log)
    _wait_until(lambda: log.exists() and "iter: " in log.read_text(), pid, log, "training", timeout=120)
    os.kill(pid, signum)
    assert _exit_status(pid, log) == 128 + signum
    (name, iteration, path), = STOPPED.findall(log.read_text())
    assert name == signal.Signals(signum).name and _last_checkpoint(out) == os.path.basename(path)
    assert "Traceback" not in log.read_text()


def test_sigterm_to_the_launcher_of_a_two_process_job_stops_every_rank_with_one_checkpoint(tmp_path):
    out = tmp_path / "out"
    argv = [a for a in _argv(out, tmp_path / "datasets", 100000, period=100000)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, TRAIN_NET, "--num-gpus", "2", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ((out / "metrics.json").exists() and (out / "metrics.json").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=60)[0][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # to the launching process only, as Kubernetes does
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    (name, iteration, path), = STOPPED.findall((out / "log.txt").read_text())
    assert _last_checkpoint(out) == os.path.basename(path) and not _save_leftovers(out)
    assert "Traceback" not in output
