import json
import logging
import os
import signal
import time

import pytest
import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from d2mask.checkpoint import CheckpointError, DetectionCheckpointer
from d2mask.engine import SimpleTrainer, TrainingInterrupted, hooks
from d2mask.engine.training import resume_training
from d2mask.solver import WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler
from d2mask.utils.env import get_rng_state, set_rng_state
from d2mask.utils.events import JSONWriter
from tests.engine.toy import FiniteToyLoader, ToyLoader, ToyModel


def _trainer(seed=0, lr=0.05):
    torch.manual_seed(seed)
    model = ToyModel()
    return SimpleTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def test_lr_scheduler_hook_records_lr_and_steps():
    trainer = _trainer()
    sched = WarmupMultiStepLR(trainer.optimizer, [4], gamma=0.1, warmup_factor=0.5, warmup_iters=2)
    trainer.register_hooks([hooks.LRScheduler(trainer.optimizer, sched)])
    trainer.train(0, 6)
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([0.025, 0.0375, 0.05, 0.05, 0.005, 0.005])


def test_lr_scheduler_hook_state_restores_optimizer_rate():
    trainer = _trainer()
    sched = WarmupMultiStepLR(trainer.optimizer, [3], gamma=0.1, warmup_iters=0)
    hook = hooks.LRScheduler(trainer.optimizer, sched)
    trainer.register_hooks([hook])
    trainer.train(0, 4)
    state = hook.state_dict()

    other = _trainer()
    other_hook = hooks.LRScheduler(other.optimizer, WarmupMultiStepLR(other.optimizer, [3], warmup_iters=0))
    other_hook.load_state_dict(state)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_lr_scheduler_hook_wraps_a_param_scheduler_over_the_trainers_optimizer_and_length():
    trainer = _trainer(lr=0.04)
    # Detectron2's Python-config form: no optimizer, a schedule over progress in [0, 1)
    steps = MultiStepParamScheduler(values=[1.0, 0.1], milestones=[1], num_updates=2)
    trainer.register_hooks([hooks.LRScheduler(scheduler=WarmupParamScheduler(steps, 0.5, 0.25))])
    trainer.train(0, 8)
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    # warm-up over 2 of 8 iterations from 0.02 towards 0.04, x0.1 from half-way
    assert lrs == pytest.approx([0.02, 0.03, 0.04, 0.04, 0.004, 0.004, 0.004, 0.004])


def test_lr_scheduler_hook_without_any_scheduler_says_so():
    trainer = _trainer()
    trainer.register_hooks([hooks.LRScheduler()])
    with pytest.raises(ValueError, match="was given no scheduler and its trainer \\(SimpleTrainer\\) has none"):
        trainer.train(0, 1)


def _scheduled_run(tmp_path, scheduler_fn, stop_after=None, resume=False):
    """Eight iterations with checkpoints every two; crashing after `stop_after`, or resumed from
    `tmp_path`: the recorded {iteration: lr}."""
    trainer = _trainer(lr=0.04)
    checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path), trainer=trainer)

    def crash(t):
        if t.iter == stop_after:
            raise RuntimeError("crash")

    trainer.register_hooks([
        hooks.LRScheduler(scheduler=scheduler_fn(trainer.optimizer)),
        hooks.PeriodicCheckpointer(checkpointer, period=2),
        hooks.CallbackHook(after_step=crash),
    ])
    start = resume_training(checkpointer, trainer, ToyLoader(), "", resume, 8) if resume else 0
    try:
        trainer.train(start, 8)
    except RuntimeError:
        pass
    return {it: v for v, it in trainer.storage.history("lr").values()}


