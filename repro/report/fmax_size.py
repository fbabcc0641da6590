"""Report step 04 (``notebooks/04_fmax_output_size.ipynb``): recall against descriptor size.

f_max at each adaptive max-pool grid, and NetVLAD with its PCA reductions
(whitened, as the paper, and plain PCA), all off-the-shelf on one base;
one result file per configuration.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from repro.errors import ConfigError
from repro.report.names import NS, fmax_size_path, resolve_dir
from repro.report.off_the_shelf import OffTheShelf, _condition_rows, _rows
from repro.report.parameters import check_alpha_param


def run_fmax_output_size(grids=(1, 2, 3, 4, 5), whiten_dims=(1024, 512, 256, 128, 64), alpha=None,
                         whiten_fit_images: int = 10_000, results_dir=None, log=print, **setup) -> dict:
    """f_max at each adaptive max-pool grid, and NetVLAD (at ``alpha``, None =
    the rule) with its PCA reductions fitted on training database images
    (whitened, as the paper, and plain PCA for comparison), all off-the-shelf
    on the same base. Writes one result file; returns the record."""
    from repro.atomic import check_writable, write_json
    from repro.model.fmax import check_output_size
    from repro.report.conv_maps import (
        evaluate_descriptors,
        netvlad_pool,
        pca_fit,
        pca_project,
    )

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
    ranks = []  # per variant and dimension: each test query's rank, for the claims' intervals
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
        ranks.append({"variant": fields["variant"], "dim": ev["dim"], "ranks": ev["ranks"]})
    alpha = ots.alpha_rule if alpha is None else alpha
    ev, (db, q) = ots.evaluate_netvlad(alpha)
    fields = dict(pooling="netvlad", variant="NetVLAD", grid=None, whitened=False, alpha=alpha, **common)
    rows += _rows(ev, **fields)
    cond += _condition_rows(ev, dim=ev["dim"], **fields)
    ranks.append({"variant": fields["variant"], "dim": ev["dim"], "ranks": ev["ranks"]})
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
            ranks.append({"variant": fields["variant"], "dim": ev_d["dim"], "ranks": ev_d["ranks"]})
    for s in skipped:
        log(f"skipped {s}")
    record = {
        "experiment": "fmax_output_size", "dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic,
        "seed": ots.seed, "alpha": alpha, "alpha_rule": ots.alpha_rule,
        "config": {**ots.describe(), "grids": [list(g) if not isinstance(g, int) else g for g in given_grids],
                   "whiten_dims": list(whiten_dims), "whiten_fit_images": int(fit.shape[0]), "alpha": alpha,
                   "ns": list(NS)},
        "rows": rows, "condition_rows": cond, "query_ranks": ranks, "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    path = fmax_size_path(resolve_dir(results_dir, "results"), ots.name, ots.backbone, ots.num_clusters)
    write_json(path, record)
    record["path"] = path
    return record


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
