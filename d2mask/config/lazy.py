"""Python configs on omegaconf: a config describes the objects to build, not keys to read.

    # configs/my_model.py
    from d2mask.config import LazyCall as L
    from d2mask.modeling import RandomSampler
    from ..common.models.mask_rcnn_fpn import model    # relative imports reach other config files

    model.roi_heads.proposal_sampler = L(RandomSampler)(batch_size_per_image=256, positive_fraction=0.5)

    cfg = LazyConfig.load("configs/my_model.py")       # DictConfig {"model": {"_target_": ..., ...}}
    LazyConfig.apply_overrides(cfg, ["model.roi_heads.num_classes=3"])
    model = instantiate(cfg.model)

Every public top-level mapping or list in the file becomes a key of the loaded config; a file that
imports a mapping from another config file gets it as a DictConfig, to edit with attribute access
(`train.max_iter = 500`). See the "Python configs (LazyConfig)" section of docs/configs.md.
"""
import builtins
import dataclasses
import functools
import inspect
import io
import os
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig, ListConfig, OmegaConf, SCMode

from ..utils.atomic_write import atomic_write
from ..utils.registry import did_you_mean, nearest
from .config import ConfigError, _parse_literal, load_yaml_document
from .instantiate import ARGS_KEY, TARGET_KEY, locate, target_name

__all__ = ["LazyCall", "LazyConfig"]

_FLAGS = {"allow_objects": True}  # so a `_target_` (or a model given to the optimizer) can be any object
_CONFIG_PACKAGE = "d2mask._config_file"  # private module-name prefix for executed config files


class LazyCall:
    """Records a call instead of making it: `LazyCall(f)(a=1)` is the config `{_target_: f, a: 1}`.

    Conventionally imported as `L`. Only keyword arguments are recorded, so that every argument is a
    named config key that can be overridden. `instantiate` makes the call.

    Args:
        target: the callable (class or function), or its "module.qualname" string.
    """

    def __init__(self, target: Union[Callable, str]):
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(f"LazyCall needs a callable or a 'module.qualname' string, got {target!r}")
        if dataclasses.is_dataclass(target):
            # omegaconf would turn a dataclass type into a config node of its fields; keep its name
            target = target_name(target)
        self._target = target

    def __call__(self, *args, **kwargs) -> DictConfig:
        if args:
            raise TypeError(
                f"LazyCall({getattr(self._target, '__name__', self._target)}) records keyword arguments "
                f"only, so that each is a named config key; got {len(args)} positional"
            )
        return DictConfig(_plain({TARGET_KEY: self._target, **kwargs}), flags=_FLAGS)


