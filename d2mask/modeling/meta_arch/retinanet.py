"""RetinaNet (Lin et al., 2017, "Focal Loss for Dense Object Detection"): a one-stage detector that
classifies and regresses every anchor of every FPN level, trained with the focal loss.

Shape shorthand: `N` images, `L` levels, `Hi x Wi` the size of level i, `A` anchors per location, `K`
foreground classes (label `K` is background), `R` anchors over all levels (sum of Hi*Wi*A), `C` channels.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from d2mask.config import ConfigError, config_keys, configurable
from d2mask.layers import CycleBatchNormList, ShapeSpec, batched_nms, cat, get_norm
from d2mask.structures import Boxes, ImageList, Instances
from d2mask.utils.events import get_event_storage, has_event_storage

from ..anchor_generator import build_anchor_generator
from ..backbone import Backbone, build_backbone
from ..backbone.backbone import in_feature_shapes
from ..box_regression import Box2BoxTransform, box_regression_loss, check_box_reg_loss_type
from ..matcher import build_anchor_matcher, classes_of_matches, stage_keys
from .build import META_ARCH_REGISTRY
from .dense_detector import DenseDetector, permute_to_N_HWA_K  # noqa: F401 (Detectron2 exports it here too)

__all__ = ["RetinaNet", "RetinaNetHead"]


class RetinaNetHead(nn.Module):
    """Two subnets of 3x3 convs with ReLU, shared by all levels: one ends in A*K class logits, the other
    in A*4 box deltas per location."""

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: List[int],
        norm: str = "",
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: the L feature levels the head reads (all with the same channels).
            num_classes: K.
            num_anchors: A, the anchors per location of every level.
            conv_dims: output channels of each conv of a subnet (before its output conv).
            norm: the normalisation after each subnet conv, a `get_norm` name. "BN" and "SyncBN" get
                separate statistics for each of the L levels and one shared affine transform
                (`CycleBatchNormList`, as Detectron2): the levels' statistics differ too much to share.
            prior_prob: the foreground probability every anchor and class starts at; the focal loss
                of the many easy negatives would otherwise swamp the first iterations.
        """
        super().__init__()
        if not conv_dims:
            raise ValueError("RetinaNetHead needs at least one subnet conv (MODEL.RETINANET.NUM_CONVS >= 1)")
        if not num_classes > 0:
            raise ValueError(f"RetinaNetHead num_classes (MODEL.RETINANET.NUM_CLASSES) must be > 0, got {num_classes}")
        if not 0 < prior_prob < 1:
            raise ValueError(f"RetinaNetHead prior_prob (MODEL.RETINANET.PRIOR_PROB) must be in (0, 1), got {prior_prob}")
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"RetinaNetHead shares its convs over levels, which need equal channels; got {sorted(channels)}")
        in_channels = channels.pop()
        subnet_norm: Union[str, Callable[[int], nn.Module]] = norm
        if norm in ("BN", "SyncBN"):
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm
            num_levels = len(input_shape)

            def subnet_norm(channels: int) -> nn.Module:
                return CycleBatchNormList(length=num_levels, bn_class=bn_class, num_features=channels)

        self.cls_subnet = self._subnet(in_channels, conv_dims, subnet_norm)
        self.bbox_subnet = self._subnet(in_channels, conv_dims, subnet_norm)
        self.cls_score = nn.Conv2d(conv_dims[-1], num_anchors * num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(conv_dims[-1], num_anchors * 4, kernel_size=3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)
        # sigmoid(bias) = prior_prob
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _subnet(in_channels: int, conv_dims: List[int], norm: Union[str, Callable[[int], nn.Module]]) -> nn.Sequential:
        layers = []
        for dim in conv_dims:
            layers.append(nn.Conv2d(in_channels, dim, kernel_size=3, padding=1))
            if norm:
                layers.append(get_norm(norm, dim))
            layers.append(nn.ReLU())
            in_channels = dim
        return nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        num_anchors = set(build_anchor_generator(cfg, input_shape).num_anchors)
        if len(num_anchors) != 1:
            raise ConfigError(
                f"MODEL.ANCHOR_GENERATOR gives {sorted(num_anchors)} anchors per location on different levels; "
                f"the shared RetinaNet head needs the same number on every level"
            )
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "num_anchors": num_anchors.pop(),
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
            "norm": cfg.MODEL.RETINANET.NORM,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """L maps `Tensor[N, C, Hi, Wi]` -> (L x `Tensor[N, A*K, Hi, Wi]` logits, L x `Tensor[N, A*4, Hi, Wi]` deltas)."""
        logits = [self.cls_score(self.cls_subnet(x)) for x in features]
        deltas = [self.bbox_pred(self.bbox_subnet(x)) for x in features]
        return logits, deltas


@META_ARCH_REGISTRY.register()
class RetinaNet(DenseDetector):
    """RetinaNet: a backbone (ResNet-FPN with p3-p7), a `RetinaNetHead`, anchors matched to the GT by
    IoU, the sigmoid focal loss over all non-ignored anchors and the box loss over the foreground ones,
    both divided by a moving average of the foreground count."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Sequence[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Callable[..., Tuple[Tensor, Tensor]],
        num_classes: int,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        vis_period: int = 0,
        input_format: Optional[str] = None,
    ):
        """
        Args:
            backbone: images -> {feature name: feature map}.
            head: L feature maps -> (L class logits `Tensor[N, A*K, Hi, Wi]`, L deltas `Tensor[N, A*4, Hi, Wi]`).
            head_in_features: the backbone features the head reads, finest first.
            anchor_generator: L feature maps -> L `Boxes` of Hi*Wi*A anchors.
            box2box_transform: the coding of the anchor deltas.
            anchor_matcher: `(gt_boxes, anchors, num_per_level) -> (matched_idxs, match_labels)` (see Matcher).
            num_classes: K.
            focal_loss_alpha, focal_loss_gamma: the focal loss's weight of positives and focusing power.
            smooth_l1_beta: the smooth-L1 transition point; 0 is L1.
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            test_score_thresh: candidates must score strictly above this.
            test_topk_candidates: the most candidates per level kept before NMS.
            test_nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
            max_detections_per_image: the most detections returned per image; < 0 returns all.
            pixel_mean, pixel_std, vis_period, input_format: see `DenseDetector`.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std, vis_period=vis_period,
            input_format=input_format,
        )
        check_box_reg_loss_type(box_reg_loss_type, "RetinaNet", "MODEL.RETINANET.BBOX_REG_LOSS_TYPE")
        checks = [
            ("num_classes", "NUM_CLASSES", num_classes, num_classes > 0, "an int > 0"),
            ("focal_loss_alpha", "FOCAL_LOSS_ALPHA", focal_loss_alpha, 0 <= focal_loss_alpha <= 1, "in [0, 1]"),
            ("focal_loss_gamma", "FOCAL_LOSS_GAMMA", focal_loss_gamma, focal_loss_gamma >= 0, "a number >= 0"),
            ("smooth_l1_beta", "SMOOTH_L1_LOSS_BETA", smooth_l1_beta, smooth_l1_beta >= 0, "a number >= 0"),
            ("test_score_thresh", "SCORE_THRESH_TEST", test_score_thresh, 0 <= test_score_thresh <= 1, "in [0, 1]"),
            ("test_topk_candidates", "TOPK_CANDIDATES_TEST", test_topk_candidates, test_topk_candidates > 0, "an int > 0"),
            ("test_nms_thresh", "NMS_THRESH_TEST", test_nms_thresh, 0 <= test_nms_thresh <= 1, "in [0, 1]"),
        ]
        for argument, key, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"RetinaNet {argument} (MODEL.RETINANET.{key}) must be {expected}, got {value}")
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.num_classes = num_classes
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

    @classmethod
    def from_config(cls, cfg):
        retinanet = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        feature_shapes = in_feature_shapes("MODEL.RETINANET.IN_FEATURES", retinanet.IN_FEATURES, backbone_shape)
        keys = dict(stage_keys("MODEL.RETINANET"), weights="MODEL.RETINANET.BBOX_REG_WEIGHTS", norm="MODEL.RETINANET.NORM")
        with config_keys(**keys):
            head = RetinaNetHead(cfg, feature_shapes)
            box2box_transform = Box2BoxTransform(weights=retinanet.BBOX_REG_WEIGHTS)
            matcher = build_anchor_matcher(cfg, retinanet)
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(retinanet.IN_FEATURES),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": box2box_transform,
            "anchor_matcher": matcher,
            "num_classes": retinanet.NUM_CLASSES,
            "focal_loss_alpha": retinanet.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": retinanet.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": retinanet.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": retinanet.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": retinanet.SCORE_THRESH_TEST,
            "test_topk_candidates": retinanet.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retinanet.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward_training(
        self, images: ImageList, features: List[Tensor], predictions, gt_instances: List[Instances]
    ) -> Dict[str, Tensor]:
        """{"loss_cls", "loss_box_reg"} of the head's predictions (see `losses`)."""
        pred_logits, pred_deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]) -> Tuple[List[Tensor], List[Tensor]]:
        """Matches the anchors to each image's GT boxes.

        Args:
            anchors: L Boxes, the anchors of each level (the same for every image).
            gt_instances: N Instances with `gt_boxes` and `gt_classes`.

        Returns:
            gt_labels: N tensors `Tensor[R]` int64: the matched GT's class, K for background, -1 ignored.
            matched_gt_boxes: N tensors `Tensor[R, 4]`, each anchor's matched GT box (meaningful for
                the foreground only; zeros in an image without GT).
        """
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            matched_idxs, match_labels = self.anchor_matcher(instances.gt_boxes, anchors, num_per_level=num_per_level)
            gt_labels.append(classes_of_matches(instances.gt_classes, matched_idxs, match_labels, self.num_classes))
            if len(instances) > 0:
                matched_gt_boxes.append(instances.gt_boxes.tensor[matched_idxs])
            else:
                matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        gt_labels: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """The RetinaNet losses of a batch.

        Args:
            anchors: L Boxes of Hi*Wi*A anchors.
            pred_logits: L tensors `Tensor[N, Hi*Wi*A, K]`.
            gt_labels: N tensors `Tensor[R]` from `label_anchors`.
            pred_anchor_deltas: L tensors `Tensor[N, Hi*Wi*A, 4]`.
            gt_boxes: N tensors `Tensor[R, 4]` from `label_anchors`.

        Returns:
            {"loss_cls": the sigmoid focal loss summed over the K classes of every non-ignored anchor
            (background anchors have all-zero targets), "loss_box_reg": the box loss summed over the
            foreground anchors}, each divided by the moving average of the foreground count per batch.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        valid = labels >= 0
        foreground = valid & (labels != self.num_classes)
        num_foreground = foreground.sum().item()
        if has_event_storage():
            get_event_storage().put_scalar("num_pos_anchors", num_foreground / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_foreground, 1), 100)

        logits = cat(pred_logits, dim=1)  # (N, R, K)
        # one-hot over K + 1 labels, the background column dropped: background targets are all zero
        targets = F.one_hot(labels[valid], num_classes=self.num_classes + 1)[:, :-1].to(logits.dtype)
        loss_cls = sigmoid_focal_loss(
            logits[valid], targets, alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="sum"
        )
        anchors_tensor = Boxes.cat(anchors).tensor  # (R, 4)
        # (R, 4) -> (N, R, 4), then the foreground of all images -> (P, 4)
        loss_box_reg = box_regression_loss(
            self.box2box_transform,
            anchors_tensor[None].expand(num_images, -1, -1)[foreground],
            cat(pred_anchor_deltas, dim=1)[foreground],
            torch.stack(gt_boxes)[foreground],
            self.box_reg_loss_type,
            self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions) -> List[Instances]:
        """Per image, the detections of `inference_single_image` at the network's input size."""
        pred_logits, pred_deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        return [
            self.inference_single_image(
                anchors, [x[i].sigmoid() for x in pred_logits], [x[i] for x in pred_deltas], image_size
            )
            for i, image_size in enumerate(images.image_sizes)
        ]

    def inference_single_image(
        self, anchors: List[Boxes], box_cls: List[Tensor], box_delta: List[Tensor], image_size: Tuple[int, int]
    ) -> Instances:
        """One image's detections: on each level, the `test_topk_candidates` (anchor, class) pairs scoring
        above `test_score_thresh`, decoded; then NMS within each class over all levels, and the
        `max_detections_per_image` best survivors.

        Args:
            anchors: L Boxes of Hi*Wi*A anchors.
            box_cls: L tensors `Tensor[Hi*Wi*A, K]` of class probabilities.
            box_delta: L tensors `Tensor[Hi*Wi*A, 4]`.
            image_size: (height, width) of the network input.

        Returns:
            Instances(pred_boxes, scores, pred_classes), by decreasing score.
        """
        boxes, scores, classes = [], [], []
        for anchors_i, scores_i, deltas_i in zip(anchors, box_cls, box_delta):
            candidates = (scores_i > self.test_score_thresh).nonzero()  # (D', 2): anchor, class
            candidate_scores = scores_i[candidates[:, 0], candidates[:, 1]]
            candidate_scores, top = candidate_scores.topk(min(len(candidate_scores), self.test_topk_candidates))
            anchor_idx, class_idx = candidates[top].unbind(dim=1)
            boxes.append(self.box2box_transform.apply_deltas(deltas_i[anchor_idx], anchors_i.tensor[anchor_idx]))
            scores.append(candidate_scores)
            classes.append(class_idx)
        boxes, scores, classes = cat(boxes), cat(scores), cat(classes)
        most = self.max_detections_per_image
        keep = batched_nms(boxes, scores, classes, self.test_nms_thresh, max_kept=most if most >= 0 else None)
        return Instances(image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep])
