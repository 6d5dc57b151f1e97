import copy
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from d2mask.config import get_cfg
from d2mask.data import DatasetError
from d2mask.data import detection_utils as utils
from d2mask.data import transforms as T
from d2mask.modeling.roi_heads.mask_head import mask_rcnn_loss
from d2mask.structures import BitMasks, BoxMode, PolygonMasks


def write_image(path, h=6, w=8):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0], image[..., 2] = 10, 200  # B = 10, R = 200 in OpenCV's BGR
    cv2.imwrite(str(path), image)
    return str(path)


def test_read_image_formats(tmp_path):
    path = write_image(tmp_path / "x.png")
    assert utils.read_image(path, "BGR")[0, 0].tolist() == [10, 0, 200]
    assert utils.read_image(path, "RGB")[0, 0].tolist() == [200, 0, 10]
    gray = utils.read_image(path, "L")
    assert gray.shape == (6, 8, 1)
    np.testing.assert_array_equal(utils.convert_image_to_rgb(utils.read_image(path, "BGR"), "BGR"),
                                  utils.read_image(path, "RGB"))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        utils.read_image(str(tmp_path / "missing.png"))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png"):
        utils.read_image(str(tmp_path / "text.png"))
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        utils.read_image(write_image(tmp_path / "x.png"), "YUV")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DatasetError, match="folder.png is a directory, not an image"):
        utils.read_image(str(tmp_path / "folder.png"))


def test_image_size_that_differs_from_the_annotation_is_an_error():
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError) as e:
        utils.check_image_size({"file_name": "a.png", "height": 30, "width": 40}, image)
    assert "a.png" in str(e.value) and "8x6" in str(e.value) and "40x30" in str(e.value)
    record = {"file_name": "a.png"}
    utils.check_image_size(record, image)
    assert (record["height"], record["width"]) == (6, 8)


