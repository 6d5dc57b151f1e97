"""tools/train_net.py, run as a user runs it, on user errors raised inside a run, in one process and in
two: one message per process and exit status 2, no traceback, no code from a weights file run, and
the output directory of an earlier run untouched. (Config errors, found before launching, are
tests/tools/test_train_net.py::test_command_line_mistakes_are_one_clear_line.)"""
import os
import pickle
import subprocess
import sys
from tests.common import REPO

TOY = ["IMPORTS=['tests.reliability.toy_project']", "MODEL.META_ARCHITECTURE=ReliabilityToyModel", "MODEL.DEVICE=cpu",
       "DATASETS.TRAIN=('reliability_toy_train',)", "DATASETS.TEST=()", "INPUT.MIN_SIZE_TRAIN=(32,)",
       "INPUT.MAX_SIZE_TRAIN=32", "SOLVER.IMS_PER_BATCH=2", "SOLVER.MAX_ITER=3", "DATALOADER.NUM_WORKERS=0"]


def _train_net(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_weights_carrying_code_end_the_run_with_one_line_and_run_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # an earlier evaluation's output, which the failed run must leave as it was (a directory holding
    # checkpoints is refused before the weights are read: test_output_dir.py)
    (out / "metrics.json").write_text('{"iteration": 9}\n')
    weights = tmp_path / "evil.pkl"
    weights.write_bytes(pickle.dumps({"model": {"w": _Payload(tmp_path / "pwned")}}, protocol=2))

    proc = _train_net(*TOY, f"OUTPUT_DIR={out}", f"DATASETS.ROOT={tmp_path / 'datasets'}", f"MODEL.WEIGHTS={weights}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"CheckpointError: Refusing to load {weights}: it references "
                                                           f"'posix.system'")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "pwned").exists()
    assert (out / "metrics.json").read_text() == '{"iteration": 9}\n'


def test_weights_that_cannot_be_downloaded_end_the_run_with_one_line(tmp_path, monkeypatch):
    # nothing listens on port 9 of this machine: the connection is refused, as offline (no network used)
    monkeypatch.setenv("D2MASK_CACHE", str(tmp_path / "cache"))
    url = "https://127.0.0.1:9/model_final.pkl"
    proc = _train_net(*TOY, f"OUTPUT_DIR={tmp_path / 'out'}", f"DATASETS.ROOT={tmp_path / 'datasets'}", f"MODEL.WEIGHTS={url}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert f"Downloading {url} to {tmp_path / 'cache' / 'downloads'}" in output and "Traceback" not in output
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"DownloadError: Cannot download {url} (URLError: ") and "MODEL.WEIGHTS /path/to/model_final.pkl" in last
    assert not any(files for _, _, files in os.walk(tmp_path / "cache"))


def test_a_user_error_in_every_process_of_a_job_is_one_line_each(tmp_path):
    # a mistake only the processes find: the training set is loaded there, not before launching
    toy = [arg for arg in TOY if not arg.startswith("DATASETS.TRAIN=")]
    proc = _train_net("--num-gpus", "2", *toy, "DATASETS.TRAIN=('reliability_toy_trian',)", f"OUTPUT_DIR={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    reported = [line for line in lines if line.startswith("Rank ")]
    assert reported, proc.stderr[-3000:]
    for line in reported:
        assert "RegistryError: No dataset named 'reliability_toy_trian'." in line
    assert lines[-1].startswith("LaunchError: Process ") and lines[-1].endswith("stopped on the error it printed above")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_mistake_in_the_model_is_one_line_before_any_process_starts(tmp_path):
    """validate_config builds the model on the meta device before launching: no process sees it."""
    proc = _train_net("--num-gpus", "2", *TOY, "MODEL.META_ARCHITECTURE=ReliabilityToyModle", f"OUTPUT_DIR={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("RegistryError: No object named 'ReliabilityToyModle' in the META_ARCH registry. "
                                "Did you mean 'ReliabilityToyModel'?")
    assert not any(line.startswith("Rank ") for line in lines) and "Traceback" not in proc.stdout + proc.stderr



def _one_line(proc):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_start_up_mistakes_are_one_line_before_anything_runs(tmp_path):
    """Cases that ended in a traceback: invalid values, a --dist-url that is no address, an OUTPUT_DIR
    that is a file, --eval-only without weights."""
    out = tmp_path / "out"
    line = _one_line(_train_net(*TOY, f"OUTPUT_DIR={out}", "SOLVER.CHECKPOINT_PERIOD=0", "SOLVER.BASE_LR=-0.1",
                                "DATALOADER.NUM_WORKERS=-1", "SOLVER.STEPS=(5,3)", "MODEL.PIXEL_MEAN=[1.0,2.0]"))
    assert line.startswith("ConfigError: Invalid config 5 values: ")
    assert not out.exists()  # refused before anything was written

    line = _one_line(_train_net("--num-gpus", "2", "--dist-url", "localhost:29500", *TOY, f"OUTPUT_DIR={out}"))
    assert line.startswith("LaunchError: --dist-url 'localhost:29500' is not a rendezvous address")

    (tmp_path / "a_file").write_text("")
    line = _one_line(_train_net(*TOY, f"OUTPUT_DIR={tmp_path / 'a_file'}"))
    assert line == f"ConfigError: OUTPUT_DIR {tmp_path / 'a_file'} is a file, not a directory; choose another OUTPUT_DIR"

    line = _one_line(_train_net("--eval-only", *TOY, f"OUTPUT_DIR={out}"))
    assert line.startswith("ConfigError: --eval-only needs weights, but MODEL.WEIGHTS is empty")
