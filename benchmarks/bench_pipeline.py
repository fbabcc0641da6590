"""Pipeline wall time against the notebooks issue's budgets.

* ``default``: read from ``results/runtimes/default.json``, which
  ``make repro`` (``python -m repro.pipeline --profile default``) writes:
  each notebook run's seconds, the last full invocation and the last one
  from a fresh tree. Not re-run here (about 10 minutes and it rewrites the
  committed results). Budget: 20 minutes.
* ``smoke``: the recorded ``results/runtimes/smoke.json`` and, unless
  ``--quick``, timed now: ``python -m repro.pipeline --profile smoke --force``
  with a copy of ``params/smoke.yaml`` whose ``runtimes_dir`` is a temporary
  folder (so this benchmark writes only under ``cache/smoke/`` and /tmp).
  Budget: 5 minutes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT

BUDGET_S = {"default": 20 * 60, "smoke": 5 * 60}


def _recorded(profile: str, path: Path, source: str) -> list[dict]:
    if not path.is_file():
        return [dict(benchmark="pipeline", case=profile, impl="(whole profile)", repeat="", seconds="",
                     budget_s=BUDGET_S[profile], ratio="", ratio_to="budget", source=f"{path} missing")]
    data = json.loads(path.read_text())
    rows = []
    for name, r in sorted(data.get("runs", {}).items()):
        rows.append(dict(benchmark="pipeline", case=profile, impl=name, repeat="", seconds=r["seconds"],
                         budget_s="", ratio="", ratio_to="", source=source, finished=r.get("finished", "")))
    for key, what in (("last_invocation", "(whole profile, last invocation)"),
                      ("full_run", "(whole profile, last full run)"),
                      ("full_run_fresh", "(whole profile, from a fresh tree)")):
        if key in data:
            w = data[key]["wall_seconds"]
            rows.append(dict(benchmark="pipeline", case=profile, impl=what, repeat="", seconds=w,
                             budget_s=BUDGET_S[profile], ratio=w / BUDGET_S[profile], ratio_to="budget",
                             source=source, finished=data[key].get("finished", ""),
                             cpu_count=data[key].get("cpu_count", "")))
    return rows


def time_smoke() -> list[dict]:
    """Run the smoke profile now (``--force``); its runtimes go to a temporary folder."""
    prof = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        prof["runtimes_dir"] = tmp
        prof["name"] = "smoke"
        path = Path(tmp) / "smoke.yaml"
        path.write_text(yaml.safe_dump(prof))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "repro.pipeline", "--profile", str(path), "--force"], cwd=ROOT,
                             capture_output=True, text=True, env=dict(os.environ))
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"smoke pipeline failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        rows = _recorded("smoke", Path(tmp) / "smoke.json", "timed by bench_pipeline")
    rows.append(dict(benchmark="pipeline", case="smoke", impl="(whole command, timed here)", repeat="",
                     seconds=wall, budget_s=BUDGET_S["smoke"], ratio=wall / BUDGET_S["smoke"], ratio_to="budget",
                     source="timed by bench_pipeline", cpu_count=os.cpu_count()))
    return rows


def run(quick: bool = False, repeats: int | None = None, memory: bool = False) -> list[dict]:
    rows = []
    for profile in ("default", "smoke"):
        rows += _recorded(profile, ROOT / "results" / "runtimes" / f"{profile}.json",
                          f"results/runtimes/{profile}.json")
    if not quick:
        rows += time_smoke()
    for r in rows:
        if r["ratio_to"] == "budget" and r["seconds"] != "":
            print(f"pipeline {r['case']} {r['impl']}: {r['seconds'] / 60:.1f} min "
                  f"(budget {r['budget_s'] / 60:.0f} min)", flush=True)
    return rows
