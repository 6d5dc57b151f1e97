"""The Fast R-CNN predictor: class scores and class-specific box deltas per region, their losses, and
the inference that turns them into detections.

Shape shorthand: `R` regions over all images, `R_i` those of image i, `K` foreground classes (class `K`
is background), `B` the classes with their own box (K, or 1 when box regression is class-agnostic),
`D` detections of one image.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2mask.config import config_keys, configurable
from d2mask.layers import ShapeSpec, batched_nms
from d2mask.structures import Boxes, Instances

from ..box_regression import Box2BoxTransform, box_regression_loss, check_box_reg_loss_type

__all__ = ["FastRCNNOutputLayers", "fast_rcnn_inference", "fast_rcnn_inference_single_image"]


def fast_rcnn_inference(
    boxes: Sequence[Tensor],
    scores: Sequence[Tensor],
    image_shapes: Sequence[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> Tuple[List[Instances], List[Tensor]]:
    """Detections of each image: `fast_rcnn_inference_single_image` applied image by image.

    Args:
        boxes: per image, `Tensor[R_i, B*4]` predicted boxes of each region for each class.
        scores: per image, `Tensor[R_i, K+1]` class probabilities (background last).
        image_shapes: per image, (height, width) to clip the boxes to.
        score_thresh, nms_thresh, topk_per_image: see `fast_rcnn_inference_single_image`.

    Returns:
        Per image, the detections (pred_boxes, scores, pred_classes) and `Tensor[D]` the index of the
        region each detection came from.
    """
    results = [
        fast_rcnn_inference_single_image(b, s, shape, score_thresh, nms_thresh, topk_per_image)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image(
    boxes: Tensor,
    scores: Tensor,
    image_shape: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> Tuple[Instances, Tensor]:
    """One image's detections: every (region, class) pair scoring above `score_thresh` is a candidate;
    NMS runs separately within each class and the `topk_per_image` best survivors are kept.

    Args:
        boxes: `Tensor[R, B*4]`.
        scores: `Tensor[R, K+1]`.
        image_shape: (height, width); boxes are clipped to it.
        score_thresh: candidates must score strictly above this.
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
        topk_per_image: the most detections kept; < 0 keeps all.

    Returns:
        Instances(pred_boxes: Boxes[D], scores: Tensor[D], pred_classes: Tensor[D] int64), by
        decreasing score, and `Tensor[D]` the region index of each detection.
    """
    # A diverging model may produce inf/NaN; such regions get score 0 and never pass the threshold.
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    scores = torch.where(finite[:, None], scores, torch.zeros_like(scores))[:, :-1]  # drop background
    num_classes, num_box_classes = scores.shape[1], boxes.shape[1] // 4
    clipped = Boxes(boxes.reshape(-1, 4))
    clipped.clip(image_shape)
    boxes = clipped.tensor.view(-1, num_box_classes, 4)  # (R, B*4) -> (R, B, 4)

    candidates = scores > score_thresh  # (R, K)
    region_and_class = candidates.nonzero()  # (D', 2)
    if num_box_classes == 1:
        boxes = boxes[region_and_class[:, 0], 0]
    else:
        boxes = boxes[candidates]  # row-major, the order of nonzero()
    scores = scores[candidates]

    keep = batched_nms(
        boxes, scores, region_and_class[:, 1], nms_thresh,
        num_categories=num_classes, max_kept=topk_per_image if topk_per_image >= 0 else None,
    )
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = region_and_class[keep, 1]
    return result, region_and_class[keep, 0]


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on each region's features: `cls_score` (K+1 logits) and `bbox_pred` (B*4 box
    deltas relative to the region), with the losses and inference of Fast R-CNN (Girshick 2015)."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        use_fed_loss: bool = False,
        use_sigmoid_ce: bool = False,
        get_fed_loss_cls_weights: Optional[Callable[[], Tensor]] = None,
        fed_loss_num_classes: int = 50,
    ):
        """
        Args:
            input_shape: the per-region features; flattened, they have channels * height * width values.
            box2box_transform: the coding of box deltas (weights (10, 10, 5, 5) in Fast R-CNN).
            num_classes: K.
            test_score_thresh, test_nms_thresh, test_topk_per_image: see `fast_rcnn_inference_single_image`.
            cls_agnostic_bbox_reg: predict one box per region instead of one per class.
            smooth_l1_beta: beta of the smooth-L1 box loss; 0 makes it L1.
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            loss_weight: one weight for both losses, or a dict {"loss_cls": w, "loss_box_reg": w}
                (missing keys weigh 1).
            use_sigmoid_ce: classify with a binary cross-entropy per foreground class (and sigmoid
                scores at inference) instead of the softmax over K+1.
            use_fed_loss: the federated loss of Zhou et al. ("Probabilistic two-stage detection",
                2021) for long-tailed datasets: the sigmoid loss of a batch only over its GT classes
                and negative classes drawn by frequency (see `fed_loss_classes`). Needs `use_sigmoid_ce`.
            get_fed_loss_cls_weights: with `use_fed_loss`, returns `Tensor[K]`, the probabilities
                (up to scale) of drawing each class as a negative, e.g. image counts to a power
                (`d2mask.data.detection_utils.get_fed_loss_cls_weights`). Called once, here.
            fed_loss_num_classes: the classes, GT ones and drawn ones, in a batch's federated loss.
        """
        super().__init__()
        check_box_reg_loss_type(box_reg_loss_type, "FastRCNNOutputLayers", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE")
        name = "FastRCNNOutputLayers"
        if not num_classes > 0:
            raise ValueError(f"{name} num_classes (MODEL.ROI_HEADS.NUM_CLASSES) must be an int > 0, got {num_classes}")
        for argument, key, value in (("test_score_thresh", "SCORE_THRESH_TEST", test_score_thresh),
                                     ("test_nms_thresh", "NMS_THRESH_TEST", test_nms_thresh)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} {argument} (MODEL.ROI_HEADS.{key}) must be in [0, 1], got {value}")
        if not smooth_l1_beta >= 0:
            raise ValueError(
                f"{name} smooth_l1_beta (MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA) must be a number >= 0, got {smooth_l1_beta}"
            )
        if use_fed_loss and not use_sigmoid_ce:
            raise ValueError(
                "FastRCNNOutputLayers use_fed_loss (MODEL.ROI_BOX_HEAD.USE_FED_LOSS) needs use_sigmoid_ce "
                "(MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE True): the federated loss is a sigmoid loss per class"
            )
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        num_box_classes = 1 if cls_agnostic_bbox_reg else num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        self.bbox_pred = nn.Linear(input_size, num_box_classes * 4)
        # Small initial outputs: near-uniform class scores and near-zero deltas (the proposals themselves).
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_cls": loss_weight, "loss_box_reg": loss_weight}
        self.loss_weight = dict(loss_weight)
        self.use_sigmoid_ce = use_sigmoid_ce
        self.use_fed_loss = use_fed_loss
        self.fed_loss_num_classes = fed_loss_num_classes
        if use_fed_loss:
            if get_fed_loss_cls_weights is None:
                raise ValueError("FastRCNNOutputLayers use_fed_loss needs get_fed_loss_cls_weights")
            weights = torch.as_tensor(get_fed_loss_cls_weights(), dtype=torch.float32)
            if weights.shape != (num_classes,):
                raise ValueError(
                    f"FastRCNNOutputLayers: the federated loss's class weights have shape {tuple(weights.shape)}, "
                    f"expected ({num_classes},), one per class (MODEL.ROI_HEADS.NUM_CLASSES); are they of another "
                    f"training set (DATASETS.TRAIN)?"
                )
            # a buffer in the state dict, as Detectron2's (its LVIS checkpoints hold it)
            self.register_buffer("fed_loss_cls_weights", weights)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        box_head = cfg.MODEL.ROI_BOX_HEAD
        with config_keys(weights="MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS"):
            box2box_transform = Box2BoxTransform(weights=box_head.BBOX_REG_WEIGHTS)
        return {
            "input_shape": input_shape,
            "box2box_transform": box2box_transform,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "cls_agnostic_bbox_reg": box_head.CLS_AGNOSTIC_BBOX_REG,
            "smooth_l1_beta": box_head.SMOOTH_L1_BETA,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "box_reg_loss_type": box_head.BBOX_REG_LOSS_TYPE,
            "loss_weight": {"loss_box_reg": box_head.BBOX_REG_LOSS_WEIGHT},
            "use_fed_loss": box_head.USE_FED_LOSS,
            "use_sigmoid_ce": box_head.USE_SIGMOID_CE,
            # counted only when the federated loss is on: the training set is read for it
            "get_fed_loss_cls_weights": lambda: _dataset_class_weights(cfg),
            "fed_loss_num_classes": box_head.FED_LOSS_NUM_CLASSES,
        }

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            x: `Tensor[R, ...]` per-region features (flattened here).

        Returns:
            `Tensor[R, K+1]` class logits and `Tensor[R, B*4]` box deltas.
        """
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]) -> Dict[str, Tensor]:
        """
        Args:
            predictions: the output of `forward` for the regions of `proposals`, in order.
            proposals: per image, the sampled regions with fields proposal_boxes, gt_classes (K for
                background) and gt_boxes (read for the foreground regions only).

        Returns:
            {"loss_cls": mean cross-entropy, "loss_box_reg": box loss summed over foreground regions and
            divided by the number of sampled regions R, so that each region weighs the same whatever
            share of them is foreground}.
        """
        scores, deltas = predictions
        if proposals:
            gt_classes = torch.cat([p.gt_classes for p in proposals])
            proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
            gt_boxes = torch.cat([p.gt_boxes.tensor for p in proposals])
        else:
            gt_classes = torch.empty(0, dtype=torch.int64, device=scores.device)
            proposal_boxes = gt_boxes = torch.empty(0, 4, device=scores.device)

        if gt_classes.numel() == 0:
            loss_cls = scores.sum() * 0.0
        elif self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean")

        foreground = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes)).squeeze(1)
        if deltas.shape[1] == 4:  # class-agnostic
            fg_deltas = deltas[foreground]
        else:
            fg_deltas = deltas.view(-1, self.num_classes, 4)[foreground, gt_classes[foreground]]
        loss_box_reg = box_regression_loss(
            self.box2box_transform,
            proposal_boxes[foreground],
            fg_deltas,
            gt_boxes[foreground],
            loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        ) / max(gt_classes.numel(), 1)

        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}
        return {name: loss * self.loss_weight.get(name, 1.0) for name, loss in losses.items()}

    def sigmoid_cross_entropy_loss(self, pred_class_logits: Tensor, gt_classes: Tensor) -> Tensor:
        """The binary cross-entropy of each of the K foreground logits against "the region is of this
        class" (all zero for background), summed over the classes and averaged over the R regions;
        with `use_fed_loss`, summed over the classes of `fed_loss_classes` only.

        Args:
            pred_class_logits: `Tensor[R, K+1]` (the background logit is not used).
            gt_classes: `Tensor[R]` in [0, K].
        """
        num_regions, num_classes = pred_class_logits.shape[0], pred_class_logits.shape[1] - 1
        # one-hot over K + 1, the background column dropped: a background region is negative for all
        targets = F.one_hot(gt_classes, num_classes + 1)[:, :num_classes].to(pred_class_logits.dtype)
        loss = F.binary_cross_entropy_with_logits(pred_class_logits[:, :-1], targets, reduction="none")  # (R, K)
        if self.use_fed_loss:
            kept = torch.zeros(num_classes + 1, dtype=loss.dtype, device=loss.device)
            kept[self.fed_loss_classes(gt_classes)] = 1
            loss = loss * kept[:num_classes]  # (R, K) * (K,)
        return loss.sum() / num_regions

    def fed_loss_classes(self, gt_classes: Tensor) -> Tensor:
        """The classes of a batch's federated loss: those of `gt_classes` (background K included, as
        in Detectron2), then foreground classes drawn without replacement, with probability
        proportional to `fed_loss_cls_weights`, up to `fed_loss_num_classes` in all (or all classes
        of non-zero weight, if fewer).

        Args:
            gt_classes: `Tensor[R]` in [0, K].

        Returns:
            `Tensor[C]` class ids in [0, K], the GT ones first.
        """
        present = torch.unique(gt_classes)
        num_drawn = self.fed_loss_num_classes - len(present)
        if num_drawn <= 0:
            return present
        weights = self.fed_loss_cls_weights.clone()
        weights[present[present < self.num_classes]] = 0
        num_drawn = min(num_drawn, int((weights > 0).sum()))
        if num_drawn == 0:
            return present
        return torch.cat([present, torch.multinomial(weights, num_drawn, replacement=False)])

    def inference(
        self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]
    ) -> Tuple[List[Instances], List[Tensor]]:
        """Detections of each image from the predictions for its proposals (see `fast_rcnn_inference`)."""
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [p.image_size for p in proposals]
        return fast_rcnn_inference(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image
        )

    def predict_boxes(self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]) -> Tuple[Tensor, ...]:
        """Per image, `Tensor[R_i, B*4]`: the proposal boxes moved by the predicted deltas."""
        if not proposals:
            return ()
        _, deltas = predictions
        proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
        boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes)  # (R, B*4)
        return boxes.split([len(p) for p in proposals])

    def predict_boxes_for_gt_classes(
        self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]
    ) -> Tuple[Tensor, ...]:
        """Per image, `Tensor[R_i, 4]`: each proposal moved by the deltas of its GT class (of class K - 1
        for background proposals, whose boxes no loss reads), to train later heads on predicted boxes."""
        boxes = self.predict_boxes(predictions, proposals)
        if not proposals or boxes[0].shape[1] == 4:  # class-agnostic: one box per region
            return boxes
        gt_classes = torch.cat([p.gt_classes for p in proposals]).clamp(0, self.num_classes - 1)
        boxes = torch.cat(boxes).view(len(gt_classes), self.num_classes, 4)  # (R, K*4) -> (R, K, 4)
        boxes = boxes[torch.arange(len(gt_classes), device=boxes.device), gt_classes]
        return boxes.split([len(p) for p in proposals])

    def predict_probs(self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]) -> Tuple[Tensor, ...]:
        """Per image, `Tensor[R_i, K+1]`: class probabilities, background last (softmax, or each
        logit's sigmoid with `use_sigmoid_ce`)."""
        scores, _ = predictions
        probs = scores.sigmoid() if self.use_sigmoid_ce else F.softmax(scores, dim=-1)
        return probs.split([len(p) for p in proposals])


def _dataset_class_weights(cfg) -> Tensor:
    """The federated loss's class weights from the training set of `cfg`. The data package is imported
    here, not at the top: the model package must import without it (only a config-built model with
    the federated loss reads a dataset)."""
    from d2mask.data.detection_utils import get_fed_loss_cls_weights

    return get_fed_loss_cls_weights(cfg.DATASETS.TRAIN, freq_weight_power=cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER)
