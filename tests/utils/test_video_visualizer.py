"""VideoVisualizer: an instance keeps its colour across frames (matched by IoU to the previous
frames' instances of its class), in instance predictions and panoptic segments."""
import numpy as np
import pytest

from d2mask.data.catalog import Metadata
from d2mask.utils.colormap import instance_colors
from d2mask.utils.video_visualizer import VideoVisualizer
from d2mask.utils.visualizer import ColorMode
from tests.common import boxed_instances

H, W = 64, 128
META = Metadata("video_test", thing_classes=["a", "b"], stuff_classes=["sky"], stuff_colors=[[0, 0, 250]])


def _frame():
    return np.full((H, W, 3), 100, dtype=np.uint8)


def test_a_moved_instance_keeps_its_colour_and_a_missed_one_gets_it_back():
    video = VideoVisualizer(META)
    a, b = (0, 20, 24, 50, 60), (1, 80, 24, 120, 60)
    moved_a = (0, 24, 24, 54, 60)  # 4 pixels to the right: box IoU 26/34 with a
    first = video.draw_instance_predictions(_frame(), boxed_instances([a, b], H, W)).get_image()
    # listed in the other order: colours by position would swap them
    second = video.draw_instance_predictions(_frame(), boxed_instances([b, moved_a], H, W)).get_image()
    third = video.draw_instance_predictions(_frame(), boxed_instances([b], H, W)).get_image()  # a missed
    new = (1, 0, 24, 14, 60)
    fourth = video.draw_instance_predictions(_frame(), boxed_instances([new, moved_a, b], H, W)).get_image()

    color_a, color_b = (tuple(first[50, x]) for x in (35, 100))  # inside the masks, below the labels
    assert color_a != color_b
    assert tuple(second[50, 39]) == color_a and tuple(second[50, 100]) == color_b
    assert tuple(third[50, 100]) == color_b and tuple(third[50, 39]) == (100, 100, 100)
    assert tuple(fourth[50, 39]) == color_a and tuple(fourth[50, 100]) == color_b
    # the new instance (of b's class, overlapping nothing) gets a colour of its own: the third of the sequence
    expected_new = tuple((np.full(3, 100) * 0.5 + instance_colors(1, offset=2)[0] * 0.5).round().astype(np.uint8))
    assert tuple(fourth[50, 7]) == expected_new


def test_an_instance_of_another_class_does_not_take_the_colour():
    video = VideoVisualizer(META)
    first = video.draw_instance_predictions(_frame(), boxed_instances([(0, 20, 24, 50, 60)], H, W)).get_image()
    second = video.draw_instance_predictions(_frame(), boxed_instances([(1, 20, 24, 50, 60)], H, W)).get_image()
    assert tuple(first[50, 35]) != tuple(second[50, 35])


def test_panoptic_thing_segments_keep_their_colour_and_stuff_its_class_colour():
    video = VideoVisualizer(META)
    drawings = []
    for shift in (0, 3):
        panoptic = np.zeros((H, W), dtype=np.int32)
        panoptic[:10] = 3  # sky
        panoptic[24:60, 80 + shift:120 + shift // 2] = 1
        panoptic[24:60, 20 + shift:50 + shift] = 2
        # listed in another order in each frame
        segments = [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": True, "category_id": 0},
                    {"id": 3, "isthing": False, "category_id": 0}]
        drawings.append(video.draw_panoptic_seg(_frame(), panoptic, segments if shift else segments[::-1],
                                                alpha=1.0).get_image())
    assert tuple(drawings[0][50, 35]) == tuple(drawings[1][50, 38]) != tuple(drawings[0][50, 100])
    assert tuple(drawings[0][50, 100]) == tuple(drawings[1][50, 103])
    assert tuple(drawings[0][8, 60]) == tuple(drawings[1][8, 60]) == (0, 0, 250)


def test_segmentation_mode_colours_by_class_and_bad_modes_are_refused():
    meta = Metadata("video_seg_test", thing_classes=["a", "b"], thing_colors=[[200, 0, 0], [0, 200, 0]])
    drawing = VideoVisualizer(meta, ColorMode.SEGMENTATION).draw_instance_predictions(
        _frame(), boxed_instances([(1, 20, 24, 50, 60), (1, 80, 24, 120, 60)], H, W)).get_image()
    expected = tuple((np.full(3, 100) * 0.2 + np.array([0, 200, 0]) * 0.8).round().astype(np.uint8))
    assert tuple(drawing[50, 35]) == tuple(drawing[50, 100]) == expected
    with pytest.raises(ValueError, match="instance_mode must be a ColorMode"):
        VideoVisualizer(meta, "IMAGE")
