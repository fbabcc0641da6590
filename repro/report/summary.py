"""``results/summary.csv``: every result file under ``results/`` as one tidy table.

:func:`collect_summary` returns one row per model and N, with at least
``experiment, dataset, backbone, pooling, dim, trained, alpha, seed, n,
recall_pct``, the ``synthetic`` flag and the ``source`` file. Synthetic and
real results are never mixed: every comparison is made within one dataset,
and every row carries ``synthetic``. :func:`dedupe_runs` picks one run per
configuration where a configuration was run more than once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import repo_root
from repro.report.names import read_json

SUMMARY_COLUMNS = ["experiment", "run", "dataset", "split", "synthetic", "backbone", "pooling", "variant", "dim",
                   "trained", "whitened", "alpha", "seed", "n", "recall_pct", "num_queries", "config_id", "source",
                   "git_commit"]


# Training-config fields that do not make two runs incomparable: the ones
# that name or place a run or only choose what is reported (ns: training
# selects its best epoch by select_n, which is kept), the ones that only
# choose how fast (device, precision, TF32, workers, torchrun's timeout: like
# the device, precision moves results by rounding only), and the ones a
# comparison varies (pooling and its options, the backbone).
CONFIG_ID_IGNORES = {"pooling", "backbone", "fmax_output_size", "alpha", "run_name", "record_path", "out_dir",
                     "resume", "progress", "verbose", "device", "num_workers", "eval_batch_size", "ns",
                     "eval_untrained", "precision", "tf32", "dist_timeout_s"}


def config_id(config: dict) -> str:
    """A short hash of a training config, without :data:`CONFIG_ID_IGNORES`:
    runs with equal ids differ only in pooling/backbone and can be compared."""
    import hashlib

    d = {k: v for k, v in sorted(config.items()) if k not in CONFIG_ID_IGNORES}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def recipe_id(config: dict) -> str:
    """:func:`config_id` without the seed: the runs of one recipe over several
    training seeds share it (the claims pool their seeds)."""
    return config_id({k: v for k, v in config.items() if k != "seed"})


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def collect_summary(results_dir=None) -> pd.DataFrame:
    """Every result under ``results_dir`` as one tidy table (see module doc).

    Reads ``train/*.json`` (complete trainer records), ``alpha_sweep/*.json``,
    ``fmax_output_size/*.json``, ``real_images/*.json`` (07, real photographs) and ``calibration/*.csv``
    (overall rows).
    """
    from repro.report.training import record_test_sets, train_rows

    results = Path(results_dir) if results_dir else repo_root() / "results"
    base = results.parent
    rows = []

    def add(rec_rows, experiment, dataset, split, synthetic, seed, source, commit, run=None, cid=None, recipe=None):
        for r in rec_rows:
            rows.append({"experiment": experiment, "run": run or Path(source).stem, "dataset": dataset, "split": split,
                         "synthetic": bool(synthetic), "seed": seed, "config_id": cid, "source": _rel(source, base),
                         "git_commit": commit, **({"recipe_id": recipe} if recipe else {}), **r})

    for p in sorted((results / "train").glob("*.json")):
        rec = read_json(p)
        if not rec or rec.get("status") != "complete":
            continue
        for t in record_test_sets(rec):  # its own test split, and any test_on set (Tokyo 24/7 for TokyoTM)
            add(train_rows(rec, t["test_set"]), "train", t["dataset"], t["split"], t["synthetic"], rec.get("seed"), p,
                rec.get("git_commit"), rec.get("run_name"), config_id(rec.get("config", {})),
                recipe_id(rec.get("config", {})))
    for exp in ("alpha_sweep", "fmax_output_size"):
        for p in sorted((results / exp).glob("*.json")):
            rec = read_json(p)
            if not rec or "rows" not in rec:
                continue
            extra = ({"alpha_rule": rec.get("alpha_rule"), "is_rule_alpha": bool(rec.get("is_rule_alpha"))}
                     if exp == "alpha_sweep" else {})
            add([{**r, **extra} for r in rec["rows"]], exp, rec["dataset"], rec.get("split", "test"),
                rec.get("synthetic", False), rec.get("seed"), p, rec.get("git_commit"))
    # 07: real photographs (synthetic False; dataset = the VPR-Bench folder; each row's ranks_key names its
    # model's per-query ranks in the record's "ranks"; sim_to_real rows carry their own seed and run)
    for p in sorted((results / "real_images").glob("*.json")):
        rec = read_json(p)
        if rec and "rows" in rec:
            add(rec["rows"], rec["experiment"], rec["dataset"], rec.get("split", "test"), rec.get("synthetic", False),
                rec.get("seed"), p, rec.get("git_commit"))
    for p in sorted((results / "calibration").glob("*.csv")):  # per-query ranks: calibration.ranks_path(p)
        try:
            cal = pd.read_csv(p)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if "condition" in cal:
            cal = cal[cal["condition"] == "all"]
        for ds, g in cal.groupby("dataset"):
            name, split = (ds.rsplit("_", 1) + ["test"])[:2] if str(ds).endswith(("_test", "_val", "_train")) else (ds, "test")
            recs = [{"backbone": r.backbone, "pooling": r.pooling, "dim": int(r.dim), "trained": bool(r.trained),
                     "whitened": False, "alpha": None, "variant": "off-the-shelf" if not r.trained else "trained",
                     "method": r.method, "ranks_key": r.method, "n": int(r.n), "recall_pct": float(r.recall_pct),
                     "num_queries": int(r.num_queries)} for r in g.itertuples()]
            add(recs, "calibration", name, split, str(name).startswith("synthetic"),
                int(g["seed"].iloc[0]) if "seed" in g else None, p, g["git_commit"].iloc[0] if "git_commit" in g else None)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    for c in SUMMARY_COLUMNS:
        if c not in df:
            df[c] = None
    extra = [c for c in df.columns if c not in SUMMARY_COLUMNS]
    df = df[SUMMARY_COLUMNS + extra]
    return df.sort_values(["synthetic", "dataset", "experiment", "run", "backbone", "pooling", "trained", "variant",
                           "dim", "alpha", "n"], na_position="first", kind="stable").reset_index(drop=True)


def write_summary(results_dir=None) -> tuple[Path, pd.DataFrame]:
    results = Path(results_dir) if results_dir else repo_root() / "results"
    df = collect_summary(results)
    return atomic_write_text(results / "summary.csv", df.to_csv(index=False)), df


def dedupe_runs(train_rows: pd.DataFrame) -> pd.DataFrame:
    """Training rows with one run per (config, backbone, pooling): runs of one
    configuration are replicates (training is deterministic), see :func:`pick_run`."""
    if train_rows.empty:
        return train_rows
    keys = train_rows.assign(_c=train_rows["config_id"].fillna("-"))
    return pd.concat([pick_run(g) for _, g in keys.groupby(["_c", "backbone", "pooling"], sort=False)]).drop(
        columns="_c")


def pick_run(g: pd.DataFrame) -> pd.DataFrame:
    """One run of several replicates (equal config): the pipeline's own
    (named ``{dataset}_{backbone}_{pooling}_seed{seed}``) if there, else the
    first by name."""
    runs = sorted(set(g["run"].dropna()))
    if len(runs) <= 1:
        return g
    own = [r for r in runs if any(r == f"{row.dataset}_{row.backbone}_{row.pooling}_seed{row.seed}"
                                  for row in g.drop_duplicates("run").itertuples())]
    return g[g["run"] == (own or runs)[0]]
