#!/usr/bin/env python
"""Checks that the tests catch small, realistic bugs: applies each mutation of a list (tools/mutations.yaml)
to a scratch copy of the repository, one at a time, runs the test files that mutation names, and
reports whether a test failed (the mutation is "killed") or none did (it "survived").

    python tools/mutation_check.py                   # every mutation
    python tools/mutation_check.py rpn-normaliser    # only the named ones

A mutation names a file, an exact snippet of it (which must occur exactly once) and its replacement.
A snippet that no longer occurs, or occurs twice, is reported as "stale": the list must follow the
code, never silently pass. The run first checks that the named test files pass without mutation.
Exit status: 0 when every mutation is killed, 1 when one survives or is stale.

The check is CPU-heavy (one pytest run per mutation); each run stops at its first failure.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIST = os.path.join(REPO, "tools", "mutations.yaml")
_FIELDS = {"id", "file", "find", "replace", "tests", "why"}


def load_mutations(path: str) -> List[Dict]:
    """The mutations of a YAML list, each checked to have exactly the fields `_FIELDS`."""
    with open(path, encoding="utf-8") as f:
        mutations = yaml.safe_load(f)
    if not isinstance(mutations, list):
        raise SystemExit(f"{path}: expected a list of mutations")
    seen = set()
    for i, m in enumerate(mutations):
        if not isinstance(m, dict) or set(m) != _FIELDS:
            raise SystemExit(f"{path}: mutation {i + 1} must have exactly the fields {sorted(_FIELDS)}, got {m!r}")
        if m["id"] in seen:
            raise SystemExit(f"{path}: mutation id {m['id']!r} appears twice")
        seen.add(m["id"])
    return mutations


def scratch_copy(repo: str, dest: str) -> None:
    """Copies the files git knows of (tracked, and untracked but not ignored) from `repo` to `dest`."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, names):
        src = os.path.join(repo, name)
        if os.path.isfile(src):  # a file deleted but not yet staged is still listed
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, name))


def run_tests(root: str, tests: List[str], timeout: float) -> subprocess.CompletedProcess:
    """pytest on `tests` inside `root`, with `root`'s d2mask first on the path, stopping at the first failure."""
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, -1, out + f"\n(timed out after {timeout:.0f}s)", "")


def _first_failure(output: str) -> str:
    """The first failing test of pytest's summary (a log line may also start with ERROR), else the last line."""
    summary = output.rsplit("short test summary info", 1)[-1]
    found = re.search(r"^(?:FAILED|ERROR) (\S+\.py\S*)", summary, re.M)
    return found.group(1) if found else output.strip().splitlines()[-1] if output.strip() else ""


def check_one(root: str, mutation: Dict, timeout: float) -> Dict:
    """Applies one mutation in `root`, runs its tests, restores the file. Returns its outcome:
    status "killed", "survived", "stale" (snippet not found exactly once) or "broken" (the tests
    could not run: a collection or syntax error the mutation caused)."""
    path = os.path.join(root, mutation["file"])
    try:
        with open(path, encoding="utf-8") as f:
            original = f.read()
    except FileNotFoundError:
        return {"status": "stale", "detail": f"{mutation['file']} does not exist"}
    count = original.count(mutation["find"])
    if count != 1:
        return {"status": "stale", "detail": f"snippet found {count} times in {mutation['file']}"}
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(mutation["find"], mutation["replace"]))
    try:
        start = time.monotonic()
        proc = run_tests(root, mutation["tests"], timeout)
        seconds = time.monotonic() - start
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        status, detail = "survived", "every test passed"
    elif proc.returncode in (1, -1):  # a failing test, or a hang
        status, detail = "killed", _first_failure(output)
    else:
        status, detail = "broken", _first_failure(output)
    return {"status": status, "detail": detail, "seconds": seconds}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutation ids to check (default: all)")
    parser.add_argument("--list", default=DEFAULT_LIST, help="the YAML list of mutations")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one test run may take")
    args = parser.parse_args(argv)

    mutations = load_mutations(args.list)
    unknown = set(args.ids) - {m["id"] for m in mutations}
    if unknown:
        raise SystemExit(f"unknown mutation ids: {sorted(unknown)}")
    if args.ids:
        mutations = [m for m in mutations if m["id"] in args.ids]

    with tempfile.TemporaryDirectory(prefix="d2mask-mutation-") as root:
        scratch_copy(REPO, root)
        test_files = sorted({t for m in mutations for t in m["tests"]})
        print(f"Baseline: {len(test_files)} test files without mutation ...", flush=True)
        baseline = run_tests(root, test_files, args.timeout)
        if baseline.returncode != 0:
            print((baseline.stdout + baseline.stderr)[-3000:])
            print("The tests fail without any mutation; fix them first.")
            return 1
        outcomes = {}
        for i, m in enumerate(mutations, 1):
            outcome = check_one(root, m, args.timeout)
            outcomes[m["id"]] = outcome
            took = f" ({outcome['seconds']:.0f}s)" if "seconds" in outcome else ""
            print(f"[{i}/{len(mutations)}] {m['id']}: {outcome['status']}{took} - {outcome['detail']}", flush=True)

    bad = {k: o for k, o in outcomes.items() if o["status"] != "killed"}
    print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} mutations killed.")
    for k, o in bad.items():
        print(f"  {o['status'].upper()}: {k} - {o['detail']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
