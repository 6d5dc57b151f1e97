"""Detectron2's built-in dataset names: registered on import with their metadata, under the datasets
root; a missing file stops with its path; COCO and VOC files in Detectron2's layout load."""
import json
import os
import subprocess
import sys

import pytest

from d2mask.config import LazyConfig, instantiate
from d2mask.data import DatasetCatalog, DatasetError, MetadataCatalog
from d2mask.data.datasets import load_lvis_json, load_voc_instances, set_datasets_root
from d2mask.data.datasets.builtin_meta import COCO_CATEGORIES
from d2mask.data.detection_utils import create_keypoint_hflip_indices
from d2mask.structures import BoxMode
from tests.common import REPO

DETECTRON2_NAMES = [
    "coco_2014_train", "coco_2014_val", "coco_2014_minival", "coco_2014_valminusminival", "coco_2017_train",
    "coco_2017_val", "coco_2017_test", "coco_2017_test-dev", "coco_2017_val_100", "lvis_v1_train", "lvis_v1_val",
    "lvis_v1_test_dev", "lvis_v1_test_challenge", "voc_2007_trainval", "voc_2007_train", "voc_2007_val",
    "voc_2007_test", "voc_2012_trainval", "voc_2012_train", "voc_2012_val", "keypoints_coco_2014_train",
    "keypoints_coco_2014_val", "keypoints_coco_2014_minival", "keypoints_coco_2014_valminusminival",
    "keypoints_coco_2017_train", "keypoints_coco_2017_val", "keypoints_coco_2017_val_100",
]


@pytest.fixture
def root(tmp_path):
    """Built-in datasets registered below tmp_path/ds for the test; the environment's root afterwards."""
    set_datasets_root(str(tmp_path / "ds"))
    yield tmp_path / "ds"
    set_datasets_root(None)


def test_detectron2_names_registered():
    assert set(DETECTRON2_NAMES) <= set(DatasetCatalog.list())


def test_coco_metadata():
    meta = MetadataCatalog.get("coco_2017_train")
    assert len(meta.thing_classes) == 80
    assert meta.thing_classes[0] == "person" and meta.thing_classes[-1] == "toothbrush"
    id_map = meta.thing_dataset_id_to_contiguous_id
    # COCO's 80 ids run 1..90 with these ten left out
    assert set(range(1, 91)) - set(id_map) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert sorted(id_map.values()) == list(range(80)) and id_map[90] == 79 and id_map[13] == 11
    assert len(meta.thing_colors) == 80 and len({tuple(c) for c in meta.thing_colors}) == 80
    assert meta.evaluator_type == "coco"
    assert MetadataCatalog.get("voc_2012_val").thing_classes[14] == "person"


def test_detectron2s_private_metadata_function_registers_a_coco_variant(tmp_path):
    """Detectron2 projects (PointSup) import `_get_builtin_metadata` from `data.datasets.builtin` to
    register a COCO json of their own with COCO's classes and ids."""
    from d2mask.data.datasets import register_coco_instances
    from d2mask.data.datasets.builtin import _get_builtin_metadata

    meta = _get_builtin_metadata("coco")
    assert meta["thing_dataset_id_to_contiguous_id"][90] == 79 and meta["thing_classes"][0] == "person"
    assert _get_builtin_metadata("coco_person")["keypoint_names"][0] == "nose"
    with pytest.raises(KeyError, match="ade20k"):
        _get_builtin_metadata("ade20k")

    categories = [{"id": i, "name": name} for i, name in COCO_CATEGORIES]
    ann = {"images": [{"id": 7, "file_name": "a.jpg", "height": 20, "width": 30}], "categories": categories,
           "annotations": [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 2, 5, 6], "iscrowd": 0, "area": 30}]}
    (tmp_path / "points.json").write_text(json.dumps(ann))
    register_coco_instances("test_coco_points_variant", meta, str(tmp_path / "points.json"), str(tmp_path))
    try:
        (record,) = DatasetCatalog.get("test_coco_points_variant")
        assert record["annotations"][0]["category_id"] == 79
        assert MetadataCatalog.get("test_coco_points_variant").thing_classes[79] == "toothbrush"
    finally:
        DatasetCatalog.remove("test_coco_points_variant")
        MetadataCatalog.remove("test_coco_points_variant")


def test_coco_person_keypoints_metadata_and_lazy_loader_config():
    metadata = MetadataCatalog.get("keypoints_coco_2017_train")
    assert metadata.thing_classes == ["person"] and metadata.thing_dataset_id_to_contiguous_id == {1: 0}
    names = metadata.keypoint_names
    assert len(names) == 17 and names[:3] == ["nose", "left_eye", "right_eye"]
    flip = create_keypoint_hflip_indices(["keypoints_coco_2017_train", "keypoints_coco_2017_val"])
    assert [names[i] for i in flip][:5] == ["nose", "right_eye", "left_eye", "right_ear", "left_ear"]
    assert sorted(flip) == list(range(17))
    assert all(a in names and b in names for a, b, _ in metadata.keypoint_connection_rules)

    dataloader = LazyConfig.load(os.path.join(REPO, "configs", "common", "data", "coco_keypoint.py"), "dataloader")
    mapper = instantiate(dataloader.train.mapper)
    assert mapper.use_keypoint and not mapper.use_instance_mask and list(mapper.keypoint_hflip_indices) == flip
    assert dataloader.train.dataset.min_keypoints == 1


def test_missing_files_one_line_naming_path_and_variable(root):
    expected = os.path.join(str(root), "coco", "annotations", "instances_train2017.json")
    assert MetadataCatalog.get("coco_2017_train").json_file == expected
    with pytest.raises(DatasetError) as e:
        DatasetCatalog.get("coco_2017_train")
    message = str(e.value)
    assert "\n" not in message and expected in message and "$DETECTRON2_DATASETS" in message


