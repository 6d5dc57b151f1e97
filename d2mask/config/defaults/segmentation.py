"""Defaults of the segmentation heads: the semantic-segmentation head (SemanticSegmentor,
PanopticFPN) and how PanopticFPN combines instances and stuff."""
from ..key_docs import define


def add_segmentation_defaults(cfg) -> None:
    define(cfg, "MODEL.SEM_SEG_HEAD.NAME", "SemSegFPNHead", "Name in SEM_SEG_HEADS_REGISTRY of the semantic-segmentation head.")
    define(cfg, "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p3", "p4", "p5"], "Backbone features the semantic-segmentation head reads.")
    define(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255, "Label of GT pixels that get no loss (unlabelled, and the padding of a batch).")
    define(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 54, "Classes the semantic head predicts (COCO panoptic: 53 stuff classes + one 'things').")
    define(cfg, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 128, "Channels of the semantic head's 3x3 convs.")
    define(cfg, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4, "Stride every input level is upsampled to before the levels are summed.")
    define(cfg, "MODEL.SEM_SEG_HEAD.NORM", "GN", "Normalisation of the semantic head's convs: '' or a get_norm name (GN, BN, ...).")
    define(cfg, "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 1.0, "Weight of loss_sem_seg.")

    define(cfg, "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", 1.0, "PanopticFPN: multiplies the box and mask losses of the ROI heads (as Detectron2; the RPN's are unscaled).")
    define(cfg, "MODEL.PANOPTIC_FPN.COMBINE.ENABLED", True, "PanopticFPN: inference outputs 'panoptic_seg', combining instances and stuff; False outputs only 'instances' and 'sem_seg'.")
    define(cfg, "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH", 0.5, "PanopticFPN: an instance whose mask lies more than this fraction under higher-scoring instances is dropped.")
    define(cfg, "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", 4096, "PanopticFPN: stuff regions (left free by the instances) smaller than this many pixels are dropped.")
    define(cfg, "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.5, "PanopticFPN: instances scoring below this are left out of the panoptic output.")
