"""Imports the modules a config lists in IMPORTS, with errors that say what could be meant."""
import importlib
import pkgutil
import reprlib
from types import ModuleType
from typing import List, Sequence

from ..utils.registry import did_you_mean

__all__ = ["import_modules"]

_MAX_NAME_CHARS = 200  # longer is no module name; an error message must not print it whole


def _siblings(name: str) -> List[str]:
    """Importable module names beside `name` under its longest importable parent package."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:cut])
        try:
            package = importlib.import_module(parent)
        except Exception:
            continue
        paths = getattr(package, "__path__", None)
        if paths is None:
            return []
        return [f"{parent}.{m.name}" for m in pkgutil.iter_modules(paths)]
    return []


def import_modules(names: Sequence[str], source: str = "the config") -> List[ModuleType]:
    """Imports each module in `names` (e.g. "projects.DenseText.atss_matcher") and returns them.

    Importing a module runs its code: IMPORTS are as trusted as the code they name. Modules are
    found on `sys.path` only; the current directory is not added to it (a config or a file that
    happens to sit in the directory a command runs from would otherwise be importable by any
    config). d2mask's tools add the repository root, where `projects/` is; for a project elsewhere,
    install it or put its directory on PYTHONPATH. A module that fails to import raises ImportError
    naming the IMPORTS entry, where it was listed, and the module's own error.
    """
    modules = []
    for name in names:
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME_CHARS:
            raise ImportError(f"IMPORTS in {source} must hold module names, got {reprlib.repr(name)}")
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name) and not e.name.startswith(name):
                raise ImportError(f"IMPORTS entry '{name}' (in {source}) failed to import: {e}") from e
            siblings = _siblings(name)
            listing = f" Modules there: {', '.join(sorted(siblings))}." if siblings else ""
            raise ImportError(
                f"IMPORTS entry '{name}' (in {source}) was not found.{did_you_mean(name, siblings)}{listing}"
            ) from e
        except Exception as e:
            raise ImportError(
                f"IMPORTS entry '{name}' (in {source}) failed to import: {type(e).__name__}: {e}"
            ) from e
    return modules
