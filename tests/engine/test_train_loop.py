import copy
import math

import pytest
import torch
from torch import nn

from d2mask.engine import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from d2mask.engine.hooks import CallbackHook
from d2mask.utils.events import get_event_storage
from tests.engine.toy import ToyLoader, ToyModel


class RecordingHook(HookBase):
    def __init__(self, name, log):
        self.name = name
        self.log = log

    def before_train(self):
        self.log.append((self.name, "before_train", self.trainer.iter))

    def after_train(self):
        self.log.append((self.name, "after_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_backward(self):
        self.log.append((self.name, "after_backward", self.trainer.iter))

    def after_step(self):
        self.log.append((self.name, "after_step", self.trainer.iter))


def _trainer(model=None, lr=0.1, **kwargs):
    torch.manual_seed(0)
    model = model or ToyModel()
    return SimpleTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=lr), **kwargs)


def test_hooks_called_in_order():
    log = []
    trainer = _trainer()
    trainer.register_hooks([RecordingHook("a", log), None, RecordingHook("b", log)])
    trainer.train(5, 7)
    events = [(n, e) for n, e, _ in log]
    per_step = [("a", "before_step"), ("b", "before_step"), ("a", "after_backward"), ("b", "after_backward"),
                ("a", "after_step"), ("b", "after_step")]
    assert events == [("a", "before_train"), ("b", "before_train")] + per_step * 2 + [
        ("a", "after_train"), ("b", "after_train")]
    step_iters = [i for _, e, i in log if e in ("before_step", "after_step")]
    assert step_iters == [5, 5, 5, 5, 6, 6, 6, 6]
    # after training, iter is one past the last iteration
    assert log[-1][2] == 7


def test_after_train_runs_when_step_raises():
    log = []
    trainer = _trainer()
    trainer.register_hooks([RecordingHook("a", log), CallbackHook(after_step=lambda t: 1 / 0)])
    with pytest.raises(ZeroDivisionError):
        trainer.train(0, 3)
    assert log[-1] == ("a", "after_train", 0)


def test_register_rejects_non_hooks():
    with pytest.raises(TypeError, match="HookBase"):
        _trainer().register_hooks([object()])


def test_simple_trainer_step_equals_manual_sgd():
    torch.manual_seed(0)
    model = ToyModel()
    reference = copy.deepcopy(model)
    trainer = SimpleTrainer(model, ToyLoader(batch_size=2), torch.optim.SGD(model.parameters(), lr=0.1))
    torch.manual_seed(1)
    trainer.train(0, 1)

    torch.manual_seed(1)
    batch = next(iter(ToyLoader(batch_size=2)))
    reference.train()
    losses = reference(batch)
    sum(losses.values()).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


def test_losses_and_data_time_are_logged_and_training_learns():
    trainer = _trainer(lr=0.05)
    first = []
    trainer.register_hooks([CallbackHook(after_step=lambda t: first.append(t.storage.latest()["total_loss"][0]))])
    trainer.train(0, 150)
    latest = trainer.storage.latest()
    assert {"total_loss", "loss_mse", "loss_l1", "data_time"} <= set(latest)
    assert latest["total_loss"][0] == pytest.approx(latest["loss_mse"][0] + latest["loss_l1"][0])
    assert latest["total_loss"][1] == 149
    assert sum(first[-10:]) < 0.1 * sum(first[:10])


class NanAtModel(ToyModel):
    def __init__(self, bad_iters):
        super().__init__()
        self.bad_iters = bad_iters
        self.calls = 0

    def forward(self, batch):
        out = super().forward(batch)
        if self.calls in self.bad_iters:
            out["loss_mse"] = out["loss_mse"] * float("nan")
        self.calls += 1
        return out


def test_nonfinite_loss_raises_naming_iteration_and_every_loss():
    trainer = _trainer(NanAtModel({2}))
    with pytest.raises(FloatingPointError) as e:
        trainer.train(0, 5)
    message = str(e.value)
    assert "iteration 2" in message and "loss_mse=nan" in message and "loss_l1=" in message


