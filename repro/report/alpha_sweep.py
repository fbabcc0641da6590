"""Report step 03 (``notebooks/03_alpha_sweep.ipynb``): NetVLAD's alpha, off-the-shelf (and trained).

:func:`run_alpha_point` evaluates one alpha (the pipeline sweeps a log-spaced
list plus the alpha of the paper's rule, :func:`repro.report.off_the_shelf.rule_alpha`)
and writes one result file per alpha; with ``train`` it also trains NetVLAD
with alpha fixed at that value. :func:`alpha_sweep_table` gathers the sweep.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from repro.errors import ConfigError
from repro.report.names import (
    NS,
    alpha_sweep_path,
    alpha_tag,
    load_records,
    resolve_dir,
)
from repro.report.off_the_shelf import OffTheShelf, _condition_rows, _rows
from repro.report.parameters import check_alpha_param
from repro.report.training import train_config, train_rows


# Two alphas within this relative difference are one alpha (the rule's alpha is recognised, and replaces
# its own result file, across last-bit differences of the k-means it comes from).
SAME_ALPHA = 1e-6


def run_alpha_point(alpha, train: bool = False, results_dir=None, train_options: dict | None = None,
                    epochs: int | None = None, train_cache_dir=None, log=print, **setup) -> dict:
    """Evaluate off-the-shelf NetVLAD at one ``alpha`` (and, with ``train``,
    train with alpha fixed at that value); write one result file per alpha.

    ``setup``: the keyword arguments of :class:`OffTheShelf`. Returns the
    record (``rows``, ``condition_rows``, ``alpha_rule``, ``path``...).
    """
    from repro.atomic import check_writable, write_json

    alpha = check_alpha_param(alpha)
    start = time.perf_counter()
    results = check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    ots = OffTheShelf(log=log, **setup)
    path = alpha_sweep_path(results, ots.name, ots.backbone, ots.num_clusters, alpha)
    _check_same_alpha(path, alpha)
    ev, _ = ots.evaluate_netvlad(alpha)
    rule = ots.alpha_rule
    is_rule = math.isclose(alpha, rule, rel_tol=SAME_ALPHA)
    common = dict(backbone=ots.backbone, pooling="netvlad", alpha=alpha, whitened=False)
    rows = _rows(ev, trained=False, variant="off-the-shelf", **common)
    config = {**ots.describe(), "alpha": alpha, "train": bool(train), "init_images": ots.init_images,
              "init_descriptors": ots.init_descriptors, "ns": list(NS)}
    record = {
        "experiment": "alpha_sweep", "dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic,
        "seed": ots.seed, "alpha": alpha, "alpha_rule": rule, "is_rule_alpha": is_rule, "trained": False,
        "config": config, "rows": rows,
        "condition_rows": _condition_rows(ev, trained=False, **common),
        "ranks": ev["ranks"],  # per test query, for the claims' intervals
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
    # the same alpha to SAME_ALPHA: the rule's alpha, recomputed from a fresh k-means (another CPU or
    # thread count), moves in its last bits and must replace its own file under --force
    if not math.isclose(old, alpha, rel_tol=SAME_ALPHA):
        raise ConfigError(f"{path} holds the result of alpha={old!r}; alpha={alpha!r} would replace it (result "
                          "files are named by alpha to 4 significant digits). Use an alpha that differs in its "
                          "first 4 significant digits, or another results_dir.")


def _train_at_alpha(ots, alpha, rule, results, train_options, epochs, setup, log) -> dict:
    from repro.atomic import write_json

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
        "seed": ots.seed, "alpha": alpha, "alpha_rule": rule, "is_rule_alpha": math.isclose(alpha, rule, rel_tol=SAME_ALPHA),
        "trained": True, "config": {**ots.describe(), "alpha": alpha, "train_record": str(result.record_path)},
        "rows": [{**r, "alpha": alpha} for r in rows], "seconds": result.wall_seconds,
    }
    path = alpha_sweep_path(results, ots.name, ots.backbone, ots.num_clusters, alpha, trained=True)
    write_json(path, record)
    record["path"] = path
    return record


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
