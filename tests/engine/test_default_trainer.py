import json
import os

import pytest
import torch

from d2mask.config import ConfigError, get_cfg
from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.engine import AMPTrainer, DefaultTrainer, launch
from d2mask.engine.hooks import CallbackHook
from d2mask.structures import BoxMode
from d2mask.utils import comm
from d2mask.utils.env import seed_all_rng
from tests.engine.toy import ToyTrainer, toy_cfg


def _new_trainer(cfg, seed=0):
    # what default_setup does at the start of a process
    seed_all_rng(seed)
    return ToyTrainer(cfg)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_writes_outputs_and_returns_last_evaluation(tmp_path):
    cfg = toy_cfg(str(tmp_path), "TEST.EVAL_PERIOD=4", "TEST.BEST_METRIC=toy/AP", "TEST.VAL_LOSS_PERIOD=5")
    trainer = _new_trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert set(results) == {"toy"} and 0 < results["toy"]["AP"] <= 100
    files = set(os.listdir(tmp_path))
    assert {"metrics.json", "last_checkpoint", "model_0000003.pth", "model_0000007.pth", "model_final.pth",
            "model_best.pth", "losses.png", "lr.png", "ap.png"} <= files
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    evals = [(r["iteration"], r["toy/AP"]) for r in records if "toy/AP" in r]
    assert [i for i, _ in evals] == [3, 7, 10] and evals[-1][1] == pytest.approx(results["toy"]["AP"])
    assert [r["iteration"] for r in records if "val_total_loss" in r] == [4, 9]
    assert all("lr" in r and "time" in r for r in records if r["iteration"] == 9)


def test_eval_only_on_saved_checkpoint_gives_the_final_results(tmp_path):
    cfg = toy_cfg(str(tmp_path))
    trainer = _new_trainer(cfg)
    results = trainer.train()

    model = ToyTrainer.build_model(cfg)
    from d2mask.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).resume_or_load(str(tmp_path / "model_final.pth"), resume=False)
    assert ToyTrainer.test(cfg, model) == results


def test_expected_results_are_verified_after_training(tmp_path):
    """TEST.EXPECTED_RESULTS, as in Detectron2: a final result off by more than its tolerance ends the
    run with status 1."""
    cfg = toy_cfg(str(tmp_path), "SOLVER.MAX_ITER=2", "SOLVER.CHECKPOINT_PERIOD=10")
    cfg.TEST.EXPECTED_RESULTS = [["toy", "AP", -5.0, 1.0]]  # AP is in [0, 100]
    with pytest.raises(SystemExit) as exit_info:
        _new_trainer(cfg).train()
    assert exit_info.value.code == 1


def _interrupt_at(iteration):
    def stop(trainer):
        if trainer.iter == iteration:
            raise KeyboardInterrupt("simulated kill")

    return CallbackHook(after_step=stop)


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path):
    opts = ["SOLVER.MAX_ITER=12", "SOLVER.STEPS=(6,)", "SOLVER.CHECKPOINT_PERIOD=3"]
    full = _new_trainer(toy_cfg(str(tmp_path / "full"), *opts))
    full.train()

    interrupted = _new_trainer(toy_cfg(str(tmp_path / "cut"), *opts))
    interrupted.register_hooks([_interrupt_at(7)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert (tmp_path / "cut" / "last_checkpoint").read_text() == "model_0000005.pth"

    # a new process: seeded as at the start, then resumed from iteration 6 (after the checkpoint of 5)
    resumed = _new_trainer(toy_cfg(str(tmp_path / "cut"), *opts), seed=0)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6
    resumed.train()
    for name, value in _weights(full.model).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    # the optimiser's momentum and the schedule continued too
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(full.optimizer.param_groups[0]["lr"])
    # and the images: iterations 6-11 of both runs read the same samples
    assert resumed.model.seen == full.model.seen[6 * 8:]


def test_load_without_resume_starts_from_zero(tmp_path):
    cfg = toy_cfg(str(tmp_path))
    _new_trainer(cfg).train()
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    trainer = _new_trainer(cfg)
    trainer.resume_or_load(resume=False)
    assert trainer.start_iter == 0
    trained = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, trained[name])


def test_early_stopping_from_config(tmp_path):
    # AP only rises while the model learns: a patience of 1 with a "min" mode stops at the 2nd evaluation
    cfg = toy_cfg(str(tmp_path), "SOLVER.MAX_ITER=40", "TEST.EVAL_PERIOD=2", "TEST.BEST_METRIC=toy/AP",
                  "TEST.BEST_METRIC_MODE=min", "TEST.EARLY_STOP_PATIENCE=1")
    trainer = _new_trainer(cfg)
    trainer.train()
    assert trainer.stopped_early and trainer.iter == 4
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 3
    assert torch.load(tmp_path / "model_best.pth", weights_only=True)["iteration"] == 1


def test_inconsistent_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="EARLY_STOP_PATIENCE"):
        ToyTrainer(toy_cfg(str(tmp_path), "TEST.EARLY_STOP_PATIENCE=2", "TEST.BEST_METRIC=toy/AP"))
    with pytest.raises(ConfigError, match="EVAL_PERIOD_EPOCHS"):
        ToyTrainer(toy_cfg(str(tmp_path), "TEST.EVAL_PERIOD_EPOCHS=1.0"))


def test_epochs_and_amp_from_config(tmp_path):
    cfg = toy_cfg(str(tmp_path), "SOLVER.MAX_EPOCHS=2.0", "SOLVER.STEPS_EPOCHS=(1.5,)", "SOLVER.AMP.ENABLED=True",
                  "SOLVER.AMP.PRECISION=bfloat16")
    trainer = ToyTrainer(cfg)
    # 64 images at 8 per iteration: 8 iterations per epoch
    assert trainer.max_iter == 16 and trainer.cfg.SOLVER.STEPS == (12,)
    assert isinstance(trainer._trainer, AMPTrainer) and trainer._trainer.precision == torch.bfloat16
    with pytest.raises(ConfigError, match="PRECISION"):
        ToyTrainer(toy_cfg(str(tmp_path), "SOLVER.AMP.ENABLED=True", "SOLVER.AMP.PRECISION=int8"))


def _distributed_toy_run(out_dir):
    seed_all_rng(comm.get_rank())  # different initial weights per rank: DDP broadcasts rank 0's
    trainer = ToyTrainer(toy_cfg(out_dir, "SOLVER.IMS_PER_BATCH=8", "SOLVER.MAX_ITER=4", "TEST.EVAL_PERIOD=2"))
    results = trainer.train()
    params = {k: v.detach() for k, v in trainer.model.module.named_parameters()}
    torch.save({"params": params, "seen": trainer.model.module.seen, "results": results},
               os.path.join(out_dir, f"rank{comm.get_rank()}.pt"))


def test_two_process_gloo_run_keeps_ranks_in_sync_on_disjoint_data(tmp_path):
    launch(_distributed_toy_run, 2, dist_url="auto", args=(str(tmp_path),))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    # 4 iterations of 4 images per process, no image seen by both
    assert len(r0["seen"]) == len(r1["seen"]) == 16
    assert not set(r0["seen"]) & set(r1["seen"])
    assert r0["results"]["toy"]["AP"] > 0 and r1["results"] is None
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert len(final["rng_states"]) == 2


RETINANET_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs/Shapes/retinanet_R_18_FPN_shapes.yaml")


@pytest.fixture
def three_class_boxes():
    """A registered one-image dataset of classes a, b, c with a box of class 2 (no image is read)."""
    name = "fits_three_class_boxes"
    ann = {"bbox": [2, 2, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2, "iscrowd": 0}
    DatasetCatalog.register(name, lambda: [{"file_name": "a.png", "height": 30, "width": 40, "image_id": 1,
                                            "annotations": [dict(ann)]}])
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _retinanet_cfg(out_dir, dataset, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(RETINANET_CONFIG)
    cfg.merge_from_list(["DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (), "MODEL.DEVICE", "cpu",
                         "OUTPUT_DIR", out_dir, *opts])
    return cfg


def test_retinanet_is_checked_against_its_training_set_by_its_own_num_classes(tmp_path, three_class_boxes):
    # MODEL.ROI_HEADS.NUM_CLASSES is not RetinaNet's: too small, it must not stop a fitting RetinaNet
    fitting = _retinanet_cfg(str(tmp_path), three_class_boxes, "MODEL.RETINANET.NUM_CLASSES", 3,
                             "MODEL.ROI_HEADS.NUM_CLASSES", 1)
    assert DefaultTrainer(fitting).model.num_classes == 3
    too_few = _retinanet_cfg(str(tmp_path), three_class_boxes, "MODEL.RETINANET.NUM_CLASSES", 2)
    with pytest.raises(ConfigError) as e:
        DefaultTrainer(too_few)
    message = str(e.value)
    assert "MODEL.RETINANET.NUM_CLASSES is 2" in message and "has 3 classes (a, b, c)" in message
    assert "model.num_classes=3" in message


def test_a_model_without_classes_is_not_checked(tmp_path, three_class_boxes):
    cfg = _retinanet_cfg(str(tmp_path), three_class_boxes, "MODEL.META_ARCHITECTURE", "ProposalNetwork",
                         "MODEL.ROI_HEADS.NUM_CLASSES", 1, "MODEL.RPN.IN_FEATURES", ["p3", "p4", "p5", "p6", "p7"])
    DefaultTrainer(cfg)
