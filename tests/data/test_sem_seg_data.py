"""Semantic-segmentation data: label maps read and transformed with their image, load_sem_seg, the
COCO panoptic registration, and the segmentation views of the shapes."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from d2mask.data import DatasetCatalog, DatasetError, DatasetMapper, MetadataCatalog
from d2mask.data import transforms as T
from d2mask.data.datasets import load_sem_seg, register_coco_panoptic_separated, register_shapes
from d2mask.data.datasets.coco_panoptic import read_panoptic_png
from d2mask.data.datasets.shapes_segmentation import register_shapes_panoptic_separated, register_shapes_sem_seg
from d2mask.data.detection_utils import read_sem_seg


def _image_and_labels(tmp_path, height=20, width=30):
    """An image whose colour is 60 x its class, and its label map (classes 0-3 in blocks)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[2:12, 3:10], labels[8:18, 14:27], labels[:, 27:] = 1, 2, 3
    image = np.repeat(labels[:, :, None] * 60, 3, axis=2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "image.png"), image)
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    return {"file_name": str(tmp_path / "image.png"), "sem_seg_file_name": str(tmp_path / "labels.png")}, labels


@pytest.mark.parametrize("flip", [False, True])
def test_mapper_transforms_the_label_map_with_the_image(tmp_path, flip):
    record, labels = _image_and_labels(tmp_path)
    augmentations = [T.ResizeShortestEdge(40, 1000, "choice")] + ([T.RandomFlip(1.0)] if flip else [])
    out = DatasetMapper(True, augmentations=augmentations, image_format="BGR")(record)
    expected = cv2.resize(labels, (60, 40), interpolation=cv2.INTER_NEAREST)
    expected = expected[:, ::-1] if flip else expected
    assert out["sem_seg"].dtype.is_floating_point is False and out["sem_seg"].shape == (40, 60)
    assert (out["sem_seg"].numpy() == expected).all()
    # Away from the class borders (where the image is interpolated) the image shows the same classes.
    image = out["image"][0].numpy()
    exact = image % 60 == 0
    assert exact.mean() > 0.8 and (image[exact] // 60 == out["sem_seg"].numpy()[exact]).all()
    assert "sem_seg_file_name" not in out


def test_inference_mapper_does_not_read_the_label_map(tmp_path):
    record, _ = _image_and_labels(tmp_path)
    os.remove(record["sem_seg_file_name"])  # evaluators read it themselves
    out = DatasetMapper(False, augmentations=[], image_format="BGR")(record)
    assert "sem_seg" not in out and "sem_seg_file_name" not in out


def test_label_map_of_another_size_or_with_colours_is_refused(tmp_path):
    record, _ = _image_and_labels(tmp_path)
    cv2.imwrite(record["sem_seg_file_name"], np.zeros((10, 30), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labels.png is 30x10 \(width x height\) but its image .*image.png is 30x20"):
        DatasetMapper(True, augmentations=[], image_format="BGR")(record)
    cv2.imwrite(record["sem_seg_file_name"], np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match="labels.png is a RGB image of shape .* must have one integer channel"):
        read_sem_seg(record["sem_seg_file_name"])


def test_palette_label_maps_give_their_indices(tmp_path):
    image = Image.fromarray(np.array([[0, 3], [7, 255]], dtype=np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    image.save(tmp_path / "p.png")
    assert read_sem_seg(str(tmp_path / "p.png")).tolist() == [[0, 3], [7, 255]]


def test_load_sem_seg_pairs_files_by_name(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("b.jpg", "a.jpg", "only_image.jpg"):
        (tmp_path / "images" / name).touch()
    for name in ("a.png", "b.png", "only_label.png"):
        (tmp_path / "gt" / name).touch()
    dicts = load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "images"))
    assert [(os.path.basename(d["file_name"]), os.path.basename(d["sem_seg_file_name"])) for d in dicts] == [
        ("a.jpg", "a.png"), ("b.jpg", "b.png")]
    assert "using the 2 names found in both" in caplog.text
    with pytest.raises(DatasetError, match="no label maps"):
        load_sem_seg(str(tmp_path / "images"), str(tmp_path / "images"))


def test_builtin_coco_panoptic_stops_with_the_missing_path(tmp_path):
    meta = MetadataCatalog.get("coco_2017_val_panoptic_separated")
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    assert len(meta.stuff_classes) == 54 and meta.stuff_classes[:2] == ["things", "banner"]
    assert meta.stuff_dataset_id_to_contiguous_id[0] == 0 and meta.stuff_dataset_id_to_contiguous_id[200] == 53
    assert len(meta.thing_classes) == 80
    with pytest.raises(DatasetError, match=r"'coco_2017_val_panoptic_stuffonly' expects .*coco/panoptic_stuff_val2017"):
        DatasetCatalog.get("coco_2017_val_panoptic_stuffonly")


def test_builtin_coco_panoptic_standard_form():
    meta = MetadataCatalog.get("coco_2017_train_panoptic")
    assert (meta.evaluator_type, meta.label_divisor) == ("coco_panoptic_seg", 1000)
    # one contiguous id space: the 80 things, then the 53 stuff classes
    assert meta.thing_classes == meta.stuff_classes and len(meta.thing_classes) == 133
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79 and meta.stuff_dataset_id_to_contiguous_id[92] == 80
    assert meta.stuff_classes[80] == "banner" and meta.panoptic_json.endswith("coco/annotations/panoptic_train2017.json")
    with pytest.raises(DatasetError, match=r"'coco_2017_val_panoptic' expects .*coco/annotations/panoptic_val2017.json"):
        DatasetCatalog.get("coco_2017_val_panoptic")


def test_register_coco_panoptic_separated_merges_instances_and_label_maps(tmp_path, coco_dir):
    data = coco_dir.good()
    for record in data["images"]:  # COCO's images are JPEGs
        record["file_name"] = record["file_name"].replace(".png", ".jpg")
    image_root, gt_root = tmp_path / "jpg", tmp_path / "stuff"
    image_root.mkdir()
    gt_root.mkdir()
    for record in data["images"]:
        cv2.imwrite(str(image_root / record["file_name"]), np.zeros((30, 40, 3), dtype=np.uint8))
        cv2.imwrite(str(gt_root / record["file_name"].replace(".jpg", ".png")), np.zeros((30, 40), dtype=np.uint8))
    register_coco_panoptic_separated("sem_seg_data_test", {}, str(image_root), "", "", str(gt_root), coco_dir.write(data))
    try:
        dicts = DatasetCatalog.get("sem_seg_data_test_separated")
        assert len(dicts) == 2 and all("annotations" in d and d["sem_seg_file_name"].startswith(str(gt_root)) for d in dicts)
        assert len(dicts[0]["annotations"]) == 2
        assert [set(d) for d in DatasetCatalog.get("sem_seg_data_test_stuffonly")] == [{"file_name", "sem_seg_file_name"}] * 2
        assert MetadataCatalog.get("sem_seg_data_test_separated").evaluator_type == "coco_panoptic_seg"
    finally:
        for name in ("sem_seg_data_test_separated", "sem_seg_data_test_stuffonly"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_shapes_views_label_what_the_images_show(tmp_path):
    register_shapes("sem_seg_data_shapes", str(tmp_path), num_images=2, seed=3, image_size=64, object_size=(16, 32))
    register_shapes_sem_seg("sem_seg_data_shapes_sem_seg", "sem_seg_data_shapes")
    register_shapes_panoptic_separated("sem_seg_data_shapes_panoptic", "sem_seg_data_shapes")
    try:
        semantic = DatasetCatalog.get("sem_seg_data_shapes_sem_seg")
        panoptic = DatasetCatalog.get("sem_seg_data_shapes_panoptic")
        for sem, pan in zip(semantic, panoptic):
            image = cv2.imread(sem["file_name"])
            classes, stuff = read_sem_seg(sem["sem_seg_file_name"]), read_sem_seg(pan["sem_seg_file_name"])
            background = (image == image[0, 0]).all(axis=2)  # no shape reaches a corner (they lie inside their circles)
            assert ((classes == 0) == background).mean() > 0.97
            assert ((stuff == 1) == (classes == 0)).all() and set(np.unique(classes)) <= {0, 1, 2, 3}
            assert "annotations" not in sem and pan["annotations"]
            # The panoptic ground truth: a segment per shape (its category the shape's dataset id) and
            # the background (category 4) where the stuff label map has it.
            ids = read_panoptic_png(pan["pan_seg_file_name"])
            segments = {s["id"]: s for s in pan["segments_info"]}
            assert set(np.unique(ids)) == set(segments)
            (background,) = [s for s in pan["segments_info"] if not s["isthing"]]
            assert background["category_id"] == 1 and ((ids == background["id"]) == (stuff == 1)).all()
            things = [s for s in pan["segments_info"] if s["isthing"]]
            assert [s["category_id"] for s in things] == [a["category_id"] for a in pan["annotations"]]
            assert all(s["area"] == (ids == s["id"]).sum() for s in things)
        # Drawn once: a second load reuses the files.
        mtime = os.path.getmtime(semantic[0]["sem_seg_file_name"])
        DatasetCatalog.get("sem_seg_data_shapes_sem_seg")
        assert os.path.getmtime(semantic[0]["sem_seg_file_name"]) == mtime
    finally:
        for name in ("sem_seg_data_shapes", "sem_seg_data_shapes_sem_seg", "sem_seg_data_shapes_panoptic"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
