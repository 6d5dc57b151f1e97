"""Configs: the YAML CfgNode (get_cfg) and the `@configurable` bridge to explicit constructors."""
from .config import CfgNode, ConfigError, get_cfg, load_config, load_yaml_with_base
from .configurable import ArgumentError, config_keys, configurable
from .imports import import_modules
from .key_docs import KEY_DOCS

__all__ = [
    "CfgNode",
    "ConfigError",
    "get_cfg",
    "load_config",
    "load_yaml_with_base",
    "configurable",
    "ArgumentError",
    "config_keys",
    "import_modules",
    "KEY_DOCS",
]
from .instantiate import instantiate
from .lazy import LazyCall, LazyConfig

__all__ += ["LazyCall", "LazyConfig", "instantiate"]
