import copy

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from d2mask.evaluation import encode_masks
from d2mask.evaluation.mask_rle import fast_mask_cocoeval_class, mask_results_as_coco


def _pycocotools_rles(masks: torch.Tensor):
    return mask_util.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))


def test_encode_masks_of_detections_in_an_image_give_pycocotools_rle():
    # Detection-like masks: blobs inside boxes of a 30 x 40 image, several per image, with the
    # cases the separators must get right: blocks of full height (no separator between columns),
    # holes and empty columns inside a block, the first and the last pixel set, a single pixel.
    rng = np.random.default_rng(0)
    for _ in range(20):
        masks = torch.zeros(12, 30, 40, dtype=torch.bool)
        for mask in masks[:9]:
            y0, x0 = rng.integers(0, 30), rng.integers(0, 40)
            y1, x1 = rng.integers(y0 + 1, 31), rng.integers(x0 + 1, 41)
            mask[y0:y1, x0:x1] = torch.from_numpy(rng.uniform(size=(y1 - y0, x1 - x0)) < rng.uniform(0.2, 1))
        masks[9, :, 5:9] = True  # full height
        masks[9, 3, 7] = False
        masks[10, 0, 0] = masks[10, -1, -1] = True
        masks[11, 29, 12] = True
        masks = masks[torch.from_numpy(rng.permutation(12))]
        assert encode_masks(masks) == _pycocotools_rles(masks)
    # a non-contiguous tensor (a selection of the masks' columns)
    assert encode_masks(masks[:, :, ::2]) == _pycocotools_rles(masks[:, :, ::2].contiguous())


def _coco(api, images, annotations, categories):
    coco = api()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    coco.createIndex()
    return coco


def _scene(seed):
    """GT (polygons, some of two parts; crowd RLEs) and mask detections of 6 images of 40 x 50, two classes."""
    rng = np.random.default_rng(seed)
    h, w = 40, 50
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i in range(1, 7)]
    categories = [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}]
    gts, results = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 5))):
            x0, y0 = rng.uniform(0, 35), rng.uniform(0, 25)
            polygon = [x0, y0, x0 + rng.uniform(3, 15), y0, x0 + rng.uniform(3, 15), y0 + rng.uniform(3, 15)]
            polygons = [polygon, [x + 6 for x in polygon]] if rng.uniform() < 0.3 else [polygon]  # two parts
            gt = {"id": len(gts) + 1, "image_id": image["id"], "category_id": int(rng.choice([1, 7])),
                  "segmentation": polygons, "iscrowd": 0}
            rle = mask_util.merge(mask_util.frPyObjects(polygons, h, w))
            gt["area"], gt["bbox"] = float(mask_util.area(rle)), mask_util.toBbox(rle).tolist()
            if rng.uniform() < 0.2:
                gt.update(iscrowd=1, segmentation={"counts": rle["counts"].decode(), "size": [h, w]})
            gts.append(gt)
            for _ in range(int(rng.integers(0, 3))):  # detections near it, with tied scores
                mask = np.roll(mask_util.decode(rle), rng.integers(-3, 4, 2), axis=(0, 1))
                results.append({"image_id": image["id"], "category_id": gt["category_id"],
                                "score": float(rng.choice([0.3, 0.6, 0.9])), "segmentation": mask})
        for _ in range(int(rng.integers(0, 3))):  # false positives
            mask = np.zeros((h, w), dtype=bool)
            y, x = rng.integers(0, 30), rng.integers(0, 40)
            mask[y:y + 8, x:x + 8] = True
            results.append({"image_id": image["id"], "category_id": int(rng.choice([1, 7])),
                            "score": float(rng.uniform()), "segmentation": mask})
    masks = torch.from_numpy(np.stack([r["segmentation"] for r in results]).astype(bool))
    for result, rle in zip(results, encode_masks(masks)):
        rle["counts"] = rle["counts"].decode("ascii")
        result["segmentation"] = rle
    return images, gts, categories, results


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_mask_iou_is_pycocotools_iou(seed):
    from faster_coco_eval import COCO as FastCOCO
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gts, categories, results = _scene(seed)
    reference_gt = _coco(COCO, images, copy.deepcopy(gts), categories)
    reference = COCOeval(reference_gt, reference_gt.loadRes(copy.deepcopy(results)), "segm")
    reference.evaluate()

    coco_gt = _coco(FastCOCO, images, copy.deepcopy(gts), categories)
    gt_rles = {}
    for _ in range(2):  # the second evaluation takes the GT masks' RLE from gt_rles
        fast = fast_mask_cocoeval_class()(coco_gt, mask_results_as_coco(coco_gt, results), gt_rles,
                                          print_function=lambda *args: None)
        fast.evaluate()
        fast.accumulate()
        pairs = [pair for pair, ious in reference.ious.items() if len(ious)]
        assert len(pairs) >= 4
        for pair in pairs:
            np.testing.assert_array_equal(fast.ious[pair], reference.ious[pair], err_msg=str(pair))
        assert all(len(fast.ious[pair]) == 0 for pair, ious in reference.ious.items() if not len(ious))
        # converted once, where a detection of the GT object's class is in its image
        assert sorted(gt_rles) == [g["id"] for g in gts if (g["image_id"], g["category_id"]) in set(pairs)]
    reference.accumulate()
    np.testing.assert_allclose(fast.eval["precision"], reference.eval["precision"], atol=1e-12)
