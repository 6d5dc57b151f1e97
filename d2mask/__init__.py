"""d2mask: a Detectron2-style research framework for Faster R-CNN and Mask R-CNN on PyTorch."""
__version__ = "0.1.0"
