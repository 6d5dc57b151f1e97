"""The evaluator protocol and the loop that runs a model over a dataset and feeds an evaluator."""
import datetime
import logging
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import torch
from torch import nn

from ..utils import comm

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]

logger = logging.getLogger(__name__)

# Seconds between two progress lines of inference_on_dataset.
_LOG_PERIOD_S = 5.0


class DatasetEvaluator:
    """Accumulates a model's outputs over a dataset and computes metrics from them.

    `reset()` before a run, `process(inputs, outputs)` for every batch, `evaluate()` at the end. In a
    distributed run each process sees its own shard; `evaluate` gathers and returns the results on the
    main process (others may return None or {}).
    """

    def reset(self) -> None:
        pass

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """
        Args:
            inputs: the batch given to the model (dicts with e.g. "image_id").
            outputs: the model's outputs for it, in the same order.
        """

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Returns {task: {metric: value}}, e.g. {"bbox": {"AP": 42.0}}."""
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators fed the same outputs; their results are merged (task names must differ)."""

    def __init__(self, evaluators: List[DatasetEvaluator]):
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Dict[str, Any]:
        results: Dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            for task, metrics in (evaluator.evaluate() or {}).items():
                if task in results:
                    raise KeyError(f"Two evaluators both produced results for '{task}'; "
                                   f"evaluators combined in DatasetEvaluators must report different tasks")
                results[task] = metrics
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Puts `model` in eval mode for the block and restores its previous mode after, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[List[Dict[str, Any]]],
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
) -> Dict[str, Any]:
    """Runs `model` in eval mode over `data_loader` without gradients, feeding `evaluator`, and logs
    progress (images done, s/img, ETA) every few seconds.

    Args:
        model: called on each batch; its training mode is restored after.
        data_loader: batches of model inputs, this process's shard of the dataset.
        evaluator: one, a list (combined), or None to only run the model.

    Returns:
        The evaluator's results on the main process; {} elsewhere or without an evaluator.
    """
    if isinstance(evaluator, list):
        evaluator = DatasetEvaluators(evaluator)
    evaluator = evaluator or DatasetEvaluator()
    total = len(data_loader)  # type: ignore[arg-type]
    logger.info(f"Start inference on {total} batches")
    evaluator.reset()

    # The first iterations pay for warm-up (allocator, cuDNN autotuning); leave them out of s/img.
    num_warmup = min(5, total - 1)
    start = time.perf_counter()
    last_log = start
    timed_images = 0
    # the model's GPU: synchronising the current one would wait for (or open a context on) another
    cuda_device = next((p.device for p in model.parameters() if p.is_cuda), None)
    with inference_context(model), torch.no_grad():
        for idx, inputs in enumerate(data_loader):
            if idx == num_warmup:
                start = time.perf_counter()
                timed_images = 0
            outputs = model(inputs)
            if cuda_device is not None:
                torch.cuda.synchronize(cuda_device)  # so that the time measured includes the GPU's work
            evaluator.process(inputs, outputs)
            timed_images += len(inputs)

            now = time.perf_counter()
            if now - last_log >= _LOG_PERIOD_S and idx >= num_warmup:
                per_batch = (now - start) / (idx + 1 - num_warmup)
                eta = datetime.timedelta(seconds=int(per_batch * (total - idx - 1)))
                logger.info(f"Inference done {idx + 1}/{total}. {(now - start) / timed_images:.4f} s/img. ETA={eta}")
                last_log = now

    elapsed = time.perf_counter() - start
    logger.info(
        f"Total inference time: {datetime.timedelta(seconds=int(elapsed))} "
        f"({elapsed / max(timed_images, 1):.4f} s/img, {timed_images} images timed after {num_warmup} warm-up "
        f"batches, on {comm.get_world_size()} process(es))"
    )
    results = evaluator.evaluate()
    return results if results is not None else {}
