"""`DenseDetector`: the base of one-stage detectors, whose head predicts at every location of every
feature level (RetinaNet), without proposals or ROI heads.

Shape shorthand: `N` images, `L` levels, `Hi x Wi` the size of level i, `A` anchors per location, `K`
values per anchor (classes, or 4 box deltas), `R` anchors over all levels (sum of Hi*Wi*A).
"""
from typing import Dict, List, Optional, Sequence, Set

import torch
from torch import Tensor, nn

from d2mask.structures import ImageList, Instances
from d2mask.utils.events import get_event_storage, has_event_storage

from ..anchor_generator import permute_to_N_HWA_K  # Detectron2 exports it from this module
from ..backbone import Backbone
from .batched_inputs import NormalizedInput, gt_beside_boxes, rescale_to_inputs

__all__ = ["DenseDetector", "permute_to_N_HWA_K"]


class DenseDetector(NormalizedInput):
    """A backbone and a head applied to chosen backbone features; a subclass defines
    `forward_training` (the losses) and `forward_inference` (the detections)."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Optional[Sequence[str]] = None,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        vis_period: int = 0,
        input_format: Optional[str] = None,
    ):
        """
        Args:
            backbone: images -> {feature name: feature map}.
            head: L feature maps -> per-level predictions (a list of outputs, each L x `Tensor[N, A*K, Hi, Wi]`).
            head_in_features: the backbone features the head reads; None reads all, finest first.
            pixel_mean, pixel_std: per-channel statistics the input images are normalised with.
            vis_period: in training, every this many iterations of an active event storage, log an
                image of the GT boxes beside the current top detections; 0 never.
            input_format: channel order of the input images ("BGR", "RGB", "L"); needed to draw them.
        """
        super().__init__(pixel_mean, pixel_std)
        if vis_period > 0 and input_format is None:
            raise ValueError(f"{type(self).__name__} needs input_format (INPUT.FORMAT) to visualise training (VIS_PERIOD > 0)")
        self.vis_period = vis_period
        self.input_format = input_format
        shapes = backbone.output_shape()
        if head_in_features is None:
            head_in_features = sorted(shapes, key=lambda f: shapes[f].stride)
        missing = [f for f in head_in_features if f not in shapes]
        if missing:
            raise ValueError(f"head_in_features {list(head_in_features)}: {missing} not among the backbone's {list(shapes)}")
        self.backbone = backbone
        self.head = head
        self.head_in_features = list(head_in_features)
        self._ema_names: Set[str] = set()  # the attributes of `_ema_update`, see training_state_dict

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: N input dicts, as for `GeneralizedRCNN`.

        Returns:
            In training, {loss name: Tensor}; in inference, per image {"instances": Instances(pred_boxes,
            scores, pred_classes)} at each input's "height"/"width".
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)
        if self.training:
            losses = self.forward_training(images, features, predictions, self.gt_instances(batched_inputs))
            if self.vis_period > 0 and has_event_storage() and get_event_storage().iter % self.vis_period == 0:
                with torch.no_grad():
                    self.visualize_training(batched_inputs, self.forward_inference(images, features, predictions))
            return losses
        results = self.forward_inference(images, features, predictions)
        return [{"instances": r} for r in rescale_to_inputs(results, batched_inputs, images.image_sizes)]

    def visualize_training(self, batched_inputs: List[Dict], results: List[Instances], max_boxes: int = 20) -> None:
        """Puts in the active event storage an image of the first input: its GT boxes (left) beside its
        `max_boxes` highest-scoring detections (right)."""
        both = gt_beside_boxes(batched_inputs[0], results[0].pred_boxes[:max_boxes], self.input_format)
        get_event_storage().put_image(f"Left: GT bounding boxes;  Right: {max_boxes} highest-scoring detections", both)

    def forward_training(
        self, images: ImageList, features: List[Tensor], predictions, gt_instances: List[Instances]
    ) -> Dict[str, Tensor]:
        """The losses of the head's `predictions` for `features` against the N images' GT."""
        raise NotImplementedError

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions) -> List[Instances]:
        """Per image, detections at the network's input size."""
        raise NotImplementedError

    def _transpose_dense_predictions(self, predictions: Sequence[List[Tensor]], dims_per_anchor: Sequence[int]) -> List[List[Tensor]]:
        """Each output of the head, L x `Tensor[N, A*K, Hi, Wi]`, as L x `Tensor[N, Hi*Wi*A, K]`
        with K its entry in `dims_per_anchor`."""
        if len(predictions) != len(dims_per_anchor):
            raise ValueError(f"the head gave {len(predictions)} outputs, expected {len(dims_per_anchor)}")
        return [[permute_to_N_HWA_K(x, k) for x in per_level] for per_level, k in zip(predictions, dims_per_anchor)]

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9) -> float:
        """Updates and returns the exponential moving average `self.<name>` (starting at `initial_value`).

        A loss normalised by the foreground count of a single batch is noisy when there are few
        images per GPU; Detectron2 divides by this average of the count instead.
        """
        new = getattr(self, name, initial_value) * momentum + value * (1 - momentum)
        setattr(self, name, new)
        self._ema_names.add(name)
        return new

    def training_state_dict(self) -> Dict[str, float]:
        """The moving averages of `_ema_update`: training progress that is not a weight. The trainer
        saves it in its checkpoints so that a resumed run normalises its losses as an uninterrupted
        one; it stays out of `state_dict`, whose names are Detectron2's (its checkpoints lack it)."""
        return {name: getattr(self, name) for name in sorted(self._ema_names)}

    def load_training_state_dict(self, state: Dict[str, float]) -> None:
        for name, value in state.items():
            setattr(self, name, float(value))
            self._ema_names.add(name)
