"""Thin additions to torch's building blocks that detection code uses everywhere."""
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch_norm import FrozenBatchNorm2d

__all__ = ["Conv2d", "ConvTranspose2d", "bincount_bounded", "cat", "interpolate", "nonzero_tuple", "shapes_to_tensor"]

# Re-exported so model code ported from Detectron2 keeps importing them from `layers`.
ConvTranspose2d = nn.ConvTranspose2d
interpolate = F.interpolate


# On the CPU, convolutional networks run in channels-last memory format (NHWC): oneDNN's convolutions
# take it as it is, where an NCHW tensor is reordered before and after every convolution. Values and
# shapes are the same either way. Tests switch it off to compare with the NCHW computation.
_CHANNELS_LAST_ON_CPU = True


def channels_last_on_cpu(x: Tensor) -> Tensor:
    """`Tensor[N, C, H, W]` in channels-last memory format on the CPU (see above); `x` itself elsewhere."""
    if _CHANNELS_LAST_ON_CPU and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def channels_last_weights_on_cpu(module: nn.Module) -> None:
    """Stores the weights of `module`'s CPU convolutions channels-last, the format of the activations
    they see there (see above), for the modules that make their input channels-last to call at each
    forward. oneDNN otherwise reorders an NCHW weight at every call and, in training, its gradient
    back; for the 512-channel convolutions of an R-18's res5 at 8x8 that made forward and backward
    ~1.7x slower than with either format throughout. Values are unchanged; only the layout of the
    parameters' storage changes, once (state dicts load into it as before)."""
    if not _CHANNELS_LAST_ON_CPU or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if (
            isinstance(m, nn.Conv2d)
            and weight.device.type == "cpu"
            and not weight.is_contiguous(memory_format=torch.channels_last)
        ):
            weight.data = weight.data.contiguous(memory_format=torch.channels_last)


def cat(tensors: List[Tensor], dim: int = 0) -> Tensor:
    """`torch.cat` that returns a single tensor as it is instead of copying it."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError(f"cat needs a non-empty list of tensors, got {tensors!r:.200}")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def nonzero_tuple(x: Tensor) -> Tuple[Tensor, ...]:
    """The indices of the non-zero entries of `x`, one `Tensor[K]` per dimension (like numpy's
    `nonzero`); a 0-d input counts as a 1-d tensor of one element."""
    if x.dim() == 0:
        return x.unsqueeze(0).nonzero().unbind(1)
    return x.nonzero().unbind(1)


def bincount_bounded(values: Tensor, num_bins: int, weights: Optional[Tensor] = None) -> Tensor:
    """`torch.bincount(values, weights, minlength=num_bins)` for int64 values known to lie in
    [0, num_bins), without the host sync a GPU's bincount pays to find the largest value.

    Returns:
        `Tensor[num_bins]`: the number of each value (the sum of its weights), in the weights' dtype
        (default int64).
    """
    weights = torch.ones_like(values) if weights is None else weights
    return torch.zeros(num_bins, dtype=weights.dtype, device=values.device).index_add_(0, values, weights)


class _NewEmptyTensorOp(torch.autograd.Function):
    """An empty tensor of a given shape that stays in the autograd graph of `x` (Detectron2's helper
    for layers whose input has no elements; its backward gives `x` an empty gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, new_shape: List[int]) -> Tensor:
        ctx.shape = x.shape
        return x.new_empty(new_shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _NewEmptyTensorOp.apply(grad, ctx.shape), None


def shapes_to_tensor(x: List[Union[int, Tensor]], device: Optional[torch.device] = None) -> Tensor:
    """`Tensor[len(x)]` int64 of the sizes `x`, built so that it follows the input of a traced or
    exported model instead of being recorded as a constant of the sample's sizes.

    Sizes are ints in eager mode, 0-d tensors under `torch.jit.trace` (where `x.shape[i]` is one) and
    symbolic ints under `torch.export`.
    """
    if torch.jit.is_tracing() and all(isinstance(v, Tensor) for v in x):
        return torch.stack(x).to(device=device)
    if torch.compiler.is_exporting():
        # torch.as_tensor would specialise symbolic sizes to the sample's.
        return torch.stack([torch.scalar_tensor(v, dtype=torch.int64, device=device) for v in x])
    return torch.as_tensor(x, dtype=torch.int64, device=device)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` followed by an optional normalisation and activation.

    The normalisation is the submodule `norm`, so its parameters are saved as `<name>.norm.weight`,
    the names Detectron2 checkpoints use. A `FrozenBatchNorm2d` norm is folded into the convolution at
    each call (its scale multiplies the weight, its shift becomes the bias): the same function, up to
    float rounding, for a pass over the weights instead of two over the output (and its gradient);
    the module's parameters and buffers, and so its state dict, stay as they are.
    """

    def __init__(
        self, *args, norm: Optional[nn.Module] = None, activation: Optional[Callable] = None, **kwargs
    ):
        """
        Args:
            args, kwargs: those of `nn.Conv2d`.
            norm: a module applied to the convolution's output, or None.
            activation: a callable applied after `norm`, or None.
        """
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, FrozenBatchNorm2d):
            scale, shift = self.norm.scale_and_shift()
            weight = self.weight * scale.to(self.weight.dtype).view(-1, 1, 1, 1)
            bias = shift if self.bias is None else self.bias * scale + shift
            x = self._conv_forward(x, weight, bias.to(self.weight.dtype))
        else:
            x = self._conv_forward(x, self.weight, self.bias)
            if self.norm is not None:
                x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
