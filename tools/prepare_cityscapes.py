#!/usr/bin/env python
"""Makes the Cityscapes files that Detectron2's users make with cityscapesScripts, from the
`gtFine_trainvaltest` download alone (cityscapesScripts is not needed):

- `gtFine/<split>/<city>/*_gtFine_labelTrainIds.png` from `*_gtFine_labelIds.png`, as its
  preparation/createTrainIdLabelImgs.py makes them (read by cityscapes_fine_sem_seg_* and
  cityscapes_fine_panoptic_*);
- `gtFine/cityscapes_panoptic_<split>/*_gtFine_panoptic.png` and `gtFine/cityscapes_panoptic_<split>.json`
  from `*_gtFine_instanceIds.png`, as its preparation/createPanopticImgs.py makes them (read by
  cityscapes_fine_panoptic_*).

    python tools/prepare_cityscapes.py                      # <datasets root>/cityscapes
    python tools/prepare_cityscapes.py /data/cityscapes

Every split below gtFine/ (train, val, test) is prepared. Files that exist are kept and counted,
never overwritten; a split whose panoptic json exists is left as it is. Each file is written whole or
not at all, and the json last, so an interrupted run is finished by running it again.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
from glob import glob
from typing import Any, Dict, List, Optional, Tuple

import cv2

from d2mask.data.catalog import DatasetError
from d2mask.data.datasets import datasets_root
from d2mask.data.datasets.builtin_meta import CITYSCAPES_LABELS
from d2mask.data.datasets.cityscapes import label_ids_to_train_ids
from d2mask.data.datasets.cityscapes_panoptic import instance_ids_to_panoptic
from d2mask.data.datasets.coco_panoptic import encode_panoptic_png
from d2mask.data.detection_utils import read_sem_seg
from d2mask.engine import report_user_errors
from d2mask.utils.atomic_write import atomic_write

SPLITS = ("train", "val", "test")


def _write_png(path: str, array) -> None:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())


def _convert(function, map_file: str):
    """`function` of the label or instance map `map_file`; a bad value stops the run naming the file."""
    try:
        return function(read_sem_seg(map_file))
    except ValueError as e:
        raise DatasetError(f"{map_file}: {e}") from None


def write_train_ids(label_ids_file: str) -> bool:
    """Writes the `*_gtFine_labelTrainIds.png` of one `*_gtFine_labelIds.png`; False if it exists."""
    path = label_ids_file[: -len("labelIds.png")] + "labelTrainIds.png"
    if os.path.exists(path):
        return False
    _write_png(path, _convert(label_ids_to_train_ids, label_ids_file))
    return True


def write_panoptic(instance_ids_file: str, panoptic_dir: str) -> Tuple[Dict[str, Any], Dict[str, Any], bool]:
    """Writes the panoptic PNG of one `*_gtFine_instanceIds.png` into `panoptic_dir` (unless it
    exists); returns its json "images" and "annotations" entries, and whether it was written."""
    segment_ids, segments = _convert(instance_ids_to_panoptic, instance_ids_file)
    stem = os.path.basename(instance_ids_file)[: -len("_gtFine_instanceIds.png")]
    png = f"{stem}_gtFine_panoptic.png"
    path = os.path.join(panoptic_dir, png)
    written = not os.path.exists(path)
    if written:
        with atomic_write(path, "wb") as f:
            f.write(encode_panoptic_png(segment_ids))
    image = {"id": stem, "file_name": f"{stem}_leftImg8bit.png", "height": segment_ids.shape[0], "width": segment_ids.shape[1]}
    return image, {"image_id": stem, "file_name": png, "segments_info": segments}, written


def _map(function, items: List, *args) -> List:
    """`function(item, *args)` of each item, in processes when there are several items and cores."""
    processes = min(len(items), os.cpu_count() or 1)
    if processes <= 1:
        return [function(item, *args) for item in items]
    with mp.Pool(processes) as pool:
        return pool.starmap(function, [(item, *args) for item in items], chunksize=8)


def _maps_of(gt_dir: str, kind: str) -> List[str]:
    files = sorted(glob(os.path.join(gt_dir, "*", f"*_gtFine_{kind}")))
    if not files:
        raise DatasetError(f"No <city>/*_gtFine_{kind} below {gt_dir}: "
                           f"is it Cityscapes' gtFine/<split> (gtFine_trainvaltest.zip)?")
    return files


def prepare_split(cityscapes_dir: str, split: str) -> Dict[str, int]:
    """Writes the label maps and panoptic files of one split; returns how many were written and kept."""
    gt_dir = os.path.join(cityscapes_dir, "gtFine", split)
    written = _map(write_train_ids, _maps_of(gt_dir, "labelIds.png"))
    counts = {"labelTrainIds written": sum(written), "labelTrainIds kept": len(written) - sum(written)}
    json_file = os.path.join(cityscapes_dir, "gtFine", f"cityscapes_panoptic_{split}.json")
    if os.path.exists(json_file):
        return dict(counts, **{"panoptic json kept": 1})
    panoptic_dir = json_file[: -len(".json")]
    os.makedirs(panoptic_dir, exist_ok=True)
    results = _map(write_panoptic, _maps_of(gt_dir, "instanceIds.png"), panoptic_dir)
    categories = [
        {"id": label.id, "name": label.name, "color": list(label.color), "supercategory": label.category,
         "isthing": int(label.has_instances)}
        for label in CITYSCAPES_LABELS if not label.ignore_in_eval
    ]
    with atomic_write(json_file) as f:
        json.dump({"images": [r[0] for r in results], "annotations": [r[1] for r in results], "categories": categories}, f)
    written = sum(r[2] for r in results)
    return dict(counts, **{"panoptic PNGs written": written, "panoptic PNGs kept": len(results) - written,
                           "panoptic json written": 1})


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, int]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cityscapes_dir", nargs="?", help="the folder holding gtFine/ (default: <datasets root>/cityscapes)")
    args = parser.parse_args(argv)
    cityscapes_dir = args.cityscapes_dir or os.path.join(datasets_root(), "cityscapes")
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(cityscapes_dir, "gtFine", s))]
    if not splits:
        raise DatasetError(f"No gtFine/{{{','.join(SPLITS)}}} in {cityscapes_dir}: expected Cityscapes' layout "
                           f"(gtFine_trainvaltest.zip unpacked there)")
    report = {}
    for split in splits:
        report[split] = prepare_split(cityscapes_dir, split)
        print(f"{split}: " + ", ".join(f"{n} {what}" for what, n in report[split].items()))
    return report


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])
