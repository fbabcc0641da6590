"""The rerun check: do the claims' verdicts survive training the same runs again?

Training amplifies last-bit float differences (another CPU, another thread
count sums in another order), so the seed-0 training runs were trained
again, once per condition, into folders of their own:

    results/rerun/amd_epyc/        the seed-0 records of the previous committed
                                   run, trained on a 2-core AMD EPYC (2 threads);
                                   this report's were trained on a 2-core Intel Xeon
    results/rerun/threads1/        the same runs with 1 thread instead of 2
                                   (``params/rerun_threads1.yaml``, ``make rerun``)

:func:`rerun_tables` puts each rerun's records in place of the committed
ones with the same run name and recomputes the claims: once with seed 0
alone (what a one-run report would say) and once with every seed (what this
report says). ``results/rerun/verdicts.csv`` holds each claim's verdict
committed vs rerun, ``results/rerun/recall.csv`` each run's recall@N in
each condition. Only the training claims can change, so only they are
compared.

    python -m repro.report.rerun        # writes both files (05 does too)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import rel, repo_root
from repro.report.names import read_json

TRAINING_CLAIMS = ("netvlad_vs_fmax", "trained_vs_off_the_shelf")


def rerun_folders(results_dir) -> dict[str, Path]:
    """``{condition: folder}`` of the reruns present under ``results_dir/rerun`` (each with ``train/*.json`` or
    ``*.json`` trainer records)."""
    base = Path(results_dir) / "rerun"
    out = {}
    for p in sorted(base.glob("*")) if base.is_dir() else []:
        recs = _records(p)
        if recs:
            out[p.name] = p
    return out


def _records(folder: Path) -> dict[Path, dict]:
    """The complete trainer records in ``folder/train/`` and ``folder/``, by path, each read once."""
    recs = {f: read_json(f) or {} for f in sorted((folder / "train").glob("*.json")) + sorted(folder.glob("*.json"))}
    return {f: r for f, r in recs.items() if r.get("experiment") == "train" and r.get("status") == "complete"}


def _swapped(results_dir: Path, rerun: Path | None, tmp: Path) -> Path:
    """A copy of ``results_dir/train`` with the rerun's records in place of the same-named ones; returns the copy's
    results folder (``source`` paths in its summary stay relative to its parent, as the claims read them)."""
    out = tmp / (rerun.name if rerun else "committed") / "results"
    (out / "train").mkdir(parents=True)
    replaced = {r.get("run_name"): f for f, r in (_records(rerun) if rerun else {}).items()}
    for f in sorted((results_dir / "train").glob("*.json")):
        if (read_json(f) or {}).get("run_name") not in replaced:
            shutil.copy2(f, out / "train" / f.name)
    for run, f in replaced.items():
        shutil.copy2(f, out / "train" / f"{run}.json")
    return out


def _key(claims: pd.DataFrame) -> pd.Series:
    """A claim row's identity across reruns: claim, dataset and the comparison (the note before its first ';')."""
    return claims["claim_id"] + " | " + claims["dataset"] + " | " + claims["note"].str.split(";").str[0]


def rerun_tables(results_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(verdicts, recall): the training claims committed vs each rerun, seed 0 alone and all seeds; and each rerun
    run's recall@1/5/10 beside the committed run's. Empty frames when there is no rerun."""
    from repro.report.claims import claims_table
    from repro.report.summary import collect_summary

    results = Path(results_dir) if results_dir else repo_root() / "results"
    folders = rerun_folders(results)
    if not folders:
        return pd.DataFrame(), pd.DataFrame()
    verdicts, recall = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        views = {"committed": _swapped(results, None, tmp), **{c: _swapped(results, f, tmp) for c, f in folders.items()}}
        summaries = {c: collect_summary(v) for c, v in views.items()}
        for seeds, keep in (("seed 0 alone", lambda s: s[s["seed"] == 0]), ("all seeds", lambda s: s)):
            tables = {c: claims_table(keep(s), results_dir=views[c]) for c, s in summaries.items()}
            tables = {c: t[t["claim_id"].isin(TRAINING_CLAIMS)].assign(_k=lambda t: _key(t)) for c, t in tables.items()}
            base = tables["committed"].set_index("_k")
            for cond in folders:
                other = tables[cond].set_index("_k")
                for k in base.index:
                    row = {"condition": cond, "seeds": seeds, "claim": base.loc[k, "claim"],
                           "dataset": base.loc[k, "dataset"], "comparison": k.split(" | ", 2)[2],
                           "committed": base.loc[k, "supported"],
                           "rerun": other.loc[k, "supported"] if k in other.index else "absent"}
                    for n in (1, 5, 10):
                        row[f"committed_r{n}"] = _interval(base.loc[k], n)
                        row[f"rerun_r{n}"] = _interval(other.loc[k], n) if k in other.index else ""
                    row["flipped"] = row["committed"] != row["rerun"]
                    verdicts.append(row)
        committed = summaries["committed"]
        threads = {r.get("run_name"): r.get("torch_threads") for r in _records(results).values()}
        for cond, f in folders.items():
            for rec in _records(f).values():
                run = rec["run_name"]
                for trained in (False, True):
                    a = committed[(committed["run"] == run) & (committed["trained"] == trained)
                                  & (committed["whitened"] != True)]  # noqa: E712
                    b = summaries[cond][(summaries[cond]["run"] == run) & (summaries[cond]["trained"] == trained)
                                        & (summaries[cond]["whitened"] != True)]  # noqa: E712
                    row = {"condition": cond, "run": run, "trained": trained}
                    for n in (1, 5, 10):
                        ra, rb = _r(a, n), _r(b, n)
                        row[f"committed_r{n}"], row[f"rerun_r{n}"] = ra, rb
                        row[f"diff_r{n}"] = None if ra is None or rb is None else rb - ra
                    row["rerun_threads"], row["committed_threads"] = rec.get("torch_threads"), threads.get(run)
                    recall.append(row)
    return pd.DataFrame(verdicts), pd.DataFrame(recall)


def _interval(row, n: int) -> str:
    d, lo, hi = row.get(f"diff_r{n}"), row.get(f"low_r{n}"), row.get(f"high_r{n}")
    if d is None or pd.isna(d):
        return ""
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _r(rows: pd.DataFrame, n: int):
    v = rows.loc[rows["n"] == n, "recall_pct"]
    return float(v.iloc[0]) if len(v) else None


def write_rerun_tables(results_dir=None) -> list[Path]:
    """``results/rerun/verdicts.csv`` and ``recall.csv`` (nothing when there is no rerun)."""
    results = Path(results_dir) if results_dir else repo_root() / "results"
    verdicts, recall = rerun_tables(results)
    if verdicts.empty:
        return []
    return [atomic_write_text(results / "rerun" / "verdicts.csv", verdicts.to_csv(index=False)),
            atomic_write_text(results / "rerun" / "recall.csv", recall.to_csv(index=False))]


def main(argv=None) -> int:
    written = write_rerun_tables(argv[0] if argv else None)
    print("\n".join(rel(p) for p in written) or "no rerun under results/rerun/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
