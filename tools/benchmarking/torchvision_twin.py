"""torchvision's Mask R-CNN built with d2mask's settings, and d2mask inputs in its format, for
`tools/benchmark.py --compare torchvision`."""
from typing import Dict, List


def torchvision_model(cfg, image_size, device):
    """torchvision's `maskrcnn_resnet50_fpn` architecture (ResNet depth from the config), random weights,
    with the config's image size, classes, norm, frozen stages and the RPN/ROI settings torchvision has.

    It is assembled as `maskrcnn_resnet50_fpn` does, because that function, given no backbone weights,
    replaces FrozenBN by BatchNorm and trains every stage; here both follow RESNETS.NORM and FREEZE_AT.
    """
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

    norms = {"FrozenBN": FrozenBatchNorm2d, "BN": torch.nn.BatchNorm2d, "GN": lambda c: torch.nn.GroupNorm(32, c)}
    model_cfg = cfg.MODEL
    if model_cfg.RESNETS.NORM not in norms:
        raise ValueError(f"--compare torchvision supports MODEL.RESNETS.NORM in {sorted(norms)}, "
                         f"got {model_cfg.RESNETS.NORM!r}")
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{model_cfg.RESNETS.DEPTH}", weights=None,
        norm_layer=norms[model_cfg.RESNETS.NORM], trainable_layers=5 - model_cfg.BACKBONE.FREEZE_AT,
    )
    rpn, roi = model_cfg.RPN, model_cfg.ROI_HEADS
    sizes = [tuple(s) for s in model_cfg.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS]
    ratios = ratios * len(sizes) if len(ratios) == 1 else ratios
    levels = ["0", "1", "2", "3"]  # torchvision's names of p2..p5
    model = MaskRCNN(
        backbone,
        num_classes=roi.NUM_CLASSES + 1,
        # Images come pre-sized: min_size/max_size make the test-time resize a no-op (scale 1), and
        # _skip_resize (torchvision's own option for this) skips the random training resize.
        min_size=min(image_size), max_size=max(image_size), _skip_resize=True,
        image_mean=list(model_cfg.PIXEL_MEAN), image_std=list(model_cfg.PIXEL_STD),
        rpn_anchor_generator=AnchorGenerator(tuple(sizes), tuple(ratios)),
        rpn_pre_nms_top_n_train=rpn.PRE_NMS_TOPK_TRAIN, rpn_pre_nms_top_n_test=rpn.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=rpn.POST_NMS_TOPK_TRAIN, rpn_post_nms_top_n_test=rpn.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=rpn.NMS_THRESH, rpn_fg_iou_thresh=rpn.IOU_THRESHOLDS[-1],
        rpn_bg_iou_thresh=rpn.IOU_THRESHOLDS[0], rpn_batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=rpn.POSITIVE_FRACTION,
        box_roi_pool=MultiScaleRoIAlign(levels, model_cfg.ROI_BOX_HEAD.POOLER_RESOLUTION,
                                        model_cfg.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO),
        mask_roi_pool=MultiScaleRoIAlign(levels, model_cfg.ROI_MASK_HEAD.POOLER_RESOLUTION,
                                         model_cfg.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO),
        box_score_thresh=roi.SCORE_THRESH_TEST, box_nms_thresh=roi.NMS_THRESH_TEST,
        box_detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE, box_fg_iou_thresh=roi.IOU_THRESHOLDS[-1],
        box_bg_iou_thresh=roi.IOU_THRESHOLDS[0], box_batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=roi.POSITIVE_FRACTION,
    )
    return model.to(device)


def torchvision_inputs(batch: List[Dict]):
    """The same images and GT in torchvision's format: labels 1..K (0 is background), uint8 masks."""
    import torch

    from d2mask.structures import BitMasks, PolygonMasks

    images, targets = [], []
    for inputs in batch:
        images.append(inputs["image"])
        if "instances" not in inputs:
            continue
        instances = inputs["instances"]
        masks = instances.gt_masks
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
        targets.append({
            "boxes": instances.gt_boxes.tensor,
            "labels": instances.gt_classes + 1,
            "masks": masks.tensor.to(device=instances.gt_boxes.device, dtype=torch.uint8),
        })
    return images, targets
