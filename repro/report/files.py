"""Writing results: atomic JSON/CSV files, provenance, console tables."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from repro.atomic import atomic_write_text  # noqa: F401  (re-exported: results are written with it)
from repro.paths import repo_root


def git_commit(short: bool = False) -> str | None:
    """The repository's current commit (with '-dirty' if it has changes), or None."""
    root = repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "--short" if short else "--verify", "HEAD"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def write_json(path, obj: dict) -> Path:
    """Atomic JSON write; adds ``git_commit`` unless present."""
    obj = {"git_commit": git_commit(), **obj}
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(x):
    try:
        return x.item()  # numpy / torch scalars
    except AttributeError:
        return str(x)


def print_recall_table(name: str, config: dict, result: dict) -> None:
    """One line per N: ``recall@N  pct``, with the model and split in a header."""
    pooling = config.get("pooling")
    print(f"\n{name}: {config.get('backbone')} + {pooling}, {result['dim']}-D, "
          f"{result['num_queries']} queries ({result['num_without_positive']} without a positive), "
          f"{result['seconds']:.1f} s")
    for n, pct in result["recall"].items():
        print(f"  recall@{n:<3d} {pct:6.2f} %")
