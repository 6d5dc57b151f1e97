import numpy as np
import pytest

from d2mask.data import transforms as T
from d2mask.structures import BitMasks, PolygonMasks, polygons_to_bitmask


def square_image():
    """A 20 x 30 (h x w) image with a white square covering pixels x in [3, 9), y in [4, 10)."""
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[4:10, 3:9] = 255
    polygon = np.array([[3, 4], [9, 4], [9, 10], [3, 10]], dtype=np.float64)
    return image, np.array([[3.0, 4.0, 9.0, 10.0]]), polygon


def test_horizontal_flip_keeps_box_polygon_and_bitmap_consistent():
    image, box, polygon = square_image()
    tfm = T.HFlipTransform(30)
    flipped = tfm.apply_image(image)
    new_box = tfm.apply_box(box)
    np.testing.assert_allclose(new_box, [[21.0, 4.0, 27.0, 10.0]])  # 30 - 9, 30 - 3
    (new_polygon,) = tfm.apply_polygons([polygon])
    from_polygon = polygons_to_bitmask([new_polygon.reshape(-1)], 20, 30)
    from_bitmap = tfm.apply_segmentation(image[:, :, 0] > 0)
    from_image = flipped[:, :, 0] > 0
    np.testing.assert_array_equal(from_polygon, from_image)
    np.testing.assert_array_equal(from_bitmap, from_image)
    masks_box = BitMasks(from_bitmap[None]).get_bounding_boxes().tensor.numpy()
    np.testing.assert_allclose(masks_box, new_box)
    np.testing.assert_allclose(PolygonMasks([[new_polygon.reshape(-1)]]).get_bounding_boxes().tensor, new_box)


def test_vertical_flip_of_coordinates():
    np.testing.assert_allclose(T.VFlipTransform(20).apply_box(np.array([[3, 4, 9, 10]])), [[3, 10, 9, 16]])


@pytest.mark.parametrize(
    "h, w, size, max_size, expected",
    [
        (480, 640, 800, 1333, (800, 1067)),  # 640 * 800 / 480 = 1066.7
        (640, 480, 800, 1333, (1067, 800)),
        (100, 1000, 200, 1333, (133, 1333)),  # 2000 would exceed 1333: the long side decides
        (30, 40, 30, 1333, (30, 40)),
    ],
)
def test_resize_shortest_edge_output_shape(h, w, size, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(h, w, size, max_size) == expected
    image = np.zeros((h, w, 3), dtype=np.uint8)
    out, _ = T.apply_augmentations([T.ResizeShortestEdge(size, max_size, "choice")], image)
    assert out.shape == (*expected, 3)


def test_resize_shortest_edge_sampling_styles():
    np.random.seed(0)
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    choice = T.ResizeShortestEdge((20, 40), 1000, "choice")
    assert {choice.get_transform(image).new_h for _ in range(30)} == {20, 40}
    ranged = T.ResizeShortestEdge((20, 24), 1000, "range")
    assert {ranged.get_transform(image).new_h for _ in range(60)} == {20, 21, 22, 23, 24}
    assert isinstance(T.ResizeShortestEdge(0, 1000, "choice").get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge(20, 100, "uniform")


def test_resize_scales_coordinates_and_keeps_grayscale_channel():
    tfm = T.ResizeTransform(20, 30, 40, 90)
    np.testing.assert_allclose(tfm.apply_box(np.array([[3, 4, 9, 10]])), [[9, 8, 27, 20]])
    assert tfm.apply_image(np.zeros((20, 30, 1), dtype=np.uint8)).shape == (40, 90, 1)
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:10, 3:9] = True
    resized = tfm.apply_segmentation(mask)
    assert resized.dtype == bool and resized.sum() == 6 * 2 * 6 * 3


def test_inverse_of_resize_and_flip_maps_boxes_back():
    # 20 x 30 -> 40 x 90 -> mirrored in width 90: the box [3, 4, 9, 10] becomes [63, 8, 81, 20]
    tfm = T.TransformList([T.NoOpTransform(), T.ResizeTransform(20, 30, 40, 90), T.HFlipTransform(90)])
    np.testing.assert_allclose(tfm.apply_box(np.array([[3, 4, 9, 10]])), [[63, 8, 81, 20]])
    inverse = tfm.inverse()
    np.testing.assert_allclose(inverse.apply_box(np.array([[63, 8, 81, 20]])), [[3, 4, 9, 10]])
    assert inverse.apply_image(np.zeros((40, 90, 3), dtype=np.uint8)).shape == (20, 30, 3)
    np.testing.assert_allclose(T.VFlipTransform(20).inverse().apply_box(np.array([[3, 10, 9, 16]])), [[3, 4, 9, 10]])
    with pytest.raises(NotImplementedError, match="CropTransform has no inverse"):
        T.CropTransform(0, 0, 5, 5).inverse()


def test_crop_clips_polygons_to_the_window():
    crop = T.CropTransform(5, 5, 10, 10)
    big_square = np.array([[0, 0], [20, 0], [20, 20], [0, 20]], dtype=np.float64)
    (clipped,) = crop.apply_polygons([big_square])
    np.testing.assert_array_equal(polygons_to_bitmask([clipped.reshape(-1)], 10, 10), np.ones((10, 10), bool))
    # An L shape (concave) half inside the window: x in [0, 10], y in [0, 10] minus the top-right quarter.
    ell = np.array([[0, 0], [5, 0], [5, 5], [10, 5], [10, 10], [0, 10]], dtype=np.float64) + 5
    (clipped,) = T.CropTransform(10, 5, 10, 10).apply_polygons([ell])  # keeps x in [10, 20)
    inside = polygons_to_bitmask([clipped.reshape(-1)], 10, 10)
    assert inside.sum() == 5 * 5  # the lower-right quarter of the L
    assert T.CropTransform(30, 30, 5, 5).apply_polygons([big_square]) == []


@pytest.mark.parametrize(
    "crop_type, crop_size, check",
    [
        ("relative", (0.5, 0.25), lambda h, w: (h, w) == (25, 25)),
        ("relative_range", (0.5, 0.5), lambda h, w: 25 <= h <= 50 and 50 <= w <= 100),
        ("absolute", (30, 200), lambda h, w: (h, w) == (30, 100)),
        ("absolute_range", (10, 40), lambda h, w: 10 <= h <= 40 and 10 <= w <= 40),
    ],
)
def test_random_crop_sizes(crop_type, crop_size, check):
    np.random.seed(1)
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    aug = T.RandomCrop(crop_type, crop_size)
    for _ in range(10):
        tfm = aug.get_transform(image)
        assert check(tfm.h, tfm.w)
        assert 0 <= tfm.x0 <= 100 - tfm.w and 0 <= tfm.y0 <= 50 - tfm.h


def _crop_x0s(aug, sem_seg, seeds=range(20)):
    """The left edge of the window `aug` keeps, for each seed, applied through an AugInput."""
    image = np.zeros((*sem_seg.shape, 3), dtype=np.uint8)
    x0s = []
    for seed in seeds:
        np.random.seed(seed)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        (tfm,) = T.AugmentationList([aug])(aug_input).transforms
        assert (tfm.w, tfm.h, tfm.y0) == (4, 4, 0)
        np.testing.assert_array_equal(aug_input.sem_seg, sem_seg[:, tfm.x0 : tfm.x0 + 4])  # cropped alike
        x0s.append(tfm.x0)
    return set(x0s)


def test_category_area_constraint_keeps_a_window_no_class_dominates():
    # 4 x 5 labels; a 4 x 4 window starts at x0 0 or 1. With 0.8: x0 = 0 sees class 1 on 4 of 16 pixels
    # and class 0 on 12 (12 < 0.8 * 16: kept); x0 = 1 sees 12 pixels of class 0 and 4 of label 255.
    sem_seg = np.array([[1, 0, 0, 0, 255]] * 4, dtype=np.uint8)
    constrained = T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), 0.8, ignored_category=255)
    assert _crop_x0s(constrained, sem_seg) == {0}  # x0 = 1 counts one class only: refused
    assert _crop_x0s(T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), 0.8), sem_seg) == {0, 1}
    # one class over 12 of 16 pixels is too many for 0.7: no window is kept, the last drawn is
    assert _crop_x0s(T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), 0.7), sem_seg) == {0, 1}


