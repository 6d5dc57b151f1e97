"""`@configurable`: a constructor or function callable with explicit arguments or with a config.

    class RPN(nn.Module):
        @configurable
        def __init__(self, *, head, matcher, ...): ...

        @classmethod
        def from_config(cls, cfg, input_shape): return {"head": ..., "matcher": ...}

    RPN(head=..., matcher=...)        # explicit, no config anywhere
    RPN(cfg, input_shape)             # from_config builds the arguments
    RPN(cfg, input_shape, matcher=m)  # from_config, with one argument replaced

Constructors validate their arguments and raise ValueError; called with a config, the class raises
ConfigError instead (one line for the user, the value came from a key). A constructor's message names
the key its argument comes from, as in `FPN fuse_type (MODEL.FPN.FUSE_TYPE) must be 'sum' or 'avg'`.
A part built from different keys at different places (a Matcher from MODEL.RPN.* or
MODEL.ROI_HEADS.*, a Box2BoxTransform, a ROIPooler) cannot know its key: it raises `ArgumentError`,
naming the argument, and the `from_config` that builds it names the key with `config_keys`:

    with config_keys(thresholds="MODEL.RPN.IOU_THRESHOLDS", labels="MODEL.RPN.IOU_LABELS"):
        matcher = build_anchor_matcher(cfg, cfg.MODEL.RPN)
    # ConfigError: Matcher MODEL.RPN.IOU_THRESHOLDS must be increasing IoUs in [0, 1], got [0.7, 0.3]
"""
import contextlib
import functools
import inspect
from typing import Any, Callable, Dict, Iterator, Optional

from fvcore.common.config import CfgNode as _FvcoreCfgNode
from omegaconf import DictConfig

from .config import ConfigError

__all__ = ["configurable", "ArgumentError", "config_keys"]


class ArgumentError(ValueError):
    """An invalid constructor argument of a part that several config keys can describe.

    The message names each argument at fault in backticks: `ArgumentError(f"Matcher `thresholds` must
    be increasing, got {thresholds}", "thresholds")`. `str()` shows the argument's name; inside
    `config_keys` naming it, the error becomes a ConfigError showing the config key instead.
    """

    def __init__(self, message: str, *arguments: str):
        self.message = message
        self.arguments = arguments
        super().__init__(self.naming({}))

    def naming(self, keys: Dict[str, str]) -> str:
        """The message with each argument shown as `keys[argument]` (or as its name, when not in keys)."""
        text = self.message
        for argument in self.arguments:
            text = text.replace(f"`{argument}`", keys.get(argument, argument))
        return text


def _unkeyed_argument_error(error: Exception) -> Optional[ArgumentError]:
    """The ArgumentError that `error` is, or that @configurable turned into this ConfigError; None
    for anything else, and for a ConfigError that already names the keys."""
    if isinstance(error, ArgumentError):
        return error
    cause = error.__cause__
    if isinstance(error, ConfigError) and isinstance(cause, ArgumentError) and not getattr(error, "keyed", False):
        return cause
    return None


@contextlib.contextmanager
def config_keys(**keys: str) -> Iterator[None]:
    """Names the config key of arguments of the parts built in the block (`argument="MODEL.X.KEY"`):
    an ArgumentError about one of them becomes a ConfigError showing the key. The one way a
    `from_config` says where the values of a shared part came from."""
    try:
        yield
    except (ArgumentError, ConfigError) as error:
        argument_error = _unkeyed_argument_error(error)
        if argument_error is None or not any(a in keys for a in argument_error.arguments):
            raise
        keyed = ConfigError(argument_error.naming(keys))
        keyed.keyed = True  # an enclosing block must not rename what this one named
        raise keyed from argument_error


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
