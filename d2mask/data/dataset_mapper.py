"""`DatasetMapper`: one dataset dict in, one model input dict out."""
import copy
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import configurable
from . import detection_utils as utils
from .catalog import DatasetError
from . import transforms as T

__all__ = ["DatasetMapper"]

logger = logging.getLogger(__name__)


class DatasetMapper:
    """Reads a dataset dict's image, augments it with its annotations, and returns the model input:

        {"image": Tensor[C, H, W] uint8 in the model's channel order,
         "height", "width": the original image size (inference outputs are rescaled to it),
         "instances": Instances(gt_boxes, gt_classes[, gt_masks][, gt_keypoints])   # training only
         "sem_seg": Tensor[H, W] int64 class ids   # training, when the dict has "sem_seg_file_name"
         ... and the dataset dict's other fields (file_name, image_id)}

    In training, crowd annotations are dropped and so are instances left empty by the transforms.
    The label map of "sem_seg_file_name" goes through the same transforms as the image (resized
    without interpolating between labels); evaluators read it from the file themselves, so it is
    not read in inference.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        use_instance_mask: bool = False,
        instance_mask_format: str = "polygon",
        use_keypoint: bool = False,
        keypoint_hflip_indices: Optional[Sequence[int]] = None,
        recompute_boxes: bool = False,
        max_image_pixels: int = utils.MAX_IMAGE_PIXELS,
    ):
        """
        Args:
            is_train: keep and transform annotations (else they are removed from the output).
            augmentations: applied in order to the image and annotations.
            image_format: "BGR", "RGB" or "L", the channel order of the returned image.
            use_instance_mask: build gt_masks from the segmentations.
            instance_mask_format: "polygon" or "bitmask".
            use_keypoint: build gt_keypoints from the annotations' keypoints.
            keypoint_hflip_indices: the keypoint each becomes under a horizontal flip
                (`detection_utils.create_keypoint_hflip_indices`); needed to flip keypoints.
            recompute_boxes: replace boxes by the tight boxes of the transformed masks (after
                a crop, a box clipped to the window is looser than its cropped mask).
            max_image_pixels: images whose header declares more pixels (width x height) are a
                DatasetError naming the file, before they are decoded.
        """
        if recompute_boxes and not use_instance_mask:
            raise ValueError("DatasetMapper: recompute_boxes needs use_instance_mask, the boxes come from the masks")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.recompute_boxes = recompute_boxes
        if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels <= 0:
            raise ValueError(f"DatasetMapper: max_image_pixels must be a positive int, got {max_image_pixels!r}")
        self.max_image_pixels = max_image_pixels
        mode = "training" if is_train else "inference"
        logger.info(f"DatasetMapper for {mode} with augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        augs = utils.build_augmentation(cfg, is_train)
        crop = is_train and cfg.INPUT.CROP.ENABLED
        if crop:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "use_keypoint": cfg.MODEL.KEYPOINT_ON,
            "keypoint_hflip_indices": (
                utils.create_keypoint_hflip_indices(cfg.DATASETS.TRAIN) if is_train and cfg.MODEL.KEYPOINT_ON else None
            ),
            "recompute_boxes": crop and cfg.MODEL.MASK_ON,
            "max_image_pixels": cfg.INPUT.MAX_IMAGE_PIXELS,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's copy stays untouched
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format, max_pixels=self.max_image_pixels)
        utils.check_image_size(dataset_dict, image)
        sem_seg_file = dataset_dict.pop("sem_seg_file_name", None)
        sem_seg = None
        if self.is_train and sem_seg_file is not None:
            sem_seg = utils.read_sem_seg(sem_seg_file, max_pixels=self.max_image_pixels)
            if sem_seg.shape != image.shape[:2]:
                raise DatasetError(
                    f"Label map {sem_seg_file} is {sem_seg.shape[1]}x{sem_seg.shape[0]} (width x height) but its "
                    f"image {dataset_dict['file_name']} is {image.shape[1]}x{image.shape[0]}; they must be the same size"
                )

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_size = image.shape[:2]
        # (H, W, C) -> (C, H, W)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if aug_input.sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))

        annos = dataset_dict.pop("annotations", None)
        if not self.is_train or annos is None:
            return dataset_dict
        for obj in annos:  # before transforming: what is not used is not transformed
            if not self.use_instance_mask:
                obj.pop("segmentation", None)
            if not self.use_keypoint:
                obj.pop("keypoints", None)
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_size, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for obj in annos
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, image_size, self.instance_mask_format)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
