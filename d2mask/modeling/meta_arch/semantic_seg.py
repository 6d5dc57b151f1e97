"""Semantic segmentation: the `SemanticSegmentor` meta-architecture, the registry of its heads, and
the FPN head of Panoptic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019).

Shape shorthand: N images, K classes, H x W the padded batch, Hi x Wi a feature level.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from d2mask.config import config_keys, configurable
from d2mask.layers import Conv2d, ShapeSpec, get_norm
from d2mask.structures import ImageList
from d2mask.utils.registry import Registry

from ..backbone import Backbone, build_backbone
from ..backbone.backbone import in_feature_shapes
from ..postprocessing import sem_seg_postprocess
from .build import META_ARCH_REGISTRY
from .batched_inputs import NormalizedInput

__all__ = ["SemanticSegmentor", "SEM_SEG_HEADS_REGISTRY", "SemSegFPNHead", "build_sem_seg_head"]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Semantic-segmentation heads, named by MODEL.SEM_SEG_HEAD.NAME. An entry is called as
`obj(cfg, input_shape)` with the backbone's {feature name: ShapeSpec} and returns an nn.Module
called as `head(features, targets)` -> (logits `Tensor[N, K, H, W]` in inference, {name: loss} in
training), with an `ignore_value` attribute: the label of GT pixels without loss.
"""


