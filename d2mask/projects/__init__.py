"""`d2mask.projects.<name>`: the packages of the repository's `projects/` folder, by name.

As with Detectron2's `detectron2.projects`, `import d2mask.projects.point_rend` loads
`projects/PointRend/point_rend/__init__.py`: a project folder holds a package, and the package's
name after `d2mask.projects.` finds it, whatever the folder is called. A project whose modules sit
directly in its folder is reached by the folder's name: `d2mask.projects.DenseText.atss_matcher` is
`projects/DenseText/atss_matcher.py`.

A project module has one module object, whatever the name it is imported by: with the repository
root on the import path (the tools add it), `projects.DenseText.atss_matcher` (as configs' IMPORTS
name it) and `d2mask.projects.DenseText.atss_matcher` are the same module, executed once, so its
registrations happen once.

This works where d2mask is installed in place (`pip install -e .`, or the repository on the path),
as in Detectron2: `projects/` is not part of an installed package.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional

__all__: List[str] = []

PROJECT_ROOT = Path(__file__).resolve().parents[2] / "projects"
# The import names a file of projects/ can have: "d2mask.projects.<...>" and, from the repository root, "projects.<...>".
_PREFIXES = (__name__ + ".", "projects.")


def _search_dirs(name: str) -> List[Path]:
    """The folders in which the package or module `name` may be: `projects/` itself when a project
    folder has that name, and each project folder holding a package of that name."""
    if not PROJECT_ROOT.is_dir():
        return []
    found = [PROJECT_ROOT] if (PROJECT_ROOT / name).is_dir() else []
    found += sorted(p.parent.parent for p in PROJECT_ROOT.glob(f"*/{name}/__init__.py"))
    return found


def _loaded_from(origin: str) -> Optional[ModuleType]:
    """The project module already executed from the file `origin` under one of its names, if any."""
    origin = os.path.realpath(origin)
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if name.startswith(_PREFIXES) and getattr(spec, "origin", None) and os.path.realpath(spec.origin) == origin:
            return module
    return None


class _SameModule(importlib.abc.Loader):
    """Gives a second import name the module already executed under its first."""

    def __init__(self, module: ModuleType):
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        pass  # executed once, under its first name


class _ProjectsFinder(importlib.abc.MetaPathFinder):
    """Finds `d2mask.projects.<name>` (one level; deeper modules are found through its `__path__`),
    and makes a project module imported by a second name the module of its first."""

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        if not fullname.startswith(_PREFIXES):
            return None
        parent, _, name = fullname.rpartition(".")
        if parent == __name__:
            dirs = _search_dirs(name)
            if len(dirs) > 1:
                places = ", ".join(str(d / name) for d in dirs)
                raise ImportError(f"{fullname} is ambiguous: projects/ has {len(dirs)} packages of that name ({places})")
            if not dirs:
                return None
            path = [str(dirs[0])]
        elif path is None:  # the top-level "projects" itself: the path finder's
            return None
        # PathFinder names the spec `fullname` and makes a folder without __init__.py a namespace package.
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.has_location:
            return spec
        module = _loaded_from(spec.origin)
        if module is None:
            return spec
        return importlib.util.spec_from_loader(fullname, _SameModule(module), origin=spec.origin)


# First: a `projects.<...>` name must be seen before the path finder executes its file a second time.
sys.meta_path.insert(0, _ProjectsFinder())
