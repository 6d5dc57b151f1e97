"""Region Proposal Network (Ren et al., 2015): objectness and box deltas for every anchor, losses
against matched ground truth, and the top-scoring decoded boxes as proposals.

Shape shorthand: `N` images, `L` levels, `Hi x Wi` the size of level i, `A` anchors per location,
`B` box dimension (4), `R` anchors over all levels (sum of Hi*Wi*A), `G` GT boxes of one image.
"""
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2mask.config import ConfigError, config_keys, configurable
from d2mask.layers import Conv2d, ShapeSpec, cat
from d2mask.structures import Boxes, ImageList, Instances
from d2mask.utils.registry import Registry

from ..anchor_generator import build_anchor_generator, permute_to_N_HWA_K
from ..backbone.backbone import in_feature_shapes
from ..box_regression import Box2BoxTransform, box_regression_loss, check_box_reg_loss_type
from ..matcher import build_anchor_matcher, stage_keys
from ..sampling import build_sampler, resolve_sampler
from .build import PROPOSAL_GENERATOR_REGISTRY
from .proposal_utils import find_top_rpn_proposals

__all__ = ["RPN_HEAD_REGISTRY", "StandardRPNHead", "RPN", "build_rpn_head"]

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
RPN heads, selected by MODEL.RPN.HEAD_NAME.

