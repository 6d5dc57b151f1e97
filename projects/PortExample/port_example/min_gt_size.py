"""An RPN and ROI heads that leave GT boxes smaller than MODEL.MIN_GT_SIZE out of their targets,
each a subclass overriding the one method that matches anchors or proposals to the GT."""
from d2mask.config import configurable
from d2mask.modeling import PROPOSAL_GENERATOR_REGISTRY, ROI_HEADS_REGISTRY, StandardROIHeads
from d2mask.modeling.proposal_generator.rpn import RPN


def keep_large_gt(instances, min_size):
    """The GT instances of one image whose boxes have both sides >= `min_size`."""
    boxes = instances.gt_boxes.tensor
    sides = boxes[:, 2:] - boxes[:, :2]  # (G, 2): width, height
    return instances[sides.min(dim=1).values >= min_size]


@PROPOSAL_GENERATOR_REGISTRY.register()
class MinGTSizeRPN(RPN):
    @configurable
    def __init__(self, *, min_gt_size=0.0, **kwargs):
        super().__init__(**kwargs)
        self.min_gt_size = min_gt_size

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["min_gt_size"] = cfg.MODEL.MIN_GT_SIZE
        return ret

    def label_and_sample_anchors(self, anchors, gt_instances):
        gt_instances = [keep_large_gt(x, self.min_gt_size) for x in gt_instances]
        return super().label_and_sample_anchors(anchors, gt_instances)


@ROI_HEADS_REGISTRY.register()
class MinGTSizeROIHeads(StandardROIHeads):
    @configurable
    def __init__(self, *, min_gt_size=0.0, **kwargs):
        super().__init__(**kwargs)
        self.min_gt_size = min_gt_size

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["min_gt_size"] = cfg.MODEL.MIN_GT_SIZE
        return ret

    def label_and_sample_proposals(self, proposals, targets):
        targets = [keep_large_gt(x, self.min_gt_size) for x in targets]
        return super().label_and_sample_proposals(proposals, targets)
