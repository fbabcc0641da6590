"""``results/claims.csv``: each of the paper's claims, checked against our runs.

:func:`claims_table` gives one row per claim and dataset, saying whether
our runs support it, with the numbers and the paper's own evidence
(Figure 5, :mod:`repro.report.reference`).

Where both sides of a comparison are training runs, whose records hold the
per-query ranks of their test queries, the verdict follows the interval
rule of :mod:`repro.report.intervals` (a paired bootstrap over the test
queries: ``diff_r1, low_r1, high_r1, ...`` in points); elsewhere (result
files without per-query ranks: the alpha sweep, the output-size experiment,
the calibration) it is a comparison of point estimates. ``verdict_rule``
says which rule each row follows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import repo_root
from repro.report.intervals import LEVEL, RESAMPLES, VERDICT_RULE, paired_bootstrap, verdict
from repro.report.names import train_dataset_label
from repro.report.summary import collect_summary, dedupe_runs, pick_run

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


POINT_RULE = ("point estimates (these result files hold no per-query ranks): yes when higher at every N of "
              "R@1/5/10, no when nowhere higher, mixed otherwise")
INTERVAL_RULE = (f"paired bootstrap over the test queries ({RESAMPLES} resamples, seeded), {LEVEL:.0%} interval "
                 f"of the difference at R@1/5/10; {VERDICT_RULE}")


def _row(claim_id, claim, dataset, synthetic, verdict, ours, note, paper, pooling=None, intervals=None) -> dict:
    row = {"claim_id": claim_id, "claim": claim, "dataset": dataset, "synthetic": synthetic, "supported": verdict,
           "ours": ours, "note": note, "paper": _paper_evidence(paper, claim_id, pooling),
           "verdict_rule": INTERVAL_RULE if intervals else POINT_RULE}
    for n in SUPPORT_NS:
        iv = (intervals or {}).get(n, {})
        for k in ("diff", "low", "high"):
            row[f"{k}_r{n}"] = iv.get(k, np.nan)
    return row


def _test_ranks(results_dir, source: str, dataset: str, trained: bool):
    """Per-query test ranks of a training record (``source``, relative to the
    folder holding ``results_dir``, as the summary stores it) on ``dataset`` (its own test split or a ``test_on``
    set), trained or untrained; None when the record has none."""
    if results_dir is None or not isinstance(source, str):
        return None
    try:
        rec = json.loads((Path(results_dir).parent / source).read_text())
    except (OSError, ValueError):
        return None
    if train_dataset_label(rec) == dataset:
        res = rec.get("test" if trained else "test_untrained")
    else:
        res = next((t.get("trained" if trained else "untrained") for t in (rec.get("test_on") or {}).values()
                    if (f"synthetic_{t['dataset']}" if t.get("synthetic") else t["dataset"]) == dataset), None)
    ranks = (res or {}).get("ranks")
    return np.asarray(ranks, dtype=np.int64) if ranks else None


def _intervals(a_ranks, b_ranks):
    """The paired bootstrap of a minus b (None where either side has no ranks)."""
    if a_ranks is None or b_ranks is None or len(a_ranks) != len(b_ranks):
        return None
    return paired_bootstrap(a_ranks, b_ranks, SUPPORT_NS, seed=0)


def _interval_text(intervals) -> str:
    return "; difference [95% interval] " + ", ".join(
        f"R@{n} {iv['diff']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}]" for n, iv in intervals.items())


def _curve(df, **eq) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for k, v in eq.items():
        m &= df[k].isna() if v is None else (df[k] == v)
    return df[m]


def claims_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None, tolerance_se: float = 1.0,
                 results_dir=None) -> pd.DataFrame:
    """One row per claim and dataset with evidence; a "not tested" row for a
    claim no dataset tests. ``supported``: yes / no / mixed / not tested, or
    (with ``results_dir``, where both sides are training runs with per-query
    ranks) yes / no / mixed / not significant by the interval rule.

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
            nv = pick_run(_curve(g, pooling="netvlad", trained=True, whitened=False))
            fm = pick_run(_curve(g, pooling="fmax", trained=True, whitened=False))
            if nv.empty or fm.empty:
                continue
            v, t = compare(nv, fm)
            ds = nv["dataset"].iloc[0]
            iv = _intervals(_test_ranks(results_dir, nv["source"].iloc[0], ds, True),
                            _test_ranks(results_dir, fm["source"].iloc[0], ds, True))
            if iv:
                v, t = verdict(iv), t + _interval_text(iv)
            out.append(_row("netvlad_vs_fmax", CLAIMS[0][1], key, syn, v, t,
                            f"{bb}, both trained ({_dims(nv, bb)} vs {_dims(fm, bb)}-D; runs {nv['run'].iloc[0]}, "
                            f"{fm['run'].iloc[0]})", paper, intervals=iv))
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
            ds, src = a["dataset"].iloc[0], a["source"].iloc[0]
            iv = _intervals(_test_ranks(results_dir, src, ds, True), _test_ranks(results_dir, src, ds, False))
            if iv:
                v, t = verdict(iv), t + _interval_text(iv)
            out.append(_row("trained_vs_off_the_shelf", CLAIMS[1][1], key, syn, v, t,
                            f"{bb} + {pooling}, trained vs its initialisation (run {run})", paper, pooling,
                            intervals=iv))
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
            a, b = pick_run(g[g["backbone"] == "vgg16"]), pick_run(g[g["backbone"] == "alexnet"])
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


def write_claims(results_dir=None, summary: pd.DataFrame | None = None, paper: pd.DataFrame | None = None):
    results = Path(results_dir) if results_dir else repo_root() / "results"
    summary = collect_summary(results) if summary is None else summary
    table = claims_table(summary, paper, results_dir=results)
    return atomic_write_text(results / "claims.csv", table.to_csv(index=False)), table
