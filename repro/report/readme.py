"""The README's results section, generated from the summary, the claims and the runtimes.

:func:`update_readme` rewrites the README between the results markers (and
rewrites the file only when the section changes).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import repo_root
from repro.report.claims import INTERVAL_RULE, POINT_RULE
from repro.report.names import read_json
from repro.report.summary import dedupe_runs

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


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


def seed_table(summary: pd.DataFrame, ns=(1, 5, 10)) -> pd.DataFrame:
    """Mean and spread over training seeds: one row per training recipe,
    pooling and state (off-the-shelf / trained), with the seeds, R@N mean,
    standard deviation and range. Recipes with one seed are left out."""
    from repro.report.claims import _recipe

    tr = summary[(summary["experiment"] == "train") & (summary["whitened"] != True) & summary["n"].isin(ns)]  # noqa: E712
    if tr.empty:
        return pd.DataFrame()
    tr = dedupe_runs(tr).assign(_r=lambda d: _recipe(d))
    rows = []
    for (data, rid, bb, pooling, trained), g in tr.groupby(["dataset", "_r", "backbone", "pooling", "trained"], sort=False):
        seeds = sorted({int(x) for x in g["seed"].dropna()})
        if len(seeds) < 2:
            continue
        row = {"data": data + (" (synthetic)" if bool(g["synthetic"].iloc[0]) else ""), "model": f"{bb} + {pooling}",
               "state": "trained" if trained else "off-the-shelf", "seeds": ", ".join(map(str, seeds))}
        for n in ns:
            v = g.loc[g["n"] == n, "recall_pct"].to_numpy(dtype=float)
            row[f"R@{n} mean ± s.d. (min-max)"] = f"{v.mean():.1f} ± {v.std(ddof=1):.1f} ({v.min():.1f}-{v.max():.1f})"
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_table(results_dir, ns=(1, 5, 10)) -> pd.DataFrame:
    """The calibration's untrained baselines with 95% bootstrap intervals
    (over the test queries, :func:`repro.report.intervals.recall_interval`)
    from ``results/calibration/*_ranks.json``, and R@1 per query condition."""
    from repro.data.synthetic.calibration import ranks_path
    from repro.report.intervals import recall_interval

    rows = []
    for csv in sorted(Path(results_dir, "calibration").glob("*.csv")):
        rk = read_json(ranks_path(csv)) or {}
        cal = pd.read_csv(csv)
        for method, g in cal.groupby("method", sort=False):
            row = {"data": f"{g['dataset'].iloc[0]} (synthetic)", "method (untrained)": method}
            ranks = (rk.get("ranks") or {}).get(method)
            iv = recall_interval(np.asarray(ranks, dtype=np.int64), ns, seed=0) if ranks else {}
            for n in ns:
                v = g[(g["condition"] == "all") & (g["n"] == n)]["recall_pct"]
                row[f"R@{n} [95% interval]"] = (f"{iv[n]['recall']:.1f} [{iv[n]['low']:.1f}, {iv[n]['high']:.1f}]"
                                                if iv else f"{float(v.iloc[0]):.1f}" if len(v) else "")
            for cond in [c for c in g["condition"].unique() if c != "all"]:
                v = g[(g["condition"] == cond) & (g["n"] == 1)]
                q = int(v["num_queries"].iloc[0]) if len(v) else 0
                row[f"R@1 {cond} ({q} q.)"] = f"{float(v['recall_pct'].iloc[0]):.1f}" if len(v) else ""
            rows.append(row)
    return pd.DataFrame(rows)


def rerun_markdown(results_dir) -> list[str]:
    """The rerun check's tables (``results/rerun/``), as README lines; [] without a rerun."""
    folder = Path(results_dir) / "rerun"
    if not (folder / "verdicts.csv").is_file():
        return []
    v = pd.read_csv(folder / "verdicts.csv").fillna("")
    r = pd.read_csv(folder / "recall.csv") if (folder / "recall.csv").is_file() else pd.DataFrame()
    out = []
    if not r.empty:
        t = r.copy()
        t["state"] = t["trained"].map({True: "trained", False: "off-the-shelf"})
        for n in (1, 5, 10):
            t[f"R@{n} committed -> rerun"] = [f"{a:.1f} -> {b:.1f} ({d:+.1f})" if pd.notna(d) else ""
                                             for a, b, d in zip(t[f"committed_r{n}"], t[f"rerun_r{n}"], t[f"diff_r{n}"])]
        t["threads (committed, rerun)"] = [f"{_int(a)}, {_int(b)}" for a, b in
                                           zip(t["committed_threads"], t["rerun_threads"])]
        out += ["**Rerun variance: the seed-0 training runs trained again** (`results/rerun/recall.csv`)", "",
                _md_table(t[["condition", "run", "state", "threads (committed, rerun)"]
                            + [f"R@{n} committed -> rerun" for n in (1, 5, 10)]]), ""]
    t = v[["condition", "seeds", "claim", "comparison", "committed", "rerun", "flipped"]].copy()
    t["flipped"] = t["flipped"].map(lambda x: "**yes**" if str(x) == "True" else "no")
    flips = (v["flipped"].astype(str) == "True")
    out += [f"**Do the verdicts survive the rerun?** (`results/rerun/verdicts.csv`): "
            f"{int(flips[v['seeds'] == 'all seeds'].sum())} of {int((v['seeds'] == 'all seeds').sum())} training "
            f"verdicts flip with all seeds pooled, {int(flips[v['seeds'] == 'seed 0 alone'].sum())} of "
            f"{int((v['seeds'] == 'seed 0 alone').sum())} with seed 0 alone", "", _md_table(t), ""]
    return out


def real_images_markdown(summary: pd.DataFrame, ns=(1, 5, 10)) -> list[str]:
    """The real-image track (07) as README lines: off-the-shelf methods, the alpha sweep and sim-to-real
    (mean over the training seeds), one table each, never beside synthetic rows; [] without it."""
    if summary.empty:
        return []
    real = summary[~summary["synthetic"].astype(bool) & summary["experiment"].isin(
        ["real_off_the_shelf", "alpha_sweep", "sim_to_real"]) & summary["n"].isin(ns)]
    if real.empty:
        return []
    out = ["**Real photographs (07; real images, random-init base; `results/real_images/`)**: Gardens Point "
           "day -> night and left -> right, Nordland summer -> winter, every image resized to 96x128; NetVLAD's "
           "centroids and alpha fitted on the synthetic city's training database (the transductive variant: on "
           "the evaluated reference images), never on the queries", ""]
    for exp, title, keys in (("real_off_the_shelf", "off-the-shelf", ["dataset", "variant", "dim", "fit"]),
                             ("sim_to_real", "sim-to-real: 02's networks, trained on the synthetic city, against "
                              "their untrained starting points (mean over seeds)", ["dataset", "variant", "dim"]),
                             ("alpha_sweep", "alpha sweep, NetVLAD off-the-shelf", ["dataset", "alpha"])):
        g = real[real["experiment"] == exp]
        if g.empty:
            continue
        g = g.assign(fit=g["fit"].fillna("") if "fit" in g else "", dim=g["dim"].map(
            lambda v: str(int(v)) if pd.notna(v) else ""), alpha=g["alpha"].map(_fmt_alpha))
        seeds = g.groupby(keys)["seed"].nunique().max()
        t = g.pivot_table(index=keys, columns="n", values="recall_pct", aggfunc="mean", sort=False).reset_index()
        if exp == "alpha_sweep":
            t = t.assign(_a=t["alpha"].astype(float)).sort_values(["dataset", "_a"]).drop(columns="_a")
        t.columns = [f"R@{c}" if isinstance(c, (int, np.integer)) else c for c in t.columns]
        for n in ns:
            t[f"R@{n}"] = t[f"R@{n}"].map(lambda v: f"{v:.1f}")
        out += [f"*{title}*" + (f" ({seeds} seeds)" if exp == "sim_to_real" else ""), "", _md_table(t), ""]
    return out


def retrieval_failures_markdown(results_dir) -> list[str]:
    """Failures at rank 1 by query condition (08, ``results/retrievals/``) as README lines."""
    files = sorted(Path(results_dir, "retrievals").glob("*_failures.csv"))
    if not files:
        return []
    out = []
    for f in files:
        c = pd.read_csv(f)
        t = c.pivot_table(index="condition", columns="method", values="failures_at1", aggfunc="first", sort=False)
        q = c.drop_duplicates("condition").set_index("condition")["queries"]
        t.insert(0, "queries", q)
        t = t.reset_index()
        out += [f"**What the models retrieve (08): failures at rank 1 by query condition** (`{f.relative_to(Path(results_dir).parent)}`"
                f"{', synthetic' if bool(c['synthetic'].iloc[0]) else ''}; figures `figures/retrievals_*`)", "",
                _md_table(t), ""]
    return out


def _int(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(int(float(v)))


def load_runtimes(folder) -> pd.DataFrame:
    """Measured runtimes of the pipeline's profiles (``results/runtimes/*.json``):
    one row per profile and notebook (alpha-sweep runs summed), plus a
    ``(whole profile)`` row with the wall time of the last full run."""
    rows = []
    for p in sorted(Path(folder).glob("*.json")):
        rec = read_json(p)
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


def readme_section(summary: pd.DataFrame, claims: pd.DataFrame, command: str, runtimes: pd.DataFrame | None = None,
                   results_dir=None) -> str:
    """The markdown between the README markers: the findings first (from
    the claims), then the detail. ``results_dir`` adds the tables read from
    files (calibration intervals, the rerun check)."""
    from repro.report.claims import NEAR_INTERVAL_RULE, findings_table

    parts = [f"_Generated from `results/` by `{command}`; do not edit by hand. "
             "Synthetic-city numbers are labelled (synthetic) and say nothing directly about Pittsburgh; "
             "real-image numbers come from random-init bases (no ImageNet weights offline)._", ""]
    if claims is not None and not claims.empty:
        parts += ["**Findings: the paper's claims, as this reproduction tested them** (from `results/claims.csv`; "
                  "the rules below; the detail follows)", "", _md_table(findings_table(claims)), ""]
    seeds = seed_table(summary) if not summary.empty else pd.DataFrame()
    if not seeds.empty:
        parts += ["**Spread over training seeds** (each seed trained from its own initialisation)", "",
                  _md_table(seeds), ""]
    main = main_results_table(dedupe_runs(summary[summary["experiment"] == "train"])) if not summary.empty \
        else pd.DataFrame()
    if not main.empty:
        parts += ["**Training runs (`results/train/`; 02_train makes the `..._seed0` ones): off-the-shelf vs trained, test split**", "", _md_table(main.drop(columns=["experiment"])), ""]
    sweep = summary[(summary["experiment"] == "alpha_sweep") & summary["n"].isin([1, 5, 10]) & summary["synthetic"]] \
        if not summary.empty else summary
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
    parts += real_images_markdown(summary)
    if results_dir is not None:
        parts += retrieval_failures_markdown(results_dir)
    if claims is not None and not claims.empty:
        c = claims[["claim", "dataset", "supported", "ours", "note", "paper"]].copy()
        parts += ["**The paper's claims, in detail**", "", _md_table(c), "",
                  f"Verdict rules (`verdict_rule` in `results/claims.csv`): rows with a difference and its interval "
                  f"follow the {INTERVAL_RULE}; the alpha claim follows the {NEAR_INTERVAL_RULE}; rows from result "
                  f"files without per-query ranks compare {POINT_RULE}.", ""]
    if results_dir is not None:
        cal = calibration_table(results_dir)
        if not cal.empty:
            parts += ["**Calibration of the synthetic city**: untrained baselines (random weights; NetVLAD K = 64, "
                      "centroids and alpha from 500 training images; `python -m repro calibrate-city`), 95% "
                      "bootstrap intervals over the test queries", "", _md_table(cal), ""]
        parts += rerun_markdown(results_dir)
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
