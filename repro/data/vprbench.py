"""The VPR-Bench dataset folder layout (Zaffar et al., IJCV 2021).

    ROOT/query/               query images
    ROOT/ref/                 reference (database) images
    ROOT/ground_truth_new.npy object array, one row per query:
                              [query_index, array of matching ref indices]

Images are indexed by file name order. VPR-Bench sorts by the integer file
stem (``int(name.split('.')[0])``); we do the same when every stem is an
integer (so '10.jpg' follows '9.jpg') and fall back to plain name order
otherwise. VPR-Bench reads only '*.jpg'; we accept the common image
extensions so converted datasets work too. Hidden files are ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from repro.errors import DatasetError
from repro.safe_load import load_object_npy

__all__ = ["VPRBench", "IMAGE_EXTENSIONS", "list_images", "load_vprbench"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})

LAYOUT = "ROOT/query/*.jpg, ROOT/ref/*.jpg and ROOT/ground_truth_new.npy"


class VPRBench(NamedTuple):
    """A loaded VPR-Bench folder.

    db_paths: N reference images, in index order.
    q_paths: Q query images, in index order.
    positives: Q sorted int64 arrays of matching reference indices.
    """

    db_paths: list[Path]
    q_paths: list[Path]
    positives: list[np.ndarray]


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` in VPR-Bench index order (see module docstring)."""
    names = [
        n for n in os.listdir(folder)
        if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
    ]
    stems = [n.split(".")[0] for n in names]
    if names and all(s.isdigit() for s in stems):
        names = [n for _, n in sorted(zip((int(s) for s in stems), names))]
    else:
        names.sort()
    return [folder / n for n in names]


def _row_indices(value, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value).ravel()
        if arr.dtype == object:  # nested lists inside the object array
            arr = np.concatenate([np.asarray(v).ravel() for v in arr]) if arr.size else arr
        if arr.size and not np.all(np.equal(np.mod(arr.astype(np.float64), 1), 0)):
            raise ValueError("non-integer index")
        return np.unique(arr.astype(np.int64))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: expected integer reference indices, got {value!r} ({exc})") from None


def load_vprbench(root: str | os.PathLike) -> VPRBench:
    """Read a VPR-Bench folder; validate it against its images.

    Raises:
        DatasetError when a folder or the ground-truth file is missing or
        unreadable, a row is malformed, a query index is repeated or out of
        range, a query has no row, or a reference index is out of range.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"VPR-Bench folder not found: {root} (expected {LAYOUT})")
    folders = {}
    for name in ("query", "ref"):
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"{root}: missing folder '{name}/' (expected {LAYOUT})")
        folders[name] = list_images(folder)
        if not folders[name]:
            raise DatasetError(f"{folder}: no images found (extensions {sorted(IMAGE_EXTENSIONS)})")
    q_paths, db_paths = folders["query"], folders["ref"]

    gt_file = root / "ground_truth_new.npy"
    if not gt_file.is_file():
        raise DatasetError(f"{root}: missing ground_truth_new.npy (expected {LAYOUT})")
    gt = load_object_npy(gt_file)  # an object array, read without running code from the file
    if gt.ndim != 2 or gt.shape[1] != 2:
        raise DatasetError(f"{gt_file}: expected one row [query_index, ref_indices] per query, got shape {list(gt.shape)}")

    num_q, num_db = len(q_paths), len(db_paths)
    try:
        q_idx = np.array([int(v) for v in gt[:, 0]], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{gt_file}: column 0 must hold integer query indices ({exc})") from None
    out = np.flatnonzero((q_idx < 0) | (q_idx >= num_q))
    if len(out):
        raise DatasetError(
            f"{gt_file}: {len(out)} query indices outside 0..{num_q - 1} (there are {num_q} images in "
            f"{root / 'query'}), e.g. row {out[0]} has {q_idx[out[0]]}"
        )
    uniq, counts = np.unique(q_idx, return_counts=True)
    if np.any(counts > 1):
        raise DatasetError(f"{gt_file}: query index {uniq[counts > 1][0]} appears in more than one row")
    if len(uniq) != num_q:
        lacking = np.setdiff1d(np.arange(num_q), uniq)
        raise DatasetError(
            f"{gt_file}: {len(lacking)} of {num_q} query images have no ground-truth row "
            f"(first: index {lacking[0]}, {q_paths[lacking[0]].name})"
        )

    positives: list[np.ndarray] = [None] * num_q  # type: ignore[list-item]
    for row, (qi, refs) in enumerate(zip(q_idx, gt[:, 1])):
        pos = _row_indices(refs, f"{gt_file} row {row}")
        if pos.size and (pos[0] < 0 or pos[-1] >= num_db):
            raise DatasetError(
                f"{gt_file} row {row} (query {qi}): reference index {pos[0] if pos[0] < 0 else pos[-1]} is "
                f"outside 0..{num_db - 1} (there are {num_db} images in {root / 'ref'})"
            )
        positives[qi] = pos
    return VPRBench(db_paths=db_paths, q_paths=q_paths, positives=positives)