def annotations():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:6, 20:28] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return [
        {"bbox": [3, 4, 6, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2,
         "segmentation": [[3, 4, 9, 4, 9, 10, 3, 10]]},
        {"bbox": [20, 2, 28, 6], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "segmentation": rle},
    ], mask


def test_transform_annotations_and_build_bitmask_instances():
    annos, mask = annotations()
    transforms = T.TransformList([T.HFlipTransform(30)])
    out = [utils.transform_instance_annotations(a, transforms, (20, 30)) for a in annos]
    np.testing.assert_allclose(out[0]["bbox"], [21, 4, 27, 10])
    np.testing.assert_allclose(out[1]["bbox"], [2, 2, 10, 6])
    np.testing.assert_array_equal(out[1]["segmentation"], mask[:, ::-1].astype(bool))

    instances = utils.annotations_to_instances(out, (20, 30), mask_format="bitmask")
    assert instances.gt_classes.tolist() == [2, 0]
    assert isinstance(instances.gt_masks, BitMasks)
    # Each mask's tight box is its annotated box: flip kept them consistent.
    torch.testing.assert_close(instances.gt_masks.get_bounding_boxes().tensor, instances.gt_boxes.tensor)


def test_transform_keypoints_as_detectron2():
    # three keypoints (x, y, visibility) on a 30 px wide image: left, right, and one that is unlabelled
    anno = {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "keypoints": [4, 5, 2, 8, 5, 1, 9, 9, 0]}
    flip = T.TransformList([T.HFlipTransform(30)])
    out = utils.transform_instance_annotations(dict(anno), flip, (20, 30), keypoint_hflip_indices=np.array([1, 0, 2]))
    # flipped x = 30 - x, then left and right swap places; the unlabelled one is all zeros
    np.testing.assert_allclose(out["keypoints"], [[22, 5, 1], [26, 5, 2], [0, 0, 0]])
    with pytest.raises(ValueError, match="pass keypoint_hflip_indices"):
        utils.transform_instance_annotations(dict(anno), flip, (20, 30))
    # a keypoint that leaves the image becomes unlabelled
    crop = T.TransformList([T.CropTransform(5, 0, 20, 20)])
    np.testing.assert_allclose(utils.transform_instance_annotations(dict(anno), crop, (20, 20))["keypoints"],
                               [[0, 0, 0], [3, 5, 1], [0, 0, 0]])


def test_keypoints_become_gt_keypoints_of_one_size():
    box = {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    annos = [{**box, "keypoints": np.array([[1, 2, 2], [3, 4, 1]])}, {**box, "keypoints": [5, 6, 2, 0, 0, 0]}]
    keypoints = utils.annotations_to_instances(annos, (20, 20)).gt_keypoints
    assert keypoints.tensor.tolist() == [[[1, 2, 2], [3, 4, 1]], [[5, 6, 2], [0, 0, 0]]]
    with pytest.raises(DatasetError, match=r"different numbers of keypoints \[2, 1\]"):
        utils.annotations_to_instances([annos[0], {**box, "keypoints": [5, 6, 2]}], (20, 20))


def test_flip_map_naming_an_unknown_keypoint_is_an_error(register):
    name = register([], keypoint_names=["a", "b"], keypoint_flip_map=[["a", "c"]])
    with pytest.raises(DatasetError, match=r"keypoint_flip_map entry \('a', 'c'\) is not a pair of its keypoint_names"):
        utils.create_keypoint_hflip_indices([name])
    assert utils.create_keypoint_hflip_indices(register([], keypoint_names=["a", "b"], keypoint_flip_map=[])) == [0, 1]


def test_polygon_format_keeps_an_image_of_polygons_and_rles_as_exact_bitmasks():
    annos, mask = annotations()
    mixed = utils.annotations_to_instances(copy.deepcopy(annos), (20, 30), mask_format="polygon")
    assert isinstance(mixed.gt_masks, BitMasks)
    # the RLE as it was, the polygon (a 6x6 square from (3, 4)) rasterised
    np.testing.assert_array_equal(mixed.gt_masks.tensor[1].numpy(), mask.astype(bool))
    square = np.zeros((20, 30), dtype=bool)
    square[4:10, 3:9] = True
    np.testing.assert_array_equal(mixed.gt_masks.tensor[0].numpy(), square)
    polygons_only = utils.annotations_to_instances(annos[:1], (20, 30), mask_format="polygon")
    assert isinstance(polygons_only.gt_masks, PolygonMasks)

    # a batch of both kinds trains the mask head: each image's masks are cropped on their own
    polygons_only.proposal_boxes = polygons_only.gt_boxes
    mixed.proposal_boxes = mixed.gt_boxes
    logits = torch.zeros(3, 3, 4, 4, requires_grad=True)
    loss = mask_rcnn_loss(logits, [polygons_only, mixed])
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_boxes_are_clipped_and_empty_instances_filtered():
    annos, _ = annotations()
    crop = T.TransformList([T.CropTransform(0, 12, 30, 8)])  # rows 12..19: below both objects
    out = [utils.transform_instance_annotations(a, crop, (8, 30)) for a in annos[:1]]
    instances = utils.annotations_to_instances(out, (8, 30))
    assert len(instances) == 1 and len(utils.filter_empty_instances(instances)) == 0


def test_no_annotations_give_empty_instances():
    instances = utils.annotations_to_instances([], (5, 5))
    assert len(instances) == 0 and instances.gt_boxes.tensor.shape == (0, 4)


def test_build_augmentation_follows_config():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (16, 32)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "range"
    cfg.INPUT.RANDOM_FLIP = "vertical"
    resize, flip = utils.build_augmentation(cfg, is_train=True)
    assert resize.short_edge_length == (16, 32) and resize.sample_style == "range"
    assert flip.vertical and not flip.horizontal
    (test_resize,) = utils.build_augmentation(cfg, is_train=False)
    assert test_resize.short_edge_length == (800,)
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        utils.build_augmentation(cfg, is_train=True)


def test_metadata_consistency(register):
    a = register([], thing_classes=["x", "y"])
    b = register([], thing_classes=["x", "y"])
    c = register([], thing_classes=["y", "x"])
    utils.check_metadata_consistency("thing_classes", [a, b])
    with pytest.raises(ValueError, match="different metadata 'thing_classes'"):
        utils.check_metadata_consistency("thing_classes", [a, c])


def test_fed_loss_class_weights_from_metadata_from_an_lvis_json_or_from_the_dicts(tmp_path):
    from d2mask.data import DatasetCatalog, MetadataCatalog
    from d2mask.data.datasets import load_lvis_json

    def ann(c):
        return {"category_id": c, "bbox": [0, 0, 1, 1], "bbox_mode": BoxMode.XYWH_ABS}

    try:
        # images with each class: class 0 in 1 image (twice in it), class 2 in 2 images, classes 1 and 3 in none
        DatasetCatalog.register("fed_counted", lambda: [{"annotations": [ann(0), ann(0), ann(2)]},
                                                        {"annotations": [ann(2)]}, {"annotations": []}])
        MetadataCatalog.get("fed_counted").set(thing_classes=["a", "b", "c", "d"])
        assert utils.get_fed_loss_cls_weights("fed_counted", 0.5).tolist() == pytest.approx([1, 0, 2 ** 0.5, 0])

        # an LVIS json gives each category's image count, by id (not in file order)
        lvis = {"images": [], "annotations": [],
                "categories": [{"id": 7, "name": "x", "image_count": 9}, {"id": 3, "name": "y", "image_count": 4}]}
        (tmp_path / "lvis.json").write_text(json.dumps(lvis))
        load_lvis_json(str(tmp_path / "lvis.json"), str(tmp_path), "fed_lvis")
        assert utils.get_fed_loss_cls_weights(["fed_lvis"], 0.5).tolist() == pytest.approx([2, 3])
        with pytest.raises(DatasetError, match="class_image_count"):
            MetadataCatalog.get("fed_counted").set(class_image_count=[{"id": 1, "image_count": 1}])
            utils.get_fed_loss_cls_weights(["fed_lvis", "fed_counted"])
    finally:
        DatasetCatalog.remove("fed_counted")
        for name in ("fed_counted", "fed_lvis"):
            MetadataCatalog.remove(name)
