import cv2
import numpy as np
import pytest
import torch

from d2mask.data.catalog import Metadata
from d2mask.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from d2mask.utils.colormap import instance_colors
from d2mask.utils.visualizer import ColorMode, Visualizer
from tests.common import boxed_instances


def gray_image():
    return np.full((64, 96, 3), 128, dtype=np.uint8)


def test_predictions_png_changes_pixels_inside_boxes_only(tmp_path):
    mask = np.zeros((2, 64, 96), dtype=bool)
    mask[0, 12:28, 12:28] = True
    mask[1, 40:60, 50:90] = True
    instances = Instances((64, 96), pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0], [48.0, 38.0, 92.0, 62.0]])),
                          scores=torch.tensor([0.9, 0.6]), pred_classes=torch.tensor([0, 1]),
                          pred_masks=torch.from_numpy(mask))
    meta = Metadata("vis", thing_classes=["circle", "square"])
    path = tmp_path / "pred.png"
    Visualizer(gray_image(), meta).draw_instance_predictions(instances).save(str(path))

    assert path.stat().st_size > 0
    drawn = cv2.imread(str(path))[:, :, ::-1]
    assert drawn.shape == (64, 96, 3)
    changed = np.any(drawn != 128, axis=2)
    # The masks are tinted in different colours; pixels away from the boxes and their labels (written
    # just above each box's top-left corner) are untouched.
    assert changed[12:28, 12:28].all() and changed[42:58, 52:88].all()
    assert not np.array_equal(drawn[20, 20], drawn[50, 70])
    assert not changed[12:, 32:46].any() and not changed[32:37, :46].any()


