"""d2mask.model_zoo: shipped configs by path, Detectron2's weights URLs, models with weights loaded.
No test reaches the network: `d2mask.utils.download._open_url` is replaced."""
import io
import os
import subprocess
import sys
import urllib.error

import pytest
import torch

from d2mask import model_zoo
from d2mask.config import CfgNode, ConfigError
from d2mask.model_zoo import model_zoo as zoo_module
from d2mask.utils import download
from d2mask.utils.download import DownloadError
from tests.common import REPO

MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
SHAPES = "Shapes/mask_rcnn_R_18_FPN_shapes.yaml"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_CACHE", str(tmp_path / "cache"))


def _serve(monkeypatch, content):
    """Answers each URL with content[url] (bytes, or an exception to raise); returns the URLs asked."""
    asked = []

    def open_url(url):
        asked.append(url)
        if isinstance(content[url], Exception):
            raise content[url]
        return io.BytesIO(content[url])

    monkeypatch.setattr(download, "_open_url", open_url)
    return asked


def test_config_file_is_the_shipped_file():
    assert model_zoo.get_config_file(MASK_RCNN) == os.path.join(REPO, "configs", MASK_RCNN)


@pytest.mark.parametrize("path", ["COCO-Detection/no_such_config.yaml", "../setup.py"])
def test_unknown_config_is_one_line(path):
    with pytest.raises(ConfigError, match="is not a config of the model zoo") as e:
        model_zoo.get_config_file(path)
    assert "\n" not in str(e.value)


def test_trained_weights_are_detectron2s_url():
    cfg = model_zoo.get_config(MASK_RCNN, trained=True)
    assert isinstance(cfg, CfgNode) and cfg.MODEL.MASK_ON
    assert cfg.MODEL.WEIGHTS == ("https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/"
                                 "mask_rcnn_R_50_FPN_1x/137260431/model_final_a54504.pkl")
    assert model_zoo.get_config(MASK_RCNN).MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert model_zoo.get_checkpoint_url("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml") == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x/137261548/model_final_04e291.pkl"
    )
    with pytest.raises(ConfigError, match="No trained weights for 'Shapes/mask_rcnn_R_18_FPN_shapes.py'"):
        model_zoo.get_config("Shapes/mask_rcnn_R_18_FPN_shapes.py", trained=True)


def test_python_config():
    cfg = model_zoo.get_config("Shapes/mask_rcnn_R_18_FPN_shapes.py")
    assert cfg.model.backbone.out_channels == 64 and cfg.train.init_checkpoint == ""


def test_get_offline_is_one_line_naming_the_url(monkeypatch):
    url = model_zoo.get_checkpoint_url(MASK_RCNN)
    asked = _serve(monkeypatch, {url: urllib.error.URLError(OSError(101, "Network is unreachable"))})
    with pytest.raises(DownloadError) as e:
        model_zoo.get(MASK_RCNN, trained=True, device="cpu")
    assert asked == [url] and str(e.value).startswith(f"Cannot download {url}") and "\n" not in str(e.value)
    assert "MODEL.WEIGHTS /path/to/model_final_a54504.pkl" in str(e.value)


def test_get_loads_the_trained_weights(monkeypatch):
    name = os.path.splitext(SHAPES)[0]
    monkeypatch.setitem(zoo_module._CONFIG_PATH_TO_URL_SUFFIX, name, "1/model_final_000000.pth")
    torch.manual_seed(1)
    reference = model_zoo.get(SHAPES, device="cpu")
    buffer = io.BytesIO()
    torch.save({"model": reference.state_dict()}, buffer)
    asked = _serve(monkeypatch, {model_zoo.get_checkpoint_url(SHAPES): buffer.getvalue()})
    torch.manual_seed(2)
    model = model_zoo.get(SHAPES, trained=True, device="cpu")
    assert asked == [f"https://dl.fbaipublicfiles.com/detectron2/{name}/1/model_final_000000.pth"]
    assert model.training
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_an_installed_package_ships_the_configs(tmp_path):
    """setup.py copies configs/ into the package; the copy is what an installed d2mask reads."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                   cwd=REPO, check=True, capture_output=True)
    code = ("from d2mask import model_zoo; print(model_zoo.get_config_file('Shapes/mask_rcnn_R_18_FPN_shapes.py')); "
            "print(model_zoo.get_config('Shapes/mask_rcnn_R_18_FPN_shapes.py').model.backbone.out_channels)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
                         cwd=str(tmp_path), check=True, capture_output=True, text=True).stdout.split()
    assert out == [str(tmp_path / "lib/d2mask/model_zoo/configs/Shapes/mask_rcnn_R_18_FPN_shapes.py"), "64"]


@pytest.mark.parametrize("path, reference", [
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py", "detectron2_mask_rcnn_R_50_FPN_state_dict.txt"),
    ("COCO-Detection/retinanet_R_50_FPN_1x.py", "detectron2_retinanet_R_50_FPN_state_dict.txt"),
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.py", "detectron2_keypoint_rcnn_R_50_FPN_state_dict.txt"),
])
def test_detectron2s_python_coco_configs(path, reference):
    """Detectron2's model-zoo Python configs: its model, an `lr_multiplier` 1x schedule, its weights."""
    from d2mask.config import instantiate
    from tests.common import read_reference

    cfg = model_zoo.get_config(path)
    assert set(cfg) == {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
    assert cfg.model.backbone.bottom_up.freeze_at == 2
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    multiplier = instantiate(cfg.lr_multiplier)  # warm-up from 0.001, x0.1 at 2/3, x0.01 at 8/9
    assert [multiplier(p) for p in (0.0, 0.5, 0.7, 0.9)] == pytest.approx([0.001, 1.0, 0.1, 0.01])
    with torch.device("meta"):  # names and shapes only
        model = instantiate(cfg.model)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == dict(read_reference(reference))


def test_python_config_trained_weights_are_those_of_its_yaml_twin():
    trained = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py", trained=True)
    assert trained.train.init_checkpoint == model_zoo.get_checkpoint_url(MASK_RCNN)
