"""`get_local_path`: the local file for a weights path or URL. The one place d2mask reaches the network.

d2mask downloads only when it is given a URL (`MODEL.WEIGHTS https://...` or `detectron2://...`,
a path through `d2mask.utils.file_io.PathManager`), and logs a line before each download. A URL is
downloaded once: into the cache directory (`$D2MASK_CACHE`, default `~/.cache/d2mask`), under
`downloads/<hash of the whole URL>/<file name>`, so that no URL can name a path outside the cache (iopath
builds the path from the URL's own path, `..` included) and a file from one host is never served
for the same path on another. Only https is fetched, redirects included: plain http can be altered
in transit. A download is written to a temporary file and renamed into place when complete (and,
when a checksum is given, verified), so the cache never holds a partial or wrong file.
"""
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from .atomic_write import atomic_write

__all__ = ["DETECTRON2_PREFIX", "DETECTRON2_URL_ROOT", "DownloadError", "cache_path", "get_local_path"]

logger = logging.getLogger(__name__)

DETECTRON2_PREFIX = "detectron2://"
DETECTRON2_URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"  # Detectron2's model zoo
MAX_DOWNLOAD_BYTES = 8 * 2**30  # the largest model-zoo files are a few hundred MB
_TIMEOUT_S = 60  # per connection attempt and per read
_CHUNK_BYTES = 1 << 20


class DownloadError(OSError):
    """A URL that is not downloaded: not https, no network, an error from the server, more than
    MAX_DOWNLOAD_BYTES, or content that does not match its checksum. The message names the URL."""


def cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """Where `url` is cached: `<cache_dir>/downloads/<32 hex digits of sha256(url)>/<file name>`.

    The file name is the last segment of the URL's path with characters other than letters,
    digits, `.`, `_` and `-` replaced (the extension tells `.pkl` from `.pth`); it cannot hold a
    separator or be `..`.
    """
    root = os.path.expanduser(cache_dir or os.environ.get("D2MASK_CACHE") or "~/.cache/d2mask")
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
    last = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", last).lstrip(".")[-100:] or "download"
    return os.path.join(root, "downloads", digest, name)


def get_local_path(path: str, *, sha256: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """The local file for `path`: a local path as it is; an `https://` URL, or Detectron2's
    `detectron2://X` (= https://dl.fbaipublicfiles.com/detectron2/X), downloaded into the cache
    on first use (see `cache_path`) and read from there afterwards.

    This is what MODEL.WEIGHTS URLs and model-zoo weights go through.

    Args:
        path: a file path or a URL.
        sha256: the expected SHA-256 (hex) of the file, where known: a download that differs is not
            kept, and a cached file that differs is an error.
        cache_dir: the cache directory; default `$D2MASK_CACHE`, else `~/.cache/d2mask`.

    Raises:
        DownloadError: one line naming the URL: another scheme than https (`http://`, `ftp://`, ...),
            no network (with how to work offline), an HTTP error, a redirect to a non-https URL,
            more than MAX_DOWNLOAD_BYTES, or a checksum mismatch.
    """
    if "://" not in path:
        return path
    url = DETECTRON2_URL_ROOT + path[len(DETECTRON2_PREFIX):] if path.startswith(DETECTRON2_PREFIX) else path
    if not url.startswith("https://"):
        raise DownloadError(
            f"Refusing to download {path}: d2mask downloads https:// URLs only (and detectron2://, which is "
            f"https); fetch the file another way and give its local path"
        )
    target = cache_path(url, cache_dir)
    if os.path.isfile(target):
        if sha256 is not None and _sha256_of(target) != sha256.lower():
            raise DownloadError(f"The cached download of {url} at {target} does not have the expected SHA-256 "
                                f"{sha256}; delete it to download it again")
        return target
    logger.info(f"Downloading {url} to {target} (d2mask reaches the network only for a URL; give a local "
                f"file path to stay offline)")
    _download(url, target, sha256)
    return target


def _download(url: str, target: str, sha256: Optional[str]) -> None:
    """Writes the content of `url` to `target`, atomically, if complete and matching `sha256`."""
    hasher, size = hashlib.sha256(), 0
    try:
        with _open_url(url) as response, atomic_write(target, "wb") as f:
            while True:
                chunk = response.read(_CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"Stopped downloading {url}: more than {MAX_DOWNLOAD_BYTES} bytes, larger "
                                        f"than any weights file; nothing was kept")
                hasher.update(chunk)
                f.write(chunk)
            if sha256 is not None and hasher.hexdigest() != sha256.lower():
                raise DownloadError(f"The download of {url} has SHA-256 {hasher.hexdigest()}, not the expected "
                                    f"{sha256}; it was not kept")
    except (urllib.error.URLError, http.client.HTTPException, ssl.SSLError, socket.timeout, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"Cannot download {url} ({type(e).__name__}: {reason}). Without network access, download it on "
            f"another machine and give its local path (e.g. MODEL.WEIGHTS /path/to/{os.path.basename(target)})"
        ) from None


class _HTTPSOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to https URLs only."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not newurl.startswith("https://"):
            raise DownloadError(f"Refusing to download {req.full_url}: it redirects to {newurl}, which is not https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HTTPSOnlyRedirects)


def _open_url(url: str) -> Any:
    """The HTTP response for `url` (a context manager with `read(n)`). Tests replace this function."""
    return _OPENER.open(url, timeout=_TIMEOUT_S)


def _sha256_of(filename: str) -> str:
    hasher = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher.hexdigest()
