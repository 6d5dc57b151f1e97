"""Each default config key is defined together with a one-line description.

`define(cfg, "MODEL.RPN.NMS_THRESH", 0.7, "...")` sets the value and records the text in KEY_DOCS,
from which `tools/gen_config_docs.py` writes the reference table in docs/configs.md.
"""
from typing import Any, Dict, Optional

from fvcore.common.config import CfgNode

__all__ = ["KEY_DOCS", "DOC_DEFAULTS", "define"]

KEY_DOCS: Dict[str, str] = {}
# How the reference table shows a default that depends on the machine (e.g. MODEL.DEVICE).
DOC_DEFAULTS: Dict[str, str] = {}


def define(cfg: CfgNode, key: str, value: Any, doc: str, shown_default: Optional[str] = None) -> None:
    """Sets `cfg.<key>` (dotted path; intermediate nodes are created) and records its description."""
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
        if name not in node:
            node[name] = CfgNode()
        node = node[name]
    node[leaf] = value
    KEY_DOCS[key] = doc
    if shown_default is not None:
        DOC_DEFAULTS[key] = shown_default
