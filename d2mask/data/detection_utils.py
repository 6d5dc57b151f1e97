"""Building blocks of dataset mappers: reading images, transforming annotations, turning them into
`Instances`, and the augmentations the INPUT.* config keys ask for."""
import io
import warnings
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from ..structures import BitMasks, Boxes, BoxMode, Instances, Keypoints, PolygonMasks, polygons_to_bitmask
from . import transforms as T
from ..config import ConfigError
from .catalog import DatasetCatalog, DatasetError, MetadataCatalog

__all__ = [
    "SUPPORTED_IMAGE_FORMATS",
    "read_image",
    "read_sem_seg",
    "convert_image_to_rgb",
    "check_image_size",
    "transform_instance_annotations",
    "transform_keypoint_annotations",
    "create_keypoint_hflip_indices",
    "annotations_to_instances",
    "filter_empty_instances",
    "build_augmentation",
    "check_metadata_consistency",
    "category_image_counts",
    "get_fed_loss_cls_weights",
]

SUPPORTED_IMAGE_FORMATS = ("BGR", "RGB", "L")
# Default of INPUT.MAX_IMAGE_PIXELS (the same number is declared in d2mask/config/defaults/data.py).
MAX_IMAGE_PIXELS = 100_000_000


def read_image(file_name: str, format: str = "BGR", *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Reads an image file with OpenCV (EXIF orientation applied), after checking the size its header
    declares: a compressed image of a few kilobytes can decode to gigabytes.

    Args:
        file_name: path of the image.
        format: "BGR", "RGB" or "L" (grayscale).
        max_pixels: the largest width x height read (INPUT.MAX_IMAGE_PIXELS).

    Returns:
        `ndarray[H, W, 3]` uint8 in the requested channel order, or `ndarray[H, W, 1]` for "L".

    Raises:
        FileNotFoundError: no such file.
        DatasetError: naming the file: more than `max_pixels` pixels (nothing is decoded), a format
            whose size cannot be read from its header, or a file that does not decode.
    """
    if format not in SUPPORTED_IMAGE_FORMATS:
        raise ConfigError(f"Unsupported image format {format!r}; INPUT.FORMAT must be one of {SUPPORTED_IMAGE_FORMATS}")
    encoded = _read_bytes(file_name, "Image")
    _check_pixels(file_name, encoded, max_pixels)
    flags = cv2.IMREAD_GRAYSCALE if format == "L" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), flags)
    if image is None:
        raise DatasetError(f"Cannot decode image file {file_name}: not an image format OpenCV can read, or corrupt")
    if format == "L":
        return image[:, :, None]
    return image[:, :, ::-1].copy() if format == "RGB" else image


def read_sem_seg(file_name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Reads a semantic-segmentation label map: a single-channel image (8- or 16-bit grayscale, or
    a palette image, whose pixel values are the palette indices) of one class id per pixel.

    Args:
        file_name: path of the label map (a dataset dict's "sem_seg_file_name").
        max_pixels: the largest width x height read (INPUT.MAX_IMAGE_PIXELS).

    Returns:
        `ndarray[H, W]` of integer class ids.

    Raises:
        FileNotFoundError: no such file.
        DatasetError: naming the file: too many pixels, not decodable, or more than one channel.
    """
    encoded = _read_bytes(file_name, "Label map")
    _check_pixels(file_name, encoded, max_pixels)
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            mode = image.mode
            labels = np.asarray(image)
    except Exception:  # Pillow raises many types for files it cannot decode
        raise DatasetError(f"Cannot decode label map {file_name}: not an image format Pillow can read, or corrupt") from None
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"Label map {file_name} is a {mode} image of shape {labels.shape}; a semantic-segmentation label "
            f"map must have one integer channel (grayscale L, I;16 or palette P) holding a class id per pixel"
        )
    return labels


