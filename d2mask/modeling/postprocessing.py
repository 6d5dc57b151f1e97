"""`detector_postprocess` and `sem_seg_postprocess`: a model's outputs, from the resized network input
back to the original image."""
from typing import Tuple

from torch import Tensor
from torch.nn import functional as F

from d2mask.layers.mask_ops import paste_masks_in_image
from d2mask.structures import Instances

__all__ = ["detector_postprocess", "sem_seg_postprocess"]


def detector_postprocess(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """Rescales one image's detections (or proposals) to an output resolution, normally the original
    image's, since the data loader resized the image before the network saw it.

    Boxes are scaled and clipped to the output image, and those left empty are dropped. Mask
    probabilities `Tensor[D, 1, M, M]` are pasted into their boxes, giving bool image-sized masks.
    Keypoints `Tensor[D, J, 3]` are scaled like the boxes (their scores unchanged).

    Args:
        results: Instances with pred_boxes (or proposal_boxes) and optionally pred_masks, sized for
            the network input (`results.image_size`), optionally pred_masks and pred_keypoints.
        output_height, output_width: the resolution wanted.
        mask_threshold: mask probability from which a pixel belongs to the mask.

    Returns:
        New Instances of image size (output_height, output_width); pred_masks, when present, is
        `Tensor[D, output_height, output_width]` bool.
    """
    output_size = (int(output_height), int(output_width))
    scale_x = output_size[1] / results.image_size[1]
    scale_y = output_size[0] / results.image_size[0]
    results = Instances(output_size, **results.get_fields())

    box_field = "pred_boxes" if results.has("pred_boxes") else "proposal_boxes"
    boxes = results.get(box_field).clone()
    boxes.scale(scale_x, scale_y)
    boxes.clip(output_size)
    results.set(box_field, boxes)
    results = results[boxes.nonempty()]

    if results.has("pred_masks"):
        masks = results.pred_masks
        if masks.dim() == 4:
            masks = masks[:, 0]  # (D, 1, M, M) -> (D, M, M)
        results.pred_masks = paste_masks_in_image(masks, results.get(box_field), output_size, mask_threshold)
    if results.has("pred_keypoints"):
        keypoints = results.pred_keypoints.clone()
        keypoints[..., 0] *= scale_x
        keypoints[..., 1] *= scale_y
        results.pred_keypoints = keypoints
    return results


def sem_seg_postprocess(result: Tensor, img_size: Tuple[int, int], output_height: int, output_width: int) -> Tensor:
    """One image's semantic-segmentation logits at an output resolution, normally the original
    image's: the padding of the batch is cut off, then the rest is resized bilinearly.

    Args:
        result: logits `Tensor[K, H, W]` over the padded network input.
        img_size: (height, width) of the image inside the padded input.
        output_height, output_width: the resolution wanted.

    Returns:
        `Tensor[K, output_height, output_width]` logits.
    """
    result = result[None, :, : img_size[0], : img_size[1]]  # (K, H, W) -> (1, K, h, w)
    return F.interpolate(result, size=(int(output_height), int(output_width)), mode="bilinear", align_corners=False)[0]
