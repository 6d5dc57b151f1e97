"""`d2mask.projects.<name>` finds the packages under the repository's projects/ folder."""
import importlib
import subprocess
import sys

import pytest

import d2mask.projects
from tests.common import REPO


def _write(root, files):
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


@pytest.fixture
def projects_root(tmp_path, monkeypatch):
    """A projects/ folder of its own; the modules imported from it are forgotten afterwards."""
    monkeypatch.setattr(d2mask.projects, "PROJECT_ROOT", tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_package_inside_a_project_folder_as_in_detectron2(projects_root):
    _write(projects_root, {
        "PointThing/point_thing/__init__.py": "from .features import sample\n",
        "PointThing/point_thing/features.py": "def sample():\n    return 'sampled'\n",
        "PointThing/train_net.py": "raise AssertionError('not a module of the package')\n",
    })
    package = importlib.import_module("d2mask.projects.point_thing")
    assert package.sample() == "sampled"
    assert package.__file__ == str(projects_root / "PointThing/point_thing/__init__.py")
    from d2mask.projects.point_thing.features import sample  # submodules through the package

    assert sample is package.sample


def test_modules_directly_in_a_project_folder_by_the_folders_name(projects_root):
    _write(projects_root, {"FlatThing/flat_module.py": "VALUE = 3\n"})
    assert importlib.import_module("d2mask.projects.FlatThing.flat_module").VALUE == 3


def test_unknown_and_ambiguous_names(projects_root):
    _write(projects_root, {"A/twice/__init__.py": "", "B/twice/__init__.py": ""})
    with pytest.raises(ModuleNotFoundError, match="d2mask.projects.nothing_here"):
        importlib.import_module("d2mask.projects.nothing_here")
    with pytest.raises(ImportError, match="d2mask.projects.twice is ambiguous: projects/ has 2 packages"):
        importlib.import_module("d2mask.projects.twice")


def test_the_repository_projects_folder_is_the_default():
    assert d2mask.projects.PROJECT_ROOT.name == "projects"
    assert (d2mask.projects.PROJECT_ROOT / "README.md").is_file()


def test_a_module_imported_by_both_names_is_one_module_executed_once(projects_root, monkeypatch):
    """Configs' IMPORTS name `projects.X...` (the tools put the repository root on the path), code
    may name `d2mask.projects.X...`: both are one module, so its registrations run once."""
    _write(projects_root, {
        "PairThing/pair_thing/__init__.py": "from .parts import COUNT\n",
        "PairThing/pair_thing/parts.py": "import builtins\nbuiltins.pair_thing_runs = getattr(builtins, 'pair_thing_runs', 0) + 1\nCOUNT = 1\n",
        "FlatPair/flat.py": "import builtins\nbuiltins.flat_pair_runs = getattr(builtins, 'flat_pair_runs', 0) + 1\n",
    })
    (projects_root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(projects_root.parent))
    name = projects_root.name  # stands for the repository's "projects" folder
    monkeypatch.setattr(d2mask.projects, "_PREFIXES", ("d2mask.projects.", f"{name}."))
    import builtins

    first = importlib.import_module(f"{name}.PairThing.pair_thing.parts")
    assert importlib.import_module("d2mask.projects.pair_thing.parts") is first
    assert importlib.import_module("d2mask.projects.PairThing.pair_thing.parts") is first
    assert importlib.import_module("d2mask.projects.pair_thing") is importlib.import_module(f"{name}.PairThing.pair_thing")
    flat = importlib.import_module("d2mask.projects.FlatPair.flat")  # the other order
    assert importlib.import_module(f"{name}.FlatPair.flat") is flat
    assert (builtins.pair_thing_runs, builtins.flat_pair_runs) == (1, 1)
    del builtins.pair_thing_runs, builtins.flat_pair_runs


def test_the_repository_project_registers_once_by_either_name():
    """The registry refused the second execution ("registered twice") before the names were one module."""
    code = (
        "import sys; sys.path.insert(0, '.'); import d2mask.projects.port_example as a; "
        "import projects.PortExample.port_example as b; import projects.DenseText.atss_matcher as c; "
        "import d2mask.projects.DenseText.atss_matcher as d; assert a is b and c is d"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
