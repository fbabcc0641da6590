"""From per-run result files to the report: the summary, the paper's numbers,
the claims table and the README's results section.

- :func:`collect_summary` reads every result file under ``results/`` and
  returns one tidy table (``results/summary.csv``): one row per model and N,
  with at least ``experiment, dataset, backbone, pooling, dim, trained,
  alpha, seed, n, recall_pct`` and the ``synthetic`` flag and ``source`` file.
- :func:`write_paper_reference` makes the project's own copy of the paper's
  Figure 5 numbers (digitised; ``../shared/reference/netvlad_fig5.csv``) and
  of the CS4240 reproduction's numbers, each row citing where it comes from,
  under ``results/paper/``. :func:`load_paper_reference` reads that copy and
  works without ``../shared``.
- :func:`claims_table` checks each of the paper's claims against our runs:
  one row per claim and dataset, saying whether our run supports it.
- :func:`update_readme` rewrites the README between the results markers.

Synthetic and real results are never mixed: every comparison is made within
one dataset, and every row carries ``synthetic``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from repro.report import atomic_write_text
from repro.paths import repo_root

PAPER_CITATION = "NetVLAD paper, Figure 5 (b, c), values digitised from the figure"
CS4240_CITATION = ("CS4240 reproduction (Duinkerken and Verlaan, TU Delft), reported recall@N on Pitts30k-val "
                   "(224x224, no whitening, alpha 0.1, K 64, last conv layer trained, Adam)")
PAPER_FILE = "netvlad_fig5.csv"
CS4240_FILE = "cs4240_pitts30k_val.csv"
SUMMARY_COLUMNS = ["experiment", "run", "dataset", "split", "synthetic", "backbone", "pooling", "variant", "dim",
                   "trained", "whitened", "alpha", "seed", "n", "recall_pct", "num_queries", "config_id", "source",
                   "git_commit"]
# Training-config fields that do not make two runs incomparable: the ones
# that name or place a run or only choose what is reported (ns: training
# selects its best epoch by select_n, which is kept), and the ones a
# comparison varies (pooling and its options, the backbone).
CONFIG_ID_IGNORES = {"pooling", "backbone", "fmax_output_size", "alpha", "run_name", "record_path", "out_dir",
                     "resume", "progress", "verbose", "device", "num_workers", "eval_batch_size", "ns",
                     "eval_untrained"}


def config_id(config: dict) -> str:
    """A short hash of a training config, without :data:`CONFIG_ID_IGNORES`:
    runs with equal ids differ only in pooling/backbone and can be compared."""
    import hashlib

    d = {k: v for k, v in sorted(config.items()) if k not in CONFIG_ID_IGNORES}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def shared_dir() -> Path:
    """``<repo>/../shared`` (reference numbers and real metadata; absent in a fresh clone)."""
    return repo_root().parent / "shared"


# ---------------------------------------------------------------------------
# the paper's numbers (and the earlier reproduction's)


def _paper_table(raw: pd.DataFrame) -> pd.DataFrame:
    split_of = raw["dataset"].str.rsplit("_", n=1)
    trained = raw["trained"].map({"yes": "yes", "no": "no"}).fillna("n/a")
    out = pd.DataFrame({
        "dataset": split_of.str[0], "split": split_of.str[1],
        "panel": raw["dataset"].map({"pitts30k_test": "b", "pitts250k_test": "c"}),
        "legend": raw["legend"], "backbone": raw["base"], "pooling": raw["pooling"], "trained": trained,
        "whitened": raw["whitened"].eq("yes"), "dim": raw["dim"].astype("Int64"), "n": raw["n"].astype(int),
        "recall_pct": raw["recall_pct"].astype(float), "read_quality": raw["read_quality"],
        "source": PAPER_CITATION,
    })
    return out


def _cs4240_table(raw: pd.DataFrame) -> pd.DataFrame:
    pooling = raw["pooling"].map({"fmax_1x1": "fmax", "netvlad": "netvlad", "none": "none (flattened conv5)"})
    return pd.DataFrame({
        "dataset": "pitts30k", "split": "val", "backbone": raw["base"], "pooling": pooling,
        "trained": raw["trained"], "n": raw["n"].astype(int), "recall_pct": raw["recall_pct"].astype(float),
        "source": CS4240_CITATION,
    })


def write_paper_reference(out_dir=None, reference_dir=None) -> list[Path]:
    """Write ``results/paper/netvlad_fig5.csv`` and ``cs4240_pitts30k_val.csv``
    from ``reference_dir`` (default ``../shared/reference``). Raises
    FileNotFoundError when the reference folder is absent."""
    ref = Path(reference_dir) if reference_dir else shared_dir() / "reference"
    out = Path(out_dir) if out_dir else repo_root() / "results" / "paper"
    fig5, cs = ref / "netvlad_fig5.csv", ref / "cs4240_reproduction_pitts30k_val.csv"
    if not fig5.is_file():
        raise FileNotFoundError(f"{fig5} not found: the digitised Figure 5 numbers live in ../shared/reference")
    written = [_write_if_changed(out / PAPER_FILE, _paper_table(pd.read_csv(fig5)).to_csv(index=False))]
    if cs.is_file():
        written.append(_write_if_changed(out / CS4240_FILE, _cs4240_table(pd.read_csv(cs)).to_csv(index=False)))
    return written


def _write_if_changed(path: Path, text: str) -> Path:
    """Rewrite only a changed copy: its mtime then says when the reference changed (the pipeline's
    test of whether 05 must rerun, ``repro.pipeline._up_to_date``)."""
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)
    return path


def load_paper_reference(results_dir=None, reference_dir=None, refresh: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(Figure 5 table, CS4240 table or None) from ``results_dir/paper/``.

    The copy is (re)made there first when ``../shared/reference`` exists and
    ``refresh``; without it, the copy under ``results_dir`` is read, else the
    repository's committed ``results/paper/`` (so other results folders, e.g.
    the smoke profile's, work in a fresh clone)."""
    out = Path(results_dir) / "paper" if results_dir else repo_root() / "results" / "paper"
    ref = Path(reference_dir) if reference_dir else shared_dir() / "reference"
    if refresh and (ref / "netvlad_fig5.csv").is_file():
        write_paper_reference(out, ref)
    committed = repo_root() / "results" / "paper"
    folder = next((f for f in (out, committed) if (f / PAPER_FILE).is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"neither the project's copy {out / PAPER_FILE} (or {committed / PAPER_FILE}) nor "
                                f"the reference {ref / 'netvlad_fig5.csv'} exists")
    paper = pd.read_csv(folder / PAPER_FILE, dtype={"trained": str}, keep_default_na=False, na_values={"dim": [""]})
    paper["dim"] = paper["dim"].astype("Int64")
    cs = pd.read_csv(folder / CS4240_FILE, dtype={"trained": str}) if (folder / CS4240_FILE).is_file() else None
    return paper, cs


# ---------------------------------------------------------------------------
# the summary


def _train_dataset_label(rec: dict) -> str:
    from repro.experiments import dataset_label

    cfg = rec.get("config", {})
    if rec.get("dataset") == "synthetic" and cfg.get("data_root"):
        return f"synthetic_{Path(cfg['data_root']).name}"
    if rec.get("dataset") != "synthetic":  # the record's own flag: its data_root may be relative to another clone
        return f"synthetic_{rec['dataset']}" if rec.get("synthetic") else rec.get("dataset", "?")
    return dataset_label("synthetic", cfg.get("synthetic_preset", "default"), cfg.get("city_seed", 0))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def collect_summary(results_dir=None) -> pd.DataFrame:
    """Every result under ``results_dir`` as one tidy table (see module doc).

    Reads ``train/*.json`` (complete trainer records), ``alpha_sweep/*.json``,
    ``fmax_output_size/*.json`` and ``calibration/*.csv`` (overall rows).
    """
    from repro.experiments import record_test_sets, train_rows

    results = Path(results_dir) if results_dir else repo_root() / "results"
    base = results.parent
    rows = []

    def add(rec_rows, experiment, dataset, split, synthetic, seed, source, commit, run=None, cid=None):
        for r in rec_rows:
            rows.append({"experiment": experiment, "run": run or Path(source).stem, "dataset": dataset, "split": split,
                         "synthetic": bool(synthetic), "seed": seed, "config_id": cid, "source": _rel(source, base),
                         "git_commit": commit, **r})

    for p in sorted((results / "train").glob("*.json")):
        rec = _read_json(p)
        if not rec or rec.get("status") != "complete":
            continue
        for t in record_test_sets(rec):  # its own test split, and any test_on set (Tokyo 24/7 for TokyoTM)
            add(train_rows(rec, t["test_set"]), "train", t["dataset"], t["split"], t["synthetic"], rec.get("seed"), p,
                rec.get("git_commit"), rec.get("run_name"), config_id(rec.get("config", {})))
    for exp in ("alpha_sweep", "fmax_output_size"):
        for p in sorted((results / exp).glob("*.json")):
            rec = _read_json(p)
            if not rec or "rows" not in rec:
                continue
            extra = ({"alpha_rule": rec.get("alpha_rule"), "is_rule_alpha": bool(rec.get("is_rule_alpha"))}
                     if exp == "alpha_sweep" else {})
            add([{**r, **extra} for r in rec["rows"]], exp, rec["dataset"], rec.get("split", "test"),
                rec.get("synthetic", False), rec.get("seed"), p, rec.get("git_commit"))
    for p in sorted((results / "calibration").glob("*.csv")):
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
                     "method": r.method, "n": int(r.n), "recall_pct": float(r.recall_pct),
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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_summary(results_dir=None) -> tuple[Path, pd.DataFrame]:
    results = Path(results_dir) if results_dir else repo_root() / "results"
    df = collect_summary(results)
    return atomic_write_text(results / "summary.csv", df.to_csv(index=False)), df


# ---------------------------------------------------------------------------
# the claims


CLAIMS = [
    ("netvlad_vs_fmax", "NetVLAD beats f_max"),
    ("trained_vs_off_the_shelf", "Training beats off-the-shelf"),
    ("whitening_equal_dim", "Whitening helps at equal dimension"),
    ("vgg16_vs_alexnet", "VGG-16 beats AlexNet"),
    ("alpha_rule_near_best", "alpha from the rule is near the best of the sweep"),
]
SUPPORT_NS = (1, 5, 10)


def _at(df: pd.DataFrame, n: int) -> float | None:
    v = df.loc[df["n"] == n, "recall_pct"]
    return float(v.iloc[0]) if len(v) else None


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def compare(a: pd.DataFrame, b: pd.DataFrame, ns=SUPPORT_NS) -> tuple[str, str]:
    """(verdict, "R@1/5/10 a vs b") for two curves (rows with n, recall_pct):
    "yes" when ``a`` is at least as high at every N and higher at one, "no"
    when it is at most as high everywhere (a tie everywhere is "no": nothing
    is beaten), "mixed" when each is higher somewhere."""
    pairs = [(n, _at(a, n), _at(b, n)) for n in ns]
    pairs = [(n, x, y) for n, x, y in pairs if x is not None and y is not None]
    if not pairs:
        return "not tested", ""
    text = "R@" + "/".join(str(n) for n, _, _ in pairs) + " " + "/".join(_fmt(x) for _, x, _ in pairs) + \
        " vs " + "/".join(_fmt(y) for _, _, y in pairs)
    higher = sum(x > y for _, x, y in pairs)
    lower = sum(x < y for _, x, y in pairs)
    if higher and not lower:
        return "yes", text
    if lower and higher:
        return "mixed", text
    return "no", text + (" (tie)" if not lower else "")


PAPER_PAIRS = {  # claim -> (legend a, legend b) in Figure 5, per pooling where it matters
    ("netvlad_vs_fmax", None): ("f_VLAD ours (V)", "f_max ours (V)"),
    ("trained_vs_off_the_shelf", "netvlad"): ("f_VLAD ours (V)", "f_VLAD VGG-16 (V)"),
    ("trained_vs_off_the_shelf", "fmax"): ("f_max ours (V)", "f_max VGG-16 (V)"),
    ("whitening_equal_dim", None): ("f_VLAD ours (V)+white", "f_VLAD ours (V)"),
    ("vgg16_vs_alexnet", "netvlad"): ("f_VLAD ours (V)", "f_VLAD ours (A)"),
    ("vgg16_vs_alexnet", "fmax"): ("f_max ours (V)", "f_max ours (A)"),
}


def _paper_evidence(paper: pd.DataFrame | None, claim: str, pooling: str | None = None) -> str:
    """The paper's side of a claim, from Figure 5 (Pitts30k-test, R@1/5/10)."""
    if claim == "alpha_rule_near_best":
        return "the paper sets alpha by its rule and shows no sweep"
    if paper is None or paper.empty:
        return ""
    pair = PAPER_PAIRS.get((claim, pooling)) or PAPER_PAIRS.get((claim, None)) or PAPER_PAIRS.get((claim, "netvlad"))
    if not pair:
        return ""
    p = paper[paper["dataset"] == "pitts30k"]
    a, b = p[p["legend"] == pair[0]], p[p["legend"] == pair[1]]
    verdict, text = compare(a, b)
    if not text:
        return ""
    if claim == "whitening_equal_dim":  # Figure 5 has no equal-dimension pair
        return (f"Fig. 5b has no equal-dimension pair; {pair[0]} (4096-D) vs {pair[1]} (32768-D), "
                f"Pitts30k-test {text}")
    return f"{verdict}: {pair[0]} vs {pair[1]}, Pitts30k-test {text} (Fig. 5b)"


def _row(claim_id, claim, dataset, synthetic, verdict, ours, note, paper, pooling=None) -> dict:
    return {"claim_id": claim_id, "claim": claim, "dataset": dataset, "synthetic": synthetic, "supported": verdict,
            "ours": ours, "note": note, "paper": _paper_evidence(paper, claim_id, pooling)}


def _curve(df, **eq) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for k, v in eq.items():
        m &= df[k].isna() if v is None else (df[k] == v)
    return df[m]


def claims_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None, tolerance_se: float = 1.0) -> pd.DataFrame:
    """One row per claim and dataset with evidence; a "not tested" row for a
    claim no dataset tests. ``supported``: yes / no / mixed / not tested.

    Evidence, always within one dataset and split:
      NetVLAD vs f_max      trained NetVLAD vs trained f_max 1x1 (training runs),
                            else off-the-shelf (same base)
      training              trained vs untrained NetVLAD (training runs)
      whitening             NetVLAD PCA-whitened vs plain PCA, at each common
                            dimension (f_max output-size experiment), by R@1
      VGG-16 vs AlexNet     same experiment, pooling and training state
      alpha rule            R@1 at the rule's alpha within ``tolerance_se``
                            binomial standard errors of the best swept alpha
    """
    out = []
    s = summary.copy()
    if s.empty:
        return pd.DataFrame([_row(cid, c, "-", None, "not tested", "", "no results yet", paper) for cid, c in CLAIMS])
    s["key"] = s["dataset"].astype(str) + " (" + s["split"].astype(str) + ")"
    for key, d in s.groupby("key", sort=False):
        syn = bool(d["synthetic"].iloc[0])
        tr = d[d["experiment"] == "train"]
        fo = d[d["experiment"] == "fmax_output_size"]
        # 1. NetVLAD vs f_max: trained runs of one config (each from its own
        #    initialisation), and off-the-shelf on one and the same base
        #    (the output-size experiment)
        for (cid, bb), g in tr.groupby(["config_id", "backbone"]):
            nv = _pick_run(_curve(g, pooling="netvlad", trained=True, whitened=False))
            fm = _pick_run(_curve(g, pooling="fmax", trained=True, whitened=False))
            if nv.empty or fm.empty:
                continue
            v, t = compare(nv, fm)
            out.append(_row("netvlad_vs_fmax", CLAIMS[0][1], key, syn, v, t,
                            f"{bb}, both trained ({_dims(nv, bb)} vs {_dims(fm, bb)}-D; runs {nv['run'].iloc[0]}, "
                            f"{fm['run'].iloc[0]})", paper))
        for bb, g in fo.groupby("backbone"):
            a, b = g[g["variant"] == "NetVLAD"], g[g["variant"] == "f_max 1x1"]
            if not a.empty and not b.empty:
                v, t = compare(a, b)
                out.append(_row("netvlad_vs_fmax", CLAIMS[0][1], key, syn, v, t,
                                f"{bb}, both off-the-shelf on the same base ({_dims(a, bb)} vs {_dims(b, bb)}-D)", paper))
        # 2. trained vs off-the-shelf, per training run (replicates counted once)
        for run, g in dedupe_runs(tr).groupby("run", sort=False):
            a, b = _curve(g, trained=True, whitened=False), _curve(g, trained=False)
            if a.empty or b.empty:
                continue
            pooling, bb = a["pooling"].iloc[0], a["backbone"].iloc[0]
            v, t = compare(a, b)
            out.append(_row("trained_vs_off_the_shelf", CLAIMS[1][1], key, syn, v, t,
                            f"{bb} + {pooling}, trained vs its initialisation (run {run})", paper, pooling))
        # 3. whitening at equal dimension
        white = fo[fo["variant"] == "NetVLAD + PCA-whitening"]
        plain = fo[fo["variant"] == "NetVLAD + PCA"]
        fmax = fo[fo["pooling"] == "fmax"]
        dims = sorted(set(white["dim"]) & set(plain["dim"]))
        if dims:
            r1 = [( dm, _at(white[white["dim"] == dm], 1), _at(plain[plain["dim"] == dm], 1)) for dm in dims]
            wins = sum(x > y for _, x, y in r1)
            losses = sum(x < y for _, x, y in r1)
            v = "yes" if wins == len(r1) else "no" if losses == len(r1) else "mixed"
            t = "R@1 whitened vs PCA only: " + ", ".join(f"{dm}-D {_fmt(x)} vs {_fmt(y)}" for dm, x, y in r1)
            eq = sorted(set(white["dim"]) & set(fmax["dim"]))
            note = "off-the-shelf NetVLAD, PCA fitted on training database images"
            if eq:
                note += "; vs f_max at equal dimension: " + ", ".join(
                    f"{dm}-D {_fmt(_at(white[white['dim'] == dm], 1))} vs {_fmt(_at(fmax[fmax['dim'] == dm], 1))}"
                    for dm in eq)
            out.append(_row("whitening_equal_dim", CLAIMS[2][1], key, syn, v, t, note, paper))
        # 4. VGG-16 vs AlexNet: curves that differ only in the backbone
        curves = _single_model_curves(d).assign(cid=lambda x: x["config_id"].fillna("-"))
        for (exp, cid, pooling, trained, variant), g in curves.groupby(
                ["experiment", "cid", "pooling", "trained", "variant"]):
            a, b = _pick_run(g[g["backbone"] == "vgg16"]), _pick_run(g[g["backbone"] == "alexnet"])
            if a.empty or b.empty:
                continue
            v, t = compare(a, b)
            random_init = exp == "calibration" or syn
            out.append(_row("vgg16_vs_alexnet", CLAIMS[3][1], key, syn, v, t,
                            f"{pooling}, {'trained' if trained else 'off-the-shelf'} ({exp}, {variant})"
                            + ("; random-init bases, not the paper's ImageNet setting" if random_init else "")
                            + "; torchvision's AlexNet, not the authors' CaffeNet (other widths, no LRN)", paper,
                            pooling))
        # 5. alpha rule near the best of the sweep
        sw = d[(d["experiment"] == "alpha_sweep") & (d["n"] == 1)]
        for (bb, trained), g in sw.groupby(["backbone", "trained"]):
            if g["alpha"].nunique() < 2:
                continue
            best = g.loc[g["recall_pct"].idxmax()]
            rule_rows = g[g["is_rule_alpha"].fillna(False).astype(bool)] if "is_rule_alpha" in g else g.iloc[0:0]
            what = f"{bb}, {'trained' if trained else 'off-the-shelf'}, {g['alpha'].nunique()} alphas"
            if rule_rows.empty:
                out.append(_row("alpha_rule_near_best", CLAIMS[4][1], key, syn, "not tested",
                                f"best R@1 {_fmt(best['recall_pct'])} at alpha {best['alpha']:.3g}",
                                what + "; no run at the rule's alpha", paper))
                continue
            rule = rule_rows.iloc[0]
            nq = best.get("num_queries")
            p = best["recall_pct"] / 100.0
            se = 100.0 * math.sqrt(p * (1 - p) / nq) if nq and pd.notna(nq) else 0.0
            gap = float(best["recall_pct"] - rule["recall_pct"])
            v = "yes" if gap <= tolerance_se * se + 1e-9 else "no"
            t = (f"R@1 {_fmt(rule['recall_pct'])} at the rule's alpha {rule['alpha']:.3g} vs best "
                 f"{_fmt(best['recall_pct'])} at alpha {best['alpha']:.3g} (gap {gap:.1f}; "
                 f"near = within {tolerance_se:g} binomial s.e. = {se:.1f})")
            out.append(_row("alpha_rule_near_best", CLAIMS[4][1], key, syn, v, t, what, paper))
    table = pd.DataFrame(out)
    tested = set(table["claim_id"]) if not table.empty else set()
    missing = [_row(cid, c, "-", None, "not tested", "", _why_not(cid), paper) for cid, c in CLAIMS if cid not in tested]
    table = pd.concat([table, pd.DataFrame(missing)], ignore_index=True) if missing else table
    order = {cid: i for i, (cid, _) in enumerate(CLAIMS)}
    table["_o"] = table["claim_id"].map(order)
    return table.sort_values(["_o", "synthetic"], kind="stable").drop(columns="_o").reset_index(drop=True)


