"""Atomic file writes: results and checkpoints are never left half-written.

Each write goes to a temporary file in the target's folder
(``.NAME.XXXXXXXX.tmp``), is flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX). A crash, a ``kill -9``, a full disk or an
exception at any point leaves the previous file untouched. The temporary file
is removed when Python still runs; after a ``kill -9`` it stays behind, hidden,
and can be deleted.

A full disk (or quota, or a read-only file system) while writing raises
:class:`repro.errors.StorageError` naming the file, the free space and that
the previous version is kept. ``torch.save`` reports a full disk as a
``RuntimeError`` ("unexpected pos ...") whose context is the ``OSError``;
both are recognised.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from repro.errors import ConfigError, StorageError
from repro.paths import git_commit

# errno values that mean "this file system cannot take the write"
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free in {folder}"
    except OSError:
        return f"free space in {folder} unknown"


def _storage_cause(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, or in its context chain) when it is
    a storage failure; torch's zip writer wraps it in a RuntimeError."""
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _storage_error(path: Path, existed: bool, cause: OSError) -> StorageError:
    kept = (f"The previous {path.name} is unchanged." if existed else f"No {path.name} was written.")
    what = os.strerror(cause.errno) if cause.errno else str(cause)
    err = StorageError(f"cannot write {path}: {what} ({_free(path.parent)}). {kept} "
                       "Free some space (or choose another output folder) and run again"
                       + (" with resume=True (--resume) to continue from the last checkpoint."
                          if path.suffix == ".pt" else "."))
    err.errno = cause.errno
    return err


def check_writable(folder, what: str = "files") -> Path:
    """Create ``folder`` if needed and make sure a file can be written in it
    (by writing and deleting a temporary file: ``os.access`` says yes to root
    on a read-only mount). ConfigError naming ``what`` and the folder otherwise.
    Cheap; call it before long work whose results go there."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write_check."):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {what} to {folder}: {exc.strerror or exc}. "
                          "Choose a writable folder, or fix its permissions.") from None
    return folder


@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """``with atomic_open(path, "wb") as f: ...`` -> ``path`` appears only on success."""
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _storage_error(path, existed, exc) from None
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}. "
                          "Choose a writable folder, or fix its permissions.") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual permissions of a new file
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
        cause = _storage_cause(exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if cause is not None and not isinstance(exc, StorageError):
            raise _storage_error(path, existed, cause) from exc
        raise


def atomic_write_text(path, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_torch_save(obj, path) -> Path:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def write_json(path, obj: dict) -> Path:
    """Atomic JSON write of a result record; adds ``git_commit`` unless present."""
    obj = {"git_commit": git_commit(), **obj}
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(x):
    try:
        return x.item()  # numpy / torch scalars
    except AttributeError:
        return str(x)
