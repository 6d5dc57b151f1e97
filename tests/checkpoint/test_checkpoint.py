import logging
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from d2mask.checkpoint import (
    CheckpointError,
    DetectionCheckpointer,
    convert_torchvision_checkpoint,
    convert_torchvision_resnet,
)
from d2mask.config import get_cfg
from d2mask.modeling import build_model
from tests.common import REPO, tiny_rcnn_cfg

PREDICTORS = {
    "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias",
}


def _model(num_classes=3, seed=0):
    """Mask R-CNN R50-FPN with tiny widths (Detectron2's names, few parameters)."""
    cfg = tiny_rcnn_cfg(num_classes=num_classes)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # FrozenBN buffers start as constants; make every tensor distinctive
        for t in model.state_dict().values():
            t.copy_(torch.randn_like(t.float()))
    return model


def _assert_same(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if k not in skip:
            assert torch.equal(sa[k], sb[k]), k


def test_save_and_reload_gives_identical_model(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sum((p * torch.randn_like(p)).sum() for p in model.parameters()).backward()  # a distinct gradient each
    optimizer.step()
    DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000007", iteration=7)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000007.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000007.pth"]  # no temporary left

    other = _model(seed=1)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    extra = DetectionCheckpointer(other, str(tmp_path), optimizer=other_opt).resume_or_load("", resume=True)
    assert extra == {"iteration": 7}
    _assert_same(model, other)
    saved, loaded = optimizer.state_dict()["state"], other_opt.state_dict()["state"]
    assert loaded.keys() == saved.keys() and len(saved) == sum(p.requires_grad for p in model.parameters())
    for i, state in saved.items():
        assert torch.equal(loaded[i]["momentum_buffer"], state["momentum_buffer"]), i


def test_checkpoint_of_another_class_count_loads_all_but_predictors(tmp_path, caplog):
    DetectionCheckpointer(_model(num_classes=3), str(tmp_path)).save("three_classes")
    source = _model(num_classes=3)
    DetectionCheckpointer(source).load(str(tmp_path / "three_classes.pth"))

    target = _model(num_classes=5, seed=2)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(target).load(str(tmp_path / "three_classes.pth"))
    _assert_same(source, target, skip=PREDICTORS)
    for k in PREDICTORS:
        assert torch.equal(target.state_dict()[k], fresh[k]), k
    text = caplog.text
    assert "NUM_CLASSES" in text and "Skipped 6" in text
    for k in PREDICTORS:
        assert k in text
    assert "not in the checkpoint" not in text and "not used by the model" not in text


def _numpy_state(model, rename=lambda k: k):
    return {rename(k): v.numpy().copy() for k, v in model.state_dict().items()}


def test_detectron2_model_zoo_pkl_loads_with_nothing_missing(tmp_path, caplog):
    source = _model()
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": _numpy_state(source), "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    target = _model(seed=3)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(target).load(str(path))
    _assert_same(source, target)
    assert caplog.records == []


def test_backbone_without_prefix_is_matched_by_suffix(tmp_path, caplog):
    source = _model()
    bottom_up = {k[len("backbone.bottom_up."):]: v for k, v in _numpy_state(source).items() if k.startswith("backbone.bottom_up.")}
    path = tmp_path / "R-50-torchvision.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": bottom_up, "__author__": "torchvision", "matching_heuristics": True}, f)
    target = _model(seed=3)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(target).load(str(path))
    for k, v in target.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]) == k.startswith("backbone.bottom_up."), k
    assert "not used by the model" not in caplog.text
    assert "backbone.fpn_lateral2.{bias, weight}" in caplog.text  # reported missing, grouped by module


def _c2_name(d2_name):
    """Detectron2 ResNet name -> Caffe2 blob name (written independently of the loader)."""
    parts = d2_name.split(".")
    leaf = {"weight": "w", "bias": "b"}
    if "norm" in parts:
        leaf = {"weight": "bn_s", "bias": "bn_b", "running_mean": "bn_rm", "running_var": "bn_riv"}
    suffix = leaf[parts[-1]]
    if parts[0] == "stem":
        return "conv1_w" if suffix == "w" else "res_conv1_" + suffix
    branch = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}[parts[2]]
    return f"{parts[0]}_{parts[1]}_{branch}_{suffix}"


