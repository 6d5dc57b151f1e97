"""`d2mask.utils.file_io.PathManager`: local files, and Detectron2's detectron2:// prefix."""
from torch import nn

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.utils.file_io import Detectron2Handler, PathManager


def test_local_files(tmp_path):
    folder = str(tmp_path / "a" / "b")
    PathManager.mkdirs(folder)
    with PathManager.open(f"{folder}/x.txt", "w") as f:
        f.write("hello")
    assert PathManager.exists(f"{folder}/x.txt") and PathManager.ls(folder) == ["x.txt"]
    assert PathManager.get_local_path(f"{folder}/x.txt") == f"{folder}/x.txt"


def test_detectron2_prefix_resolves_to_the_model_zoo_url():
    asked = []

    class Recorder:
        def get_local_path(self, url, **kwargs):
            asked.append(url)
            return "/cache/R-50.pkl"

    handler = Detectron2Handler(Recorder())
    assert handler._get_local_path("detectron2://ImageNetPretrained/MSRA/R-50.pkl") == "/cache/R-50.pkl"
    assert asked == ["https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"]
    assert "detectron2://" in PathManager._path_handlers  # the shared PathManager knows the prefix


def test_checkpointer_reads_through_the_shared_path_manager(tmp_path):
    assert DetectionCheckpointer(nn.Linear(1, 1), str(tmp_path)).path_manager is PathManager
