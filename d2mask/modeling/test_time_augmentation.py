"""Test-time augmentation (TTA) of R-CNN models: `DatasetMapperTTA` makes resized and flipped copies
of a test image; `GeneralizedRCNNWithTTA` detects on every copy, maps the boxes back to the original
image, merges them with per-class NMS, and gives each merged box the average of the mask
probabilities predicted for it on every copy.

Shape shorthand: `T` augmented copies of one image, `D` detections of one image, `K` classes,
`M` mask side.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from d2mask.config import ConfigError, configurable
from d2mask.data.detection_utils import read_image
from d2mask.data.transforms import (
    HFlipTransform,
    NoOpTransform,
    ResizeShortestEdge,
    ResizeTransform,
    Transform,
    TransformList,
)
from d2mask.structures import Boxes, Instances

from .meta_arch import GeneralizedRCNN, PanopticFPN
from .postprocessing import detector_postprocess
from .roi_heads.fast_rcnn import fast_rcnn_inference_single_image

__all__ = ["DatasetMapperTTA", "GeneralizedRCNNWithTTA", "average_mask_probs"]


class DatasetMapperTTA:
    """Turns one model input into its augmented copies: the image resized to each of `min_sizes`
    and, with `flip`, each of those also mirrored left-right. Every copy carries "transforms", which
    maps the original image ("height" x "width") to the copy, so predictions can be mapped back."""

    @configurable
    def __init__(self, min_sizes: Sequence[int], max_size: int, flip: bool):
        """
        Args:
            min_sizes: shortest-edge lengths to resize the image to.
            max_size: the longest side allowed after resizing.
            flip: also make a horizontally flipped copy at each size.
        """
        sizes = list(min_sizes) if isinstance(min_sizes, (list, tuple)) else []
        if not sizes or not all(_positive_int(s) for s in sizes):
            raise ValueError(
                f"DatasetMapperTTA min_sizes (TEST.AUG.MIN_SIZES) must be one or more ints > 0, got {min_sizes!r}"
            )
        if not _positive_int(max_size):
            raise ValueError(f"DatasetMapperTTA max_size (TEST.AUG.MAX_SIZE) must be an int > 0, got {max_size!r}")
        self.min_sizes = sizes
        self.max_size = max_size
        self.flip = bool(flip)

    @classmethod
    def from_config(cls, cfg):
        return {"min_sizes": cfg.TEST.AUG.MIN_SIZES, "max_size": cfg.TEST.AUG.MAX_SIZE, "flip": cfg.TEST.AUG.FLIP}

    def __call__(self, dataset_dict: Dict) -> List[Dict]:
        """
        Args:
            dataset_dict: a model input with "image" (`Tensor[C, H, W]`), "height" and "width" (the
                original image's size; the image may already be resized from it, as the test loader
                does).

        Returns:
            `len(min_sizes) * (2 if flip else 1)` copies of `dataset_dict`, each with its "image" and
            "transforms" (a TransformList from the original size to the copy's).
        """
        image = dataset_dict["image"]
        h, w = image.shape[1:]
        original = (dataset_dict["height"], dataset_dict["width"])
        to_input = NoOpTransform() if (h, w) == original else ResizeTransform(*original, h, w)
        pixels = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())  # (C, H, W) -> (H, W, C)
        copies = []
        for min_size in self.min_sizes:
            resize = ResizeTransform(h, w, *ResizeShortestEdge.get_output_shape(h, w, min_size, self.max_size))
            resized = resize.apply_image(pixels)
            copies.append(_copy_with(dataset_dict, resized, TransformList([to_input, resize])))
            if self.flip:
                flip = HFlipTransform(resize.new_w)
                flipped = flip.apply_image(resized)
                copies.append(_copy_with(dataset_dict, flipped, TransformList([to_input, resize, flip])))
        return copies


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _copy_with(dataset_dict: Dict, pixels: np.ndarray, transforms: TransformList) -> Dict:
    """`dataset_dict` with another image (`ndarray[H, W, C]`) and the transforms that made it."""
    image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (H, W, C) -> (C, H, W)
    return {**dataset_dict, "image": image, "transforms": transforms}


def _check_supported(model: nn.Module) -> None:
    """ConfigError unless `model` is an R-CNN that test-time augmentation can run: boxes and masks,
    not keypoints (as in Detectron2), not Panoptic FPN (whose inference takes no given boxes)."""
    if not isinstance(model, GeneralizedRCNN) or isinstance(model, PanopticFPN):
        raise ConfigError(
            f"Test-time augmentation (TEST.AUG.ENABLED) runs GeneralizedRCNN models (Faster/Mask R-CNN), not "
            f"{type(model).__name__} (MODEL.META_ARCHITECTURE)"
        )
    if getattr(model.roi_heads, "keypoint_on", False):
        raise ConfigError(
            "Test-time augmentation (TEST.AUG.ENABLED) does not support keypoint models (MODEL.KEYPOINT_ON), as in "
            "Detectron2"
        )


class GeneralizedRCNNWithTTA(nn.Module):
    """A GeneralizedRCNN run with test-time augmentation; called like the model in inference:
    `tta([{"image": ..., "height": ..., "width": ...}])` -> `[{"instances": Instances}]`.

    Per image: the model detects on each copy the `tta_mapper` makes; the boxes, mapped back to the
    original image, are merged by per-class NMS (MODEL.ROI_HEADS.NMS_THRESH_TEST, the best
    TEST.DETECTIONS_PER_IMAGE kept). For a mask model, the mask head then runs on the merged boxes in
    every copy, and each box gets the average of those mask probabilities (a flipped copy's mirrored
    back) before they are pasted into the image.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 3):
        """
        Args:
            cfg: the config (MODEL.ROI_HEADS.NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE, and TEST.AUG.*
                for the default mapper).
            model: the GeneralizedRCNN (or its DistributedDataParallel) to run; not with keypoints.
            tta_mapper: input dict -> its augmented copies, each with "transforms" from the original
                image to the copy (resizes and horizontal flips for mask models); default
                `DatasetMapperTTA(cfg)`.
            batch_size: copies the model sees at once.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        _check_supported(model)
        if not _positive_int(batch_size):
            raise ValueError(f"GeneralizedRCNNWithTTA batch_size must be an int > 0, got {batch_size!r}")
        self.model = model
        # in the model's mode, so that inference_context, which restores the wrapper's, leaves the model's
        self.train(model.training)
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size
        self.nms_thresh = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST
        self.detections_per_image = cfg.TEST.DETECTIONS_PER_IMAGE

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """
        Args:
            batched_inputs: N input dicts, as the model takes; an input without "image" is read from
                its "file_name" (in the model's input format).

        Returns:
            Per image, {"instances": Instances(pred_boxes, scores, pred_classes[, pred_masks])} at the
            input's "height" x "width" (default: the image's size).
        """
        return [self._inference_one_image(self._with_image_and_size(x)) for x in batched_inputs]

    def _with_image_and_size(self, inputs: Dict) -> Dict:
        """`inputs` with "image" (read from "file_name" when missing) and "height"/"width"."""
        inputs = dict(inputs)
        if "image" not in inputs:
            pixels = read_image(inputs["file_name"], self.model.input_format or "BGR")
            inputs["image"] = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        inputs.setdefault("height", inputs["image"].shape[1])
        inputs.setdefault("width", inputs["image"].shape[2])
        return inputs

    def _inference_one_image(self, inputs: Dict) -> Dict[str, Instances]:
        original_size = (inputs["height"], inputs["width"])
        copies = self.tta_mapper(inputs)
        transforms = [c.pop("transforms") for c in copies]
        with self._mask_head_off():
            detections = self._batch_inference(copies)
        merged = self._merge_detections(detections, transforms, original_size)
        if getattr(self.model.roi_heads, "mask_on", False):
            flipped = [_flips(t) for t in transforms]  # before the mask passes: refuses what masks cannot undo
            given = [
                Instances(
                    tuple(c["image"].shape[1:]),
                    pred_boxes=Boxes(_map_boxes(merged.pred_boxes.tensor, t)),
                    pred_classes=merged.pred_classes,
                    scores=merged.scores,
                )
                for c, t in zip(copies, transforms)
            ]
            with_masks = self._batch_inference(copies, given)
            merged.pred_masks = average_mask_probs([m.pred_masks for m in with_masks], flipped)
        return {"instances": detector_postprocess(merged, *original_size)}

    @contextlib.contextmanager
    def _mask_head_off(self) -> Iterator[None]:
        """The model detects boxes only in the block: masks are predicted later, on the merged boxes."""
        roi_heads = self.model.roi_heads
        mask_on = getattr(roi_heads, "mask_on", False)
        if mask_on:
            roi_heads.mask_on = False
        try:
            yield
        finally:
            if mask_on:
                roi_heads.mask_on = True

    def _batch_inference(self, inputs: List[Dict], given: Optional[List[Instances]] = None) -> List[Instances]:
        """The model's raw results (at each copy's size) on `inputs`, `batch_size` at a time; with
        `given` boxes per input, only its mask branch runs on them."""
        results: List[Instances] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            given_chunk = None if given is None else given[chunk]
            results += self.model.inference(inputs[chunk], given_chunk, do_postprocess=False)
        return results

    def _merge_detections(self, detections: List[Instances], transforms: List[Transform], image_size) -> Instances:
        """The T copies' detections in the original image (`image_size`), merged by per-class NMS."""
        boxes = torch.cat([_map_boxes(d.pred_boxes.tensor, t.inverse()) for d, t in zip(detections, transforms)])
        scores = torch.cat([d.scores for d in detections])
        classes = torch.cat([d.pred_classes for d in detections])
        # fast_rcnn_inference_single_image takes every box's (K+1) class scores: each box scores only
        # for its own class, and with a threshold of 0 every detection of a copy is a candidate.
        class_scores = scores.new_zeros(len(boxes), self.model.roi_heads.num_classes + 1)
        class_scores[torch.arange(len(boxes), device=boxes.device), classes] = scores
        merged, _ = fast_rcnn_inference_single_image(
            boxes, class_scores, image_size, 0.0, self.nms_thresh, self.detections_per_image
        )
        return merged


