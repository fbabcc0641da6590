"""Untrained models on cached conv maps: what 03 (alpha sweep) and 04 (f_max output size) evaluate.

:class:`OffTheShelf` holds one untrained base on one dataset: the cached
conv maps of the evaluated split (:mod:`repro.report.conv_maps`) and the
NetVLAD initialisation from training database images
(:func:`netvlad_init_cached`, cached on disk), built as the trainer builds
the model it starts from, so the off-the-shelf NetVLAD at the rule's alpha
is the untrained model of 02.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from repro.data.datasets import is_synthetic
from repro.errors import ConfigError
from repro.report.data_prep import query_groups, resolve_root
from repro.report.names import NS, _image_size, dataset_label


def _base_spec(backbone, weights, seed, num_clusters):
    from repro.report.conv_maps import BaseSpec

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
    from repro.model import alpha_from_ratio, fit_centroids, sample_local_descriptors
    from repro.report.conv_maps import build_base, cache_key, default_cache_dir

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
            from repro.report.conv_maps import conv_maps

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
        from repro.report.conv_maps import evaluate_descriptors, netvlad_pool, pool_maps

        pool = netvlad_pool(self.init["centroids"], alpha, assignment=self.netvlad["assignment"])
        db, q = (pool_maps(m, pool) for m in self.maps)
        return evaluate_descriptors(db, q, self.split, ns, self.groups), (db, q)

    def evaluate_fmax(self, grid, ns=NS) -> dict:
        from repro.report.conv_maps import evaluate_descriptors, fmax_pool, pool_maps

        pool = fmax_pool(self.maps[0].shape[1], grid)
        db, q = (pool_maps(m, pool) for m in self.maps)
        return evaluate_descriptors(db, q, self.split, ns, self.groups)

    def training_descriptors(self, pool, max_images: int, seed: int = 0) -> np.ndarray:
        """Pooled descriptors of (at most ``max_images`` random) training
        database images, for fitting PCA whitening as the paper does."""
        from repro.report.conv_maps import conv_maps, pool_maps

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


def _rows(evaluation: dict, **fields) -> list[dict]:
    return [{**fields, "dim": evaluation["dim"], "n": int(n), "recall_pct": float(v),
             "num_queries": evaluation["num_queries"]} for n, v in evaluation["recall"].items()]


def _condition_rows(evaluation: dict, **fields) -> list[dict]:
    if not evaluation.get("by_group"):
        return []
    return [{**fields, "condition": g, "n": int(n), "recall_pct": float(v)}
            for g, rec in evaluation["by_group"].items() for n, v in rec.items()]
