"""Report step 01 (``notebooks/01_data_prep.ipynb``): the dataset, built or validated, and counted.

:func:`data_overview` works with only a dataset's ``.mat`` files (no
images) and writes ``results/data/{dataset}_counts.csv``; the synthetic city
is generated (or reused from ``cache/synthetic/``) when no ``data_root`` is
given (:func:`resolve_root`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repro.data.datasets import is_synthetic
from repro.errors import ConfigError
from repro.report.names import data_counts_path, dataset_label, resolve_dir


def resolve_root(dataset: str = "synthetic", data_root=None, synthetic_preset: str = "default",
                 city_seed: int = 0) -> Path:
    """The dataset's root folder; the synthetic city is generated (or reused
    from ``cache/synthetic/``) when ``data_root`` is None."""
    if data_root:
        return Path(data_root).expanduser()
    if dataset != "synthetic":
        raise ConfigError(f"data_root is required for dataset={dataset!r}: the folder holding its .mat files "
                          "(and images); see the README, 'Running on the real data'")
    from repro.data.synthetic import default_city_root, make_synthetic_city

    return make_synthetic_city(default_city_root(synthetic_preset, city_seed), preset=synthetic_preset,
                               seed=city_seed)


def load_splits(dataset: str, root, splits=("train", "val", "test"), check_files: bool = True) -> dict:
    """{split name: PlaceSplit} for the splits the dataset has."""
    from repro.data import DATASETS, load_split

    have = DATASETS[dataset].splits if dataset in DATASETS else ()
    return {s: load_split(dataset, root, s, check_files=check_files) for s in splits if s in have}


def images_available(split, sample: int = 20) -> bool:
    """Whether the split's image files are there (checks a few of each kind)."""
    paths = list(split.db_paths[:sample]) + list(split.q_paths[:sample])
    return bool(paths) and all(Path(p).is_file() for p in paths)


def query_groups(dataset: str, root, split: str):
    """Per-query capture condition on generated data (the synthetic city, or
    its rehearsal copies in the real layouts: ``ROOT/synthetic/``), else None."""
    from repro.data.synthetic import load_query_conditions

    if dataset == "synthetic":
        return load_query_conditions(root, split)["condition"].to_numpy()
    if is_synthetic(dataset, root):
        return load_query_conditions(Path(root) / "synthetic", split)["condition"].to_numpy()
    return None


def data_overview(dataset: str = "synthetic", data_root=None, synthetic_preset: str = "default",
                  city_seed: int = 0, results_dir=None, seed: int = 0) -> dict:
    """Build or validate a dataset and count it; writes the counts table.

    Works with only the ``.mat`` files (no images): then ``images`` is False.
    Returns ``{"root", "splits", "images", "counts" (DataFrame), "conditions"
    (DataFrame or None), "path"}``.
    """
    from repro.atomic import atomic_write_text, check_writable
    from repro.data.datasets import check_evaluable
    from repro.paths import git_commit

    check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    root = resolve_root(dataset, data_root, synthetic_preset, city_seed)
    splits = load_splits(dataset, root, check_files=False)
    if not splits:
        raise ConfigError(f"dataset {dataset!r} has no train/val/test splits to show")
    for s in splits.values():
        check_evaluable(s)  # a single place, or no query with a positive: a clear error here
    images = all(images_available(s) for s in splits.values())
    if images:  # fail fast on missing files, with the loader's message
        splits = load_splits(dataset, root, check_files=True)
    name = dataset_label(dataset, synthetic_preset, city_seed, root)
    rows = []
    for sname, s in splits.items():
        npos = np.array([len(p) for p in s.positives])
        rows.append({"dataset": name, "split": sname, "synthetic": is_synthetic(dataset, root),
                     "database_images": s.num_db, "queries": s.num_q,
                     "queries_without_positive": int((npos == 0).sum()),
                     "positives_per_query_mean": float(npos.mean()), "positives_per_query_median": float(np.median(npos)),
                     "positives_per_query_max": int(npos.max()), "pos_dist_thr_m": s.pos_dist_thr,
                     "images_available": images})
    counts = pd.DataFrame(rows)
    conditions = None
    if is_synthetic(dataset, root):
        conditions = pd.DataFrame({s: pd.Series(query_groups(dataset, root, s)).value_counts()
                                   for s in splits}).fillna(0).astype(int)
        conditions.index.name = "condition"
    out = data_counts_path(resolve_dir(results_dir, "results"), name)
    table = counts.assign(seed=seed, git_commit=git_commit())
    atomic_write_text(out, table.to_csv(index=False))
    return {"root": root, "splits": splits, "images": images, "counts": counts, "conditions": conditions,
            "path": out, "name": name}
