"""The YAML config: fvcore's CfgNode with strict, explained merging.

Differences from a plain yacs merge, all in the user's favour:
- an unknown key names the file it came from and the closest valid keys;
- a value of the wrong type names the key, the value and the expected type;
- `_BASE_` chains of any depth resolve relative to the file, and a missing or cyclic base is an error;
- `merge_from_list` takes `KEY VALUE` pairs and `KEY=VALUE` items alike;
- `IMPORTS` modules are imported before the rest of a file is merged, so a project can register
  modules (and add its own config keys through an `add_config(cfg)` function) from outside d2mask.
"""
import ast
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from ..utils.registry import nearest
from .imports import import_modules
from .safe_eval import ConfigLoader

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "load_yaml_with_base"]

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file, key or value that d2mask cannot accept; the message says which and why."""


def _read_yaml(filename: str) -> Dict[str, Any]:
    try:
        with open(filename, "r", encoding="utf-8") as f:
            # Safe YAML; Detectron2's !!python/object/apply:eval is evaluated without running code.
            data = yaml.load(f, Loader=ConfigLoader)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {filename}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"Malformed YAML in {filename}{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"Malformed YAML in {filename}: nested too deeply to be a config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def _merge_dicts(base: Dict[str, Any], child: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml_with_base(filename: str, _chain: Sequence[str] = ()) -> Dict[str, Any]:
    """Reads a YAML config and, recursively, the `_BASE_` files it names (relative to itself).

    Returns:
        One dict, the child's values overriding its bases'. `IMPORTS` lists are concatenated.
    """
    filename = os.path.abspath(filename)
    if filename in _chain:
        cycle = " -> ".join(list(_chain) + [filename])
        raise ConfigError(f"Cyclic _BASE_ chain: {cycle}")
    data = _read_yaml(filename)
    if not isinstance(data.get("IMPORTS", []), list):
        raise ConfigError(f"{filename}: IMPORTS must be a list of module names, got {data['IMPORTS']!r}")
    base_name = data.pop(BASE_KEY, None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{filename}: _BASE_ must be a file path, got {base_name!r}")
    base_path = os.path.join(os.path.dirname(filename), os.path.expanduser(base_name))
    if not os.path.isfile(base_path):
        raise ConfigError(f"{filename}: _BASE_ file '{base_name}' not found (looked for {base_path})")
    base = load_yaml_with_base(base_path, tuple(_chain) + (filename,))
    imports = list(base.get("IMPORTS", [])) + [m for m in data.get("IMPORTS", []) if m not in base.get("IMPORTS", [])]
    merged = _merge_dicts(base, data)
    if imports:
        merged["IMPORTS"] = imports
    return merged


def _parse_literal(value: Any) -> Any:
    """Strings that read as Python literals become them ('(640, 672)' -> tuple), as in yacs."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return value


