"""`instantiate`: builds the objects a Python config describes.

A node with a `_target_` is a call: its other keys are keyword arguments, built first (depth first),
then `_target_(**kwargs)` is called. An `_args_` list gives positional arguments before them
(`LazyConfig.save` writes a `functools.partial` so; `LazyCall` records keyword arguments only). Lists and mappings without `_target_` are built element by
element into plain Python lists and dicts; every other value is passed through unchanged.

    cfg = LazyCall(FPN)(bottom_up=LazyCall(ResNet)(depth=18, ...), out_channels=256, ...)
    fpn = instantiate(cfg)   # ResNet built first, then FPN(bottom_up=<ResNet>, out_channels=256, ...)
"""
import importlib
import inspect
from typing import Any, Callable, Dict

from omegaconf import DictConfig, ListConfig, OmegaConf, SCMode

from ..utils.registry import did_you_mean
from .config import ConfigError

__all__ = ["instantiate", "locate", "target_name", "InstantiationError"]

TARGET_KEY = "_target_"
ARGS_KEY = "_args_"


class InstantiationError(ConfigError):
    """A config node that could not be built; the message names the node's path and its target."""


def locate(name: str) -> Any:
    """The object a dotted "module.qualname" string names, importing the module as needed.

    Raises:
        ConfigError: nothing by that name, naming the longest importable prefix and the nearest
            attribute there; or the module raised while importing.
    """
    parts = name.split(".")
    if not all(parts):
        raise ConfigError(f"'{name}' is not a dotted 'module.qualname' name")
    obj, depth = None, 0
    for depth in range(len(parts), 0, -1):
        module_name = ".".join(parts[:depth])
        try:
            obj = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            # Only "this prefix does not exist" means try a shorter one; a missing import inside
            # an existing module is the module's own error.
            if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
                raise ConfigError(f"Cannot locate '{name}': importing {module_name} failed: {e}") from e
        except Exception as e:
            raise ConfigError(
                f"Cannot locate '{name}': importing {module_name} raised {type(e).__name__}: {e}"
            ) from e
    else:
        raise ConfigError(f"Cannot locate '{name}': no module named '{parts[0]}'")
    for i in range(depth, len(parts)):
        if not hasattr(obj, parts[i]):
            owner = ".".join(parts[:i])
            public = [a for a in dir(obj) if not a.startswith("_")]
            raise ConfigError(
                f"Cannot locate '{name}': '{owner}' has no attribute '{parts[i]}'."
                f"{did_you_mean(parts[i], public)}"
            )
        obj = getattr(obj, parts[i])
    return obj


def target_name(obj: Callable) -> str:
    """The "module.qualname" string that `locate` turns back into `obj`.

    Raises:
        ConfigError: `obj` cannot be found again by that name (a lambda, a function defined inside
            another function or inside a config file).
    """
    name = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"
    try:
        found = locate(name)
    except ConfigError:
        found = None
    if found is not obj:
        raise ConfigError(
            f"{obj!r} has no importable 'module.qualname' name ('{name}' does not lead back to it); "
            f"define it at the top level of an importable module"
        )
    return name


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_kwargs(target: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Rejects argument names the target does not take, naming the nearest one it does."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in kwargs:
        if key not in params:
            raise InstantiationError(
                f"{where}: {_describe(target)} takes no argument '{key}'.{did_you_mean(key, names)} "
                f"It takes: {', '.join(names) or '(nothing)'}"
            )


def _describe(target: Any) -> str:
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(target)


def _build(node: Any, path: str) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):  # e.g. a LazyCall inside a plain list
        node = OmegaConf.to_container(node, resolve=True, structured_config_mode=SCMode.INSTANTIATE)
    if isinstance(node, (list, tuple)):
        return type(node)(_build(v, _join(path, i)) for i, v in enumerate(node))
    if not isinstance(node, dict):
        return node
    if TARGET_KEY not in node:
        return {k: _build(v, _join(path, k)) for k, v in node.items()}
    where = f"Building '{path or '<root>'}'"
    target = node[TARGET_KEY]
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError as e:
            raise InstantiationError(f"{where}: {e}") from None
    if not callable(target):
        raise InstantiationError(f"{where}: _target_ must be a callable or a 'module.qualname', got {target!r}")
    args = node.get(ARGS_KEY, [])
    if not isinstance(args, (list, tuple)):
        raise InstantiationError(f"{where}: {ARGS_KEY} must be a list of positional arguments, got {args!r}")
    args = _build(list(args), _join(path, ARGS_KEY))
    kwargs = {k: _build(v, _join(path, k)) for k, v in node.items() if k not in (TARGET_KEY, ARGS_KEY)}
    _check_kwargs(target, kwargs, where)
    try:
        return target(*args, **kwargs)
    except InstantiationError:
        raise  # a nested instantiate() inside the target already says where
    except Exception as e:
        raise InstantiationError(f"{where} ({_describe(target)}) failed: {type(e).__name__}: {e}") from e


def instantiate(cfg: Any) -> Any:
    """Builds `cfg` recursively: each node with a `_target_` becomes the result of calling it.

    Args:
        cfg: a DictConfig/ListConfig (e.g. a node of `LazyConfig.load(...)`), a dict, a list, or any
            other value (returned unchanged). `_target_` is a callable or a "module.qualname" string.
            Interpolations are resolved first.

    Returns:
        The built object; containers without a `_target_` come back as plain lists and dicts.

    Raises:
        InstantiationError: a target cannot be found, does not take an argument the config gives,
            or raised while being called; the message names the node's path in the config.
    """
    root = cfg._get_full_key(None) if isinstance(cfg, (DictConfig, ListConfig)) else ""
    # `root` is e.g. "model.roi_heads" when given a node of a larger config, so errors name full paths
    return _build(cfg, str(root) if root else "")