Each is called as `cls(cfg, input_shape: list[ShapeSpec])` (one per level) and returns an nn.Module
mapping L feature maps to `(objectness: L x Tensor[N, A, Hi, Wi], deltas: L x Tensor[N, A*B, Hi, Wi])`.
"""


def build_rpn_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Builds the RPN head named by MODEL.RPN.HEAD_NAME."""
    return RPN_HEAD_REGISTRY.get(cfg.MODEL.RPN.HEAD_NAME)(cfg, input_shape)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """3x3 convolution(s) with ReLU, then 1x1 convolutions predicting A objectness logits and A*B
    deltas per location; the same weights serve every level."""

    @configurable
    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: List[int] = (-1,)):
        """
        Args:
            in_channels: channels of every input level.
            num_anchors: anchors per location (A).
            box_dim: numbers per box delta (B).
            conv_dims: channels of each shared 3x3 convolution; -1 means the previous layer's
                channels (`in_channels` for the first), as in Detectron2.
        """
        super().__init__()
        if len(conv_dims) == 0:
            raise ValueError("StandardRPNHead conv_dims (MODEL.RPN.CONV_DIMS) must list at least one convolution")
        channels = in_channels
        convs = []
        for dim in conv_dims:
            out = channels if dim == -1 else dim
            if out <= 0:
                raise ValueError(f"StandardRPNHead conv_dims (MODEL.RPN.CONV_DIMS) must be positive or -1, got {list(conv_dims)}")
            convs.append(Conv2d(channels, out, kernel_size=3, padding=1, activation=nn.ReLU(inplace=True)))
            channels = out
        # One convolution is named `conv`, several `conv.conv{i}`: Detectron2's checkpoint names.
        if len(convs) == 1:
            self.conv = convs[0]
        else:
            self.conv = nn.Sequential()
            for i, conv in enumerate(convs):
                self.conv.add_module(f"conv{i}", conv)
        self.objectness_logits = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * box_dim, kernel_size=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ConfigError(f"MODEL.RPN.IN_FEATURES must all have the same channels for a shared head, got {sorted(channels)}")
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ConfigError(
                f"MODEL.ANCHOR_GENERATOR gives {anchor_generator.num_anchors} anchors per location on the "
                f"levels; a shared RPN head needs the same number on every level"
            )
        return {
            "in_channels": channels.pop(),
            "num_anchors": num_anchors.pop(),
            "box_dim": anchor_generator.box_dim,
            "conv_dims": list(cfg.MODEL.RPN.CONV_DIMS),
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """L maps `Tensor[N, C, Hi, Wi]` -> (L x `Tensor[N, A, Hi, Wi]`, L x `Tensor[N, A*B, Hi, Wi]`)."""
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            dtype = self.objectness_logits.weight.dtype
            if t.dtype != dtype:
                # Under mixed precision the 1x1 predictors still run in the weights' float32:
                # bfloat16 logits keep 8 significant bits, so the top-k proposals would be picked
                # among many ties, and bfloat16 deltas move a 512 px anchor's box by up to 2 px.
                with torch.autocast(t.device.type, enabled=False):
                    logits_i, deltas_i = self.objectness_logits(t.to(dtype)), self.anchor_deltas(t.to(dtype))
            else:
                logits_i, deltas_i = self.objectness_logits(t), self.anchor_deltas(t)
            logits.append(logits_i)
            deltas.append(deltas_i)
        return logits, deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """The Region Proposal Network, assembled from a head, an anchor generator, an anchor matcher, a
    sampler and a box coding, each replaceable from config or in the constructor."""

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Callable[..., Tuple[Tensor, Tensor]],
        sampler: Optional[Callable[[Tensor], Tuple[Tensor, Tensor]]] = None,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: Optional[float] = None,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ):
        """
        Args:
            in_features: names of the backbone features the RPN reads, finest first.
            head: maps the L features to objectness logits and anchor deltas (see StandardRPNHead).
            anchor_generator: maps the L features to L `Boxes` of anchors.
            anchor_matcher: `(gt_boxes, anchors, num_per_level) -> (matched_idxs, match_labels)` (see Matcher).
            sampler: `match_labels -> (pos_idx, neg_idx)` (see RandomSampler).
            box2box_transform: the coding of anchor deltas.
            batch_size_per_image: the sampler's budget per image; both losses are divided by it times
                the number of images, as in Detectron2, so their scale does not depend on how many
                anchors happen to be sampled.
            positive_fraction: Detectron2's form instead of `sampler`: a `RandomSampler` drawing
                `batch_size_per_image` anchors, at most this share of them positive.
            pre_nms_topk: (training, inference) boxes kept per level and image before NMS.
            post_nms_topk: (training, inference) proposals kept per image after NMS.
            nms_thresh: IoU threshold of the NMS over proposals.
            min_box_size: proposals with a side not larger than this are dropped.
            anchor_boundary_thresh: anchors reaching more than this outside the image are ignored in
                training; < 0 keeps all.
            loss_weight: a weight for both losses, or a dict {"loss_rpn_cls": w1, "loss_rpn_loc": w2}.
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            smooth_l1_beta: the smooth-L1 transition point; 0 is L1.
        """
        super().__init__()
        check_box_reg_loss_type(box_reg_loss_type, "RPN", "MODEL.RPN.BBOX_REG_LOSS_TYPE")
        for argument, keys, pair in (("pre_nms_topk", "PRE_NMS_TOPK_TRAIN/TEST", pre_nms_topk),
                                     ("post_nms_topk", "POST_NMS_TOPK_TRAIN/TEST", post_nms_topk)):
            if len(pair) != 2 or not all(k > 0 for k in pair):
                raise ValueError(f"RPN {argument} (MODEL.RPN.{keys}) must be (training, inference) ints > 0, got {pair}")
        if not 0 <= nms_thresh <= 1:
            raise ValueError(f"RPN nms_thresh (MODEL.RPN.NMS_THRESH) must be in [0, 1], got {nms_thresh}")
        if not min_box_size >= 0:
            raise ValueError(f"RPN min_box_size (MODEL.PROPOSAL_GENERATOR.MIN_SIZE) must be >= 0, got {min_box_size}")
        if not smooth_l1_beta >= 0:
            raise ValueError(f"RPN smooth_l1_beta (MODEL.RPN.SMOOTH_L1_BETA) must be a number >= 0, got {smooth_l1_beta}")
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        # batch_size_per_image is the loss normaliser too, so only positive_fraction competes with a sampler.
        self.sampler = resolve_sampler(
            type(self).__name__, sampler, None if sampler is not None else batch_size_per_image, positive_fraction
        )
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_rpn_cls": loss_weight, "loss_rpn_loc": loss_weight}
        self.loss_weight = dict(loss_weight)
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        rpn = cfg.MODEL.RPN
        shapes = in_feature_shapes("MODEL.RPN.IN_FEATURES", rpn.IN_FEATURES, input_shape)
        with config_keys(**stage_keys("MODEL.RPN"), weights="MODEL.RPN.BBOX_REG_WEIGHTS"):
            matcher, sampler = build_anchor_matcher(cfg, rpn), build_sampler(cfg, rpn)
            box2box_transform = Box2BoxTransform(weights=rpn.BBOX_REG_WEIGHTS)
        return {
            "in_features": list(rpn.IN_FEATURES),
            "head": build_rpn_head(cfg, shapes),
            "anchor_generator": build_anchor_generator(cfg, shapes),
            "anchor_matcher": matcher,
            "sampler": sampler,
            "box2box_transform": box2box_transform,
            "batch_size_per_image": rpn.BATCH_SIZE_PER_IMAGE,
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "nms_thresh": rpn.NMS_THRESH,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "anchor_boundary_thresh": rpn.BOUNDARY_THRESH,
            "loss_weight": {
                "loss_rpn_cls": rpn.LOSS_WEIGHT,
                "loss_rpn_loc": rpn.BBOX_REG_LOSS_WEIGHT * rpn.LOSS_WEIGHT,
            },
            "box_reg_loss_type": rpn.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": rpn.SMOOTH_L1_BETA,
        }

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Matches the anchors to each image's GT boxes and samples those that train the RPN.

        Args:
            anchors: L Boxes, the anchors of each level (the same for every image).
            gt_instances: N Instances with `gt_boxes`.

        Returns:
            gt_labels: N tensors `Tensor[R]` int8: 1 sampled positive, 0 sampled negative, -1 not
                sampled (ignored, or left out by the sampler). An image without GT boxes has only
                negatives to sample.
            matched_gt_boxes: N tensors `Tensor[R, 4]`, each anchor's matched GT box (meaningful for
                positives only; zeros for an image without GT boxes).
        """
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            gt_boxes = instances.gt_boxes
            matched_idxs, match_labels = self.anchor_matcher(gt_boxes, anchors, num_per_level=num_per_level)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                match_labels = match_labels.masked_fill(~inside, -1)
            pos_idx, neg_idx = self.sampler(match_labels)
            labels = torch.full_like(match_labels, -1)
            labels[pos_idx] = 1
            labels[neg_idx] = 0
            gt_labels.append(labels)
            if len(gt_boxes) == 0:
                matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
            else:
                matched_gt_boxes.append(gt_boxes.tensor[matched_idxs])
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[Tensor],
        gt_labels: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """The RPN losses over the sampled anchors of the batch.

        Args:
            anchors: L Boxes of Hi*Wi*A anchors.
            pred_objectness_logits: L tensors `Tensor[N, Hi*Wi*A]`.
            gt_labels: N tensors `Tensor[R]` from `label_and_sample_anchors`.
            pred_anchor_deltas: L tensors `Tensor[N, Hi*Wi*A, B]`.
            gt_boxes: N tensors `Tensor[R, B]` from `label_and_sample_anchors`.

        Returns:
            {"loss_rpn_cls": binary cross-entropy over sampled anchors, "loss_rpn_loc": box
            regression over sampled positives}, each summed, divided by batch_size_per_image x N
            and weighted by `loss_weight`.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        # (image, anchor) of the positives of all images: (P, 2). The losses' one host sync on a GPU.
        image_idx, anchor_idx = (labels == 1).nonzero().unbind(1)
        anchors_tensor = Boxes.cat(anchors).tensor  # (R, B)
        deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, B)
        loss_loc = box_regression_loss(
            self.box2box_transform,
            anchors_tensor[anchor_idx],
            deltas[image_idx, anchor_idx],
            torch.stack(gt_boxes)[image_idx, anchor_idx],
            self.box_reg_loss_type,
            self.smooth_l1_beta,
        )
        logits = cat(pred_objectness_logits, dim=1)  # (N, R)
        # Summed over the sampled anchors by a mask rather than a selection, which would sync again.
        loss_cls = torch.where(
            labels >= 0,
            F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).to(logits.dtype), reduction="none"),
            0.0,
        ).sum()
        normalizer = self.batch_size_per_image * num_images
        return {
            "loss_rpn_cls": loss_cls / normalizer * self.loss_weight.get("loss_rpn_cls", 1.0),
            "loss_rpn_loc": loss_loc / normalizer * self.loss_weight.get("loss_rpn_loc", 1.0),
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, Tensor]]:
        """
        Args:
            images: the N input images (their sizes clip the proposals).
            features: backbone features by name; `in_features` are read.
            gt_instances: N Instances with `gt_boxes`; required in training.

        Returns:
            proposals: N Instances with `proposal_boxes` and `objectness_logits`.
            losses: {"loss_rpn_cls", "loss_rpn_loc"} in training, else empty.
        """
        features = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(features)
        pred_logits, pred_deltas = self.rpn_head(features)
        # in the anchors' order: (N, A, Hi, Wi) -> (N, Hi*Wi*A), (N, A*B, Hi, Wi) -> (N, Hi*Wi*A, B)
        pred_logits = [permute_to_N_HWA_K(x, 1)[..., 0] for x in pred_logits]
        box_dim = anchors[0].tensor.shape[1]
        pred_deltas = [permute_to_N_HWA_K(x, box_dim) for x in pred_deltas]

        losses = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN in training mode needs gt_instances")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
        proposals = self.predict_proposals(anchors, pred_logits, pred_deltas, images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        """Decodes the deltas and selects each image's top proposals (see `find_top_rpn_proposals`).

        No gradient flows into the proposals: the second stage treats them as fixed boxes, as
        Detectron2's approximate joint training does.
        """
        proposals = self._decode_proposals(anchors, pred_anchor_deltas)
        return find_top_rpn_proposals(
            proposals,
            pred_objectness_logits,
            image_sizes,
            self.nms_thresh,
            self.pre_nms_topk[self.training],
            self.post_nms_topk[self.training],
            self.min_box_size,
        )

    def _decode_proposals(self, anchors: List[Boxes], pred_anchor_deltas: List[Tensor]) -> List[Tensor]:
        """L tensors `Tensor[N, Hi*Wi*A, B]` of deltas -> L tensors `Tensor[N, Hi*Wi*A, B]` of boxes."""
        proposals = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas):
            n, r, b = deltas_i.shape
            # (N, Hi*Wi*A, B) -> (N*Hi*Wi*A, B), anchors repeated for every image
            boxes = self.box2box_transform.apply_deltas(
                deltas_i.reshape(-1, b), anchors_i.tensor[None].expand(n, -1, -1).reshape(-1, b)
            )
            proposals.append(boxes.view(n, r, b))
        return proposals