def test_nonfinite_steps_skipped_up_to_the_limit():
    model = NanAtModel({1, 3})
    trainer = _trainer(model, max_nonfinite_skips=2)
    before = {}
    trainer.register_hooks([CallbackHook(before_step=lambda t: before.update(
        {t.iter: [p.detach().clone() for p in t.model.parameters()]}))])
    trainer.train(0, 3)
    after_skip = [p.detach() for p in model.parameters()]
    # iteration 1 was skipped: the weights entering iteration 2 are those entering iteration 1
    for p, q in zip(before[1], before[2]):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(before[0], before[1]))
    assert trainer.num_nonfinite_skips == 1
    assert all(torch.isfinite(p).all() for p in after_skip)

    trainer = _trainer(NanAtModel({0, 1}), max_nonfinite_skips=1)
    with pytest.raises(FloatingPointError, match="iteration 1.*after 1 skipped"):
        trainer.train(0, 3)


def test_stop_training_ends_after_current_iteration():
    log = []
    trainer = _trainer()
    stopper = CallbackHook(after_step=lambda t: t.stop_training("enough") if t.iter == 2 else None)
    trainer.register_hooks([stopper, RecordingHook("r", log)])
    trainer.train(0, 10)
    assert [i for _, e, i in log if e == "after_step"] == [0, 1, 2]
    assert trainer.stopped_early and trainer.iter == 3


class Counter(HookBase):
    def __init__(self):
        self.count = 0

    def after_step(self):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]



def test_state_dict_round_trip_includes_optimizer_and_hook_state():
    trainer = _trainer()
    trainer.register_hooks([Counter()])
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1, momentum=0.9)
    trainer.train(0, 4)
    state = trainer.state_dict()
    # the last completed iteration (a resumed run continues with the next), also after the loop
    assert state["iteration"] == 3 and state["hooks"] == {"Counter": {"count": 4}}

    other = _trainer()
    other.optimizer = torch.optim.SGD(other.model.parameters(), lr=0.1, momentum=0.9)
    hook = Counter()
    other.register_hooks([hook])
    other.load_state_dict(state)
    assert other.iter == 3 and hook.count == 4
    saved, loaded = trainer.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
    assert loaded.keys() == saved.keys() and len(saved) == len(list(trainer.model.parameters()))
    for i, state in saved.items():
        assert torch.equal(loaded[i]["momentum_buffer"], state["momentum_buffer"]), i


def test_model_returning_a_tensor_logs_total_loss():
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0))

        def forward(self, batch):
            return self.w**2

    model = Scalar()
    trainer = SimpleTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, 1)
    assert trainer.storage.latest()["total_loss"][0] == pytest.approx(4.0)
    assert model.w.item() == pytest.approx(2.0 - 0.1 * 4.0)


def test_amp_trainer_bfloat16_on_cpu_learns():
    torch.manual_seed(0)
    model = ToyModel()
    trainer = AMPTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.05), precision=torch.bfloat16)
    assert trainer.grad_scaler is None
    dtypes = []
    model.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.train(0, 100)
    assert dtypes[0] == torch.bfloat16
    history = trainer.storage.history("total_loss").values()
    assert history[-1][0] < 0.3 * history[0][0]


def test_amp_trainer_rejects_other_precisions():
    model = ToyModel()
    with pytest.raises(ValueError, match="float16"):
        AMPTrainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.1), precision=torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 AMP with a GradScaler needs CUDA")
def test_amp_trainer_float16_cuda_with_grad_scaler():
    torch.manual_seed(0)
    model = ToyModel().cuda()

    class CudaLoader(ToyLoader):
        def __iter__(self):
            for batch in super().__iter__():
                yield [{k: v.cuda() if torch.is_tensor(v) else v for k, v in d.items()} for d in batch]

    trainer = AMPTrainer(model, CudaLoader(), torch.optim.SGD(model.parameters(), lr=0.05))
    assert trainer.grad_scaler is not None
    trainer.train(0, 100)
    history = trainer.storage.history("total_loss").values()
    assert history[-1][0] < 0.3 * history[0][0]
    assert "grad_scaler" in trainer.state_dict()
    assert math.isfinite(trainer.grad_scaler.get_scale())


def test_event_storage_active_during_training_only():
    seen = []
    trainer = _trainer()
    trainer.register_hooks([CallbackHook(after_step=lambda t: seen.append(get_event_storage() is t.storage))])
    trainer.train(0, 2)
    assert seen == [True, True]
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()


def test_trainer_base_requires_run_step():
    with pytest.raises(NotImplementedError):
        TrainerBase().train(0, 1)
