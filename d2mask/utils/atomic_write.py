"""`atomic_write`: the one way d2mask writes a file that a reader or a crash must never see half-written."""
import contextlib
import errno
import os
import tempfile
from typing import IO, Iterator, Optional

__all__ = ["atomic_write", "DiskFullError"]


class DiskFullError(OSError):
    """A file could not be written for lack of space (or quota); the previous file is kept."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]"


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", "r", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore, as every Python program must
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None) -> Iterator[IO]:
    """Opens a temporary file beside `path` for writing; on a clean exit it is flushed to disk and
    renamed over `path` (atomic within one file system), so `path` holds either its old content or
    the complete new one, even if the process dies mid-write. On an exception the temporary file is
    removed and `path` is untouched. The file's permissions follow the umask, as `open`'s do.

    Raises:
        DiskFullError: the device (or the user's quota) is full; `path` is untouched.

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
        # mkstemp creates the file readable by its owner only; the result gets the permissions any
        # other file of this process would, so that a teammate or a serving account can read it
        os.chmod(tmp_path, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        full = _disk_full_errno(e)
        if full is not None:
            kept = "keeps its previous content" if os.path.exists(path) else "was not written"
            raise DiskFullError(
                full, f"No space left on the device of {directory} ({os.strerror(full)}) to write "
                f"{os.path.basename(path)}; {path} {kept}. Free some space, then continue with --resume"
            ) from None
        raise


def _disk_full_errno(error: BaseException) -> Optional[int]:
    """ENOSPC or EDQUOT if `error` comes from a full device, also when a writer (torch.save) wrapped
    the OSError in an error of its own; else None."""
    for _ in range(4):
        if error is None:
            return None
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error.errno
        error = error.__cause__ or error.__context__
    return None
