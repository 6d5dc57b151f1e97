import filecmp
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import register_shapes_coco
from d2mask.data.datasets import shapes_coco
from d2mask.structures import polygons_to_bitmask

# 64-pixel images crowded enough that occlusion splits shapes and hides some below MIN_AREA.
TINY = dict(num_images=6, image_size=64, min_objects=4, max_objects=10, object_size=(6, 90), min_area=8)


@pytest.fixture
def generated(tmp_path):
    """`generated(seed, root, **overrides) -> (directory, COCO json)`; registrations removed afterwards."""
    names = []

    def _make(seed, root, **overrides):
        name = f"test_shapes_coco_{len(names)}"
        register_shapes_coco(name, str(root), seed=seed, **{**TINY, **overrides})
        names.append(name)
        directory = os.path.dirname(os.path.dirname(DatasetCatalog.get(name)[0]["file_name"]))
        with open(os.path.join(directory, "annotations.json")) as f:
            return directory, json.load(f)

    yield _make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _decode(segmentation, height, width):
    if isinstance(segmentation, dict):
        return mask_util.decode(segmentation).astype(bool)
    return polygons_to_bitmask([np.asarray(p) for p in segmentation], height, width)


def _pieces(mask):
    """Connected components (8-neighbourhood, as COCO's polygon outlines join pixels)."""
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_annotations_are_the_visible_parts_of_the_shapes_painted_in_order(generated, tmp_path):
    directory, data = generated(seed=3, root=tmp_path)
    params = {k: TINY[k] for k in ("image_size", "min_objects", "max_objects", "object_size")}
    by_image = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    num_rle = num_split = num_dropped = 0
    for index, image in enumerate(data["images"]):
        pixels, kinds, masks = shapes_coco._generate_scene(3, index, **params)
        # the file holds this scene: JPEG keeps its brightness to a few levels (colour less, being
        # subsampled); another scene differs by tens
        stored = cv2.imread(os.path.join(directory, "images", image["file_name"]), cv2.IMREAD_GRAYSCALE)
        assert np.abs(stored.astype(int) - cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)).mean() < 5
        label_map = np.zeros((64, 64), dtype=int)
        for k, mask in enumerate(masks, start=1):
            label_map[mask] = k
        visible = [(kind, label_map == k) for k, kind in enumerate(kinds, start=1)]
        expected = [(kind, mask) for kind, mask in visible if mask.sum() >= TINY["min_area"]]
        num_dropped += len(visible) - len(expected)
        for (kind, mask), ann in zip(expected, by_image[image["id"]], strict=True):
            assert ann["category_id"] == kind + 1 and ann["iscrowd"] == 0
            assert ann["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            decoded = _decode(ann["segmentation"], 64, 64)
            if isinstance(ann["segmentation"], dict):
                num_rle += 1
                np.testing.assert_array_equal(decoded, mask)
            else:  # a polygon is kept only where it traces the mask
                assert len(ann["segmentation"]) == 1 and _pieces(mask) == 1
                assert (decoded & mask).sum() >= 0.95 * (decoded | mask).sum()
            num_split += _pieces(mask) > 1
    # the tiny set exercises every case
    assert num_split > 0 and num_rle > num_split and num_dropped > 0
    assert len({len(anns) for anns in by_image.values()}) > 1  # counts per image vary


def test_a_shape_cut_in_two_is_an_rle_of_both_pieces():
    square = np.zeros((40, 40), dtype=bool)
    square[10:30, 10:30] = True
    speck = np.zeros((40, 40), dtype=bool)
    speck[17:20, 32:36] = True  # 12 pixels, 8 of them then covered by the bar
    bar = np.zeros((40, 40), dtype=bool)
    bar[18:22, :] = True
    square_ann, bar_ann = shapes_coco._annotations([1, 0, 2], [square, speck, bar], min_area=5)

    assert square_ann["category_id"] == 2 and bar_ann["category_id"] == 3  # the speck's 4 pixels are left out
    rle = square_ann["segmentation"]
    assert rle["size"] == [40, 40] and isinstance(rle["counts"], str)  # compressed, as json holds it
    expected = np.zeros((40, 40), dtype=bool)
    expected[10:18, 10:30] = expected[22:30, 10:30] = True
    np.testing.assert_array_equal(mask_util.decode(rle), expected)
    assert square_ann["area"] == 20 * 20 - 4 * 20 and square_ann["bbox"] == [10, 10, 20, 20]
    assert isinstance(bar_ann["segmentation"], list) and bar_ann["area"] == 160 and bar_ann["bbox"] == [0, 18, 40, 4]


def test_a_shape_with_a_hole_is_an_rle():
    square = np.zeros((30, 30), dtype=bool)
    square[5:25, 5:25] = True
    inner = np.zeros((30, 30), dtype=bool)
    inner[12:16, 12:16] = True
    outer_ann, inner_ann = shapes_coco._annotations([1, 1], [square, inner], min_area=1)
    np.testing.assert_array_equal(mask_util.decode(outer_ann["segmentation"]), square & ~inner)
    assert outer_ann["area"] == 400 - 16 and isinstance(inner_ann["segmentation"], list)


def test_the_evaluation_set_has_cocos_mix_of_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("shapes_coco_val")
    directory = os.path.dirname(os.path.dirname(dicts[0]["file_name"]))
    with open(os.path.join(directory, "annotations.json")) as f:
        areas = np.array([a["area"] for a in json.load(f)["annotations"]])
    assert {r["height"] for r in dicts} == {256}  # the areas are those evaluated at the config's test size
    small, large = (areas < 32**2).mean(), (areas >= 96**2).mean()
    assert 0.30 <= small <= 0.40 and 0.15 <= large <= 0.25 and 0.40 <= 1 - small - large <= 0.55
    counts = [len(r["annotations"]) for r in dicts]
    assert min(counts) <= 2 and max(counts) >= 10


def test_generation_is_deterministic_per_seed(generated, tmp_path):
    a, json_a = generated(seed=7, root=tmp_path / "a")
    b, json_b = generated(seed=7, root=tmp_path / "b")
    _, json_c = generated(seed=8, root=tmp_path / "c")
    assert json_a == json_b and json_a["annotations"] != json_c["annotations"]
    for image in json_a["images"]:
        name = os.path.join("images", image["file_name"])
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False)
    assert os.path.basename(a).startswith("test_shapes_coco_0-") and os.path.basename(os.path.dirname(a)) == "shapes_coco"


def test_invalid_parameters():
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        register_shapes_coco("bad", num_images=1, seed=0, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="object_size"):
        register_shapes_coco("bad", num_images=1, seed=0, object_size=(40, 10))
    with pytest.raises(ValueError, match="min_area"):
        register_shapes_coco("bad", num_images=1, seed=0, min_area=0)
    assert "bad" not in DatasetCatalog.list()
