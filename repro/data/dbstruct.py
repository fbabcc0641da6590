"""The Pittsburgh ``dbStruct`` .mat format: read and write by field name.

The NetVLAD authors describe every dataset split (Pittsburgh 30k/250k,
TokyoTM, and here the synthetic city) by one MATLAB struct ``dbStruct`` with
image file names and UTM positions of the database and the queries. Fields are
read by name, never by position, since their order differs between files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from repro.errors import DatasetError

# MATLAB field name -> attribute name. All are required.
FIELDS = {
    "whichSet": "which_set",
    "dbImageFns": "db_image_fns",
    "utmDb": "utm_db",
    "qImageFns": "q_image_fns",
    "utmQ": "utm_q",
    "numImages": "num_images",
    "numQueries": "num_queries",
    "posDistThr": "pos_dist_thr",
    "posDistSqThr": "pos_dist_sq_thr",
    "nonTrivPosDistSqThr": "non_triv_pos_dist_sq_thr",
}
# Optional fields, read when present. Tokyo Time Machine (the authors'
# dbTokyoTimeMachine.m) stores the capture time of every panorama: a query's
# training positives must come from another capture time, and so must its
# retrievals in validation (their nnSearchPostprocess). Values are only ever
# compared for equality, so their units (e.g. yyyymm) do not matter.
OPTIONAL_FIELDS = {
    "dbTimeStamp": "db_time_stamp",
    "qTimeStamp": "q_time_stamp",
}


MAT_HEADER = b"MATLAB 5.0 MAT-file, dbStruct written by repro"


@dataclass
class DbStruct:
    """One split of a place-recognition dataset.

    Attributes:
        which_set: 'train', 'val' or 'test'.
        db_image_fns: N database image paths, relative to the database root.
        utm_db: [N, 2] float64 UTM easting/northing of database images, metres.
        q_image_fns: Q query image paths, relative to the query root.
        utm_q: [Q, 2] float64 UTM coordinates of the queries, metres.
        num_images, num_queries: N and Q.
        pos_dist_thr: evaluation radius, metres (25 in the paper).
        pos_dist_sq_thr: its square, m^2 (625).
        non_triv_pos_dist_sq_thr: squared radius of potential training
            positives, m^2 (100, i.e. 10 m).
        db_time_stamp, q_time_stamp: [N] and [Q] capture times (Tokyo Time
            Machine's ``dbTimeStamp``/``qTimeStamp``), or None where the file
            has none (Pittsburgh, Tokyo 24/7). Both or neither.
    """

    which_set: str
    db_image_fns: list[str]
    utm_db: np.ndarray
    q_image_fns: list[str]
    utm_q: np.ndarray
    num_images: int
    num_queries: int
    pos_dist_thr: float = 25.0
    pos_dist_sq_thr: float = 625.0
    non_triv_pos_dist_sq_thr: float = 100.0
    db_time_stamp: np.ndarray | None = None
    q_time_stamp: np.ndarray | None = None

    @property
    def has_time_stamps(self) -> bool:
        return self.db_time_stamp is not None

    def validate(self, source: str = "dbStruct") -> "DbStruct":
        """Check shapes and counts; raise DatasetError naming ``source``."""
        def fail(msg):
            raise DatasetError(f"{source}: {msg}")

        for name, fns, utm, count in (
            ("database", self.db_image_fns, self.utm_db, self.num_images),
            ("query", self.q_image_fns, self.utm_q, self.num_queries),
        ):
            if utm.ndim != 2 or utm.shape[1] != 2:
                fail(f"{name} UTM coordinates must have shape [n, 2], got {list(utm.shape)}")
            if len(fns) != utm.shape[0]:
                fail(f"{len(fns)} {name} image names but {utm.shape[0]} {name} UTM positions")
            if len(fns) != count:
                fail(f"{len(fns)} {name} image names but the count field says {count}")
            if not np.all(np.isfinite(utm)):
                fail(f"{name} UTM coordinates contain NaN or inf")
        if self.pos_dist_thr <= 0 or self.non_triv_pos_dist_sq_thr <= 0:
            fail("distance thresholds must be positive")
        if (self.db_time_stamp is None) != (self.q_time_stamp is None):
            fail("dbTimeStamp and qTimeStamp must be given together (one is missing)")
        if self.db_time_stamp is not None:
            for name, ts, count in (("dbTimeStamp", self.db_time_stamp, self.num_images),
                                    ("qTimeStamp", self.q_time_stamp, self.num_queries)):
                if np.ndim(ts) != 1 or len(ts) != count:
                    fail(f"{name} must hold one capture time per image ({count}), got shape {list(np.shape(ts))}")
        return self


def _scalar(value) -> float:
    return float(np.asarray(value).ravel()[0])


def _strings(cell) -> list[str]:
    """A MATLAB cell array of strings (N x 1 object array) -> list of str."""
    arr = np.asarray(cell, dtype=object).ravel()
    return [str(np.asarray(x).ravel()[0]) if np.asarray(x).size else "" for x in arr]


def load_dbstruct(path: str | os.PathLike) -> DbStruct:
    """Read a dbStruct .mat file (``scipy.io.loadmat(f)['dbStruct'][0, 0]``).

    Raises DatasetError naming the file when it is missing, unreadable, has no
    ``dbStruct`` variable, lacks a field, or its counts disagree with its lists.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dbStruct file not found: {path}")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for bad files
        raise DatasetError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    if "dbStruct" not in mat:
        raise DatasetError(f"{path}: no variable 'dbStruct' (found: {sorted(k for k in mat if not k.startswith('__'))})")
    s = mat["dbStruct"]
    try:
        s = s[0, 0]
        names = s.dtype.names or ()
    except (IndexError, AttributeError, TypeError):
        raise DatasetError(f"{path}: 'dbStruct' is not a MATLAB struct") from None
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise DatasetError(f"{path}: dbStruct lacks field(s) {missing}; expected all of {list(FIELDS)}")
    try:
        optional = {attr: np.asarray(s[f]).ravel().astype(np.float64) for f, attr in OPTIONAL_FIELDS.items()
                    if f in names}
        db = DbStruct(
            which_set=str(np.asarray(s["whichSet"]).ravel()[0]),
            db_image_fns=_strings(s["dbImageFns"]),
            utm_db=np.asarray(s["utmDb"], dtype=np.float64).reshape(2, -1).T.copy(),
            q_image_fns=_strings(s["qImageFns"]),
            utm_q=np.asarray(s["utmQ"], dtype=np.float64).reshape(2, -1).T.copy(),
            num_images=int(_scalar(s["numImages"])),
            num_queries=int(_scalar(s["numQueries"])),
            pos_dist_thr=_scalar(s["posDistThr"]),
            pos_dist_sq_thr=_scalar(s["posDistSqThr"]),
            non_triv_pos_dist_sq_thr=_scalar(s["nonTrivPosDistSqThr"]),
            **optional,
        )
    except (ValueError, IndexError, TypeError) as exc:
        raise DatasetError(f"{path}: malformed dbStruct field ({exc})") from exc
    return db.validate(source=str(path))


def save_dbstruct(path: str | os.PathLike, db: DbStruct) -> None:
    """Write ``db`` as a dbStruct .mat file readable by :func:`load_dbstruct`
    and by the authors' MATLAB code. The write is atomic (temp file + rename).
    """
    db.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def cell(fns):
        out = np.empty((len(fns), 1), dtype=object)
        for i, f in enumerate(fns):
            out[i, 0] = np.array([f])
        return out

    struct = {
        "whichSet": np.array([db.which_set]),
        "dbImageFns": cell(db.db_image_fns),
        "utmDb": np.asarray(db.utm_db, dtype=np.float64).T,
        "qImageFns": cell(db.q_image_fns),
        "utmQ": np.asarray(db.utm_q, dtype=np.float64).T,
        "numImages": np.array([[db.num_images]], dtype=np.float64),
        "numQueries": np.array([[db.num_queries]], dtype=np.float64),
        "posDistThr": np.array([[db.pos_dist_thr]], dtype=np.float64),
        "posDistSqThr": np.array([[db.pos_dist_sq_thr]], dtype=np.float64),
        "nonTrivPosDistSqThr": np.array([[db.non_triv_pos_dist_sq_thr]], dtype=np.float64),
    }
    for field_name, attr in OPTIONAL_FIELDS.items():
        if getattr(db, attr) is not None:  # 1 x n rows, as MATLAB stores a vector
            struct[field_name] = np.asarray(getattr(db, attr), dtype=np.float64).reshape(1, -1)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        scipy.io.savemat(f, {"dbStruct": struct})
        # scipy puts the creation time in the 116-byte text header; a fixed
        # text makes equal structs give equal bytes (deterministic datasets).
        f.seek(0)
        f.write(MAT_HEADER.ljust(116, b" "))
    os.replace(tmp, path)
