"""Configs from strangers: YAML aliases cannot expand without bound, error messages never print a
huge value, no directory is put on the import path, and IMPORTS can be refused."""
import os
import sys
import textwrap

import pytest

from d2mask.config import ConfigError, LazyConfig, get_cfg, load_yaml_with_base
from d2mask.config.__main__ import main as print_config
from tests.common import REPO


def _alias_bomb(levels: int) -> str:
    """A list of 9 strings, then `levels` lists of 9 aliases of the previous one: 9**(levels + 1)
    strings in a few hundred bytes."""
    lists = ["&a0 [" + ", ".join(['"xxxxxxxxxx"'] * 9) + "]"]
    lists += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "VERSION: [" + ", ".join(lists) + "]\n"


def _marker_module(directory, name):
    """A module that creates `<name>.imported` in `directory` when imported: proof that it ran."""
    marker = directory / f"{name}.imported"
    (directory / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return marker


def test_yaml_aliases_cannot_expand_a_small_file_into_a_huge_config(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(4))  # 59,049 strings; without the bound, the error printed them all
    assert path.stat().st_size < 400
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(path))
    assert str(path) in str(info.value) and "expand to more than 10000 values" in str(info.value)
    assert len(str(info.value)) < 300

    path.write_text("MODEL:\n  PIXEL_MEAN: &loop [*loop]\n")  # an alias inside its own anchor
    with pytest.raises(ConfigError, match="refer to themselves"):
        get_cfg().merge_from_file(str(path))


def test_ordinary_aliases_still_load(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("MODEL:\n  PIXEL_MEAN: &mean [1.0, 2.0, 3.0]\n  PIXEL_STD: *mean\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.PIXEL_STD == [1.0, 2.0, 3.0] == cfg.MODEL.PIXEL_MEAN


def test_a_lazy_yaml_config_is_bounded_alike(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(4))
    with pytest.raises(ConfigError, match="bomb.yaml: its YAML aliases"):
        LazyConfig.load(str(path))


def test_an_error_never_prints_a_huge_value(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(f"SOLVER:\n  MAX_ITER: {'x' * 100_000}\n  STEPS: {[[1] * 50] * 50}\n")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER") as info:
        get_cfg().merge_from_file(str(path))
    assert len(str(info.value)) < 400
    path.write_text(f"IMPORTS: [{'m' * 100_000}]\n")
    with pytest.raises(ImportError, match="must hold module names") as info:
        get_cfg().merge_from_file(str(path))
    assert len(str(info.value)) < 400
    path.write_text(f"VERSION: {[[1] * 50] * 50}\n")
    with pytest.raises(ConfigError, match="VERSION") as info:
        get_cfg().merge_from_file(str(path))
    assert len(str(info.value)) < 400


def test_the_current_directory_is_not_an_import_path(tmp_path, monkeypatch):
    marker = _marker_module(tmp_path, "planted_module")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    config = tmp_path / "c.yaml"
    config.write_text("IMPORTS: [planted_module]\n")
    with pytest.raises(ImportError, match="'planted_module'.*was not found"):
        get_cfg().merge_from_file(str(config))
    assert not marker.exists() and sys.path == path_before

    python_config = tmp_path / "cfg.py"
    python_config.write_text("train = dict(max_iter=1)\n")
    assert LazyConfig.load(str(python_config)).train.max_iter == 1
    assert sys.path == path_before


def test_imports_can_be_refused_to_inspect_a_config(tmp_path, monkeypatch, capsys):
    marker = _marker_module(tmp_path, "strangers_module")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "base.yaml").write_text("IMPORTS: [strangers_module]\n")
    child = tmp_path / "child.yaml"
    child.write_text(textwrap.dedent("""
        _BASE_: base.yaml
        SOLVER:
          MAX_ITER: 7
        """))
    with pytest.raises(ConfigError, match=r"child.yaml \(or a _BASE_ of it\) lists IMPORTS \['strangers_module'\]"):
        get_cfg().merge_from_file(str(child), allow_imports=False)
    assert print_config([str(child), "--no-imports"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ConfigError: ") and err.count("\n") == 1 and "strangers_module" in err
    assert not marker.exists()

    assert print_config([str(child), "SOLVER.BASE_LR", "0.5"]) == 0  # allowed, the module runs
    assert marker.exists()
    out = capsys.readouterr().out
    assert "MAX_ITER: 7" in out and "BASE_LR: 0.5" in out

    (tmp_path / "plain.yaml").write_text("SOLVER:\n  MAX_ITER: 3\n")
    assert print_config([str(tmp_path / "plain.yaml"), "--no-imports"]) == 0
    assert "MAX_ITER: 3" in capsys.readouterr().out


def test_every_shipped_config_with_imports_loads_without_the_current_directory(monkeypatch, tmp_path):
    # from elsewhere, with the repository root on the path as the tools put it
    monkeypatch.chdir(tmp_path)
    with_imports = []
    for folder in ("configs", "projects"):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for path in (os.path.join(root, name) for name in files if name.endswith(".yaml")):
                if load_yaml_with_base(path).get("IMPORTS"):
                    get_cfg().merge_from_file(path)
                    with_imports.append(path)
    assert len(with_imports) >= 3
