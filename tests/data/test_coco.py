import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.datasets import convert_to_coco_dict, load_coco_json, register_coco_instances
from d2mask.structures import BoxMode


def test_round_trip_polygon_rle_and_crowd(coco_dir, register):
    path = coco_dir.write(coco_dir.good())
    name = register([])  # only for its metadata
    dicts = load_coco_json(path, coco_dir.image_root, name)

    assert [d["image_id"] for d in dicts] == [1, 2]
    assert dicts[0]["file_name"] == f"{coco_dir.image_root}/a.png"
    assert (dicts[0]["height"], dicts[0]["width"]) == (30, 40)
    poly, rle = dicts[0]["annotations"]
    # Category ids 3 and 7 become the contiguous 0 and 1.
    assert poly["category_id"] == 0 and rle["category_id"] == 1
    assert poly["segmentation"] == [[5, 5, 15, 5, 15, 15, 5, 15]]
    assert poly["bbox"] == [5.0, 5.0, 10.0, 10.0] and poly["bbox_mode"] == BoxMode.XYWH_ABS
    np.testing.assert_array_equal(mask_util.decode(rle["segmentation"]), coco_dir.rle_mask)
    (crowd,) = dicts[1]["annotations"]
    assert crowd["iscrowd"] == 1
    # The uncompressed RLE arrives compressed, with the same pixels.
    assert not isinstance(crowd["segmentation"]["counts"], list)
    np.testing.assert_array_equal(mask_util.decode(crowd["segmentation"]), coco_dir.crowd_mask)

    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}


def test_extra_annotation_keys_are_copied_where_present(coco_dir):
    data = coco_dir.good()
    data["annotations"][0]["point_coords"] = [[6.0, 7.0]]
    data["annotations"][0]["point_labels"] = [1]
    path = coco_dir.write(data)
    poly, rle = load_coco_json(path, coco_dir.image_root, extra_annotation_keys=["point_coords", "point_labels"])[0]["annotations"]
    assert poly["point_coords"] == [[6.0, 7.0]] and poly["point_labels"] == [1]
    assert "point_coords" not in rle
    assert "point_coords" not in load_coco_json(path, coco_dir.image_root)[0]["annotations"][0]


def test_register_coco_instances_is_lazy_and_sets_metadata(coco_dir):
    path = coco_dir.write(coco_dir.good())
    register_coco_instances("test_coco_lazy", {"extra": 1}, path, coco_dir.image_root)
    try:
        meta = MetadataCatalog.get("test_coco_lazy")
        assert meta.json_file == path and meta.evaluator_type == "coco" and meta.extra == 1
        assert len(DatasetCatalog.get("test_coco_lazy")) == 2
        assert meta.thing_classes == ["cat", "dog"]
    finally:
        DatasetCatalog.remove("test_coco_lazy")
        MetadataCatalog.remove("test_coco_lazy")


def test_convert_back_to_coco_restores_ids_and_areas(coco_dir, register):
    dicts = load_coco_json(coco_dir.write(coco_dir.good()), coco_dir.image_root)
    name = register(dicts, thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={3: 0, 7: 1})
    coco = convert_to_coco_dict(name)
    assert [c["id"] for c in coco["categories"]] == [3, 7]
    assert [a["category_id"] for a in coco["annotations"]] == [3, 7, 7]
    assert [a["area"] for a in coco["annotations"]] == [100.0, 100.0, 96.0]
    assert [a["iscrowd"] for a in coco["annotations"]] == [0, 0, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not a valid JSON file"),
        ('{"images": [], "annotations": []}', "missing top-level key(s) ['categories']"),
        ('{"annotations": [], "categories": []}', "missing top-level key(s) ['images']"),
        ('[1, 2]', "must hold an object"),
    ],
)
def test_malformed_file_names_the_file(coco_dir, content, message):
    path = coco_dir.write(content)
    with pytest.raises(ValueError) as e:
        load_coco_json(path, coco_dir.image_root)
    assert path in str(e.value) and message in str(e.value)


def test_image_info_file_of_a_test_set_loads_without_annotations(coco_dir):
    # like COCO's image_info_test2017.json: images and categories, no "annotations"
    path = coco_dir.write(json.dumps({"images": [{"id": 4, "file_name": "a.png", "height": 30, "width": 40}],
                                      "categories": [{"id": 1, "name": "thing"}]}))
    (record,) = load_coco_json(path, coco_dir.image_root)
    assert record["image_id"] == 4 and record["annotations"] == []


def test_missing_json_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json(str(tmp_path / "nope.json"), str(tmp_path))


