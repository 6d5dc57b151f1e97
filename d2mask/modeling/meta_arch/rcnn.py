"""R-CNN meta-architectures: `GeneralizedRCNN` (Faster/Mask R-CNN) and `ProposalNetwork` (RPN only).

Both take Detectron2's inputs, a list of N dicts, one per image:
- "image": `Tensor[C, H, W]`, uint8 or float, channels in INPUT.FORMAT order (BGR by default);
- "instances" (training): Instances(gt_boxes, gt_classes[, gt_masks]);
- "height", "width" (optional): the size to rescale outputs to, normally the original image's.
"""
from typing import Dict, List, Optional, Sequence

from torch import nn

from d2mask.config import configurable
from d2mask.structures import Instances
from d2mask.utils.events import get_event_storage, has_event_storage

from ..backbone import Backbone, build_backbone
from ..proposal_generator import build_proposal_generator
from ..roi_heads import build_roi_heads
from .batched_inputs import NormalizedInput, gt_beside_boxes, rescale_to_inputs
from .build import META_ARCH_REGISTRY

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(NormalizedInput):
    """Faster R-CNN / Mask R-CNN: a backbone, then a proposal generator, then ROI heads.

    The proposal generator is normally the RPN; the ROI heads have a box branch and, for Mask R-CNN,
    a mask branch.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: Optional[str] = None,
        vis_period: int = 0,
    ):
        """
        Args:
            backbone: images -> {feature name: feature map}.
            proposal_generator: `(images, features, gt_instances) -> (proposals, losses)`.
            roi_heads: `(images, features, proposals, gt_instances) -> (instances, losses)`.
            pixel_mean, pixel_std: per-channel statistics the input images are normalised with.
            input_format: channel order of the input images ("BGR", "RGB", "L"); needed to draw them.
            vis_period: in training, every this many iterations of an active event storage, log an
                image of the GT boxes beside the top proposals; 0 never.
        """
        super().__init__(pixel_mean, pixel_std)
        if vis_period > 0 and input_format is None:
            raise ValueError("GeneralizedRCNN needs input_format (INPUT.FORMAT) to visualise training (VIS_PERIOD > 0)")
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.vis_period = vis_period

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: N input dicts (see the module docstring).

        Returns:
            In training, {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"[, "loss_mask"]}.
            In inference, per image {"instances": Instances(pred_boxes, scores, pred_classes
            [, pred_masks: Tensor[D, height, width] bool])} at each input's "height"/"width".
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = self.gt_instances(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        self._visualize_if_due(batched_inputs, proposals)
        return {**proposal_losses, **detector_losses}

    def _visualize_if_due(self, batched_inputs: List[Dict], proposals: List[Instances]) -> None:
        """`visualize_training` every `vis_period` iterations of an active event storage."""
        if self.vis_period > 0 and has_event_storage() and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

    def visualize_training(self, batched_inputs: List[Dict], proposals: List[Instances], max_proposals: int = 20) -> None:
        """Puts in the active event storage an image of the first input: its GT boxes (left) beside its
        `max_proposals` most confident proposals (right), to check what the RPN learns."""
        both = gt_beside_boxes(batched_inputs[0], proposals[0].proposal_boxes[:max_proposals], self.input_format)
        get_event_storage().put_image("Left: GT bounding boxes;  Right: Predicted proposals", both)

    def inference(
        self,
        batched_inputs: List[Dict],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """Detections for each input.

        Args:
            batched_inputs: N input dicts.
            detected_instances: per image, known boxes (pred_boxes, pred_classes) to run only the
                non-box branches (masks) on; None to detect.
            do_postprocess: rescale to "height"/"width" and paste masks; False returns the raw
                Instances at the network's input size (masks as `Tensor[D, 1, M, M]` probabilities).

        Returns:
            With `do_postprocess`, per image {"instances": Instances}; otherwise list[Instances].
        """
        if self.training:
            raise RuntimeError("inference() needs model.eval()")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            proposals, _ = self.proposal_generator(images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected)
        if not do_postprocess:
            return results
        return [{"instances": r} for r in rescale_to_inputs(results, batched_inputs, images.image_sizes)]


@META_ARCH_REGISTRY.register()
class ProposalNetwork(NormalizedInput):
    """A backbone and a proposal generator only: trains the RPN and outputs its proposals."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """See `GeneralizedRCNN`."""
        super().__init__(pixel_mean, pixel_std)
        self.backbone = backbone
        self.proposal_generator = proposal_generator

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Returns:
            In training, {"loss_rpn_cls", "loss_rpn_loc"}; in inference, per image
            {"proposals": Instances(proposal_boxes, objectness_logits)} at each input's "height"/"width".
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = self.gt_instances(batched_inputs) if self.training else None
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return losses
        return [{"proposals": p} for p in rescale_to_inputs(proposals, batched_inputs, images.image_sizes)]
