"""d2mask: a Detectron2-style research framework for Faster R-CNN and Mask R-CNN on PyTorch.

Shape letters, the same in every docstring and shape comment of the package:
    N   images in a batch
    L   feature levels (of a pyramid, or of anchors); `Hi x Wi` the size of level i
    A   anchors per location
    R   regions: anchors, proposals or boxes (of one image, or over all images where said);
        `R_i` those of image i
    G   ground-truth boxes of one image
    K   classes (the foreground ones; index K is background)
    S   the side of a pooled region feature
    M   the side of a predicted mask
    C   channels;  H x W  an image or feature map
    P, Q  sampled positives and negatives
A module's first lines name the letters it uses, and any of its own (e.g. `T` candidates per GT box).
"""
import warnings

__version__ = "0.1.0"

# fvcore.nn scripts its focal loss at import time, which recent torch flags on every run of every
# tool; d2mask does not use that function, so the warning is only noise to our users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
