"""`@configurable`: a constructor or function callable with explicit arguments or with a config.

    class RPN(nn.Module):
        @configurable
        def __init__(self, *, head, matcher, ...): ...

        @classmethod
        def from_config(cls, cfg, input_shape): return {"head": ..., "matcher": ...}

    RPN(head=..., matcher=...)        # explicit, no config anywhere
    RPN(cfg, input_shape)             # from_config builds the arguments
    RPN(cfg, input_shape, matcher=m)  # from_config, with one argument replaced
"""
import functools
import inspect
from typing import Any, Callable, Dict, Optional

from fvcore.common.config import CfgNode as _FvcoreCfgNode
from omegaconf import DictConfig

from .config import ConfigError

__all__ = ["configurable"]


def _is_config(obj: Any) -> bool:
    return isinstance(obj, (_FvcoreCfgNode, DictConfig))


def _called_with_config(args, kwargs) -> bool:
    return bool(args) and _is_config(args[0]) or _is_config(kwargs.get("cfg"))


def _explicit_args(from_config: Callable, args, kwargs) -> Dict[str, Any]:
    """Calls from_config with the arguments it accepts; the rest override what it returns."""
    params = inspect.signature(from_config).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes_any:
        return from_config(*args, **kwargs)
    own = {k: v for k, v in kwargs.items() if k in params}
    extra = {k: v for k, v in kwargs.items() if k not in params}
    explicit = from_config(*args, **own)
    explicit.update(extra)
    return explicit


def _from_config_message(class_name: str, error: ValueError) -> str:
    """The message of a constructor's ValueError, led by the class built from the config."""
    message = str(error)
    return message if message.startswith(class_name) else f"{class_name} (from the config): {message}"


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """Decorates `__init__` (uses the class's `from_config`) or a function (`from_config=` given)."""
    if init_func is not None:
        if init_func.__name__ != "__init__":
            raise TypeError("@configurable without arguments decorates __init__; for a function use "
                            "@configurable(from_config=...)")

        @functools.wraps(init_func)
        def wrapped_init(self, *args, **kwargs):
            if _called_with_config(args, kwargs):
                from_cfg = getattr(type(self), "from_config", None)
                if from_cfg is None:
                    raise AttributeError(f"{type(self).__name__} was given a config but defines no from_config")
                try:
                    return init_func(self, **_explicit_args(from_cfg, args, kwargs))
                except ConfigError:
                    raise
                except ValueError as e:
                    # Constructors validate their arguments (also those of the parts from_config
                    # builds); built from a config, the arguments came from its keys, which the
                    # message names, so it is the user's to act on.
                    raise ConfigError(_from_config_message(type(self).__name__, e)) from e
            return init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable  # used as @configurable()

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if _called_with_config(args, kwargs):
                return func(**_explicit_args(from_config, args, kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return decorator
