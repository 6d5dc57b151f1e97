"""Metadata of the built-in datasets: class names, dataset ids and colours, written as data so that
a model trained on COCO can be run and drawn (`DefaultPredictor`, demo/demo.py) without its files.
"""
from typing import Any, Dict, List, NamedTuple, Tuple

from ...utils.colormap import instance_colors

__all__ = [
    "CITYSCAPES_LABELS",
    "CityscapesLabel",
    "COCO_CATEGORIES",
    "COCO_PANOPTIC_STUFF_CATEGORIES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "COCO_PERSON_KEYPOINT_NAMES",
    "KEYPOINT_CONNECTION_RULES",
    "PASCAL_VOC_CLASSES",
    "get_builtin_metadata",
]

# COCO's 80 instance categories as (dataset id, name); the ids have gaps (12, 26, 29, ...).
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"),
    (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"),
    (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)

# COCO's 17 person keypoints, in the order of its annotations' "keypoints" lists.
COCO_PERSON_KEYPOINT_NAMES = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)

# The keypoints that trade places when the image is flipped horizontally.
COCO_PERSON_KEYPOINT_FLIP_MAP = tuple(
    (left, "right" + left[len("left"):]) for left in COCO_PERSON_KEYPOINT_NAMES if left.startswith("left_")
)

# Lines the Visualizer draws between keypoints, (name, name, RGB colour): the person's left side in
# warm colours, the right side in cool ones, the lines across the body in between.
_LEFT, _RIGHT, _ACROSS = (255, 140, 40), (40, 160, 255), (200, 80, 220)
KEYPOINT_CONNECTION_RULES = [
    ("nose", "left_eye", _LEFT), ("left_eye", "left_ear", _LEFT),
    ("nose", "right_eye", _RIGHT), ("right_eye", "right_ear", _RIGHT),
    ("left_shoulder", "right_shoulder", _ACROSS), ("left_hip", "right_hip", _ACROSS),
    ("left_shoulder", "left_elbow", _LEFT), ("left_elbow", "left_wrist", _LEFT),
    ("right_shoulder", "right_elbow", _RIGHT), ("right_elbow", "right_wrist", _RIGHT),
    ("left_hip", "left_knee", _LEFT), ("left_knee", "left_ankle", _LEFT),
    ("right_hip", "right_knee", _RIGHT), ("right_knee", "right_ankle", _RIGHT),
]

