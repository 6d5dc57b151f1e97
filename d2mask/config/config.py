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
import reprlib
from typing import Any, Dict, List, Optional, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from ..utils.registry import nearest
from .imports import import_modules
from .safe_eval import ConfigLoader

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "load_yaml_document", "load_yaml_with_base"]

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file, key or value that d2mask cannot accept; the message says which and why."""


# YAML aliases let a few lines stand for billions of values (each `*name` repeats a whole earlier
# subtree), which would exhaust memory when merged, saved or printed: they may add this many values
# to those the file spells out (omegaconf bounds its own YAML loading at the same number).
MAX_YAML_ALIAS_VALUES = 10_000


def _aliases_expand_too_far(root: yaml.Node) -> bool:
    """Whether expanding every alias under `root` would add more than MAX_YAML_ALIAS_VALUES nodes
    to those in the file (also true for a node that contains itself), counted without expanding."""
    distinct, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) not in distinct:
            distinct.add(id(node))
            stack.extend(_children(node))
    limit = len(distinct) + MAX_YAML_ALIAS_VALUES + 1
    sizes: Dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = limit  # a node reached again while being counted contains itself
        total = 1
        for child in _children(node):
            total = min(total + size(child), limit)
            if total == limit:
                break
        sizes[id(node)] = total
        return total

    return size(root) == limit


def _children(node: yaml.Node) -> List[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def load_yaml_document(stream: Any, filename: str) -> Any:
    """The YAML document in `stream` (text or a text file), read with `ConfigLoader`: plain
    mappings, lists, strings and numbers, and Detectron2's eval tag evaluated by `restricted_eval`;
    no tag creates an object or runs code.

    Raises:
        ConfigError: malformed YAML (with line and column), nested too deeply, or aliases that would
            add more than MAX_YAML_ALIAS_VALUES values to the file's own, naming `filename`.
    """
    try:
        # Safe YAML; Detectron2's !!python/object/apply:eval is evaluated without running code.
        loader = ConfigLoader(stream)  # reads the first characters already
        try:
            node = loader.get_single_node()
            if node is not None and _aliases_expand_too_far(node):
                raise ConfigError(
                    f"{filename}: its YAML aliases (*name) expand to more than {MAX_YAML_ALIAS_VALUES} "
                    f"values, or refer to themselves; a config is far smaller, so the file is refused"
                )
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"Malformed YAML in {filename}{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"Malformed YAML in {filename}: nested too deeply to be a config") from None


def _read_yaml(filename: str) -> Dict[str, Any]:
    try:
        with open(filename, "r", encoding="utf-8") as f:
            data = load_yaml_document(f, filename)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {filename}") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file {filename} is a directory") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{filename} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename} must hold a mapping of config keys, got {type(data).__name__}")
    return data


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 80
_BRIEF.maxlevel = 2
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 4


def _brief(value: Any) -> str:
    """`repr(value)`, shortened (to at most a few hundred characters, however large or deep the value)
    so that an error message never prints a huge value from a file."""
    return _BRIEF.repr(value)


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
        raise ConfigError(f"{filename}: IMPORTS must be a list of module names, got {_brief(data['IMPORTS'])}")
    base_name = data.pop(BASE_KEY, None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{filename}: _BASE_ must be a file path, got {_brief(base_name)}")
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
        f"got {_type_name(value)} {_brief(value)}"
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

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False, *, allow_imports: bool = True) -> None:
        """Merges a YAML file and its `_BASE_` chain; `IMPORTS` are imported first.

        Reading the YAML never runs code; importing the IMPORTS modules runs theirs.

        Args:
            cfg_filename: the file.
            allow_unsafe: ignored (the YAML is always loaded safely); accepted for Detectron2 callers.
            allow_imports: False refuses a file whose chain lists IMPORTS, with a ConfigError naming
                the modules, before anything is imported: to inspect a config from a stranger
                (`python -m d2mask.config FILE --no-imports`).
        """
        del allow_unsafe
        data = load_yaml_with_base(cfg_filename)
        if data.get("IMPORTS") and not allow_imports:
            raise ConfigError(
                f"{cfg_filename} (or a _BASE_ of it) lists IMPORTS {_brief(data['IMPORTS'])}; importing them "
                f"would run their code, which was not allowed (allow_imports=False, --no-imports)"
            )
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
            raise ConfigError(f"IMPORTS in {source} must be a list of module names, got {_brief(modules)}")
        for module in import_modules(modules, source=source):
            add_config = getattr(module, "add_config", None)
            if callable(add_config):
                add_config(self)

    def _merge_dict(self, data: Dict[str, Any], prefix: str, source: str) -> None:
        for key, value in data.items():
            if not isinstance(key, str):
                raise ConfigError(f"{prefix}{_brief(key)}{source}: config keys are names, got the {_type_name(key)} {_brief(key)}")
            full = prefix + key
            node, leaf = self._resolve(full, source)
            if isinstance(node[leaf], _FvcoreCfgNode):
                if not isinstance(value, dict):
                    raise ConfigError(f"{full}{source}: expected a mapping of sub-keys, got {_brief(value)}")
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