def test_category_area_constraint_of_one_is_a_random_crop_and_needs_no_labels():
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4))
    aug_input = T.AugInput(np.zeros((6, 6, 3), dtype=np.uint8))
    aug(aug_input)
    assert aug_input.image.shape == (4, 4, 3)
    with pytest.raises(ValueError, match="needs the label map"):
        T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), 0.5)(aug_input)
    with pytest.raises(ValueError, match="single_category_max_area must be > 0, got 0"):
        T.RandomCrop_CategoryAreaConstraint("absolute", (4, 4), 0)


def test_random_flip_probability_and_direction():
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    assert isinstance(T.RandomFlip(1.0).get_transform(image), T.HFlipTransform)
    assert isinstance(T.RandomFlip(1.0, horizontal=False, vertical=True).get_transform(image), T.VFlipTransform)
    assert isinstance(T.RandomFlip(0.0).get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError):
        T.RandomFlip(horizontal=True, vertical=True)


def test_aug_input_transforms_boxes_with_the_image():
    image, box, _ = square_image()
    aug_input = T.AugInput(image, boxes=box)
    transforms = T.AugmentationList([T.RandomFlip(1.0), T.ResizeShortestEdge(40, 1000, "choice")])(aug_input)
    assert aug_input.image.shape == (40, 60, 3)
    np.testing.assert_allclose(aug_input.boxes, [[42.0, 8.0, 54.0, 20.0]])
    np.testing.assert_allclose(transforms.apply_box(box), aug_input.boxes)
    assert len(transforms) == 2


def test_random_apply_of_a_resize_then_crop_list_as_mvitv2_configs_use_it():
    """Detectron2's MViTv2 configs wrap ResizeShortestEdge + an absolute_range RandomCrop in
    RandomApply(tfm_or_aug=AugmentationList(...), prob=0.5)."""
    resize_crop = T.AugmentationList([T.ResizeShortestEdge([40], max_size=1000), T.RandomCrop("absolute_range", (10, 20))])
    boxes = np.array([[2.0, 2.0, 8.0, 6.0]])

    aug_input = T.AugInput(np.zeros((20, 30, 3), np.uint8), boxes=boxes.copy())
    tfm = T.RandomApply(tfm_or_aug=resize_crop, prob=1.0)(aug_input)
    assert len(tfm.transforms) == 2 and 10 <= aug_input.image.shape[0] <= 20 and 10 <= aug_input.image.shape[1] <= 20

    aug_input = T.AugInput(np.zeros((20, 30, 3), np.uint8), boxes=boxes.copy())
    assert isinstance(T.RandomApply(resize_crop, prob=0.0)(aug_input), T.NoOpTransform)
    assert aug_input.image.shape == (20, 30, 3) and (aug_input.boxes == boxes).all()

    # a fixed transform, applied in about `prob` of the draws
    aug_input = T.AugInput(np.zeros((20, 30, 3), np.uint8), boxes=boxes.copy())
    T.RandomApply(T.HFlipTransform(30), prob=1.0)(aug_input)
    assert aug_input.boxes.tolist() == [[22.0, 2.0, 28.0, 6.0]]
    np.random.seed(0)
    flips = [isinstance(T.RandomApply(T.HFlipTransform(30), 0.3).get_transform(None), T.HFlipTransform) for _ in range(1000)]
    assert 250 < sum(flips) < 350
    with pytest.raises(ValueError, match="prob must be in"):
        T.RandomApply(resize_crop, prob=1.5)


def test_augmentation_list_takes_detectron2s_keyword():
    """Detectron2's configs build it as L(T.AugmentationList)(augs=[...])."""
    from d2mask.config import LazyCall as L, instantiate

    augs = instantiate(L(T.AugmentationList)(augs=[L(T.RandomFlip)(prob=1.0)]))
    aug_input = T.AugInput(np.zeros((4, 6, 3), np.uint8), boxes=np.array([[0.0, 0.0, 2.0, 2.0]]))
    augs(aug_input)
    assert aug_input.boxes.tolist() == [[4.0, 0.0, 6.0, 2.0]]