def test_caffe2_imagenet_pkl_is_renamed(tmp_path, caplog):
    source = _model()
    blobs = {
        _c2_name(k[len("backbone.bottom_up."):]): v
        for k, v in _numpy_state(source).items()
        if k.startswith("backbone.bottom_up.") and "running" not in k  # AffineChannel: no statistics
    }
    blobs["fc1000_w"] = np.zeros((10, 4), dtype=np.float32)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros(1, dtype=np.float32)
    assert "res2_0_branch2a_bn_s" in blobs
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump(blobs, f, protocol=2)
    target = _model(seed=3)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(target).load(str(path))
    state, expected = target.state_dict(), source.state_dict()
    assert torch.equal(state["backbone.bottom_up.res3.1.conv2.weight"], expected["backbone.bottom_up.res3.1.conv2.weight"])
    assert torch.equal(state["backbone.bottom_up.stem.conv1.norm.bias"], expected["backbone.bottom_up.stem.conv1.norm.bias"])
    assert torch.equal(state["backbone.bottom_up.res2.0.shortcut.norm.weight"], expected["backbone.bottom_up.res2.0.shortcut.norm.weight"])
    assert (state["backbone.bottom_up.res4.0.conv1.norm.running_var"] == 1).all()
    assert "fc1000_w" in caplog.text and "momentum" not in caplog.text


class _Payload:
    """Pickles into a call of os.system: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_pickle_carrying_code_is_refused_and_not_run(tmp_path, suffix):
    marker = tmp_path / "executed"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"x": _Payload(marker), "model": {"w": np.zeros(2)}}, f, protocol=2)
    with pytest.raises(CheckpointError) as info:
        DetectionCheckpointer(_model()).load(str(path))
    assert str(path) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    with open(path, "rb") as f:
        pickle.load(f)  # the payload is real: plain unpickling runs it
    assert marker.exists()


def test_missing_and_corrupt_files_are_explained(tmp_path):
    checkpointer = DetectionCheckpointer(_model())
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        checkpointer.load(str(tmp_path / "nowhere.pth"))

    DetectionCheckpointer(_model(), str(tmp_path)).save("good")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        checkpointer.load(str(tmp_path / "truncated.pth"))

    pkl = pickle.dumps({"model": {"w": np.zeros(100)}}, protocol=2)
    (tmp_path / "truncated.pkl").write_bytes(pkl[: len(pkl) // 2])
    with pytest.raises(CheckpointError, match="truncated.pkl"):
        checkpointer.load(str(tmp_path / "truncated.pkl"))

    with open(tmp_path / "strings.pkl", "wb") as f:
        pickle.dump({"model": {"w": "not an array"}}, f)
    with pytest.raises(CheckpointError, match=r"strings.pkl.*'w'"):
        checkpointer.load(str(tmp_path / "strings.pkl"))


def test_weights_with_nan_are_refused_at_load_naming_the_file(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    DetectionCheckpointer(model, str(tmp_path)).save("diverged")
    fresh = _model()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"diverged.pth: \d+ of its \d+ tensors hold NaN values"):
        DetectionCheckpointer(fresh).load(str(tmp_path / "diverged.pth"))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    with open(tmp_path / "nan.pkl", "wb") as f:
        pickle.dump({"model": {"w": np.full(3, np.nan), "steps": np.arange(3)}}, f)
    with pytest.raises(CheckpointError, match=r"nan.pkl: 1 of its 2 tensors hold NaN values \(e.g. \['w'\]\)"):
        DetectionCheckpointer(fresh).load(str(tmp_path / "nan.pkl"))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final")
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000100")
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]


@pytest.mark.parametrize("layout", ["", "fpn"])
def test_converted_torchvision_resnet_loads_into_the_backbone(tmp_path, caplog, layout):
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None)
    converted = convert_torchvision_resnet(resnet.state_dict(), layout)
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in converted.items()}, "__author__": "torchvision",
                     "matching_heuristics": not layout}, f)

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "COCO-InstanceSegmentation", "mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    model = build_model(cfg)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(str(path))
    state = model.state_dict()
    assert torch.equal(state["backbone.bottom_up.stem.conv1.weight"], resnet.conv1.weight)
    assert torch.equal(state["backbone.bottom_up.res3.0.shortcut.norm.running_var"], resnet.layer2[0].downsample[1].running_var)
    assert torch.equal(state["backbone.bottom_up.res5.1.conv2.weight"], resnet.layer4[1].conv2.weight)
    assert "not used by the model" not in caplog.text and "shapes differ" not in caplog.text
    assert "bottom_up" not in caplog.text  # nothing of the backbone is missing


def test_a_pth_whose_records_are_compressed_is_refused(tmp_path):
    # torch.load inflates a deflated record: 64 MB of weights from a 66 KB file
    plain, deflated = tmp_path / "plain.pth", tmp_path / "deflated.pth"
    torch.save({"model": {"w": torch.zeros(2**24)}}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename))
    assert deflated.stat().st_size < plain.stat().st_size / 500
    with pytest.raises(CheckpointError, match=r"Refusing to load .*deflated.pth: its record '.*' is compressed"):
        DetectionCheckpointer(nn.Linear(1, 1)).load(str(deflated))
    # the torchvision converter reads the stranger's file through the same checks
    with pytest.raises(CheckpointError, match=r"Refusing to load .*deflated.pth: its record '.*' is compressed"):
        convert_torchvision_checkpoint(str(deflated), str(tmp_path / "converted.pkl"))
    assert not (tmp_path / "converted.pkl").exists()
