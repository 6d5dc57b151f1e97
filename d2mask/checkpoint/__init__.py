"""Checkpoints: saving and loading d2mask, Detectron2 and Caffe2-era weights."""
from .c2_model_loading import align_and_update_state_dicts, convert_c2_resnet_names
from ..utils.file_io import Detectron2Handler
from .detection_checkpoint import CheckpointError, DetectionCheckpointer
from .safe_pickle import UnsafePickleError, load_numpy_pickle
from .torchvision_model_loading import convert_torchvision_checkpoint, convert_torchvision_resnet

__all__ = [
    "CheckpointError",
    "DetectionCheckpointer",
    "Detectron2Handler",
    "UnsafePickleError",
    "align_and_update_state_dicts",
    "convert_c2_resnet_names",
    "convert_torchvision_checkpoint",
    "convert_torchvision_resnet",
    "load_numpy_pickle",
]
