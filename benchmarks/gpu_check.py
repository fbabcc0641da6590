"""The GPU check (issues 12 and 16): the rehearsal's training and evaluation at
native 480x640 with VGG-16 on ``cuda``, and the speed of every stage of the
paper profile's training, in one command of at most 8 minutes.

1. makes the rehearsal's Pittsburgh-layout city (480x640 JPEGs, 24 views per place);
2. checks that CUDA gives the CPU's descriptors for the same weights and
   images (cosine > 0.999 per image, VGG-16 + NetVLAD K = 64 with the
   k-means initialisation, float32 and channels-last);
3. measures extraction and training throughput (``repro.report.costs.measure``)
   into ``results/throughput/cuda.json``, which ``python -m repro.pipeline
   --profile paper --list`` uses to project the paper profile's time;
4. (issue 16) VGG-16 + NetVLAD (K = 64, channels-last, random weights: the
   speed does not depend on them) in float32 (TF32 off), TF32 and bf16:
   extraction images/s from images already on the GPU (the network alone)
   and through the data path (``extract_descriptors`` of the city's JPEGs,
   repeated, ``num_workers="auto"`` resolved); the training step (the
   authors' tuple of 1 query + 1 positive + 10 negatives, trained from
   conv5_1, the triplet loss, an SGD update every 4 tuples) from memory and,
   in bf16, through the data path (``TupleImages.stream`` with workers); a
   ``DescriptorCache.refresh`` of up to Pitts30k-train's 17,416 images.
   Achieved TFLOP/s from the FLOPs counted from the layer shapes
   (``benchmarks/gpu_projection.py``) and, where the GPU's dense peak is
   known (or ``--peak-tflops``), the fraction of it. These run as the trainer
   does: deterministic algorithms (``TrainConfig.deterministic``), TF32 off
   but for the TF32 rows;
5. trains the rehearsal's VGG-16 + NetVLAD run on ``cuda`` (the paper's
   settings, counts shrunk; bf16 and workers "auto" there) and evaluates
   it, timing every stage; its record gives the loader stall (waiting for
   images / epoch seconds);
6. prints images/s per stage, the projected time of the paper profile's
   training runs (02_train, 02_train_alexnet: 30 epochs on Pitts30k) at
   ``cuda.json``'s rates, the paper profile's Pitts30k VGG-16 + NetVLAD run at
   the bf16 rates measured in 4 (data path, refreshes, training; mining and
   recall from the CPU benchmarks), and issue 16's goals, met or not.

Everything goes to ``gpu_check.json`` under ``--out`` (rewritten after each
step, so a run cut short keeps what it measured). A step that fails is
recorded with its error and the others still run; the exit status is then 1.

The device machine has its own torch (2.11) and no faiss or papermill, so
this runs the stages without papermill; carry the faiss wheel (README,
"The GPU check"). From the repository root on the device machine::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT

It also runs on the CPU (``--device cpu --quick``: small images, short
timings, a tuple of 4 images, for the project's own test; every step runs,
the peak fractions and goals are "not measured" there).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.gpu_projection import (  # noqa: E402
    GOALS,
    cpu_side_seconds,
    image_flops,
    paper_run,
    peak_tflops,
    project,
)
from repro.atomic import write_json  # noqa: E402
from repro.data.datasets import load_split  # noqa: E402
from repro.data.images import normalize_images  # noqa: E402
from repro.data.loader import LoaderClock, resolve_workers  # noqa: E402
from repro.data.synthetic import make_layout_city  # noqa: E402
from repro.evaluate import evaluate_split, extract_descriptors, init_netvlad_from_images  # noqa: E402
from repro.model import build_model  # noqa: E402
from repro.model.backbone import use_channels_last  # noqa: E402
from repro.model.precision import set_tf32  # noqa: E402
from repro.report.costs import (  # noqa: E402
    THROUGHPUT_DIR,
    measure,
    projected_seconds,
    training_stages,
)
from repro.train import TrainConfig, train  # noqa: E402
from repro.train.cache import DescriptorCache  # noqa: E402
from repro.train.trainer import deterministic_algorithms  # noqa: E402
from repro.train.loop import TupleImages, forward_images, tuple_loss  # noqa: E402
from repro.train.mining import MinedTuple  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COSINE_MIN = 0.999


def descriptor_agreement(paths, device, init_paths, image_size=None) -> dict:
    """Per-image cosine of VGG-16 + NetVLAD descriptors: CPU float32 (the
    reference) against ``device`` (channels-last, the paper profile's)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("vgg16", "netvlad", weights=None, num_clusters=64, assignment="fixed_bias")
    init_netvlad_from_images(model, init_paths, image_size, num_images=4, num_descriptors=2000, device="cpu")
    cpu = extract_descriptors(model, paths, image_size, batch_size=2, device="cpu")
    use_channels_last(model.base)
    dev = extract_descriptors(model, paths, image_size, batch_size=8, device=device)
    cos = (cpu * dev).sum(1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(dev, axis=1))
    return {"images": len(paths), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "ok": bool(cos.min() > COSINE_MIN)}


def rehearsal_training(root: Path, device: str, out_dir: Path, epochs: int, image_size=None) -> dict:
    """The rehearsal's VGG-16 + NetVLAD run (TrainConfig.paper, counts shrunk) on ``device``."""
    cfg = TrainConfig.paper(dataset="pitts30k", data_root=str(root), weights=None, device=device, epochs=epochs,
                            image_size=image_size, init_images=4, init_descriptors=2000, queries_per_epoch=8,
                            val_queries=8, num_random_negatives=40, num_cached_negatives=2, num_hard_negatives=10,
                            cache_refresh=4, eval_batch_size=8, whiten_dim=32, whiten_fit_images=96,
                            run_name="gpu_check", out_dir=str(out_dir / "train"),
                            record_path=str(out_dir / "gpu_check_train.json"), progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg)
    rec = json.loads(Path(result.record_path).read_text())
    t1 = time.perf_counter()
    test = evaluate_split(result.model, load_split("pitts30k", root, "test"), image_size, device=device,
                          batch_size=8)
    trained = [e for e in rec["epochs"] if e.get("seconds") is not None]  # epoch 0 only validates
    wait = sum(e["loader_wait_seconds"] for e in trained)
    secs = sum(e["seconds"] + e["start_refresh_seconds"] for e in trained)
    return {"train_seconds": t1 - t0, "evaluate_seconds": time.perf_counter() - t1,
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "seconds", "refresh_seconds", "loader_wait_seconds",
                                              "start_refresh_seconds", "tuples", "tuple_images", "cache_refreshes")}
                       for e in rec["epochs"]],
            "precision": rec.get("precision"), "num_workers": rec.get("num_workers"),
            # the stall: waiting for images over the epochs' loops and the refresh before each
            "loader_wait_seconds": wait, "epoch_seconds": secs, "loader_stall_share": wait / secs if secs else None,
            "test_recall": {str(k): v for k, v in test["recall"].items()}, "best_epoch": result.best_epoch}


