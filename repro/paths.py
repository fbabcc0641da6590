"""Where the repository is, and which commit it is at: the one place that
knows (result files, caches and notebooks are named relative to it; records
carry the commit)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["repo_root", "rel", "git_commit"]


def repo_root() -> Path:
    """The checkout holding this package (its pyproject.toml), else the cwd."""
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "pyproject.toml").is_file() and (p / "repro").is_dir():
            return p
    return Path.cwd()


def rel(path) -> str:
    """A path as result files and printouts store it: relative to the
    repository root when inside it (so records and executed notebooks carry
    no machine-specific prefix and stay valid in another clone), ``../x``
    for a sibling of the checkout (``../shared``), else absolute."""
    p = Path(path).resolve()
    root = repo_root()
    try:
        return str(p.relative_to(root))
    except ValueError:
        return os.path.relpath(p, root) if p.parts[:2] == root.parts[:2] else str(p)


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
