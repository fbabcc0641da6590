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

__all__ = ["DATASETS", "DatasetLayout", "PlaceSplit", "check_data_root", "check_evaluable", "load_split",
           "is_synthetic", "parse_dataset_spec", "synthetic_manifest"]

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

    def find_mat(self, root, split: str) -> tuple[Path | None, list[Path]]:
        """(the split's dbStruct .mat under ``root``, or None; the candidates tried, in order)."""
        tried = [Path(root) / m.format(split=split) for m in self.mat]
        return next((p for p in tried if p.is_file()), None), tried

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
    q_time, db_time: [Q] and [N] capture times (Tokyo Time Machine's
        qTimeStamp / dbTimeStamp), else None. With them, a query's training
        positives and its retrievals come from other capture times only, as
        in the authors' dbTokyoTimeMachine.m.
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
    q_time: np.ndarray | None = None
    db_time: np.ndarray | None = None

    def search_times(self) -> dict:
        """``query_times``/``db_times`` for :func:`repro.metrics.recall_at_n` (empty without capture times)."""
        return {} if self.q_time is None else {"query_times": self.q_time, "db_times": self.db_time}

    def subset_queries(self, idx) -> "PlaceSplit":
        """The same split with only the queries ``idx`` (e.g. a fixed validation subset)."""
        import dataclasses

        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self, q_paths=[self.q_paths[i] for i in idx], positives=[self.positives[i] for i in idx],
            utm_q=None if self.utm_q is None else self.utm_q[idx],
            q_time=None if self.q_time is None else self.q_time[idx])

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_q(self) -> int:
        return len(self.q_paths)


