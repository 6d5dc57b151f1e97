import numpy as np
import pytest
import torch

from d2mask.config import get_cfg
from d2mask.data import DatasetMapper
from d2mask.data import transforms as T
from d2mask.data.datasets import load_coco_json
from d2mask.data.detection_utils import create_keypoint_hflip_indices
from d2mask.structures import BitMasks, PolygonMasks


def coco_dicts(coco_dir):
    return load_coco_json(coco_dir.write(coco_dir.good()), coco_dir.image_root)


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_training_mapper_flips_image_boxes_and_masks_together(coco_dir, mask_format):
    dicts = coco_dicts(coco_dir)
    record = dicts[0]
    if mask_format == "polygon":
        record["annotations"] = record["annotations"][:1]  # with the RLE, the image would get BitMasks
    mapper = DatasetMapper(True, augmentations=[T.RandomFlip(1.0)], image_format="BGR",
                           use_instance_mask=True, instance_mask_format=mask_format)
    out = mapper(record)
    assert out["image"].shape == (3, 30, 40) and out["image"].dtype == torch.uint8
    instances = out["instances"]
    assert isinstance(instances.gt_masks, PolygonMasks if mask_format == "polygon" else BitMasks)
    # The square at x in [5, 15) moves to [25, 35) in a 40 wide image.
    torch.testing.assert_close(instances.gt_boxes.tensor[0], torch.tensor([25.0, 5.0, 35.0, 15.0]))
    torch.testing.assert_close(instances.gt_masks.get_bounding_boxes().tensor, instances.gt_boxes.tensor)
    assert "annotations" not in out and record["annotations"][0]["bbox"] == [5.0, 5.0, 10.0, 10.0]


def test_training_drops_crowd_and_inference_drops_annotations(coco_dir):
    record = coco_dicts(coco_dir)[1]  # only a crowd annotation
    train = DatasetMapper(True, augmentations=[], image_format="RGB", use_instance_mask=True,
                          instance_mask_format="bitmask")
    assert len(train(record)["instances"]) == 0
    test = DatasetMapper(False, augmentations=[T.ResizeShortestEdge(60, 1000, "choice")], image_format="BGR")
    out = test(record)
    assert "instances" not in out and "annotations" not in out
    assert out["image"].shape == (3, 60, 80) and (out["height"], out["width"]) == (30, 40)


def test_from_config_with_crop_recomputes_boxes(coco_dir):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN = (30,)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [30, 20]
    mapper = DatasetMapper(cfg, is_train=True)
    assert isinstance(mapper.augmentations.augmentations[0], T.RandomCrop) and mapper.recompute_boxes
    np.random.seed(0)
    for _ in range(5):
        instances = mapper(coco_dicts(coco_dir)[0])["instances"]
        torch.testing.assert_close(instances.gt_masks.get_bounding_boxes().tensor, instances.gt_boxes.tensor)


def test_missing_image_and_wrong_size_name_the_file(coco_dir):
    record = coco_dicts(coco_dir)[0]
    mapper = DatasetMapper(False, augmentations=[], image_format="BGR")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        mapper(dict(record, file_name=record["file_name"].replace("a.png", "gone.png")))
    with pytest.raises(ValueError, match="a.png is 40x30"):
        mapper(dict(record, height=31))


def test_keypoints_flip_with_the_image_and_swap_names(coco_dir, register):
    # keypoints "left", "right", "middle" of one instance: after a horizontal flip of the 40 px wide
    # image, x -> 40 - x and the left keypoint is the old right one, mirrored
    names = ["left", "right", "middle"]
    record = coco_dicts(coco_dir)[0]
    record["annotations"] = record["annotations"][:1]
    record["annotations"][0]["keypoints"] = [6.5, 7.5, 2, 14.5, 7.5, 1, 0, 0, 0]
    dataset = register([record], keypoint_names=names, keypoint_flip_map=[("left", "right")])
    assert create_keypoint_hflip_indices([dataset]) == [1, 0, 2]

    cfg = get_cfg()
    cfg.MODEL.KEYPOINT_ON = True
    cfg.DATASETS.TRAIN = (dataset,)
    mapper = DatasetMapper(cfg, True, augmentations=[T.RandomFlip(1.0)])
    keypoints = mapper(record)["instances"].gt_keypoints.tensor
    torch.testing.assert_close(keypoints, torch.tensor([[[40 - 14.5, 7.5, 1], [40 - 6.5, 7.5, 2], [0, 0, 0]]]))
    # flipping back restores the original
    flipped = {**record, "annotations": [{**record["annotations"][0], "bbox": [25, 5, 10, 10],
                                          "keypoints": keypoints.flatten().tolist()}]}
    again = mapper(flipped)["instances"].gt_keypoints.tensor.flatten().tolist()
    assert again == pytest.approx(record["annotations"][0]["keypoints"])

    # a model without keypoints drops them; a keypoint model on a dataset without a flip map is told so
    cfg.MODEL.KEYPOINT_ON = False
    assert not DatasetMapper(cfg, True)(record)["instances"].has("gt_keypoints")
    cfg.MODEL.KEYPOINT_ON = True
    cfg.DATASETS.TRAIN = (register([record], keypoint_names=names),)
    with pytest.raises(ValueError, match="has no keypoint_flip_map in its metadata"):
        DatasetMapper(cfg, True)
