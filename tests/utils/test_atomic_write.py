import os

import pytest

from d2mask.utils.atomic_write import atomic_write


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
