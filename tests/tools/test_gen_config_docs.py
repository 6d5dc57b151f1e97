"""docs/configs.md's key reference is generated from get_cfg(); a stale table fails here."""
from d2mask.config import get_cfg
from d2mask.config.key_docs import KEY_DOCS
from tests.common import load_script


def test_every_default_key_has_a_description():
    tool = load_script("tools/gen_config_docs.py")
    keys = [key for key, _ in tool._leaves(get_cfg())]
    assert keys, "no keys found"
    undocumented = [k for k in keys if not KEY_DOCS.get(k)]
    assert undocumented == []


def test_docs_configs_md_is_current():
    tool = load_script("tools/gen_config_docs.py")
    with open(tool.DOC_PATH, encoding="utf-8") as f:
        current = f.read()
    assert tool.render(current) == current, "docs/configs.md is stale: run python tools/gen_config_docs.py"
