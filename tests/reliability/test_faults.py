"""Faults inside a run: a non-finite loss stops it clearly (or is skipped, when configured) without
touching the last good checkpoint; interrupted writes of results and metrics leave complete files."""
import json
import math
import os

import pytest
import torch

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.engine.hooks import CallbackHook
from d2mask.evaluation import COCOEvaluator
from d2mask.structures import Boxes, BoxMode, Instances
from d2mask.utils.events import EventStorage, JSONWriter
from d2mask.utils.plotting import load_metrics
from tests.engine.toy import ToyModel, ToyTrainer, toy_cfg


class _NonFiniteAt(ToyModel):
    """The toy model whose "loss_mse" is NaN at the training iterations in `BAD`."""

    BAD = ()

    def __init__(self):
        super().__init__()
        self.steps = 0

    def forward(self, batch):
        losses = super().forward(batch)
        if self.training:
            if self.steps in self.BAD:
                losses["loss_mse"] = losses["loss_mse"] * float("nan")
            self.steps += 1
        return losses


def _trainer(tmp_path, bad_iterations, *opts):
    class Trainer(ToyTrainer):
        @classmethod
        def build_model(cls, cfg):
            model = _NonFiniteAt()
            model.BAD = bad_iterations
            return model

    return Trainer(toy_cfg(str(tmp_path), "SOLVER.CHECKPOINT_PERIOD=2", *opts))


def test_nonfinite_loss_stops_naming_iteration_and_losses_and_keeps_the_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, (5,))
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    message = str(info.value)
    assert "at iteration 5" in message and "loss_mse=nan" in message and "loss_l1=" in message
    assert "SOLVER.MAX_NONFINITE_SKIPS" in message

    # the checkpoint of iteration 3 is the last, complete and finite; nothing of the failed state was saved
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (tmp_path / "model_final.pth").exists()
    checkpoint = torch.load(tmp_path / "model_0000003.pth", weights_only=True)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())

    # and a run resumes from it
    resumed = _trainer(tmp_path, ())
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 9


def test_nonfinite_steps_are_skipped_and_counted_up_to_the_configured_limit(tmp_path):
    trainer = _trainer(tmp_path / "one", (5,), "SOLVER.MAX_NONFINITE_SKIPS=1")
    trainer.train()
    final = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)
    assert final["trainer"]["_trainer"]["num_nonfinite_skips"] == 1
    assert all(torch.isfinite(v).all() for v in final["model"].values())
    assert load_metrics(str(tmp_path / "one" / "metrics.json"))["nonfinite_skips"] == [(5, 1.0)]

    with pytest.raises(FloatingPointError, match=r"at iteration 6: .*after 1 skipped steps, SOLVER.MAX_NONFINITE_SKIPS"):
        _trainer(tmp_path / "two", (5, 6), "SOLVER.MAX_NONFINITE_SKIPS=1").train()


@pytest.fixture
def box_dataset():
    name = "reliability_eval"
    record = {"file_name": "a.png", "image_id": 1, "height": 60, "width": 80,
              "annotations": [{"bbox": [5, 5, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}]}
    DatasetCatalog.register(name, lambda: [record])
    MetadataCatalog.get(name).set(thing_classes=["a"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, output_dir, score):
    evaluator = COCOEvaluator(name, output_dir=str(output_dir))
    evaluator.reset()
    instances = Instances((60, 80), pred_boxes=Boxes(torch.tensor([[5.0, 5.0, 25.0, 25.0]])),
                          scores=torch.tensor([score]), pred_classes=torch.tensor([0]))
    evaluator.process([{"image_id": 1}], [{"instances": instances}])
    return evaluator.evaluate()


def test_an_interrupted_write_of_predictions_keeps_the_previous_file(box_dataset, tmp_path, monkeypatch):
    _evaluate(box_dataset, tmp_path, 0.5)
    path = tmp_path / "coco_instances_results.json"
    before = path.read_bytes()

    def interrupted(obj, f, **kwargs):
        f.write('[{"image_id": 1, "sco')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(box_dataset, tmp_path, 0.9)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["coco_instances_results.json"]


def test_metrics_of_a_resumed_run_start_on_a_new_line_after_a_cut_one(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 0, "total_loss": 2.0}\n{"iteration": 1, "total_lo')  # killed mid-line
    with EventStorage(2) as storage:
        writer = JSONWriter(str(path))
        storage.put_scalar("total_loss", 1.5)
        writer.write()
        writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"iteration": 0, "total_loss": 2.0}' and lines[1] == '{"iteration": 1, "total_lo'
    assert json.loads(lines[2]) == {"iteration": 2, "total_loss": 1.5}
    assert load_metrics(str(path))["total_loss"] == [(0, 2.0), (2, 1.5)]
    assert not math.isnan(load_metrics(str(path))["total_loss"][-1][1])


def test_a_new_run_in_an_old_output_directory_never_prunes_its_own_last_checkpoint(tmp_path):
    ToyTrainer(toy_cfg(str(tmp_path), "SOLVER.MAX_ITER=10", "SOLVER.CHECKPOINT_PERIOD=4")).train()
    assert {"model_0000003.pth", "model_0000007.pth"} <= set(os.listdir(tmp_path))

    # a run started afresh in the same directory, keeping 1 checkpoint, killed after iteration 1
    trainer = ToyTrainer(toy_cfg(str(tmp_path), "SOLVER.MAX_ITER=10", "SOLVER.CHECKPOINT_PERIOD=1",
                                 "SOLVER.CHECKPOINTS_TO_KEEP=1"))

    def crash(t):
        if t.iter == 1:
            raise KeyboardInterrupt("killed")

    trainer.register_hooks([CallbackHook(after_step=crash)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # the new run's checkpoints sort before the old run's, but are the ones --resume needs
    last = (tmp_path / "last_checkpoint").read_text()
    assert last == "model_0000001.pth" and (tmp_path / last).is_file()
    assert not (tmp_path / "model_0000000.pth").exists()  # pruned: the new run keeps 1
    resumed = ToyTrainer(toy_cfg(str(tmp_path)))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2


def test_a_user_error_during_training_is_logged_as_one_line(tmp_path, caplog):
    from d2mask.data import DatasetError
    from d2mask.engine import SimpleTrainer

    class _MissingImage:
        def __iter__(self):
            raise DatasetError("image file not found: /nowhere/1.png")

    model = torch.nn.Linear(1, 1)
    trainer = SimpleTrainer(model, _MissingImage(), torch.optim.SGD(model.parameters(), lr=0.1))
    with caplog.at_level("ERROR", logger="d2mask"), pytest.raises(DatasetError):
        trainer.train(0, 3)
    records = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.exc_info for r in records] == [None]
    assert "Training stopped at iteration 0: DatasetError: image file not found: /nowhere/1.png" in records[0].getMessage()
