"""No reliability test writes generated datasets into the user's ~/.cache."""
import pytest


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))
