"""Panoptic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019): Mask R-CNN with a
semantic-segmentation branch on the same FPN, and the heuristic that combines both into one panoptic
segmentation.

Shape shorthand: N images, D detections of one image, K stuff classes, H x W the output image.
"""
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from d2mask.config import configurable
from d2mask.structures import Instances

from ..postprocessing import detector_postprocess, sem_seg_postprocess
from .build import META_ARCH_REGISTRY
from .rcnn import GeneralizedRCNN
from .semantic_seg import build_sem_seg_head, padded_sem_seg_targets

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs"]


@META_ARCH_REGISTRY.register()
class PanopticFPN(GeneralizedRCNN):
    """`GeneralizedRCNN` (backbone, proposal generator, ROI heads) plus a semantic-segmentation head
    on the backbone's features. Training inputs carry "instances" and a "sem_seg" label map whose
    label 0 stands for all thing classes (Detectron2's "separated" COCO panoptic format)."""

    @configurable
    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        combine_overlap_thresh: float = 0.5,
        combine_stuff_area_thresh: float = 4096,
        combine_instances_score_thresh: float = 0.5,
        combine_enabled: bool = True,
        instance_loss_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            sem_seg_head: `(features, targets) -> (logits, losses)` (see SEM_SEG_HEADS_REGISTRY).
            combine_overlap_thresh, combine_stuff_area_thresh, combine_instances_score_thresh: see
                `combine_semantic_and_instance_outputs`.
            combine_enabled: inference adds "panoptic_seg" to each image's outputs.
            instance_loss_weight: multiplies the losses of the ROI heads (not the RPN's).
            kwargs: those of `GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        if not 0.0 <= combine_overlap_thresh <= 1.0:
            raise ValueError(f"PanopticFPN: combine_overlap_thresh (COMBINE.OVERLAP_THRESH) must be in [0, 1], got {combine_overlap_thresh}")
        if instance_loss_weight < 0:
            raise ValueError(f"PanopticFPN: instance_loss_weight (INSTANCE_LOSS_WEIGHT) must be >= 0, got {instance_loss_weight}")
        self.sem_seg_head = sem_seg_head
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh
        self.combine_enabled = combine_enabled
        self.instance_loss_weight = instance_loss_weight

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
        ret.update(
            sem_seg_head=build_sem_seg_head(cfg, ret["backbone"].output_shape()),
            combine_overlap_thresh=combine.OVERLAP_THRESH,
            combine_stuff_area_thresh=combine.STUFF_AREA_LIMIT,
            combine_instances_score_thresh=combine.INSTANCES_CONFIDENCE_THRESH,
            combine_enabled=combine.ENABLED,
            instance_loss_weight=cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: N input dicts: "image", and in training "instances" and "sem_seg"
                (`Tensor[H, W]` class ids); optionally "height", "width".

        Returns:
            In training, the losses of the semantic head ("loss_sem_seg"), the RPN and the ROI heads.
            In inference, see `inference`.
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        targets = padded_sem_seg_targets(batched_inputs, self.backbone, self.sem_seg_head.ignore_value, self.device)
        _, losses = self.sem_seg_head(features, targets)
        gt_instances = self.gt_instances(batched_inputs)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        self._visualize_if_due(batched_inputs, proposals)
        losses.update(proposal_losses)
        losses.update({name: loss * self.instance_loss_weight for name, loss in detector_losses.items()})
        return losses

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """
        Returns:
            With `do_postprocess`, per image {"instances": Instances, "sem_seg": logits `Tensor[K,
            height, width]`, "panoptic_seg": (`Tensor[height, width]` int32 segment ids, segments
            info) as `combine_semantic_and_instance_outputs` returns (unless COMBINE.ENABLED is
            False)}. Otherwise the raw (list[Instances], logits `Tensor[N, K, H, W]`) at the
            network's input size.
        """
        if self.training:
            raise RuntimeError("inference() needs model.eval()")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_seg_results, _ = self.sem_seg_head(features, None)
        proposals, _ = self.proposal_generator(images, features, None)
        detector_results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return detector_results, sem_seg_results

        outputs = []
        for sem_seg, instances, inputs, size in zip(sem_seg_results, detector_results, batched_inputs, images.image_sizes):
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            output = {
                "sem_seg": sem_seg_postprocess(sem_seg, size, height, width),
                "instances": detector_postprocess(instances, height, width),
            }
            if self.combine_enabled:
                output["panoptic_seg"] = combine_semantic_and_instance_outputs(
                    output["instances"],
                    output["sem_seg"].argmax(dim=0),
                    self.combine_overlap_thresh,
                    self.combine_stuff_area_thresh,
                    self.combine_instances_score_thresh,
                )
            outputs.append(output)
        return outputs


def combine_semantic_and_instance_outputs(
    instance_results: Instances,
    semantic_results: Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> Tuple[Tensor, List[Dict[str, Any]]]:
    """One image's panoptic segmentation from its instances and its semantic segmentation, by the
    heuristic of the Panoptic FPN paper (panopticapi's combine_semantic_and_instance_predictions.py).

    Instances are pasted in decreasing score order, those scoring below `instances_score_thresh`
    left out; one whose mask lies by more than `overlap_threshold` of its area on instances already
    pasted is dropped, otherwise it takes the pixels still free. Then each semantic class other than
    0 (the "things" class) becomes one segment of the pixels it holds that are still free, unless
    fewer than `stuff_area_thresh`.

    The instances are pasted one after another on the device without waiting for it; the host reads
    from the device twice: how many instances score enough, and at the end the outcome.

    Args:
        instance_results: Instances(scores, pred_classes, pred_masks `Tensor[D, H, W]` bool) at the
            output size, as `detector_postprocess` returns them.
        semantic_results: `Tensor[H, W]` int class ids.
        overlap_threshold, stuff_area_thresh, instances_score_thresh: as above.

    Returns:
        panoptic_seg: `Tensor[H, W]` int32, the segment id of each pixel; 0 for none.
        segments_info: a dict per segment, in id order: {"id", "isthing": True, "score",
            "category_id" (thing class), "instance_id" (index in instance_results)} or {"id",
            "isthing": False, "category_id" (semantic class), "area"}.
    """
    device = semantic_results.device
    labels = semantic_results.long()
    panoptic_seg = torch.zeros(labels.shape, dtype=torch.int32, device=device)
    scores, order = torch.sort(instance_results.scores, descending=True)
    # The host reads the device twice per image: here, and the outcome at the end.
    num_eligible, max_label = torch.stack([(scores >= instances_score_thresh).sum(), labels.max()]).tolist()
    order = order[:num_eligible]  # the instances scoring enough are a prefix of the sorted ones
    masks = instance_results.pred_masks[order].to(device=device, dtype=torch.bool)  # (D', H, W)

    num_kept = torch.zeros((), dtype=torch.int32, device=device)
    kept = []
    for mask in masks:
        area = mask.sum()
        overlap = (mask & (panoptic_seg > 0)).sum()
        keep = (area > 0) & (overlap.double() <= overlap_threshold * area.double())
        num_kept = num_kept + keep.int()
        panoptic_seg = torch.where(mask & keep & (panoptic_seg == 0), num_kept, panoptic_seg)
        kept.append(keep)

    # The free pixels of every semantic class, counted at once; an extra last count collects the pixels
    # the instances took.
    free = panoptic_seg == 0
    num_classes = max_label + 1
    index = torch.where(free, labels, num_classes).flatten()
    areas = torch.zeros(num_classes + 1, dtype=torch.int64, device=device).scatter_add_(0, index, torch.ones_like(index))

    # One read of both outcomes; doubles hold the float32 scores and the integer ids and areas exactly.
    is_kept = torch.stack(kept) if kept else torch.zeros(0, dtype=torch.bool, device=device)
    columns = [is_kept, scores[:num_eligible], instance_results.pred_classes[order], order]
    things = torch.stack([c.double() for c in columns])  # (4, D')
    values = torch.cat([things.flatten(), areas[:num_classes].double()]).tolist()

    segments_info = []
    is_kept, thing_scores, classes, instance_ids = (values[i * num_eligible: (i + 1) * num_eligible] for i in range(4))
    for keep, score, category, instance_id in zip(is_kept, thing_scores, classes, instance_ids):
        if keep:
            segments_info.append({"id": len(segments_info) + 1, "isthing": True, "score": score,
                                  "category_id": int(category), "instance_id": int(instance_id)})
    # Class 0 is the things.
    segment_of_class = [0] * num_classes
    for label, area in enumerate(values[4 * num_eligible:]):
        if label != 0 and area > 0 and area >= stuff_area_thresh:
            segments_info.append({"id": len(segments_info) + 1, "isthing": False, "category_id": label, "area": int(area)})
            segment_of_class[label] = len(segments_info)
    segment_of_class = torch.tensor(segment_of_class, dtype=torch.int32, device=device)
    panoptic_seg = torch.where(free, segment_of_class[labels], panoptic_seg)
    return panoptic_seg, segments_info
