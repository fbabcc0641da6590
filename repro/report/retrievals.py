"""Report step 08 (``notebooks/08_retrievals.ipynb``): what the models retrieve, and where they fail.

The reusable part takes descriptors and ground truth as numpy arrays and
draws with matplotlib, for any image set (the synthetic city here,
``07_real_images`` for real photographs):

- :func:`top_k`: each query's nearest database images (exact L2, the
  evaluation's search and tie rule);
- :func:`choose_queries`: a seeded mix of successes and failures to show;
- :func:`figure_retrievals`: each query beside its top-k retrievals per
  method, framed green (a true match) or red;
- :func:`failure_counts` and :func:`plot_failure_counts`: failures at rank
  1 by query condition, as a tidy table and a bar figure.

:func:`run_retrievals` is the synthetic city's step: the off-the-shelf
NetVLAD (02's untrained starting point, as :class:`OffTheShelf` rebuilds
it) and 02's trained models (``best.pt``, loaded by the safe loader), their
test descriptors checked against the training records' recall, then the
figures and ``results/retrievals/{dataset}_{backbone}_K{K}_failures.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from repro.errors import ConfigError

MATCH, MISS = "tab:green", "tab:red"
METHOD_COLOURS = ("tab:gray", "tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:brown")


# ---------------------------------------------------------------------------
# numpy in


def top_k(query_desc, db_desc, k: int = 5) -> np.ndarray:
    """Indices of each query's ``k`` nearest database descriptors.

    Exact L2 by brute force, with the evaluation's own search
    (:func:`repro.metrics.nearest_neighbours`: faiss ``IndexFlatL2``'s
    arithmetic, float32 |q|^2 + |x|^2 - 2 q.x, and its tie rule, lower
    database index first), so rank 1 here is rank 1 of recall@N.

    Args:
        query_desc: [Q, D] float array.
        db_desc: [M, D] float array.
        k: neighbours per query (clipped to M).
    Returns:
        [Q, min(k, M)] int64 database indices, nearest first.
    """
    from repro.metrics import nearest_neighbours

    _, idx = nearest_neighbours(np.asarray(query_desc), np.asarray(db_desc), k)
    return idx.astype(np.int64, copy=False)


def choose_queries(correct, n: int = 6, seed: int = 0) -> np.ndarray:
    """A seeded choice of ``n`` queries, half correct at rank 1, half not.

    ``ceil(n/2)`` are drawn among the queries whose ``correct`` is True and
    ``floor(n/2)`` among the others; when one kind has too few, all of it is
    taken and the rest comes from the other kind (all correct: ``n``
    successes). Drawn without replacement with ``np.random.default_rng(seed)``.

    Args:
        correct: [Q] booleans (e.g. a method's recall@1 per query).
        n: queries wanted (at most Q are returned).
        seed: the draw's seed.
    Returns:
        sorted int64 query indices, ``min(n, Q)`` of them.
    """
    correct = np.asarray(correct)
    if correct.ndim != 1 or (correct.size and correct.dtype != bool):
        raise ConfigError(f"correct must be a [Q] boolean array, got shape {correct.shape} dtype {correct.dtype}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    good, bad = np.flatnonzero(correct), np.flatnonzero(~correct)
    n_good = min(len(good), n - n // 2)
    n_bad = min(len(bad), n - n_good)
    n_good = min(len(good), n - n_bad)  # the successes fill in where failures are short
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(good, n_good, replace=False), rng.choice(bad, n_bad, replace=False)])
    return np.sort(picks).astype(np.int64)


def _positive_sets(positives, num_queries: int) -> list[set]:
    if len(positives) != num_queries:
        raise ConfigError(f"positives has {len(positives)} entries for {num_queries} queries")
    return [set(np.asarray(p, dtype=np.int64).ravel().tolist()) for p in positives]


def failure_counts(top: dict, positives, conditions=None) -> pd.DataFrame:
    """Failures at rank 1 (the nearest database image is not a true match) per method and query condition.

    Args:
        top: method label -> [Q, k] int database indices (nearest first; only
            column 0 is used), e.g. from :func:`top_k`.
        positives: [Q] sequences of the true-match database indices of each
            query (an empty one: the query always fails, as in recall@N).
        conditions: [Q] condition label per query, or None (only "all").
    Returns:
        DataFrame with columns ``method, condition, queries, failures_at1,
        failure_pct``: per method one row per condition (in order of first
        appearance; the synthetic city's in its CONDITIONS order), then
        ``condition == "all"``.
    """
    rows = []
    for method, t in top.items():
        t = np.asarray(t)
        if t.ndim != 2 or t.shape[1] < 1:
            raise ConfigError(f"top[{method!r}] must be a [Q, k] array with k >= 1, got shape {t.shape}")
        pos = _positive_sets(positives, t.shape[0])
        fail = np.array([int(t[i, 0]) not in pos[i] for i in range(t.shape[0])], dtype=bool)
        groups = []
        if conditions is not None:
            cond = np.asarray(conditions).astype(str)
            if cond.shape != (t.shape[0],):
                raise ConfigError(f"conditions must be [Q] = [{t.shape[0]}], got shape {cond.shape}")
            groups = [(c, cond == c) for c in _condition_order(cond)]
        groups.append(("all", np.ones(t.shape[0], dtype=bool)))
        for c, m in groups:
            q = int(m.sum())
            f = int(fail[m].sum())
            rows.append({"method": method, "condition": c, "queries": q, "failures_at1": f,
                         "failure_pct": 100.0 * f / q if q else float("nan")})
    return pd.DataFrame(rows, columns=["method", "condition", "queries", "failures_at1", "failure_pct"])


def _condition_order(cond: np.ndarray) -> list[str]:
    from repro.data.synthetic.config import CONDITIONS

    seen = list(pd.unique(cond))
    known = [c for c in CONDITIONS if c in seen]
    return known + [c for c in seen if c not in known]


# ---------------------------------------------------------------------------
# matplotlib out


def _image(src) -> np.ndarray:
    if isinstance(src, np.ndarray):
        return src
    from PIL import Image

    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def _frame(ax, colour, width: float) -> None:
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_edgecolor(colour)
        s.set_linewidth(width)


def figure_retrievals(query_images, db_images, queries, top: dict, positives, title: str, conditions=None):
    """Each chosen query beside its top-k retrievals, one row per (query, method).

    Args:
        query_images: [Q] image paths or HxWx3 uint8 arrays (all queries;
            only those in ``queries`` are read).
        db_images: [M] image paths or arrays (the database).
        queries: the query indices to show (the same for every method).
        top: method label -> [Q, k] database indices (nearest first), e.g.
            ``{"off-the-shelf": ..., "trained": ...}``.
        positives: [Q] sequences of each query's true-match database indices.
        title: the figure's title (say "synthetic" for the synthetic city).
        conditions: optional [Q] condition label per query, named in the row labels.
    Returns:
        the matplotlib Figure: rows ``len(queries) * len(top)``, columns
        ``1 + k``; column 0 the query (framed black), then rank 1..k, each
        retrieval's axes framed green when its index is in ``positives[q]``
        and red otherwise (``ax.spines[...].get_edgecolor()``), and titled
        with the database index (``"db 17 ✓"`` / ``"db 17 ✗"``).
    """
    queries = [int(q) for q in np.asarray(queries).ravel()]
    if not top:
        raise ConfigError("top is empty: no method to show")
    tops = {m: np.asarray(t) for m, t in top.items()}
    k = max(t.shape[1] for t in tops.values())
    pos = _positive_sets(positives, len(query_images))
    rows = max(1, len(queries) * len(tops))
    fig, axes = plt.subplots(rows, 1 + k, figsize=(1.55 * (1 + k), 1.3 * rows + 0.9), squeeze=False)
    cache: dict = {}

    def img(kind, i):
        if (kind, i) not in cache:
            cache[(kind, i)] = _image((query_images if kind == "q" else db_images)[i])
        return cache[(kind, i)]

    r = 0
    for qi in queries:
        for method, t in tops.items():
            row = axes[r]
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
            row[0].imshow(img("q", qi))
            _frame(row[0], "black", 1.0)
            cond = f" ({conditions[qi]})" if conditions is not None else ""
            row[0].set_ylabel(f"{method}\nquery {qi}{cond}", fontsize=7, rotation=0, ha="right", va="center",
                              labelpad=4)
            if not pos[qi]:
                row[0].set_title("no true match in db", fontsize=6)
            for j in range(t.shape[1]):
                d = int(t[qi, j])
                ax = row[1 + j]
                if d < 0:
                    continue
                hit = d in pos[qi]
                ax.imshow(img("d", d))
                _frame(ax, MATCH if hit else MISS, 3.0)
                ax.set_title(f"db {d} {'✓' if hit else '✗'}", fontsize=6, color=MATCH if hit else MISS, pad=2)
            r += 1
    for j in range(1 + k):
        axes[0, j].annotate("query" if j == 0 else f"rank {j}", (0.5, 1.0), xycoords="axes fraction",
                            xytext=(0, 14), textcoords="offset points", ha="center", fontsize=8, weight="bold")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def plot_failure_counts(counts: pd.DataFrame, title: str = ""):
    """Bars of ``failure_pct`` per query condition (``"all"`` last), one colour
    per method; each bar labelled ``failures/queries``. ``counts``: the
    table of :func:`failure_counts` (one method's rows, or several)."""
    methods = list(dict.fromkeys(counts["method"]))
    conds = [c for c in dict.fromkeys(counts["condition"]) if c != "all"] + ["all"]
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(min(11.0, 2.5 + 0.45 * len(conds) * max(1, len(methods))), 4.2))
    x = np.arange(len(conds))
    for i, m in enumerate(methods):
        g = counts[counts["method"] == m].set_index("condition").reindex(conds)
        xs = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(xs, g["failure_pct"], width, label=m, color=METHOD_COLOURS[i % len(METHOD_COLOURS)],
                      edgecolor="black", linewidth=0.4)
        for b, f, q in zip(bars, g["failures_at1"], g["queries"]):
            if pd.notna(f):
                ax.annotate(f"{int(f)}/{int(q)}", (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=6, rotation=90)
    ax.set_xticks(x, conds)
    ax.axvline(len(conds) - 1.5, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("failures at rank 1 (% of queries)")
    ax.set_xlabel("query condition")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", ncol=len(methods), frameon=False)
    ax.set_title(title or "Failures at rank 1 by query condition", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# the synthetic city's step (08)


def failures_path(results_dir, dataset_name: str, backbone: str, num_clusters: int) -> Path:
    return Path(results_dir) / "retrievals" / f"{dataset_name}_{backbone}_K{num_clusters}_failures.csv"


def _trained_model(results_dir, run_name: str):
    """(model, record, None) of a complete training run whose best checkpoint matches its record
    (:func:`repro.report.training.trained_checkpoint`), or (None, record or None, why not)."""
    from repro.errors import WeightsError
    from repro.model import load_model
    from repro.report.training import trained_checkpoint

    ckpt, rec, why = trained_checkpoint(results_dir, run_name)
    if why:
        return None, rec, why
    try:
        return load_model(ckpt), rec, None  # the same safe loader
    except WeightsError as exc:
        return None, rec, str(exc)


def _check(ev: dict, reference: dict | None) -> dict:
    """Our recall and per-query ranks against a training record's (``test`` / ``test_untrained``)."""
    if not reference:
        return {"reference": None, "recall_equal": None, "ranks_equal": None}
    ours = {int(n): round(float(v), 6) for n, v in ev["recall"].items()}
    theirs = {int(n): round(float(v), 6) for n, v in reference["recall"].items()}
    common = sorted(set(ours) & set(theirs))
    ranks = reference.get("ranks")
    ranks_equal = None if ranks is None else bool(np.array_equal(np.asarray(ranks), np.asarray(ev["ranks"])))
    return {"recall_equal": all(ours[n] == theirs[n] for n in common),
            "max_abs_diff_pct": max((abs(ours[n] - theirs[n]) for n in common), default=None),
            "ranks_equal": ranks_equal,
            "ranks_differing": None if ranks is None else int(np.sum(np.asarray(ranks) != np.asarray(ev["ranks"]))),
            "ours": {n: ours[n] for n in (1, 5, 10) if n in ours},
            "record": {n: theirs[n] for n in (1, 5, 10) if n in theirs}}


def run_retrievals(poolings=("netvlad", "fmax"), n_samples: int = 6, n_retrievals: int = 5, results_dir=None,
                   log=print, **setup) -> dict:
    """The off-the-shelf NetVLAD and 02's trained models on the evaluated split:
    descriptors, top-k retrievals, failures at rank 1 by query condition.

    ``setup``: :class:`repro.report.off_the_shelf.OffTheShelf`'s arguments
    (dataset, data_root, synthetic_preset, city_seed, backbone, weights,
    seed, num_clusters, image_size, split, init_images, init_descriptors,
    device, cache_dir, assignment). The trained models are 02's runs of
    ``seed`` (``results_dir/train/{run}.json`` and its ``checkpoint_best``);
    one that is missing, incomplete or whose checkpoint is absent is skipped
    with the reason in ``skipped``. Each model's recall@N and per-query
    ranks are compared with its training record (``checks``). Writes the
    failure counts as a tidy CSV. Returns ``{"split", "conditions", "top",
    "labels", "queries", "chosen_by", "counts" (DataFrame), "checks",
    "skipped", "path", "seconds", "synthetic", "dataset"}``.
    """
    from repro.atomic import atomic_write_text, check_writable
    from repro.evaluate import extract_descriptors
    from repro.metrics import recall_at_n
    from repro.report.names import NS, resolve_dir, train_run_name
    from repro.report.off_the_shelf import OffTheShelf

    start = time.perf_counter()
    results = resolve_dir(results_dir, "results")
    check_writable(results, what="results (results_dir)")
    ots = OffTheShelf(log=log, **setup)
    split = ots.split
    if ots.groups is None:
        log("no per-query conditions for this dataset: failure counts over all queries only")
    descs, checks, skipped, labels = {}, {}, [], {}

    def evaluate(label, db, q, reference):
        ev = recall_at_n(q, db, split.positives, ns=NS, panorama_ids=split.panorama_ids, return_details=True,
                         **split.search_times())
        checks[label] = _check({"recall": ev.recall, "ranks": ev.ranks}, reference)
        descs[label] = (db, q)

    nv_record = None
    trained = {}
    for pooling in poolings:
        run = train_run_name(ots.name, ots.backbone, pooling, ots.seed)
        model, rec, why = _trained_model(results, run)
        if pooling == "netvlad":
            nv_record = rec  # its untrained test recall and alpha, even when its checkpoint is absent
        if why:
            skipped.append(f"trained {pooling} ({run}): {why}")
            continue
        trained[pooling] = (model, rec, run)
    # the off-the-shelf NetVLAD: 02's starting point (the rule's alpha unless the run fixed one)
    alpha = ((nv_record or {}).get("init") or {}).get("alpha") or ots.alpha_rule
    _, (db, q) = ots.evaluate_netvlad(float(alpha))
    label = "off-the-shelf NetVLAD"
    evaluate(label, db, q, (nv_record or {}).get("test_untrained"))
    labels[label] = {"pooling": "netvlad", "trained": False, "run": (nv_record or {}).get("run_name")}
    for pooling, (model, rec, run) in trained.items():
        t0 = time.perf_counter()
        bs = int((rec.get("config") or {}).get("eval_batch_size", 32))
        db = extract_descriptors(model, split.db_paths, ots.image_size, bs, ots.device, desc=f"{run} database")
        q = extract_descriptors(model, split.q_paths, ots.image_size, bs, ots.device, desc=f"{run} queries")
        label = f"trained {'NetVLAD' if pooling == 'netvlad' else 'f_max'}"
        evaluate(label, db, q, rec.get("test"))
        labels[label] = {"pooling": pooling, "trained": True, "run": run, "best_epoch": rec.get("best_epoch")}
        log(f"{label}: {len(db)} + {len(q)} descriptors ({db.shape[1]}-D) of {run} (best epoch "
            f"{rec.get('best_epoch')}) in {time.perf_counter() - t0:.0f} s")
    for s in skipped:
        log(f"skipped {s}")
    top = {m: top_k(q, db, n_retrievals) for m, (db, q) in descs.items()}
    pos = _positive_sets(split.positives, split.num_q)
    chosen_by = "trained NetVLAD" if "trained NetVLAD" in top else "off-the-shelf NetVLAD"
    correct = np.array([int(top[chosen_by][i, 0]) in pos[i] for i in range(split.num_q)], dtype=bool)
    queries = choose_queries(correct, n_samples, ots.seed)
    counts = failure_counts(top, split.positives, ots.groups)
    meta = pd.DataFrame([labels[m] for m in counts["method"]])[["pooling", "trained"]]
    table = pd.concat([pd.DataFrame({"dataset": ots.name, "split": ots.split_name, "synthetic": ots.synthetic},
                                    index=counts.index), counts[["method"]], meta.set_index(counts.index),
                       counts.drop(columns="method")], axis=1)
    path = failures_path(results, ots.name, ots.backbone, ots.num_clusters)
    atomic_write_text(path, table.to_csv(index=False, float_format="%.4f"))
    return {"dataset": ots.name, "synthetic": ots.synthetic, "split": split, "split_name": ots.split_name,
            "conditions": ots.groups, "top": top, "labels": labels, "queries": queries, "chosen_by": chosen_by,
            "counts": table, "checks": checks, "skipped": skipped, "path": path, "alpha": float(alpha),
            "seconds": time.perf_counter() - start}


def describe_checks(checks: dict) -> str:
    """One line per model: does its recall (and per-query rank) reproduce its training record?"""
    out = []
    for label, c in checks.items():
        if c.get("recall_equal") is None:
            out.append(f"{label}: no training record to compare with")
            continue
        fmt = lambda d: "/".join(f"{d[n]:.2f}" for n in (1, 5, 10) if n in d)  # noqa: E731
        verdict = ("reproduces the training record exactly (recall@N and every query's rank)"
                   if c["recall_equal"] and c["ranks_equal"] else
                   f"DIFFERS from the training record (max {c['max_abs_diff_pct']:.2f} points; "
                   f"{c['ranks_differing']} queries with another first-correct rank)")
        out.append(f"{label}: R@1/5/10 {fmt(c['ours'])} (record {fmt(c['record'])}): {verdict}")
    return "\n".join(out)


def describe_failures(counts: pd.DataFrame) -> str:
    """Per method: its worst and best query condition at rank 1, and its overall failure rate."""
    out = []
    for m, g in counts.groupby("method", sort=False):
        allrow = g[g["condition"] == "all"].iloc[0]
        c = g[g["condition"] != "all"].sort_values("failure_pct")
        line = f"{m}: {int(allrow['failures_at1'])}/{int(allrow['queries'])} queries fail at rank 1 " \
               f"({allrow['failure_pct']:.1f}%)"
        if len(c):
            line += (f"; worst {c.iloc[-1]['condition']} ({c.iloc[-1]['failure_pct']:.1f}%), "
                     f"best {c.iloc[0]['condition']} ({c.iloc[0]['failure_pct']:.1f}%)")
        out.append(line)
    return "\n".join(out)
