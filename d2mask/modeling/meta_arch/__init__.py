"""Meta-architectures: whole models assembled from a backbone and heads."""
from .build import META_ARCH_REGISTRY, build_model
from .dense_detector import DenseDetector
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .retinanet import RetinaNet, RetinaNetHead

__all__ = [
    "META_ARCH_REGISTRY", "build_model", "DenseDetector", "GeneralizedRCNN", "ProposalNetwork", "RetinaNet", "RetinaNetHead",
]
