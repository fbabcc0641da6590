"""Run every benchmark; write results/benchmarks/*.csv, summary.csv and summary.md.

    python -m benchmarks.run_all            # everything (make bench), ~15 min on 2 cores
    python -m benchmarks.run_all --quick    # tiny shapes, seconds (the unit test)
    python -m benchmarks.run_all --only netvlad,mining
    python -m benchmarks.run_all --only profile   # cProfile of the default training, before/after (~8 min)
    python -m benchmarks.run_all --only datapath,ddp   # issue 16: JPEG data path, torchrun on CPU (~5 min)

``summary.csv`` holds one row per goal of issues 6 and 16: the measured value (a
ratio of medians within this run), the goal and whether it is met.
"""
from __future__ import annotations

import argparse
import importlib
import time

from benchmarks import common
from benchmarks.common import dump_json, machine, set_results_dir, write_csv

BENCHES = ["netvlad", "extraction", "images", "mining", "eval", "scaling", "pipeline", "datapath", "ddp"]


def _med(rows, **match):
    sel = [r for r in rows if r.get("repeat") == "median" and all(r.get(k) == v for k, v in match.items())]
    return sel[0] if sel else None


def goals(results: dict) -> list[dict]:
    """One row per goal: measured, goal, met."""
    out = []

    def add(what, case, measured, goal, met, note=""):
        out.append(dict(goal=what, case=case, measured=measured, target=goal,
                        met="" if met is None else ("met" if met else "NOT met"), note=note))

    rows = results.get("netvlad", [])
    for case in dict.fromkeys(r["case"] for r in rows):
        p, lo, fl = (_med(rows, case=case, impl=i) for i in ("project", "loop", "floor"))
        add("NetVLAD fwd+bwd: loop / project time", case, lo["seconds"] / p["seconds"], ">= 5",
            lo["seconds"] / p["seconds"] >= 5)
        add("NetVLAD fwd+bwd: project / floor time", case, p["seconds"] / fl["seconds"], "<= 2",
            p["seconds"] / fl["seconds"] <= 2)
        if p["peak_mib"] != "" and lo["peak_mib"] != "":
            add("NetVLAD fwd+bwd: peak MiB project vs loop", case, f"{p['peak_mib']} vs {lo['peak_mib']}",
                "project <= loop", p["peak_mib"] <= lo["peak_mib"])
    rows = results.get("extraction", [])
    for case in dict.fromkeys(r["case"] for r in rows):
        n = _med(rows, case=case, impl="netvlad")
        add("extraction: (base + NetVLAD) / base time", case, n["ratio"], "<= 1.15", n["ratio"] <= 1.15)
    rows = results.get("images", [])
    for case in dict.fromkeys(r["case"] for r in rows):
        d, k = (_med(rows, case=case, impl=i) for i in ("decode", "kept"))
        add("image loading: decode every time / kept in RAM", case, d["seconds"] / k["seconds"], "(report)", None,
            f"s per 1000 images: decode {d['seconds']:.2f}, kept {k['seconds']:.2f}")
    rows = [r for r in results.get("mining", []) if r["benchmark"] == "mining"]
    for case in dict.fromkeys(r["case"] for r in rows):
        nv, tb, ga, sk = (_med(rows, case=case, impl=i) for i in ("naive", "table", "gather", "naive_sklearn"))
        if sk is not None:
            add("mining per 1000 queries: naive (scikit-learn, as Nanne/pytorch-NetVlad) / table", case,
                sk["seconds"] / tb["seconds"], ">= 20", sk["seconds"] / tb["seconds"] >= 20,
                f"naive_sklearn {sk['seconds']:.2f} s, table {tb['seconds']:.2f} s")
        add("mining per 1000 queries: naive / table", case, nv["seconds"] / tb["seconds"], ">= 20",
            nv["seconds"] / tb["seconds"] >= 20, f"naive {nv['seconds']:.2f} s, table {tb['seconds']:.2f} s")
        pr = _med(rows, case=case, impl="product")
        if pr is not None:
            add("mining per 1000 queries: table / its matrix product alone", case, tb["seconds"] / pr["seconds"],
                "(report)", None, f"product {pr['seconds']:.3f} s, table {tb['seconds']:.3f} s")
        add("mining per 1000 queries: naive / gather", case, nv["seconds"] / ga["seconds"], "(>= 20)",
            nv["seconds"] / ga["seconds"] >= 20, f"gather {ga['seconds']:.2f} s (used when no table fits)")
    rows = results.get("eval", [])
    for case in dict.fromkeys(r["case"] for r in rows):
        p = _med(rows, case=case, impl="project")
        for ref in ("numpy", "faiss", "torch_f16"):
            r = _med(rows, case=case, impl=ref)
            add(f"eval recall@N: {ref} / project time", case, r["seconds"] / p["seconds"], "(report)", None,
                f"project {p['seconds']:.1f} s, peak {p['peak_mib']} MiB; {ref} {r['seconds']:.1f} s, "
                f"peak {r['peak_mib'] or 'not measured'} MiB")
    for r in results.get("pipeline", []):
        if r.get("ratio_to") == "budget" and r["seconds"] != "":
            add(f"pipeline wall time: {r['impl']}", r["case"], r["seconds"] / 60,
                f"<= {r['budget_s'] / 60:.0f} min", r["seconds"] <= r["budget_s"], r.get("source", ""))
    rows = results.get("datapath", [])
    for case in dict.fromkeys(r["case"] for r in rows if r["case"].startswith("workers")):
        w0, w2 = (_med(rows, case=case, impl=i) for i in ("workers_0", "workers_2"))
        add("data path, JPEG decode: images/s, 2 workers / 0 workers", case, w0["seconds"] / w2["seconds"],
            "(report)", None, f"{w0['images_per_s']:.0f} vs {w2['images_per_s']:.0f} images/s "
            f"({w2['images_per_s_after_first_batch']:.0f} after the workers' start-up of {w2['first_batch_s']:.2f} s); "
            f"per CPU-second {w0['images_per_cpu_s']:.0f} vs {w2['images_per_cpu_s']:.0f}; 2-core machine")
        add("data path, JPEG decode: images per CPU-second (1 process, 0 workers, 1 thread)", case,
            w0["images_per_cpu_s"], "(report)", None, f"wall {w0['images_per_s']:.0f} images/s; cores to feed N "
            f"images/s: N / {w0['images_per_cpu_s']:.0f} (N / {w2['images_per_cpu_s']:.0f} with workers' hand-over)")
    for case in dict.fromkeys(r["case"] for r in rows if r["case"].startswith("uint8_vs_float")):
        fl, u8, un = (_med(rows, case=case, impl=i) for i in ("float", "uint8", "uint8_normalized_cpu"))
        add("data path: CPU time per image, uint8 (normalised on the device) / float path", case,
            u8["seconds"] / fl["seconds"], "<= 1", u8["seconds"] <= fl["seconds"],
            f"ms per image: float {fl['seconds']:.2f}, uint8 {u8['seconds']:.2f}, uint8 normalised on the CPU "
            f"{un['seconds']:.2f} ({un['seconds'] / fl['seconds']:.2f}x the float path)")
    rows = results.get("ddp", [])
    for case in dict.fromkeys(r["case"] for r in rows):
        two = _med(rows, case=case, impl="2_ranks_1_thread")
        for single in ("1_process_2_threads", "1_process_1_thread"):
            one = _med(rows, case=case, impl=single)
            if one is None:  # --quick runs the 1-thread process only
                continue
            add(f"torchrun, 2 CPU ranks / {single.replace('_', ' ')}: training wall time", case,
                two["seconds"] / one["seconds"], "(report)", None,
                f"records' wall_seconds {two['seconds']:.1f} vs {one['seconds']:.1f} s; whole command "
                f"{two['command_seconds']:.1f} vs {one['command_seconds']:.1f} s "
                f"({two['command_seconds'] / one['command_seconds']:.2f}x); 2 cores: overhead, not speed-up; "
                f"identical results: {one['same_results']}")
    return out