def _map_boxes(boxes: Tensor, transform: Transform) -> Tensor:
    """`Tensor[D, 4]` boxes through `transform`, on their device and in their dtype."""
    return torch.from_numpy(transform.apply_box(boxes.detach().cpu().numpy())).to(boxes)


def _flips(transform: Transform) -> bool:
    """Whether `transform` (resizes and horizontal flips) mirrors the image. A mask predicted over a
    box is unchanged by a resize and mirrored by a flip; other transforms cannot be undone on it."""
    flipped = False
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, HFlipTransform):
            flipped = not flipped
        elif not isinstance(t, (ResizeTransform, NoOpTransform)):
            raise ValueError(
                f"GeneralizedRCNNWithTTA averages masks over resized and horizontally flipped copies only; the "
                f"tta_mapper's transforms contain {t!r}"
            )
    return flipped


def average_mask_probs(masks: Sequence[Tensor], flipped: Sequence[bool]) -> Tensor:
    """The average of the T copies' mask probabilities of the same D boxes, in the original image's
    orientation.

    Args:
        masks: per copy, `Tensor[D, 1, M, M]` probabilities over each box, as the mask head predicts them.
        flipped: per copy, whether it is mirrored left-right; its masks are mirrored back.

    Returns:
        `Tensor[D, 1, M, M]`.
    """
    oriented = [m.flip(dims=[3]) if f else m for m, f in zip(masks, flipped)]
    return torch.stack(oriented).mean(dim=0)  # (T, D, 1, M, M) -> (D, 1, M, M)
