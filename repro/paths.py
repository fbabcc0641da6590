"""Where the repository is: the one place that knows (result files, caches and
notebooks are named relative to it)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "rel"]


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
