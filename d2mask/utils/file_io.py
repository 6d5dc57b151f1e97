"""`PathManager`: opens files by path or URL (iopath), as Detectron2's `detectron2.utils.file_io`.

Besides local paths it resolves http(s) URLs (downloaded once into iopath's cache), OneDrive links
and `detectron2://` paths, the form in which Detectron2's configs name its model-zoo weights.
"""
from typing import Any, List

from iopath.common.file_io import HTTPURLHandler, OneDrivePathHandler, PathHandler
from iopath.common.file_io import PathManager as _PathManagerBase

__all__ = ["Detectron2Handler", "PathManager"]


class Detectron2Handler(PathHandler):
    """`detectron2://ImageNetPretrained/MSRA/R-50.pkl` -> the same file under Detectron2's download root."""

    PREFIX = "detectron2://"
    URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"

    def __init__(self, path_manager: _PathManagerBase):
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


PathManager = _PathManagerBase()
PathManager.register_handler(HTTPURLHandler())
PathManager.register_handler(OneDrivePathHandler())
PathManager.register_handler(Detectron2Handler(PathManager))
