"""d2mask: a Detectron2-style research framework for Faster R-CNN and Mask R-CNN on PyTorch."""
import warnings

__version__ = "0.1.0"

# fvcore.nn scripts its focal loss at import time, which recent torch flags on every run of every
# tool; d2mask does not use that function, so the warning is only noise to our users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