def paper_training_projection(rates: dict) -> dict:
    """Projected seconds of the paper profile's four training runs on Pitts30k (published sizes)."""
    out = {}
    for backbone in ("vgg16", "alexnet"):
        for pooling in ("netvlad", "fmax"):
            cfg = TrainConfig.paper(dataset="pitts30k", data_root="/nonexistent", backbone=backbone, pooling=pooling,
                                    whiten_dim=4096 if pooling == "netvlad" else None)
            stages, _ = training_stages(cfg, f"{backbone}/{pooling}")
            secs, missing = projected_seconds(stages, rates)
            out[f"{backbone}/{pooling}"] = {"images_forward": sum(s.forward for s in stages),
                                            "images_train": sum(s.train for s in stages), "seconds": secs}
    return out


# ---------------------------------------------------------------------------
# issue 16: precision, data path, training step, refresh

# the base's precision and TF32 of each measured mode; float32 means float32 (TF32 off)
MODES = {"float32": ("float32", False), "tf32": ("float32", True), "bf16": ("bf16", False)}


def sizes_for(quick: bool, cfg: TrainConfig) -> dict:
    """What each issue-16 step measures: the paper profile's batch and tuple on the device; on the CPU
    (``--quick``) small images, a tuple of 4 images and fractions of a second per timing."""
    if quick:
        return {"image": (64, 80), "batch": 4, "tuple_images": 4, "tuples_per_update": 1, "seconds": 0.2,
                "data_seconds": 0.5, "max_images": 32, "refresh_seconds": 0.5, "max_refresh": 16}
    return {"image": (480, 640), "batch": cfg.eval_batch_size, "tuple_images": 2 + cfg.num_hard_negatives,
            "tuples_per_update": cfg.batch_size, "seconds": 3.0, "data_seconds": 4.0, "max_images": 8192,
            "refresh_seconds": 12.0, "max_refresh": None}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _start_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if torch.device(device).type == "cuda" else None


