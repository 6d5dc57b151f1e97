"""`python -m d2mask.registry [--config-file F]`: every registry and the names registered in it.

With a config file, its IMPORTS are imported first, so a project's registered modules are listed too.
"""
import argparse
import sys
from typing import Dict

from d2mask.config import get_cfg
from d2mask.utils.registry import Registry


def all_registries() -> Dict[str, Registry]:
    """Every registry of d2mask's model, by its name, after the built-in modules registered."""
    import d2mask.modeling as modeling  # importing it registers the built-in modules

    found = {}
    for value in vars(modeling).values():
        if isinstance(value, Registry):
            found[value._name] = value
    return dict(sorted(found.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d2mask.registry", description=__doc__)
    parser.add_argument("--config-file", default="", help="a config whose IMPORTS are loaded first")
    args = parser.parse_args(argv)
    if args.config_file:
        get_cfg().merge_from_file(args.config_file)
    for name, registry in all_registries().items():
        print(f"{name}:")
        for entry in registry.names():
            doc = registry.describe(entry)
            print(f"  {entry}" + (f"  - {doc}" if doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
