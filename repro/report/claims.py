"""``results/claims.csv``: each of the paper's claims, checked against our runs.

:func:`claims_table` gives one row per claim and dataset, saying whether
our runs support it, with the numbers and the paper's own evidence
(Figure 5, :mod:`repro.report.reference`).

Where the result files of both sides hold the per-query ranks of their
test queries (training records, the alpha sweep, the output-size
experiment, the calibration's ``*_ranks.json``, the real-image records),
the verdict follows the interval rule of :mod:`repro.report.intervals`: a
paired bootstrap over the test queries, and over the training seeds where a
recipe was trained with several (``diff_r1, low_r1, high_r1, ...`` in
points); the alpha claim has its own rule (:data:`NEAR_INTERVAL_RULE`).
Result files without ranks (older ones) fall back to comparing point
estimates. ``verdict_rule`` says which rule each row follows.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import repo_root
from repro.report.intervals import (
    LEVEL,
    NEAR_RULE,
    RESAMPLES,
    VERDICT_RULE,
    gap_to_best,
    near_verdict,
    paired_bootstrap,
    verdict,
)
from repro.report.names import read_json, train_dataset_label
from repro.report.summary import collect_summary, pick_run

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
INTERVAL_RULE = (f"paired bootstrap over the test queries ({RESAMPLES} resamples, seeded; training seeds resampled too "
                 f"where there are several), {LEVEL:.0%} interval of the difference at R@1/5/10; {VERDICT_RULE}")
NEAR_INTERVAL_RULE = (f"bootstrap over the test queries ({RESAMPLES} resamples, seeded) of the rule's recall minus the "
                      f"best other swept alpha's, at R@1/5/10; {NEAR_RULE}")
NEAR_POINT_RULE = "point estimates: yes when R@1 at the rule's alpha is within {tol:g} binomial s.e. of the best"


def _row(claim_id, claim, dataset, synthetic, verdict, ours, note, paper, pooling=None, intervals=None,
         rule=None) -> dict:
    row = {"claim_id": claim_id, "claim": claim, "dataset": dataset, "synthetic": synthetic, "supported": verdict,
           "ours": ours, "note": note, "paper": _paper_evidence(paper, claim_id, pooling),
           "verdict_rule": rule or (INTERVAL_RULE if intervals else POINT_RULE)}
    for n in SUPPORT_NS:
        iv = (intervals or {}).get(n, {})
        for k in ("diff", "low", "high"):
            row[f"{k}_r{n}"] = iv.get(k, np.nan)
    return row


# ---------------------------------------------------------------------------
# per-query ranks of a summary curve, from its result file

def _read_json(path: str) -> dict | None:
    """A result file, parsed once per version (its size and modification time key the cache)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _parse_json(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _parse_json(path: str, mtime_ns: int, size: int) -> dict | None:
    return read_json(Path(path))


def _test_ranks(results_dir, source: str, dataset: str, trained: bool):
    """Per-query test ranks of a training record (``source``, relative to the
    folder holding ``results_dir``, as the summary stores it) on ``dataset`` (its own test split or a ``test_on``
    set), trained or untrained; None when the record has none."""
    if results_dir is None or not isinstance(source, str):
        return None
    rec = _read_json(str(Path(results_dir).parent / source))
    if rec is None:
        return None
    if train_dataset_label(rec) == dataset:
        res = rec.get("test" if trained else "test_untrained")
    else:
        res = next((t.get("trained" if trained else "untrained") for t in (rec.get("test_on") or {}).values()
                    if (f"synthetic_{t['dataset']}" if t.get("synthetic") else t["dataset"]) == dataset), None)
    ranks = (res or {}).get("ranks")
    return np.asarray(ranks, dtype=np.int64) if ranks else None


def curve_ranks(results_dir, curve: pd.DataFrame):
    """[Q] per-query ranks of one model's curve (summary rows of one run,
    variant and dimension) from its result file, or None (no ``results_dir``,
    no such file, a file without ranks): training records (``test`` /
    ``test_untrained``), alpha-sweep records (``ranks``), output-size records
    (``query_ranks`` by variant and dimension), the calibration's
    ``*_ranks.json`` and any record with a ``ranks`` dict named by the row's
    ``ranks_key`` (the real-image track)."""
    if results_dir is None or curve.empty:
        return None
    row = curve.iloc[0]
    source, exp = row.get("source"), row.get("experiment")
    if not isinstance(source, str):
        return None
    if exp == "train":
        if bool(row.get("whitened")) is True:
            return None
        return _test_ranks(results_dir, source, row["dataset"], bool(row["trained"]))
    path = Path(results_dir).parent / source
    key = row.get("ranks_key")
    if exp == "calibration":
        from repro.data.synthetic.calibration import ranks_path

        ranks = ((_read_json(str(ranks_path(path))) or {}).get("ranks") or {}).get(key)
    else:
        rec = _read_json(str(path)) or {}
        if isinstance(key, str):
            ranks = (rec.get("ranks") or {}).get(key) if isinstance(rec.get("ranks"), dict) else None
        elif exp == "alpha_sweep":
            ranks = rec.get("ranks")
        elif exp == "fmax_output_size":
            ranks = next((q["ranks"] for q in rec.get("query_ranks") or []
                          if q["variant"] == row["variant"] and int(q["dim"]) == int(row["dim"])), None)
        else:
            ranks = None
    return np.asarray(ranks, dtype=np.int64) if ranks else None


def _seed_ranks(results_dir, curves: list[pd.DataFrame]):
    """[S, Q] ranks of one model over its seeds (one curve each), or None when any has none."""
    ranks = [curve_ranks(results_dir, c) for c in curves]
    if not ranks or any(r is None for r in ranks) or len({len(r) for r in ranks}) != 1:
        return None
    return np.stack(ranks)


def _intervals(a_ranks, b_ranks):
    """The paired bootstrap of a minus b (None where either side has no ranks)."""
    if a_ranks is None or b_ranks is None or np.shape(a_ranks)[-1] != np.shape(b_ranks)[-1]:
        return None
    return paired_bootstrap(a_ranks, b_ranks, SUPPORT_NS, seed=0)


def _interval_text(intervals) -> str:
    return "; difference [95% interval] " + ", ".join(
        f"R@{n} {iv['diff']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}]" for n, iv in intervals.items())


def _judge(a: pd.DataFrame, b: pd.DataFrame, a_ranks, b_ranks):
    """(verdict, text, intervals): by the interval rule where both have ranks, else by point estimates."""
    v, t = compare(a, b)
    iv = _intervals(a_ranks, b_ranks)
    if iv:
        v, t = verdict(iv), t + _interval_text(iv)
    return v, t, iv


def _curve(df, **eq) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for k, v in eq.items():
        m &= df[k].isna() if v is None else (df[k] == v)
    return df[m]


def _by_seed(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """One curve per training seed (one run each: replicates of one seed counted once)."""
    return [pick_run(g) for _, g in rows.groupby(rows["seed"].fillna(-1), sort=True)]


def _mean_curve(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean over seeds at each N (for the point comparison and the text)."""
    return pd.concat(curves).groupby("n", as_index=False)["recall_pct"].mean()


def _seeds_text(curves: list[pd.DataFrame]) -> str:
    seeds = [int(c["seed"].iloc[0]) for c in curves if pd.notna(c["seed"].iloc[0])]
    if len(curves) < 2:
        return f"seed {seeds[0]}" if seeds else "one run"
    r1 = [_at(c, 1) for c in curves]
    sd = float(np.std([x for x in r1 if x is not None], ddof=1))
    return (f"mean of {len(curves)} seeds ({', '.join(map(str, seeds))}): R@1 per seed "
            + "/".join(_fmt(x) for x in r1) + f", s.d. {sd:.1f}")


def _runs_text(curves: list[pd.DataFrame]) -> str:
    """The runs of one recipe, their seed suffixes collapsed: ``..._netvlad_seed{0,1,2}``."""
    import re

    runs = sorted(set(pd.concat(curves)["run"].dropna()))
    stems: dict[str, list[str]] = {}
    for r in runs:
        m = re.fullmatch(r"(.*_seed)(\d+)", r)
        stems.setdefault(m.group(1) if m else r, []).extend([m.group(2)] if m else [])
    return ", ".join(f"{st}{{{','.join(sd)}}}" if len(sd) > 1 else st + "".join(sd) for st, sd in stems.items())


def _recipe(df: pd.DataFrame) -> pd.Series:
    """Runs that differ only in their training seed share a recipe (older summaries: the config id)."""
    none = pd.Series(np.nan, index=df.index, dtype=object)
    return df.get("recipe_id", none).fillna(df.get("config_id", none)).fillna("-")


def claims_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None, tolerance_se: float = 1.0,
                 results_dir=None) -> pd.DataFrame:
    """One row per claim and dataset (and dimension, for whitening) with
    evidence; a "not tested" row for a claim no dataset tests.

    With ``results_dir`` (the folder the summary's ``source`` paths are
    relative to the parent of), every comparison whose result files hold
    per-query ranks follows the interval rule (:data:`INTERVAL_RULE`; the
    alpha claim :data:`NEAR_INTERVAL_RULE`), training runs pooled over their
    seeds; without ranks, point estimates (:data:`POINT_RULE`).
    ``supported``: yes / no / mixed / not significant / not tested.

    Evidence, always within one dataset and split:
      NetVLAD vs f_max      trained NetVLAD vs trained f_max 1x1 (training runs,
                            all seeds), and off-the-shelf on one and the same
                            base (output-size experiment; real images)
      training              trained vs untrained, per recipe and pooling (all
                            seeds; sim-to-real on the real images)
      whitening             NetVLAD PCA-whitened vs plain PCA, at each common
                            dimension (output-size experiment)
      VGG-16 vs AlexNet     curves that differ only in the backbone
      alpha rule            the rule's alpha against the best other swept
                            alpha (without ranks: R@1 within ``tolerance_se``
                            binomial standard errors)
    """
    out = []
    s = summary.copy()
    if s.empty:
        return pd.DataFrame([_row(cid, c, "-", None, "not tested", "", "no results yet", paper) for cid, c in CLAIMS])
    s["key"] = s["dataset"].astype(str) + " (" + s["split"].astype(str) + ")"
    for key, d in s.groupby("key", sort=False):
        syn = bool(d["synthetic"].iloc[0])
        real_note = "" if syn else "; real images, random-init base"
        tr = d[d["experiment"].isin(["train", "sim_to_real"])]
        tr = tr.assign(_recipe=_recipe(tr))
        # 1. NetVLAD vs f_max: trained runs of one recipe (each seed from its own initialisation)
        for (rid, bb), g in tr[tr["experiment"] == "train"].groupby(["_recipe", "backbone"]):
            nv = _by_seed(_curve(g, pooling="netvlad", trained=True, whitened=False))
            fm = _by_seed(_curve(g, pooling="fmax", trained=True, whitened=False))
            if not nv or not fm:
                continue
            v, t, iv = _judge(_mean_curve(nv), _mean_curve(fm), _seed_ranks(results_dir, nv),
                              _seed_ranks(results_dir, fm))
            out.append(_row("netvlad_vs_fmax", CLAIMS[0][1], key, syn, v, t,
                            f"{bb}, both trained ({_dims(nv[0], bb)} vs {_dims(fm[0], bb)}-D, runs {_runs_text(nv)}, "
                            f"{_runs_text(fm)}); NetVLAD {_seeds_text(nv)}; f_max {_seeds_text(fm)}", paper,
                            intervals=iv))
        # ... and off-the-shelf on one and the same base
        for exp in ("fmax_output_size", "real_off_the_shelf"):
            for bb, g in d[d["experiment"] == exp].groupby("backbone"):
                a = _curve(g, variant="NetVLAD")
                for fvar in sorted(set(g["variant"].dropna()) & {"f_max 1x1"}) + sorted(
                        v for v in set(g["variant"].dropna()) if v.startswith("f_max") and v != "f_max 1x1"
                        and exp == "real_off_the_shelf"):
                    b = _curve(g, variant=fvar)
                    if a.empty or b.empty:
                        continue
                    v, t, iv = _judge(a, b, curve_ranks(results_dir, a), curve_ranks(results_dir, b))
                    out.append(_row("netvlad_vs_fmax", CLAIMS[0][1], key, syn, v, t,
                                    f"{bb}, both off-the-shelf on the same base ({_dims(a, bb)} vs {_dims(b, bb)}-D, "
                                    f"{fvar}){_fitted_note(a)}{real_note}", paper, intervals=iv))
        # 2. trained vs off-the-shelf, per recipe and pooling, pooled over seeds
        for (rid, pooling, bb, exp), g in tr.groupby(["_recipe", "pooling", "backbone", "experiment"], sort=False):
            a = _by_seed(_curve(g, trained=True, whitened=False))
            b = _by_seed(_curve(g, trained=False))
            if not a or not b:
                continue
            v, t, iv = _judge(_mean_curve(a), _mean_curve(b), _seed_ranks(results_dir, a), _seed_ranks(results_dir, b))
            what = "trained on the synthetic city vs its initialisation" if exp == "sim_to_real" else \
                "trained vs its initialisation"
            out.append(_row("trained_vs_off_the_shelf", CLAIMS[1][1], key, syn, v, t,
                            f"{bb} + {pooling}, {what} (runs {_runs_text(a)}){real_note}; {_seeds_text(a)}", paper,
                            pooling, intervals=iv))
        # 3. whitening at equal dimension: one row per dimension
        fo = d[d["experiment"] == "fmax_output_size"]
        white = fo[fo["variant"] == "NetVLAD + PCA-whitening"]
        plain = fo[fo["variant"] == "NetVLAD + PCA"]
        fmax = fo[fo["pooling"] == "fmax"]
        for dm in sorted(set(white["dim"]) & set(plain["dim"]), reverse=True):
            a, b = white[white["dim"] == dm], plain[plain["dim"] == dm]
            v, t, iv = _judge(a, b, curve_ranks(results_dir, a), curve_ranks(results_dir, b))
            note = f"{int(dm)}-D; off-the-shelf NetVLAD, PCA fitted on training database images"
            eq = fmax[fmax["dim"] == dm]
            if not eq.empty:
                note += f"; f_max at {int(dm)}-D ({eq['variant'].iloc[0]}): R@1 {_fmt(_at(eq, 1))}"
            out.append(_row("whitening_equal_dim", CLAIMS[2][1], key, syn, v, f"{int(dm)}-D whitened vs PCA only: {t}",
                            note, paper, intervals=iv))
        # 4. VGG-16 vs AlexNet: curves that differ only in the backbone
        curves = _single_model_curves(d).assign(cid=lambda x: _recipe(x))
        for (exp, cid, pooling, trained, variant), g in curves.groupby(
                ["experiment", "cid", "pooling", "trained", "variant"]):
            a, b = _by_seed(g[g["backbone"] == "vgg16"]), _by_seed(g[g["backbone"] == "alexnet"])
            if not a or not b:
                continue
            v, t, iv = _judge(_mean_curve(a), _mean_curve(b), _seed_ranks(results_dir, a), _seed_ranks(results_dir, b))
            random_init = exp == "calibration" or syn
            out.append(_row("vgg16_vs_alexnet", CLAIMS[3][1], key, syn, v, t,
                            f"{pooling}, {'trained' if trained else 'off-the-shelf'} ({exp}, {variant})"
                            + ("; random-init bases, not the paper's ImageNet setting" if random_init else "")
                            + "; torchvision's AlexNet, not the authors' CaffeNet (other widths, no LRN)", paper,
                            pooling, intervals=iv))
        # 5. alpha rule near the best of the sweep
        out += _alpha_rows(d, key, syn, paper, tolerance_se, results_dir, real_note)
    table = pd.DataFrame(out)
    tested = set(table["claim_id"]) if not table.empty else set()
    missing = [_row(cid, c, "-", None, "not tested", "", _why_not(cid), paper) for cid, c in CLAIMS if cid not in tested]
    table = pd.concat([table, pd.DataFrame(missing)], ignore_index=True) if missing else table
    order = {cid: i for i, (cid, _) in enumerate(CLAIMS)}
    table["_o"] = table["claim_id"].map(order)
    table["_s"] = table["synthetic"].map({True: 0, False: 1}).fillna(2)
    return table.sort_values(["_o", "_s"], kind="stable").drop(columns=["_o", "_s"]).reset_index(drop=True)


def _fitted_note(curve: pd.DataFrame) -> str:
    """Where a real-image record fitted the centroids and alpha (the summary's ``fit`` column), if it says."""
    if "fit" in curve and curve["fit"].notna().any():
        where = str(curve["fit"].dropna().iloc[0])
        return f"; centroids and alpha fitted on {where}" + (" (its training database)" if where.startswith(
            "synthetic") else "")
    return ""


def _alpha_rows(d, key, syn, paper, tolerance_se, results_dir, real_note) -> list[dict]:
    """Claim 5 for each swept backbone and training state of one dataset."""
    out = []
    sw = d[d["experiment"] == "alpha_sweep"]
    for (bb, trained), g in sw.groupby(["backbone", "trained"]):
        if g["alpha"].nunique() < 2:
            continue
        r1 = g[g["n"] == 1]
        best = r1.loc[r1["recall_pct"].idxmax()]
        rule_mask = g["is_rule_alpha"].fillna(False).astype(bool) if "is_rule_alpha" in g else pd.Series(False, g.index)
        what = f"{bb}, {'trained' if trained else 'off-the-shelf'}, {g['alpha'].nunique()} alphas{real_note}"
        if not rule_mask.any():
            out.append(_row("alpha_rule_near_best", CLAIMS[4][1], key, syn, "not tested",
                            f"best R@1 {_fmt(best['recall_pct'])} at alpha {best['alpha']:.3g}",
                            what + "; no run at the rule's alpha", paper))
            continue
        rule_curve = g[rule_mask]
        rule_alpha = float(rule_curve["alpha"].iloc[0])
        others = [c for a, c in g[~rule_mask].groupby("alpha")]
        rule_ranks = curve_ranks(results_dir, rule_curve)
        other_ranks = [curve_ranks(results_dir, c) for c in others]
        if rule_ranks is not None and others and all(r is not None and len(r) == len(rule_ranks) for r in other_ranks):
            iv = gap_to_best(rule_ranks, np.stack(other_ranks), SUPPORT_NS, seed=0)
            best_alphas = "/".join(f"{float(others[iv[n]['best_index']]['alpha'].iloc[0]):.3g}" for n in SUPPORT_NS)
            t = ("rule minus best other alpha [95% interval, best re-chosen per resample]: " + ", ".join(
                f"R@{n} {iv[n]['diff']:+.1f} [{iv[n]['low']:+.1f}, {iv[n]['high']:+.1f}]" for n in SUPPORT_NS)
                + f"; R@1/5/10 {'/'.join(_fmt(iv[n]['a']) for n in SUPPORT_NS)} at the rule's alpha {rule_alpha:.3g} "
                  f"vs best {'/'.join(_fmt(iv[n]['b']) for n in SUPPORT_NS)} (at alpha {best_alphas})")
            out.append(_row("alpha_rule_near_best", CLAIMS[4][1], key, syn, near_verdict(iv), t, what, paper,
                            intervals=iv, rule=NEAR_INTERVAL_RULE))
            continue
        rule = rule_curve[rule_curve["n"] == 1].iloc[0]
        nq = best.get("num_queries")
        p = best["recall_pct"] / 100.0
        se = 100.0 * math.sqrt(p * (1 - p) / nq) if nq and pd.notna(nq) else 0.0
        gap = float(best["recall_pct"] - rule["recall_pct"])
        v = "yes" if gap <= tolerance_se * se + 1e-9 else "no"
        t = (f"R@1 {_fmt(rule['recall_pct'])} at the rule's alpha {rule['alpha']:.3g} vs best "
             f"{_fmt(best['recall_pct'])} at alpha {best['alpha']:.3g} (gap {gap:.1f}; "
             f"near = within {tolerance_se:g} binomial s.e. = {se:.1f})")
        out.append(_row("alpha_rule_near_best", CLAIMS[4][1], key, syn, v, t, what, paper,
                        rule=NEAR_POINT_RULE.format(tol=tolerance_se)))
    return out


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


def _data_label(row) -> str:
    if row["synthetic"] == True:  # noqa: E712  (None for a "not tested" row)
        return f"{row['dataset']}, synthetic"
    if row["dataset"] == "-":
        return "-"
    return f"{row['dataset']}, real images, random-init base" if not str(row["dataset"]).startswith("pitts") \
        else str(row["dataset"])


def findings_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The short table that opens the report: one row per claim, dataset and
    kind of evidence (the whitening claim's dimensions in one row), with our
    verdict, the R@1/5/10 differences and their 95% intervals, and the
    paper's evidence. From :func:`claims_table` (``results/claims.csv``)."""
    if claims is None or claims.empty:
        return pd.DataFrame(columns=["claim", "data", "our verdict", "difference [95% interval], R@1 / R@5 / R@10",
                                     "evidence", "the paper"])
    c = claims.copy()
    c["evidence"] = c["note"].fillna("").str.split(";").str[0]
    c["data"] = c.apply(_data_label, axis=1)

    def interval(r) -> str:
        if pd.isna(r.get("diff_r1")):
            return "no per-query ranks: " + (r["ours"] or "")[:80] if r["supported"] != "not tested" else ""
        return " / ".join(f"{r[f'diff_r{n}']:+.1f} [{r[f'low_r{n}']:+.1f}, {r[f'high_r{n}']:+.1f}]" for n in SUPPORT_NS)

    rows = []
    for (cid, data), g in c.groupby(["claim_id", "data"], sort=False):
        if cid == "whitening_equal_dim" and len(g) > 1:
            dims = g["ours"].str.split(" ").str[0]
            by = {}
            for v, d in zip(g["supported"], dims):
                by.setdefault(v, []).append(d)
            at1 = ", ".join(f"{d} {r['diff_r1']:+.1f} [{r['low_r1']:+.1f}, {r['high_r1']:+.1f}]"
                            if pd.notna(r.get("diff_r1")) else f"{d} -" for d, (_, r) in zip(dims, g.iterrows()))
            rows.append({"claim": g["claim"].iloc[0], "data": data,
                         "our verdict": "; ".join(f"{v} at {', '.join(ds)}" for v, ds in by.items()),
                         "difference [95% interval], R@1 / R@5 / R@10": f"R@1 only (R@5, R@10 in claims.csv): {at1}",
                         "evidence": "off-the-shelf NetVLAD, PCA-whitened vs PCA only at each dimension",
                         "the paper": g["paper"].iloc[0]})
            continue
        for _, r in g.iterrows():
            rows.append({"claim": r["claim"], "data": data, "our verdict": r["supported"],
                         "difference [95% interval], R@1 / R@5 / R@10": interval(r), "evidence": r["evidence"],
                         "the paper": r["paper"]})
    return pd.DataFrame(rows)
