"""Property tests of the COCO loader on random and mutated files: it returns dataset dicts or raises
DatasetError naming the file; no other exception ever escapes, and what it returns is usable."""
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2mask.data import DatasetError
from d2mask.data.datasets.coco import load_coco_json

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# values at the edges of what a loader must check, and anything else
_edges = st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.5, 2, 6, 30, 40, 10**30, 2**32, "", "3", True, None])
_scalars = st.one_of(
    _edges, st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
)
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=20,
)


def _valid():
    """Two 30x40 images, two categories, a polygon, a compressed-looking and an uncompressed RLE."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40},
                   {"id": 2, "file_name": "b.png", "height": 30, "width": 40}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 8], "iscrowd": 0,
             "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]]},
            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [0, 0, 4, 4], "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": [0, 16, 1184]}},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5.5, 6, 2, 3]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
    }


@st.composite
def mutated_coco(draw):
    """A valid file with a few random edits anywhere: a value replaced (mostly by a scalar), a key
    or list item removed, one added."""
    data = _valid()
    for _ in range(draw(st.integers(1, 6))):
        positions = _positions(data)
        if not positions:  # everything was removed
            break
        node, key = draw(st.sampled_from(positions))
        action = draw(st.sampled_from(["scalar", "scalar", "value", "remove", "add"]))
        if action == "scalar":
            node[key] = draw(_scalars)
        elif action == "value":
            node[key] = draw(json_values)
        elif action == "remove":
            del node[key]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(json_values)
        else:
            node.append(draw(json_values))
    return data


def _positions(node):
    """(container, key or index) of every value inside `node`."""
    found = []
    for key, child in (node.items() if isinstance(node, dict) else enumerate(node)):
        found.append((node, key))
        if isinstance(child, (dict, list)):
            found += _positions(child)
    return found


def _load(tmp_path, text):
    path = tmp_path / "fuzz.json"
    path.write_text(text)
    try:
        return load_coco_json(str(path), str(tmp_path))
    except DatasetError as e:
        assert str(path) in str(e)
        return None


def _check_usable(dicts):
    for record in dicts:
        assert record["height"] > 0 and record["width"] > 0
        for ann in record["annotations"]:
            x, y, w, h = ann["bbox"]
            assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
            assert ann["category_id"] >= 0 and ann["iscrowd"] in (0, 1)
            segm = ann.get("segmentation")
            if isinstance(segm, list):
                assert segm and all(len(p) >= 6 and len(p) % 2 == 0 for p in segm)
                assert all(math.isfinite(v) for p in segm for v in p)
            elif segm is not None:
                assert list(segm["size"]) == [record["height"], record["width"]]


def _check_taken_from(dicts, data):
    """Each record is an image of `data`, and each of its annotations one of that image's in `data`,
    with its box and its category's index among the sorted category ids."""
    images = {image["id"]: image for image in data["images"]}
    index_of = {cid: i for i, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    for record in dicts:
        image = images[record["image_id"]]
        assert record["file_name"].endswith(image["file_name"])
        assert (record["height"], record["width"]) == (image["height"], image["width"])
        given = []
        # a file without annotations (as COCO's test-set image lists) loads as images without objects
        for ann in data.get("annotations", []):
            if isinstance(ann, dict) and ann.get("image_id") == record["image_id"] and isinstance(ann.get("bbox"), list):
                try:
                    given.append(([float(v) for v in ann["bbox"]], index_of.get(ann.get("category_id"))))
                except (TypeError, ValueError):
                    continue
        for ann in record["annotations"]:
            assert (list(ann["bbox"]), ann["category_id"]) in given


def test_the_valid_file_loads_whole(tmp_path):
    dicts = _load(tmp_path, json.dumps(_valid()))
    assert [len(d["annotations"]) for d in dicts] == [1, 2]
    _check_taken_from(dicts, _valid())


@SETTINGS
@given(data=mutated_coco())
def test_mutated_files_load_or_raise_dataset_error(tmp_path, data):
    dicts = _load(tmp_path, json.dumps(data))
    if dicts is not None:
        _check_usable(dicts)
        _check_taken_from(dicts, data)


@SETTINGS
@given(data=json_values)
def test_random_json_documents_raise_dataset_error(tmp_path, data):
    dicts = _load(tmp_path, json.dumps(data))
    if dicts is not None:
        _check_usable(dicts)


@SETTINGS
@given(raw=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_random_text_raises_dataset_error(tmp_path, raw):
    dicts = _load(tmp_path, raw)
    assert dicts is None or dicts == []
