"""Normalisation layers: `FrozenBatchNorm2d` and `get_norm`, which builds one from its config name."""
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from d2mask.utils.registry import did_you_mean

__all__ = ["FrozenBatchNorm2d", "get_norm", "NORM_NAMES"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters: `y = (x - mean) / sqrt(var + eps) * weight
    + bias`, all four held as buffers, so neither the optimiser nor training mode changes them.

    Detection fine-tunes ImageNet backbones with a few images per GPU, too few for reliable batch
    statistics; freezing them is the standard remedy. The buffers carry BatchNorm's names, so a
    BatchNorm2d state dict loads directly (its `num_batches_tracked` is ignored).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        # 1 - eps makes a freshly built layer the identity.
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, C, H, W]` -> `Tensor[N, C, H, W]`, as a per-channel scale and shift."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # BatchNorm checkpoints carry a step counter this layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replaces every BatchNorm2d / SyncBatchNorm in `module` with a FrozenBatchNorm2d holding its
        current statistics and affine parameters.

        Args:
            module: a model, or a batch norm layer itself.

        Returns:
            `module` with its batch norms replaced in place; when `module` is itself a batch norm, the
            new frozen layer (the caller must store it).
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, eps=module.eps)
            with torch.no_grad():
                if module.affine:
                    frozen.weight.copy_(module.weight)
                    frozen.bias.copy_(module.bias)
                if module.track_running_stats:
                    frozen.running_mean.copy_(module.running_mean)
                    frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            converted = cls.convert_frozen_batchnorm(child)
            if converted is not child:
                module.add_module(name, converted)
        return module


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups: the setting of the Group Normalization paper (Wu & He, 2018) that Detectron2 adopts.
    return nn.GroupNorm(32, channels)


_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
}

# The names accepted by `get_norm` (besides "" for none); config keys such as MODEL.FPN.NORM take these.
NORM_NAMES = ("",) + tuple(_NORMS)


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int) -> Optional[nn.Module]:
    """Builds the normalisation layer named by a config value.

    Args:
        norm: "" or None for no normalisation; "BN", "SyncBN", "FrozenBN" or "GN" (32 groups); or a
            callable taking the channel count and returning a module.
        out_channels: the number of channels to normalise.

    Returns:
        The layer, or None for no normalisation.
    """
    if norm is None or norm == "":
        return None
    if isinstance(norm, str):
        if norm not in _NORMS:
            raise ValueError(
                f"Unknown norm '{norm}'.{did_you_mean(norm, _NORMS)} Valid names: "
                f"{', '.join(repr(n) for n in NORM_NAMES)}."
            )
        norm = _NORMS[norm]
    return norm(out_channels)
