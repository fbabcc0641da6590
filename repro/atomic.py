"""Atomic file writes: results and checkpoints are never left half-written.

Each write goes to a temporary file in the target's folder, is flushed to
disk, then renamed over the target (``os.replace`` is atomic on POSIX). A
crash, a full disk or an exception at any point leaves the previous file
untouched; the temporary file is removed when Python still runs.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from repro.errors import ConfigError


@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """``with atomic_open(path, "wb") as f: ...`` -> ``path`` appears only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual permissions of a new file
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj, path) -> Path:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)
