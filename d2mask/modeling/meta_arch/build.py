"""The meta-architecture registry and `build_model`."""
import torch
from torch import nn

from d2mask.utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Whole models, named by MODEL.META_ARCHITECTURE. An entry is called as `obj(cfg)` and returns an
nn.Module taking Detectron2's list[dict] inputs (see `GeneralizedRCNN.forward`).
"""


def build_model(cfg) -> nn.Module:
    """The model named by `cfg.MODEL.META_ARCHITECTURE`, on `cfg.MODEL.DEVICE`, with freshly initialised
    weights (load a checkpoint with `DetectionCheckpointer(model).load(path)`)."""
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.to(torch.device(cfg.MODEL.DEVICE))
