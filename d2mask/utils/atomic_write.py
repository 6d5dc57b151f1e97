"""`atomic_write`: the one way d2mask writes a file that a reader or a crash must never see half-written."""
import contextlib
import os
import tempfile
from typing import IO, Iterator, Optional

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None) -> Iterator[IO]:
    """Opens a temporary file beside `path` for writing; on a clean exit it is flushed to disk and
    renamed over `path` (atomic within one file system), so `path` holds either its old content or
    the complete new one, even if the process dies mid-write. On an exception the temporary file is
    removed and `path` is untouched.

    Args:
        path: the file to write; its directory is created if missing.
        mode: "w" (text, UTF-8 unless `encoding` says otherwise) or "wb" (bytes).
        encoding: text encoding for mode "w".

    Example:
        with atomic_write("out/metrics.json") as f:
            json.dump(results, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