def set_mode(model, mode: str) -> None:
    precision, tf32 = MODES[mode]
    set_tf32(tf32)
    model.set_precision(precision)


def bench_model(device):
    """VGG-16 + NetVLAD (K = 64) as the paper profile trains it: the authors' layer and depth (conv5_1 on),
    channels-last; random weights (the speed does not depend on them)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("vgg16", "netvlad", weights=None, num_clusters=64, train_from="authors",
                            assignment="fixed_bias")
    use_channels_last(model.base)
    return model.to(device)


def run_for(step, device, seconds: float, warmup: int = 2, min_reps: int = 2) -> tuple[int, float]:
    """``step()`` ``warmup`` times untimed (kernel choice, allocator), then at least ``min_reps`` times
    and until ``seconds`` have passed, each followed by a device synchronisation (so the clock reads
    finished work); returns (timed repetitions, their seconds)."""
    for _ in range(warmup):
        step()
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < seconds:
        step()
        _sync(device)
        reps += 1
    return reps, time.perf_counter() - t0


def rate(images: int, seconds: float, flops_per_image: float, peak: dict | None, mode: str) -> dict:
    """images/s, achieved TFLOP/s and, where the peak is known, the fraction of the mode's dense peak."""
    per_s = images / seconds
    out = {"images": images, "seconds": seconds, "images_per_s": per_s, "tflops": per_s * flops_per_image / 1e12}
    if peak:
        out.update(peak_tflops=peak[mode], peak_fraction=out["tflops"] / peak[mode])
    return out


def repeated(paths, n: int) -> list:
    """``n`` paths, cycling through ``paths`` (the city has 168 JPEGs; each read decodes its file again)."""
    return list(itertools.islice(itertools.cycle(paths), n))


def extraction_in_memory(model, device, sizes: dict, flops: dict, peak) -> dict:
    """Descriptors of a batch of 8-bit images already on the device: the network alone, per mode."""
    images = torch.randint(0, 256, (sizes["batch"], 3, *sizes["image"]), dtype=torch.uint8, device=device)
    model.eval()
    out = {}
    for mode in MODES:
        set_mode(model, mode)
        _start_memory(device)
        with torch.no_grad():
            reps, secs = run_for(lambda: model(normalize_images(images)), device, sizes["seconds"])
        out[mode] = {**rate(reps * sizes["batch"], secs, flops["forward"], peak, mode), "batch": sizes["batch"],
                     "peak_memory_gib": _peak_gib(device)}
        print(f"extraction, {mode}, in memory: {out[mode]['images_per_s']:.1f} images/s, "
              f"{out[mode]['tflops']:.1f} TFLOP/s" + _fraction(out[mode]), flush=True)
    return out