# COCO panoptic's 53 stuff categories as (dataset id, name), in id order.
COCO_PANOPTIC_STUFF_CATEGORIES = (
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"), (109, "curtain"),
    (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"), (144, "platform"),
    (145, "playingfield"), (147, "railroad"), (148, "river"), (149, "road"), (151, "roof"), (154, "sand"),
    (155, "sea"), (156, "shelf"), (159, "snow"), (161, "stairs"), (166, "tent"), (168, "towel"),
    (171, "wall-brick"), (175, "wall-stone"), (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"),
    (180, "window-blind"), (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"),
    (186, "ceiling-merged"), (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"), (193, "grass-merged"),
    (194, "dirt-merged"), (195, "paper-merged"), (196, "food-other-merged"), (197, "building-other-merged"),
    (198, "rock-merged"), (199, "wall-other-merged"), (200, "rug-merged"),
)

# PASCAL VOC's 20 classes, in the order of their contiguous ids (as in the devkit and Detectron2).
PASCAL_VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)



class CityscapesLabel(NamedTuple):
    """One class of Cityscapes' label definition (cityscapesScripts' helpers/labels.py)."""

    name: str
    id: int  # the value in *_gtFine_labelIds.png; -1: never drawn (license plate)
    train_id: int  # the value in *_gtFine_labelTrainIds.png; 255: not trained on
    category: str
    has_instances: bool  # *_gtFine_instanceIds.png holds id * 1000 + k for its instances
    ignore_in_eval: bool
    color: Tuple[int, int, int]


# Cityscapes' 35 labels. The 19 with ignore_in_eval False are the semantic classes (train ids 0..18),
# and the 8 of those with instances the instance classes, both in this order.
CITYSCAPES_LABELS = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    ("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    ("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    ("static", 4, 255, "void", False, True, (0, 0, 0)),
    ("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    ("ground", 6, 255, "void", False, True, (81, 0, 81)),
    ("road", 7, 0, "flat", False, False, (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    ("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    ("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    ("building", 11, 2, "construction", False, False, (70, 70, 70)),
    ("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    ("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    ("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    ("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    ("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    ("pole", 17, 5, "object", False, False, (153, 153, 153)),
    ("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    ("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    ("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    ("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    ("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    ("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    ("person", 24, 11, "human", True, False, (220, 20, 60)),
    ("rider", 25, 12, "human", True, False, (255, 0, 0)),
    ("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    ("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    ("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    ("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
    ("license plate", -1, -1, "vehicle", False, True, (0, 0, 142)),
))


def _colors(n: int) -> List[List[int]]:
    return instance_colors(n).tolist()


def get_builtin_metadata(dataset_type: str) -> Dict[str, Any]:
    """The metadata shared by all splits of a built-in dataset family ("coco", "coco_person",
    "coco_panoptic_separated", "coco_panoptic_standard", "pascal_voc", "cityscapes" or
    "cityscapes_panoptic")."""
    if dataset_type == "coco":
        return dict(
            thing_classes=[name for _, name in COCO_CATEGORIES],
            thing_dataset_id_to_contiguous_id={dataset_id: i for i, (dataset_id, _) in enumerate(COCO_CATEGORIES)},
            thing_colors=_colors(len(COCO_CATEGORIES)),
        )
    if dataset_type == "coco_person":
        return dict(
            thing_classes=["person"],
            thing_dataset_id_to_contiguous_id={1: 0},
            thing_colors=_colors(1),
            keypoint_names=list(COCO_PERSON_KEYPOINT_NAMES),
            keypoint_flip_map=[list(pair) for pair in COCO_PERSON_KEYPOINT_FLIP_MAP],
            keypoint_connection_rules=[list(rule) for rule in KEYPOINT_CONNECTION_RULES],
        )
    if dataset_type == "coco_panoptic_separated":
        # Semantic class 0 is every thing pixel (the label maps of Detectron2's prepare_panoptic_fpn.py);
        # the stuff classes follow in id order, named without COCO's "-other" / "-merged" suffixes.
        stuff_names = [name.replace("-other", "").replace("-merged", "") for _, name in COCO_PANOPTIC_STUFF_CATEGORIES]
        return dict(
            get_builtin_metadata("coco"),
            stuff_classes=["things"] + stuff_names,
            stuff_dataset_id_to_contiguous_id={0: 0, **{i: c + 1 for c, (i, _) in enumerate(COCO_PANOPTIC_STUFF_CATEGORIES)}},
            stuff_colors=_colors(1 + len(COCO_PANOPTIC_STUFF_CATEGORIES)),
        )
    if dataset_type == "coco_panoptic_standard":
        # One contiguous id space over all 133 categories, things (ids 1-90) before stuff (ids 92-200);
        # thing_ and stuff_classes both list all names, as Detectron2's Visualizer expects.
        categories = COCO_CATEGORIES + COCO_PANOPTIC_STUFF_CATEGORIES
        names, colors = [name for _, name in categories], _colors(len(categories))
        return dict(
            thing_classes=names, stuff_classes=list(names), thing_colors=colors, stuff_colors=list(colors),
            thing_dataset_id_to_contiguous_id={i: c for c, (i, _) in enumerate(COCO_CATEGORIES)},
            stuff_dataset_id_to_contiguous_id={i: c + len(COCO_CATEGORIES) for c, (i, _) in enumerate(COCO_PANOPTIC_STUFF_CATEGORIES)},
        )
    if dataset_type == "pascal_voc":
        return dict(thing_classes=list(PASCAL_VOC_CLASSES), thing_colors=_colors(len(PASCAL_VOC_CLASSES)))
    if dataset_type == "cityscapes":
        stuff = [label for label in CITYSCAPES_LABELS if not label.ignore_in_eval]
        things = [label for label in stuff if label.has_instances]
        return dict(
            thing_classes=[label.name for label in things],
            thing_colors=[list(label.color) for label in things],
            stuff_classes=[label.name for label in stuff],
            stuff_colors=[list(label.color) for label in stuff],
        )
    if dataset_type == "cityscapes_panoptic":
        # Panoptic-DeepLab's: the train id is the contiguous id of all 19 classes, and thing_ and
        # stuff_classes both list all of them, as Detectron2's Visualizer expects.
        classes = [label for label in CITYSCAPES_LABELS if not label.ignore_in_eval]
        names, colors = [label.name for label in classes], [list(label.color) for label in classes]
        return dict(
            thing_classes=names, stuff_classes=list(names), thing_colors=colors, stuff_colors=list(colors),
            thing_dataset_id_to_contiguous_id={label.id: label.train_id for label in classes if label.has_instances},
            stuff_dataset_id_to_contiguous_id={label.id: label.train_id for label in classes if not label.has_instances},
        )
    raise KeyError(f"No built-in metadata for dataset type '{dataset_type}'; known: coco, coco_person, "
                   f"coco_panoptic_separated, coco_panoptic_standard, pascal_voc, cityscapes, cityscapes_panoptic")


# Detectron2's name for it, imported by its projects (PointSup's COCO-with-points registration) from
# here and from `d2mask.data.datasets.builtin`.
_get_builtin_metadata = get_builtin_metadata
