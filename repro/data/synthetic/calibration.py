"""Difficulty calibration of the synthetic city (issue: "a real test").

Evaluates untrained baselines on a split of the synthetic city and writes
recall@N overall and per query condition to one tidy CSV:

    raw pixels      32x24 colour thumbnails, L2-normalised (no CNN)
    alexnet+netvlad random AlexNet (no ImageNet weights offline), K=64,
                    centroids from 500 training images, alpha by the rule
    alexnet+fmax    random AlexNet, f_max 1x1
    vgg16+netvlad   random VGG-16, as above
    vgg16+fmax

Each method's per-query ranks (1-based rank of the first true match, -1
for none) go beside the CSV, in ``{stem}_ranks.json`` (``{"ranks": {method:
[Q]}}``), so the claims can put intervals on these numbers.

The targets: NetVLAD on the random AlexNet between 15% and 70% recall@1,
nothing at 99%, recall differing clearly by condition. Run with
``python -m repro calibrate-city``. Numbers are synthetic.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from repro.atomic import atomic_write_text, write_json
from repro.data.datasets import load_split
from repro.data.images import load_rgb8
from repro.data.synthetic import (
    default_city_root,
    load_query_conditions,
    make_synthetic_city,
)
from repro.evaluate import evaluate_split, init_netvlad_from_images
from repro.metrics import recall_at_n, recall_by_group
from repro.model import build_model
from repro.model.init import FAISS_DEFAULT_KMEANS
from repro.paths import git_commit

NS = (1, 5, 10, 20)
MODELS = [("alexnet", "netvlad"), ("alexnet", "fmax"), ("vgg16", "netvlad"), ("vgg16", "fmax")]


def thumbnails(paths, size=(32, 24)) -> np.ndarray:
    """[N, 3*w*h] L2-normalised colour thumbnails (a no-learning baseline)."""
    x = np.stack([np.asarray(load_rgb8(p).resize(size, Image.Resampling.BILINEAR), dtype=np.float32).ravel()
                  for p in paths])
    x -= x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rows(method, backbone, pooling, dim, ranks, overall, conditions, seed):
    rows = [dict(method=method, backbone=backbone, pooling=pooling, dim=dim, condition="all", n=n,
                 recall_pct=overall[n], num_queries=len(ranks), seed=seed) for n in NS]
    counts = pd.Series(conditions).value_counts()
    for cond, rec in recall_by_group(ranks, conditions, NS).items():
        rows += [dict(method=method, backbone=backbone, pooling=pooling, dim=dim, condition=cond, n=n,
                      recall_pct=rec[n], num_queries=int(counts[cond]), seed=seed) for n in NS]
    return rows


def calibrate_city(preset: str = "default", city_seed: int = 0, split: str = "test", seed: int = 0,
                   models=MODELS, out: str | None = None, device="cpu", root=None) -> pd.DataFrame:
    """Evaluate the untrained baselines; write and return the tidy table.

    ``root``: an existing city (default: the cached one for preset and seed).
    """
    root = make_synthetic_city(root or default_city_root(preset, city_seed), preset=preset, seed=city_seed)
    test = load_split("synthetic", root, split)
    train = load_split("synthetic", root, "train")
    conditions = load_query_conditions(root, split)["condition"].to_numpy()
    rows = []
    ranks = {}
    t0 = time.perf_counter()
    q, db = thumbnails(test.q_paths), thumbnails(test.db_paths)
    details = recall_at_n(q, db, test.positives, ns=NS, return_details=True)
    rows += _rows("raw pixels 32x24", "none", "thumbnail", q.shape[1], details.ranks, details.recall, conditions, seed)
    ranks["raw pixels 32x24"] = np.asarray(details.ranks).tolist()
    print(f"raw pixels: R@1 {details.recall[1]:.1f}  ({time.perf_counter() - t0:.0f} s)")
    for backbone, pooling in models:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights are the point (no ImageNet offline)
            model = build_model(backbone, pooling, weights=None)
        if pooling == "netvlad":
            init_netvlad_from_images(model, train.db_paths, num_images=500, device=device, seed=seed,
                                     **FAISS_DEFAULT_KMEANS)
        result = evaluate_split(model, test, ns=NS, device=device)
        rows += _rows(f"random {backbone} + {pooling}", backbone, pooling, result["dim"], result["ranks"],
                      result["recall"], conditions, seed)
        ranks[f"random {backbone} + {pooling}"] = np.asarray(result["ranks"]).tolist()
        print(f"random {backbone} + {pooling}: R@1 {result['recall'][1]:.1f}  ({time.perf_counter() - t0:.0f} s)")
    table = pd.DataFrame(rows)
    table.insert(0, "dataset", f"synthetic_{preset}_seed{city_seed}_{split}")
    table["trained"] = False
    table["git_commit"] = git_commit()
    out = Path(out or Path("results") / "calibration" / f"synthetic_{preset}_seed{city_seed}_{split}.csv")
    write_json(ranks_path(out), {"git_commit": table["git_commit"].iloc[0], "dataset": table["dataset"].iloc[0],
                                 "conditions": [str(c) for c in conditions], "ranks": ranks})
    atomic_write_text(out, table.to_csv(index=False))
    print(f"wrote {out} and {ranks_path(out).name}")
    return table


def ranks_path(csv_path) -> Path:
    """The per-query ranks file beside a calibration CSV."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}_ranks.json")
