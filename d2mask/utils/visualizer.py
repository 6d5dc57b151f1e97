"""Drawing detections and annotations on images: boxes, class names, scores, translucent masks,
keypoints, and semantic and panoptic segmentations.

    v = Visualizer(image_rgb, MetadataCatalog.get("shapes_val"), instance_mode=ColorMode.IMAGE_BW)
    v.draw_instance_predictions(outputs["instances"].to("cpu")).save("pred.png")

`utils.video_visualizer.VideoVisualizer` draws a video's frames, each instance in the same colour from
frame to frame.
"""
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from ..structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks, polygons_to_bitmask
from .colormap import instance_colors

__all__ = ["ColorMode", "Visualizer", "VisImage"]

_MaskLike = Union[np.ndarray, torch.Tensor, List[Any], Dict[str, Any]]
# Keypoints whose score (or visibility) is not above this are not drawn, as in Detectron2.
_KEYPOINT_THRESHOLD = 0.05
_KEYPOINT_COLOR = (255, 0, 0)


class ColorMode(Enum):
    """How `Visualizer.draw_instance_predictions` colours instances (Detectron2's modes)."""

    IMAGE = 0
    """A distinct colour for each instance, masks at opacity 0.5."""
    SEGMENTATION = 1
    """One colour per class (the metadata's thing_colors, else a fixed colour per class), masks at
    opacity 0.8, to look at the quality of the segmentation."""
    IMAGE_BW = 2
    """As IMAGE, masks at opacity 0.3, on the image turned grey outside the masks."""


# Opacity of the instances' masks in each mode.
_MASK_ALPHA = {ColorMode.IMAGE: 0.5, ColorMode.SEGMENTATION: 0.8, ColorMode.IMAGE_BW: 0.3}


class VisImage:
    """The canvas a `Visualizer` draws on: an RGB uint8 image, possibly rescaled from the input."""

    def __init__(self, img_rgb: np.ndarray, scale: float = 1.0):
        h, w = img_rgb.shape[:2]
        self.scale = scale
        self.width, self.height = max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)
        self.reset_image(img_rgb)

    def reset_image(self, img_rgb: np.ndarray) -> None:
        """Replaces the drawing by `img_rgb` (`ndarray[H, W, 3]` uint8 of the input image's size), scaled."""
        self.img = cv2.resize(img_rgb, (self.width, self.height), interpolation=cv2.INTER_LINEAR) if self.scale != 1.0 \
            else img_rgb.copy()

    def get_image(self) -> np.ndarray:
        """The drawing, `ndarray[H, W, 3]` uint8 RGB."""
        return self.img

    def save(self, path: str) -> None:
        """Writes the drawing to an image file (format from the extension, e.g. .png)."""
        if not cv2.imwrite(path, self.img[:, :, ::-1]):  # RGB -> BGR
            raise OSError(f"Could not write the visualisation to {path} (does the directory exist? is the "
                          f"extension an image format?)")


