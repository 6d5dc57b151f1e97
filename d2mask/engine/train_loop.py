"""The training loop: hooks around iterations, and the step of plain and mixed-precision training.

`TrainerBase.train` knows nothing but "run hooks around `run_step` from start_iter to max_iter".
`SimpleTrainer.run_step` is one step of SGD-style training; to change what a step does, wrap or
replace the object that does it: the model (losses), the data loader (batches), the optimiser
(update rule, clipping), or subclass and override `run_step`.
"""
import logging
import math
import time
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from ..config import ConfigError
from ..utils import comm
from .errors import USER_ERRORS, user_error_message
from ..utils.events import EventStorage, get_event_storage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """Code run at fixed points of training. Each method does nothing by default.

    The trainer calls, for each hook in registration order::

        hook.before_train()
        for iter in range(start_iter, max_iter):
            hook.before_step()
            trainer.run_step()       # calls hook.after_backward() between backward and the update
            hook.after_step()
        hook.after_train()           # also when training raised

    `self.trainer` is set when the hook is registered; `trainer.iter` is the current iteration and
    `trainer.storage` the EventStorage of the run.
    """

    trainer: "TrainerBase" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """State saved in checkpoints so that a resumed run continues the hook (e.g. the best metric)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class TrainerBase:
    """Runs `run_step` from `start_iter` to `max_iter` with hooks around it.

    Attributes:
        iter: the current iteration; after training, one past the last completed iteration.
        start_iter, max_iter: the range of the run.
        storage: the EventStorage opened for the run.
    """

    def __init__(self):
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: Optional[EventStorage] = None
        self._stop_reason: Optional[str] = None
        self._loop_ended = False

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Appends hooks (None entries are skipped); they run in the order registered."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"Hooks must be HookBase instances, got {type(h).__name__}")
            # a weak reference: trainer -> hook -> trainer would otherwise be a cycle keeping both alive
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def stop_training(self, reason: str) -> None:
        """Ends training after the current iteration (all its `after_step` hooks still run)."""
        self._stop_reason = reason

    @property
    def stopped_early(self) -> bool:
        return self._stop_reason is not None

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self._stop_reason = None
        self._loop_ended = False
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self._stop_reason is not None:
                        logger.info(f"Stopping training after iteration {self.iter}: {self._stop_reason}")
                        break
                # past the last completed iteration, as if the loop had run to its end
                self.iter += 1
                self._loop_ended = True
            except USER_ERRORS as e:
                # The caller prints the message alone; a traceback here would bury it.
                logger.error(f"Training stopped at iteration {self.iter}: {user_error_message(e)}")
                raise
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        # scalars put during the step (losses, lr, time) are recorded at this iteration
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        hooks = {}
        for h in self._hooks:
            state = h.state_dict()
            if state:
                hooks[type(h).__qualname__] = state
        # the last completed iteration, which a resumed run continues after: during a step's hooks
        # that is `iter`; after the loop (a final checkpoint saved by `after_train`) `iter` is one past it
        return {"iteration": self.iter - 1 if self._loop_ended else self.iter, "hooks": hooks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iter = state["iteration"]
        for key, value in state.get("hooks", {}).items():
            matching = [h for h in self._hooks if type(h).__qualname__ == key]
            if not matching:
                logger.warning(f"The checkpoint holds the state of hook '{key}', which this trainer does not have")
            for h in matching:
                h.load_state_dict(value)


class SimpleTrainer(TrainerBase):
    """One step: next batch -> losses -> sum -> backward -> optimiser step.

    The model, in training mode, takes a batch and returns a dict of scalar losses. Each loss, the
    total and the data-loading time are logged every iteration (averaged over processes). A NaN or
    infinite loss raises FloatingPointError naming the iteration and every loss value, unless
    `max_nonfinite_skips` allows skipping that step.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        max_nonfinite_skips: int = 0,
    ):
        """
        Args:
            model: returns a dict of losses in training mode.
            data_loader: an iterable of batches (usually infinite).
            optimizer: updates the model's parameters.
            max_nonfinite_skips: steps with a non-finite loss skipped (no update) before raising.
        """
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.max_nonfinite_skips = max_nonfinite_skips
        self.num_nonfinite_skips = 0

    def _next_batch(self):
        if self._data_loader_iter_obj is not None:
            return next(self._data_loader_iter_obj)
        # Starting a DataLoader draws its workers' base seed from torch's global generator. Kept
        # out of the model's random stream, the start happening at iteration 0 or at a resumed
        # iteration leaves that stream the same (augmentations draw from NumPy, not torch).
        with torch.random.fork_rng(devices=[]):
            self._data_loader_iter_obj = iter(self.data_loader)
            return next(self._data_loader_iter_obj)

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: the model was switched to eval mode"
        start = time.perf_counter()
        data = self._next_batch()
        data_time = time.perf_counter() - start

        loss_dict = self._loss_dict(self.model(data))
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        losses.backward()
        self.after_backward()

        if self._write_metrics(loss_dict, data_time):
            self.optimizer.step()

    @staticmethod
    def _loss_dict(output) -> Dict[str, torch.Tensor]:
        return {"total_loss": output} if isinstance(output, torch.Tensor) else output

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float) -> bool:
        """Logs the losses averaged over processes and checks them.

        Returns:
            False if a loss is NaN or infinite on any process and the step is to be skipped.

        Raises:
            FloatingPointError: a loss is NaN or infinite and no more skips are allowed.
        """
        names = list(loss_dict)
        # one device-to-host copy for all the losses
        values = torch.stack([loss_dict[k].detach().float() for k in names]).cpu().tolist()
        metrics = dict(zip(names, values))
        # every process gets every process's losses, so all of them take the same decision below
        all_metrics = comm.all_gather((metrics, data_time))
        if not all(math.isfinite(v) for m, _ in all_metrics for v in m.values()):
            return self._on_nonfinite([m for m, _ in all_metrics])

        storage = get_event_storage()
        if comm.is_main_process():
            averaged = {k: sum(m[k] for m, _ in all_metrics) / len(all_metrics) for k in names}
            storage.put_scalar("total_loss", sum(averaged.values()))
            if len(averaged) > 1 or "total_loss" not in averaged:
                storage.put_scalars(**averaged)
            # the slowest process sets the pace, so its data time is the one that matters
            storage.put_scalar("data_time", max(t for _, t in all_metrics))
        return True

    def _on_nonfinite(self, all_metrics: List[Dict[str, float]]) -> bool:
        per_rank = "; ".join(
            f"rank {r}: " + ", ".join(f"{k}={v}" for k, v in m.items()) for r, m in enumerate(all_metrics)
        )
        message = f"Loss became infinite or NaN at iteration {self.iter}: {per_rank}"
        if self.num_nonfinite_skips >= self.max_nonfinite_skips:
            if self.max_nonfinite_skips > 0:
                message += f" (after {self.num_nonfinite_skips} skipped steps, SOLVER.MAX_NONFINITE_SKIPS)"
            else:
                message += " (SOLVER.MAX_NONFINITE_SKIPS > 0 would skip such steps)"
            raise FloatingPointError(message)
        self.num_nonfinite_skips += 1
        logger.warning(
            f"{message}. Skipping this step ({self.num_nonfinite_skips} of at most {self.max_nonfinite_skips})."
        )
        self.optimizer.zero_grad(set_to_none=True)
        if comm.is_main_process():
            get_event_storage().put_scalar("nonfinite_skips", self.num_nonfinite_skips, smoothing_hint=False)
        return False

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        state["num_nonfinite_skips"] = self.num_nonfinite_skips
        state["model_training_state"] = {
            name: module.training_state_dict() for name, module in _modules_with_training_state(self.model)
        }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_nonfinite_skips = state.get("num_nonfinite_skips", 0)
        saved = state.get("model_training_state", {})
        for name, module in _modules_with_training_state(self.model):
            if name in saved:
                module.load_training_state_dict(saved[name])


