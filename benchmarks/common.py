"""Shared benchmark machinery: interleaved timing, peak memory, tidy CSVs.

Timing: the compared implementations run round-robin (A, B, C, A, B, C, ...)
in one process, so a burst of load from other jobs on this shared machine
hits all of them alike; we report every repeat, the median, and the ratio of
medians within the run. ``time.perf_counter`` wall seconds.

Peak memory: each (case, implementation) runs once in a fresh Python
subprocess. After the inputs are built, the kernel's peak-RSS counter is
reset (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and the
steady-state RSS read; the case runs once; peak MiB = VmHWM - that baseline,
i.e. the extra resident memory the computation needed on top of its inputs
(torch's CPU allocator returns large blocks to the OS, so RSS tracks tensor
memory closely). A fresh process per case keeps one case's freed-but-kept
heap from hiding another's peak. tracemalloc would miss torch/faiss/BLAS
buffers, and torch's profiler misses faiss and numpy, hence RSS.
"""
from __future__ import annotations

import csv
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmarks"  # where write_csv/dump_json write; see set_results_dir


def set_results_dir(path) -> Path:
    """Send this run's files to ``path`` (quick runs and the unit test use their own folder)."""
    global RESULTS
    RESULTS = Path(path)
    return RESULTS

# Columns every CSV starts with; benchmark-specific shape columns follow.
BASE_COLUMNS = ["benchmark", "case", "impl", "repeat", "seconds", "peak_mib", "ratio", "ratio_to"]


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run ``fns`` (name -> callable returning its own timed seconds) round-robin.

    Each callable does its untimed set-up itself and returns the seconds of
    the timed part. ``warmup`` untimed rounds first (thread pools, caches).
    Returns name -> ``repeats`` seconds.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            times[name].append(float(f()))
    return times


def timed(f, *args, **kwargs) -> float:
    """Seconds of one call of ``f``."""
    t = time.perf_counter()
    f(*args, **kwargs)
    return time.perf_counter() - t


def median(xs) -> float:
    return float(statistics.median(xs))


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure_peak_here(run) -> float:
    """Extra peak RSS (MiB) of ``run()`` over the RSS just before it (this process)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _status_mib("VmRSS")
    run()
    return _status_mib("VmHWM") - base


def peak_mib(module: str, case: str, impl: str, params: dict, timeout: float = 900) -> float:
    """Peak extra MiB of ``module.memory_case(case, impl, **params)()`` in a fresh subprocess.

    ``memory_case`` builds the inputs and returns the callable to measure.
    """
    code = (f"import json; from benchmarks.common import measure_peak_here; import {module} as m; "
            f"run = m.memory_case({case!r}, {impl!r}, **json.loads({json.dumps(json.dumps(params))})); "
            f"print('PEAK', measure_peak_here(run))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"memory case {module} {case} {impl} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PEAK ")][-1]
    return float(line.split()[1])


def rows_for(benchmark: str, case: str, times: dict[str, list[float]], reference: str, shape: dict,
             peaks: dict[str, float] | None = None, per: float = 1.0) -> list[dict]:
    """Tidy rows: one per (impl, repeat) and one ``repeat="median"`` per impl.

    ``ratio`` = this impl's median seconds / ``reference``'s median (on the
    median rows; per repeat: / the reference's time in the same round).
    ``per`` rescales seconds (e.g. to "per 1000 queries").
    """
    rows = []
    ref_med = median(times[reference])
    for impl, ts in times.items():
        for i, t in enumerate(ts):
            rows.append(dict(benchmark=benchmark, case=case, impl=impl, repeat=i, seconds=t * per, peak_mib="",
                             ratio=t / times[reference][i], ratio_to=reference, **shape))
        rows.append(dict(benchmark=benchmark, case=case, impl=impl, repeat="median", seconds=median(ts) * per,
                         peak_mib="" if not peaks or impl not in peaks else round(peaks[impl], 1),
                         ratio=median(ts) / ref_med, ratio_to=reference, **shape))
    return rows


def write_csv(rows: list[dict], name: str) -> Path:
    """Write ``results/benchmarks/<name>.csv`` (columns: BASE_COLUMNS, then the rest in first-seen order)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    cols = list(BASE_COLUMNS)
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    path = RESULTS / f"{name}.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def machine() -> dict:
    """What ran the benchmark (written beside the results)."""
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def load(module: str):
    return importlib.import_module(module)


def dump_json(obj, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path
