"""One entry point for every benchmark: :func:`load_split`.

Layouts (``DATA_ROOT`` is the folder given as ``data_root``):

``pitts30k``, ``pitts250k`` (splits train/val/test) - the authors' layout, also
    used by Nanne/pytorch-NetVlad::

        DATA_ROOT/datasets/pitts30k_test.mat    dbStruct (or DATA_ROOT/pitts30k_test.mat)
        DATA_ROOT/<dbImageFns>                  database images, e.g. 000/000829_pitch1_yaw1.jpg
        DATA_ROOT/queries_real/<qImageFns>      query images

``tokyo247`` (test only) - ``DATA_ROOT/datasets/tokyo247.mat`` (the authors'
    dbStruct); database images relative to ``DATA_ROOT``, queries relative to
    ``DATA_ROOT/247query_subset_v2/``. Panorama ids: 12 consecutive cut-outs
    per panorama, for recall counted once per panorama as in the paper.

``tokyoTM`` (train/val) - ``DATA_ROOT/datasets/tokyoTM_{split}.mat``; database
    and query images both relative to ``DATA_ROOT`` (both are Time Machine
    images, as in the authors' dbTokyoTimeMachine.m).

``synthetic`` (train/val/test) - the project's generated city:
    ``DATA_ROOT/{split}.mat``, images in ``DATA_ROOT/database/`` and
    ``DATA_ROOT/queries/``.

``vprbench`` - a VPR-Bench folder (see :mod:`repro.data.vprbench`); the
    split is ignored and there are no UTM positions.

The .mat may always also sit directly in ``DATA_ROOT``. Evaluation positives
are the database images within ``posDistThr`` (25 m) of each query.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repro.data.dbstruct import DbStruct, load_dbstruct
from repro.data.ground_truth import eval_positives, panorama_ids
from repro.data.images import check_images
from repro.data.vprbench import LAYOUT as VPRBENCH_LAYOUT
from repro.data.vprbench import load_vprbench
from repro.errors import ConfigError, DatasetError

__all__ = ["DATASETS", "DatasetLayout", "PlaceSplit", "load_split"]

_NETVLAD_URL = "https://www.di.ens.fr/willow/research/netvlad/"
_PITTS_HOW = (
    "Pittsburgh 30k/250k are distributed by the NetVLAD authors on request "
    f"(see {_NETVLAD_URL}); the dbStruct .mat files come with their code."
)
_TOKYO_HOW = f"Tokyo 24/7 and Tokyo Time Machine are distributed by the NetVLAD authors on request (see {_NETVLAD_URL})."


@dataclass(frozen=True)
class DatasetLayout:
    """Where a dataset's files live, relative to DATA_ROOT.

    mat: candidate .mat paths, tried in order; ``{split}`` is substituted.
    db_root, q_root: folders the dbStruct's image names are relative to.
    splits: valid split names.
    per_panorama: cut-outs per panorama (Tokyo 24/7), else None.
    how_to_get: where users obtain the data.
    """

    mat: tuple[str, ...]
    db_root: str
    q_root: str
    splits: tuple[str, ...]
    per_panorama: int | None = None
    how_to_get: str = ""
    kind: str = "dbstruct"

    def describe(self) -> str:
        if self.kind == "vprbench":
            return VPRBENCH_LAYOUT.replace("ROOT", "DATA_ROOT")
        db = f"DATA_ROOT/{self.db_root}/" if self.db_root else "DATA_ROOT/"
        q = f"DATA_ROOT/{self.q_root}/" if self.q_root else "DATA_ROOT/"
        return (
            f"dbStruct at DATA_ROOT/{self.mat[0]}, database images under {db}, "
            f"query images under {q} (splits: {', '.join(self.splits)})"
        )


def _pitts(name: str) -> DatasetLayout:
    return DatasetLayout(
        mat=(f"datasets/{name}_{{split}}.mat", f"{name}_{{split}}.mat"),
        db_root="", q_root="queries_real", splits=("train", "val", "test"), how_to_get=_PITTS_HOW,
    )


DATASETS: dict[str, DatasetLayout] = {
    "pitts30k": _pitts("pitts30k"),
    "pitts250k": _pitts("pitts250k"),
    "tokyo247": DatasetLayout(
        mat=("datasets/tokyo247.mat", "tokyo247.mat"), db_root="", q_root="247query_subset_v2",
        splits=("test",), per_panorama=12, how_to_get=_TOKYO_HOW,
    ),
    "tokyoTM": DatasetLayout(
        mat=("datasets/tokyoTM_{split}.mat", "tokyoTM_{split}.mat"), db_root="", q_root="",
        splits=("train", "val"), how_to_get=_TOKYO_HOW,
    ),
    "synthetic": DatasetLayout(
        mat=("{split}.mat",), db_root="database", q_root="queries", splits=("train", "val", "test"),
        how_to_get="Generate it with the project's synthetic-city generator.",
    ),
    "vprbench": DatasetLayout(
        mat=(), db_root="ref", q_root="query", splits=(), kind="vprbench",
        how_to_get="VPR-Bench datasets: https://github.com/MubarizZaffar/VPR-Bench",
    ),
}


@dataclass
class PlaceSplit:
    """One evaluation/training split, ready for feature extraction.

    name: e.g. "pitts30k_test".
    db_paths, q_paths: absolute image paths, N and Q of them.
    utm_db, utm_q: [N, 2], [Q, 2] metres; None for VPR-Bench.
    positives: Q sorted int64 arrays of database indices within pos_dist_thr.
    panorama_ids: [N] int64 (Tokyo 24/7 only), else None.
    dbstruct: the parsed .mat, None for VPR-Bench.
    pos_dist_thr: evaluation radius, metres (25; None for VPR-Bench, whose
        positives are given).
    """

    name: str
    db_paths: list[Path]
    q_paths: list[Path]
    utm_db: np.ndarray | None
    utm_q: np.ndarray | None
    positives: list[np.ndarray]
    panorama_ids: np.ndarray | None = None
    dbstruct: DbStruct | None = None
    pos_dist_thr: float | None = 25.0
    meta: dict = field(default_factory=dict)

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_q(self) -> int:
        return len(self.q_paths)


def load_split(
    dataset: str,
    data_root: str | os.PathLike,
    split: str = "test",
    check_files: bool = True,
) -> PlaceSplit:
    """Load one split of a registered dataset (layouts: module docstring).

    Args:
        dataset: a key of :data:`DATASETS`.
        data_root: the dataset's root folder.
        split: 'train', 'val' or 'test' (ignored for vprbench).
        check_files: verify that every listed image exists (one stat each);
            False needs only the .mat, e.g. for statistics of the metadata.

    Raises:
        ConfigError: unknown dataset or split.
        DatasetError: missing data_root, .mat, or images (message lists what
            was expected and where to get the data).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    layout = DATASETS[dataset]
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"data root for {dataset!r} not found: {root}. Expected layout: {layout.describe()}. "
            f"{layout.how_to_get}"
        )

    if layout.kind == "vprbench":
        bench = load_vprbench(root)
        if check_files:  # listing found them; re-stat in case of broken links
            check_images(bench.db_paths, what="reference images")
            check_images(bench.q_paths, what="query images")
        return PlaceSplit(
            name=f"vprbench_{root.resolve().name}", db_paths=bench.db_paths, q_paths=bench.q_paths,
            utm_db=None, utm_q=None, positives=bench.positives, pos_dist_thr=None,
        )

    if split not in layout.splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}; valid splits: {', '.join(layout.splits)}")
    tried = [root / m.format(split=split) for m in layout.mat]
    mat = next((p for p in tried if p.is_file()), None)
    if mat is None:
        raise DatasetError(
            f"no dbStruct .mat for {dataset} {split}; tried: {', '.join(str(p) for p in tried)}. "
            f"Expected layout: {layout.describe()}. {layout.how_to_get}"
        )
    db = load_dbstruct(mat)

    db_root, q_root = root / layout.db_root, root / layout.q_root
    db_paths = [db_root / f for f in db.db_image_fns]
    q_paths = [q_root / f for f in db.q_image_fns]
    if check_files:
        check_images(db_paths, what=f"{dataset} {split} database images (under {db_root})")
        check_images(q_paths, what=f"{dataset} {split} query images (under {q_root})")

    return PlaceSplit(
        name=f"{dataset}_{split}",
        db_paths=db_paths,
        q_paths=q_paths,
        utm_db=db.utm_db,
        utm_q=db.utm_q,
        positives=eval_positives(db.utm_db, db.utm_q, radius=db.pos_dist_thr),
        panorama_ids=panorama_ids(db.utm_db, layout.per_panorama) if layout.per_panorama else None,
        dbstruct=db,
        pos_dist_thr=db.pos_dist_thr,
        meta={"mat": str(mat), "db_root": str(db_root), "q_root": str(q_root)},
    )