@pytest.mark.parametrize(
    "kind, index, edit, message",
    [
        ("annotations", 1, lambda r: r.pop("bbox"), "annotations[1] has no 'bbox'"),
        ("annotations", 0, lambda r: r.update(bbox=[1, 2, 3]), "annotations[0] has a 'bbox' that is not 4 numbers"),
        ("annotations", 2, lambda r: r.update(segmentation=7), "annotations[2] has a 'segmentation' that is neither"),
        ("images", 1, lambda r: r.update(height="30"), "images[1] has 'height' = '30', expected int"),
        ("images", 1, lambda r: r.update(id=1), "images[1] repeats the id 1"),
        ("categories", 0, lambda r: r.pop("name"), "categories[0] has no 'name'"),
        ("annotations", 0, lambda r: r.update(keypoints=[1, 2]), "annotations[0] has 'keypoints' that are not a flat"),
    ],
)
def test_first_bad_record_is_named(coco_dir, kind, index, edit, message):
    data = coco_dir.good()
    edit(data[kind][index])
    path = coco_dir.write(data)
    with pytest.raises(ValueError) as e:
        load_coco_json(path, coco_dir.image_root)
    assert path in str(e.value) and message in str(e.value)


def test_unusable_annotations_are_dropped_and_counted_per_reason(coco_dir, caplog):
    data = coco_dir.good()
    base = data["annotations"][0]
    bad = [
        dict(base, id=10, segmentation=[[1, 2, 3, 4]]),  # a polygon of 2 points
        dict(base, id=11, bbox=[5, 5, 0, 4]),  # zero width
        dict(base, id=12, bbox=[5, 5, 3, -1]),  # negative height
        dict(base, id=13, image_id=99),  # no such image
        dict(base, id=14, category_id=42),  # no such category
        dict(base, id=15, segmentation={"size": [10, 10], "counts": [100]}),  # image is 30 x 40
        dict(base, id=16, segmentation={"size": [30, 40], "counts": [5, 5]}),  # counts sum to 10, not 1200
    ]
    # A polygon too short is dropped from an annotation that has a valid one, keeping the annotation.
    data["annotations"] += bad + [dict(base, id=17, segmentation=[[1, 2, 3, 4], base["segmentation"][0]])]
    with caplog.at_level(logging.WARNING, logger="d2mask.data.datasets.coco"):
        dicts = load_coco_json(coco_dir.write(data), coco_dir.image_root)
    kept = [a for d in dicts for a in d["annotations"]]
    assert len(kept) == 4
    assert kept[2]["segmentation"] == [base["segmentation"][0]]
    text = caplog.text
    assert "dropped 7 of 11 annotations" in text
    assert "1 have no valid polygon" in text
    assert "2 have a box of non-positive width or height" in text
    assert "1 refer to an image id not in 'images'" in text
    assert "1 refer to a category id not in 'categories'" in text
    assert "1 have an RLE whose size differs from its image's" in text
    assert "1 have an uncompressed RLE whose counts do not add up" in text


def test_clean_file_logs_no_drops(coco_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="d2mask.data.datasets.coco"):
        load_coco_json(coco_dir.write(coco_dir.good()), coco_dir.image_root)
    assert "dropped" not in caplog.text


def test_loader_does_not_modify_what_it_read(coco_dir):
    json_file = coco_dir.write(coco_dir.good())
    root = os.path.dirname(json_file)

    def snapshot():
        """{path: (bytes, modification time)} of every file under the dataset's directory."""
        files = {}
        for directory, _, names in os.walk(root):
            for name in names:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    files[path] = (f.read(), os.stat(path).st_mtime_ns)
        return files

    before = snapshot()
    dicts = load_coco_json(json_file, coco_dir.image_root)
    assert len(dicts) == 2
    assert snapshot() == before  # same files, same content, none rewritten, nothing added


def test_keypoints_load_as_continuous_coordinates_and_convert_back(coco_dir, register):
    data = coco_dir.good()
    data["annotations"][0]["keypoints"] = [6, 7, 2, 0, 0, 0, 14, 9, 1]  # COCO's pixel indices
    data["annotations"][0]["num_keypoints"] = 2
    poly = load_coco_json(coco_dir.write(data), coco_dir.image_root)[0]["annotations"][0]
    # pixel 6 covers [6, 7): its centre 6.5; the unlabelled keypoint stays (0, 0, 0)
    assert poly["keypoints"] == [6.5, 7.5, 2, 0, 0, 0, 14.5, 9.5, 1]
    name = register([{"file_name": "a.png", "image_id": 1, "height": 30, "width": 40, "annotations": [poly]}],
                    thing_classes=["cat", "dog"])
    (ann,) = convert_to_coco_dict(name)["annotations"]
    assert ann["keypoints"] == [6, 7, 2, 0, 0, 0, 14, 9, 1] and ann["num_keypoints"] == 2