def extraction_data_path(model, paths, device, workers: int, sizes: dict, flops: dict, peak, in_memory: dict) -> dict:
    """``extract_descriptors`` of JPEG files (decoding by ``workers`` processes, pinned copies), per mode:
    about ``data_seconds`` of images at the in-memory rate; the share of the time spent waiting for images."""
    out = {}
    for mode in MODES:
        set_mode(model, mode)
        expected = in_memory.get(mode, {}).get("images_per_s", 0.0) * sizes["data_seconds"]
        n = int(min(sizes["max_images"], max(2 * sizes["batch"], expected // sizes["batch"] * sizes["batch"])))
        clock = LoaderClock()
        _start_memory(device)
        t0 = time.perf_counter()
        extract_descriptors(model, repeated(paths, n), None, sizes["batch"], device, workers, whiten=False,
                            desc=f"extraction {mode}", clock=clock)
        secs = time.perf_counter() - t0  # the descriptors are on the CPU: the device's work is done
        out[mode] = {**rate(n, secs, flops["forward"], peak, mode), "batch": sizes["batch"], "num_workers": workers,
                     "loader_wait_seconds": clock.wait, "loader_wait_share": clock.wait / secs,
                     "peak_memory_gib": _peak_gib(device)}
        print(f"extraction, {mode}, JPEGs with {workers} workers: {out[mode]['images_per_s']:.1f} images/s, "
              f"{out[mode]['tflops']:.1f} TFLOP/s" + _fraction(out[mode])
              + f", waiting for images {out[mode]['loader_wait_share']:.1%} of the time", flush=True)
    return out


def train_updates(model, device, batches, cfg: TrainConfig, tuples_per_update: int):
    """A function doing one SGD update as the trainer does it: each tuple's images forward (normalised on
    the device), Eq. 7, backward, its loss read back; the summed gradient divided, then the step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.resolved_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def update():
        optimizer.zero_grad(set_to_none=True)
        for _ in range(tuples_per_update):
            desc = forward_images(model, next(batches), device)
            loss, _ = tuple_loss(desc, 1, cfg.margin)
            loss.backward()  # always, whether or not a triplet violates the margin: the cost of a training tuple
            loss.detach().item()
        for p in params:
            if p.grad is not None:
                p.grad.div_(tuples_per_update)
        optimizer.step()

    return update


def training_in_memory(model, device, sizes: dict, flops: dict, peak, cfg: TrainConfig) -> dict:
    """The training step on one tuple's 8-bit images already on the device, per mode (and bf16 without
    deterministic algorithms, when the trainer's default has them: what they cost)."""
    tuple_images = torch.randint(0, 256, (sizes["tuple_images"], 3, *sizes["image"]), dtype=torch.uint8,
                                 device=device)
    runs = [(mode, mode, cfg.deterministic) for mode in MODES]
    if cfg.deterministic:
        runs.append(("bf16_nondeterministic", "bf16", False))
    model.train()
    out = {}
    for name, mode, deterministic in runs:
        set_mode(model, mode)
        _start_memory(device)
        update = train_updates(model, device, itertools.repeat(tuple_images), cfg, sizes["tuples_per_update"])
        with deterministic_algorithms(deterministic, torch.device(device)):
            reps, secs = run_for(update, device, sizes["seconds"], warmup=1, min_reps=1)
        tuples = reps * sizes["tuples_per_update"]
        out[name] = {**rate(tuples * sizes["tuple_images"], secs, flops["train"], peak, mode),
                     "tuples": tuples, "tuples_per_s": tuples / secs, "tuple_images": sizes["tuple_images"],
                     "tuples_per_update": sizes["tuples_per_update"], "deterministic": deterministic,
                     "peak_memory_gib": _peak_gib(device)}
        print(f"training step, {name}, in memory: {out[name]['tuples_per_s']:.2f} tuples/s "
              f"({out[name]['images_per_s']:.1f} images/s), {out[name]['tflops']:.1f} TFLOP/s"
              + _fraction(out[name]), flush=True)
    return out


def training_data_path(model, split, device, workers: int, sizes: dict, flops: dict, peak, cfg: TrainConfig,
                       in_memory_rate: float | None) -> dict:
    """bf16 training on tuples decoded from the JPEG files by ``workers`` processes, as the trainer's
    ``TupleImages.stream`` feeds them (about ``data_seconds`` of tuples at the in-memory rate), and the share
    of the time the loop waited for images: the steady-state loader stall of training."""
    negatives = sizes["tuple_images"] - 2
    per_update = sizes["tuples_per_update"]
    expected = (in_memory_rate or 0.0) * sizes["data_seconds"] / sizes["tuple_images"]
    n = int(max(2, expected // per_update) * per_update)
    db = np.arange(len(split.db_paths))
    tuples = [MinedTuple(query=i % len(split.q_paths), positives=db[[i % len(db)]],
                         negatives=np.roll(db, -(i + 1))[:negatives]) for i in range(n)]
    set_mode(model, "bf16")
    model.train()
    clock = LoaderClock()
    _start_memory(device)
    t0 = time.perf_counter()
    stream = TupleImages(split).stream(tuples, workers, device, clock)
    update = train_updates(model, device, stream, cfg, per_update)
    for _ in range(n // per_update):
        update()
    assert next(stream, None) is None  # every tuple used
    _sync(device)
    secs = time.perf_counter() - t0
    out = {**rate(n * sizes["tuple_images"], secs, flops["train"], peak, "bf16"), "tuples": n,
           "tuples_per_s": n / secs, "num_workers": workers, "loader_wait_seconds": clock.wait,
           "loader_wait_share": clock.wait / secs, "peak_memory_gib": _peak_gib(device)}
    print(f"training step, bf16, JPEGs with {workers} workers: {out['tuples_per_s']:.2f} tuples/s "
          f"({out['images_per_s']:.1f} images/s), waiting for images {out['loader_wait_share']:.1%} of the time",
          flush=True)
    return out


def refresh_time(model, paths, device, workers: int, sizes: dict, cfg: TrainConfig, pitts: tuple[int, int],
                 data_rate: float | None, out_dir: Path) -> dict:
    """One ``DescriptorCache.refresh`` (bf16, the paper profile's storage rules) of up to Pitts30k-train's
    database + queries (``pitts``), fewer when the data-path rate says it would take over
    ``refresh_seconds``; the same share of database and query images."""
    full = pitts[0] + pitts[1]
    n = min(full, sizes["max_refresh"] or full, max(16, int((data_rate or 0.0) * sizes["refresh_seconds"])))
    n_db = max(1, round(n * pitts[0] / full))
    files = repeated(paths, n)
    set_mode(model, "bf16")
    cache = DescriptorCache(n_db, n - n_db, model.pooled_dim, dtype=cfg.cache_dtype, fp16_gb=cfg.cache_fp16_gb,
                            memmap_gb=cfg.cache_memmap_gb, memmap_dir=out_dir / "refresh_cache")
    clock = LoaderClock()
    _start_memory(device)
    t0 = time.perf_counter()
    cache.refresh(model, files[:n_db], files[n_db:], None, cfg.eval_batch_size, device, workers, clock=clock)
    secs = time.perf_counter() - t0
    out = {"images": n, "database": n_db, "queries": n - n_db, "seconds": secs, "images_per_s": n / secs,
           "num_workers": workers, "cache": cache.summary(), "loader_wait_seconds": clock.wait,
           "loader_wait_share": clock.wait / secs, "pitts30k_images": full, "pitts30k_seconds": full * secs / n,
           "peak_memory_gib": _peak_gib(device)}
    print(f"cache refresh of {n:,} images ({cache.dtype}): {secs:.1f} s, {out['images_per_s']:.1f} images/s; "
          f"Pitts30k-train's {full:,}: {out['pitts30k_seconds']:.0f} s", flush=True)
    return out


def _fraction(entry: dict) -> str:
    return f" = {entry['peak_fraction']:.1%} of {entry['peak_tflops']} TFLOP/s" if "peak_fraction" in entry else ""


def measured_paper_projection(report: dict) -> dict:
    """The paper profile's Pitts30k VGG-16 + NetVLAD run at this device's measured bf16 rates: forward passes
    at the data-path extraction rate, the cache refreshes at the refresh's, training images at the
    data-path training rate; mining and recall from the CPU benchmarks (gpu_projection.cpu_side_seconds)."""
    cfg, stages, info = paper_run(None)
    flops = image_flops(cfg.backbone, (480, 640), cfg.num_clusters, cfg.train_from)
    extract = report["extraction"]["data_path"]["bf16"]["images_per_s"]
    train_rate = report["training"]["data_path"]["images_per_s"]
    refresh = report["refresh"]["images_per_s"]
    net = project(stages, flops, extract, train_rate, refresh)
    cpu = cpu_side_seconds(cfg, stages, info)
    cpu_s = (cpu["mining_seconds"] or 0.0) + (cpu["recall_seconds"] or 0.0)
    return {"rates": {"extract_images_per_s": extract, "refresh_images_per_s": refresh,
                      "train_images_per_s": train_rate, "precision": "bf16"},
            "network": net, "network_hours": net["seconds"] / 3600, "cpu_side": cpu,
            "hours": (net["seconds"] + cpu_s) / 3600, "size_source": info["size_source"],
            "image_size_measured": report["image_size"]}


def goal_rows(report: dict, on_gpu: bool) -> list[dict]:
    """Issue 16's goals from this run: met, not met, or not measured (a CPU run, an unknown peak, a failed step)."""
    def row(goal, value, limit, below, shown):
        if value is None or not on_gpu:
            status = "not measured" + ("" if on_gpu else " (CPU run)")
        else:
            status = "met" if (value < limit if below else value >= limit) else "not met"
        return {"goal": goal, "measured": shown if value is not None else None, "status": status}

    def get(*keys):
        d = report
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    ext, trn = get("extraction", "in_memory", "bf16", "peak_fraction"), get("training", "in_memory", "bf16",
                                                                              "peak_fraction")
    stall, steady = get("training", "rehearsal", "loader_stall_share"), get("training", "data_path",
                                                                             "loader_wait_share")
    hours = get("paper_run_projection", "hours")
    return [
        row("extraction bf16 >= 30% of the dense bf16 peak", ext, GOALS["extract_peak_fraction"], False,
            f"{ext:.1%}" if ext is not None else None),
        row("training step bf16 >= 25% of the dense bf16 peak", trn, GOALS["train_peak_fraction"], False,
            f"{trn:.1%}" if trn is not None else None),
        row("loader stall < 10% of training time (rehearsal run's record)", stall, GOALS["loader_stall_max"], True,
            f"{stall:.1%}" if stall is not None else None),
        row("loader stall < 10% of training time (steady-state tuple stream)", steady, GOALS["loader_stall_max"],
            True, f"{steady:.1%}" if steady is not None else None),
        row(f"paper profile's Pitts30k VGG-16 run <= {GOALS['hours_max']:.0f} h on one H200-class GPU", hours,
            GOALS["hours_max"], True, f"{hours:.2f} h on {report['device']}" if hours is not None else None),
    ]


def run_step(report: dict, key: str, fn, out: Path):
    """``report[a][b] = fn()`` for ``key`` "a.b" (or ``report[key]``); a failure is recorded in
    ``failed_steps`` (and printed) and the check goes on: a device run is one shot, the other steps'
    numbers are worth keeping. The whole report is rewritten after each step."""
    *parents, last = key.split(".")
    where = report
    for k in parents:
        where = where.setdefault(k, {})
    t0 = time.perf_counter()
    try:
        where[last] = fn()
    except Exception as exc:  # noqa: BLE001 - recorded, and the exit status says it
        traceback.print_exc()
        where[last] = {"error": f"{type(exc).__name__}: {exc}"}
        report.setdefault("failed_steps", []).append(key)
    report.setdefault("step_seconds", {})[key] = time.perf_counter() - t0
    write_json(out / "gpu_check.json", report)
    return where[last]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small images and counts (the project's CPU test)")
    ap.add_argument("--out", default=None, help="folder for the report (default: cache/gpu_check)")
    ap.add_argument("--throughput-out", default=None,
                    help=f"throughput record (default: {THROUGHPUT_DIR}/cuda.json on cuda; none on cpu)")
    ap.add_argument("--workers", default="auto",
                    help="DataLoader workers of the data-path steps (default auto: on CUDA the cores less one)")
    ap.add_argument("--peak-tflops", nargs=3, type=float, metavar=("BF16", "TF32", "FP32"), default=None,
                    help="the GPU's dense peaks, where its name is not in gpu_projection.PEAK_TFLOPS")
    args = ap.parse_args(argv)
    # deterministic cuBLAS (the trainer's default) needs its workspace fixed before cuBLAS starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    start = time.perf_counter()
    out = Path(args.out) if args.out else REPO / "cache" / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    size = (64, 80) if args.quick else (480, 640)
    root = make_layout_city(out / "pittsburgh", "pittsburgh", preset="tiny", seed=0, places=2, query_places=2,
                            views_per_query_place=4, image_size=size)
    train_split = load_split("pitts30k", root, "train")
    train_db = train_split.db_paths
    on_gpu = args.device.startswith("cuda")
    report = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "image_size": list(size)}
    print(f"device {report['device']}, torch {report['torch']}, images {size[0]}x{size[1]}", flush=True)

    report["agreement"] = descriptor_agreement(train_db[:8 if not args.quick else 2], args.device, train_db)
    print(f"CPU vs {args.device} descriptors: cosine min {report['agreement']['cosine_min']:.6f} "
          f"(> {COSINE_MIN}: {report['agreement']['ok']})", flush=True)

    rates = measure(("vgg16", "alexnet"), args.device, images=train_db, image_size=size,
                    num_images=8 if args.quick else 32, source="benchmarks/gpu_check.py")
    report["throughput"] = rates
    for bb, r in rates["backbones"].items():
        print(f"{bb}: extraction {r['extract_images_per_s']:.1f} images/s, training {r['train_images_per_s']:.1f} "
              "images/s", flush=True)
    tp_out = args.throughput_out or (str(REPO / THROUGHPUT_DIR / "cuda.json") if on_gpu else None)
    if tp_out:
        write_json(tp_out, rates)
        print(f"wrote {tp_out}", flush=True)

    # issue 16: precision, data path, training step, refresh (VGG-16 + NetVLAD, the paper profile's settings)
    cfg = TrainConfig.paper()
    sizes = sizes_for(args.quick, cfg)
    workers = resolve_workers(args.workers if args.workers == "auto" else int(args.workers), args.device)
    peak = peak_tflops(report["device"], args.peak_tflops) if on_gpu else None
    flops = image_flops("vgg16", size, 64, "authors")
    paths = sorted(root.rglob("*.jpg"))
    report["issue16"] = {"flops_per_image": flops, "peak": peak, "num_workers": workers, "sizes": sizes,
                         "deterministic": cfg.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                         "jpeg_files": len(paths)}
    print(f"FLOPs per image at {size[0]}x{size[1]}: forward {flops['forward'] / 1e9:.2f} G, training step "
          f"{flops['train'] / 1e9:.2f} G; dense peak "
          + (f"{peak['bf16']} / {peak['tf32']} / {peak['float32']} TFLOP/s bf16 / TF32 / FP32 ({peak['source']})"
             if peak else "unknown (no fractions)") + f"; {workers} loader workers", flush=True)
    model = bench_model(args.device)
    tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    report["failed_steps"] = []
    try:
        with deterministic_algorithms(cfg.deterministic, torch.device(args.device)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deterministic mode's cuBLAS notices
            ext = run_step(report, "extraction.in_memory",
                           lambda: extraction_in_memory(model, args.device, sizes, flops, peak), out)
            ext_data = run_step(report, "extraction.data_path", lambda: extraction_data_path(
                model, paths, args.device, workers, sizes, flops, peak, ext), out)
            trn = run_step(report, "training.in_memory",
                           lambda: training_in_memory(model, args.device, sizes, flops, peak, cfg), out)
            run_step(report, "training.data_path", lambda: training_data_path(
                model, train_split, args.device, workers, sizes, flops, peak, cfg,
                trn.get("bf16", {}).get("images_per_s")), out)
            pitts = paper_run(None)[2]["sizes"]["train"]
            run_step(report, "refresh", lambda: refresh_time(
                model, paths, args.device, workers, sizes, cfg, pitts,
                ext_data.get("bf16", {}).get("images_per_s"), out), out)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        del model
        _start_memory(args.device)

    rehearsal = run_step(report, "training.rehearsal",
                         lambda: rehearsal_training(root, args.device, out, epochs=1 if args.quick else 2), out)
    if "error" not in rehearsal:
        print(f"rehearsal training {rehearsal['train_seconds']:.0f} s ({rehearsal['precision']}, "
              f"{rehearsal['num_workers']} workers), evaluation {rehearsal['evaluate_seconds']:.1f} s, test R@1/5/10 "
              + "/".join(f"{rehearsal['test_recall'].get(n, float('nan')):.1f}" for n in ("1", "5", "10"))
              + f"; waiting for images {rehearsal['loader_wait_seconds']:.1f} of {rehearsal['epoch_seconds']:.1f} "
              f"epoch seconds ({rehearsal['loader_stall_share']:.1%})", flush=True)

    report["paper_training_projection"] = paper_training_projection(rates)
    total = 0.0
    for run, p in report["paper_training_projection"].items():
        total += p["seconds"] or 0.0
        print(f"paper profile {run}: {p['images_forward']:,} forward + {p['images_train']:,} fwd+bwd images -> "
              f"{(p['seconds'] or float('nan')) / 3600:.2f} h", flush=True)
    print(f"paper profile, the four Pitts30k training runs: {total / 3600:.2f} h of network passes (at step 3's "
          "rates: repro.report.costs.measure, in the precision and with the workers a run resolves)", flush=True)

    proj = run_step(report, "paper_run_projection", lambda: measured_paper_projection(report), out)
    if "error" not in proj:
        r, c = proj["rates"], proj["cpu_side"]
        print(f"paper profile's Pitts30k VGG-16 + NetVLAD run at this device's bf16 rates (extraction "
              f"{r['extract_images_per_s']:.0f}, refresh {r['refresh_images_per_s']:.0f}, training "
              f"{r['train_images_per_s']:.0f} images/s"
              + (f", measured at {size[0]}x{size[1]}: --quick, not the paper's size" if args.quick else "")
              + f"): {proj['network_hours']:.2f} h of network passes, {proj['hours']:.2f} h with mining and recall "
              f"({c['source']}; not counted: {c['not_counted']})", flush=True)
    report["goals"] = goal_rows(report, on_gpu)
    for g in report["goals"]:
        print(f"goal: {g['goal']}: {g['measured'] or '-'} -> {g['status']}", flush=True)
    report["seconds"] = time.perf_counter() - start
    write_json(out / "gpu_check.json", report)
    print(f"wrote {out / 'gpu_check.json'} ({report['seconds']:.0f} s)"
          + (f"; failed steps: {', '.join(report['failed_steps'])}" if report.get("failed_steps") else ""),
          flush=True)
    return 0 if report["agreement"]["ok"] and not report.get("failed_steps") else 1


if __name__ == "__main__":
    raise SystemExit(main())