def test_dataset_dict_with_polygons_and_rle(tmp_path):
    import pycocotools.mask as mask_util

    rle_mask = np.zeros((64, 96), dtype=np.uint8)
    rle_mask[40:60, 60:90] = 1
    rle = mask_util.encode(np.asfortranarray(rle_mask))
    record = {"annotations": [
        {"bbox": [5, 5, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
         "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]},
        {"bbox": [60, 40, 90, 60], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "segmentation": rle},
    ]}
    out = Visualizer(gray_image()).draw_dataset_dict(record).get_image()
    changed = np.any(out != 128, axis=2)
    assert changed[8:22, 8:22].all() and changed[43:57, 63:87].all() and not changed[30:36, 30:55].any()


def test_overlay_accepts_structures_scale_and_grayscale():
    polys = PolygonMasks([[np.array([2.0, 2.0, 10.0, 2.0, 10.0, 10.0])]])
    bits = BitMasks(torch.zeros(1, 20, 30, dtype=torch.bool))
    vis = Visualizer(np.zeros((20, 30), dtype=np.uint8), scale=2.0)
    out = vis.overlay_instances(masks=polys, labels=["x"]).get_image()
    assert out.shape == (40, 60, 3)
    changed = out.any(axis=2)
    # the triangle (2,2) (10,2) (10,10) at scale 2 is tinted: pixels with x > y inside it, none below
    # its diagonal or right of it (its label is written above it)
    assert changed[8:12, 14:19].all() and not changed[12:, :10].any() and not changed[:, 22:].any()
    bits.tensor[0, 12:18, 20:28] = True
    changed = Visualizer(np.zeros((20, 30), dtype=np.uint8), scale=2.0).overlay_instances(masks=bits).get_image().any(axis=2)
    assert changed[24:36, 40:56].all() and changed.sum() == 12 * 16  # exactly the scaled mask
    with pytest.raises(ValueError, match="different numbers"):
        vis.overlay_instances(boxes=np.zeros((2, 4)), labels=["one"])


def test_save_to_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        Visualizer(gray_image()).output.save(str(tmp_path / "nowhere" / "x.png"))


def test_instance_colors_are_distinct_and_stable():
    colors = instance_colors(12)
    assert colors.shape == (12, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 12
    np.testing.assert_array_equal(instance_colors(3, offset=4), colors[4:7])


def _green(pixel):
    """A pixel of a green line, anti-aliased: mostly green, nothing else."""
    return pixel[1] > 150 and pixel[0] == pixel[2] == 0


def test_keypoints_drawn_with_their_connection_rules():
    metadata = Metadata(name="kp", keypoint_names=["a", "b", "c"], keypoint_connection_rules=[("a", "b", (0, 255, 0)), ("b", "c", (0, 0, 255))])
    black = np.zeros((60, 80, 3), dtype=np.uint8)
    # a and b scored, c below the threshold: the a-b line is drawn, the b-c one is not
    keypoints = torch.tensor([[[10.0, 30.0, 0.9], [70.0, 30.0, 0.8], [40.0, 50.0, 0.01]]])
    predictions = Instances((60, 80), pred_boxes=Boxes(torch.tensor([[5.0, 5.0, 75.0, 55.0]])),
                            scores=torch.tensor([0.9]), pred_classes=torch.tensor([0]), pred_keypoints=keypoints)
    out = Visualizer(black, metadata).draw_instance_predictions(predictions).get_image()
    assert _green(out[30, 40])  # on the a-b line, half way
    assert tuple(out[30, 10]) == (255, 0, 0) and tuple(out[30, 70]) == (255, 0, 0)  # the dots
    assert not out[50, 40].any() and not out[40, 55].any()  # no dot at c, no b-c line

    # a dataset dict's labelled keypoints (visibility 1 or 2), at half scale
    record = {"annotations": [{"bbox": [5, 5, 70, 50], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                               "keypoints": [10, 30, 2, 70, 30, 1, 40, 50, 0]}]}
    out = Visualizer(black, metadata, scale=0.5).draw_dataset_dict(record).get_image()
    assert _green(out[15, 20]) and tuple(out[15, 5]) == (255, 0, 0) and not out[25, 20].any()


def test_sem_seg_and_panoptic_seg_are_tinted_by_class_and_named():
    # Labels are written at the segments' top-left corners; the pixels checked are away from them.
    image = np.zeros((40, 120, 3), dtype=np.uint8)
    sem_seg = np.zeros((40, 120), dtype=np.int64)
    sem_seg[20:36, 40:60] = 1
    sem_seg[39, 119] = 255  # an ignore label: not drawn
    meta = Metadata(name="vis_sem_seg_test", stuff_classes=["sky", "grass"], stuff_colors=[[0, 0, 200], [0, 200, 0]],
                    thing_classes=["cat"])
    drawn = Visualizer(image, meta).draw_sem_seg(sem_seg, alpha=1.0).get_image()
    assert tuple(drawn[30, 50]) == (0, 200, 0) and tuple(drawn[38, 100]) == (0, 0, 200)
    assert not drawn[39, 119].any()
    panoptic = np.zeros((40, 120), dtype=np.int32)
    panoptic[20:36, 40:60] = 1
    panoptic[36:, :] = 2
    segments = [{"id": 1, "isthing": True, "category_id": 0, "score": 0.9},
                {"id": 2, "isthing": False, "category_id": 1, "area": 480}]
    drawn = Visualizer(image, meta).draw_panoptic_seg(panoptic, segments, alpha=1.0).get_image()
    assert tuple(drawn[38, 100]) == (0, 200, 0)  # stuff in its stuff colour
    assert tuple(drawn[30, 50]) == tuple(instance_colors(1)[0]) and not drawn[5, 100].any()


def test_segmentation_mode_tints_each_class_in_its_metadata_colour():
    meta = Metadata("vis_seg_mode", thing_classes=["a", "b"], thing_colors=[[200, 0, 0], [0, 0, 220]])
    background = np.full((64, 128, 3), 100, dtype=np.uint8)
    objects = [(0, 4, 24, 36, 60), (1, 44, 24, 80, 60), (0, 88, 24, 124, 60)]
    tinted = lambda color: tuple((np.full(3, 100) * 0.2 + np.asarray(color) * 0.8).round().astype(np.uint8))
    inside = lambda image: [tuple(image[50, x]) for x in (20, 62, 106)]  # below the labels

    exact = Visualizer(background, meta, instance_mode=ColorMode.SEGMENTATION).draw_instance_predictions(
        boxed_instances(objects, 64, 128), jittering=False).get_image()
    assert inside(exact) == [tinted([200, 0, 0]), tinted([0, 0, 220]), tinted([200, 0, 0])]
    # jittered: the second instance of class "a" is a lighter shade (20% towards white)
    jittered = Visualizer(background, meta, instance_mode=ColorMode.SEGMENTATION).draw_instance_predictions(
        boxed_instances(objects, 64, 128)).get_image()
    assert inside(jittered) == [tinted([200, 0, 0]), tinted([0, 0, 220]), tinted([211, 51, 51])]
    # the default mode: a colour per instance, not per class
    image_mode = Visualizer(background, meta).draw_instance_predictions(boxed_instances(objects, 64, 128)).get_image()
    assert len(set(inside(image_mode))) == 3


def test_image_bw_mode_keeps_the_colours_of_masked_pixels_only():
    image = np.random.default_rng(0).integers(0, 256, size=(64, 128, 3), dtype=np.uint8)
    drawn = Visualizer(image, instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(
        boxed_instances([(0, 10, 24, 40, 60)], 64, 128)).get_image().astype(np.float64)
    color = instance_colors(1)[0].astype(np.float64)
    masked = image[40:58, 12:38].astype(np.float64)
    np.testing.assert_allclose(drawn[40:58, 12:38], masked * 0.7 + color * 0.3, atol=1)
    # right of the box nothing is drawn: the luminance of the image in the three channels
    outside = image[:, 50:].astype(np.float64)
    luminance = outside @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(drawn[:, 50:], np.repeat(luminance[:, :, None], 3, axis=2), atol=1)
    # without masks the whole image is grey
    boxes_only = Instances((64, 128), pred_boxes=Boxes(torch.tensor([[10.0, 24.0, 40.0, 60.0]])))
    grey = Visualizer(image, instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(boxes_only).get_image()
    assert (grey[:, 50:, 0] == grey[:, 50:, 1]).all() and (grey[40:58, 12:38, 0] == grey[40:58, 12:38, 2]).all()


def test_image_bw_panoptic_and_bad_modes():
    image = np.random.default_rng(1).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    panoptic = np.zeros((40, 60), dtype=np.int32)
    panoptic[20:36, 10:30] = 1
    drawn = Visualizer(image, Metadata("vis_bw_pan", thing_classes=["cat"]), instance_mode=ColorMode.IMAGE_BW) \
        .draw_panoptic_seg_predictions(panoptic, [{"id": 1, "isthing": True, "category_id": 0}], alpha=0.0).get_image()
    assert (drawn[22:34, 12:28] == image[22:34, 12:28]).all()  # the segment's own colours (alpha 0: no tint)
    assert (drawn[:, 40:, 0] == drawn[:, 40:, 1]).all() and not (image[:, 40:, 0] == image[:, 40:, 1]).all()
    with pytest.raises(ValueError, match="instance_mode must be a ColorMode .IMAGE, SEGMENTATION, IMAGE_BW., got 1"):
        Visualizer(image, instance_mode=1)