def _read_bytes(file_name: str, what: str) -> bytes:
    """The content of the file `file_name`, a `what` ("Image", ...), with one-line errors."""
    try:
        with open(file_name, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {file_name}") from None
    except IsADirectoryError:
        raise DatasetError(f"{what} file {file_name} is a directory, not an image") from None
    except PermissionError:
        raise DatasetError(f"{what} file {file_name} cannot be read by this user (permission denied)") from None


def _check_pixels(file_name: str, encoded: bytes, max_pixels: int) -> None:
    """Refuses an image whose header declares more than `max_pixels` pixels; only the header is read
    (by Pillow, which identifies every format a detection dataset uses)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours
            with Image.open(io.BytesIO(encoded)) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own limit, which hides the size
        pillow_limit = 2 * Image.MAX_IMAGE_PIXELS
        hint = (f"more than INPUT.MAX_IMAGE_PIXELS = {max_pixels}" if max_pixels < pillow_limit
                else "more than Pillow reads (2 x PIL.Image.MAX_IMAGE_PIXELS; raise it to read such images)")
        raise DatasetError(f"Image {file_name} declares more than {pillow_limit} pixels, {hint}; it was not decoded") from None
    except Exception:  # Pillow raises many types for files it cannot parse
        raise DatasetError(
            f"Cannot decode image file {file_name}: not an image format whose size can be read from its header "
            f"(JPEG, PNG, BMP, TIFF, WebP, ...), or corrupt"
        ) from None
    if width * height > max_pixels:
        raise DatasetError(
            f"Image {file_name} is {width}x{height} (width x height), more than INPUT.MAX_IMAGE_PIXELS = "
            f"{max_pixels} pixels; it was not decoded"
        )


def convert_image_to_rgb(image: np.ndarray, format: str) -> np.ndarray:
    """An image in `format` ("BGR", "RGB" or "L") as RGB `ndarray[H, W, 3]`, e.g. to draw a model input."""
    if format not in SUPPORTED_IMAGE_FORMATS:
        raise ValueError(f"Unsupported image format {format!r}; expected one of {SUPPORTED_IMAGE_FORMATS}")
    if format == "L":
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return image[:, :, ::-1] if format == "BGR" else image


def check_image_size(dataset_dict: Dict[str, Any], image: np.ndarray) -> None:
    """Checks that an image has the size its dataset dict claims; fills the size in if absent."""
    actual = tuple(image.shape[:2])
    if "height" in dataset_dict or "width" in dataset_dict:
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if expected != actual:
            raise DatasetError(
                f"Image {dataset_dict.get('file_name', '<unknown file>')} is {actual[1]}x{actual[0]} (width x height) "
                f"but its annotation says {expected[1]}x{expected[0]}; the annotations do not belong to this image "
                f"(or it was resized after annotation)"
            )
    dataset_dict["height"], dataset_dict["width"] = actual


def transform_instance_annotations(
    annotation: Dict[str, Any],
    transforms: T.TransformList,
    image_size: Tuple[int, int],
    *,
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Applies `transforms` to one annotation's box, segmentation and keypoints, in place.

    Args:
        annotation: one instance's dict ("bbox", "bbox_mode", optional "segmentation" and "keypoints").
        transforms: the transforms applied to the image.
        image_size: (h, w) of the transformed image; the box is clipped to it.
        keypoint_hflip_indices: see `transform_keypoint_annotations`.

    Returns:
        The annotation, with "bbox" in XYXY_ABS and polygons as flat arrays; an RLE becomes a
        bool `ndarray[h, w]`; keypoints become `ndarray[K, 3]`.
    """
    bbox = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.asarray([bbox], dtype=np.float64))[0]
    h, w = image_size
    annotation["bbox"] = np.clip(bbox, 0, [w, h, w, h])
    annotation["bbox_mode"] = BoxMode.XYXY_ABS

    segm = annotation.get("segmentation")
    if isinstance(segm, list):
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]  # flat -> (K, 2)
        annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
    elif isinstance(segm, dict):
        annotation["segmentation"] = transforms.apply_segmentation(_decode_rle(segm))
    elif isinstance(segm, np.ndarray):
        annotation["segmentation"] = transforms.apply_segmentation(segm.astype(bool))
    elif segm is not None:
        raise TypeError(f"Cannot transform a segmentation of type {type(segm).__name__}; expected polygons "
                        f"(list), a COCO RLE (dict) or a bitmask (ndarray)")
    if "keypoints" in annotation:
        annotation["keypoints"] = transform_keypoint_annotations(
            annotation["keypoints"], transforms, image_size, keypoint_hflip_indices
        )
    return annotation


