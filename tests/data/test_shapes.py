import json
import os

import cv2
import numpy as np
import pytest

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import mask_to_polygons, register_shapes
from d2mask.data.datasets import shapes as shapes_module
from d2mask.structures import polygons_to_bitmask

TINY = dict(num_images=4, image_size=64, min_objects=2, max_objects=4, object_size=(14, 30))


@pytest.fixture
def shapes(tmp_path):
    """`shapes(seed, root=None, **overrides) -> (name, dataset dicts)`; registrations removed afterwards."""
    names = []

    def _make(seed, root=None, **overrides):
        name = f"test_shapes_{len(names)}"
        register_shapes(name, root, seed=seed, **{**TINY, **overrides})
        names.append(name)
        return name, DatasetCatalog.get(name)

    yield _make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def dataset_dir(dicts):
    return os.path.dirname(os.path.dirname(dicts[0]["file_name"]))


def test_files_go_under_the_env_root_read_at_call_time(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "later"))
    name, dicts = shapes(seed=0)
    directory = dataset_dir(dicts)
    assert directory.startswith(str(tmp_path / "later" / "shapes" / name))
    assert sorted(os.listdir(directory)) == ["COMPLETE", "annotations.json", "images"]
    assert len(dicts) == 4 and all(2 <= len(d["annotations"]) <= 4 for d in dicts)


def test_generation_is_deterministic_per_seed(shapes, tmp_path):
    _, a = shapes(seed=7, root=str(tmp_path / "a"))
    _, b = shapes(seed=7, root=str(tmp_path / "b"))
    _, c = shapes(seed=8, root=str(tmp_path / "c"))
    assert [d["annotations"] for d in a] == [d["annotations"] for d in b]
    for da, db in zip(a, b):
        np.testing.assert_array_equal(cv2.imread(da["file_name"]), cv2.imread(db["file_name"]))
    assert [d["annotations"] for d in a] != [d["annotations"] for d in c]


def test_masks_agree_with_boxes_and_pixels(shapes):
    _, dicts = shapes(seed=1, num_images=6)
    with open(os.path.join(dataset_dir(dicts), "annotations.json")) as f:
        areas = [a["area"] for a in json.load(f)["annotations"]]
    index = 0
    for record in dicts:
        image = cv2.imread(record["file_name"])
        assert image.shape == (64, 64, 3)
        for ann in record["annotations"]:
            assert ann["category_id"] in (0, 1, 2) and ann["iscrowd"] == 0
            mask = polygons_to_bitmask([np.asarray(p) for p in ann["segmentation"]], 64, 64)
            ys, xs = np.nonzero(mask)
            x0, y0, w, h = ann["bbox"]
            # The rasterised polygons fill the box to within a pixel on each side.
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x0, y0, x0 + w, y0 + h], atol=1)
            assert abs(mask.sum() - areas[index]) <= 0.05 * areas[index]
            # A shape has one colour: the masked pixels are (almost all) the most common colour there.
            colours, counts = np.unique(image[mask], axis=0, return_counts=True)
            assert counts.max() >= 0.95 * mask.sum()
            index += 1


def test_mask_to_polygons_reproduces_the_mask():
    mask = np.zeros((40, 40), dtype=np.uint8)
    cv2.circle(mask, (15, 18), 9, 1, -1)
    mask[30:36, 5:35] = 1  # a second component
    polygons = mask_to_polygons(mask.astype(bool))
    assert len(polygons) == 2
    raster = polygons_to_bitmask(polygons, 40, 40)
    assert (raster != mask.astype(bool)).sum() <= 2


def test_complete_dataset_is_not_regenerated(shapes, monkeypatch, tmp_path):
    root = str(tmp_path / "r")
    name, first = shapes(seed=0, root=root)
    monkeypatch.setattr(shapes_module, "_generate", lambda *a, **k: pytest.fail("regenerated"))
    assert DatasetCatalog.get(name) == first


