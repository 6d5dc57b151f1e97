import errno
import io
import os
import stat

import pytest
import torch

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.engine import USER_ERRORS
from d2mask.utils import atomic_write as atomic_write_module
from d2mask.utils.atomic_write import DiskFullError, atomic_write


def test_writes_text_and_bytes_and_creates_the_directory(tmp_path):
    text_path = tmp_path / "new" / "a.txt"
    with atomic_write(str(text_path)) as f:
        f.write("é\n")
    assert text_path.read_text(encoding="utf-8") == "é\n"
    with atomic_write(str(tmp_path / "b.bin"), "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_an_error_mid_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(path)) as f:
            f.write("half of the new")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_appending_is_refused():
    with pytest.raises(ValueError, match="mode"):
        with atomic_write("x", "a"):
            pass


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_written_file_has_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(str(tmp_path / "out.txt")) as f:
            f.write("x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == 0o666 & ~umask


class _FullDevice(io.RawIOBase):
    """A file of a device that fills after `room` bytes."""

    def __init__(self, raw, room):
        self.raw, self.room = raw, room

    def writable(self):
        return True

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.raw.write(data)

    def close(self):
        self.raw.close()
        super().close()


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(100, 100)
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic_write_module.os, "fdopen", lambda fd, *a, **k: _FullDevice(real_fdopen(fd, *a, **k), 1000))
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(DiskFullError) as e:
        checkpointer.save("model_final")
    assert str(e.value) == (
        f"No space left on the device of {tmp_path} (No space left on device) to write model_final.pth; "
        f"{tmp_path / 'model_final.pth'} keeps its previous content. Free some space, then continue with --resume"
    )
    assert isinstance(e.value, USER_ERRORS)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