def _type_name(value: Any) -> str:
    return {list: "list", tuple: "list", str: "string", bool: "bool", int: "int", float: "float"}.get(
        type(value), type(value).__name__
    )


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """`value` converted to the type of `default`, or a ConfigError naming key, value and type."""
    value = _parse_literal(value)
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is type(default):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    elif type(value) is type(default):
        return value
    raise ConfigError(
        f"{key}{source}: expected a {_type_name(default)} (like the default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


def _all_keys(node: _FvcoreCfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, _FvcoreCfgNode):
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


class CfgNode(_FvcoreCfgNode):
    """A config tree of d2mask's keys. Create one with `get_cfg()`; see docs/configs.md."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merges a YAML file and its `_BASE_` chain; `IMPORTS` are imported first."""
        del allow_unsafe  # YAML is always loaded safely; the argument exists for Detectron2 callers
        data = load_yaml_with_base(cfg_filename)
        self._import_and_extend(data.get("IMPORTS", []), source=cfg_filename)
        self._merge_dict(data, prefix="", source=f" (in {cfg_filename})")

    def merge_from_other_cfg(self, cfg_other: _FvcoreCfgNode) -> None:
        self._merge_dict(cfg_other, prefix="", source="")

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merges command-line overrides: `["KEY", "VALUE", ...]` and/or `["KEY=VALUE", ...]`."""
        for key, value in _pairs(cfg_list):
            if key == "IMPORTS":
                self._merge_imports(_coerce(key, value, [], " (on the command line)"))
            else:
                self._set_key(key, value, source=" (on the command line)")

    def _merge_imports(self, modules: Sequence[str]) -> None:
        """Adds modules to IMPORTS (keeping the file's: the saved config.yaml must list every module
        whose keys it holds) and imports them."""
        self._import_and_extend(modules, source="the command line")
        self.IMPORTS = list(self.IMPORTS) + [m for m in modules if m not in self.IMPORTS]

    def _import_and_extend(self, modules: Sequence[str], source: str) -> None:
        if not isinstance(modules, (list, tuple)):
            raise ConfigError(f"IMPORTS in {source} must be a list of module names, got {modules!r}")
        for module in import_modules(modules, source=source):
            add_config = getattr(module, "add_config", None)
            if callable(add_config):
                add_config(self)

    def _merge_dict(self, data: Dict[str, Any], prefix: str, source: str) -> None:
        for key, value in data.items():
            if not isinstance(key, str):
                raise ConfigError(f"{prefix}{key!r}{source}: config keys are names, got the {_type_name(key)} {key!r}")
            full = prefix + key
            node, leaf = self._resolve(full, source)
            if isinstance(node[leaf], _FvcoreCfgNode):
                if not isinstance(value, dict):
                    raise ConfigError(f"{full}{source}: expected a mapping of sub-keys, got {value!r}")
                self._merge_dict(value, prefix=full + ".", source=source)
            else:
                node[leaf] = _coerce(full, value, node[leaf], source)

    def _set_key(self, full: str, value: Any, source: str) -> None:
        node, leaf = self._resolve(full, source)
        if isinstance(node[leaf], _FvcoreCfgNode):
            raise ConfigError(f"{full}{source} is a group of keys, not a value; set one of its sub-keys")
        node[leaf] = _coerce(full, value, node[leaf], source)

    def _resolve(self, full: str, source: str):
        node = self
        *parents, leaf = full.split(".")
        for name in parents:
            child = node.get(name) if isinstance(node, _FvcoreCfgNode) else None
            if not isinstance(child, _FvcoreCfgNode):
                self._unknown(full, source)
            node = child
        if leaf not in node:
            self._unknown(full, source)
        return node, leaf

    def _unknown(self, full: str, source: str) -> None:
        close = nearest(full, _all_keys(self), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown config key {full}{source}.{hint}")


def _pairs(cfg_list: Sequence[str]):
    """Yields (key, value) from `KEY VALUE` pairs and `KEY=VALUE` items, in order."""
    items = list(cfg_list)
    i = 0
    while i < len(items):
        item = str(items[i])
        if "=" in item and not item.startswith("-"):
            key, value = item.split("=", 1)
            i += 1
        elif item.startswith("--"):
            raise ConfigError(
                f"'{item}' looks like a command-line flag among the config overrides; put flags "
                f"before the KEY VALUE overrides"
            )
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"Config override '{item}' has no value; give KEY VALUE or KEY=VALUE")
            key, value = item, items[i + 1]
            i += 2
        yield key, value


_DEFAULTS: Optional[CfgNode] = None


def get_cfg() -> CfgNode:
    """A fresh copy of d2mask's default config."""
    global _DEFAULTS
    if _DEFAULTS is None:
        from .defaults import build_defaults

        _DEFAULTS = CfgNode(build_defaults())
    return _DEFAULTS.clone()


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """The config of a tool's command line: d2mask's defaults, then `config_file` (with its
    `_BASE_` chain, importing its IMPORTS), then the `KEY VALUE` / `KEY=VALUE` overrides `opts`.
    Every tool reads its config through this function. The result is not frozen.

    Args:
        config_file: a YAML config; "" gives the defaults.
        opts: command-line overrides.

    Raises:
        ConfigError: a missing or malformed file, an unknown key or a value of the wrong type.
    """
    if config_file.endswith(".py"):
        raise ConfigError(
            f"{config_file} is a Python config; this tool reads YAML configs. Train from a Python config "
            f"with tools/lazyconfig_train_net.py"
        )
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg
