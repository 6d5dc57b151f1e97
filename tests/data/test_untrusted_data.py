"""Datasets from strangers: an image is refused by the size its header declares, before decoding;
huge polygons are dropped and counted."""
import json
import logging
import struct
import zlib

import cv2
import numpy as np
import pytest

from d2mask.config import get_cfg
from d2mask.data import DatasetError, DatasetMapper
from d2mask.data.datasets.coco import MAX_POLYGON_POINTS, load_coco_json
from d2mask.data.detection_utils import MAX_IMAGE_PIXELS, read_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height RGB pixels, with a few bytes of image data: what a
    decompression bomb looks like to a reader that trusts the header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))  # 2.7 GB decoded
    with pytest.raises(DatasetError) as info:
        read_image(str(path))
    message = str(info.value)
    assert message == f"Image {path} declares more than 178956970 pixels, more than INPUT.MAX_IMAGE_PIXELS = 100000000; it was not decoded"
    path.write_bytes(_png_header_only(10001, 10000))  # below Pillow's own limit, the size is known
    with pytest.raises(DatasetError, match=r"bomb.png is 10001x10000 \(width x height\), more than INPUT.MAX_IMAGE_PIXELS"):
        read_image(str(path))


def test_the_limit_is_the_config_key_and_counts_width_times_height(tmp_path):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), dtype=np.uint8))
    assert read_image(str(path), max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(DatasetError, match=r"small.png is 30x20 \(width x height\), more than INPUT.MAX_IMAGE_PIXELS = 599"):
        read_image(str(path), max_pixels=599)

    cfg = get_cfg()
    assert cfg.INPUT.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    cfg.INPUT.MAX_IMAGE_PIXELS = 599
    mapper = DatasetMapper(cfg, is_train=False)
    with pytest.raises(DatasetError, match="small.png is 30x20"):
        mapper({"file_name": str(path), "image_id": 0})
    with pytest.raises(ValueError, match="max_image_pixels must be a positive int"):
        DatasetMapper(is_train=False, augmentations=[], image_format="BGR", max_image_pixels=0)


def test_a_polygon_of_more_points_than_any_annotator_draws_is_dropped(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), dtype=np.uint8))
    ring = np.stack([10 + 5 * np.cos(t := np.linspace(0, 2 * np.pi, MAX_POLYGON_POINTS + 1)), 10 + 5 * np.sin(t)], 1)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "segmentation": [ring.ravel().tolist()]},
            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15]]},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="d2mask.data.datasets.coco"):
        dicts = load_coco_json(str(tmp_path / "a.json"), str(tmp_path))
    assert [a["segmentation"] for a in dicts[0]["annotations"]] == [[[5, 5, 15, 5, 15, 15]]]
    assert f"1 have a polygon of more than {MAX_POLYGON_POINTS} points (first: id 7)" in caplog.text