def _plain(value: Any) -> Any:
    """`value` as nested dicts and lists (tuples become lists, as YAML would make them), objects kept."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False, structured_config_mode=SCMode.INSTANTIATE)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _ConfigFileLoader:
    """Executes config files as modules; a relative import inside one executes the file it names.

    The hook is installed as `__import__` in the builtins of the config modules only, so imports
    elsewhere are untouched. Each `LazyConfig.load` uses a fresh loader: a file imported twice in one
    load is executed once (as Python would), but no state is kept between loads.
    """

    def __init__(self):
        self._done: Dict[str, ModuleType] = {}
        self._running: List[str] = []
        # id -> (node, its keys, where it is) of every mapping node of the executed files' configs
        self._known: Dict[int, Tuple[DictConfig, frozenset, str, str, str]] = {}

    def run(self, path: str) -> ModuleType:
        path = os.path.abspath(path)
        if path in self._done:
            return self._done[path]
        if path in self._running:
            cycle = " -> ".join(self._running[self._running.index(path):] + [path])
            raise ImportError(f"Config files import each other in a cycle: {cycle}")
        code = _compile(path)
        if self._running:  # what the importing file changed so far
            self._check_no_key_added(self._running[-1])
        stem = "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])
        module = ModuleType(f"{_CONFIG_PACKAGE}.{stem}")
        module.__file__ = path
        own_builtins = dict(vars(builtins))
        own_builtins["__import__"] = self._importer(path)
        module.__dict__["__builtins__"] = own_builtins
        self._running.append(path)
        try:
            exec(code, module.__dict__)
        finally:
            self._running.pop()
        self._check_no_key_added(path)
        for name, value in list(vars(module).items()):
            # so that a file importing `train = dict(...)` from this one can write `train.max_iter = ...`
            if not name.startswith("_") and isinstance(value, dict):
                setattr(module, name, DictConfig(_plain(value), flags=_FLAGS))
            if not name.startswith("_") and isinstance(value := getattr(module, name), (DictConfig, ListConfig)):
                self._remember(value, name, path)
        self._done[path] = module
        return module

    def _remember(self, node: Any, top: str, file: str, path: str = "") -> None:
        """Records the keys of every mapping in `node` (the config `top` of `file`), to find keys
        another file adds to them."""
        if id(node) in self._known:  # re-exported by an importing file: keep where it is from
            return
        if isinstance(node, DictConfig):
            self._known[id(node)] = (node, frozenset(node.keys()), path or top, top, file)
            children = [(f"{path or top}.{k}", node._get_node(k)) for k in node.keys()]
        elif isinstance(node, ListConfig):
            children = [(f"{path or top}.{i}", node._get_node(i)) for i in range(len(node))]
        else:
            return
        for child_path, child in children:
            self._remember(child, top, file, child_path)

    def _check_no_key_added(self, culprit: str) -> None:
        """Raises when code of `culprit` added a key to a mapping of another config file: a
        misspelt key (`train.max_iterr = 3`) would otherwise be ignored, silently. Arguments that a
        LazyCall's target accepts may be added."""
        for node, keys, path, top, file in list(self._known.values()):
            for key in set(node.keys()) - keys:
                if not _target_accepts(node, key):
                    raise ConfigError(
                        f"{culprit} sets '{path}.{key}', a key that '{path}' (from {file}) does not have."
                        f"{did_you_mean(str(key), [str(k) for k in keys])} A config file may change the "
                        f"keys of the configs it imports, not add keys to them; to add one on purpose, "
                        f"make a new mapping, e.g. `{top} = dict({top}, ...)`"
                    )
            self._known[id(node)] = (node, frozenset(node.keys()), path, top, file)

    def _importer(self, importer_path: str) -> Callable:
        def hook(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0:
                return builtins.__import__(name, globals, locals, fromlist, level)
            base = os.path.dirname(importer_path)
            for _ in range(level - 1):
                base = os.path.dirname(base)
            where = f"'from {'.' * level}{name} import ...' in {importer_path}"
            target = os.path.join(base, *name.split(".")) if name else base
            module = self._module_at(target, where)
            for attr in fromlist or ():  # `from . import optim`: optim is a file beside this one
                sub = os.path.join(target, attr)
                is_config = os.path.isfile(sub + ".py") or os.path.isdir(sub)
                if attr != "*" and not hasattr(module, attr) and is_config:
                    setattr(module, attr, self._module_at(sub, where))
            return module

        return hook

    def _module_at(self, target: str, where: str) -> ModuleType:
        """The config file `target`.py, or a package-like module for the folder `target`."""
        if os.path.isfile(target + ".py"):
            return self.run(target + ".py")
        if os.path.isdir(target):
            package = ModuleType(f"{_CONFIG_PACKAGE}.{os.path.basename(target)}")
            package.__path__ = [target]
            return package
        folder = os.path.dirname(target)
        siblings = [n[:-3] for n in os.listdir(folder) if n.endswith(".py")] if os.path.isdir(folder) else []
        raise ImportError(
            f"{where}: no config file {target}.py.{did_you_mean(os.path.basename(target), siblings)}"
        )


def _compile(path: str):
    """The code of the config file `path`; a file that is not UTF-8 Python is a ConfigError."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return compile(f.read(), path, "exec")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except SyntaxError as e:
        raise ConfigError(f"Syntax error in {path}, line {e.lineno}: {e.msg}: {(e.text or '').strip()!r}") from None


def _target_accepts(node: DictConfig, key: Any) -> bool:
    """Whether `node` is a LazyCall whose target takes `key` as an argument (or any, **kwargs)."""
    if TARGET_KEY not in node or key == TARGET_KEY:
        return False
    target = node._get_node(TARGET_KEY)._value()
    try:
        target = locate(target) if isinstance(target, str) else target
        parameters = inspect.signature(target).parameters.values()
    except (ConfigError, TypeError, ValueError):
        return True  # a target that cannot be inspected here is reported by `instantiate`
    return any(p.kind == p.VAR_KEYWORD or p.name == key for p in parameters)


def _key_paths(node: Any, prefix: str = "") -> List[str]:
    """Every dotted key path in `node` (list items by index), parents before children."""
    if isinstance(node, DictConfig):
        items = [(str(k), node._get_node(k)) for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(i), node._get_node(i)) for i in range(len(node))]
    else:
        return []
    paths = []
    for key, child in items:
        paths.append(prefix + key)
        paths.extend(_key_paths(child, prefix + key + "."))
    return paths


def _child(node: Any, key: str) -> Tuple[Any, Union[str, int]]:
    """(node, key) for a mapping holding `key`, (node, int(key)) for a list; a KeyError when absent."""
    if isinstance(node, DictConfig) and key in node:
        return node, key
    if isinstance(node, ListConfig) and key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
        return node, int(key)
    raise KeyError(key)


def _unknown_key(cfg: DictConfig, key: str, override: str, reached: str, node: Any) -> ConfigError:
    """The error for `key`, naming the nearest valid key and the keys of the deepest node reached."""
    close = nearest(key, _key_paths(cfg), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    if isinstance(node, DictConfig):
        hint += f" Keys under '{reached or '<root>'}': {', '.join(str(k) for k in node.keys())}."
    return ConfigError(f"Unknown config key '{key}' in override '{override}'.{hint} Overrides never add keys")


def _to_yaml_container(value: Any, path: str, dropped: Optional[List[str]]) -> Any:
    """`value` in YAML-able form: each callable `_target_` as its name, a `functools.partial` or a
    class or function given as a value as a node that `instantiate` turns back into it.

    Args:
        dropped: None to raise on a value with no YAML form; a list to leave out the key holding it
            instead, appending "key (why)" to the list.
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if k == TARGET_KEY and callable(v):
                # never dropped alone: the node would build something else; the key holding it goes
                out[k] = _target_yaml(v, where)
                continue
            try:
                out[k] = _to_yaml_container(v, where, dropped)
            except ConfigError as e:
                if dropped is None:
                    raise
                dropped.append(f"{where} ({str(e).split(': ', 1)[-1]})")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_yaml_container(v, f"{path}.{i}", dropped) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, functools.partial):
        # partial(f, *args, **keywords) takes f positionally: `_args_` holds the positional arguments
        # (saved whole or not at all: a partial missing an argument would be another function)
        args = [_to_yaml_container(a, f"{path}.{ARGS_KEY}.{i}", None) for i, a in enumerate((value.func, *value.args))]
        return {TARGET_KEY: target_name(functools.partial), ARGS_KEY: args,
                **_to_yaml_container(dict(value.keywords), path, None)}
    if inspect.isclass(value) or inspect.isroutine(value):
        return {TARGET_KEY: target_name(locate), "name": _target_yaml(value, path)}
    raise ConfigError(
        f"Cannot save {path}: {type(value).__name__} {value!r} has no YAML form; describe it with "
        f"LazyCall(...) in the config instead of building it there"
    )


