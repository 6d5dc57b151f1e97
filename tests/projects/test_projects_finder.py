"""`d2mask.projects.<name>` finds the packages under the repository's projects/ folder."""
import importlib
import sys

import pytest

import d2mask.projects


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
