"""Normalisation layers and `get_norm`, which builds one from its config name (Detectron2's names).

Shape shorthand: `N` images, `C` channels, `H x W` the feature map.
"""
from typing import Callable, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from fvcore.nn.distributed import differentiable_all_reduce
from torch import Tensor, nn

from d2mask.config import ArgumentError
from d2mask.utils import comm
from d2mask.utils.registry import did_you_mean

__all__ = ["CycleBatchNormList", "FrozenBatchNorm2d", "LayerNorm", "NaiveSyncBatchNorm", "get_norm", "NORM_NAMES"]


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

    def scale_and_shift(self) -> Tuple[Tensor, Tensor]:
        """The layer as `y = x * scale + shift`: two `Tensor[C]`, in the buffers' dtype."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, C, H, W]` -> `Tensor[N, C, H, W]`, as a per-channel scale and shift."""
        scale, shift = self.scale_and_shift()
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


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole distributed batch, reduced with a
    differentiable all-reduce of each process's mean and mean square (Detectron2's layer, for
    batches whose size differs between processes).

    With `stats_mode=""` every process weighs the same: the statistics are exact when all have the
    same N, H and W, and a process without images is an error. With `stats_mode="N"` each process
    weighs by its N: exact when all have the same H and W, and a process without images takes part
    (the running statistics move only when some process has images).
    """

    def __init__(self, *args, stats_mode: str = "", **kwargs):
        """
        Args:
            args, kwargs: those of `nn.BatchNorm2d` (affine, tracking running statistics).
            stats_mode: "" or "N", see the class.
        """
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f"NaiveSyncBatchNorm stats_mode must be '' or 'N', got {stats_mode!r}")
        if not (self.affine and self.track_running_stats and self.momentum is not None):
            raise ValueError("NaiveSyncBatchNorm needs affine=True, track_running_stats=True and a momentum")
        self._stats_mode = stats_mode

    def forward(self, x: Tensor) -> Tensor:
        """`Tensor[N, C, H, W]` -> `Tensor[N, C, H, W]`."""
        world_size = comm.get_world_size()
        if world_size == 1 or not self.training:
            return super().forward(x)
        n, channels = x.shape[:2]
        x32 = x.float()  # half precision is too coarse for the sums of squares
        if self._stats_mode == "":
            if n == 0:
                raise ValueError('NaiveSyncBatchNorm(stats_mode="") got an empty batch; use stats_mode="N"')
            moments = torch.cat([x32.mean(dim=(0, 2, 3)), (x32 * x32).mean(dim=(0, 2, 3))])
            moments = differentiable_all_reduce(moments) / world_size
            mean, mean_sq = moments.split(channels)
            momentum = self.momentum
        else:
            if n == 0:
                # zeros, still connected to x so that every process's backward takes part
                moments = x32.sum() + torch.zeros(2 * channels + 1, device=x.device)
            else:
                ones = torch.ones(1, device=x.device)
                moments = torch.cat([x32.mean(dim=(0, 2, 3)), (x32 * x32).mean(dim=(0, 2, 3)), ones]) * n
            moments = differentiable_all_reduce(moments)  # sums over processes, the last entry total N
            total = moments[-1].detach()
            mean, mean_sq, _ = (moments / total.clamp(min=1)).split([channels, channels, 1])
            momentum = total.clamp(max=1) * self.momentum  # no update when no process had images
        var = mean_sq - mean * mean
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        with torch.no_grad():
            self.running_mean += momentum * (mean.detach() - self.running_mean)
            self.running_var += momentum * (var.detach() - self.running_var)
        return (x32 * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).to(x.dtype)


class CycleBatchNormList(nn.ModuleList):
    """`length` batch norms without affine parameters, used in turn by successive calls, followed by
    one shared affine transform: separate test-time statistics for each of `length` inputs (domains,
    feature levels) of a shared head (Wu & Johnson, "Rethinking Batch in BatchNorm", 2021, sec. 5.2).

    The caller must call it a multiple of `length` times per step, or the statistics get mixed.
    """

    def __init__(self, length: int, bn_class: Type[nn.Module] = nn.BatchNorm2d, **kwargs):
        """
        Args:
            length: the number of batch norms cycled through.
            bn_class: their class.
            kwargs: arguments of `bn_class` (num_features, ...); `affine` (default True) adds the
                shared `weight` and `bias` instead.
        """
        affine = kwargs.pop("affine", True)
        super().__init__([bn_class(**kwargs, affine=False) for _ in range(length)])
        self._affine = affine
        if affine:
            channels = self[0].num_features
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self._pos = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self[self._pos](x)
        self._pos = (self._pos + 1) % len(self)
        if self._affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"affine={self._affine}"


class LayerNorm(nn.Module):
    """Layer normalisation over the channels of each pixel of a `Tensor[N, C, H, W]`, with per-channel
    `weight` and `bias` (ConvNeXt's channels-first LayerNorm; Detectron2's "LN")."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -> (N, H, W, C): torch's fused layer_norm normalises the last dimension; and back
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups: the setting of the Group Normalization paper (Wu & He, 2018) that Detectron2 adopts.
    return nn.GroupNorm(32, channels)


_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
    "LN": LayerNorm,
    # Detectron2's names to choose a synchronised batch norm implementation.
    "nnSyncBN": nn.SyncBatchNorm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    "naiveSyncBN_N": lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
}

# The names accepted by `get_norm` (besides "" for none); config keys such as MODEL.FPN.NORM take these.
NORM_NAMES = ("",) + tuple(_NORMS)


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int) -> Optional[nn.Module]:
    """Builds the normalisation layer named by a config value.

    Args:
        norm: "" or None for no normalisation; "BN", "SyncBN", "FrozenBN", "GN" (32 groups), "LN"
            (`LayerNorm` over channels), "nnSyncBN" (torch's SyncBatchNorm, as "SyncBN"),
            "naiveSyncBN" or "naiveSyncBN_N" (`NaiveSyncBatchNorm` with stats_mode "" or "N"); or a
            callable taking the channel count and returning a module.
        out_channels: the number of channels to normalise.

    Returns:
        The layer, or None for no normalisation.
    """
    if norm is None or norm == "":
        return None
    if isinstance(norm, str):
        if norm not in _NORMS:
            # `norm` comes from a key such as MODEL.FPN.NORM, which the builder names with config_keys.
            raise ArgumentError(
                f"`norm` must be one of {list(NORM_NAMES)}, got {norm!r}.{did_you_mean(norm, _NORMS)}", "norm"
            )
        norm = _NORMS[norm]
    return norm(out_channels)
