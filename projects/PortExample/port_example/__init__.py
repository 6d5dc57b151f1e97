"""A project written as Detectron2's projects are: a package beside its own train_net.py, a function
adding its config keys, and subclasses of d2mask's (Detectron2's) modules registered on import."""
from .config import add_port_example_config
from .min_gt_size import MinGTSizeROIHeads, MinGTSizeRPN, keep_large_gt
from .se_resnet import SEBasicBlock, build_se_resnet_fpn_backbone

__all__ = [
    "MinGTSizeROIHeads",
    "MinGTSizeRPN",
    "SEBasicBlock",
    "add_port_example_config",
    "build_se_resnet_fpn_backbone",
    "keep_large_gt",
]