@pytest.mark.parametrize("kind", ["param_scheduler", "torch_scheduler"])
def test_resumed_run_continues_the_lr_schedule_of_the_uninterrupted_one(tmp_path, kind):
    def scheduler_fn(optimizer):
        if kind == "param_scheduler":
            return WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.1, 0.5)
        return WarmupCosineLR(optimizer, max_iters=8, warmup_factor=0.1, warmup_iters=3)

    uninterrupted = _scheduled_run(tmp_path / "full", scheduler_fn)
    _scheduled_run(tmp_path / "parts", scheduler_fn, stop_after=3)
    resumed = _scheduled_run(tmp_path / "parts", scheduler_fn, resume=True)
    assert sorted(resumed) == [4, 5, 6, 7]
    assert [resumed[i] for i in range(4, 8)] == pytest.approx([uninterrupted[i] for i in range(4, 8)])
    assert len(set(uninterrupted.values())) >= 6  # the rate changes at almost every step


def test_iteration_timer_records_each_step_without_the_later_hooks(monkeypatch, caplog):
    clock = [0.0]  # a clock that moves only when a hook below says so
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def advance(seconds):
        def hook(trainer):
            clock[0] += seconds(trainer.iter)
        return hook

    trainer = _trainer()
    trainer.register_hooks([
        hooks.IterationTimer(warmup_iter=3),
        # iteration i "takes" i + 1 seconds; the periodic work after it takes 100, which "time" leaves out
        hooks.CallbackHook(before_step=advance(lambda i: i + 1.0), after_step=advance(lambda i: 100.0)),
    ])
    with caplog.at_level(logging.INFO, logger="d2mask"):
        trainer.train(0, 5)
    assert trainer.storage.history("time").values() == [(1.0, 0), (2.0, 1), (3.0, 2), (4.0, 3), (5.0, 4)]
    # iterations 3 and 4 after the warm-up: 9 seconds; the whole run 515
    assert "Overall training speed: 2 iterations in 0:00:09 (4.5000 s / it)" in caplog.text
    assert "Total training time: 0:08:35" in caplog.text


