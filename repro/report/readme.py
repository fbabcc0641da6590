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
        parts += ["**The paper's claims**", "", _md_table(c), "",
                  f"Verdict rules (`verdict_rule` in `results/claims.csv`): rows with a difference and its interval "
                  f"follow the {INTERVAL_RULE}; the other rows compare {POINT_RULE}.", ""]
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