class Visualizer:
    """Draws instances or segmentations on one image. Coordinates given to the draw methods are in the input image's
    pixels; the drawing happens on a copy scaled by `scale`."""

    def __init__(self, img_rgb: np.ndarray, metadata: Optional[Any] = None, scale: float = 1.0,
                 instance_mode: ColorMode = ColorMode.IMAGE, font_size_scale: float = 1.0):
        """
        Args:
            img_rgb: `ndarray[H, W, 3]` RGB (or `[H, W]` / `[H, W, 1]` grayscale), values 0-255.
            metadata: a dataset's `Metadata`; its thing_classes name the classes, its
                keypoint_names and keypoint_connection_rules say which keypoints to join by lines.
            scale: size of the drawing relative to the image.
            instance_mode: how instances are coloured (`ColorMode`).
            font_size_scale: size of the labels relative to the default, which grows with the drawing.
        """
        if not isinstance(instance_mode, ColorMode):
            raise ValueError(f"instance_mode must be a ColorMode ({', '.join(m.name for m in ColorMode)}), "
                             f"got {instance_mode!r}")
        img = np.asarray(img_rgb)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Visualizer expects an RGB image [H, W, 3] or a grayscale one, got {img_rgb.shape}")
        self.img = np.clip(img, 0, 255).astype(np.uint8)
        self.metadata = metadata
        self.output = VisImage(self.img, scale)
        self._instance_mode = instance_mode
        # Lines and text grow with the drawing so they stay legible on large images.
        self._line_width = max(1, round(max(self.output.height, self.output.width) / 400))
        self._font_scale = max(0.35, max(self.output.height, self.output.width) / 1200) * font_size_scale

    def _class_names(self) -> Optional[List[str]]:
        return self.metadata.get("thing_classes") if self.metadata is not None else None

    def _labels(self, classes: Optional[Sequence[int]], scores: Optional[Sequence[float]]) -> Optional[List[str]]:
        if classes is None and scores is None:
            return None
        names = self._class_names()
        n = len(classes) if classes is not None else len(scores)
        labels = []
        for i in range(n):
            parts = []
            if classes is not None:
                c = int(classes[i])
                parts.append(names[c] if names is not None and 0 <= c < len(names) else str(c))
            if scores is not None:
                parts.append(f"{float(scores[i]) * 100:.0f}%")
            labels.append(" ".join(parts))
        return labels

    def draw_instance_predictions(self, predictions: Instances, jittering: bool = True) -> VisImage:
        """Draws a model's output `Instances` (pred_boxes, scores, pred_classes, pred_masks, pred_keypoints,
        each optional), coloured as the `instance_mode` says.

        Args:
            jittering: in `ColorMode.SEGMENTATION`, tell instances of one class apart: the first keeps
                the class colour, the next ones are alternately lighter and darker shades of it.
        """
        colors = None
        if self._instance_mode is ColorMode.SEGMENTATION:
            classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else [0] * len(predictions)
            colors = self._category_colors("thing_colors", classes)
            if jittering:
                colors = np.asarray([_shade(c, classes[:i].count(k)) for i, (c, k) in enumerate(zip(colors, classes))],
                                    dtype=np.uint8).reshape(-1, 3)
        return self._draw_instances(predictions, colors)

    def _draw_instances(self, predictions: Instances, colors: Optional[np.ndarray]) -> VisImage:
        """`draw_instance_predictions` with the instances' colours given (`[R, 3]`; None: one per instance)."""
        boxes = predictions.pred_boxes if predictions.has("pred_boxes") else None
        scores = predictions.scores.tolist() if predictions.has("scores") else None
        classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else None
        masks = self._mask_list(predictions.pred_masks) if predictions.has("pred_masks") else None
        keypoints = predictions.pred_keypoints if predictions.has("pred_keypoints") else None
        if self._instance_mode is ColorMode.IMAGE_BW:
            self._grey_outside(masks)
        return self.overlay_instances(boxes=boxes, labels=self._labels(classes, scores), masks=masks, keypoints=keypoints,
                                      assigned_colors=colors, alpha=_MASK_ALPHA[self._instance_mode])

    def _grey_outside(self, masks: Optional[List[np.ndarray]]) -> None:
        """Turns the drawing grey (luminance) outside the union of `masks` (everywhere when None)."""
        grey = np.repeat(cv2.cvtColor(self.img, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        if masks:
            kept = np.any(masks, axis=0)
            grey[kept] = self.img[kept]
        self.output.reset_image(grey)

    def draw_dataset_dict(self, dic: Dict[str, Any]) -> VisImage:
        """Draws the annotations of a dataset dict (boxes in any absolute mode; polygons or RLE masks;
        keypoints, the labelled ones)."""
        annos = dic.get("annotations", [])
        if not annos:
            return self.output
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        masks = [a["segmentation"] for a in annos] if all("segmentation" in a for a in annos) else None
        labels = self._labels([a["category_id"] for a in annos], None)
        keypoints = None
        if all("keypoints" in a for a in annos):
            keypoints = np.asarray([a["keypoints"] for a in annos], dtype=np.float64).reshape(len(annos), -1, 3)
        return self.overlay_instances(
            boxes=np.asarray(boxes, dtype=np.float64), labels=labels, masks=masks, keypoints=keypoints
        )

    def draw_sem_seg(self, sem_seg: Union[np.ndarray, torch.Tensor], area_threshold: Optional[int] = None,
                     alpha: float = 0.8) -> VisImage:
        """Draws a semantic segmentation: the pixels of each class tinted in its colour and named.

        Args:
            sem_seg: `[H, W]` class ids (e.g. the argmax of a model's "sem_seg" logits).
            area_threshold: classes with fewer pixels are not drawn.
            alpha: opacity of the tint.
        """
        sem_seg = sem_seg.detach().cpu().numpy() if isinstance(sem_seg, torch.Tensor) else np.asarray(sem_seg)
        labels, areas = np.unique(sem_seg, return_counts=True)
        names = self.metadata.get("stuff_classes") if self.metadata is not None else None
        # Classes the metadata does not name (an ignore label) are not drawn; the largest go first.
        keep = [l for l, a in sorted(zip(labels.tolist(), areas.tolist()), key=lambda la: -la[1])
                if a >= (area_threshold or 0) and (names is None or 0 <= l < len(names))]
        return self.overlay_instances(
            masks=[sem_seg == label for label in keep],
            labels=[names[label] if names else str(label) for label in keep],
            assigned_colors=self._category_colors("stuff_colors", keep),
            alpha=alpha,
        )

    def draw_panoptic_seg(self, panoptic_seg: Union[np.ndarray, torch.Tensor], segments_info: List[Dict[str, Any]],
                          area_threshold: Optional[int] = None, alpha: float = 0.7) -> VisImage:
        """Draws a panoptic segmentation as `PanopticFPN` outputs it: each segment tinted and named,
        things by thing_classes (with their score), stuff by stuff_classes. In `ColorMode.IMAGE_BW`
        the image is grey outside the segments.

        Args:
            panoptic_seg: `[H, W]` segment ids, 0 for none.
            segments_info: one dict per segment: "id", "isthing", "category_id" (and "score").
            area_threshold: segments with fewer pixels are not drawn.
            alpha: opacity of the tint.
        """
        masks, infos = self._panoptic_segments(panoptic_seg, segments_info, area_threshold)
        return self._draw_segments(masks, infos, self._segment_colors(infos), alpha)

    draw_panoptic_seg_predictions = draw_panoptic_seg  # Detectron2's other name for it

    def _panoptic_segments(self, panoptic_seg, segments_info: List[Dict[str, Any]],
                           area_threshold: Optional[int]) -> Tuple[List[np.ndarray], List[Dict[str, Any]]]:
        """The bool masks `[H, W]` of the segments to draw (not empty, not under `area_threshold`) and their infos."""
        panoptic_seg = panoptic_seg.detach().cpu().numpy() if isinstance(panoptic_seg, torch.Tensor) else np.asarray(panoptic_seg)
        masks = [panoptic_seg == s["id"] for s in segments_info]
        shown = [i for i, m in enumerate(masks) if m.sum() >= max(area_threshold or 0, 1)]
        return [masks[i] for i in shown], [segments_info[i] for i in shown]

    def _segment_colors(self, infos: List[Dict[str, Any]]) -> np.ndarray:
        """`[S, 3]`: each segment's category colour (thing_colors or stuff_colors)."""
        num_things = len(self._class_names() or [])
        # things and stuff share category indices: offset the stuff colours past the things'
        colors = [self._category_colors("thing_colors", [int(s["category_id"])])[0] if s["isthing"] else
                  self._category_colors("stuff_colors", [int(s["category_id"])], num_things)[0] for s in infos]
        return np.asarray(colors, dtype=np.uint8).reshape(-1, 3)

    def _draw_segments(self, masks: List[np.ndarray], infos: List[Dict[str, Any]], colors: np.ndarray,
                       alpha: float) -> VisImage:
        """Draws panoptic segments, each named by its category (and score) in its colour."""
        if self._instance_mode is ColorMode.IMAGE_BW:
            self._grey_outside(masks)
        thing_names = self._class_names()
        stuff_names = self.metadata.get("stuff_classes") if self.metadata is not None else None
        labels = []
        for info in infos:
            names, category = (thing_names if info["isthing"] else stuff_names), int(info["category_id"])
            name = names[category] if names and 0 <= category < len(names) else str(category)
            labels.append(f"{name} {info['score'] * 100:.0f}%" if "score" in info else name)
        return self.overlay_instances(masks=masks, labels=labels, assigned_colors=colors, alpha=alpha)

    def _category_colors(self, key: str, categories: Sequence[int], offset: int = 0) -> np.ndarray:
        """`[len(categories), 3]` RGB: the metadata's colours under `key`, else one fixed colour per category."""
        given = self.metadata.get(key) if self.metadata is not None else None
        if given and all(0 <= c < len(given) for c in categories):
            return np.asarray([given[c] for c in categories], dtype=np.uint8).reshape(-1, 3)
        return np.asarray([instance_colors(1, offset=offset + c)[0] for c in categories], dtype=np.uint8).reshape(-1, 3)

    def overlay_instances(
        self,
        *,
        boxes: Union[Boxes, np.ndarray, torch.Tensor, None] = None,
        labels: Optional[List[str]] = None,
        masks: Union[BitMasks, PolygonMasks, Sequence[_MaskLike], np.ndarray, torch.Tensor, None] = None,
        keypoints: Union[np.ndarray, torch.Tensor, None] = None,
        assigned_colors: Optional[np.ndarray] = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draws R instances, each in its own colour: mask (translucent), box, label; and their keypoints.

        Args:
            boxes: `[R, 4]` (x0, y0, x1, y1).
            labels: R strings written at the boxes' (or masks') top-left corners.
            masks: R masks: `BitMasks`, `PolygonMasks`, a `[R, H, W]` array, or a list of bitmaps,
                polygon lists or COCO RLEs.
            keypoints: `[R, J, 3]` (x, y, score or visibility); see `draw_and_connect_keypoints`.
            assigned_colors: `[R, 3]` RGB 0-255; default one distinct colour per instance.
            alpha: opacity of the masks.
        """
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        if isinstance(boxes, torch.Tensor):
            boxes = boxes.detach().cpu().numpy()
        mask_list = self._mask_list(masks)
        if isinstance(keypoints, torch.Tensor):
            keypoints = keypoints.detach().cpu().numpy()
        counts = {len(x) for x in (boxes, labels, mask_list, keypoints) if x is not None}
        if len(counts) > 1:
            raise ValueError(f"overlay_instances got different numbers of boxes, labels, masks and keypoints: {counts}")
        n = counts.pop() if counts else 0
        colors = instance_colors(n) if assigned_colors is None else np.asarray(assigned_colors, dtype=np.uint8)

        # Larger instances first, so small ones drawn later stay visible on top.
        if boxes is not None and n:
            order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        else:
            order = np.arange(n)
        for i in order:
            color = tuple(int(c) for c in colors[i])
            if mask_list is not None:
                self.draw_binary_mask(mask_list[i], color, alpha)
            if boxes is not None:
                self.draw_box(boxes[i], color)
            if labels is not None:
                anchor = boxes[i][:2] if boxes is not None else _mask_corner(mask_list[i])
                if anchor is not None:
                    self.draw_text(labels[i], anchor, color)
        for instance_keypoints in keypoints if keypoints is not None else []:
            self.draw_and_connect_keypoints(instance_keypoints)
        return self.output

    def draw_and_connect_keypoints(self, keypoints: Union[np.ndarray, torch.Tensor]) -> VisImage:
        """Draws one instance's keypoints whose score (or visibility) is above 0.05 as dots, and a line
        for each of the metadata's `keypoint_connection_rules` (name, name, RGB colour) whose two
        keypoints are drawn.

        Args:
            keypoints: `[J, 3]` (x, y, score or visibility), in input-image pixels, in the order of
                the metadata's keypoint_names.
        """
        if isinstance(keypoints, torch.Tensor):
            keypoints = keypoints.detach().cpu().numpy()
        names = self.metadata.get("keypoint_names") if self.metadata is not None else None
        scale = self.output.scale
        drawn = {}
        for j, (x, y, score) in enumerate(np.asarray(keypoints, dtype=np.float64)):
            if score > _KEYPOINT_THRESHOLD:
                drawn[names[j] if names is not None else j] = (int(round(x * scale)), int(round(y * scale)))
        rules = (self.metadata.get("keypoint_connection_rules") if self.metadata is not None else None) or []
        for first, second, color in rules:
            if first in drawn and second in drawn:
                cv2.line(self.output.img, drawn[first], drawn[second], tuple(int(c) for c in color), self._line_width, cv2.LINE_AA)
        for point in drawn.values():  # over the lines
            cv2.circle(self.output.img, point, self._line_width + 2, _KEYPOINT_COLOR, -1, cv2.LINE_AA)
        return self.output

    def _mask_list(self, masks) -> Optional[List[np.ndarray]]:
        """Every supported mask input as a list of bool `ndarray[H, W]` of the input image's size."""
        if masks is None:
            return None
        h, w = self.img.shape[:2]
        if isinstance(masks, BitMasks):
            masks = masks.tensor
        if isinstance(masks, PolygonMasks):
            return [polygons_to_bitmask(p, h, w) for p in masks.polygons]
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu().numpy()
        out = []
        for m in masks:
            if isinstance(m, dict):
                rle = mask_util.frPyObjects(m, *m["size"]) if isinstance(m["counts"], list) else m
                m = mask_util.decode(rle)
            elif isinstance(m, list):
                m = polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in m], h, w)
            m = np.asarray(m)
            out.append(m >= 0.5 if m.dtype.kind == "f" else m.astype(bool))
        return out

    def draw_box(self, box: Sequence[float], color: tuple) -> VisImage:
        """Draws the outline of box (x0, y0, x1, y1) given in input-image pixels."""
        s = self.output.scale
        x0, y0, x1, y1 = (int(round(float(v) * s)) for v in box)
        cv2.rectangle(self.output.img, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), color, self._line_width)
        return self.output

    def draw_text(self, text: str, position: Sequence[float], color: tuple) -> VisImage:
        """Writes `text` in white on a box of `color`, its bottom-left corner at `position` (input pixels),
        moved inside the drawing when it would leave it."""
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), baseline = cv2.getTextSize(text, font, self._font_scale, 1)
        x = int(np.clip(float(position[0]) * self.output.scale, 0, max(self.output.width - tw, 0)))
        y = int(np.clip(float(position[1]) * self.output.scale, th + baseline, self.output.height))
        dark = tuple(int(c * 0.6) for c in color)  # darker than the box, so white text reads on it
        cv2.rectangle(self.output.img, (x, y - th - baseline), (x + tw, y), dark, -1)
        cv2.putText(self.output.img, text, (x, y - baseline), font, self._font_scale, (255, 255, 255), 1, cv2.LINE_AA)
        return self.output

    def draw_binary_mask(self, mask: np.ndarray, color: tuple, alpha: float = 0.5) -> VisImage:
        """Tints the pixels of a bool `ndarray[H, W]` (input-image size) with `color` and outlines them."""
        if mask.shape != self.img.shape[:2]:
            raise ValueError(f"A mask of size {mask.shape} does not match the image's {self.img.shape[:2]}")
        mask = mask.astype(np.uint8)
        if self.output.scale != 1.0:
            mask = cv2.resize(mask, (self.output.width, self.output.height), interpolation=cv2.INTER_NEAREST)
        inside = mask.astype(bool)
        canvas = self.output.img
        canvas[inside] = (canvas[inside] * (1 - alpha) + np.asarray(color) * alpha).round().astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, color, max(1, self._line_width // 2))
        return self.output

    def get_output(self) -> VisImage:
        return self.output


def _shade(color: np.ndarray, k: int) -> np.ndarray:
    """The k-th shade of a class colour: itself for k = 0, then alternately lighter (odd k) and darker,
    by steps of 20% towards white or black (at most 60%)."""
    step = min(0.2 * ((k + 1) // 2), 0.6)
    color = np.asarray(color, dtype=np.float64)
    return (color + ((255.0 if k % 2 else 0.0) - color) * step).round()


def _mask_corner(mask: np.ndarray) -> Optional[np.ndarray]:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min()]) if len(xs) else None
