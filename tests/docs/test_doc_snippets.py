"""Runs the Python examples of docs/*.md that are marked to run.

A fenced ```python block whose first line is `# doc-test` is run; other blocks are illustrations.
The marked blocks of one file run in order in one fresh Python process, each in a namespace of its
own (so every block carries its own imports, as a reader copying it needs), from a temporary
directory where `configs/` and `projects/` lead to the repository's and `$D2MASK_DATASETS` points
to a temporary root: the docs' relative paths work and nothing is written into the repository.
"""
import os
import re
import subprocess
import sys
from typing import List

import pytest

from tests.common import REPO

DOCS = os.path.join(REPO, "docs")
MARKER = "# doc-test"
# Docs whose examples must keep running: a marker deleted by mistake fails here rather than silently
# leaving the example untested.
REQUIRED = {"extend.md", "datasets.md"}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# Runs each block of the file given as argv[1] (blocks separated by NUL) in a new namespace, naming
# the block that failed.
_RUNNER = """
import sys, traceback
blocks = open(sys.argv[1], encoding="utf-8").read().split("\\0")
for i, code in enumerate(blocks, 1):
    try:
        exec(compile(code, f"<{sys.argv[2]} doc-test block {i}>", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"doc-test block {i} of {sys.argv[2]} failed")
"""


def marked_blocks(text: str) -> List[str]:
    """The code of the ```python blocks of a markdown text whose first line is the marker."""
    return [code for code in _FENCE.findall(text) if code.lstrip().startswith(MARKER)]


def _docs_with_blocks() -> List[str]:
    names = []
    for name in sorted(os.listdir(DOCS)):
        if name.endswith(".md"):
            with open(os.path.join(DOCS, name), encoding="utf-8") as f:
                if marked_blocks(f.read()):
                    names.append(name)
    return names


def test_marker_finds_only_marked_python_blocks():
    text = (
        "intro\n```python\n# doc-test\nx = 1\n```\n"
        "```python\nnot_run()\n```\n"
        "```bash\n# doc-test\nls\n```\n"
        "```python\n# doc-test\ny = 2\n```\n"
    )
    assert marked_blocks(text) == ["# doc-test\nx = 1\n", "# doc-test\ny = 2\n"]


def test_required_docs_have_examples_to_run():
    assert REQUIRED <= set(_docs_with_blocks())


@pytest.mark.parametrize("doc", _docs_with_blocks())
def test_doc_examples_run(doc, tmp_path):
    with open(os.path.join(DOCS, doc), encoding="utf-8") as f:
        blocks = marked_blocks(f.read())
    script = tmp_path / "blocks.txt"
    script.write_text("\0".join(blocks), encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in ("configs", "projects"):
        os.symlink(os.path.join(REPO, name), workdir / name)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        D2MASK_DATASETS=str(tmp_path / "datasets"),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(script), doc],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"{doc}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
