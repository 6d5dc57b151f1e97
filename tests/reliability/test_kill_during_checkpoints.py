"""kill -9 of a training run of tools/train_net.py while it writes checkpoints, and while it generates
its dataset: every `--resume` finds a loadable checkpoint and continues from it, the dataset is
generated again, and the run ends with the weights of a run that was never interrupted.

The killed runs are train_net's `main` in forked children of this process, so that the many kills
do not each pay for an interpreter start-up; the last resume is the command line itself.
"""
import importlib.util
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import register_shapes
from tests.reliability import toy_project
from tests.common import REPO

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
KILLS_INSIDE_SAVES = 20
FSYNC_DELAY = 0.02  # a slow disk: a save then takes most of an iteration, and kills land inside saves


def _load_train_net():
    spec = importlib.util.spec_from_file_location("reliability_train_net", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(out, root, max_iter, period=1):
    return [
        "IMPORTS=['tests.reliability.toy_project']", "MODEL.META_ARCHITECTURE=ReliabilityToyModel",
        "MODEL.DEVICE=cpu", f"DATASETS.TRAIN=('{toy_project.TRAIN}',)", "DATASETS.TEST=()",
        "INPUT.MIN_SIZE_TRAIN=(32,)", "INPUT.MAX_SIZE_TRAIN=32", "SOLVER.IMS_PER_BATCH=2", "SOLVER.BASE_LR=0.01",
        "SOLVER.STEPS=(10,)", "SOLVER.WARMUP_ITERS=5", f"SOLVER.CHECKPOINT_PERIOD={period}",
        "SOLVER.CHECKPOINTS_TO_KEEP=2", f"SOLVER.MAX_ITER={max_iter}", "DATALOADER.NUM_WORKERS=0", "SEED=7",
        f"OUTPUT_DIR={out}", f"DATASETS.ROOT={root}",
        "--resume",  # a flag after the overrides, as users type it
    ]


def _fork_main(train_net, argv, log_path, slow_disk=False):
    """Runs train_net's main on `argv` in a forked child whose output goes to `log_path`; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        sys.stdout = sys.stderr = open(log_path, "w", buffering=1)
        if slow_disk:
            fsync = os.fsync
            os.fsync = lambda fd: (time.sleep(FSYNC_DELAY), fsync(fd))[1]
        train_net.main(train_net.default_argument_parser().parse_args(argv))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _wait_until(condition, pid, log_path, what, timeout=300.0):
    """Waits for `condition` while the run `pid` lives; `timeout` only detects a hang (generous, for a
    loaded machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        done, status = os.waitpid(pid, os.WNOHANG)
        assert not done, f"the run ended (status {status}) before {what}:\n{log_path.read_text()[-3000:]}"
        if time.monotonic() > deadline:
            _kill(pid)
            raise AssertionError(f"no {what} after {timeout}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.005)


def _kill(pid):
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _last_checkpoint(out):
    try:
        return (out / "last_checkpoint").read_text()
    except FileNotFoundError:
        return None


def _save_leftovers(out):
    """Temporary files of model saves that a kill interrupted (beside the checkpoints; not those of
    `last_checkpoint`, which is written the same way but takes no time)."""
    return {n for n in os.listdir(out) if n.endswith(".tmp") and "model_" in n}


def _assert_model_files_complete(out):
    """Every checkpoint file in `out` loads whole: a save interrupted by a kill left none half-written."""
    names = [n for n in os.listdir(out) if re.fullmatch(r"model_(\d{7}|final)\.pth", n)]
    for name in names:
        try:
            checkpoint = torch.load(out / name, weights_only=True)
        except Exception as e:
            raise AssertionError(f"{name} is not a complete checkpoint: {e}") from e
        assert set(checkpoint) >= {"model", "trainer", "iteration", "rng_states"}, name
    return names


def _started_at(log_path):
    found = re.findall(r"Starting training from iteration (\d+)", log_path.read_text())
    assert len(found) == 1, log_path.read_text()[-3000:]
    return int(found[0])


def test_kill_9_during_saves_never_loses_the_last_checkpoint_and_resume_is_exact(tmp_path, monkeypatch):
    train_net = _load_train_net()
    out, root, logs = tmp_path / "out", tmp_path / "datasets", tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(0)

    # 1. killed while generating the dataset: nothing that looks complete is left
    log = logs / "generation.log"
    pid = _fork_main(train_net, _argv(out, root, 100000), log)
    shapes_dir = root / "shapes"
    _wait_until(lambda: shapes_dir.is_dir() and any(".tmp-" in n for n in os.listdir(shapes_dir)), pid, log,
                "dataset generation")
    _kill(pid)
    assert not [n for n in os.listdir(shapes_dir) if (shapes_dir / n / "COMPLETE").exists()]

    # 2. kills at random moments until KILLS_INSIDE_SAVES of them interrupted a save
    inside_saves, kills, saves, last_iter = 0, 0, 0, None
    while inside_saves < KILLS_INSIDE_SAVES:
        assert kills < 4 * KILLS_INSIDE_SAVES, f"only {inside_saves} of {kills} kills landed inside a save"
        before, leftovers = _last_checkpoint(out), _save_leftovers(out) if out.is_dir() else set()
        log = logs / f"run{kills}.log"
        pid = _fork_main(train_net, _argv(out, root, 100000), log, slow_disk=True)
        _wait_until(lambda: _last_checkpoint(out) not in (None, before), pid, log, "new checkpoint")
        time.sleep(rng.uniform(0, 0.15))
        _kill(pid)
        kills += 1
        inside_saves += bool(_save_leftovers(out) - leftovers)

        # --resume started after the last checkpoint, and that checkpoint is now a later one; it and
        # every other model file loads whole
        start = _started_at(log)
        assert start == (0 if last_iter is None else last_iter + 1)
        name = _last_checkpoint(out)
        assert re.fullmatch(r"model_\d{7}\.pth", name) and name in _assert_model_files_complete(out), name
        checkpoint = torch.load(out / name, weights_only=True)
        assert checkpoint["iteration"] >= start
        saves += checkpoint["iteration"] - start + 1
        last_iter = checkpoint["iteration"]
    assert saves >= KILLS_INSIDE_SAVES

    # 3. the command line resumes after the last kill and finishes
    max_iter = last_iter + 6
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *_argv(out, root, max_iter)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Starting training from iteration {last_iter + 1}" in proc.stdout
    resumed = torch.load(out / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == max_iter - 1

    # 4. equal, bit for bit, to an uninterrupted run with the same seed
    log = logs / "reference.log"
    pid = _fork_main(train_net, _argv(tmp_path / "reference", root, max_iter, period=max_iter), log)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, log.read_text()[-3000:]
    reference = torch.load(tmp_path / "reference" / "model_final.pth", weights_only=True)
    assert resumed["model"].keys() == reference["model"].keys()
    for name, value in reference["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert resumed["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"] == \
        reference["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"]

    # 5. the dataset generated after the killed generation equals a clean generation
    monkeypatch.setenv("D2MASK_DATASETS", str(root))
    register_shapes("reliability_clean", str(tmp_path / "clean"), **toy_project.SHAPES_PARAMS)
    try:
        clean, regenerated = DatasetCatalog.get("reliability_clean"), DatasetCatalog.get(toy_project.TRAIN)
    finally:
        DatasetCatalog.remove("reliability_clean")
        MetadataCatalog.remove("reliability_clean")
    assert [d["annotations"] for d in clean] == [d["annotations"] for d in regenerated]
    for a, b in zip(clean, regenerated):
        with open(a["file_name"], "rb") as fa, open(b["file_name"], "rb") as fb:
            assert fa.read() == fb.read()
    shutil.rmtree(out)  # tens of MB of checkpoints and interrupted saves
