"""`python -m d2mask.config CONFIG [--no-imports] [KEY VALUE ...]`: prints the merged YAML config.

With `--no-imports`, a config whose `_BASE_` chain lists IMPORTS is refused (naming the modules)
instead of importing them: reading a YAML config then runs no code at all, so a config from a
stranger can be inspected safely. Mistakes end with one line on stderr and exit status 2.
"""
import argparse
import sys

from d2mask.config import ConfigError, get_cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d2mask.config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_file", help="a YAML config (Detectron2's or d2mask's)")
    parser.add_argument("--no-imports", action="store_true", help="refuse a config that lists IMPORTS")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file, allow_imports=not args.no_imports)
        cfg.merge_from_list(args.opts)
    except (ConfigError, ImportError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(cfg.dump(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
