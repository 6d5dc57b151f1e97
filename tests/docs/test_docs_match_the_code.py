"""What the docs and tools' help show matches the files: configs they cite exist, the abridged
Python config of docs/configs.md shows the file's values, lazyconfig_train_net.py's help shows
Python overrides."""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from d2mask.config import LazyConfig
from tests.common import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "tools", "*.py")) + glob.glob(os.path.join(REPO, "demo", "*.py")))


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_configs_cited_by_scripts_exist(script):
    with open(script, encoding="utf-8") as f:
        text = f.read()
    for path in re.findall(r"\bconfigs/[\w./-]+\.(?:yaml|py)\b", text):
        assert os.path.isfile(os.path.join(REPO, path)), f"{os.path.basename(script)} cites {path}"


def test_abridged_python_config_shows_the_files_values():
    with open(os.path.join(REPO, "docs", "configs.md"), encoding="utf-8") as f:
        doc = f.read()
    header, block = re.search(r"# (configs/\S+\.py) \(abridged\)\n(.*?)```", doc, re.S).groups()
    cfg = LazyConfig.load(os.path.join(REPO, header))
    assignments = [line for line in block.splitlines() if re.match(r"^[\w.]+ = ", line)]
    assert assignments
    for line in assignments:
        key, value = line.split(" = ", 1)
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == ast.literal_eval(value.split("#")[0].strip()), line


def test_lazyconfig_train_net_help_shows_python_overrides():
    help_text = subprocess.run([sys.executable, "tools/lazyconfig_train_net.py", "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    assert "train.max_iter=" in help_text and "train.init_checkpoint=" in help_text
    examples = help_text.split("Examples:")[1]
    assert "SOLVER." not in examples and "MODEL." not in examples
