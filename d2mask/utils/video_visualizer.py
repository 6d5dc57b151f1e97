"""Drawing a video's frames, each instance keeping its colour from frame to frame.

    video_visualizer = VideoVisualizer(MetadataCatalog.get("coco_2017_val"), ColorMode.IMAGE)
    for frame_rgb in frames:
        drawing = video_visualizer.draw_instance_predictions(frame_rgb, predictor(frame_bgr)["instances"].to("cpu"))

An instance takes the colour of the instance of the previous frames, of the same class, that it
overlaps most (box IoU, or mask IoU where there are no boxes, above 0.5); one that matches none gets
a new colour. An instance missed by the model keeps its colour for the next few frames.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from ..structures import Instances
from .colormap import instance_colors
from .visualizer import ColorMode, VisImage, Visualizer

__all__ = ["VideoVisualizer"]

# Lowest IoU of an instance with one of the previous frames for it to take that one's colour.
_MATCH_IOU = 0.5
# Frames an instance that nothing matched keeps its colour for (a model misses an object now and then).
_FRAMES_KEPT = 8


@dataclass
class _Tracked:
    """An instance of a previous frame: its class, its region as a COCO RLE, its colour."""

    label: int
    region: Dict[str, Any]
    color: np.ndarray
    frames_left: int


class VideoVisualizer:
    """Draws the frames of one video with `Visualizer`, giving each instance the colour it had in
    the previous frames. Use one VideoVisualizer per video, its frames in order."""

    def __init__(self, metadata: Optional[Any], instance_mode: ColorMode = ColorMode.IMAGE):
        """
        Args:
            metadata: the dataset's `Metadata` (class names and colours).
            instance_mode: `ColorMode.IMAGE` or `IMAGE_BW` colour each instance and keep its colour
                across frames; `SEGMENTATION` colours instances by class, which is the same in every frame.
        """
        if not isinstance(instance_mode, ColorMode):
            raise ValueError(f"instance_mode must be a ColorMode ({', '.join(m.name for m in ColorMode)}), "
                             f"got {instance_mode!r}")
        self.metadata = metadata
        self._instance_mode = instance_mode
        self._tracked: List[_Tracked] = []
        self._frame_size: Optional[Tuple[int, int]] = None
        self._colors_used = 0  # colours are drawn in the order of `instance_colors`

    def draw_instance_predictions(self, frame: np.ndarray, predictions: Instances) -> VisImage:
        """Draws a model's output `Instances` on `frame` (`ndarray[H, W, 3]` RGB), as
        `Visualizer.draw_instance_predictions` does, each instance in its colour of the previous frames."""
        visualizer = Visualizer(frame, self.metadata, instance_mode=self._instance_mode)
        if self._instance_mode is ColorMode.SEGMENTATION:
            return visualizer.draw_instance_predictions(predictions, jittering=False)
        height, width = frame.shape[:2]
        if predictions.has("pred_boxes"):
            boxes = predictions.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64)
            boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
            regions = mask_util.frPyObjects(boxes, height, width) if len(boxes) else []
        elif predictions.has("pred_masks"):
            regions = _encode(visualizer._mask_list(predictions.pred_masks))
        else:  # nothing to match instances by: a colour per instance, as in an image
            return visualizer._draw_instances(predictions, None)
        labels = predictions.pred_classes.tolist() if predictions.has("pred_classes") else [0] * len(predictions)
        return visualizer._draw_instances(predictions, self._assign_colors(labels, regions, (height, width)))

    def draw_sem_seg(self, frame: np.ndarray, sem_seg: Union[np.ndarray, torch.Tensor],
                     area_threshold: Optional[int] = None) -> VisImage:
        """`Visualizer.draw_sem_seg` on `frame`: classes keep their colours in every frame."""
        return Visualizer(frame, self.metadata).draw_sem_seg(sem_seg, area_threshold=area_threshold)

    def draw_panoptic_seg(self, frame: np.ndarray, panoptic_seg: Union[np.ndarray, torch.Tensor],
                          segments_info: List[Dict[str, Any]], area_threshold: Optional[int] = None,
                          alpha: float = 0.5) -> VisImage:
        """`Visualizer.draw_panoptic_seg` on `frame`; each thing segment takes the colour of the
        previous frames' segment it overlaps most (mask IoU), stuff keeps its class colour."""
        visualizer = Visualizer(frame, self.metadata, instance_mode=self._instance_mode)
        masks, infos = visualizer._panoptic_segments(panoptic_seg, segments_info, area_threshold)
        colors = visualizer._segment_colors(infos)
        things = [i for i, info in enumerate(infos) if info["isthing"]]
        if self._instance_mode is not ColorMode.SEGMENTATION:
            labels = [int(infos[i]["category_id"]) for i in things]
            colors[things] = self._assign_colors(labels, _encode([masks[i] for i in things]), frame.shape[:2])
        return visualizer._draw_segments(masks, infos, colors, alpha)

    draw_panoptic_seg_predictions = draw_panoptic_seg  # Detectron2's name

    def _assign_colors(self, labels: Sequence[int], regions: List[Dict[str, Any]],
                       frame_size: Tuple[int, int]) -> np.ndarray:
        """`[R, 3]` colours of this frame's R instances (their classes and RLE regions), matched
        greedily to the previous frames' instances, the pairs of highest IoU first."""
        if frame_size != self._frame_size:  # another video, or resized frames: nothing to match
            self._tracked, self._frame_size = [], frame_size
        previous = self._tracked
        iou = np.zeros((len(regions), len(previous)))
        if len(regions) and previous:
            iou = np.asarray(mask_util.iou(regions, [t.region for t in previous], [0] * len(previous)))
            iou = iou.reshape(len(regions), len(previous))
            iou[np.asarray(labels)[:, None] != np.asarray([t.label for t in previous])[None, :]] = 0.0
        colors: List[Optional[np.ndarray]] = [None] * len(regions)
        matched = [False] * len(previous)
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = np.unravel_index(flat, iou.shape)
            if iou[i, j] <= _MATCH_IOU:
                break
            if colors[i] is None and not matched[j]:
                colors[i], matched[j] = previous[j].color, True
        for i, color in enumerate(colors):
            if color is None:
                colors[i] = instance_colors(1, offset=self._colors_used)[0]
                self._colors_used += 1
        self._tracked = [_Tracked(int(label), region, color, _FRAMES_KEPT)
                         for label, region, color in zip(labels, regions, colors)]
        self._tracked += [_Tracked(t.label, t.region, t.color, t.frames_left - 1)
                          for t, was_matched in zip(previous, matched) if not was_matched and t.frames_left > 1]
        return np.asarray(colors, dtype=np.uint8).reshape(-1, 3)


def _encode(masks: List[np.ndarray]) -> List[Dict[str, Any]]:
    """COCO RLEs of bool masks `[H, W]`."""
    return [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
