"""`d2mask.projects.<name>`: the packages of the repository's `projects/` folder, by name.

As with Detectron2's `detectron2.projects`, `import d2mask.projects.point_rend` loads
`projects/PointRend/point_rend/__init__.py`: a project folder holds a package, and the package's
name after `d2mask.projects.` finds it, whatever the folder is called. A project whose modules sit
directly in its folder is reached by the folder's name: `d2mask.projects.DenseText.atss_matcher` is
`projects/DenseText/atss_matcher.py`.

This works where d2mask is installed in place (`pip install -e .`, or the repository on the path),
as in Detectron2: `projects/` is not part of an installed package.
"""
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from typing import List, Optional

__all__: List[str] = []

PROJECT_ROOT = Path(__file__).resolve().parents[2] / "projects"


def _search_dirs(name: str) -> List[Path]:
    """The folders in which the package or module `name` may be: `projects/` itself when a project
    folder has that name, and each project folder holding a package of that name."""
    if not PROJECT_ROOT.is_dir():
        return []
    found = [PROJECT_ROOT] if (PROJECT_ROOT / name).is_dir() else []
    found += sorted(p.parent.parent for p in PROJECT_ROOT.glob(f"*/{name}/__init__.py"))
    return found


class _ProjectsFinder(importlib.abc.MetaPathFinder):
    """Finds `d2mask.projects.<name>` (one level; deeper modules are found through its `__path__`)."""

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        parent, _, name = fullname.rpartition(".")
        if parent != __name__:
            return None
        dirs = _search_dirs(name)
        if len(dirs) > 1:
            places = ", ".join(str(d / name) for d in dirs)
            raise ImportError(f"{fullname} is ambiguous: projects/ has {len(dirs)} packages of that name ({places})")
        if not dirs:
            return None
        # PathFinder names the spec `fullname` and makes a folder without __init__.py a namespace package.
        return importlib.machinery.PathFinder.find_spec(fullname, [str(dirs[0])])


sys.meta_path.append(_ProjectsFinder())