def dedupe_runs(train_rows: pd.DataFrame) -> pd.DataFrame:
    """Training rows with one run per (config, backbone, pooling): runs of one
    configuration are replicates (training is deterministic), see :func:`_pick_run`."""
    if train_rows.empty:
        return train_rows
    keys = train_rows.assign(_c=train_rows["config_id"].fillna("-"))
    return pd.concat([_pick_run(g) for _, g in keys.groupby(["_c", "backbone", "pooling"], sort=False)]).drop(
        columns="_c")


def _pick_run(g: pd.DataFrame) -> pd.DataFrame:
    """One run of several replicates (equal config): the pipeline's own
    (named ``{dataset}_{backbone}_{pooling}_seed{seed}``) if there, else the
    first by name."""
    runs = sorted(set(g["run"].dropna()))
    if len(runs) <= 1:
        return g
    own = [r for r in runs if any(r == f"{row.dataset}_{row.backbone}_{row.pooling}_seed{row.seed}"
                                  for row in g.drop_duplicates("run").itertuples())]
    return g[g["run"] == (own or runs)[0]]


def _single_model_curves(d: pd.DataFrame) -> pd.DataFrame:
    """Rows of one-model-per-backbone curves: training runs (unwhitened),
    calibration, the rule-alpha point of a sweep, NetVLAD and f_max 1x1 of the
    output-size experiment."""
    keep = ((d["experiment"] == "train") & (d["whitened"] != True)) | (d["experiment"] == "calibration")  # noqa: E712
    if "is_rule_alpha" in d:
        keep |= (d["experiment"] == "alpha_sweep") & d["is_rule_alpha"].fillna(False).astype(bool)
    keep |= (d["experiment"] == "fmax_output_size") & d["variant"].isin(["NetVLAD", "f_max 1x1"])
    return d[keep]


