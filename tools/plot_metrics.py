#!/usr/bin/env python
"""Plots a run's metrics.json as PNG files: losses.png, lr.png, ap.png.

    python tools/plot_metrics.py OUTPUT_DIR [--out DIR]

Training writes the same plots at its end; this tool redraws them at any time, e.g. during a run.
"""
import argparse
import os
import sys

from d2mask.utils.plotting import plot_metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a training OUTPUT_DIR holding metrics.json")
    parser.add_argument("--out", default=None, help="where to write the PNGs (default: OUTPUT_DIR)")
    args = parser.parse_args(argv)
    metrics = os.path.join(args.output_dir, "metrics.json")
    if not os.path.isfile(metrics):
        print(f"No metrics.json in {args.output_dir}", file=sys.stderr)
        return 1
    for path in plot_metrics(metrics, args.out or args.output_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
