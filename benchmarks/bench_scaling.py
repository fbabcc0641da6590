"""Scaling of evaluation and mining with the database size, and estimates
for Pitts250k-test and Tokyo 24/7.

Measured (CPU): recall@N of 1000 queries (``repro.metrics.recall_at_n``,
exact) and mining cost per 1000 queries (table and gather miners, see
bench_mining; here the table covers the 200 mined queries) on synthetic
4096-D descriptors (the paper's whitened dimension for Pitts250k and Tokyo
24/7; 100k x 32768-D float32 would need 12.5 GiB) as the database grows
from 1k to 100k. Slope: least-squares line seconds = a + b * M, b given per
1000 database images; and the log-log slope (1 = linear).

Estimates (not measured; labelled so in the CSV): evaluation time of
Pitts250k-test (83 952 database, 8 280 queries) and Tokyo 24/7 (75 984
database, 315 queries) with VGG-16 + NetVLAD (K = 64) at the paper's 640x480
(Tokyo 24/7 queries resized to the same), 4096-D whitened search:

* on this CPU: measured per-image extraction seconds (bench_extraction,
  VGG-16 at 480x640, scaled by the pixel count to 640x480) and the
  measured search slope above;
* on one GPU: FLOPs / (assumed throughput). FLOPs: conv multiply-adds of
  VGG-16 at 640x480 counted from the layer shapes (x 2) plus NetVLAD's
  products; search 2 * Q * M * D. Assumption: an NVIDIA A100 (FP32
  19.5 TFLOP/s peak, NVIDIA A100 datasheet) reaching 50% of peak on these
  dense convolutions and matrix products. No GPU was available to measure.
"""
from __future__ import annotations

import warnings

import numpy as np

from benchmarks.bench_eval import make_data
from benchmarks.bench_mining import make_split, mine_all
from benchmarks.common import interleaved, median, timed
from benchmarks.gpu_projection import conv_flops
from repro.metrics import recall_at_n

FULL_SIZES = [1000, 3000, 10000, 30000, 100000]
QUICK_SIZES = [200, 400]
GPU = {"name": "NVIDIA A100 (assumed)", "fp32_tflops": 19.5, "efficiency": 0.5,
       "source": "NVIDIA A100 Tensor Core GPU datasheet: 19.5 TFLOPS FP32"}
DATASETS = {"pitts250k_test": (83952, 8280), "tokyo247": (75984, 315)}


def fit(xs, ys) -> dict:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(xs, ys, 1)
    loglog = np.polyfit(np.log(xs), np.log(ys), 1)[0]
    return {"intercept_s": a, "slope_s_per_1k_db": b * 1000, "loglog_slope": loglog}


def run(quick: bool = False, repeats: int | None = None, memory: bool = False, dim: int | None = None,
        extraction_rows=None) -> list[dict]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    dim = dim or (64 if quick else 4096)
    n_q = 50 if quick else 1000
    n_mined = 40 if quick else 200
    repeats = repeats or 3
    rows, med = [], {"eval": [], "mining_table": [], "mining_gather": []}
    for M in sizes:
        db, q, positives = make_data(M, n_q, dim)
        tuples, cache = make_split(M, n_mined, dim)
        ids = np.arange(n_mined)

        def ev():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return timed(recall_at_n, q, db, positives)

        times = interleaved({"eval": ev,
                             "mining_table": lambda: timed(mine_all, "table", tuples, cache, ids),
                             "mining_gather": lambda: timed(mine_all, "gather", tuples, cache, ids)}, repeats)
        for impl, ts in times.items():
            per = 1.0 if impl == "eval" else 1000.0 / n_mined
            unit = f"s for {n_q} queries" if impl == "eval" else "s per 1000 queries"
            for i, t in enumerate(ts):
                rows.append(dict(benchmark="scaling", case=f"M{M}", impl=impl, repeat=i, seconds=t * per,
                                 M=M, dim=dim, unit=unit))
            rows.append(dict(benchmark="scaling", case=f"M{M}", impl=impl, repeat="median",
                             seconds=median(ts) * per, M=M, dim=dim, unit=unit))
            med[impl].append(median(ts) * per)
        print(f"scaling M={M}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in med.items()), flush=True)
        del db, q, cache
    for impl, ys in med.items():
        f = fit(sizes, ys)
        rows.append(dict(benchmark="scaling_fit", case="fit", impl=impl, repeat="", dim=dim,
                         unit="s per 1000 db images" + (f" ({n_q} queries)" if impl == "eval" else
                                                        " (per 1000 queries)"),
                         seconds=f["slope_s_per_1k_db"], intercept_s=f["intercept_s"], loglog_slope=f["loglog_slope"]))
    rows += estimates(med["eval"], sizes, n_q, dim, extraction_rows)
    return rows


def estimates(eval_s, sizes, n_q, dim, extraction_rows) -> list[dict]:
    """Pitts250k-test and Tokyo 24/7: CPU extrapolation from measured per-image costs, GPU from FLOPs."""
    from repro.model import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("vgg16", "netvlad", weights=None, num_clusters=64).eval()
    hw = (480, 640)  # the paper's Pittsburgh size (H, W)
    flops_img = conv_flops(model.base, hw) + 3 * 2.0 * 64 * 512 * 30 * 40  # base + NetVLAD's products (approx.)
    # measured search cost per (query x database image), 4096-D, from the largest size
    search_s = eval_s[-1] / (n_q * sizes[-1]) * (4096 / dim)
    cpu_img_s = None
    for r in extraction_rows or []:
        if r.get("backbone") == "vgg16" and r.get("impl") == "netvlad" and r.get("repeat") == "median":
            cpu_img_s = r["seconds"] / r["batch"] * (hw[0] * hw[1]) / (r["H"] * r["W"])
    gpu_flops = GPU["fp32_tflops"] * 1e12 * GPU["efficiency"]
    rows = []
    for name, (m, q) in DATASETS.items():
        n_img = m + q
        search_flops = 2.0 * q * m * 4096
        base = dict(benchmark="estimate", case=name, repeat="", M=m, Q=q, dim=4096, images=n_img,
                    flops_per_image=flops_img, search_flops=search_flops)
        if cpu_img_s is not None:
            rows.append(dict(base, impl="cpu_extrapolated (estimate)", seconds=n_img * cpu_img_s + q * m * search_s,
                             extraction_s=n_img * cpu_img_s, search_s=q * m * search_s,
                             assumption="measured per-image CPU costs of this machine, 2 cores, scaled linearly"))
        rows.append(dict(base, impl="gpu (estimate)", seconds=(n_img * flops_img + search_flops) / gpu_flops,
                         extraction_s=n_img * flops_img / gpu_flops, search_s=search_flops / gpu_flops,
                         assumption=f"{GPU['name']}, {GPU['efficiency']:.0%} of {GPU['fp32_tflops']} TFLOP/s FP32 "
                                    f"({GPU['source']}); image decoding and I/O not included"))
    return rows