def _modules_with_training_state(model: nn.Module):
    """(name, module) of the model's modules that keep training progress outside their weights,
    `training_state_dict()` / `load_training_state_dict(state)` (e.g. RetinaNet's loss normaliser).
    Names are those of the model without its DistributedDataParallel wrapper, so that a checkpoint of
    one process resumes on several and back."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "training_state_dict", None))]


class AMPTrainer(SimpleTrainer):
    """SimpleTrainer with the forward pass under autocast: float16 with a GradScaler, or bfloat16."""

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        precision: torch.dtype = torch.float16,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        **kwargs,
    ):
        """
        Args:
            precision: torch.float16 or torch.bfloat16.
            grad_scaler: used with float16 (default: a new GradScaler for the model's device);
                bfloat16 has float32's range and needs none.
            kwargs: as SimpleTrainer's.
        """
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMPTrainer precision must be torch.float16 or torch.bfloat16, got {precision}")
        super().__init__(model, data_loader, optimizer, **kwargs)
        device = next(model.parameters()).device
        self.device_type = device.type
        if precision == torch.bfloat16 and device.type == "cuda":
            _check_bf16_support(device)
        self.precision = precision
        if precision == torch.float16 and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler if precision == torch.float16 else None

    def run_step(self) -> None:
        assert self.model.training, "AMPTrainer: the model was switched to eval mode"
        start = time.perf_counter()
        data = self._next_batch()
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self._loss_dict(self.model(data))
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self.after_backward()

        if not self._write_metrics(loss_dict, data_time):
            return
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


def _check_bf16_support(device: torch.device) -> None:
    """Raises ConfigError if the GPU `device` cannot compute in bfloat16 natively (before Ampere),
    where autocast would otherwise fail at the first matrix product, or emulate it slowly."""
    with torch.cuda.device(device):
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ConfigError(
                f"SOLVER.AMP.PRECISION bfloat16: {device} ({torch.cuda.get_device_name(device)}) does not support "
                f"bfloat16; use float16"
            )