def _dims(df, bb) -> str:
    return "/".join(str(int(x)) for x in sorted(set(df[df["backbone"] == bb]["dim"].dropna())))


def _why_not(claim_id: str) -> str:
    return {
        "netvlad_vs_fmax": "no trained NetVLAD and f_max pair on one dataset",
        "trained_vs_off_the_shelf": "no training run",
        "whitening_equal_dim": "no f_max output-size experiment",
        "vgg16_vs_alexnet": "no VGG-16 run beside an AlexNet run on one dataset (VGG-16 needs ImageNet "
                            "weights and a GPU to be meaningful: the paper profile)",
        "alpha_rule_near_best": "no alpha sweep with a run at the rule's alpha",
    }[claim_id]


# ---------------------------------------------------------------------------
# README


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if (isinstance(v, float) and math.isnan(v)) or v is None else str(v)
                                       for v in r) + " |")
    return "\n".join(lines)


def _fmt_alpha(a) -> str:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return ""
    t = f"{float(a):.4g}"
    return f"{float(a):.0f}" if "e" in t else t


def main_results_table(summary: pd.DataFrame, ns=(1, 5, 10)) -> pd.DataFrame:
    """Recall@1/5/10 of the training runs (off-the-shelf and trained) and the
    best off-the-shelf point of each other experiment, one row per model."""
    if summary.empty:
        return pd.DataFrame()
    s = summary[summary["n"].isin(ns)].copy()
    s["data"] = s["dataset"] + " " + s["split"] + np.where(s["synthetic"], " (synthetic)", "")
    s["alpha"] = s["alpha"].map(_fmt_alpha)
    keys = ["data", "experiment", "run", "backbone", "pooling", "variant", "dim", "trained", "alpha"]
    wide = s.pivot_table(index=keys, columns="n", values="recall_pct", aggfunc="first").reset_index()
    wide.columns = [f"R@{c}" if isinstance(c, (int, np.integer)) else c for c in wide.columns]
    for n in ns:
        wide[f"R@{n}"] = wide[f"R@{n}"].map(lambda v: f"{v:.1f}")
    wide["dim"] = wide["dim"].map(lambda v: str(int(v)) if pd.notna(v) else "")
    wide["trained"] = wide["trained"].map({True: "yes", False: "no"})
    return wide


def load_runtimes(folder) -> pd.DataFrame:
    """Measured runtimes of the pipeline's profiles (``results/runtimes/*.json``):
    one row per profile and notebook (alpha-sweep runs summed), plus a
    ``(whole profile)`` row with the wall time of the last full run."""
    rows = []
    for p in sorted(Path(folder).glob("*.json")):
        rec = _read_json(p)
        if not rec:
            continue
        prof = rec.get("profile", p.stem)
        per_nb: dict[str, list] = {}
        stems = sorted((q.stem for q in (repo_root() / "notebooks").glob("*.ipynb")), key=len, reverse=True)
        for name, r in rec.get("runs", {}).items():
            key = next((st for st in stems if name == st or name.startswith(st + "_")), name)
            per_nb.setdefault(key, []).append(float(r["seconds"]))
        for nb, secs in sorted(per_nb.items()):
            rows.append({"profile": prof, "notebook": nb, "runs": len(secs), "seconds": sum(secs)})
        fulls = [rec.get("full_run_fresh")]
        if rec.get("full_run") and rec.get("full_run") != rec.get("full_run_fresh"):
            fulls.append(rec["full_run"])
        for full in filter(None, fulls):
            caches = full.get("caches_at_start")
            cond = ("from a fresh tree (no caches)" if caches == [] else
                    f"caches present: {', '.join(caches)}" if caches else "")
            if full.get("not_available"):
                cond += ("; " if cond else "") + "not run here (data absent): " + ", ".join(full["not_available"])
            rows.append({"profile": prof, "notebook": "(whole profile)",
                         "runs": len(set(rec.get("runs", {})) - set(full.get("not_available", []))),
                         "seconds": float(full["wall_seconds"]), "cpu_count": full.get("cpu_count"),
                         "finished": full.get("finished"), "conditions": cond})
    return pd.DataFrame(rows)


def runtimes_markdown(rt: pd.DataFrame) -> str:
    if rt is None or rt.empty:
        return ""
    t = rt.copy()
    t["minutes"] = (t["seconds"] / 60).map(lambda v: f"{v:.1f}")
    if "cpu_count" in t:
        t["CPUs"] = t["cpu_count"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    if "conditions" not in t:
        t["conditions"] = ""
    t["conditions"] = t["conditions"].fillna("")
    cols = ["profile", "notebook", "runs", "minutes"] + (["CPUs"] if "CPUs" in t else []) + ["conditions"]
    return _md_table(t[cols])


def readme_section(summary: pd.DataFrame, claims: pd.DataFrame, command: str, runtimes: pd.DataFrame | None = None) -> str:
    """The markdown between the README markers."""
    parts = [f"_Generated from `results/` by `{command}`; do not edit by hand. "
             "Synthetic-city numbers are labelled (synthetic) and say nothing directly about Pittsburgh._", ""]
    main = main_results_table(dedupe_runs(summary[summary["experiment"] == "train"])) if not summary.empty \
        else pd.DataFrame()
    if not main.empty:
        parts += ["**Training runs (`results/train/`; 02_train makes the `..._seed0` ones): off-the-shelf vs trained, test split**", "", _md_table(main.drop(columns=["experiment"])), ""]
    sweep = summary[(summary["experiment"] == "alpha_sweep") & summary["n"].isin([1, 5, 10])] if not summary.empty else summary
    if not sweep.empty:
        t = main_results_table(sweep)
        t = t.assign(_a=t["alpha"].astype(float)).sort_values(["data", "trained", "_a"]).drop(
            columns=["_a", "experiment", "variant", "run"])
        parts += ["**alpha sweep (03), NetVLAD**", "", _md_table(t), ""]
    fo = summary[(summary["experiment"] == "fmax_output_size")] if not summary.empty else summary
    if not fo.empty:
        t = main_results_table(fo)
        t = t.assign(_d=t["dim"].astype(int)).sort_values(["data", "variant", "_d"]).drop(
            columns=["_d", "experiment", "alpha", "run"])
        parts += ["**f_max output size and NetVLAD reductions (04), off-the-shelf**", "", _md_table(t), ""]
    if claims is not None and not claims.empty:
        c = claims[["claim", "dataset", "supported", "ours", "note", "paper"]].copy()
        parts += ["**The paper's claims**", "", _md_table(c), ""]
    if runtimes is not None and not runtimes.empty:
        parts += ["**Measured runtimes** (wall clock of the last run of each notebook, including its kernel "
                  "start; the whole profile: the last invocation that ran every notebook, with `--force`; "
                  "`results/runtimes/`)", "", runtimes_markdown(runtimes), ""]
    return "\n".join(parts).rstrip() + "\n"


def update_readme(readme, section: str) -> bool:
    """Replace the text between the results markers (appending the markers
    at the end if absent); returns whether the file changed."""
    readme = Path(readme)
    text = readme.read_text() if readme.is_file() else ""
    block = f"{README_START}\n{section}{README_END}"
    if README_START in text and README_END in text:
        new = re.sub(re.escape(README_START) + r".*?" + re.escape(README_END), lambda _: block, text, count=1,
                     flags=re.S)
    else:
        new = text.rstrip("\n") + "\n\n" + block + "\n"
    if new != text:
        atomic_write_text(readme, new)
        return True
    return False


def write_claims(results_dir=None, summary: pd.DataFrame | None = None, paper: pd.DataFrame | None = None):
    results = Path(results_dir) if results_dir else repo_root() / "results"
    summary = collect_summary(results) if summary is None else summary
    table = claims_table(summary, paper)
    return atomic_write_text(results / "claims.csv", table.to_csv(index=False)), table
