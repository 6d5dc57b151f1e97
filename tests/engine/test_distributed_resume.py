"""Two-process gloo training: a run interrupted and resumed ends bit for bit as an uninterrupted one,
on each process; the losses logged are the mean of the processes' losses at each iteration; a loss
that is not finite on one process only skips the step on both.

One launch of two processes trains the uninterrupted run, then the run that is interrupted, then
resumes it with a new trainer, seeded as a new process is, then the run with a non-finite loss (one
launch: starting processes is what takes time here; tests/reliability/test_kill_during_checkpoints.py
resumes in a new process).
"""
import math
import os

import pytest
import torch

from d2mask.engine import launch
from d2mask.engine import hooks
from d2mask.utils import comm
from d2mask.utils.env import seed_all_rng
from d2mask.utils.events import get_event_storage
from tests.engine.toy import ToyModel, ToyTrainer, toy_cfg

OPTS = ["SOLVER.MAX_ITER=6", "SOLVER.STEPS=(4,)", "SOLVER.CHECKPOINT_PERIOD=2", "DATASETS.TEST=()"]
INTERRUPTED_AFTER = 4  # the last checkpoint is of iteration 3: iteration 4 is lost
RESUMED_AT = 4
PER_RANK_BATCH = 4  # toy_cfg's 8 images per iteration over 2 processes
LOSSES = ("loss_mse", "loss_l1", "total_loss")
NONFINITE_AT = 2  # the iteration at which rank 1's loss is NaN


class _NaNOnRank1(ToyModel):
    def forward(self, batch):
        losses = super().forward(batch)
        if self.training and comm.get_rank() == 1 and get_event_storage().iter == NONFINITE_AT:
            losses["loss_mse"] = losses["loss_mse"] * math.nan
        return losses


class _Trainer(ToyTrainer):
    def build_hooks(self):
        # without the plots, which take longer to draw than these few iterations to train
        return [h for h in super().build_hooks() if not isinstance(h, hooks.MetricsPlotter)]


class _NaNTrainer(_Trainer):
    @classmethod
    def build_model(cls, cfg):
        return _NaNOnRank1()


def _trainer(out_dir, trainer_class=_Trainer, *opts):
    seed_all_rng(100 + comm.get_rank())  # each process seeded differently, as default_setup does
    return trainer_class(toy_cfg(out_dir, *OPTS, *opts))


def _save(trainer, path):
    model = trainer.model.module  # DistributedDataParallel's
    logged = {k: trainer.storage.history(k).values() for k in LOSSES} if comm.is_main_process() else None
    torch.save({"weights": model.state_dict(), "losses": model.losses, "seen": model.seen, "logged": logged,
                "start_iter": trainer.start_iter}, path)


def _stop_after(iteration):
    def stop(trainer):
        if trainer.iter == iteration:
            raise KeyboardInterrupt("simulated interruption")

    return hooks.CallbackHook(after_step=stop)


def _uninterrupted_interrupted_resumed(root):
    full = _trainer(os.path.join(root, "full"))
    full.train()
    _save(full, os.path.join(root, f"full{comm.get_rank()}.pt"))

    cut = _trainer(os.path.join(root, "cut"))
    cut.register_hooks([_stop_after(INTERRUPTED_AFTER)])
    try:
        cut.train()
        raise AssertionError("the run was not interrupted")
    except KeyboardInterrupt:
        pass
    comm.synchronize()  # the interrupted run is over on both processes

    resumed = _trainer(os.path.join(root, "cut"))
    resumed.resume_or_load(resume=True)
    resumed.train()
    _save(resumed, os.path.join(root, f"resumed{comm.get_rank()}.pt"))

    nonfinite = _trainer(os.path.join(root, "nonfinite"), _NaNTrainer, "SOLVER.MAX_NONFINITE_SKIPS=1")
    nonfinite.train()
    _save(nonfinite, os.path.join(root, f"nonfinite{comm.get_rank()}.pt"))
    if comm.is_main_process():
        torch.save(nonfinite.storage.history("nonfinite_skips").values(), os.path.join(root, "skips.pt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    launch(_uninterrupted_interrupted_resumed, 2, dist_url="auto", args=(str(root),))
    return root


def test_two_process_run_resumed_equals_uninterrupted_and_logs_the_mean_over_ranks(runs):
    tmp_path = runs
    assert (tmp_path / "cut" / "model_0000003.pth").is_file()
    full = [torch.load(tmp_path / f"full{r}.pt", weights_only=False) for r in range(2)]
    resumed = [torch.load(tmp_path / f"resumed{r}.pt", weights_only=False) for r in range(2)]

    for rank in range(2):
        assert resumed[rank]["start_iter"] == RESUMED_AT
        # Every parameter on each process; batch-norm statistics on rank 0 only: they stay per process
        # (as in Detectron2) and the checkpoint holds rank 0's, which every process resumes from.
        for name, value in full[rank]["weights"].items():
            if rank == 0 or "running_" not in name and "num_batches_tracked" not in name:
                assert torch.equal(value, resumed[rank]["weights"][name]), (rank, name)
        # each process read the images of the iterations it had not trained, as the uninterrupted run did
        assert resumed[rank]["seen"] == full[rank]["seen"][RESUMED_AT * PER_RANK_BATCH:]
        # and drew the same random numbers: its losses are those of the uninterrupted run
        assert resumed[rank]["losses"] == full[rank]["losses"][RESUMED_AT:]
    assert full[0]["losses"] != full[1]["losses"]  # the processes' losses differ: the mean is not either

    logged = full[0]["logged"]
    for name in ("loss_mse", "loss_l1"):
        expected = [(r0[name] + r1[name]) / 2 for r0, r1 in zip(full[0]["losses"], full[1]["losses"])]
        assert logged[name] == [(v, i) for i, v in enumerate(expected)]
    assert [i for _, i in logged["total_loss"]] == list(range(6))
    for (total, _), mse, l1 in zip(logged["total_loss"], logged["loss_mse"], logged["loss_l1"]):
        assert total == mse[0] + l1[0]
    # the resumed run logs what the uninterrupted run logged at its iterations
    for name in LOSSES:
        assert resumed[0]["logged"][name] == logged[name][RESUMED_AT:]


def test_a_loss_not_finite_on_one_process_skips_the_step_on_both(runs):
    ranks = [torch.load(runs / f"nonfinite{r}.pt", weights_only=False) for r in range(2)]
    assert torch.load(runs / "skips.pt", weights_only=False) == [(1.0, NONFINITE_AT)]
    for name, value in ranks[0]["weights"].items():
        if "running_" not in name and "num_batches_tracked" not in name:  # per-process statistics
            assert torch.isfinite(value).all() and torch.equal(value, ranks[1]["weights"][name]), name
    # the skipped step logged no loss
    assert [i for _, i in ranks[0]["logged"]["total_loss"]] == [i for i in range(6) if i != NONFINITE_AT]
