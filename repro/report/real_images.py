"""Report step 07 (``notebooks/07_real_images.ipynb``): the real-photograph track.

Three small real image sets in the VPR-Bench layout (``../shared/data/real``,
absent in a user's fresh clone: every step then says "skipped: ... absent"):

    gardens_point_night      day reference -> night queries   (200 ref / 199 queries)
    gardens_point_day_left   lateral viewpoint change         (200 / 200)
    nordland_summer_winter   season change, 64x32 frames      (3356 / 3356)

Everything here runs on the default profile's random-init (seeded) AlexNet,
the base the synthetic runs use: there are no ImageNet weights offline. All
results are labelled "real images, random-init base" and ``synthetic``
False; they are never drawn in one panel with a synthetic curve.

- :func:`run_off_the_shelf`: NetVLAD (centroids and alpha fitted on the
  synthetic city's training database, as 02/03 do; and, labelled
  transductive, on the evaluated set's reference images), f_max 1x1, f_max
  with the best grid of 04 and a raw-pixel baseline. Never on the queries.
- :func:`run_alpha_sweep`: NetVLAD's alpha on one set (re-pooling cached conv maps).
- :func:`run_sim_to_real`: 02's networks trained on the synthetic city
  (``best.pt``, safe loader) against their own untrained starting points.

Records (``results/real_images/{experiment}_{set}.json``, written atomically)
hold config, where things were fitted, git commit, tidy ``rows`` (each with a
``ranks_key``) and ``"ranks"``: key -> the per-query 1-based rank of the
first true match (-1 beyond the searched depth, max N = 25), as
:func:`repro.metrics.recall_at_n` returns them.
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from repro.errors import ConfigError
from repro.paths import rel
from repro.report.names import NS, REAL_SETS, alpha_tag, read_json, resolve_dir
from repro.report.names import real_images_path as real_record_path

LABEL = "real images, random-init base"
CONDITION = {"gardens_point_night": "day ref -> night queries", "gardens_point_day_left": "viewpoint (left vs right)",
             "nordland_summer_winter": "summer ref -> winter queries"}
QUERY_CONDITION = {"gardens_point_night": "night", "gardens_point_day_left": "day, left side",
                   "nordland_summer_winter": "winter"}
EXPERIMENTS = ("real_off_the_shelf", "alpha_sweep", "sim_to_real")
SAME_ALPHA = 1e-6  # as repro.report.alpha_sweep: the rule's alpha across last-bit differences


# ---------------------------------------------------------------------------
# the data, and where things are fitted


@dataclass
class RealContext:
    """The real sets found and the synthetic fit/training setting (see :func:`prepare`)."""

    real_root: Path
    splits: dict                      # set name -> PlaceSplit (ref = database, query = queries)
    skipped: list                     # "skipped: ..." lines for absent sets
    setup: dict                       # backbone, weights, seed, num_clusters, image_size, device, cache dirs, ...
    fit_name: str = ""                # dataset label of the fit data, e.g. synthetic_default_seed0
    fit_paths: list = field(default_factory=list)   # its training database images (centroids, alpha)
    init: dict | None = None          # {"centroids" [K, D], "alpha_rule", "num_descriptors"}
    descriptors: dict = field(default_factory=dict)  # set -> key -> (db [N, D], q [Q, D]), for the retrieval figures

    @property
    def available(self) -> bool:
        return bool(self.splits)


def find_sets(real_root, sets=REAL_SETS) -> tuple[dict, list]:
    """({name: PlaceSplit} of the sets present under ``real_root``, ["skipped: ..."] for the others).

    A set is present when its folder holds ``ground_truth_new.npy``; a folder
    that exists but is malformed raises (DatasetError naming the file)."""
    from repro.data import load_split

    root = Path(real_root).expanduser()
    found, skipped = {}, []
    for name in sets:
        folder = root / name
        if not (folder / "ground_truth_new.npy").is_file():
            skipped.append(f"skipped: {name}: {rel(folder)} absent (real images live beside the project in "
                           "../shared/data/real, never in the repository; a fresh clone has none)")
            continue
        found[name] = load_split("vprbench", folder)
    return found, skipped


def prepare(real_root, sets=REAL_SETS, dataset="synthetic", synthetic_preset="default", city_seed=0,
            backbone="alexnet", weights=None, seed=0, num_clusters=16, image_size=(96, 128), init_images=300,
            init_descriptors=20_000, assignment=None, device="cpu", cache_dir=None, fit_root=None,
            log=print) -> RealContext:
    """Find the real sets; fit (or read from the cache) the main NetVLAD
    initialisation on the synthetic city's *training database* (the same
    k-means and alpha rule 02 starts from, :func:`netvlad_init_cached`).

    ``fit_root``: the synthetic city's folder (None: generated or reused under
    ``cache/synthetic/``, as 01/02 do). Nothing is fitted when no set is
    present (``ctx.available`` False)."""
    from repro.report.off_the_shelf import _base_spec, netvlad_init_cached, netvlad_settings

    unknown = [s for s in sets if s not in REAL_SETS]
    if unknown:
        raise ConfigError(f"real_sets: unknown set(s) {unknown}; known: {list(REAL_SETS)}")
    splits, skipped = find_sets(real_root, sets)
    for s in skipped:
        log(s)
    setup = dict(dataset=dataset, synthetic_preset=synthetic_preset, city_seed=int(city_seed), backbone=backbone,
                 weights=weights, seed=int(seed), num_clusters=int(num_clusters),
                 image_size=tuple(int(v) for v in image_size), init_images=int(init_images),
                 init_descriptors=int(init_descriptors), device=device, cache_dir=cache_dir,
                 **netvlad_settings(dataset, assignment))
    ctx = RealContext(Path(real_root), splits, skipped, setup)
    if not splits:
        log(f"skipped: no real image set under {rel(real_root)} ({', '.join(sets)} absent): nothing to evaluate")
        return ctx
    from repro.data import load_split
    from repro.report.data_prep import resolve_root
    from repro.report.names import dataset_label

    root = resolve_root(dataset, fit_root, synthetic_preset, city_seed)
    ctx.fit_name = dataset_label(dataset, synthetic_preset, city_seed, root)
    ctx.fit_paths = list(load_split(dataset, root, "train").db_paths)
    ctx.init = netvlad_init_cached(_base_spec(backbone, weights, seed, num_clusters), ctx.fit_paths, setup["image_size"],
                                   init_images, init_descriptors, seed, cache_dir, device, log=log,
                                   **_kmeans(setup))
    for name, split in splits.items():
        log(f"{name} ({CONDITION[name]}): {split.num_db} reference, {split.num_q} query images; "
            f"{sum(len(p) for p in split.positives) / split.num_q:.1f} true matches per query")
    return ctx


def _kmeans(setup: dict) -> dict:
    return {k: setup[k] for k in ("assignment", "kmeans_iterations", "kmeans_points_per_centroid")}


def _spec(setup: dict, seed=None):
    from repro.report.off_the_shelf import _base_spec

    return _base_spec(setup["backbone"], setup["weights"], setup["seed"] if seed is None else seed, setup["num_clusters"])


def _fit_info(paths, query_paths, what: str, on: str, num_images: int, num_descriptors: int, transductive: bool) -> dict:
    """Where a model part was fitted: the image folder(s), how many images, and
    how many of the evaluated *query* images are among them (must be 0)."""
    resolved = {str(Path(p).resolve()) for p in paths}
    queries = {str(Path(p).resolve()) for p in query_paths}
    folders = sorted({rel(Path(p).parent) for p in paths})
    return {"what": what, "on": on, "folders": folders, "num_candidate_images": len(resolved),
            "num_images": int(num_images), "num_descriptors": int(num_descriptors), "transductive": transductive,
            "query_images_among_them": len(resolved & queries),
            "images_sha": hashlib.sha256("\n".join(sorted(resolved)).encode()).hexdigest()[:16]}


# ---------------------------------------------------------------------------
# raw pixels


def raw_pixel_descriptors(paths, size=(24, 32)) -> np.ndarray:
    """``[N, H*W]`` float32 grayscale thumbnails, zero-mean and unit-norm.

    Each image becomes 8-bit RGB (:func:`repro.data.images.load_rgb8`), then
    grayscale (ITU-R 601 luma, PIL's "L"), then ``size`` = (H, W) pixels
    (bilinear, PIL's antialiased resize); its mean is subtracted and it is
    divided by its L2 norm. For such vectors ``|a - b|^2 = 2 - 2 NCC(a, b)``:
    L2 retrieval is normalised cross-correlation, as in the data README's
    sanity check. A constant image stays all zeros.
    """
    from PIL import Image

    from repro.data.images import load_rgb8

    h, w = (int(v) for v in size)
    out = np.empty((len(paths), h * w), dtype=np.float64)
    for i, p in enumerate(paths):
        g = load_rgb8(p).convert("L").resize((w, h), Image.Resampling.BILINEAR)
        out[i] = np.asarray(g, dtype=np.float64).ravel()
    out -= out.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norm, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------
# evaluation helpers


def _evaluate(db, q, split) -> dict:
    from repro.report.conv_maps import evaluate_descriptors

    return evaluate_descriptors(db, q, split, NS)


def _rows(ev: dict, ranks_key: str, **fields) -> list[dict]:
    return [{**fields, "dim": ev["dim"], "n": int(n), "recall_pct": float(v), "num_queries": ev["num_queries"],
             "ranks_key": ranks_key} for n, v in ev["recall"].items()]


def best_fmax_grid(results_dir, fit_name: str, backbone: str, num_clusters: int, n: int = 5):
    """The f_max grid of 04's record (``results_dir/fmax_output_size``) with the
    best recall@``n`` (ties: the smaller descriptor), and a sentence saying so;
    (None, why) when the record is absent."""
    from repro.report.names import fmax_size_path

    path = fmax_size_path(resolve_dir(results_dir, "results"), fit_name, backbone, num_clusters)
    rec = read_json(path)
    if not rec:
        return None, f"no f_max output-size record {rel(path)} (run 04): only f_max 1x1"
    r = pd.DataFrame(rec["rows"])
    r = r[(r["pooling"] == "fmax") & (r["n"] == n)].sort_values(["recall_pct", "dim"], ascending=[False, True])
    if r.empty:
        return None, f"{rel(path)} holds no f_max rows: only f_max 1x1"
    best = r.iloc[0]
    gh, gw = (int(v) for v in str(best["grid"]).split("x"))
    others = ", ".join(f"{g} {v:.2f}" for g, v in zip(r["grid"], r["recall_pct"]))
    return (gh, gw), (f"f_max grid {gh}x{gw}: the best R@{n} of 04's off-the-shelf f_max on {rec['dataset']} "
                      f"(synthetic, {rec.get('split', 'test')} split; R@{n} by grid: {others}) -> {rel(path)}")


def _record(experiment, name, split, ctx, config, fitted, rows, ranks, start, **extra) -> dict:
    return {"experiment": experiment, "dataset": name, "split": "test", "synthetic": False, "label": LABEL,
            "condition": CONDITION[name], "seed": ctx.setup["seed"],
            "data": {"folder": rel(ctx.real_root / name), "reference_images": split.num_db,
                     "query_images": split.num_q,
                     "true_matches_per_query": round(sum(len(p) for p in split.positives) / split.num_q, 3)},
            "config": {**_public_setup(ctx.setup), **config, "ns": list(NS)}, "fitted": fitted, "rows": rows,
            "ranks": ranks, **extra, "seconds": time.perf_counter() - start}


def _public_setup(setup: dict) -> dict:
    out = {k: v for k, v in setup.items() if k not in ("cache_dir", "device")}
    out["image_size"] = list(setup["image_size"])
    return out


def _write(path: Path, record: dict) -> dict:
    from repro.atomic import write_json

    write_json(path, record)
    record["path"] = path
    return record


# ---------------------------------------------------------------------------
# 1. off the shelf


def run_off_the_shelf(ctx: RealContext, results_dir=None, fmax_grid=None, raw_pixel_size=(24, 32),
                      log=print) -> dict:
    """Off-the-shelf models on every present set; one record per set.

    Variants (``rows[].variant``, also the ``ranks`` keys):
    ``NetVLAD`` (centroids + alpha by the rule, fitted on the synthetic
    city's training database: 02's untrained starting point),
    ``NetVLAD (transductive)`` (centroids + alpha fitted on the evaluated
    set's *reference* images), ``f_max 1x1``, ``f_max GxG`` (``fmax_grid``,
    None: :func:`best_fmax_grid`), ``raw pixels``. No PCA whitening.
    The CNN variants re-pool the base's conv maps, cached under ``cache_dir``.

    Returns {set name: record}; {} when no set is present.
    """
    from repro.atomic import check_writable
    from repro.report.conv_maps import conv_maps, fmax_pool, netvlad_pool, pool_maps
    from repro.report.off_the_shelf import netvlad_init_cached

    if not ctx.available:
        log("skipped: off-the-shelf evaluation (no real image set present)")
        return {}
    results = check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    s = ctx.setup
    if fmax_grid is None:
        grid, grid_why = best_fmax_grid(results, ctx.fit_name, s["backbone"], s["num_clusters"])
    else:
        from repro.model.fmax import check_output_size

        grid, grid_why = check_output_size(fmax_grid), f"f_max grid {fmax_grid} (the fmax_grid parameter)"
    log(grid_why)
    spec = _spec(s)
    out = {}
    for name, split in ctx.splits.items():
        start = time.perf_counter()
        maps = [conv_maps(spec, paths, s["image_size"], cache_dir=s["cache_dir"], device=s["device"], log=log)
                for paths in (split.db_paths, split.q_paths)]
        h, w = maps[0].shape[2:]
        rows, ranks, fitted = [], {}, {}
        common = dict(backbone=s["backbone"], trained=False, whitened=False)
        # NetVLAD, fitted elsewhere (the synthetic training database): the main variant
        alpha = ctx.init["alpha_rule"]
        db, q = (pool_maps(m, netvlad_pool(ctx.init["centroids"], alpha, s["assignment"])) for m in maps)
        ev = _evaluate(db, q, split)
        rows += _rows(ev, "NetVLAD", pooling="netvlad", variant="NetVLAD", alpha=alpha, fit=ctx.fit_name, **common)
        ranks["NetVLAD"] = ev["ranks"]
        ctx.descriptors.setdefault(name, {})["NetVLAD"] = (db, q)
        fitted["NetVLAD"] = _fit_info(ctx.fit_paths, split.q_paths, "NetVLAD centroids (k-means) and alpha (the "
                                      "paper's rule)", f"{ctx.fit_name} training database (synthetic)",
                                      min(s["init_images"], len(ctx.fit_paths)), ctx.init["num_descriptors"], False)
        # NetVLAD, transductive: fitted on this set's reference (database) images, never its queries
        init_t = netvlad_init_cached(spec, split.db_paths, s["image_size"], s["init_images"], s["init_descriptors"],
                                     s["seed"], s["cache_dir"], s["device"], log=log, **_kmeans(s))
        db, q = (pool_maps(m, netvlad_pool(init_t["centroids"], init_t["alpha_rule"], s["assignment"])) for m in maps)
        ev = _evaluate(db, q, split)
        key = "NetVLAD (transductive)"
        rows += _rows(ev, key, pooling="netvlad", variant=key, alpha=init_t["alpha_rule"], fit=f"{name} reference",
                      **common)
        ranks[key] = ev["ranks"]
        fitted[key] = _fit_info(split.db_paths, split.q_paths, "NetVLAD centroids (k-means) and alpha (the paper's "
                                "rule)", f"{name} reference images (the evaluated database: transductive)",
                                min(s["init_images"], split.num_db), init_t["num_descriptors"], True)
        # f_max: nothing fitted
        grids = [(1, 1)] + ([tuple(grid)] if grid and tuple(grid) != (1, 1) else [])
        for gh, gw in grids:
            if gh > h or gw > w:
                log(f"{name}: f_max {gh}x{gw} skipped, the conv map is only {h}x{w}")
                continue
            key = f"f_max {gh}x{gw}"
            ev = _evaluate(*(pool_maps(m, fmax_pool(m.shape[1], (gh, gw))) for m in maps), split)
            rows += _rows(ev, key, pooling="fmax", variant=key, grid=f"{gh}x{gw}", alpha=None, fit=None, **common)
            ranks[key] = ev["ranks"]
        # raw pixels: nothing fitted, no network
        ev = _evaluate(raw_pixel_descriptors(split.db_paths, raw_pixel_size),
                       raw_pixel_descriptors(split.q_paths, raw_pixel_size), split)
        rows += _rows(ev, "raw pixels", backbone="none", pooling="raw pixels", variant="raw pixels", alpha=None,
                      fit=None, trained=False, whitened=False)
        ranks["raw pixels"] = ev["ranks"]
        config = {"conv_map": list(maps[0].shape[1:]), "fmax_grid": list(grid) if grid else None,
                  "fmax_grid_chosen_by": grid_why, "raw_pixel_size": [int(v) for v in raw_pixel_size],
                  "raw_pixels": "grayscale thumbnails, zero-mean, unit L2 norm; L2 retrieval = NCC",
                  "whitening": None}
        rec = _record("real_off_the_shelf", name, split, ctx, config, fitted, rows, ranks, start)
        out[name] = _write(real_record_path(results, "real_off_the_shelf", name), rec)
        log(f"{name}: " + "; ".join(f"{k} R@1/5/10 {_r(rows, k)}" for k in ranks) + f" -> {rel(out[name]['path'])}")
    return out


def _r(rows, variant) -> str:
    d = {r["n"]: r["recall_pct"] for r in rows if r["variant"] == variant}
    return "/".join(f"{d[n]:.1f}" for n in (1, 5, 10))


# ---------------------------------------------------------------------------
# 2. the alpha sweep


def run_alpha_sweep(ctx: RealContext, alphas, set_name="gardens_point_night", results_dir=None, log=print) -> dict | None:
    """Off-the-shelf NetVLAD (centroids from the synthetic training database)
    at each of ``alphas`` and at the rule's alpha, on one real set, by
    re-pooling its cached conv maps. One record; None when the set is absent."""
    from repro.atomic import check_writable
    from repro.report.conv_maps import conv_maps, netvlad_pool, pool_maps
    from repro.report.parameters import check_alpha_param

    alphas = [check_alpha_param(a) for a in alphas]
    if set_name not in ctx.splits:
        log(f"skipped: the alpha sweep on {set_name} ({rel(ctx.real_root / set_name)} absent or not selected)")
        return None
    results = check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    start = time.perf_counter()
    s, split = ctx.setup, ctx.splits[set_name]
    rule = float(ctx.init["alpha_rule"])
    grid = sorted(set(alphas) | {rule})
    grid = [a for i, a in enumerate(grid) if i == 0 or not math.isclose(a, grid[i - 1], rel_tol=SAME_ALPHA)]
    maps = [conv_maps(_spec(s), paths, s["image_size"], cache_dir=s["cache_dir"], device=s["device"], log=log)
            for paths in (split.db_paths, split.q_paths)]
    rows, ranks = [], {}
    for a in grid:
        pool = netvlad_pool(ctx.init["centroids"], a, s["assignment"])
        ev = _evaluate(*(pool_maps(m, pool) for m in maps), split)
        is_rule = math.isclose(a, rule, rel_tol=SAME_ALPHA)
        key = f"alpha={alpha_tag(a)}" + (" (rule)" if is_rule else "")
        rows += _rows(ev, key, backbone=s["backbone"], pooling="netvlad", variant="off-the-shelf", trained=False,
                      whitened=False, alpha=a, alpha_rule=rule, is_rule_alpha=is_rule, fit=ctx.fit_name)
        ranks[key] = ev["ranks"]
    fitted = {"NetVLAD": _fit_info(ctx.fit_paths, split.q_paths, "NetVLAD centroids (k-means); the rule's alpha",
                                   f"{ctx.fit_name} training database (synthetic)",
                                   min(s["init_images"], len(ctx.fit_paths)), ctx.init["num_descriptors"], False)}
    rec = _record("alpha_sweep", set_name, split, ctx, {"alphas": alphas, "conv_map": list(maps[0].shape[1:])}, fitted,
                  rows, ranks, start, alpha_rule=rule)
    rec = _write(real_record_path(results, "alpha_sweep", set_name), rec)
    log(f"{set_name}: {len(grid)} alphas, the rule's {rule:.4g} included -> {rel(rec['path'])}")
    return rec


def describe_alpha_sweep(rec: dict | None) -> str:
    if not rec:
        return "skipped: no alpha sweep"
    r1 = pd.DataFrame(rec["rows"])
    r1 = r1[r1["n"] == 1].sort_values("alpha")
    best = r1.loc[r1["recall_pct"].idxmax()]
    rule = r1[r1["is_rule_alpha"]].iloc[0]
    hi = r1[r1["alpha"] >= 1]["recall_pct"]
    return (f"{rec['dataset']} ({LABEL}): best R@1 {best['recall_pct']:.1f} at alpha {best['alpha']:.3g}; the "
            f"rule's alpha {rule['alpha']:.3g} gives R@1 {rule['recall_pct']:.1f}; R@1 for alpha >= 1 spans "
            f"{hi.min():.1f} to {hi.max():.1f}; at alpha {r1['alpha'].iloc[0]:.3g}: {r1['recall_pct'].iloc[0]:.1f}")


# ---------------------------------------------------------------------------
# 3. sim-to-real


def run_sim_to_real(ctx: RealContext, seeds=(0, 1, 2), results_dir=None, train_cache_dir=None,
                    poolings=("netvlad", "fmax"), batch_size: int = 64, log=print) -> dict:
    """02's networks trained on the synthetic city, each against its own
    untrained starting point, on every present set; one record per set.

    For each seed S whose checkpoints exist and match their records
    (:func:`repro.report.training.trained_checkpoint`), per pooling: ``trained`` = ``best.pt``;
    ``untrained`` = the model the trainer started from, rebuilt as it does
    (``torch.manual_seed(S)``, the record's model config; NetVLAD's k-means
    and rule on S's base from the synthetic training database, cached: its
    alpha is compared with the record's). A seed or pooling without a usable
    checkpoint is skipped with its reason (``skipped``). When nothing is
    usable no record is written or replaced (a fresh clone keeps the
    committed records). Returns {set name: record}."""
    import torch

    from repro.atomic import check_writable
    from repro.data.images import keep_decoded_images
    from repro.evaluate import extract_descriptors
    from repro.model import build_model, load_model
    from repro.report.conv_maps import conv_maps, netvlad_pool, pool_maps
    from repro.report.names import train_run_name
    from repro.report.off_the_shelf import netvlad_init_cached
    from repro.report.training import trained_checkpoint

    if not ctx.available:
        log("skipped: sim-to-real (no real image set present)")
        return {}
    results = check_writable(resolve_dir(results_dir, "results"), what="results (results_dir)")
    s = ctx.setup
    models, skipped = [], []
    for seed in seeds:
        for pooling in poolings:
            run = train_run_name(ctx.fit_name, s["backbone"], pooling, seed)
            ckpt, rec, why = trained_checkpoint(results, run, train_cache_dir)
            if why:
                skipped.append(f"seed {seed} {pooling}: {why}")
                continue
            models.append({"seed": int(seed), "pooling": pooling, "run": run, "checkpoint": ckpt, "record": rec})
    for line in skipped:
        log(f"skipped {line}")
    if not models:
        log("skipped: sim-to-real: no trained checkpoint matches its record (existing records under "
            f"{rel(results / 'real_images')} are left as they are)")
        return {}
    log(f"sim-to-real: {len(models)} trained model(s): " + ", ".join(m["run"] for m in models))
    # the untrained starting points: NetVLAD's init per seed (cached), checked against the record's alpha
    for m in models:
        cfg = m["record"]["config"]
        if m["pooling"] == "netvlad":
            init = netvlad_init_cached(_spec(s, m["seed"]), ctx.fit_paths, tuple(cfg["image_size"]),
                                       cfg["init_images"], cfg["init_descriptors"], m["seed"], s["cache_dir"],
                                       s["device"], log=log, assignment=cfg["assignment"],
                                       kmeans_iterations=cfg["kmeans_iterations"],
                                       kmeans_points_per_centroid=cfg["kmeans_points_per_centroid"])
            m["init"] = init
            rec_alpha = (m["record"].get("init") or {}).get("alpha_rule")
            m["init_matches_record"] = rec_alpha is not None and math.isclose(init["alpha_rule"], rec_alpha,
                                                                                rel_tol=SAME_ALPHA)
            if not m["init_matches_record"]:
                log(f"note: {m['run']}: the rebuilt initialisation's alpha {init['alpha_rule']:.10g} differs from the "
                    f"record's {rec_alpha} (k-means last bits on another CPU?)")
    out = {}
    for name, split in ctx.splits.items():
        start = time.perf_counter()
        rows, ranks, info = [], {}, {}
        # decode each image once for every model of this set
        with keep_decoded_images(2 * 1024 ** 3):
            for m in models:
                seed, pooling, rec = m["seed"], m["pooling"], m["record"]
                label = "NetVLAD" if pooling == "netvlad" else "f_max"
                for trained in (False, True):
                    key = f"{pooling}_{'trained' if trained else 'untrained'}_seed{seed}"
                    if trained:
                        model = load_model(m["checkpoint"])  # the safe loader
                        db, q = (extract_descriptors(model, p, s["image_size"], batch_size, s["device"])
                                 for p in (split.db_paths, split.q_paths))
                    elif pooling == "netvlad":  # the untrained NetVLAD: seed S's base, its init, on cached conv maps
                        pool = netvlad_pool(m["init"]["centroids"], m["init"]["alpha_rule"], rec["config"]["assignment"])
                        db, q = (pool_maps(conv_maps(_spec(s, seed), p, s["image_size"], cache_dir=s["cache_dir"],
                                                     device=s["device"], log=log), pool)
                                 for p in (split.db_paths, split.q_paths))
                    else:  # the untrained f_max: rebuilt exactly as the trainer built it before epoch 1
                        torch.manual_seed(seed)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # random init: the documented default offline
                            model = build_model(weights=None, **rec["model_config"])
                        db, q = (extract_descriptors(model, p, s["image_size"], batch_size, s["device"])
                                 for p in (split.db_paths, split.q_paths))
                    ev = _evaluate(db, q, split)
                    rows += _rows(ev, key, backbone=s["backbone"], pooling=pooling,
                                  variant=f"{label}, {'trained on synthetic' if trained else 'untrained'}",
                                  trained=trained, whitened=False, seed=seed, run=m["run"],
                                  alpha=(m["init"]["alpha_rule"] if not trained else
                                         rec["model_config"].get("alpha")) if pooling == "netvlad" else None)
                    ranks[key] = ev["ranks"]
                    if pooling == "netvlad" and seed == min(x["seed"] for x in models if x["pooling"] == "netvlad"):
                        ctx.descriptors.setdefault(name, {})[key] = (db, q)
                info[m["run"]] = {"seed": seed, "pooling": pooling, "checkpoint": rel(m["checkpoint"]),
                                  "training_record": rel(results / "train" / f"{m['run']}.json"),
                                  "training_git_commit": rec.get("git_commit"), "best_epoch": rec.get("best_epoch"),
                                  "trained_image_size": rec["config"].get("image_size"),
                                  **({"init_alpha_rule": m["init"]["alpha_rule"],
                                      "init_matches_record": m["init_matches_record"]} if pooling == "netvlad" else {})}
        fitted = {f"untrained NetVLAD (seed {m['seed']})": _fit_info(
            ctx.fit_paths, split.q_paths, "NetVLAD centroids (k-means) and alpha (the rule) of the trainer's starting "
            "point", f"{ctx.fit_name} training database (synthetic), as the trainer",
            min(m["record"]["config"]["init_images"], len(ctx.fit_paths)), m["init"]["num_descriptors"], False)
            for m in models if m["pooling"] == "netvlad"}
        fitted["trained"] = {"what": "every layer (02_train, weakly supervised triplets)",
                             "on": f"{ctx.fit_name} training split (synthetic)", "transductive": False,
                             "query_images_among_them": 0}
        rec = _record("sim_to_real", name, split, ctx, {"seeds": sorted({m["seed"] for m in models}),
                                                        "poolings": list(poolings)}, fitted, rows, ranks, start,
                      models=info, skipped=skipped)
        out[name] = _write(real_record_path(results, "sim_to_real", name), rec)
        log(f"{name}: {len(ranks)} models in {time.perf_counter() - start:.0f} s -> {rel(out[name]['path'])}")
    return out


# ---------------------------------------------------------------------------
# tables and figures


def recall_table(records: dict, ns=(1, 5, 10)) -> pd.DataFrame:
    """Recall@``ns`` per set and variant (rows) from {set: record}."""
    rows = [{**r, "dataset": name} for name, rec in records.items() for r in rec["rows"]]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df = df[df["n"].isin(ns)]
    index = ["dataset", "variant"] + (["seed"] if "seed" in df and df["seed"].notna().any() else [])
    return df.pivot_table(index=index, columns="n", values="recall_pct", sort=False).round(1)


def sim_to_real_summary(records: dict, ns=(1, 5, 10)) -> pd.DataFrame:
    """Per set, pooling and trained: mean recall over seeds, and each seed's."""
    rows = [{**r, "dataset": name} for name, rec in records.items() for r in rec["rows"]]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df = df[df["n"].isin(ns)]
    g = df.groupby(["dataset", "pooling", "trained", "n"], sort=False)["recall_pct"]
    out = g.agg(["mean", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "seeds"})


def _panel_title(name: str, rec: dict) -> str:
    d = rec["data"]
    return f"{name}\n{CONDITION[name]} ({d['reference_images']} ref / {d['query_images']} queries)"


def _legend_clear_of_curves(ax, top: float) -> None:
    """Low curves (night, season): the legend goes to the top, where the lower-right one would hide them."""
    if top < 55:
        ax.legend(fontsize=7, loc="upper left")


VARIANT_COLOURS = {"NetVLAD": "tab:red", "NetVLAD (transductive)": "tab:pink", "raw pixels": "tab:gray"}


def plot_off_the_shelf(records: dict):
    """Recall@N per set, one panel each (real sets only), one line per method."""
    from repro.report.plots import _finish_recall_axes, recall_curve

    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 4.3), squeeze=False)
    for ax, (name, rec) in zip(axes[0], records.items()):
        df = pd.DataFrame(rec["rows"])
        for variant, r in df.groupby("variant", sort=False):
            colour = VARIANT_COLOURS.get(variant, "tab:blue")
            ls = "--" if "transductive" in variant else (":" if variant == "raw pixels" else "-")
            marker = "s" if variant.startswith("f_max") and variant != "f_max 1x1" else "o"
            recall_curve(ax, r, f"{variant} ({int(r['dim'].iloc[0])}-D)", color=colour, ls=ls, marker=marker, ms=3,
                         lw=1.4, mfc="white" if variant == "f_max 1x1" else colour)
        _finish_recall_axes(ax, _panel_title(name, rec), ymin=0)
        _legend_clear_of_curves(ax, df["recall_pct"].max())
    fig.suptitle(f"Off-the-shelf on real photographs ({LABEL}; nothing fitted on the queries)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sim_to_real(records: dict):
    """Recall@N per set: NetVLAD (red) and f_max (blue), untrained (dashed) and
    trained on the synthetic city (solid), mean over seeds (band: min-max)."""
    from repro.report.plots import _finish_recall_axes, _style

    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 4.3), squeeze=False)
    for ax, (name, rec) in zip(axes[0], records.items()):
        df = pd.DataFrame(rec["rows"])
        for (pooling, trained), g in df.groupby(["pooling", "trained"], sort=False):
            st = g.groupby("n")["recall_pct"].agg(["mean", "min", "max"]).reset_index()
            seeds = g["seed"].nunique()
            style = _style(pooling, trained)
            label = (f"{'NetVLAD' if pooling == 'netvlad' else 'f_max'}, "
                     f"{'trained on synthetic' if trained else 'untrained'} ({seeds} seed{'s' * (seeds > 1)})")
            ax.plot(st["n"], st["mean"], label=label, **style)
            if seeds > 1:
                ax.fill_between(st["n"], st["min"], st["max"], color=style["color"], alpha=0.12, lw=0)
        _finish_recall_axes(ax, _panel_title(name, rec), ymin=0)
        _legend_clear_of_curves(ax, df["recall_pct"].max())
    fig.suptitle(f"Sim-to-real: 02's networks trained on the synthetic city, on real photographs ({LABEL})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def figure_off_the_shelf(figures_dir, records: dict):
    from repro.report.plots import save_figure

    if not records:
        return None, []
    fig = plot_off_the_shelf(records)
    return fig, save_figure(fig, figures_dir, "real_images_off_the_shelf")


def figure_alpha_sweep(figures_dir, rec: dict | None):
    from repro.report.plots import plot_alpha_sweep, save_figure

    if not rec:
        return None, []
    table = pd.DataFrame(rec["rows"])
    fig = plot_alpha_sweep(table, rec["alpha_rule"], synthetic=False,
                           title=f"{rec['dataset']} ({CONDITION[rec['dataset']]}): AlexNet + NetVLAD "
                                 f"(K={rec['config']['num_clusters']}), centroids from the synthetic training "
                                 f"database\n({LABEL})")
    return fig, save_figure(fig, figures_dir, f"real_images_alpha_sweep_{rec['dataset']}")


def figure_sim_to_real(figures_dir, records: dict):
    from repro.report.plots import save_figure

    if not records:
        return None, []
    fig = plot_sim_to_real(records)
    return fig, save_figure(fig, figures_dir, "real_images_sim_to_real")


def figure_retrievals(ctx: RealContext, figures_dir, sim_records: dict, n_queries: int = 6, k: int = 5,
                      log=print) -> dict:
    """Per set: off-the-shelf NetVLAD beside the synthetic-trained NetVLAD
    (lowest seed evaluated) top-``k`` for the same seeded queries (half
    correct at rank 1 by the trained model, half not), and failure counts at
    rank 1. Returns {set: {"figure", "paths", "counts" (DataFrame), "queries"}}."""
    from repro.report import retrievals
    from repro.report.plots import save_figure

    out = {}
    for name, split in ctx.splits.items():
        d = ctx.descriptors.get(name, {})
        trained_keys = sorted(k_ for k_ in d if k_.startswith("netvlad_trained_seed"))
        if "NetVLAD" not in d or not trained_keys:
            log(f"skipped: retrievals on {name} (needs the off-the-shelf and a trained NetVLAD evaluated in this run)")
            continue
        seed = trained_keys[0].rsplit("seed", 1)[1]
        top = {"off-the-shelf NetVLAD": retrievals.top_k(d["NetVLAD"][1], d["NetVLAD"][0], k),
               f"trained NetVLAD (seed {seed})": retrievals.top_k(d[trained_keys[0]][1], d[trained_keys[0]][0], k)}
        pos = [set(np.asarray(p).tolist()) for p in split.positives]
        t = top[f"trained NetVLAD (seed {seed})"]
        correct = np.array([int(t[i, 0]) in pos[i] for i in range(split.num_q)], dtype=bool)
        queries = retrievals.choose_queries(correct, n_queries, seed=ctx.setup["seed"])
        fig = retrievals.figure_retrievals(split.q_paths, split.db_paths, queries, top, split.positives,
                                           f"{name} ({CONDITION[name]}): top-{k}, {LABEL}", conditions=None)
        paths = save_figure(fig, figures_dir, f"real_images_retrievals_{name}")
        counts = retrievals.failure_counts(top, split.positives)  # one condition per set: "all" only
        counts.insert(1, "queries_are", QUERY_CONDITION[name])
        out[name] = {"figure": fig, "paths": paths, "counts": counts, "queries": queries}
    return out


def describe_fits(records: dict) -> str:
    """Where each fitted part of each variant came from (one line per set and variant)."""
    out = []
    for name, rec in records.items():
        for key, f in rec.get("fitted", {}).items():
            n = f"{f['num_images']} images, {f['num_descriptors']} descriptors; " if "num_images" in f else ""
            out.append(f"{name} / {key}: {f['what']} fitted on {f['on']} ({n}query images among them: "
                       f"{f['query_images_among_them']})" + (" [TRANSDUCTIVE]" if f.get("transductive") else ""))
    return "\n".join(out)


def describe_sim_to_real(records: dict) -> str:
    """Per set: mean recall@1/5/10 over seeds, untrained -> trained, per pooling."""
    table = sim_to_real_summary(records)
    if table.empty:
        return "skipped: no sim-to-real record in this run"
    out = []
    for (name, pooling), g in table.groupby(["dataset", "pooling"], sort=False):
        m = g.set_index(["trained", "n"])["mean"]
        seeds = int(g["seeds"].max())
        fmt = lambda t: "/".join(f"{m[(t, n)]:.1f}" for n in (1, 5, 10))  # noqa: E731
        out.append(f"{name}, {'NetVLAD' if pooling == 'netvlad' else 'f_max'} ({seeds} seed{'s' * (seeds > 1)}): "
                   f"R@1/5/10 untrained {fmt(False)} -> trained on synthetic {fmt(True)}")
    return "\n".join(out)
