"""The report's experiments, one function per notebook step.

The notebooks in ``notebooks/`` stay thin: they hold the narrative and the
parameters, and call these functions. Each experiment writes one result file
per run (JSON via :func:`repro.report.write_json`: config, seed, git commit,
and tidy ``rows`` of recall@N), under ``results_dir``:

    results/data/{dataset}_counts.csv                      01_data_prep
    results/train/{run_name}.json                          02_train (the trainer's record)
    results/alpha_sweep/{dataset}_{backbone}_K{K}_{off_the_shelf|trained}_alpha{alpha}.json   03
    results/fmax_output_size/{dataset}_{backbone}_K{K}.json                                    04

:func:`expected_outputs` names them for a notebook and its parameters, so the
pipeline can skip runs whose results exist.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from repro.data.datasets import is_synthetic  # noqa: F401 - the notebooks call ex.is_synthetic
from repro.errors import ConfigError
from repro.model.netvlad import check_alpha
from repro.paths import rel, repo_root  # noqa: F401  (rel: the notebooks call ex.rel)

# The N of the paper's Figure 5.
PAPER_NS = (1, 2, 3, 4, 5, 10, 15, 20, 25)
# What the experiments of this module report (Figure 5's N).
NS = PAPER_NS

__all__ = [
    "NS", "PAPER_NS", "alpha_tag", "check_alpha_param", "check_params", "dataset_label", "expected_outputs", "load_splits",
    "resolve_root", "rule_alpha", "run_alpha_point", "run_fmax_output_size", "run_training", "data_overview",
]


# ---------------------------------------------------------------------------
# names and paths


def resolve_dir(path, default: str) -> Path:
    """A results/figures/cache folder: relative paths are taken from the cwd
    (the notebook's folder under papermill); None -> ``<repo>/default``."""
    return Path(path).expanduser().resolve() if path else repo_root() / default


def dataset_label(dataset: str, synthetic_preset: str = "default", city_seed: int = 0, data_root=None) -> str:
    """``synthetic_default_seed0`` for the generated city; ``synthetic_pitts30k``
    for a generated city in a real dataset's layout (the rehearsal), so its
    results are never taken for Pittsburgh's; else the dataset name."""
    if dataset == "synthetic":
        return f"synthetic_{synthetic_preset}_seed{city_seed}"
    return f"synthetic_{dataset}" if is_synthetic(dataset, data_root) else dataset


def alpha_tag(alpha: float) -> str:
    """A file-name-safe, stable rendering of alpha (4 significant digits)."""
    return f"{float(alpha):.4g}".replace("+", "")


def check_alpha_param(alpha) -> float:
    """The notebook's ``alpha`` as a float; a clear ConfigError unless > 0 (the layer's own check)."""
    return check_alpha(alpha)


def _image_size(image_size):
    return tuple(int(v) for v in image_size) if image_size else None


# ---------------------------------------------------------------------------
# the notebooks' parameters, checked in each notebook's first code cell (and by
# the pipeline for every run before the first one starts)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_at_least(low):
    def check(v):
        if not _is_int(v) or v < low:
            return f"an integer >= {low}"
    return check


def _optional(check):
    def inner(v):
        return None if v is None else check(v)
    return inner


def _choice(*values):
    def check(v):
        if v not in values:
            return "one of " + ", ".join(repr(x) for x in values)
    return check


def _bool(v):
    if not isinstance(v, (bool, np.bool_)):
        return "True or False"


def _str(v):
    if not isinstance(v, (str, os.PathLike)) or not str(v):
        return "a non-empty string (a path or a name)"


def _dataset(v):
    from repro.data import DATASETS

    if v not in DATASETS or v == "vprbench":
        return "one of " + ", ".join(repr(d) for d in DATASETS if d != "vprbench")


def _backbone(v):
    from repro.model.backbone import BACKBONES

    if v not in BACKBONES:
        return "one of " + ", ".join(repr(b) for b in BACKBONES)


def _weights(v):
    if v is None or (isinstance(v, str) and v.lower() in ("imagenet", "none")):
        return None
    if not isinstance(v, (str, os.PathLike)) or not str(v):
        return ("None (random init), 'imagenet', the path of a .pth state dict, or the authors' converted "
                "model (PATH.mat or authors:PATH: their VGG-16 base)")


def _image_size_check(v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(x) and x >= 1 for x in v):
        return "None (native size) or [H, W], two positive integers"


def _alpha(v):
    try:
        check_alpha(v)
    except ConfigError:
        return "a positive, finite number (NetVLAD's alpha)"


def _poolings(v):
    from repro.model.place_model import POOLINGS

    if not isinstance(v, (list, tuple)) or not v or any(x not in POOLINGS for x in v):
        return f"a non-empty list drawn from {list(POOLINGS)}"


def _grids(v):
    from repro.model.fmax import check_output_size

    if not isinstance(v, (list, tuple)) or not v:
        return "a non-empty list of f_max grids (g for g x g, or [h, w]), each at least 1x1"
    for g in v:
        if isinstance(g, (bool, np.bool_)) or not (_is_int(g) or isinstance(g, (list, tuple))):
            return "a non-empty list of f_max grids (g for g x g, or [h, w]), each at least 1x1"
        try:
            check_output_size(g)
        except ConfigError:
            return "a non-empty list of f_max grids (g for g x g, or [h, w]), each at least 1x1"


def _int_list(v):
    if not isinstance(v, (list, tuple)) or not all(_is_int(x) and x >= 1 for x in v):
        return "a list of positive integers"


def _train_options(v):
    from dataclasses import fields

    from repro.train import TrainConfig

    if not isinstance(v, dict):
        return "a dict of repro.train.TrainConfig fields, e.g. {\"queries_per_epoch\": 200}"
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(v) - known)
    if unknown:
        return f"a dict of repro.train.TrainConfig fields (unknown: {unknown})"


def _test_sets(v):
    from repro.authors_eval import AUTHORS_TESTS

    if isinstance(v, (list, tuple)) and v and all(x in AUTHORS_TESTS for x in v):
        return None
    return f"a non-empty list of test sets among {list(AUTHORS_TESTS)}"


