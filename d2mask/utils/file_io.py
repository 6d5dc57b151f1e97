"""`PathManager`: opens files by path or URL (iopath), as Detectron2's `detectron2.utils.file_io`.

Besides local paths it resolves https URLs and `detectron2://` paths (the form in which Detectron2's
configs name its model-zoo weights), downloaded once by `d2mask.utils.download.get_local_path`:
https only, into d2mask's cache at a path derived from a hash of the whole URL. (Detectron2 uses
iopath's HTTP handler, which builds the local path from the URL's path, `..` included, and also
fetches plain http; d2mask does not register it.)
"""
from typing import Any, List

from iopath.common.file_io import PathHandler
from iopath.common.file_io import PathManager as _PathManagerBase

from .download import DETECTRON2_PREFIX, DETECTRON2_URL_ROOT, get_local_path

__all__ = ["Detectron2Handler", "PathManager"]


class _DownloadHandler(PathHandler):
    """URLs, through `get_local_path`: https downloaded into the cache, other schemes refused."""

    def _get_supported_prefixes(self) -> List[str]:
        return ["https://", "http://", "ftp://"]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        del force  # iopath's "download again": here, delete the cached file (`cache_path(url)`)
        self._check_kwargs(kwargs)
        return get_local_path(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any):
        self._check_kwargs(kwargs)
        if mode not in ("r", "rb"):
            raise ValueError(f"A URL opens for reading only ('r' or 'rb'), not {mode!r}: {path}")
        return open(get_local_path(path), mode, buffering)


class Detectron2Handler(PathHandler):
    """`detectron2://ImageNetPretrained/MSRA/R-50.pkl` -> the same file under Detectron2's download root."""

    PREFIX = DETECTRON2_PREFIX
    URL_ROOT = DETECTRON2_URL_ROOT

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
PathManager.register_handler(_DownloadHandler())
PathManager.register_handler(Detectron2Handler(PathManager))
