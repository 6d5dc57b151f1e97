"""Registries map a name in a config to the class or function that builds it.

Built on fvcore's Registry; d2mask adds two things users of a research framework need:
an unknown name lists every registered name with the nearest match, and registering one
name twice names both places instead of silently keeping one.
"""
import difflib
import inspect
from typing import Any, Iterable, Optional

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = ["Registry", "RegistryError", "nearest", "did_you_mean"]


class RegistryError(KeyError):
    """An unknown or duplicated registry name. A KeyError, printed without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def nearest(name: str, candidates: Iterable[str], n: int = 3) -> list:
    """The up-to-n candidates closest to `name` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[c] for c in close]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean X?' when a close candidate exists, else ''."""
    close = nearest(name, candidates, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", repr(obj))
    try:
        line = inspect.getsourcelines(obj)[1]
        return f"{module}.{qualname} ({inspect.getsourcefile(obj)}:{line})"
    except (OSError, TypeError):
        return f"{module}.{qualname}"


class Registry(_FvcoreRegistry):
    """A name -> object map, filled with `@REGISTRY.register()` or `REGISTRY.register(obj)`.

    Example:
        BACKBONE_REGISTRY = Registry("BACKBONE")

        @BACKBONE_REGISTRY.register()
        def build_my_backbone(cfg, input_shape): ...

        BACKBONE_REGISTRY.get("build_my_backbone")
    """

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise RegistryError(
                f"'{name}' is registered twice in the {self._name} registry: first by "
                f"{_origin(self._obj_map[name])}, again by {_origin(obj)}. Pick another name."
            )
        self._obj_map[name] = obj

    def get(self, name: str) -> Any:
        obj = self._obj_map.get(name)
        if obj is None:
            names = sorted(self._obj_map)
            raise RegistryError(
                f"No object named '{name}' in the {self._name} registry.{did_you_mean(name, names)} "
                f"Registered names: {', '.join(names) or '(none)'}. A module registered outside "
                f"d2mask must be listed in the config's IMPORTS."
            )
        return obj

    def names(self) -> list:
        """Every registered name, sorted."""
        return sorted(self._obj_map)

    def describe(self, name: str) -> Optional[str]:
        """The first paragraph of the registered object's docstring, on one line, if any."""
        doc = inspect.getdoc(self.get(name))
        return " ".join(doc.split("\n\n")[0].split()) if doc else None
