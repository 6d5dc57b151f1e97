"""docs/configs.md's key reference is generated from get_cfg(); a stale table fails here."""
import importlib.util
import os

from d2mask.config import get_cfg
from d2mask.config.key_docs import KEY_DOCS
from tests.common import REPO as ROOT


def _load_tool():
    spec = importlib.util.spec_from_file_location("gen_config_docs", os.path.join(ROOT, "tools", "gen_config_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_default_key_has_a_description():
    tool = _load_tool()
    keys = [key for key, _ in tool._leaves(get_cfg())]
    assert keys, "no keys found"
    undocumented = [k for k in keys if not KEY_DOCS.get(k)]
    assert undocumented == []


def test_docs_configs_md_is_current():
    tool = _load_tool()
    with open(tool.DOC_PATH, encoding="utf-8") as f:
        current = f.read()
    assert tool.render(current) == current, "docs/configs.md is stale: run python tools/gen_config_docs.py"
