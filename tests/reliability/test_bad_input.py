"""Every mistake in a run's input is one clear error: a type in USER_ERRORS (which tools/train_net.py
prints as one line and exits 2 on), a one-line message naming the file/key/value and what was
expected, and no file of the input changed."""
import hashlib
import json
import os
import pickle
import socket

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from d2mask.checkpoint import CheckpointError, DetectionCheckpointer
from d2mask.config import ConfigError, get_cfg
from d2mask.data import (
    DatasetCatalog,
    DatasetError,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from d2mask.data.datasets.coco import load_coco_json
from d2mask.engine import (
    USER_ERRORS,
    LaunchError,
    check_model_fits_data,
    default_argument_parser,
    launch,
    user_error_message,
)
from d2mask.modeling import build_model
from d2mask.structures import BoxMode
from d2mask.utils import comm
from d2mask.utils.registry import RegistryError
from tests.engine.toy import ToyTrainer, toy_cfg


# --- inputs --------------------------------------------------------------------------------------

def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _coco(tmp, **changes):
    """A valid COCO json of one 40x30 (w x h) image with one box, with top-level `changes`."""
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    data.update(changes)
    return _write(tmp / "ann.json", data)


def _merge(path):
    return lambda: get_cfg().merge_from_file(path)


class _Tiny(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.fc = nn.Linear(2, width)


class _Payload:
    """Unpickling it would run `touch marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def dataset(tmp_path):
    """`dataset(annotations, classes) -> name`: a registered one-image dataset, removed afterwards."""
    names = []

    def _register(annotations, classes):
        name = f"reliability_dataset_{len(names)}"
        record = {"file_name": str(tmp_path / "a.png"), "height": 30, "width": 40, "image_id": 1,
                  "annotations": annotations}
        DatasetCatalog.register(name, lambda: [dict(record)])
        MetadataCatalog.get(name).set(thing_classes=list(classes))
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


_BOX = {"bbox": [2, 2, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}


def _cfg(**overrides):
    cfg = get_cfg()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _train_loader(**overrides):
    cfg = _cfg(**overrides)
    return lambda: build_detection_train_loader(cfg)


def _model_fits_data(**overrides):
    """The check at training start-up of the model against the training set."""
    cfg = _cfg(**{"MODEL.DEVICE": "cpu", **overrides})
    names = cfg.DATASETS.TRAIN
    return lambda: check_model_fits_data(build_model(cfg), get_detection_dataset_dicts(names), names)


def _mapper(record):
    return lambda: DatasetMapper(get_cfg(), True)(record)


# --- the cases: name -> (setup(tmp_path, monkeypatch, dataset) -> trigger, error type, fragments) ---
# A fragment may contain {tmp}, the test's directory.

CASES = {
    # config
    "unknown key, nearest": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")),
        ConfigError, ["Unknown config key SOLVER.BASE_LRR", "{tmp}/c.yaml", "Did you mean SOLVER.BASE_LR"]),
    "wrong value type": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "SOLVER:\n  MAX_ITER: many\n")),
        ConfigError, ["SOLVER.MAX_ITER", "{tmp}/c.yaml", "expected a int", "'many'"]),
    "malformed YAML, line": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "SOLVER:\n  BASE_LR: 0.1\n  STEPS: [1, 2\n")),
        ConfigError, ["Malformed YAML in {tmp}/c.yaml at line"]),
    "missing _BASE_": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "_BASE_: nowhere.yaml\n")),
        ConfigError, ["{tmp}/c.yaml", "_BASE_ file 'nowhere.yaml' not found"]),
    "cyclic _BASE_": (
        lambda t, m, d: (_write(t / "b.yaml", "_BASE_: a.yaml\n"), _merge(_write(t / "a.yaml", "_BASE_: b.yaml\n")))[1],
        ConfigError, ["Cyclic _BASE_ chain", "{tmp}/a.yaml -> {tmp}/b.yaml -> {tmp}/a.yaml"]),
    "YAML with a python tag": (
        lambda t, m, d: _merge(_write(t / "c.yaml", f"OUTPUT_DIR: !!python/object/apply:os.system ['touch {t}/pwned']\n")),
        ConfigError, ["Malformed YAML in {tmp}/c.yaml at line 1", "python/object/apply:os.system"]),
    "YAML eval tag running code": (
        lambda t, m, d: _merge(_write(t / "c.yaml", f"""OUTPUT_DIR: !!python/object/apply:eval ["__import__('os').system('touch {t}/pwned')"]\n""")),
        ConfigError, ["Malformed YAML in {tmp}/c.yaml at line 1", "!!python/object/apply:eval", "Call", "is not allowed"]),
    "non-string key": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "SOLVER:\n  1: 2\n")),
        ConfigError, ["SOLVER.1", "{tmp}/c.yaml", "config keys are names"]),
    "unknown registry name, list and nearest": (
        lambda t, m, d: (lambda cfg: (cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "GeneralizedRCN"]),
                                      lambda: build_model(cfg))[1])(get_cfg()),
        RegistryError, ["'GeneralizedRCN'", "Did you mean 'GeneralizedRCNN'", "Registered names:", "ProposalNetwork"]),
    "IMPORTS module that raises": (
        lambda t, m, d: (_write(t / "mods" / "broken_project.py", "1 / 0\n"), m.syspath_prepend(str(t / "mods")),
                         _merge(_write(t / "c.yaml", "IMPORTS: [broken_project]\n")))[2],
        ImportError, ["IMPORTS entry 'broken_project'", "{tmp}/c.yaml", "ZeroDivisionError: division by zero"]),
    "IMPORTS module that does not exist": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "IMPORTS: [tests.reliability.toy_projekt]\n")),
        ImportError, ["'tests.reliability.toy_projekt'", "was not found", "Did you mean 'tests.reliability.toy_project'"]),
    "dataset name as a string": (
        lambda t, m, d: _merge(_write(t / "c.yaml", "DATASETS:\n  TRAIN: shapes_train\n")),
        ConfigError, ["DATASETS.TRAIN", "expected a list", "'shapes_train'"]),
    "MASK_ON with a dataset without masks": (
        lambda t, m, d: _model_fits_data(**{"DATASETS.TRAIN": (d([_BOX], ["a"]),), "MODEL.MASK_ON": True}),
        ConfigError, ["MODEL.MASK_ON", "reliability_dataset_0", "'segmentation'"]),
    "NUM_KEYPOINTS other than the dataset's keypoints": (
        lambda t, m, d: _model_fits_data(**{
            "DATASETS.TRAIN": (d([{**_BOX, "keypoints": [3, 3, 2, 5, 5, 2]}], ["a"]),), "MODEL.KEYPOINT_ON": True,
            "MODEL.ROI_HEADS.NAME": "StandardROIHeads", "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": [8]}),
        ConfigError, ["MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is 17", "reliability_dataset_0", "has 2 keypoints"]),
    "NUM_CLASSES smaller than the dataset's classes": (
        lambda t, m, d: _model_fits_data(**{"DATASETS.TRAIN": (d([_BOX], ["a", "b", "c"]),),
                                            "MODEL.ROI_HEADS.NUM_CLASSES": 2}),
        ConfigError, ["MODEL.ROI_HEADS.NUM_CLASSES is 2", "has 3 classes (a, b, c)", "NUM_CLASSES 3"]),
    "IMS_PER_BATCH not divisible by the processes": (
        lambda t, m, d: (m.setattr(comm, "get_world_size", lambda: 2),
                         lambda: ToyTrainer(toy_cfg(str(t / "out"), "SOLVER.IMS_PER_BATCH=3")))[1],
        ConfigError, ["SOLVER.IMS_PER_BATCH=3", "divisible by the number of processes (2)"]),
    "unknown sampler": (
        lambda t, m, d: _train_loader(**{"DATASETS.TRAIN": (d([_BOX], ["a"]),), "DATALOADER.SAMPLER_TRAIN": "Shuffle"}),
        ConfigError, ["DATALOADER.SAMPLER_TRAIN 'Shuffle'", "TrainingSampler"]),
    # data
    "COCO json that is not JSON": (
        lambda t, m, d: (lambda p: lambda: load_coco_json(p, str(t)))(_write(t / "ann.json", "{'images': []}")),
        DatasetError, ["{tmp}/ann.json is not a valid JSON file", "line 1"]),
    "COCO json without images": (
        lambda t, m, d: (lambda p: lambda: load_coco_json(p, str(t)))(_write(t / "ann.json", {"annotations": [], "categories": []})),
        DatasetError, ["{tmp}/ann.json", "missing top-level key(s) ['images']"]),
    # A COCO image-info file (no "annotations", as for COCO's test sets) loads as in Detectron2, into
    # images without annotations (tests/data/test_coco.py); training on such images finds no objects.
    "training on images without annotations": (
        lambda t, m, d: (lambda name: lambda: get_detection_dataset_dicts([name]))(d([], ["a"])),
        DatasetError, ["empty after filtering out the 1 images without (non-crowd) annotations",
                       "DATALOADER.FILTER_EMPTY_ANNOTATIONS"]),
    "COCO box that is not 4 numbers": (
        lambda t, m, d: (lambda p: lambda: load_coco_json(p, str(t)))(_coco(t, annotations=[
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [2, 2, "10", 10]}])),
        DatasetError, ["{tmp}/ann.json", "annotations[0]", "not 4 numbers", '"id": 7']),
    "COCO box of NaN": (
        lambda t, m, d: (lambda p: lambda: load_coco_json(p, str(t)))(_write(t / "ann.json", open(_coco(t)).read().replace("[2, 2, 10, 10]", "[2, 2, NaN, 10]"))),
        DatasetError, ["{tmp}/ann.json", "annotations[0]", "not 4 numbers"]),
    "COCO RLE with negative counts": (
        lambda t, m, d: (lambda p: lambda: load_coco_json(p, str(t)))(_coco(t, annotations=[
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
             "segmentation": {"size": [30, 40], "counts": [1300, -100]}}])),
        DatasetError, ["{tmp}/ann.json", "annotations[0]", "non-negative ints"]),
    "missing json file": (
        lambda t, m, d: lambda: load_coco_json(str(t / "nope.json"), str(t)),
        FileNotFoundError, ["{tmp}/nope.json"]),
    "empty after filtering": (
        lambda t, m, d: _train_loader(**{"DATASETS.TRAIN": (d([], ["a"]),)}),
        DatasetError, ["['reliability_dataset_0']", "empty after filtering", "FILTER_EMPTY_ANNOTATIONS"]),
    "unknown dataset name": (
        lambda t, m, d: _train_loader(**{"DATASETS.TRAIN": ("shapes_trian",)}),
        RegistryError, ["No dataset named 'shapes_trian'", "Did you mean 'shapes_train'?"]),
    "missing image": (
        lambda t, m, d: _mapper({"file_name": str(t / "gone.png"), "height": 30, "width": 40, "annotations": []}),
        FileNotFoundError, ["Image file not found: {tmp}/gone.png"]),
    "unreadable image": (
        lambda t, m, d: (_write(t / "a.png", b"not a png"),
                         _mapper({"file_name": str(t / "a.png"), "height": 30, "width": 40, "annotations": []}))[1],
        DatasetError, ["Cannot decode image file {tmp}/a.png"]),
    "image size differs from the json": (
        lambda t, m, d: (cv2.imwrite(str(t / "a.png"), np.zeros((20, 40, 3), np.uint8)),
                         _mapper({"file_name": str(t / "a.png"), "height": 30, "width": 40, "annotations": []}))[1],
        DatasetError, ["Image {tmp}/a.png is 40x20 (width x height) but its annotation says 40x30"]),
    # weights
    "missing weights": (
        lambda t, m, d: lambda: DetectionCheckpointer(_Tiny()).load(str(t / "nowhere.pth")),
        FileNotFoundError, ["Checkpoint file not found: {tmp}/nowhere.pth"]),
    "truncated .pth": (
        lambda t, m, d: (torch.save({"model": _Tiny().state_dict()}, t / "w.pth"),
                         _write(t / "w.pth", (t / "w.pth").read_bytes()[:200]),
                         lambda: DetectionCheckpointer(_Tiny()).load(str(t / "w.pth")))[2],
        CheckpointError, ["Cannot read checkpoint {tmp}/w.pth", "corrupt, truncated"]),
    "corrupt .pkl": (
        lambda t, m, d: (_write(t / "w.pkl", b"\x80\x02garbage"), lambda: DetectionCheckpointer(_Tiny()).load(str(t / "w.pkl")))[1],
        CheckpointError, ["Cannot read checkpoint {tmp}/w.pkl"]),
    "weights of another architecture": (
        lambda t, m, d: (torch.save({"model": {"conv.weight": torch.zeros(1)}}, t / "w.pth"),
                         lambda: DetectionCheckpointer(_Tiny()).load(str(t / "w.pth")))[1],
        CheckpointError, ["Cannot load {tmp}/w.pth", "none of its 1 tensors fits the model", "['conv.weight']",
                          "['fc.weight', 'fc.bias']", "another architecture"]),
    "pickle carrying code, .pkl": (
        lambda t, m, d: (_write(t / "w.pkl", pickle.dumps({"model": {"w": _Payload(t / "pwned")}}, protocol=2)),
                         lambda: DetectionCheckpointer(_Tiny()).load(str(t / "w.pkl")))[1],
        CheckpointError, ["Refusing to load {tmp}/w.pkl", "'posix.system'", "was not executed"]),
    "pickle carrying code, .pth": (
        lambda t, m, d: (_write(t / "w.pth", pickle.dumps({"model": {"w": _Payload(t / "pwned")}}, protocol=2)),
                         lambda: DetectionCheckpointer(_Tiny()).load(str(t / "w.pth")))[1],
        CheckpointError, ["Cannot read checkpoint {tmp}/w.pth", "posix.system"]),
    # command line
    "--num-gpus larger than the GPUs present": (
        lambda t, m, d: (m.setattr(torch.cuda, "is_available", lambda: True), m.setattr(torch.cuda, "device_count", lambda: 1),
                         lambda: launch(print, 2))[2],
        LaunchError, ["--num-gpus 2 asks for more GPUs than this machine has (1 visible)"]),
    "--num-gpus 0": (
        lambda t, m, d: lambda: launch(print, 0),
        LaunchError, ["--num-gpus 0", "at least 1"]),
    "--machine-rank outside --num-machines": (
        lambda t, m, d: lambda: launch(print, 1, num_machines=2, machine_rank=2, dist_url="tcp://127.0.0.1:1"),
        LaunchError, ["--machine-rank 2", "--num-machines 2", "0 to 1"]),
}


def _snapshot(directory):
    digests = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[path] = hashlib.sha1(f.read()).hexdigest()
    return digests


@pytest.mark.parametrize("case", list(CASES))
def test_each_mistake_is_one_clear_user_error_and_damages_nothing(case, tmp_path, monkeypatch, dataset):
    setup, error_type, fragments = CASES[case]
    trigger = setup(tmp_path, monkeypatch, dataset)
    before = _snapshot(tmp_path)
    with pytest.raises(error_type) as info:
        trigger()
    assert isinstance(info.value, USER_ERRORS)
    message = user_error_message(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment.format(tmp=tmp_path) in message, message
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_a_taken_rendezvous_port_is_a_user_error():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LaunchError) as info:
            launch(print, 2, dist_url=f"tcp://127.0.0.1:{port}")
    assert isinstance(info.value, USER_ERRORS)
    assert f"--dist-url tcp://127.0.0.1:{port}: port {port} is already in use" in str(info.value)


def test_flags_after_the_overrides_are_flags():
    args = default_argument_parser().parse_args(["SOLVER.MAX_ITER", "5", "--resume", "MODEL.DEVICE=cpu", "--num-gpus", "2"])
    assert args.resume and args.num_gpus == 2 and args.opts == ["SOLVER.MAX_ITER", "5", "MODEL.DEVICE=cpu"]


def test_unusable_annotations_are_dropped_with_a_warning_naming_the_first(tmp_path, caplog):
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}
    path = _coco(tmp_path, annotations=[
        good,
        dict(good, id=2, bbox=[2, 2, 0, 10]),  # zero width
        dict(good, id=3, bbox=[2, 2, 5, -1]),  # negative height
        dict(good, id=4, segmentation=[[1, 1, 5, 5]]),  # a polygon of 2 points
        dict(good, id=5, segmentation={"size": [10, 10], "counts": [100]}),  # the image is 30 x 40
        dict(good, id=6, category_id=9),
        dict(good, id=8, image_id=5),
    ])
    with caplog.at_level("WARNING", logger="d2mask.data.datasets.coco"):
        dicts = load_coco_json(path, str(tmp_path))
    assert [a["bbox"] for d in dicts for a in d["annotations"]] == [[2.0, 2.0, 10.0, 10.0]]
    for expected in (f"{path}: dropped 6 of 7 annotations",
                     "2 have a box of non-positive width or height (first: id 2)",
                     "1 have no valid polygon (every polygon has < 3 points) (first: id 4)",
                     "1 have an RLE whose size differs from its image's (first: id 5)",
                     "1 refer to a category id not in 'categories' (first: id 6)",
                     "1 refer to an image id not in 'images' (first: id 8)"):
        assert expected in caplog.text


def test_a_partly_fitting_checkpoint_loads_and_reports_every_mismatch(tmp_path, caplog):
    torch.save({"model": {"fc.weight": torch.zeros(5, 2), "fc.bias": torch.zeros(3), "head.weight": torch.zeros(1)}},
               tmp_path / "w.pth")
    model = _Tiny()
    with caplog.at_level("WARNING"):
        DetectionCheckpointer(model).load(str(tmp_path / "w.pth"))
    assert torch.equal(model.fc.bias, torch.zeros(3))
    assert "fc.weight: (5, 2) in the checkpoint, (3, 2) in the model" in caplog.text
    assert "1 checkpoint tensors are not used by the model:\n  head.{weight}" in caplog.text


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise DatasetError("Cannot decode image file /data/a.png: not an image format OpenCV can read, or corrupt")


def test_a_user_error_from_a_data_loader_worker_is_still_one_line():
    with pytest.raises(DatasetError) as info:
        list(torch.utils.data.DataLoader(_Unreadable(), num_workers=1))
    assert "Original Traceback" in str(info.value)  # how torch raises it again in the main process
    assert user_error_message(info.value) == (
        "DatasetError: Cannot decode image file /data/a.png: not an image format OpenCV can read, or corrupt"
    )