def _dir_check(v):
    return None if v is None else _str(v)


# name -> (check returning None or what was expected, papermill example)
PARAM_CHECKS = {
    "dataset": (_dataset, '-p dataset pitts30k'),
    "data_root": (_optional(_str), '-p data_root /data/pittsburgh'),
    "synthetic_preset": (_choice("tiny", "default", "large"), '-p synthetic_preset tiny'),
    "city_seed": (_int_at_least(0), '-p city_seed 0'),
    "seed": (_int_at_least(0), '-p seed 0'),
    "n_samples": (_int_at_least(0), '-p n_samples 6'),
    "backbone": (_backbone, '-p backbone vgg16'),
    "weights": (_weights, '-p weights imagenet'),
    "image_size": (_image_size_check, '-y "image_size: [96, 128]"'),
    "device": (_str, '-p device cpu'),
    "epochs": (_int_at_least(1), '-p epochs 4'),
    "poolings": (_poolings, '-y "poolings: [netvlad, fmax]"'),
    "num_clusters": (_int_at_least(2), '-p num_clusters 64'),
    "whiten_dim": (_optional(_int_at_least(1)), '-p whiten_dim 4096'),
    "assignment": (_optional(_choice("paper", "fixed_bias")), '-p assignment fixed_bias'),
    "train_options": (_train_options, '-y "train_options: {queries_per_epoch: 200}"'),
    "reuse_existing": (_bool, '-p reuse_existing False'),
    "train": (_bool, '-p train True'),
    "alpha": (_alpha, '-p alpha 50'),
    "init_images": (_int_at_least(1), '-p init_images 500'),
    "init_descriptors": (_int_at_least(1), '-p init_descriptors 50000'),
    "split": (_choice("train", "val", "test"), '-p split test'),
    "feature_dtype": (_choice("float32", "float16"), '-p feature_dtype float16'),
    "grids": (_grids, '-y "grids: [1, 2, 4]"'),
    "whiten_dims": (_int_list, '-y "whiten_dims: [256, 128]"'),
    "whiten_fit_images": (_int_at_least(1), '-p whiten_fit_images 10000'),
    "results_dir": (_str, '-p results_dir ../results'),
    "figures_dir": (_str, '-p figures_dir ../figures'),
    "cache_dir": (_dir_check, '-p cache_dir ../cache/features'),
    "train_cache_dir": (_dir_check, '-p train_cache_dir ../cache/train'),
    "reference_dir": (_dir_check, '-p reference_dir ../../shared/reference'),
    "authors_model": (_optional(_str), '-p authors_model /data/models/authors'),
    "tokyo247_root": (_optional(_str), '-p tokyo247_root /data/tokyo247'),
    "test_sets": (_test_sets, '-y "test_sets: [pitts30k, tokyo247]"'),
    "batch_size": (_int_at_least(1), '-p batch_size 16'),
}
WRITABLE_PARAMS = ("results_dir", "figures_dir", "cache_dir", "train_cache_dir")


def check_params(notebook: str, params: dict, check_paths: bool = True, base=None) -> dict:
    """Check a notebook's parameters (its first code cell calls this with
    ``globals()``); ConfigError naming the parameter, its value and type,
    what was expected and how to pass it with papermill.

    Only the names in :data:`PARAM_CHECKS` that ``params`` holds are checked
    (the rest of ``globals()`` is ignored). With ``check_paths`` also: the
    data root exists (DatasetError with the expected layout), a weights file
    exists (WeightsError), the device is available and the output folders
    are writable; relative paths are taken from ``base`` (default: the
    current folder, the notebook's under papermill). Returns the checked
    parameters.
    """
    stem = Path(notebook).name.split(".")[0]
    none_ok = {"alpha"} if stem.startswith("04") else set()  # 04: None = the paper's rule
    from repro.report.parameters import NOTEBOOK_PARAMETERS, declared_names

    # the notebook's declared parameters (repro.report.parameters), each with its check
    names = declared_names(stem) if stem in NOTEBOOK_PARAMETERS else list(PARAM_CHECKS)
    checked = {}
    for name in names:
        check, example = PARAM_CHECKS[name]
        if name not in params:
            continue
        value = params[name]
        if name in none_ok and value is None:
            checked[name] = value
            continue
        expected = check(value)
        if expected:
            raise ConfigError(f"{stem}: parameter {name}={value!r} ({type(value).__name__}) must be {expected}; "
                              f"e.g. papermill ... {example}")
        checked[name] = value
    if check_paths:
        from repro.atomic import check_writable
        from repro.data.datasets import check_data_root
        from repro.errors import WeightsError
        from repro.evaluate import resolve_device

        base = Path(base) if base is not None else Path.cwd()
        at = lambda v: base / Path(v).expanduser()  # noqa: E731 - absolute paths stay as they are
        weights = checked.get("weights")
        if isinstance(weights, str) and weights.startswith("authors:"):
            weights = weights[len("authors:"):]
        if weights is not None and str(weights).lower() not in ("imagenet", "none") and not at(weights).is_file():
            raise WeightsError(f"{stem}: weights file not found: {at(weights)}; pass None (random init), "
                               "'imagenet', or the path of a .pth state dict")
        if "device" in checked:
            resolve_device(checked["device"])
        if checked.get("data_root") is not None:
            check_data_root(checked.get("dataset", "synthetic"), at(checked["data_root"]))
        elif checked.get("dataset", "synthetic") != "synthetic" and "data_root" in checked:
            raise ConfigError(f"{stem}: data_root is required for dataset={checked['dataset']!r}: the folder "
                              "holding its .mat files (and images); e.g. papermill ... -p data_root /data/pittsburgh")
        for name in WRITABLE_PARAMS:
            if checked.get(name) is not None:
                if name == "train_cache_dir" and not checked.get("train", True):
                    continue
                check_writable(at(checked[name]), what=f"{stem}'s {name}")
    return checked


def alpha_sweep_path(results_dir, dataset_name: str, backbone: str, num_clusters: int, alpha: float,
                     trained: bool = False) -> Path:
    kind = "trained" if trained else "off_the_shelf"
    return Path(results_dir) / "alpha_sweep" / f"{dataset_name}_{backbone}_K{num_clusters}_{kind}_alpha{alpha_tag(alpha)}.json"


