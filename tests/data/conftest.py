"""Fixtures of the data tests: datasets registered for one test only, and tiny COCO files."""
import json
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2mask.data import DatasetCatalog, MetadataCatalog


@pytest.fixture
def register():
    """`register(dicts_or_func, **metadata) -> name`: a dataset under a fresh name, removed afterwards."""
    names = []

    def _register(dicts_or_func, **metadata):
        name = f"test_{uuid.uuid4().hex[:8]}"
        func = dicts_or_func if callable(dicts_or_func) else (lambda: dicts_or_func)
        DatasetCatalog.register(name, func)
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.remove(name)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    # No data test may write into the user's ~/.cache.
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))


def rect_mask(h, w, x0, y0, x1, y1):
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def uncompressed_rle(mask):
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


@pytest.fixture
def coco_dir(tmp_path):
    """A directory with two 40x30 (w x h) images and `write(data) -> json path`; `good()` gives a valid
    COCO dict with a polygon, a compressed RLE and a crowd (uncompressed RLE) annotation."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(root / "images" / name), np.full((30, 40, 3), 50, dtype=np.uint8))

    class Files:
        image_root = str(root / "images")
        make_rect_mask = staticmethod(rect_mask)
        make_uncompressed_rle = staticmethod(uncompressed_rle)
        rle_mask = rect_mask(30, 40, 20, 10, 30, 20)
        crowd_mask = rect_mask(30, 40, 0, 0, 12, 8)

        @staticmethod
        def write(data, name="ann.json"):
            path = root / name
            path.write_text(data if isinstance(data, str) else json.dumps(data))
            return str(path)

        @classmethod
        def good(cls):
            rle = mask_util.encode(np.asfortranarray(cls.rle_mask))
            rle["counts"] = rle["counts"].decode("ascii")
            return {
                "images": [
                    {"id": 1, "file_name": "a.png", "height": 30, "width": 40},
                    {"id": 2, "file_name": "b.png", "height": 30, "width": 40},
                ],
                "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 0,
                     "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]], "area": 100},
                    {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 10, 10, 10], "iscrowd": 0,
                     "segmentation": rle, "area": 100},
                    {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 12, 8], "iscrowd": 1,
                     "segmentation": uncompressed_rle(cls.crowd_mask), "area": 96},
                ],
            }

    return Files
