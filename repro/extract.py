"""Descriptors of a folder of images (``python -m repro extract``).

Writes ``OUT.npy`` (float32 ``[N, D]``, one row per image), and beside it
``OUT.names.txt`` (the images, one per line, in row order: paths relative
to the folder, or the dataset's own file names) and ``OUT.json`` (the model
that made them, the image size, what any centroids or whitening were
fitted on). This is how a user brings the authors' networks or a repro
checkpoint to their own images.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from repro.atomic import atomic_open, atomic_write_text, check_writable
from repro.data.vprbench import IMAGE_EXTENSIONS
from repro.errors import ConfigError, DatasetError

__all__ = ["folder_images", "sidecar_paths", "check_output", "write_descriptors"]


def folder_images(folder) -> list[Path]:
    """Every image file under ``folder`` (recursively, hidden files skipped), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / n for n in filenames
                  if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    if not found:
        raise DatasetError(f"{folder}: no images found (extensions {sorted(IMAGE_EXTENSIONS)})")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def sidecar_paths(out) -> tuple[Path, Path]:
    """(names file, metadata file) beside ``out``: ``d.npy`` -> ``d.names.txt``, ``d.json``."""
    out = Path(out)
    stem = out.name[:-4] if out.name.endswith(".npy") else out.name
    return out.with_name(stem + ".names.txt"), out.with_name(stem + ".json")


def check_output(out) -> Path:
    """ConfigError unless ``out`` ends in ``.npy`` and its folder is writable (before any long work)."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must name a .npy file, got {out}")
    check_writable(out.parent if str(out.parent) else Path("."), what=f"descriptors ({out.name})")
    return out


def write_descriptors(out, descriptors: np.ndarray, names: list[str], meta: dict) -> list[Path]:
    """Write the descriptors, their names and ``meta`` (each file atomically); returns the three paths."""
    out = Path(out)
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or len(descriptors) != len(names):
        raise ValueError(f"{descriptors.shape} descriptors for {len(names)} names")
    names_path, meta_path = sidecar_paths(out)
    with atomic_open(out, "wb") as f:
        np.save(f, descriptors, allow_pickle=False)
    atomic_write_text(names_path, "".join(f"{n}\n" for n in names))
    atomic_write_text(meta_path, json.dumps({**meta, "num_images": len(names), "dim": int(descriptors.shape[1]),
                                             "dtype": "float32", "names": names_path.name}, indent=2) + "\n")
    return [out, names_path, meta_path]