def transform_keypoint_annotations(
    keypoints: Sequence[float],
    transforms: T.TransformList,
    image_size: Tuple[int, int],
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Applies `transforms` to one instance's keypoints, as Detectron2 does.

    Args:
        keypoints: K * 3 numbers (x, y, visibility), COCO's flat form.
        transforms: the transforms applied to the image.
        image_size: (h, w) of the transformed image; keypoints moved outside it become unlabelled.
        keypoint_hflip_indices: `ndarray[K]`, the keypoint each becomes under a horizontal flip (left
            eye <-> right eye); needed when `transforms` flip horizontally an odd number of times.

    Returns:
        `ndarray[K, 3]`; unlabelled keypoints (visibility 0) are all zeros, COCO's convention.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)  # (K*3,) -> (K, 3)
    xy = transforms.apply_coords(keypoints[:, :2])
    h, w = image_size
    inside = ((xy >= 0) & (xy <= np.array([w, h]))).all(axis=1)
    keypoints[:, :2] = xy
    keypoints[~inside, 2] = 0
    steps = transforms.transforms if isinstance(transforms, T.TransformList) else [transforms]
    if sum(isinstance(t, T.HFlipTransform) for t in steps) % 2 == 1:
        if keypoint_hflip_indices is None:
            raise ValueError("transform_keypoint_annotations: the transforms flip the image; pass keypoint_hflip_indices")
        if len(keypoint_hflip_indices) != len(keypoints):
            raise ValueError(
                f"transform_keypoint_annotations: {len(keypoints)} keypoints but {len(keypoint_hflip_indices)} "
                f"keypoint_hflip_indices"
            )
        keypoints = keypoints[np.asarray(keypoint_hflip_indices, dtype=np.int64)]
    keypoints[keypoints[:, 2] == 0] = 0
    return keypoints


def create_keypoint_hflip_indices(dataset_names: Union[str, Sequence[str]]) -> List[int]:
    """The keypoint each keypoint becomes when the image is flipped horizontally, from the datasets'
    metadata `keypoint_names` and `keypoint_flip_map` (pairs of names, e.g. ("left_eye", "right_eye");
    a keypoint in no pair, like the nose, stays itself).

    Args:
        dataset_names: registered datasets, which must agree on both keys.

    Returns:
        J ints, for `transform_instance_annotations(..., keypoint_hflip_indices=)` (a list, so that a
        Python config can hold it).
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    check_metadata_consistency("keypoint_names", names)
    check_metadata_consistency("keypoint_flip_map", names)
    metadata = MetadataCatalog.get(names[0])
    keypoint_names = metadata.get("keypoint_names")
    flip_map = metadata.get("keypoint_flip_map")
    if keypoint_names is None or flip_map is None:
        missing = [k for k, v in (("keypoint_names", keypoint_names), ("keypoint_flip_map", flip_map)) if v is None]
        raise DatasetError(
            f"Dataset '{names[0]}' has no {' or '.join(missing)} in its metadata; a keypoint model "
            f"(MODEL.KEYPOINT_ON) needs both to flip keypoints with the image"
        )
    partner = {}
    for pair in flip_map:
        if len(pair) != 2 or any(name not in keypoint_names for name in pair):
            raise DatasetError(
                f"Dataset '{names[0]}': keypoint_flip_map entry {tuple(pair)!r} is not a pair of its keypoint_names "
                f"{list(keypoint_names)}"
            )
        partner[pair[0]], partner[pair[1]] = pair[1], pair[0]
    index = {name: i for i, name in enumerate(keypoint_names)}
    return [index[partner.get(name, name)] for name in keypoint_names]


def _decode_rle(rle: Dict[str, Any]) -> np.ndarray:
    if isinstance(rle["counts"], list):
        rle = mask_util.frPyObjects(rle, *rle["size"])
    return mask_util.decode(rle).astype(bool)


def annotations_to_instances(
    annos: List[Dict[str, Any]], image_size: Tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Turns (transformed) annotations into the `Instances` a model trains on.

    Args:
        annos: annotations of one image, boxes in any absolute mode.
        image_size: (h, w).
        mask_format: "polygon" (`PolygonMasks`; an image with an RLE or bitmap among its masks gets
            `BitMasks`) or "bitmask" (`BitMasks`). Both accept polygons, RLEs and bitmaps.

    Returns:
        Instances with gt_boxes (`Boxes`), gt_classes (`Tensor[N]` int64) and, when the annotations
        have segmentations, gt_masks; when they have keypoints, gt_keypoints (`Keypoints`).
    """
    boxes = [BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos]
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)
    if annos and "keypoints" in annos[0]:
        keypoints = [np.asarray(obj.get("keypoints", []), dtype=np.float32).reshape(-1, 3) for obj in annos]
        if len({len(k) for k in keypoints}) != 1:
            raise DatasetError(
                f"The annotations of one image have different numbers of keypoints {[len(k) for k in keypoints]}; "
                f"every instance needs one (x, y, visibility) per keypoint name, (0, 0, 0) where unlabelled"
            )
        target.gt_keypoints = Keypoints(np.stack(keypoints))

    with_segm = ["segmentation" in obj for obj in annos]
    if any(with_segm) and not all(with_segm):
        raise DatasetError(f"{with_segm.count(False)} of {len(annos)} annotations of one image have no 'segmentation'; "
                           f"either all of an image's annotations have masks or none")
    if not any(with_segm):
        return target
    segms = [obj["segmentation"] for obj in annos]
    if mask_format not in ("polygon", "bitmask"):
        raise ConfigError(f"Unknown mask format {mask_format!r}; INPUT.MASK_FORMAT must be 'polygon' or 'bitmask'")
    if mask_format == "polygon" and all(isinstance(segm, list) for segm in segms):
        target.gt_masks = PolygonMasks(segms)
    else:
        # An image with an RLE or a bitmap among its masks (COCO marks occluded instances with an
        # RLE) keeps them as they are: its polygons are rasterised, exactly, beside them.
        h, w = image_size
        masks = [_to_bitmask(segm, h, w) for segm in segms]
        tensor = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
        target.gt_masks = BitMasks(tensor)
    return target