def build_sem_seg_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The head named by `cfg.MODEL.SEM_SEG_HEAD.NAME`."""
    with config_keys(norm="MODEL.SEM_SEG_HEAD.NORM"):
        return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, input_shape)


def padded_sem_seg_targets(batched_inputs: List[Dict], backbone: Backbone, ignore_value: int, device) -> Tensor:
    """The inputs' "sem_seg" label maps `Tensor[H_i, W_i]` padded like their images (with
    `ignore_value`, so the padding gets no loss) into `Tensor[N, H, W]` int64 on `device`."""
    missing = [i for i, x in enumerate(batched_inputs) if "sem_seg" not in x]
    if missing:
        raise ValueError(
            f"Training needs a GT 'sem_seg' label map in every input dict (from the dataset's "
            f"'sem_seg_file_name'); inputs {missing} have none (keys: {sorted(batched_inputs[missing[0]])})"
        )
    targets = [x["sem_seg"].to(device=device, dtype=torch.int64, non_blocking=True) for x in batched_inputs]
    return ImageList.from_tensors(
        targets, backbone.size_divisibility, ignore_value, backbone.padding_constraints
    ).tensor


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(NormalizedInput):
    """A backbone and a semantic-segmentation head: one class per pixel.

    Inputs are Detectron2's list of dicts, one per image: "image" `Tensor[C, H, W]`; "sem_seg"
    `Tensor[H, W]` of class ids (training); "height", "width" (optional) the output size.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            backbone: images -> {feature name: feature map}.
            sem_seg_head: `(features, targets) -> (logits, losses)` with an `ignore_value`
                attribute (see SEM_SEG_HEADS_REGISTRY).
            pixel_mean, pixel_std: per-channel statistics the input images are normalised with.
        """
        super().__init__(pixel_mean, pixel_std)
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def forward(self, batched_inputs: List[Dict]):
        """
        Returns:
            In training, {"loss_sem_seg"}. In inference, per image {"sem_seg": `Tensor[K, height,
            width]`}, the per-class logits at each input's "height"/"width".
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            targets = padded_sem_seg_targets(batched_inputs, self.backbone, self.sem_seg_head.ignore_value, self.device)
            return self.sem_seg_head(features, targets)[1]
        results, _ = self.sem_seg_head(features, None)
        return [
            {"sem_seg": sem_seg_postprocess(r, size, x.get("height", size[0]), x.get("width", size[1]))}
            for r, x, size in zip(results, batched_inputs, images.image_sizes)
        ]


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(nn.Module):
    """The semantic branch of Panoptic FPN: each input level goes through 3x3 convs, each followed
    by a 2x bilinear upsampling, until it reaches `common_stride`; the levels are summed and a 1x1
    conv predicts K class logits per pixel at that stride, upsampled to the image by bilinear
    interpolation.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        loss_weight: float = 1.0,
        norm: Optional[Union[str, Callable]] = None,
        ignore_value: int = -1,
    ):
        """
        Args:
            input_shape: {feature name: ShapeSpec(channels, stride)} of the levels to read; each
                stride must be `common_stride` times a power of 2.
            num_classes: K, the classes predicted.
            conv_dims: channels of the 3x3 convs.
            common_stride: the stride the levels are brought to and the logits predicted at.
            loss_weight: weight of `loss_sem_seg`.
            norm: normalisation of the 3x3 convs ("" / None for none, else as `get_norm`).
            ignore_value: GT label of pixels without loss.
        """
        super().__init__()
        if not input_shape:
            raise ValueError("SemSegFPNHead needs at least one input feature (MODEL.SEM_SEG_HEAD.IN_FEATURES)")
        levels = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        bad = {name: s.stride for name, s in levels if common_stride < 1 or not _is_power_of_2(s.stride / common_stride)}
        if bad:
            raise ValueError(
                f"SemSegFPNHead: every input stride must be COMMON_STRIDE ({common_stride}) times a power of 2; got {bad}"
            )
        if num_classes < 1 or conv_dims < 1:
            raise ValueError(f"SemSegFPNHead: num_classes ({num_classes}) and conv_dims ({conv_dims}) must be positive")
        self.in_features = [name for name, _ in levels]
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        # Registered under the feature names ("p2", ...): the parameter names of Detectron2's checkpoints.
        for name, shape in levels:
            self.add_module(name, self._scale_head(shape, conv_dims, norm, common_stride))
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @staticmethod
    def _scale_head(shape: ShapeSpec, conv_dims: int, norm, common_stride: int) -> nn.Sequential:
        """3x3 conv (+ 2x upsampling) per octave from the level's stride down to `common_stride`;
        one conv at `common_stride` itself."""
        octaves = int(round(math.log2(shape.stride / common_stride)))
        layers: List[nn.Module] = []
        for k in range(max(1, octaves)):
            conv = Conv2d(
                shape.channels if k == 0 else conv_dims, conv_dims, kernel_size=3, padding=1,
                bias=not norm, norm=get_norm(norm, conv_dims), activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            layers.append(conv)
            if octaves > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        return nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        shapes = in_feature_shapes("MODEL.SEM_SEG_HEAD.IN_FEATURES", head.IN_FEATURES, input_shape)
        return {
            "input_shape": dict(zip(head.IN_FEATURES, shapes)),
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def forward(self, features: Dict[str, Tensor], targets: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Dict[str, Tensor]]:
        """
        Args:
            features: {feature name: `Tensor[N, C, Hi, Wi]`}.
            targets: `Tensor[N, H, W]` int64 class ids (training), H x W the padded input size.

        Returns:
            In training (None, {"loss_sem_seg"}); in inference (logits `Tensor[N, K, H, W]`, {}).
        """
        x = self.layers(features)
        if self.training:
            return None, self.losses(x, targets)
        return F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False), {}

    def layers(self, features: Dict[str, Tensor]) -> Tensor:
        """Logits `Tensor[N, K, H / common_stride, W / common_stride]`."""
        x = sum(getattr(self, name)(features[name]) for name in self.in_features)
        return self.predictor(x)

    def losses(self, predictions: Tensor, targets: Tensor) -> Dict[str, Tensor]:
        """Per-pixel cross entropy, averaged over the pixels not labelled `ignore_value`.

        Args:
            predictions: logits `Tensor[N, K, H / common_stride, W / common_stride]`.
            targets: `Tensor[N, H, W]` int64.
        """
        # float: bilinear upsampling in half precision loses the logits' small differences
        predictions = F.interpolate(predictions.float(), scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(predictions, targets, reduction="sum", ignore_index=self.ignore_value)
        # The mean over labelled pixels, as Detectron2's; 0 rather than NaN when a batch has none.
        num_labelled = (targets != self.ignore_value).sum().clamp(min=1)
        return {"loss_sem_seg": loss / num_labelled * self.loss_weight}


def _is_power_of_2(x: float) -> bool:
    return x >= 1 and float(x).is_integer() and (int(x) & (int(x) - 1)) == 0
