"""Detectron2's batched inputs as the meta-architectures read them: a list of N dicts, one per image,
with "image" (`Tensor[C, H, W]` in INPUT.FORMAT's channel order), "instances" in training, and
optionally "height"/"width", the size to give the outputs. Here they are normalised and padded into
one batch, their GT gathered, drawn for training visualisation, and the results rescaled to them.
"""
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from d2mask.structures import Boxes, ImageList, Instances

from ..postprocessing import detector_postprocess

__all__ = ["NormalizedInput", "gt_beside_boxes", "rescale_to_inputs"]


def _all_finite(values: Sequence[float]) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):  # not numbers
        return False


class NormalizedInput(nn.Module):
    """The input normalisation and batching shared by the R-CNN meta-architectures; a subclass sets
    `self.backbone` (whose `size_divisibility` and `padding_constraints` the batch is padded to)."""

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {list(pixel_mean)} and PIXEL_STD {list(pixel_std)} differ in length")
        if not _all_finite(pixel_mean):
            raise ValueError(f"pixel_mean (MODEL.PIXEL_MEAN) must be finite numbers, got {list(pixel_mean)}")
        if not _all_finite(pixel_std) or not all(float(s) > 0 for s in pixel_std):
            raise ValueError(f"pixel_std (MODEL.PIXEL_STD) must be numbers > 0, got {list(pixel_std)}")
        # Not persistent: they come from the config, and Detectron2 checkpoints do not contain them.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalises each input's "image" with PIXEL_MEAN/STD and pads them into one batch whose
        sides are multiples of the backbone's `size_divisibility` (or as its `padding_constraints` say)."""
        images = []
        for i, inputs in enumerate(batched_inputs):
            image = inputs.get("image") if isinstance(inputs, dict) else None
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != len(self.pixel_mean):
                got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(
                    f"Input {i} must be a dict whose 'image' is a Tensor[C, H, W] with C = "
                    f"{len(self.pixel_mean)} (len(MODEL.PIXEL_MEAN)); got {got}"
                )
            # Moved before the conversion to float: a uint8 image is 4x smaller to transfer.
            image = image.to(device=self.device, non_blocking=True).float()
            images.append((image - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    def gt_instances(self, batched_inputs: List[Dict]) -> List[Instances]:
        """The "instances" of every input, on the model's device."""
        missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
        if missing:
            raise ValueError(
                f"Training needs GT 'instances' in every input dict; inputs {missing} have none "
                f"(keys: {sorted(batched_inputs[missing[0]])})"
            )
        return [x["instances"].to(self.device) for x in batched_inputs]



def gt_beside_boxes(inputs: Dict, boxes: Boxes, input_format: str) -> np.ndarray:
    """`(3, H, 2W)` uint8: an input's image with its GT boxes (left) beside `boxes` (right), for the
    event storage's training images."""
    # Imported here, for VIS_PERIOD only: the model needs neither the data package nor drawing.
    from d2mask.data.detection_utils import convert_image_to_rgb
    from d2mask.utils.visualizer import Visualizer

    image = inputs["image"].permute(1, 2, 0).cpu().numpy()  # (C, H, W) -> (H, W, C)
    image = convert_image_to_rgb(image, input_format).clip(0, 255).astype(np.uint8)
    gt = Visualizer(image).overlay_instances(boxes=inputs["instances"].gt_boxes).get_image()
    predicted = Visualizer(image).overlay_instances(boxes=boxes).get_image()
    return np.concatenate([gt, predicted], axis=1).transpose(2, 0, 1)  # (H, 2W, 3) -> (3, H, 2W)


def rescale_to_inputs(
    results: List[Instances], batched_inputs: List[Dict], image_sizes: List[Tuple[int, int]]
) -> List[Instances]:
    """Each image's results at the input's "height"/"width" (default: the size the network saw)."""
    return [
        detector_postprocess(r, inputs.get("height", size[0]), inputs.get("width", size[1]))
        for r, inputs, size in zip(results, batched_inputs, image_sizes)
    ]