def _to_bitmask(segm: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segm, list):
        return polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], height, width)
    mask = _decode_rle(segm) if isinstance(segm, dict) else np.asarray(segm, dtype=bool)
    if mask.shape != (height, width):
        raise DatasetError(f"A mask of size {mask.shape} does not match its image of size {(height, width)}")
    return mask


def filter_empty_instances(
    instances: Instances, by_box: bool = True, by_mask: bool = True, box_threshold: float = 1e-5
) -> Instances:
    """Removes instances whose box is (nearly) empty or whose mask is empty, e.g. after a crop."""
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box:
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty()
    return instances[keep]


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The resize (and, in training, flip) augmentations of INPUT.*. Cropping is added by the mapper,
    since it must come first."""
    if is_train:
        augs: List[T.Augmentation] = [T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )]
        flip = cfg.INPUT.RANDOM_FLIP
        if flip not in ("horizontal", "vertical", "none"):
            raise ConfigError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {flip!r}")
        if flip != "none":
            augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
        return augs
    return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]


def check_metadata_consistency(key: str, dataset_names: Sequence[str]) -> None:
    """Raises if the datasets disagree on metadata `key` (e.g. "thing_classes"); datasets without
    the key are skipped."""
    values = [(name, MetadataCatalog.get(name).get(key)) for name in dataset_names]
    values = [(name, v) for name, v in values if v is not None]
    for name, value in values[1:]:
        if value != values[0][1]:
            raise DatasetError(
                f"Datasets '{values[0][0]}' and '{name}' have different metadata '{key}': {values[0][1]!r:.300} vs "
                f"{value!r:.300}. Datasets trained or evaluated together must agree on it."
            )


def category_image_counts(dataset_dicts: Iterable[Dict[str, Any]]) -> Dict[int, int]:
    """{contiguous category id: number of images with at least one annotation of it}."""
    counts: Dict[int, int] = defaultdict(int)
    for record in dataset_dicts:
        for c in {ann["category_id"] for ann in record.get("annotations", [])}:
            counts[c] += 1
    return dict(counts)


def get_fed_loss_cls_weights(dataset_names: Union[str, Sequence[str]], freq_weight_power: float = 1.0) -> torch.Tensor:
    """`Tensor[K]` float: each class's number of training images to the power `freq_weight_power`,
    the probabilities with which the federated loss draws negative classes.

    The counts are the metadata's `class_image_count` (`[{"id": ..., "image_count": ...}]`, as LVIS's
    json gives and Detectron2's LVIS metadata holds), else counted from the datasets' dicts; K is the
    length of `thing_classes` (or the largest category seen + 1).
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        raise ConfigError("MODEL.ROI_BOX_HEAD.USE_FED_LOSS needs a training set (DATASETS.TRAIN) to count classes in")
    check_metadata_consistency("class_image_count", names)
    meta = MetadataCatalog.get(names[0])
    if meta.get("class_image_count") is not None:
        counts = [c["image_count"] for c in sorted(meta.class_image_count, key=lambda c: c["id"])]
    else:
        per_class = category_image_counts(r for name in names for r in DatasetCatalog.get(name))
        num_classes = max(len(meta.get("thing_classes") or ()), max(per_class, default=-1) + 1)
        counts = [per_class.get(c, 0) for c in range(num_classes)]
    return torch.tensor(counts, dtype=torch.float32) ** freq_weight_power
