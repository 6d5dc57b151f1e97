"""tools/mutation_check.py: the repository's mutation list is current, and a mutation is reported
killed, survived or stale as the tests decide."""
import os

import pytest

from tests.common import REPO, load_script

mutation_check = load_script("tools/mutation_check.py")


def test_every_mutation_of_the_list_still_applies():
    mutations = mutation_check.load_mutations(mutation_check.DEFAULT_LIST)
    assert len(mutations) >= 30
    for m in mutations:
        with open(os.path.join(REPO, m["file"]), encoding="utf-8") as f:
            count = f.read().count(m["find"])
        # a snippet the code no longer has: update tools/mutations.yaml to the code's new form
        assert count == 1, f"mutation {m['id']}: its snippet occurs {count} times in {m['file']}"
        assert m["find"] != m["replace"], m["id"]
        assert all(os.path.isfile(os.path.join(REPO, t)) for t in m["tests"]), m["id"]


@pytest.fixture
def project(tmp_path):
    """A tiny project: a function, and a test that checks one of its two results."""
    (tmp_path / "lib.py").write_text("def double(x):\n    return 2 * x\n\n\ndef unused():\n    return 1\n")
    (tmp_path / "test_lib.py").write_text("from lib import double\n\n\ndef test_double():\n    assert double(3) == 6\n")
    return tmp_path


@pytest.mark.parametrize("find, replace, status", [
    ("return 2 * x", "return 2 + x", "killed"),  # double(3) == 5: the test fails
    ("return 1", "return 2", "survived"),  # no test looks at it
    ("return 3 * x", "return x", "stale"),  # the code has no such snippet
    ("return", "return 0", "stale"),  # twice in the file: which one is meant is unclear
    ("def double(x):", "def double(x)", "broken"),  # a syntax error: the tests cannot run
])
def test_outcomes(project, find, replace, status):
    mutation = {"id": "m", "file": "lib.py", "find": find, "replace": replace, "tests": ["test_lib.py"], "why": ""}
    before = (project / "lib.py").read_text()
    assert mutation_check.check_one(str(project), mutation, timeout=120)["status"] == status
    assert (project / "lib.py").read_text() == before  # restored


def test_a_list_with_a_malformed_entry_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- id: a\n  file: x.py\n  find: y\n")
    with pytest.raises(SystemExit, match="mutation 1 must have exactly the fields"):
        mutation_check.load_mutations(str(path))