def _target_yaml(target: Callable, path: str) -> str:
    try:
        return target_name(target)
    except ConfigError as e:
        raise ConfigError(f"Cannot save {path}: {e}") from None


class LazyConfig:
    """Loads, saves and overrides Python configs (and their YAML dumps)."""

    @staticmethod
    def load(filename: str, keys: Union[None, str, Sequence[str]] = None) -> Any:
        """Reads a `.py` config (executing it) or a `.yaml` dump written by `save`.

        A `.py` config is a program: loading it runs its code, so load only files you trust (a
        `.yaml` dump runs nothing until `instantiate`, which calls each `_target_`). In a `.py` file,
        relative imports (`from ..common.optim import SGD`) load other config files relative to this
        one; absolute imports are ordinary imports from `sys.path`, to which nothing is added (d2mask's
        tools add the repository root, so `import projects.X.y` works there). Every top-level name not
        starting with "_" whose value is a mapping or a list becomes a key.

        Args:
            filename: the config file.
            keys: None for the whole config; a key name for that key's value only; a sequence of
                names for a tuple of their values (as Detectron2's `LazyConfig.load`).

        Raises:
            ConfigError: missing file, unknown extension or unknown key. Errors raised by the file's
            own code propagate with their traceback into the file.
        """
        if not os.path.isfile(filename):
            raise ConfigError(f"Config file not found: {filename}")
        extension = os.path.splitext(filename)[1]
        if extension in (".yaml", ".yml"):
            with open(filename, "r", encoding="utf-8") as f:
                text = f.read()
            load_yaml_document(text, filename)  # refuses what omegaconf would expand without bound
            data = OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=False)
            if not isinstance(data, dict):
                raise ConfigError(f"{filename} must hold a mapping, got {type(data).__name__}")
        elif extension == ".py":
            namespace = vars(_ConfigFileLoader().run(filename))
            data = {
                name: value for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (DictConfig, ListConfig, dict, list))
            }
        else:
            raise ConfigError(f"{filename}: a LazyConfig is a .py file or a .yaml dump, not '{extension}'")
        cfg = DictConfig(_plain(data), flags=_FLAGS)
        if keys is None:
            return cfg
        for key in [keys] if isinstance(keys, str) else keys:
            if key not in cfg:
                raise ConfigError(f"{filename} has no key '{key}'.{did_you_mean(key, list(cfg))} Keys: {', '.join(cfg)}")
        return cfg[keys] if isinstance(keys, str) else tuple(cfg[k] for k in keys)

    @staticmethod
    def load_rel(filename: str, keys: Union[None, str, Sequence[str]] = None) -> Any:
        """`load` with `filename` relative to the directory of the calling file, as Detectron2's
        `LazyConfig.load_rel` (a relative import that takes any file name)."""
        caller = inspect.stack()[1].filename
        if caller.startswith("<"):
            raise ConfigError(f"LazyConfig.load_rel('{filename}') needs a calling file; it was called from {caller}")
        return LazyConfig.load(os.path.join(os.path.dirname(caller), filename), keys)

    @staticmethod
    def save(cfg: DictConfig, filename: str, dropped: Optional[List[str]] = None) -> None:
        """Writes `cfg` as YAML that `load` reads back to an equal config: targets as names, a
        `functools.partial` as a `functools.partial` call with `_args_`, a class or function given as
        a value as a `locate` call; `instantiate` builds the same objects from either.

        Args:
            dropped: None to raise on a value with no YAML form; a list to write the rest, leave out
                each key holding such a value (a comment at the top of the file names them) and
                append "key (why)" to the list.

        Raises:
            ConfigError: (without `dropped`) a value with no YAML form (an object built in the
            config, a lambda target), naming its key.
        """
        text = LazyConfig.to_yaml(cfg, dropped)
        with atomic_write(filename) as f:
            f.write(text)

    @staticmethod
    def to_yaml(cfg: DictConfig, dropped: Optional[List[str]] = None) -> str:
        """The YAML text `save` writes.

        Raises:
            ConfigError: (without `dropped`) a value with no YAML form, naming its key.
        """
        data = OmegaConf.to_container(cfg, resolve=False, structured_config_mode=SCMode.INSTANTIATE)
        left_out: List[str] = []
        text = OmegaConf.to_yaml(DictConfig(_to_yaml_container(data, "", None if dropped is None else left_out)))
        if left_out:
            dropped.extend(left_out)
            text = "".join(f"# Not saved (no YAML form): {key}\n" for key in left_out) + text
        return text

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Sets `"a.b.c=VALUE"` items in place (and returns `cfg`); VALUEs are Python literals.

        A value that does not parse as a literal is a string (`train.output_dir=out/run1`). A list
        item is addressed by index (`model.pixel_mean.0=100`). The key must already exist.

        Raises:
            ConfigError: a malformed item, or an unknown key, naming the nearest valid key.
        """
        for item in overrides:
            key, sep, text = str(item).partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"Override '{item}' must read KEY=VALUE, e.g. train.max_iter=500")
            node, reached = cfg, ""
            parts = key.split(".")
            for i, part in enumerate(parts):
                try:
                    parent, index = _child(node, part)
                except KeyError:
                    raise _unknown_key(cfg, key, str(item), reached, node) from None
                if i < len(parts) - 1:
                    node, reached = parent[index], ".".join(parts[: i + 1])
            parent[index] = _plain(_parse_literal(text.strip()))
        return cfg