def test_detectron2_variable_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv("D2MASK_DATASETS")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    set_datasets_root(None)  # re-reads the environment, as default_setup does
    try:
        assert MetadataCatalog.get("coco_2017_val").image_root == os.path.join(str(tmp_path / "d2"), "coco/val2017")
    finally:
        monkeypatch.undo()
        set_datasets_root(None)


def test_coco_val_100_loads_from_the_root(root):
    os.makedirs(root / "coco" / "annotations")
    data = {
        "images": [{"id": 7, "file_name": "000007.jpg", "height": 20, "width": 30}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 2, 10, 5], "iscrowd": 0}],
        "categories": [{"id": i, "name": n} for i, n in COCO_CATEGORIES],
    }
    (root / "coco" / "annotations" / "instances_val2017_100.json").write_text(json.dumps(data))
    (record,) = DatasetCatalog.get("coco_2017_val_100")
    assert record["file_name"] == os.path.join(str(root), "coco/val2017/000007.jpg")
    assert record["annotations"][0]["category_id"] == 79  # toothbrush


def _write_voc(dirname, split, objects_per_image):
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        os.makedirs(os.path.join(dirname, sub), exist_ok=True)
    with open(os.path.join(dirname, "ImageSets/Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(objects_per_image) + "\n")
    for image_id, objects in objects_per_image.items():
        xml = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for name, (x0, y0, x1, y1) in objects
        )
        with open(os.path.join(dirname, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(f"<annotation><size><width>50</width><height>40</height><depth>3</depth></size>{xml}</annotation>")


def test_voc_split_loads_from_the_root(root):
    _write_voc(str(root / "VOC2007"), "val", {"000005": [("dog", (1, 1, 10, 20)), ("person", (5, 6, 50, 40))],
                                              "000009": []})
    first, second = DatasetCatalog.get("voc_2007_val")
    assert first["file_name"] == os.path.join(str(root), "VOC2007/JPEGImages/000005.jpg")
    assert (first["height"], first["width"], first["image_id"]) == (40, 50, "000005")
    # VOC's 1-based inclusive corners: pixel columns 1..10 are [0, 10) in continuous coordinates
    assert [a["bbox"] for a in first["annotations"]] == [[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 50.0, 40.0]]
    assert [a["category_id"] for a in first["annotations"]] == [11, 14]
    assert first["annotations"][0]["bbox_mode"] == BoxMode.XYXY_ABS and second["annotations"] == []
    assert MetadataCatalog.get("voc_2007_val").evaluator_type == "pascal_voc"


def test_voc_unknown_class_names_the_file(tmp_path):
    _write_voc(str(tmp_path / "VOC"), "train", {"1": [("unicorn", (1, 1, 5, 5))]})
    with pytest.raises(DatasetError, match=r"1\.xml: object class 'unicorn'"):
        load_voc_instances(str(tmp_path / "VOC"), "train")


def test_a_users_own_dataset_under_a_builtin_name_survives_a_new_root(root, tmp_path):
    DatasetCatalog.remove("coco_2017_val_100")
    MetadataCatalog.remove("coco_2017_val_100")
    DatasetCatalog.register("coco_2017_val_100", lambda: [{"file_name": "mine.jpg"}])
    try:
        set_datasets_root(str(tmp_path / "elsewhere"))
        assert DatasetCatalog.get("coco_2017_val_100") == [{"file_name": "mine.jpg"}]
        assert MetadataCatalog.get("coco_2017_val").image_root == os.path.join(str(tmp_path / "elsewhere"),
                                                                              "coco/val2017")
    finally:
        DatasetCatalog.remove("coco_2017_val_100")
        set_datasets_root(None)  # registers the built-in one again


def test_lvis_json_loads_with_file_names_from_coco_urls(tmp_path):
    data = {
        "images": [{"id": 3, "coco_url": "http://images.cocodataset.org/val2017/000000000003.jpg", "height": 10,
                    "width": 20, "not_exhaustive_category_ids": [2], "neg_category_ids": []}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 2, "bbox": [1, 2, 3, 4],
                         "segmentation": [[1, 2, 4, 2, 4, 6]]}],
        "categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}],
    }
    (tmp_path / "lvis.json").write_text(json.dumps(data))
    (record,) = load_lvis_json(str(tmp_path / "lvis.json"), str(tmp_path / "coco"))
    assert record["file_name"] == os.path.join(str(tmp_path), "coco", "val2017", "000000000003.jpg")
    assert record["not_exhaustive_category_ids"] == [2]
    (ann,) = record["annotations"]
    assert ann["category_id"] == 1 and ann["bbox"] == [1.0, 2.0, 3.0, 4.0] and ann["bbox_mode"] == BoxMode.XYWH_ABS


def test_train_net_on_coco_without_its_files_stops_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml",
         "DATASETS.TRAIN=('coco_2017_train',)", "MODEL.DEVICE=cpu", f"OUTPUT_DIR={tmp_path / 'out'}"],
        cwd=REPO, env=dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "d2"), D2MASK_DATASETS=""),
        capture_output=True, text=True, timeout=300,
    )
    expected = os.path.join(str(tmp_path / "d2"), "coco", "annotations", "instances_train2017.json")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("DatasetError: Built-in dataset 'coco_2017_train' expects "
                                                    f"{expected}, which does not exist"), proc.stderr[-2000:]
    assert "$DETECTRON2_DATASETS" in last and "Traceback" not in proc.stderr
