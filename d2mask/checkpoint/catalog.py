"""`Detectron2Handler`: resolves Detectron2's `detectron2://` model-zoo paths (used by MODEL.WEIGHTS in
Detectron2's configs) to its public download URLs."""
from typing import Any, List

from iopath.common.file_io import PathHandler, PathManager

__all__ = ["Detectron2Handler"]


class Detectron2Handler(PathHandler):
    """`detectron2://ImageNetPretrained/MSRA/R-50.pkl` -> the same file under Detectron2's download root."""

    PREFIX = "detectron2://"
    URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"

    def __init__(self, path_manager: PathManager):
        """
        Args:
            path_manager: resolves (downloads and caches) the https URL.
        """
        super().__init__()
        self._path_manager = path_manager

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        return self._path_manager.get_local_path(self.URL_ROOT + path[len(self.PREFIX):], **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs: Any):
        return self._path_manager.open(self._get_local_path(path), mode, **kwargs)
