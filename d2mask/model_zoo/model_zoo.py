"""Config files by their path under `configs/`, and the URLs of Detectron2's trained weights.

The configs ship inside the package: an installed d2mask has them in `d2mask/model_zoo/configs/`
(setup.py copies the repository's `configs/` there); a source checkout (`pip install -e .`) reads the
repository's `configs/` itself, so an edited config is used without reinstalling.
"""
import os
from typing import Any, Optional

import torch

from ..checkpoint import DetectionCheckpointer
from ..config import CfgNode, ConfigError, LazyConfig, instantiate, load_config
from ..modeling import build_model

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]

# Where Detectron2's model zoo keeps the weights trained with its configs:
# <root><config path without extension>/<suffix>. Only configs d2mask ships are listed.
_URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"
_CONFIG_PATH_TO_URL_SUFFIX = {
    "COCO-Detection/faster_rcnn_R_50_C4_1x": "137257644/model_final_721ade.pkl",
    "COCO-Detection/faster_rcnn_R_50_DC5_1x": "137847829/model_final_51d356.pkl",
    "COCO-Detection/faster_rcnn_R_50_FPN_1x": "137257794/model_final_b275ba.pkl",
    "COCO-Detection/faster_rcnn_R_50_DC5_3x": "137849425/model_final_68d202.pkl",
    "COCO-Detection/faster_rcnn_R_101_C4_3x": "138204752/model_final_298dad.pkl",
    "COCO-Detection/faster_rcnn_R_101_DC5_3x": "138204841/model_final_3e0943.pkl",
    "COCO-Detection/faster_rcnn_R_101_FPN_3x": "137851257/model_final_f6e8b1.pkl",
    "COCO-Detection/retinanet_R_50_FPN_1x": "190397773/model_final_bfca0b.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x": "137259246/model_final_9243eb.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_1x": "137260150/model_final_4f86c3.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "137260431/model_final_a54504.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x": "137849551/model_final_84107b.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x": "138363239/model_final_a2914c.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x": "138363294/model_final_0464b7.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x": "138205316/model_final_a3ec72.pkl",
    "Misc/cascade_mask_rcnn_R_50_FPN_1x": "138602847/model_final_e9d89b.pkl",
    "Misc/cascade_mask_rcnn_R_50_FPN_3x": "144998488/model_final_480dd8.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x": "139514544/model_final_dbfeb4.pkl",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x": "137261548/model_final_04e291.pkl",
}


def _configs_root() -> str:
    packaged = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def get_checkpoint_url(config_path: str) -> str:
    """The URL of the weights Detectron2 trained with `config_path` (e.g.
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml").

    Raises:
        ConfigError: no trained weights are published for that config.
    """
    name = os.path.splitext(config_path)[0]
    if name not in _CONFIG_PATH_TO_URL_SUFFIX:
        raise ConfigError(f"No trained weights for '{config_path}' in the model zoo; those with weights: "
                          f"{', '.join(sorted(_CONFIG_PATH_TO_URL_SUFFIX))}")
    return f"{_URL_ROOT}{name}/{_CONFIG_PATH_TO_URL_SUFFIX[name]}"


def get_config_file(config_path: str) -> str:
    """The file of a shipped config, from its path under `configs/`.

    Raises:
        ConfigError: d2mask ships no such config.
    """
    root = _configs_root()
    path = os.path.normpath(os.path.join(root, config_path))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise ConfigError(f"'{config_path}' is not a config of the model zoo: no file {path}. Its configs are the "
                          f"files under {root} (e.g. COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml)")
    return path


def get_config(config_path: str, trained: bool = False) -> Any:
    """The config of a shipped config file: a `CfgNode` for YAML, an omegaconf `DictConfig` for
    Python configs.

    Args:
        config_path: path under `configs/`, e.g. "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml".
        trained: set MODEL.WEIGHTS (train.init_checkpoint) to Detectron2's trained weights' URL;
            False keeps the file's own (typically ImageNet-pretrained backbone weights).
    """
    cfg_file = get_config_file(config_path)
    if cfg_file.endswith(".py"):
        cfg = LazyConfig.load(cfg_file)
        if trained:
            if "train" not in cfg or "init_checkpoint" not in cfg.train:
                raise ConfigError(f"{cfg_file} has no train.init_checkpoint to set the trained weights in")
            cfg.train.init_checkpoint = get_checkpoint_url(config_path)
        return cfg
    cfg = load_config(cfg_file)
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> torch.nn.Module:
    """The model of a shipped config with its weights loaded, in training mode.

    Weights URLs are downloaded (once, into the cache) by `d2mask.utils.download.get_local_path`;
    without network access that is one `DownloadError` line naming the URL and how to use a local
    file instead.

    Args:
        config_path: path under `configs/`, e.g. "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml".
        trained: load Detectron2's trained weights (see `get_config`).
        device: the model's device; default "cuda" where available, else "cpu".
    """
    cfg = get_config(config_path, trained)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
        weights = cfg.MODEL.WEIGHTS
    else:
        model = instantiate(cfg.model).to(device)
        weights = cfg.train.get("init_checkpoint", "") if "train" in cfg else ""
    if weights:
        DetectionCheckpointer(model).load(weights)
    return model