def synthetic_manifest(data_root) -> dict | None:
    """The generator's ``manifest.json`` when ``data_root`` holds a city made by
    :mod:`repro.data.synthetic` (its own layout, or one written in a real
    dataset's layout for the rehearsal), else None. Results on such data are
    synthetic whatever the dataset is called."""
    import json

    if data_root is None:
        return None
    try:
        man = json.loads((Path(data_root).expanduser() / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(man, dict) and (man.get("generator") == "repro.data.synthetic" or man.get("synthetic") is True):
        return man
    return None


def is_synthetic(dataset: str, data_root=None) -> bool:
    """The project's synthetic city, or data generated by it in a real dataset's layout."""
    return dataset == "synthetic" or synthetic_manifest(data_root) is not None


def parse_dataset_spec(spec: str, default_split: str = "test", what: str = "dataset") -> tuple[str, str, str]:
    """``"DATASET:ROOT[:SPLIT]"`` -> (dataset, root, split); ConfigError naming what is wrong.

    Used for ``--init-from`` (split default "train") and ``test_on`` (split
    default "test"). The root may contain ':' itself (a trailing ``:train``,
    ``:val`` or ``:test`` is read as the split). Nothing is loaded here.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{what} {spec!r}: expected 'DATASET:ROOT' or 'DATASET:ROOT:SPLIT', "
                          "e.g. 'tokyoTM:/data/tokyoTM' or 'tokyo247:/data/tokyo247'")
    dataset, root = spec.split(":", 1)
    split = default_split
    head, _, tail = root.rpartition(":")
    if head and tail in ("train", "val", "test"):
        root, split = head, tail
    if dataset not in DATASETS:
        raise ConfigError(f"{what} {spec!r}: unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    layout = DATASETS[dataset]
    if layout.splits and split not in layout.splits:
        raise ConfigError(f"{what} {spec!r}: {dataset} has no split {split!r} (it has {', '.join(layout.splits)})")
    if not root:
        raise ConfigError(f"{what} {spec!r}: the data root is empty")
    return dataset, root, split


def check_data_root(dataset: str, data_root) -> Path:
    """The dataset's root folder; ConfigError for an unknown dataset,
    DatasetError (with the expected layout and where to get the data) when
    the folder does not exist."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    layout = DATASETS[dataset]
    if data_root is None or not isinstance(data_root, (str, os.PathLike)):
        raise ConfigError(f"data_root for {dataset!r} must be a folder path, got {data_root!r}. "
                          f"Expected layout: {layout.describe()}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"data root for {dataset!r} not found: {root}. Expected layout: {layout.describe()}. "
            f"{layout.how_to_get}"
        )
    return root


def check_evaluable(split: PlaceSplit) -> int:
    """Fail fast on a split whose recall@N would mean nothing.

    Raises DatasetError when the split has no database image or no query,
    when no query has any positive (recall would be 0 for every model: UTM
    coordinates in other units, or queries from another area), or when it
    shows a single place (every database image is a positive of every
    query: recall would be 100% for every model, and training would have no
    negatives).

    Returns the number of queries without a positive. Those are allowed: as
    in the paper and the authors' code they stay in the recall denominator
    and count as failures; ``repro.metrics.recall_at_n`` warns and reports
    the count (``num_without_positive``).
    """
    src = split.meta.get("mat") or split.name
    if split.num_db == 0 or split.num_q == 0:
        raise DatasetError(f"{src}: {split.num_db} database images and {split.num_q} queries; "
                           "recall@N needs at least one of each")
    n_pos = np.array([len(p) for p in split.positives], dtype=np.int64)
    radius = f"within {split.pos_dist_thr:g} m" if split.pos_dist_thr else "in the ground truth"
    if not n_pos.any():
        raise DatasetError(
            f"{src}: none of its {split.num_q} queries has a database image {radius}, so recall would be 0 "
            "for any model. Check that utmDb and utmQ are UTM coordinates in metres of the same area "
            "(VPR-Bench: that the ground truth matches the image lists).")
    if (n_pos == split.num_db).all():
        raise DatasetError(
            f"{src}: all {split.num_db} database images are {radius} of every query: the split shows a single "
            "place, so recall would be 100% for any model (and training would have no negatives). A "
            f"place-recognition split needs database images of several places (negatives are farther than "
            f"{split.pos_dist_thr or 25:g} m); check utmDb and utmQ.")
    return int((n_pos == 0).sum())


def _png_where_jpg_is_absent(paths: list[Path]) -> list[Path]:
    """Tokyo 24/7's .mat lists its database as .jpg, while the archives of the
    database (database_gsv_vga) hold .png files of the same names (as a public
    converter, gmberton/datasets_vg, assumes): take the .png where the .jpg
    is absent and the .png is there; everything else stays (and is reported
    missing by the image check if it is)."""
    out = []
    for p in paths:
        if p.suffix.lower() == ".jpg" and not p.exists() and p.with_suffix(".png").exists():
            p = p.with_suffix(".png")
        out.append(p)
    return out


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
    root = check_data_root(dataset, data_root)
    layout = DATASETS[dataset]

    if layout.kind == "vprbench":
        bench = load_vprbench(root)
        if check_files:  # listing found them; re-stat in case of broken links
            check_images(bench.db_paths, what="reference images", headers=False)
            check_images(bench.q_paths, what="query images", headers=False)
        return PlaceSplit(
            name=f"vprbench_{root.resolve().name}", db_paths=bench.db_paths, q_paths=bench.q_paths,
            utm_db=None, utm_q=None, positives=bench.positives, pos_dist_thr=None,
            meta={"dataset": dataset, "split": "test", "data_root": str(root)},
        )

    if split not in layout.splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}; valid splits: {', '.join(layout.splits)}")
    mat, tried = layout.find_mat(root, split)
    if mat is None:
        raise DatasetError(
            f"no dbStruct .mat for {dataset} {split}; tried: {', '.join(str(p) for p in tried)}. "
            f"Expected layout: {layout.describe()}. {layout.how_to_get}"
        )
    db = load_dbstruct(mat)

    db_root, q_root = root / layout.db_root, root / layout.q_root
    db_paths = [db_root / f for f in db.db_image_fns]
    q_paths = [q_root / f for f in db.q_image_fns]
    if dataset == "tokyo247" and check_files:
        db_paths = _png_where_jpg_is_absent(db_paths)
    if check_files:
        # one stat per file here; repro.evaluate.check_split_images reads headers before long work
        check_images(db_paths, what=f"{dataset} {split} database images (under {db_root})", headers=False)
        check_images(q_paths, what=f"{dataset} {split} query images (under {q_root})", headers=False)

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
        meta={"mat": str(mat), "db_root": str(db_root), "q_root": str(q_root), "dataset": dataset,
              "split": split, "data_root": str(root)},
        q_time=db.q_time_stamp,
        db_time=db.db_time_stamp,
    )
