import logging

import pytest
import torch
from torch import nn

from d2mask.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset


class RecordingModel(nn.Module):
    """Returns each input's value doubled; records its mode and whether gradients were on."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls = []

    def forward(self, batch):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"value": x["value"] * 2} for x in batch]


class SumEvaluator(DatasetEvaluator):
    def __init__(self, task):
        self.task = task
        self.total = None

    def reset(self):
        self.total = 0

    def process(self, inputs, outputs):
        self.total += sum(o["value"] for o in outputs)

    def evaluate(self):
        return {self.task: {"sum": self.total}}


def test_runs_in_eval_mode_without_grad_and_restores_training_mode():
    model = RecordingModel().train()
    loader = [[{"value": 1}, {"value": 2}], [{"value": 3}]]
    results = inference_on_dataset(model, loader, [SumEvaluator("a"), SumEvaluator("b")])
    assert results == {"a": {"sum": 12}, "b": {"sum": 12}}
    assert model.calls == [(False, False), (False, False)]
    assert model.training


def test_mode_is_restored_after_an_error():
    class Failing(RecordingModel):
        def forward(self, batch):
            raise RuntimeError("boom")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, [[{"value": 1}]], None)
    assert model.training


def test_evaluator_state_is_reset_and_none_gives_empty_results():
    evaluator = SumEvaluator("a")
    evaluator.reset()
    evaluator.total = 100  # left over from an earlier run
    assert inference_on_dataset(RecordingModel(), [[{"value": 1}]], evaluator) == {"a": {"sum": 2}}
    assert inference_on_dataset(RecordingModel(), [[{"value": 1}]], None) == {}


def test_duplicate_tasks_in_combined_evaluators():
    evaluators = DatasetEvaluators([SumEvaluator("a"), SumEvaluator("a")])
    evaluators.reset()
    with pytest.raises(KeyError, match="'a'"):
        evaluators.evaluate()


def test_logs_progress_and_total_time(monkeypatch, caplog):
    from d2mask.evaluation import evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "_LOG_PERIOD_S", 0.0)  # a progress line after every batch
    loader = [[{"value": i}] for i in range(8)]
    with caplog.at_level(logging.INFO, logger="d2mask.evaluation.evaluator"):
        inference_on_dataset(RecordingModel(), loader, None)
    progress = [r.message for r in caplog.records if r.message.startswith("Inference done")]
    assert progress and progress[-1].startswith("Inference done 8/8.") and "s/img" in progress[-1] and "ETA=" in progress[-1]
    assert any("Total inference time" in r.message for r in caplog.records)