def to_markdown(rows: list[dict]) -> str:
    lines = ["| goal | case | measured | target | met |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        m = r["measured"]
        m = f"{m:.2f}" if isinstance(m, float) else m
        lines.append(f"| {r['goal']} | {r['case']} | {m} | {r['target']} | {r['met']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (seconds)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {BENCHES + ['profile']}")
    ap.add_argument("--repeats", type=int, default=None, help="override the repeats of every benchmark")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--out", default=None, help="output folder (default results/benchmarks, with --quick "
                                                "results/benchmarks/quick)")
    args = ap.parse_args(argv)
    set_results_dir(args.out or (common.ROOT / "results" / "benchmarks" / ("quick" if args.quick else "")))
    names = args.only.split(",") if args.only else BENCHES
    start = time.perf_counter()
    results, durations = {}, {}
    for name in names:
        t = time.perf_counter()
        if name == "profile":
            importlib.import_module("benchmarks.profile_train").run(quick=args.quick)
        else:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
            kw = dict(quick=args.quick, repeats=args.repeats, memory=not args.no_memory)
            if name == "scaling":
                kw["extraction_rows"] = results.get("extraction") or _read("extraction")
            rows = mod.run(**kw)
            if name == "mining":
                rows += mod.cache_sizes()
            results[name] = rows
            write_csv(rows, name)
        durations[name] = time.perf_counter() - t
        print(f"== {name}: {durations[name]:.0f} s", flush=True)
    for name in BENCHES:  # --only: the other benchmarks' goals from their last CSVs
        if name not in results:
            results[name] = _read(name)
    summary = goals(results)
    if summary:
        suffix = ""
        write_csv([dict(benchmark="summary", case=r["case"], impl=r["goal"], repeat="median", seconds="",
                        peak_mib="", ratio=r["measured"], ratio_to=r["target"], met=r["met"], note=r["note"])
                   for r in summary], "summary" + suffix)
        (common.RESULTS / f"summary{suffix}.md").write_text(to_markdown(summary))
        print(to_markdown(summary))
    info = dict(machine(), quick=args.quick, only=names, seconds_total=time.perf_counter() - start,
                seconds_per_benchmark=durations, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    # a partial run is named by what it ran (run_datapath_ddp.json), so it does not overwrite another
    # one's record (run_partial.json: the eval, mining and scaling rerun of 2026-11-29)
    dump_json(info, "run.json" if not args.only else f"run_{'_'.join(names)}.json")
    print(f"total {info['seconds_total']:.0f} s")
    return results


def _read(name: str) -> list[dict]:
    """Rows of an earlier CSV (numbers as floats), for --only runs."""
    import csv

    path = common.RESULTS / f"{name}.csv"
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(open(path)):
        for k, v in r.items():
            try:
                r[k] = float(v) if k not in ("repeat",) else v
            except (TypeError, ValueError):
                pass
        rows.append(r)
    return rows


if __name__ == "__main__":
    main()