def fmax_size_path(results_dir, dataset_name: str, backbone: str, num_clusters: int) -> Path:
    return Path(results_dir) / "fmax_output_size" / f"{dataset_name}_{backbone}_K{num_clusters}.json"


def data_counts_path(results_dir, dataset_name: str) -> Path:
    return Path(results_dir) / "data" / f"{dataset_name}_counts.csv"


def train_run_name(dataset_name: str, backbone: str, pooling: str, seed: int) -> str:
    return f"{dataset_name}_{backbone}_{pooling}_seed{seed}"


def train_record_path(results_dir, run_name: str) -> Path:
    return Path(results_dir) / "train" / f"{run_name}.json"


def record_complete(path: Path) -> bool:
    """A result file exists and, if it is a JSON record with a status, is complete."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix != ".json":
        return True
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return rec.get("status", "complete") == "complete"


def expected_outputs(notebook: str, params: dict) -> list[Path]:
    """The result files a run of ``notebook`` with ``params`` writes (absolute
    paths; ``results_dir`` relative to the repository root when relative).
    Empty for notebooks that always run (05)."""
    p = dict(params)
    results = Path(p.get("results_dir") or "results")
    if not results.is_absolute():
        results = repo_root() / results
    name = dataset_label(p.get("dataset", "synthetic"), p.get("synthetic_preset", "default"), p.get("city_seed", 0),
                         p.get("data_root"))
    stem = notebook.split(".")[0]
    if stem.startswith("01"):
        return [data_counts_path(results, name)]
    if stem.startswith("02"):
        return [train_record_path(results, train_run_name(name, p.get("backbone", "alexnet"), pooling, p.get("seed", 0)))
                for pooling in p.get("poolings", ["netvlad", "fmax"])]
    if stem.startswith("03"):
        out = [alpha_sweep_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16),
                                check_alpha_param(p["alpha"]))]
        if p.get("train"):
            out.append(alpha_sweep_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16),
                                        p["alpha"], trained=True))
        return out
    if stem.startswith("04"):
        return [fmax_size_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16))]
    if stem.startswith("06"):  # the evaluable pairs only; with none (no model files here) the step always runs
        from repro.authors_eval import authors_plan, authors_record_path

        return [authors_record_path(results, e["trained_on"], e["dataset"])
                for e in authors_plan(p.get("test_sets", ()), p.get("authors_model"), p.get("data_root"),
                                      p.get("tokyo247_root")) if e["skip"] is None]
    return []


# ---------------------------------------------------------------------------
# data


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
    from repro.atomic import check_writable
    from repro.data.datasets import check_evaluable
    from repro.report import atomic_write_text, git_commit

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


# ---------------------------------------------------------------------------
# off-the-shelf evaluation on cached conv maps (03, 04)


def _base_spec(backbone, weights, seed, num_clusters):
    from repro.features import BaseSpec

    w = None if weights is None or str(weights).lower() == "none" else str(weights)
    return BaseSpec(backbone=backbone, weights=w, seed=int(seed), num_clusters=int(num_clusters))


def netvlad_settings(dataset: str, assignment: str | None = None) -> dict:
    """The NetVLAD layer and k-means settings of the training profile for
    ``dataset`` (``TrainConfig.synthetic_default`` on the synthetic city, else
    ``TrainConfig.paper``, the authors'), so that the off-the-shelf models of
    03/04 are the untrained models 02 starts from. ``assignment`` overrides
    the profile's layer (an ablation)."""
    from repro.train import TrainConfig

    cfg = TrainConfig.synthetic_default() if dataset == "synthetic" else TrainConfig.paper(dataset=dataset)
    return {"assignment": assignment or cfg.assignment, "kmeans_iterations": cfg.kmeans_iterations,
            "kmeans_points_per_centroid": cfg.kmeans_points_per_centroid}


def netvlad_init_cached(spec, paths, image_size, num_images: int, num_descriptors: int, seed: int,
                        cache_dir=None, device="cpu", assignment: str = "paper", kmeans_iterations: int = 100,
                        kmeans_points_per_centroid: int | None = None, log=print) -> dict:
    """The paper's NetVLAD initialisation (k-means on descriptors of ``paths``,
    the alpha rule) for the untrained base ``spec``, cached on disk: the same
    call as the trainer's, so the centroids match its untrained model.

    Returns ``{"centroids" [K, D], "alpha_rule", "num_descriptors", "seconds"}``.
    """
    from repro.evaluate import image_dataset, resolve_device
    from repro.features import build_base, cache_key, default_cache_dir
    from repro.model import alpha_from_ratio, fit_centroids, sample_local_descriptors

    digest, key = cache_key(spec, paths, image_size)
    extra = dict(num_images=int(num_images), num_descriptors=int(num_descriptors), seed=int(seed),
                 assignment=assignment, ratio=100.0, normalize=True, kmeans_iterations=int(kmeans_iterations),
                 kmeans_points_per_centroid=kmeans_points_per_centroid)
    tag = hashlib.sha256(json.dumps([digest, extra], sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / f"init_{spec.backbone}_seed{spec.seed}_K{spec.num_clusters}_{tag}.npz"
    if path.is_file():
        try:
            z = np.load(path)
            return {"centroids": z["centroids"], "alpha_rule": float(z["alpha_rule"]),
                    "num_descriptors": int(z["num_descriptors"]), "seconds": 0.0, "cached": True}
        except (OSError, ValueError, KeyError):
            pass
    start = time.perf_counter()
    device = resolve_device(device)
    base = build_base(spec).to(device)
    descs = sample_local_descriptors(base, image_dataset(paths, image_size), num_images=num_images,
                                     num_descriptors=num_descriptors, normalize=True, device=device, seed=seed)
    centroids = fit_centroids(descs, spec.num_clusters, seed=seed, niter=kmeans_iterations,
                              max_points_per_centroid=kmeans_points_per_centroid)
    rule = float(alpha_from_ratio(descs, centroids, ratio=100.0, assignment=assignment))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, centroids=centroids, alpha_rule=rule, num_descriptors=len(descs))
    os.replace(tmp, path)
    seconds = time.perf_counter() - start
    if log:
        log(f"NetVLAD initialised from {len(descs)} descriptors of {min(num_images, len(paths))} images "
            f"in {seconds:.1f} s: alpha by the rule = {rule:.4g}")
    return {"centroids": centroids, "alpha_rule": rule, "num_descriptors": int(len(descs)), "seconds": seconds,
            "cached": False}


class OffTheShelf:
    """An untrained base on one dataset: cached conv maps of the evaluation
    split, the NetVLAD initialisation from training database images.

    Args mirror the notebooks' parameters; ``init_images``/``init_descriptors``
    as in :class:`repro.train.TrainConfig` (synthetic default: 300 / 20k).
    """

    def __init__(self, dataset="synthetic", data_root=None, synthetic_preset="default", city_seed=0,
                 backbone="alexnet", weights=None, seed=0, num_clusters=16, image_size=None, split="test",
                 init_images=300, init_descriptors=20_000, device="cpu", cache_dir=None, feature_dtype="float32",
                 assignment=None, log=print):
        from repro.evaluate import check_split_images
        from repro.model.place_model import check_model_options

        check_model_options(backbone, "netvlad")  # before the (possibly generated) data
        self.dataset, self.backbone, self.seed = dataset, backbone, int(seed)
        self.num_clusters, self.image_size, self.split_name = int(num_clusters), _image_size(image_size), split
        self.root = resolve_root(dataset, data_root, synthetic_preset, city_seed)
        self.name = dataset_label(dataset, synthetic_preset, city_seed, self.root)
        self.synthetic = is_synthetic(dataset, self.root)
        self.spec = _base_spec(backbone, weights, seed, num_clusters)
        self.device, self.cache_dir, self.dtype, self.log = device, cache_dir, feature_dtype, log
        self.init_images, self.init_descriptors = int(init_images), int(init_descriptors)
        self.netvlad = netvlad_settings(dataset, assignment)  # the layer and k-means of 02's starting point
        from repro.data import load_split

        self.split = load_split(dataset, self.root, split)
        self.train = load_split(dataset, self.root, "train") if dataset != "tokyo247" else None
        check_split_images(self.split, backbone, self.image_size)
        from repro.data.datasets import check_evaluable

        # in the recall denominator (as in the paper), counted in each record
        self.num_without_positive = check_evaluable(self.split)
        if self.num_without_positive and log:
            thr = self.split.pos_dist_thr
            log(f"{self.num_without_positive} of {self.split.num_q} {split} queries have no positive database "
                f"image{f' within {thr:g} m' if thr else ''}: they count as failures (every query is in the "
                "recall denominator)")
        self.groups = query_groups(dataset, self.root, split)
        self._maps = None
        self._init = None

    @property
    def maps(self):
        """(database maps, query maps), computed once and cached on disk."""
        if self._maps is None:
            from repro.features import conv_maps

            kw = dict(cache_dir=self.cache_dir, device=self.device, dtype=self.dtype, log=self.log)
            self._maps = (conv_maps(self.spec, self.split.db_paths, self.image_size, **kw),
                          conv_maps(self.spec, self.split.q_paths, self.image_size, **kw))
        return self._maps

    @property
    def init(self) -> dict:
        if self._init is None:
            if self.train is None:
                raise ConfigError(f"{self.dataset} has no training split to initialise NetVLAD from")
            self._init = netvlad_init_cached(self.spec, self.train.db_paths, self.image_size, self.init_images,
                                             self.init_descriptors, self.seed, self.cache_dir, self.device,
                                             log=self.log, **self.netvlad)
        return self._init

    @property
    def alpha_rule(self) -> float:
        return self.init["alpha_rule"]

    def map_shape(self) -> tuple:
        return tuple(self.maps[0].shape[1:])

    def evaluate_netvlad(self, alpha: float, ns=NS) -> tuple[dict, tuple]:
        """(evaluation, (db, q) descriptors) of off-the-shelf NetVLAD at ``alpha``."""
        from repro.features import evaluate_descriptors, netvlad_pool, pool_maps

        pool = netvlad_pool(self.init["centroids"], alpha, assignment=self.netvlad["assignment"])
        db, q = (pool_maps(m, pool) for m in self.maps)
        return evaluate_descriptors(db, q, self.split, ns, self.groups), (db, q)

    def evaluate_fmax(self, grid, ns=NS) -> dict:
        from repro.features import evaluate_descriptors, fmax_pool, pool_maps

        pool = fmax_pool(self.maps[0].shape[1], grid)
        db, q = (pool_maps(m, pool) for m in self.maps)
        return evaluate_descriptors(db, q, self.split, ns, self.groups)

    def training_descriptors(self, pool, max_images: int, seed: int = 0) -> np.ndarray:
        """Pooled descriptors of (at most ``max_images`` random) training
        database images, for fitting PCA whitening as the paper does."""
        from repro.features import conv_maps, pool_maps

        paths = self.train.db_paths
        if len(paths) > max_images:
            idx = np.sort(np.random.default_rng(seed).choice(len(paths), max_images, replace=False))
            paths = [paths[i] for i in idx]
        maps = conv_maps(self.spec, paths, self.image_size, cache_dir=self.cache_dir, device=self.device,
                         dtype=self.dtype, log=self.log)
        return pool_maps(maps, pool)

    def describe(self) -> dict:
        return {"dataset": self.name, "split": self.split_name, "synthetic": self.synthetic,
                "database_images": self.split.num_db, "queries": self.split.num_q,
                "queries_without_positive": self.num_without_positive,
                "backbone": self.backbone, "weights": self.spec.weights, "seed": self.seed,
                "num_clusters": self.num_clusters, "image_size": list(self.image_size) if self.image_size else None,
                "conv_map": list(self.map_shape()), **self.netvlad}


def _rows(evaluation: dict, **fields) -> list[dict]:
    return [{**fields, "dim": evaluation["dim"], "n": int(n), "recall_pct": float(v),
             "num_queries": evaluation["num_queries"]} for n, v in evaluation["recall"].items()]


def _condition_rows(evaluation: dict, **fields) -> list[dict]:
    if not evaluation.get("by_group"):
        return []
    return [{**fields, "condition": g, "n": int(n), "recall_pct": float(v)}
            for g, rec in evaluation["by_group"].items() for n, v in rec.items()]


def rule_alpha(dataset="synthetic", data_root=None, synthetic_preset="default", city_seed=0, backbone="alexnet",
               weights=None, seed=0, num_clusters=16, image_size=None, init_images=300, init_descriptors=20_000,
               device="cpu", cache_dir=None, assignment=None, log=print, **_ignored) -> float:
    """The alpha the paper's rule gives for this configuration (computes and
    caches the NetVLAD initialisation; the pipeline calls this before the sweep)."""
    from repro.data import load_split
    from repro.evaluate import resolve_device

    root = resolve_root(dataset, data_root, synthetic_preset, city_seed)
    train = load_split(dataset, root, "train")
    if device == "auto":
        device = str(resolve_device("auto"))
    init = netvlad_init_cached(_base_spec(backbone, weights, seed, num_clusters), train.db_paths,
                               _image_size(image_size), init_images, init_descriptors, seed, cache_dir, device, log=log,
                               **netvlad_settings(dataset, assignment))
    return init["alpha_rule"]


def run_alpha_point(alpha, train: bool = False, results_dir=None, train_options: dict | None = None,
                    epochs: int | None = None, train_cache_dir=None, log=print, **setup) -> dict:
    """Evaluate off-the-shelf NetVLAD at one ``alpha`` (and, with ``train``,
    train with alpha fixed at that value); write one result file per alpha.

    ``setup``: the keyword arguments of :class:`OffTheShelf`. Returns the
    record (``rows``, ``condition_rows``, ``alpha_rule``, ``path``...).
    """
    from repro.report import write_json

    from repro.atomic import check_writable

    alpha = check_alpha_param(alpha)
    start = time.perf_counter()
    results = check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    ots = OffTheShelf(log=log, **setup)
    path = alpha_sweep_path(results, ots.name, ots.backbone, ots.num_clusters, alpha)
    _check_same_alpha(path, alpha)
    ev, _ = ots.evaluate_netvlad(alpha)
    rule = ots.alpha_rule
    is_rule = math.isclose(alpha, rule, rel_tol=1e-6)
    common = dict(backbone=ots.backbone, pooling="netvlad", alpha=alpha, whitened=False)
    rows = _rows(ev, trained=False, variant="off-the-shelf", **common)
    config = {**ots.describe(), "alpha": alpha, "train": bool(train), "init_images": ots.init_images,
              "init_descriptors": ots.init_descriptors, "ns": list(NS)}
    record = {
        "experiment": "alpha_sweep", "dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic,
        "seed": ots.seed, "alpha": alpha, "alpha_rule": rule, "is_rule_alpha": is_rule, "trained": False,
        "config": config, "rows": rows,
        "condition_rows": _condition_rows(ev, trained=False, **common),
        "seconds": time.perf_counter() - start,
    }
    write_json(path, record)
    record["path"] = path
    out = [record]
    if train:
        out.append(_train_at_alpha(ots, alpha, rule, results, train_options or {}, epochs,
                                   {**setup, "train_cache_dir": train_cache_dir}, log))
    return {"off_the_shelf": out[0], "trained": out[1] if train else None}


def _check_same_alpha(path: Path, alpha: float) -> None:
    """Results are named by alpha to 4 significant digits: refuse to replace
    the file of another alpha that rounds to the same name."""
    if not path.is_file():
        return
    try:
        old = float(json.loads(path.read_text()).get("alpha"))
    except (OSError, ValueError, TypeError):
        return  # unreadable or incomplete: this run replaces it
    if not math.isclose(old, alpha, rel_tol=1e-9):
        raise ConfigError(f"{path} holds the result of alpha={old!r}; alpha={alpha!r} would replace it (result "
                          "files are named by alpha to 4 significant digits). Use an alpha that differs in its "
                          "first 4 significant digits, or another results_dir.")


def _train_at_alpha(ots, alpha, rule, results, train_options, epochs, setup, log) -> dict:
    from repro.report import write_json

    run_name = f"{ots.name}_{ots.backbone}_netvlad_seed{ots.seed}_alpha{alpha_tag(alpha)}"
    # The trainer's own record goes beside the sweep's (not in results/train/,
    # which holds the main training runs of 02).
    config = train_config(dataset=ots.dataset, data_root=setup.get("data_root"),
                          synthetic_preset=setup.get("synthetic_preset", "default"),
                          city_seed=setup.get("city_seed", 0), backbone=ots.backbone, weights=ots.spec.weights,
                          pooling="netvlad", image_size=ots.image_size, epochs=epochs, device=setup.get("device", "cpu"),
                          seed=ots.seed, num_clusters=ots.num_clusters, results_dir=results,
                          cache_dir=setup.get("train_cache_dir"), run_name=run_name,
                          assignment=ots.netvlad["assignment"],
                          options={"alpha": alpha, "test_split": ots.split_name,
                                   "record_path": str(results / "alpha_sweep" / "train" / f"{run_name}.json"),
                                   **train_options})
    from repro.train import train as run_train

    result = run_train(config)
    rec = json.loads(Path(result.record_path).read_text())
    rows = train_rows(rec)
    rows = [r for r in rows if r["trained"]]
    record = {
        "experiment": "alpha_sweep", "dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic,
        "seed": ots.seed, "alpha": alpha, "alpha_rule": rule, "is_rule_alpha": math.isclose(alpha, rule, rel_tol=1e-6),
        "trained": True, "config": {**ots.describe(), "alpha": alpha, "train_record": str(result.record_path)},
        "rows": [{**r, "alpha": alpha} for r in rows], "seconds": result.wall_seconds,
    }
    path = alpha_sweep_path(results, ots.name, ots.backbone, ots.num_clusters, alpha, trained=True)
    write_json(path, record)
    record["path"] = path
    return record


def load_records(results_dir, experiment: str) -> list[dict]:
    """Every JSON record under ``results_dir/experiment/`` (sorted by name)."""
    folder = resolve_dir(results_dir, "results") / experiment
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        rec["path"] = p
        out.append(rec)
    return out


def alpha_sweep_table(results_dir, dataset_name: str | None = None, backbone: str | None = None,
                      num_clusters: int | None = None) -> pd.DataFrame:
    """The alpha sweep so far, tidy: one row per (alpha, trained, n)."""
    rows = []
    for rec in load_records(results_dir, "alpha_sweep"):
        cfg = rec.get("config", {})
        if dataset_name and rec.get("dataset") != dataset_name:
            continue
        if backbone and cfg.get("backbone") != backbone:
            continue
        if num_clusters and cfg.get("num_clusters") != num_clusters:
            continue
        for r in rec["rows"]:
            rows.append({"dataset": rec["dataset"], "synthetic": rec.get("synthetic"), "alpha_rule": rec["alpha_rule"],
                         "is_rule_alpha": rec.get("is_rule_alpha", False), "num_clusters": cfg.get("num_clusters"),
                         **r})
    return pd.DataFrame(rows)


def run_fmax_output_size(grids=(1, 2, 3, 4, 5), whiten_dims=(1024, 512, 256, 128, 64), alpha=None,
                         whiten_fit_images: int = 10_000, results_dir=None, log=print, **setup) -> dict:
    """f_max at each adaptive max-pool grid, and NetVLAD (at ``alpha``, None =
    the rule) with its PCA reductions fitted on training database images
    (whitened, as the paper, and plain PCA for comparison), all off-the-shelf
    on the same base. Writes one result file; returns the record."""
    from repro.features import netvlad_pool, pca_fit, pca_project, evaluate_descriptors
    from repro.report import write_json

    from repro.atomic import check_writable
    from repro.model.fmax import check_output_size

    start = time.perf_counter()
    given_grids = list(grids)
    grids = [check_output_size(g) for g in given_grids]  # before any work: 0 or a negative size is an error
    for d in whiten_dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ConfigError(f"whiten_dims: every dimension must be a positive integer, got {d!r}")
    if alpha is not None:
        alpha = check_alpha_param(alpha)
    check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    ots = OffTheShelf(log=log, **setup)
    h, w = ots.map_shape()[1:]
    rows, cond = [], []
    skipped = []
    common = dict(backbone=ots.backbone, trained=False)
    for gh, gw in grids:
        if gh > h or gw > w:
            skipped.append(f"f_max {gh}x{gw}: the conv map is only {h}x{w}")
            continue
        ev = ots.evaluate_fmax((gh, gw))
        fields = dict(pooling="fmax", variant=f"f_max {gh}x{gw}", grid=f"{gh}x{gw}", whitened=False, alpha=None, **common)
        rows += _rows(ev, **fields)
        cond += _condition_rows({**ev, "dim": ev["dim"]}, dim=ev["dim"], **fields)
    alpha = ots.alpha_rule if alpha is None else alpha
    ev, (db, q) = ots.evaluate_netvlad(alpha)
    fields = dict(pooling="netvlad", variant="NetVLAD", grid=None, whitened=False, alpha=alpha, **common)
    rows += _rows(ev, **fields)
    cond += _condition_rows(ev, dim=ev["dim"], **fields)
    fit = ots.training_descriptors(netvlad_pool(ots.init["centroids"], alpha), whiten_fit_images, seed=ots.seed)
    max_dim = min(fit.shape[0] - 1, fit.shape[1])
    pca = pca_fit(fit, min(max(whiten_dims, default=1), max_dim))
    for d in whiten_dims:
        if d > max_dim:
            skipped.append(f"NetVLAD PCA to {d}-D: needs more than {d} training images (have {fit.shape[0]})")
            continue
        for whiten in (True, False):
            ev_d = evaluate_descriptors(pca_project(pca, db, d, whiten), pca_project(pca, q, d, whiten),
                                        ots.split, NS, ots.groups)
            fields = dict(pooling="netvlad", variant="NetVLAD + PCA-whitening" if whiten else "NetVLAD + PCA",
                          grid=None, whitened=whiten, alpha=alpha, **common)
            rows += _rows(ev_d, **fields)
            cond += _condition_rows(ev_d, dim=ev_d["dim"], **fields)
    for s in skipped:
        log(f"skipped {s}")
    record = {
        "experiment": "fmax_output_size", "dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic,
        "seed": ots.seed, "alpha": alpha, "alpha_rule": ots.alpha_rule,
        "config": {**ots.describe(), "grids": [list(g) if not isinstance(g, int) else g for g in given_grids],
                   "whiten_dims": list(whiten_dims), "whiten_fit_images": int(fit.shape[0]), "alpha": alpha,
                   "ns": list(NS)},
        "rows": rows, "condition_rows": cond, "skipped": skipped, "seconds": time.perf_counter() - start,
    }
    path = fmax_size_path(resolve_dir(results_dir, "results"), ots.name, ots.backbone, ots.num_clusters)
    write_json(path, record)
    record["path"] = path
    return record


# ---------------------------------------------------------------------------
# training (02)


def train_config(dataset="synthetic", data_root=None, synthetic_preset="default", city_seed=0, backbone="alexnet",
                 weights=None, pooling="netvlad", image_size=None, epochs=None, device="cpu", seed=0, num_clusters=None,
                 whiten_dim=None, results_dir=None, cache_dir=None, run_name=None, assignment=None,
                 options: dict | None = None, check: bool = True):
    """A :class:`repro.train.TrainConfig` from the notebooks' parameters:
    ``TrainConfig.synthetic_default`` on the synthetic city, else
    ``TrainConfig.paper``; ``options`` sets any other field."""
    from repro.train import TrainConfig

    name = dataset_label(dataset, synthetic_preset, city_seed, data_root)
    run_name = run_name or train_run_name(name, backbone, pooling, seed)
    results = resolve_dir(results_dir, "results")
    cache = resolve_dir(cache_dir, "cache/train")
    fields = dict(backbone=backbone, weights=None if weights in (None, "none", "None") else weights, pooling=pooling,
                  image_size=_image_size(image_size), device=device, seed=int(seed), ns=NS, select_n=5,
                  run_name=run_name, record_path=str(train_record_path(results, run_name)),
                  out_dir=str(cache / run_name), progress=False, verbose=True)
    if epochs is not None:
        fields["epochs"] = int(epochs)
    if num_clusters is not None:
        fields["num_clusters"] = int(num_clusters)
    if whiten_dim is not None and pooling == "netvlad":  # the paper whitens NetVLAD (f_VLAD+white) only
        fields["whiten_dim"] = int(whiten_dim)
    if assignment is not None:
        fields["assignment"] = assignment
    fields.update(options or {})
    if dataset == "synthetic":
        cfg = TrainConfig.synthetic_default(synthetic_preset=synthetic_preset, city_seed=int(city_seed),
                                            data_root=str(data_root) if data_root else None, **fields)
    else:
        cfg = TrainConfig.paper(dataset=dataset, data_root=str(resolve_root(dataset, data_root)), **fields)
    return check_train_config(cfg) if check else cfg.validate()


# the notebook parameters that go into a training run's TrainConfig (02, and 03 with train=True)
TRAIN_PARAMS = ("dataset", "data_root", "synthetic_preset", "city_seed", "backbone", "weights", "image_size",
                "epochs", "device", "seed", "num_clusters", "whiten_dim", "assignment")


def planned_train_configs(notebook: str, params: dict) -> list:
    """The :class:`repro.train.TrainConfig` of every training run a notebook
    run would start (02: one per pooling; 03 with ``train``: NetVLAD at its
    alpha), from its complete parameters (absolute paths), without touching
    data: the pipeline checks them all before the first notebook starts."""
    stem = Path(notebook).name[:2]
    kw = {k: params[k] for k in TRAIN_PARAMS if k in params}
    if stem == "02":
        return [train_config(pooling=p, results_dir=params.get("results_dir"), cache_dir=params.get("cache_dir"),
                             options=params.get("train_options"), check=False, **kw)
                for p in params.get("poolings", [])]
    if stem == "03" and params.get("train") and params.get("alpha") not in (None, "rule"):
        kw.pop("whiten_dim", None)
        return [train_config(pooling="netvlad", results_dir=params.get("results_dir"),
                             cache_dir=params.get("train_cache_dir"),
                             options={"alpha": float(params["alpha"]), **(params.get("train_options") or {})},
                             check=False, **kw)]
    return []


def check_train_config(cfg):
    """``cfg.validate()`` plus what training would otherwise find out late:
    the model options (an alpha of 0, an f_max grid of 0, an unknown
    backbone or pooling) and output folders that cannot be written."""
    from repro.atomic import check_writable
    from repro.model.place_model import check_model_options

    cfg.validate()
    check_model_options(cfg.backbone, cfg.pooling, cfg.alpha, cfg.fmax_output_size)
    out_dir, record = cfg.paths()
    check_writable(out_dir, what="checkpoints (out_dir)")
    check_writable(record.parent, what=f"the training record ({record.name})")
    return cfg


def record_test_sets(record: dict) -> list[dict]:
    """Where a trainer record was tested: its own test split (``test_set``
    None) and every ``test_on`` set (e.g. Tokyo 24/7 for a TokyoTM run), each
    ``{"test_set", "dataset" (label), "split", "synthetic"}``."""
    cfg = record.get("config") or {}
    from repro.results import _train_dataset_label

    out = []
    if record.get("test") or record.get("test_untrained"):
        out.append({"test_set": None, "dataset": _train_dataset_label(record), "split": cfg.get("test_split") or "test",
                    "synthetic": bool(record.get("synthetic", False))})
    for name, t in (record.get("test_on") or {}).items():
        # the record's own synthetic flag: its data_root may be relative to another clone
        out.append({"test_set": name, "dataset": f"synthetic_{t['dataset']}" if t.get("synthetic") else t["dataset"],
                    "split": t.get("split", "test"), "synthetic": bool(t.get("synthetic", False))})
    return out


def train_rows(record: dict, test_set: str | None = None) -> list[dict]:
    """Tidy recall rows of a trainer record: untrained (epoch 0), trained
    (best epoch) and, if present, trained + PCA whitening; on the run's own
    test split, or with ``test_set`` on that ``test_on`` set."""
    from repro.model.backbone import backbone_channels

    mc = record.get("model_config") or {}
    cfg = record.get("config") or {}
    backbone = mc.get("backbone", cfg.get("backbone"))
    pooling = mc.get("pooling", cfg.get("pooling"))
    d = backbone_channels(backbone)
    if pooling == "netvlad":
        dim = int(mc.get("num_clusters", cfg.get("num_clusters", 64))) * d
        alpha = (record.get("init") or {}).get("alpha", mc.get("alpha"))
    else:
        gh, gw = mc.get("fmax_output_size", cfg.get("fmax_output_size", [1, 1]))
        dim, alpha = d * gh * gw, None
    grid = None if pooling == "netvlad" else "x".join(str(v) for v in mc.get("fmax_output_size", [1, 1]))
    out = []
    source = record if test_set is None else {f"test{k}": v for k, v in (
        ("_untrained", record["test_on"][test_set].get("untrained")), ("", record["test_on"][test_set].get("trained")),
        ("_whitened", record["test_on"][test_set].get("whitened")))}
    for key, trained, whitened, dm, variant in (
            ("test_untrained", False, False, dim, "off-the-shelf"),
            ("test", True, False, dim, "trained"),
            ("test_whitened", True, True, cfg.get("whiten_dim"), "trained + PCA-whitening")):
        res = source.get(key)
        if not res:
            continue
        for n, v in res["recall"].items():
            out.append({"backbone": backbone, "pooling": pooling, "dim": dm, "trained": trained, "whitened": whitened,
                        "alpha": alpha, "variant": variant, "grid": grid, "n": int(n), "recall_pct": float(v),
                        "num_queries": res.get("num_queries")})
    return out


def run_training(poolings=("netvlad", "fmax"), reuse_existing: bool = True, results_dir=None, cache_dir=None,
                 options: dict | None = None, log=print, **params) -> list[dict]:
    """Train (or, with ``reuse_existing``, reuse a complete record with the
    same configuration) each pooling; returns the trainer records."""
    from repro.train import train as run_train

    records = []
    configs = [train_config(pooling=pooling, results_dir=results_dir, cache_dir=cache_dir, options=options, **params)
               for pooling in poolings]  # all checked before the first run starts
    for cfg in configs:
        path = Path(cfg.record_path)
        if reuse_existing and record_complete(path):
            rec = json.loads(path.read_text())
            from repro.train.trainer import portable_config

            # records store paths relative to the repository; those written before did not
            if rec.get("config") in (json.loads(json.dumps(portable_config(cfg))), json.loads(json.dumps(cfg.to_dict()))):
                log(f"{cfg.resolved_run_name()}: reusing the complete record {path}")
                rec["path"] = path
                records.append(rec)
                continue
            log(f"{cfg.resolved_run_name()}: the record at {path} has other settings; training again")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*randomly initialised.*")
            result = run_train(cfg)
        rec = json.loads(Path(result.record_path).read_text())
        rec["path"] = Path(result.record_path)
        records.append(rec)
    return records


def training_table(records: list[dict]) -> pd.DataFrame:
    """Recall@N of every trainer record, tidy (one row per model and N)."""
    from repro.results import _train_dataset_label

    rows = []
    for rec in records:
        for t in record_test_sets(rec):
            for r in train_rows(rec, t["test_set"]):
                rows.append({"dataset": t["dataset"], "split": t["split"], "synthetic": t["synthetic"],
                             "trained_on": _train_dataset_label(rec), "run": rec["run_name"], **r})
    return pd.DataFrame(rows)


def training_history(records: list[dict]) -> pd.DataFrame:
    """Per epoch: loss and val recall@N of every record (epoch 0 = untrained)."""
    rows = []
    for rec in records:
        pooling = (rec.get("model_config") or rec["config"]).get("pooling")
        for e in rec.get("epochs", []):
            base = {"run": rec["run_name"], "pooling": pooling, "epoch": e["epoch"], "loss": e.get("loss"),
                    "seconds": e.get("seconds")}
            for n, v in (e.get("val") or {}).get("recall", {}).items():
                rows.append({**base, "n": int(n), "val_recall_pct": float(v)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# generated narrative: sentences with the numbers of a run


def _r(rows: pd.DataFrame, n: int) -> float | None:
    v = rows.loc[rows["n"] == n, "recall_pct"]
    return float(v.iloc[0]) if len(v) else None


def describe_training(table: pd.DataFrame) -> str:
    """One line per pooling: recall@1/5/10 off-the-shelf -> trained."""
    lines = []
    for (backbone, pooling), g in table.groupby(["backbone", "pooling"]):
        a, b = g[g["variant"] == "off-the-shelf"], g[g["variant"] == "trained"]
        name = "NetVLAD" if pooling == "netvlad" else "f_max"
        fmt = lambda r: "/".join(f"{_r(r, n):.1f}" if _r(r, n) is not None else "-" for n in (1, 5, 10))  # noqa: E731
        lines.append(f"{backbone} + {name}: R@1/5/10 off-the-shelf {fmt(a)} -> trained {fmt(b)}"
                     + (f" ({_r(b, 1) - _r(a, 1):+.1f} points at R@1)" if _r(a, 1) is not None and _r(b, 1) is not None else ""))
    return "\n".join(lines)


def describe_alpha_sweep(sweep: pd.DataFrame, threshold: float = 0.1) -> str:
    """Best alpha, the rule's alpha and its recall, and how flat R@1 is above ``threshold``."""
    out = []
    for trained, g in sweep.groupby("trained"):
        r1 = g[g["n"] == 1].sort_values("alpha")
        if r1.empty:
            continue
        kind = "trained" if trained else "off-the-shelf"
        best = r1.loc[r1["recall_pct"].idxmax()]
        out.append(f"{kind}: {r1['alpha'].nunique()} alphas from {r1['alpha'].min():.3g} to {r1['alpha'].max():.3g}; "
                   f"best R@1 {best['recall_pct']:.1f} at alpha {best['alpha']:.3g}")
        rule = r1[r1["is_rule_alpha"].astype(bool)]
        if not rule.empty:
            out.append(f"  at the rule's alpha ({rule['alpha'].iloc[0]:.3g}): R@1 {rule['recall_pct'].iloc[0]:.1f}")
        hi = r1[r1["alpha"] >= threshold]["recall_pct"]
        lo = r1[r1["alpha"] < threshold]["recall_pct"]
        if len(hi) > 1:
            out.append(f"  R@1 for alpha >= {threshold:g}: {hi.min():.1f} to {hi.max():.1f} (range {hi.max() - hi.min():.1f} points)"
                       + (f"; below {threshold:g}: {lo.min():.1f} to {lo.max():.1f}" if len(lo) else ""))
    return "\n".join(out)


def describe_dimension(rows: pd.DataFrame, n: int = 1) -> str:
    """At each dimension where f_max and a NetVLAD reduction both exist: recall@n of each."""
    r = rows[rows["n"] == n]
    fm = r[r["pooling"] == "fmax"].set_index("dim")["recall_pct"]
    out = []
    for v in ("NetVLAD + PCA-whitening", "NetVLAD + PCA"):
        g = r[r["variant"] == v].set_index("dim")["recall_pct"]
        common = sorted(set(g.index) & set(fm.index))
        if common:
            out.append(f"R@{n} at equal dimension, {v} vs f_max: "
                       + ", ".join(f"{int(d)}-D {g[d]:.1f} vs {fm[d]:.1f}" for d in common))
    w = r[r["variant"] == "NetVLAD + PCA-whitening"].set_index("dim")["recall_pct"]
    p = r[r["variant"] == "NetVLAD + PCA"].set_index("dim")["recall_pct"]
    common = sorted(set(w.index) & set(p.index))
    if common:
        out.append(f"R@{n}, PCA-whitened vs PCA only: " + ", ".join(f"{int(d)}-D {w[d]:.1f} vs {p[d]:.1f}" for d in common))
    full = r[r["variant"] == "NetVLAD"]
    if not full.empty:
        out.append(f"R@{n} of the full {int(full['dim'].iloc[0])}-D NetVLAD: {full['recall_pct'].iloc[0]:.1f}")
    return "\n".join(out)
