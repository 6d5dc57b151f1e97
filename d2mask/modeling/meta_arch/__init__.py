"""Meta-architectures: whole models assembled from a backbone and heads."""
from .build import META_ARCH_REGISTRY, build_model
from .dense_detector import DenseDetector
from .panoptic_fpn import PanopticFPN, combine_semantic_and_instance_outputs
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet, RetinaNetHead
from .semantic_seg import SEM_SEG_HEADS_REGISTRY, SemanticSegmentor, SemSegFPNHead, build_sem_seg_head

__all__ = [
    "META_ARCH_REGISTRY", "build_model", "DenseDetector", "GeneralizedRCNN", "ProposalNetwork", "RetinaNet", "RetinaNetHead",
    "SEM_SEG_HEADS_REGISTRY", "build_sem_seg_head", "SemanticSegmentor", "SemSegFPNHead", "PanopticFPN",
    "combine_semantic_and_instance_outputs",
]