def test_periodic_checkpointer_keeps_newest_and_final(tmp_path):
    trainer = _trainer()
    checkpointer = Checkpointer(trainer.model, str(tmp_path), optimizer=trainer.optimizer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, period=2, max_to_keep=2)])
    trainer.train(0, 9)
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth"))
    # saved after iterations 1, 3, 5, 7; the two newest are kept
    assert files == ["model_0000005.pth", "model_0000007.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert data["iteration"] == 8 and len(data["rng_states"]) == 1
    for p, q in zip(_params(trainer.model), data["model"].values()):
        assert torch.equal(p, q)


def test_periodic_checkpointer_rejects_zero_period(tmp_path):
    with pytest.raises(ValueError, match="CHECKPOINT_PERIOD"):
        hooks.PeriodicCheckpointer(Checkpointer(ToyModel(), str(tmp_path)), period=0)


class ScriptedEval:
    """An evaluation function returning the next value of a script as {"toy": {"AP": v}}."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self):
        value = self.values[self.calls]
        self.calls += 1
        return {"toy": {"AP": value}}


def test_best_checkpointer_and_early_stopping_on_scripted_metric(tmp_path):
    trainer = _trainer()
    checkpointer = Checkpointer(trainer.model, str(tmp_path))
    snapshots = {}
    evaluate = ScriptedEval([10, 20, 15, 18, 12, 30])
    trainer.register_hooks([
        hooks.PeriodicCheckpointer(checkpointer, period=100),
        hooks.CallbackHook(after_step=lambda t: snapshots.update({t.iter: _params(t.model)})),
        hooks.EvalHook(2, evaluate),
        hooks.BestCheckpointer(2, checkpointer, "toy/AP", mode="max"),
        hooks.EarlyStopping(2, "toy/AP", patience=2, mode="max"),
    ])
    trainer.train(0, 20)
    # evaluations after iterations 1, 3, 5, 7 give 10, 20, 15, 18: two without improvement -> stop
    assert evaluate.calls == 4
    assert trainer.stopped_early and trainer.iter == 8
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert best["iteration"] == 3
    for p, q in zip(snapshots[3], best["model"].values()):
        assert torch.equal(p, q)
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 7
    assert [v for v, _ in trainer.storage.history("toy/AP").values()] == [10, 20, 15, 18]


def test_best_checkpointer_min_mode_and_state(tmp_path):
    trainer = _trainer()
    checkpointer = Checkpointer(trainer.model, str(tmp_path))
    best = hooks.BestCheckpointer(1, checkpointer, "toy/AP", mode="min")
    trainer.register_hooks([hooks.EvalHook(1, ScriptedEval([5, 3, 4, 1])), best])
    trainer.train(0, 4)  # periodic evaluations after 0, 1, 2; the final one (value 1) after training
    assert best.state_dict() == {"best_metric": 1, "best_iter": 4}
    with pytest.raises(ValueError, match="max' or 'min"):
        hooks.BestCheckpointer(1, checkpointer, "toy/AP", mode="biggest")


def test_eval_hook_runs_periodically_and_after_training():
    trainer = _trainer()
    evaluate = ScriptedEval([1, 2, 3])
    trainer.register_hooks([hooks.EvalHook(3, evaluate)])
    trainer.train(0, 6)
    # after iteration 2 (period), not after 5 (the last: left to after_train), then after training
    assert [i for _, i in trainer.storage.history("toy/AP").values()] == [2, 6]


def test_eval_hook_rejects_non_numbers():
    trainer = _trainer()
    trainer.register_hooks([hooks.EvalHook(1, lambda: {"toy": {"AP": "high"}})])
    with pytest.raises(ValueError, match="toy/AP"):
        trainer.train(0, 2)


def test_validation_loss_logged_without_touching_training():
    loader = FiniteToyLoader(num_batches=3, batch_size=4)
    rng_before_validation = {}

    def run(with_validation):
        trainer = _trainer(seed=3)
        if with_validation:
            record = hooks.CallbackHook(after_step=lambda t: rng_before_validation.update({t.iter: get_rng_state()}))
            trainer.register_hooks([record, hooks.ValidationLoss(2, trainer.model, loader)])
        torch.manual_seed(7)
        trainer.train(0, 5)
        return trainer

    plain, validated = run(False), run(True)
    history = validated.storage.history("val_total_loss").values()
    assert [i for _, i in history] == [1, 3, 4]
    latest = validated.storage.latest()
    assert latest["val_total_loss"][0] == pytest.approx(latest["val_loss_mse"][0] + latest["val_loss_l1"][0])
    # no gradient step, no batch-norm statistics and no random draw of training changed
    for p, q in zip(_params(plain.model), _params(validated.model)):
        assert torch.equal(p, q)
    assert validated.model.training and validated.model.norm.training

    # the last value, recomputed independently: mean over the held-out batches, norms in eval mode
    model = validated.model
    set_rng_state(rng_before_validation[4])
    model.norm.eval()
    with torch.no_grad():
        mse = [float(model(b)["loss_mse"]) for b in loader]
    assert latest["val_loss_mse"][0] == pytest.approx(sum(mse) / len(mse))


def test_periodic_writer_writes_json_and_plotter_writes_pngs(tmp_path):
    trainer = _trainer()
    sched = WarmupMultiStepLR(trainer.optimizer, [10], warmup_iters=0)
    metrics = tmp_path / "metrics.json"
    trainer.register_hooks([
        hooks.LRScheduler(trainer.optimizer, sched),
        hooks.EvalHook(0, ScriptedEval([42.0])),
        hooks.PeriodicWriter([JSONWriter(str(metrics))], period=4),
        hooks.MetricsPlotter(str(metrics), str(tmp_path)),
    ])
    trainer.train(0, 10)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [3, 7, 9, 10]
    assert {"total_loss", "loss_mse", "lr", "data_time"} <= set(records[0])
    assert records[-1] == {"iteration": 10, "toy/AP": 42.0}
    for name in ("losses.png", "lr.png", "ap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_callback_hook_calls_each_function_with_trainer():
    calls = []
    trainer = _trainer()
    trainer.register_hooks([hooks.CallbackHook(
        before_train=lambda t: calls.append(("before_train", t.iter)),
        after_backward=lambda t: calls.append(("after_backward", t.iter)),
        after_train=lambda t: calls.append(("after_train", t.iter)),
    )])
    trainer.train(0, 2)
    assert calls == [("before_train", 0), ("after_backward", 0), ("after_backward", 1), ("after_train", 2)]


def test_early_stopping_validates_arguments():
    with pytest.raises(ValueError, match="patience"):
        hooks.EarlyStopping(0, "toy/AP", patience=2)
    with pytest.raises(ValueError, match="patience"):
        hooks.EarlyStopping(2, "toy/AP", patience=0)


class _SignallingTrainer(SimpleTrainer):
    """Sends this process `signals` during the step of iteration 2."""

    def __init__(self, signals, **kwargs):
        model = ToyModel()
        super().__init__(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.01), **kwargs)
        self._signals = signals

    def run_step(self):
        if self.iter == 2:
            for signum in self._signals:
                os.kill(os.getpid(), signum)
        super().run_step()


def _with_signal_checkpointer(trainer, out):
    periodic = hooks.PeriodicCheckpointer(Checkpointer(trainer.model, str(out), trainer=trainer), period=100)
    trainer.register_hooks([periodic, hooks.SignalCheckpointer(periodic, ["SIGINT", "SIGUSR1"])])
    return trainer


def test_signal_checkpointer_finishes_the_step_saves_it_and_exits_with_128_plus_the_signal(tmp_path):
    previous = signal.getsignal(signal.SIGUSR1)
    trainer = _with_signal_checkpointer(_SignallingTrainer([signal.SIGUSR1]), tmp_path)
    with pytest.raises(TrainingInterrupted) as e:
        trainer.train(0, 10)
    assert e.value.code == 128 + signal.SIGUSR1
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=False)
    assert saved["iteration"] == 2 and saved["trainer"]["iteration"] == 2
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert signal.getsignal(signal.SIGUSR1) is previous  # the handlers are put back


def test_a_second_sigint_abandons_the_step_without_a_checkpoint(tmp_path):
    trainer = _with_signal_checkpointer(_SignallingTrainer([signal.SIGINT, signal.SIGINT]), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(0, 10)
    assert not list(tmp_path.glob("*.pth"))


class _TwoLayers(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.trunk, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, out)

    def forward(self, batch):
        return {"loss": self.head(self.trunk(torch.stack([b["x"] for b in batch]))).square().mean()}


def test_resuming_a_model_whose_shapes_changed_is_refused_before_loading(tmp_path):
    model = _TwoLayers(1)
    trainer = SimpleTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    trainer.train(0, 2)
    DetectionCheckpointer(model, str(tmp_path), trainer=trainer).save("model_0000001", iteration=1)

    # the head changed (another class count): without the check the trunk would load, the head be
    # skipped, and the optimizer's momentum of the old head crash the first step
    changed = _TwoLayers(3)
    resumed = SimpleTrainer(changed, ToyLoader(), torch.optim.SGD(changed.parameters(), lr=0.01, momentum=0.9))
    before = {k: v.clone() for k, v in changed.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        resume_training(DetectionCheckpointer(changed, str(tmp_path), trainer=resumed), resumed, ToyLoader(), "",
                        True, 8)
    assert "the model differs from the one that saved it (2 tensors, e.g. head.weight: (1, 4) saved, (3, 4) now" \
        in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in changed.state_dict().items())


def test_resuming_after_an_early_stop_continues_with_the_next_iteration(tmp_path):
    def run(resume):
        trainer = _trainer()
        checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path), trainer=trainer)
        first = []
        trainer.register_hooks([
            hooks.CallbackHook(before_step=lambda t: first.append(t.iter) if not first else None),
            hooks.PeriodicCheckpointer(checkpointer, period=100),
            hooks.EvalHook(2, ScriptedEval([10, 20, 15, 18, 30])),
            hooks.EarlyStopping(2, "toy/AP", patience=2, mode="max"),
        ])
        trainer.train(resume_training(checkpointer, trainer, ToyLoader(), "", resume, 8), 20)
        return first[0]

    assert run(resume=False) == 0  # stops after iteration 7 (the evaluations after 5 and 7 are worse)
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 7
    assert run(resume=True) == 8