def test_interrupted_generation_is_redone(shapes, tmp_path, monkeypatch):
    root = tmp_path / "r"
    name, dicts = shapes(seed=0, root=str(root))
    directory = dataset_dir(dicts)
    parent = os.path.dirname(directory)
    # Simulate a crash: the marker is missing and a half-written temporary directory is left over.
    os.remove(os.path.join(directory, "COMPLETE"))
    os.remove(dicts[0]["file_name"])
    stale = os.path.join(parent, f".{os.path.basename(directory)}.tmp-dead")
    os.makedirs(os.path.join(stale, "data", "images"))
    os.utime(stale, (0, 0))  # older than any live generation
    fresh = os.path.join(parent, f".{os.path.basename(directory)}.tmp-live")
    os.makedirs(fresh)

    redone = DatasetCatalog.get(name)
    assert redone == dicts
    assert os.path.isfile(os.path.join(directory, "COMPLETE")) and os.path.isfile(dicts[0]["file_name"])
    assert not os.path.exists(stale)  # an old leftover is cleaned up
    assert os.path.exists(fresh)  # a recent one may belong to a generation still running


def test_failed_generation_leaves_nothing_that_looks_complete(shapes, tmp_path, monkeypatch):
    def crash(directory, **params):
        os.makedirs(os.path.join(directory, "images"))
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes_module, "_generate", crash)
    root = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        shapes(seed=0, root=str(root))
    assert os.listdir(root / "shapes") == []


def test_parameters_change_the_cache_directory(shapes, tmp_path):
    root = str(tmp_path / "r")
    _, a = shapes(seed=0, root=root)
    _, b = shapes(seed=0, root=root, num_images=3)
    assert dataset_dir(a) != dataset_dir(b) and len(b) == 3


def test_invalid_parameters():
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        register_shapes("bad", num_images=1, seed=0, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="object_size"):
        register_shapes("bad", num_images=1, seed=0, image_size=32, object_size=(10, 40))
    assert "bad" not in DatasetCatalog.list()


def test_keypoints_view_has_the_same_images_and_keypoints_on_the_shapes(shapes, tmp_path):
    plain_name, plain = shapes(seed=3, root=str(tmp_path / "a"), num_images=6)
    name, with_keypoints = shapes(seed=3, root=str(tmp_path / "a"), num_images=6, keypoints=True)
    assert dataset_dir(plain) != dataset_dir(with_keypoints)  # its own files, the plain ones untouched
    metadata = MetadataCatalog.get(name)
    assert metadata.keypoint_names == ["top", "right", "bottom", "left"] and metadata.keypoint_flip_map == [["left", "right"]]
    assert MetadataCatalog.get(plain_name).get("keypoint_names") is None
    for a, b in zip(plain, with_keypoints):
        assert (cv2.imread(a["file_name"]) == cv2.imread(b["file_name"])).all()
        for ann_a, ann_b in zip(a["annotations"], b["annotations"], strict=True):
            assert ann_a["segmentation"] == ann_b["segmentation"] and "keypoints" not in ann_a
            keypoints = np.asarray(ann_b["keypoints"]).reshape(4, 3)
            labelled = keypoints[:, 2] > 0
            # a triangle has 3 corners, the other shapes 4 keypoints
            assert labelled.sum() == (3 if ann_b["category_id"] == 2 else 4)
            x0, y0, w, h = ann_b["bbox"]
            # a visible keypoint lies on its shape's visible outline, within the box (to a pixel)
            visible = keypoints[keypoints[:, 2] == 2, :2]
            assert ((visible >= [x0 - 1, y0 - 1]) & (visible <= [x0 + w + 1, y0 + h + 1])).all()
            # each lies in the direction its name says, seen from the shape's centre
            centre = keypoints[labelled, :2].mean(axis=0) if ann_b["category_id"] != 2 else None
            if centre is not None:
                top, right, bottom, left = keypoints[:, :2]
                assert top[1] < centre[1] < bottom[1] and left[0] < centre[0] < right[0]
