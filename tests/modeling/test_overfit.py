"""Learning test: a tiny Mask R-CNN (a small conv bottom-up under d2mask's FPN, RPN and ROI heads)
overfits one synthetic image with two shapes on the CPU."""
import torch
import torch.nn.functional as F
from torch import nn

from d2mask.config import get_cfg
from d2mask.modeling import FPN, RPN, Backbone, GeneralizedRCNN, LastLevelMaxPool, build_roi_heads
from d2mask.structures import BitMasks, Instances

SIZE = 128


class TinyBottomUp(Backbone):
    """Four stride-2 stages after a stride-2 stem: res2..res5 at strides 4..32."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        stages, in_channels = [], width
        for name in ("res2", "res3", "res4", "res5"):
            stage = nn.Sequential(
                nn.Conv2d(in_channels, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(4, 2 * width), nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(4, 2 * width), nn.ReLU(),
            )
            self.add_module(name, stage)
            stages.append(name)
            in_channels = 2 * width
        self._out_features = stages
        self._out_feature_channels = {name: 2 * width for name in stages}
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

    def forward(self, x):
        x = F.relu(self.stem(x))
        outputs = {}
        for name in self._out_features:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


def _config():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.PIXEL_MEAN = [128.0, 128.0, 128.0]
    cfg.MODEL.PIXEL_STD = [64.0, 64.0, 64.0]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 40
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 40
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.5
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    return cfg


def _tiny_mask_rcnn(cfg):
    backbone = FPN(
        bottom_up=TinyBottomUp(), in_features=["res2", "res3", "res4", "res5"], out_channels=32, top_block=LastLevelMaxPool()
    )
    shapes = backbone.output_shape()
    return GeneralizedRCNN(
        backbone=backbone,
        proposal_generator=RPN(cfg, shapes),
        roi_heads=build_roi_heads(cfg, shapes),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
    )


def _synthetic_image():
    """A BGR image with a blue rectangle (class 0) and a red disc (class 1) on grey, and their GT."""
    image = torch.full((3, SIZE, SIZE), 100, dtype=torch.uint8)
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, 20:56, 12:70] = True
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    masks[1] = (ys - 84.5) ** 2 + (xs - 86.5) ** 2 <= 24**2
    image[:, masks[0]] = torch.tensor([220, 40, 40], dtype=torch.uint8)[:, None]
    image[:, masks[1]] = torch.tensor([40, 40, 220], dtype=torch.uint8)[:, None]
    gt = Instances((SIZE, SIZE))
    gt.gt_masks = BitMasks(masks)
    gt.gt_boxes = gt.gt_masks.get_bounding_boxes()
    gt.gt_classes = torch.tensor([0, 1])
    return {"image": image, "instances": gt}, masks


def test_tiny_mask_rcnn_overfits_one_image():
    torch.manual_seed(0)
    model = _tiny_mask_rcnn(_config())
    inputs, gt_masks = _synthetic_image()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    # The ROI sampling differs every step; a final low learning rate lets the weights settle.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[120], gamma=0.1)
    model.train()
    for _ in range(160):
        losses = model([inputs])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        scheduler.step()

    model.eval()
    with torch.no_grad():
        detections = model([{"image": inputs["image"]}])[0]["instances"]
    for cls in (0, 1):
        of_class = detections[detections.pred_classes == cls]
        assert len(of_class) >= 1, f"class {cls} not detected: {detections}"
        best = of_class[of_class.scores.argmax().item()]
        assert best.scores.item() > 0.9
        pred = best.pred_masks[0]
        iou = (pred & gt_masks[cls]).sum() / (pred | gt_masks[cls]).sum()
        assert iou > 0.8, f"class {cls}: mask IoU {iou:.3f}"
    # Each shape is found once: NMS leaves no confident duplicate.
    assert (detections.scores > 0.9).sum() == 2
