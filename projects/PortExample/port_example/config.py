from d2mask.config import CfgNode as CN


def add_port_example_config(cfg):
    """Adds the project's keys to `cfg`, before a config file that sets them is merged."""
    _C = cfg
    _C.MODEL.SE = CN()
    # The squeeze-and-excitation gate of each block squeezes its channels by this factor.
    _C.MODEL.SE.REDUCTION = 4
    # GT boxes with a side shorter than this (input pixels) are left out of the RPN's and the ROI
    # heads' targets: anchors and proposals near them become background.
    _C.MODEL.MIN_GT_SIZE = 0.0
