"""Writing results: atomic JSON/CSV files, provenance, console tables."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from repro.errors import ConfigError


def git_commit(short: bool = False) -> str | None:
    """The repository's current commit (with '-dirty' if it has changes), or None."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short" if short else "--verify", "HEAD"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and
    a rename, so a crash never leaves a partial file in place of a good one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
