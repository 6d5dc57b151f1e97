"""torchvision's Mask R-CNN built with d2mask's settings, and d2mask inputs in its format, for
`tools/benchmark.py --compare torchvision` and `--compare torchvision-matched`."""
from typing import Dict, List


def _norm_layer(name: str, key: str):
    """The torchvision-style norm constructor (channels -> module) of a d2mask norm name; None for ""."""
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    norms = {"": None, "FrozenBN": FrozenBatchNorm2d, "BN": torch.nn.BatchNorm2d,
             "GN": lambda c: torch.nn.GroupNorm(32, c)}
    if name not in norms:
        raise ValueError(f"--compare torchvision supports {key} in {sorted(norms)}, got {name!r}")
    return norms[name]


def _settings(cfg, image_size) -> Dict:
    """MaskRCNN's keyword arguments for the config's settings: image size, classes' thresholds, anchors,
    RPN and ROI sampling, top-k, NMS, poolers."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    model_cfg = cfg.MODEL
    rpn, roi = model_cfg.RPN, model_cfg.ROI_HEADS
    sizes = [tuple(s) for s in model_cfg.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS]
    ratios = ratios * len(sizes) if len(ratios) == 1 else ratios
    levels = ["0", "1", "2", "3"]  # torchvision's names of p2..p5
    return dict(
        # Images come pre-sized: min_size/max_size make the test-time resize a no-op (scale 1), and
        # _skip_resize (torchvision's own option for this) skips the random training resize.
        min_size=min(image_size), max_size=max(image_size), _skip_resize=True,
        image_mean=list(model_cfg.PIXEL_MEAN), image_std=list(model_cfg.PIXEL_STD),
        rpn_anchor_generator=AnchorGenerator(tuple(sizes), tuple(ratios)),
        # Both frameworks take the pre-NMS top-k per level and image, and the post-NMS top-k per image.
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


def torchvision_model(cfg, image_size, device):
    """torchvision's `maskrcnn_resnet50_fpn` architecture (ResNet depth from the config), random weights,
    with the config's image size, classes, norm, frozen stages and the RPN/ROI settings torchvision has.

    It is assembled as `maskrcnn_resnet50_fpn` does, because that function, given no backbone weights,
    replaces FrozenBN by BatchNorm and trains every stage; here both follow RESNETS.NORM and FREEZE_AT.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    model_cfg = cfg.MODEL
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{model_cfg.RESNETS.DEPTH}", weights=None,
        norm_layer=_norm_layer(model_cfg.RESNETS.NORM, "MODEL.RESNETS.NORM"),
        trainable_layers=5 - model_cfg.BACKBONE.FREEZE_AT,
    )
    model = MaskRCNN(backbone, num_classes=model_cfg.ROI_HEADS.NUM_CLASSES + 1, **_settings(cfg, image_size))
    return model.to(device)


def _matched_backbone(cfg):
    """torchvision's ResNet and FPN modules in the config's architecture: the stride of a bottleneck in
    its 1x1 convolution when RESNETS.STRIDE_IN_1X1 (Detectron2's MSRA layout), stem and res2..res{k}
    frozen for FREEZE_AT k, FPN.OUT_CHANNELS and FPN.NORM."""
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    model_cfg = cfg.MODEL
    resnets, fpn = model_cfg.RESNETS, model_cfg.FPN
    if list(fpn.IN_FEATURES) != ["res2", "res3", "res4", "res5"] or resnets.RES5_DILATION != 1:
        raise ValueError(f"--compare torchvision-matched builds FPN on res2..res5 without dilation, got "
                         f"MODEL.FPN.IN_FEATURES {list(fpn.IN_FEATURES)}, RES5_DILATION {resnets.RES5_DILATION}")
    resnet = getattr(torchvision.models, f"resnet{resnets.DEPTH}")(
        weights=None, norm_layer=_norm_layer(resnets.NORM, "MODEL.RESNETS.NORM"))
    stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    if resnets.DEPTH >= 50 and resnets.STRIDE_IN_1X1:
        for block in (b for stage in stages for b in stage):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, block.conv1.stride
    frozen = ([resnet.conv1, resnet.bn1] if model_cfg.BACKBONE.FREEZE_AT >= 1 else []) + stages[:max(model_cfg.BACKBONE.FREEZE_AT - 1, 0)]
    for module in frozen:
        module.requires_grad_(False)
    return BackboneWithFPN(
        resnet, {f"layer{k}": str(k - 1) for k in range(1, 5)},
        [resnets.RES2_OUT_CHANNELS * 2**i for i in range(4)], fpn.OUT_CHANNELS,
        extra_blocks=LastLevelMaxPool(), norm_layer=_norm_layer(fpn.NORM, "MODEL.FPN.NORM"),
    )


def torchvision_matched_model(cfg, image_size, device):
    """torchvision's Mask R-CNN modules assembled into the config's (Detectron2's) architecture, random
    weights: `_matched_backbone`, and box and mask heads of ROI_BOX_HEAD's NUM_CONV x CONV_DIM
    convolutions then NUM_FC x FC_DIM layers and ROI_MASK_HEAD's NUM_CONV x CONV_DIM convolutions, each
    with its NORM; the settings of `torchvision_model`."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    model_cfg = cfg.MODEL
    box, mask = model_cfg.ROI_BOX_HEAD, model_cfg.ROI_MASK_HEAD
    classes = model_cfg.ROI_HEADS.NUM_CLASSES + 1  # torchvision's class 0 is the background
    channels = model_cfg.FPN.OUT_CHANNELS
    if box.NUM_FC < 1:
        raise ValueError(f"--compare torchvision-matched needs MODEL.ROI_BOX_HEAD.NUM_FC >= 1, got {box.NUM_FC}")
    model = MaskRCNN(
        _matched_backbone(cfg),
        box_head=FastRCNNConvFCHead(
            (channels, box.POOLER_RESOLUTION, box.POOLER_RESOLUTION), [box.CONV_DIM] * box.NUM_CONV,
            [box.FC_DIM] * box.NUM_FC, norm_layer=_norm_layer(box.NORM, "MODEL.ROI_BOX_HEAD.NORM")),
        box_predictor=FastRCNNPredictor(box.FC_DIM, classes),
        mask_head=MaskRCNNHeads(channels, [mask.CONV_DIM] * mask.NUM_CONV, 1,
                                norm_layer=_norm_layer(mask.NORM, "MODEL.ROI_MASK_HEAD.NORM")),
        mask_predictor=MaskRCNNPredictor(mask.CONV_DIM if mask.NUM_CONV else channels, mask.CONV_DIM, classes),
        **_settings(cfg, image_size),
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


TWINS = {"torchvision": torchvision_model, "torchvision-matched": torchvision_matched_model}
