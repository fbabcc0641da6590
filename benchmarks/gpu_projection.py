"""The paper profile's Pitts30k VGG-16 + NetVLAD run (30 epochs) projected on one
H200 from FLOP counts, for sessions without a GPU (issue 16).

Issue 16's goals are measured by ``benchmarks/gpu_check.py`` on a device
machine; where none is lent, this gives the projection the goals imply, every
number labelled "projected (not measured on a GPU)":

* image passes per stage: :func:`repro.report.costs.training_stages` of
  ``TrainConfig.paper(dataset="pitts30k", pooling="netvlad")`` (the
  datasets' published sizes, or the ``.mat`` files with ``--data-root``);
* FLOPs per image, counted from the layer shapes (:func:`image_flops`):
  VGG-16's convolutions at 480x640 plus NetVLAD's six matrix products;
  forward only for extraction, forward plus the backward of the trainable
  part (conv5_1 onwards and NetVLAD, the authors' depth) for training;
* rates at the goals' fractions of the H200's dense bf16 peak (30% for
  extraction, 25% for the training step): images/s = fraction x peak /
  FLOPs per image; hours = the sum over stages of images / rate;
* the CPU side that the network passes leave out (hard-negative mining and
  recall@N), from this project's CPU benchmarks (``results/benchmarks/
  mining.csv`` and ``eval.csv``, measured on the 2-core development CPU,
  scaled linearly); k-means, the PCA fit and checkpoint writing are not
  counted;
* the JPEG decoding that feeds those rates: images per CPU-second measured
  by ``benchmarks/bench_datapath.py`` (480x640 JPEGs decoded to 8-bit
  tensors as the trainer's loader does; ``results/benchmarks/datapath.csv``),
  and the cores that the projected rates need.

``python -m benchmarks.gpu_projection`` (``make gpu-projection``) writes
``results/benchmarks/gpu_projection.json`` and ``.csv``. gpu_check.py uses
the same counts with its measured rates.

Why here and not in ``repro/report/costs.py``: that module prices profiles
from measured throughput only ("measured, never assumed"); this projection
assumes rates (fractions of a datasheet peak), so it stays a benchmark. The
FLOP counting lives here too (``conv_flops`` moved from bench_scaling), so
gpu_check.py and this module share it.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also run as a script on the device machine (gpu_check.py imports this)
    sys.path.insert(0, str(ROOT))

LABEL = "projected (not measured on a GPU)"
IMAGE_HW = (480, 640)  # Pittsburgh's images, the paper's native size (H, W)

# Dense tensor-core / FP32 peaks in TFLOP/s (no sparsity), by a substring of
# torch.cuda.get_device_name, most specific first. Source: NVIDIA datasheets
# (H100 and H200 Tensor Core GPU, A100 Tensor Core GPU, L40S), whose tensor
# figures are quoted with sparsity: the dense ones are half of them.
PEAK_SOURCE = "NVIDIA datasheet (dense, no sparsity)"
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "float32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "tf32": 418.0, "float32": 60.0}),
    ("H200 NVL", {"bf16": 835.0, "tf32": 418.0, "float32": 60.0}),  # the H200 datasheet: as the H100 NVL
    ("H200", {"bf16": 989.4, "tf32": 494.7, "float32": 66.9}),         # SXM
    ("H100", {"bf16": 989.4, "tf32": 494.7, "float32": 66.9}),         # SXM ("H100 80GB HBM3")
    ("A100", {"bf16": 312.0, "tf32": 156.0, "float32": 19.5}),
    ("L40S", {"bf16": 362.05, "tf32": 183.0, "float32": 91.6}),
)
PROJECTED_GPU = "H200"  # the goal: <= 3 hours on one H200-class GPU

# Issue 16's goals: fractions of the dense bf16 peak, loader stall, hours.
GOALS = {"extract_peak_fraction": 0.30, "train_peak_fraction": 0.25, "loader_stall_max": 0.10, "hours_max": 3.0}


def peak_tflops(device_name: str, override=None) -> dict | None:
    """``{"bf16", "tf32", "float32", "source", "matched"}`` dense TFLOP/s for
    ``device_name`` (None when not in :data:`PEAK_TFLOPS`); ``override``:
    (bf16, tf32, float32) given on the command line."""
    if override:
        bf16, tf32, fp32 = (float(v) for v in override)
        return {"bf16": bf16, "tf32": tf32, "float32": fp32, "source": "--peak-tflops", "matched": None}
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return {**peaks, "source": PEAK_SOURCE, "matched": key}
    return None


# ---------------------------------------------------------------------------
# FLOPs from the layer shapes


def conv_layers(model: torch.nn.Module, image_hw) -> tuple[list[dict], tuple]:
    """Per Conv2d of ``model`` on one image: ``{"forward", "weight_grad",
    "input_grad"}`` FLOPs (2 x multiply-adds; a backward product costs what
    the forward one does, and happens only where autograd needs it: the
    weight's gradient where it trains, the input's where the input requires
    grad, i.e. after the first trainable layer), and ``model``'s output shape.
    By forward hooks on the meta device (shapes only, no arithmetic): this
    moves ``model`` to the meta device, so pass a model built for counting."""
    layers, shape = [], [None]

    def hook(m, inp, out):
        f = 2.0 * m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups) * out.numel()
        layers.append({"forward": f, "weight_grad": f if m.weight.requires_grad else 0.0,
                       "input_grad": f if inp[0].requires_grad else 0.0})

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.enable_grad():  # requires_grad of each layer's input, as in a training step
        shape[0] = tuple(model.to("meta")(torch.zeros(1, 3, *image_hw, device="meta")).shape)
    for h in hs:
        h.remove()
    return layers, shape[0]


def conv_flops(model: torch.nn.Module, image_hw) -> float:
    """FLOPs (2 x multiply-adds) of the Conv2d layers of ``model`` on one image, forward (moves it to meta)."""
    return sum(layer["forward"] for layer in conv_layers(model, image_hw)[0])


def netvlad_flops(num_clusters: int, dim: int, positions: int, input_grad: bool = True) -> dict:
    """NetVLAD's matrix products on one image of ``positions`` local descriptors:
    forward, the soft assignment (W x) and the aggregation (a x^T), 2 K D N
    FLOPs each; backward (its parameters train), dL/da and dL/dW, plus dL/dx
    from both products where its input requires grad. The normalisations
    and the softmax (O(D N) and O(K N)) are not counted."""
    product = 2.0 * num_clusters * dim * positions
    return {"forward": 2 * product, "backward": (4 if input_grad else 2) * product}


def image_flops(backbone: str = "vgg16", image_hw=IMAGE_HW, num_clusters: int = 64,
                train_from: str = "authors") -> dict:
    """FLOPs per image of base + NetVLAD: ``forward`` (extraction) and
    ``train`` (a training step: the whole forward, and the backward of the
    layers from ``train_from`` on and of NetVLAD), with their parts."""
    from repro.model.backbone import backbone_channels, build_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # randomly initialised: only the shapes are used
        base = build_backbone(backbone, weights=None, train_from=train_from)
    layers, out_shape = conv_layers(base, image_hw)
    trains_base = any(layer["weight_grad"] for layer in layers)
    vlad = netvlad_flops(num_clusters, backbone_channels(backbone), out_shape[2] * out_shape[3],
                         input_grad=trains_base)
    conv_fwd = sum(layer["forward"] for layer in layers)
    conv_bwd = sum(layer["weight_grad"] + layer["input_grad"] for layer in layers)
    return {"backbone": backbone, "image_hw": list(image_hw), "num_clusters": num_clusters, "train_from": train_from,
            "conv_forward": conv_fwd, "conv_backward": conv_bwd, "netvlad_forward": vlad["forward"],
            "netvlad_backward": vlad["backward"], "forward": conv_fwd + vlad["forward"],
            "train": conv_fwd + vlad["forward"] + conv_bwd + vlad["backward"],
            "trainable_convs": sum(1 for layer in layers if layer["weight_grad"]), "map_hw": list(out_shape[2:])}


def torchrun_gather(cfg) -> dict:
    """What a torchrun batch gathers (repro.train.loop._distributed_batch): one float32 gradient
    row per tuple of every trainable parameter (base from ``cfg.train_from``, and the pooling)."""
    from repro.model import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # randomly initialised: only the shapes are used
        model = build_model(cfg.backbone, cfg.pooling, weights=None, train_from=cfg.train_from,
                            num_clusters=cfg.num_clusters, assignment=cfg.assignment)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": params, "tuples_per_batch": cfg.batch_size,
            "bytes_per_batch": params * 4 * cfg.batch_size}


# ---------------------------------------------------------------------------
# the paper profile's run and its projection


def paper_run(data_root=None):
    """(TrainConfig, stages, info) of the paper profile's Pitts30k VGG-16 + NetVLAD
    run: :func:`repro.report.costs.training_stages`, from the ``.mat`` files
    under ``data_root`` or else the published sizes."""
    from repro.report.costs import training_stages
    from repro.train import TrainConfig

    cfg = TrainConfig.paper(dataset="pitts30k", data_root=str(data_root) if data_root else None,
                            pooling="netvlad")
    stages, info = training_stages(cfg, "02_train/netvlad")
    if not info:
        raise ValueError(f"the split sizes are unknown: {stages[0].note}")
    return cfg, stages, info


def is_refresh(stage) -> bool:
    """Whether a stage of training_stages is the descriptor-cache refreshes (priced at the refresh rate)."""
    return stage.stage.startswith("cache refreshes")


def project(stages, flops: dict, extract_rate: float, train_rate: float, refresh_rate: float | None = None) -> dict:
    """Seconds of the network passes of ``stages`` at the given images/s
    (forward-only images at ``extract_rate``, the cache refreshes at
    ``refresh_rate`` when given, training images at ``train_rate``), per
    stage and in total, with the FLOPs they do."""
    rows, total = [], 0.0
    for st in stages:
        if not (st.forward or st.train):
            continue
        fwd_rate = refresh_rate if refresh_rate and is_refresh(st) else extract_rate
        secs = st.forward / fwd_rate + st.train / train_rate
        total += secs
        rows.append({"stage": st.stage, "images_forward": st.forward, "images_train": st.train,
                     "flops": st.forward * flops["forward"] + st.train * flops["train"],
                     "images_per_s": fwd_rate if st.forward else train_rate, "seconds": secs})
    return {"stages": rows, "images_forward": sum(r["images_forward"] for r in rows),
            "images_train": sum(r["images_train"] for r in rows), "flops": sum(r["flops"] for r in rows),
            "seconds": total}


def _median_row(path: Path, case: str, impl: str) -> dict | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return next((r for r in csv.DictReader(f) if r["case"] == case and r["impl"] == impl
                     and r["repeat"] == "median"), None)


def cpu_side_seconds(cfg, stages, info, bench_dir=None) -> dict:
    """Hard-negative mining and recall@N of the run, from the CPU benchmarks
    (``mining.csv``: the table miner per 1000 queries at Pitts30k-train's
    10k x 32768-D; ``eval.csv``: recall@N of 6816 queries x 10k, 32768-D),
    scaled linearly in queries x database x dimension. Measured on the
    2-core development CPU: likely an upper bound on a device machine's 16 cores.
    Not counted: k-means (50k x 512-D), the PCA fit, checkpoints."""
    bench_dir = Path(bench_dir) if bench_dir else ROOT / "results" / "benchmarks"
    from repro.model.place_model import pooled_dim

    dim = pooled_dim(cfg.backbone, cfg.pooling, cfg.num_clusters)
    (n_train, _), (n_val, q_val) = info["sizes"]["train"], info["sizes"]["val"]
    out = {"source": f"{bench_dir.relative_to(ROOT) if bench_dir.is_relative_to(ROOT) else bench_dir}/mining.csv and "
                     "eval.csv, 2-core development CPU (likely an upper bound on the device machine)",
           "not_counted": "k-means initialisation, PCA whitening fit, checkpoint writing",
           "mining_seconds": None, "recall_seconds": None}
    mining = _median_row(bench_dir / "mining.csv", "pitts30k_32768d", "table")
    if mining:
        # every training tuple is one mined query: 1 + 1 + num_hard_negatives images at most
        queries = sum(st.train for st in stages) // (2 + cfg.num_hard_negatives)
        scale = (n_train / float(mining["N"])) * (dim / float(mining["dim"]))
        out.update(mined_queries=queries, mining_seconds=queries / 1000 * float(mining["seconds"]) * scale)
    recall = _median_row(bench_dir / "eval.csv", "pitts30k_test_32768d", "project")
    if recall:
        per = float(recall["seconds"]) / (float(recall["Q"]) * float(recall["M"]) * float(recall["dim"]))
        work = (cfg.epochs + 1) * min(q_val, cfg.val_queries) * n_val * dim  # validation: epoch 0 and each epoch
        for name, (n, q) in info["sizes"].items():
            if name not in ("train", "val"):  # untrained and best epoch, then the whitened descriptors
                work += (2 if cfg.eval_untrained else 1) * q * n * dim + q * n * (cfg.whiten_dim or 0)
        out["recall_seconds"] = per * work
    return out


def goal_projection(flops: dict, gpu: str = PROJECTED_GPU) -> dict:
    """Images/s on ``gpu`` at the goals' fractions of its dense bf16 peak."""
    peaks = peak_tflops(gpu)
    bf16 = peaks["bf16"] * 1e12
    return {"gpu": gpu, "bf16_peak_tflops": peaks["bf16"], "peak_source": PEAK_SOURCE,
            "extract_images_per_s": GOALS["extract_peak_fraction"] * bf16 / flops["forward"],
            "train_images_per_s": GOALS["train_peak_fraction"] * bf16 / flops["train"],
            "extract_peak_fraction": GOALS["extract_peak_fraction"],
            "train_peak_fraction": GOALS["train_peak_fraction"]}


def decode_rate(datapath_csv: Path) -> dict | None:
    """JPEG decoding per core from ``bench_datapath``'s median rows (the 480x640 case, else the
    largest): images per CPU-second in one process (0 workers) and through DataLoader workers
    (the hand-over between processes included); None when the CSV has no such rows."""
    from repro.paths import rel

    if not Path(datapath_csv).is_file():
        return None
    with open(datapath_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["repeat"] == "median" and r["case"].startswith("workers_jpeg_")]
    if not rows:
        return None
    size = max(int(r["image_h"]) * int(r["image_w"]) for r in rows)
    pick = {r["impl"]: r for r in rows if int(r["image_h"]) * int(r["image_w"]) == size}
    one = pick.get("workers_0")
    if one is None:
        return None
    workers = next((r for k, r in pick.items() if k != "workers_0"), None)
    return {"images_per_s_per_core": float(one["images_per_cpu_s"]),
            "images_per_s_per_core_with_workers": float(workers["images_per_cpu_s"]) if workers else None,
            "image_hw": [int(one["image_h"]), int(one["image_w"])], "images": int(float(one["images"])),
            "load_1min": float(one.get("load_1min_before") or "nan"),
            "source": f"{rel(datapath_csv)} (python -m benchmarks.run_all --only datapath)"}


def projection(decode: dict | None = None, data_root=None, bench_dir=None) -> dict:
    """The whole projection (module docstring) as one JSON-ready dict."""
    cfg, stages, info = paper_run(data_root)
    flops = image_flops(cfg.backbone, IMAGE_HW, cfg.num_clusters, cfg.train_from)
    goal = goal_projection(flops)
    net = project(stages, flops, goal["extract_images_per_s"], goal["train_images_per_s"])
    cpu = cpu_side_seconds(cfg, stages, info, bench_dir)
    cpu_s = (cpu["mining_seconds"] or 0.0) + (cpu["recall_seconds"] or 0.0)
    out = {"label": LABEL, "date": time.strftime("%Y-%m-%d"),
           "run": {"profile": "paper", "dataset": "pitts30k", "backbone": cfg.backbone, "pooling": cfg.pooling,
                   "epochs": cfg.epochs, "train_from": cfg.train_from, "whiten_dim": cfg.whiten_dim,
                   "image_hw": list(IMAGE_HW), "sizes": {k: list(v) for k, v in info["sizes"].items()},
                   "size_source": info["size_source"], "cache_mib": info["cache_mib"],
                   "cache_dtype": info["cache_dtype"]},
           "flops_per_image": flops, "torchrun_gather": torchrun_gather(cfg), "rates": goal, "network": net,
           "network_hours": net["seconds"] / 3600, "cpu_side": cpu,
           "hours_with_cpu_side": (net["seconds"] + cpu_s) / 3600}
    if decode:
        per_core = decode["images_per_s_per_core_with_workers"] or decode["images_per_s_per_core"]
        out["decode"] = {**decode, "measured_on": _cpu_model(),  # through workers: what the trainer pays
                         "cores_for_extraction": goal["extract_images_per_s"] / per_core,
                         "cores_for_training": goal["train_images_per_s"] / per_core}
    out["goals"] = [
        {"goal": "extraction bf16 >= 30% of the dense bf16 peak", "status": "not measured",
         "projected": f"{goal['extract_images_per_s']:.0f} images/s at 30% of the H200's {goal['bf16_peak_tflops']} "
                      "TFLOP/s"},
        {"goal": "training step >= 25% of the dense bf16 peak", "status": "not measured",
         "projected": f"{goal['train_images_per_s']:.0f} images/s at 25%"},
        {"goal": "loader stalls the GPU < 10% of training time", "status": "not measured",
         "projected": (f"{out['decode']['cores_for_extraction']:.1f} cores of JPEG decoding keep up with extraction, "
                       f"{out['decode']['cores_for_training']:.1f} with training") if decode else "no decode rate"},
        {"goal": "paper profile's Pitts30k VGG-16 run <= 3 h on one H200", "status": "not measured",
         "projected": f"{out['network_hours']:.2f} h of network passes, {out['hours_with_cpu_side']:.2f} h with "
                      "mining and recall"},
    ]
    return out


def _cpu_model() -> str:
    from repro.report.costs import _cpu_name

    return _cpu_name()


def write(rep: dict, out_dir: Path) -> tuple[Path, Path]:
    """``gpu_projection.json`` and a CSV of the stages (and the CPU side) under ``out_dir``."""
    from repro.atomic import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "gpu_projection.json"
    write_json(js, rep)
    path = out_dir / "gpu_projection.csv"
    cols = ["label", "stage", "images_forward", "images_train", "flops", "images_per_s", "seconds"]
    rows = [dict(label=LABEL, **r) for r in rep["network"]["stages"]]
    rows.append(dict(label=LABEL, stage="network passes, total", images_forward=rep["network"]["images_forward"],
                     images_train=rep["network"]["images_train"], flops=rep["network"]["flops"],
                     seconds=rep["network"]["seconds"]))
    for key in ("mining_seconds", "recall_seconds"):
        if rep["cpu_side"][key] is not None:
            rows.append(dict(label="estimated from the 2-core CPU benchmarks", stage=key.split("_")[0] + " (CPU)",
                             seconds=rep["cpu_side"][key]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return js, path


def summary_lines(rep: dict) -> list[str]:
    f, r, n = rep["flops_per_image"], rep["rates"], rep["network"]
    lines = [f"{LABEL}: paper profile, Pitts30k VGG-16 + NetVLAD, {rep['run']['epochs']} epochs "
             f"(sizes: {', '.join(rep['run']['size_source'])})",
             f"FLOPs per image at {f['image_hw'][0]}x{f['image_hw'][1]}: forward {f['forward'] / 1e9:.1f} G "
             f"(NetVLAD {f['netvlad_forward'] / 1e9:.2f} G), training step {f['train'] / 1e9:.1f} G "
             f"(backward of {f['trainable_convs']} convs and NetVLAD)",
             f"image passes: {n['images_forward']:,} forward, {n['images_train']:,} forward+backward; "
             f"{n['flops'] / 1e18:.3f} EFLOP"]
    for st in n["stages"]:
        lines.append(f"  {st['stage']:<40} {st['images_forward']:>10,} {st['images_train']:>10,} "
                     f"{st['seconds'] / 60:>7.1f} min")
    lines.append(f"on one {r['gpu']} ({r['bf16_peak_tflops']} TFLOP/s dense bf16): extraction "
                 f"{r['extract_images_per_s']:.0f} images/s at {r['extract_peak_fraction']:.0%}, training "
                 f"{r['train_images_per_s']:.0f} images/s at {r['train_peak_fraction']:.0%}: "
                 f"{rep['network_hours']:.2f} h of network passes")
    c = rep["cpu_side"]
    if c["mining_seconds"] is not None and c["recall_seconds"] is not None:
        lines.append(f"CPU side ({c['source']}): mining {c['mining_seconds'] / 60:.1f} min, recall "
                     f"{c['recall_seconds'] / 60:.1f} min; total {rep['hours_with_cpu_side']:.2f} h "
                     f"(not counted: {c['not_counted']})")
    g = rep["torchrun_gather"]
    lines.append(f"under torchrun a batch gathers {g['tuples_per_batch']} tuples x {g['trainable_parameters']:,} "
                 f"trainable parameters: {g['bytes_per_batch'] / 1e6:.1f} MB (counted, not measured)")
    if "decode" in rep:
        d = rep["decode"]
        with_workers = d["images_per_s_per_core_with_workers"]
        lines.append(f"JPEG decoding measured here ({d['measured_on']}, {d['source']}): {d['images_per_s_per_core']:.0f} "
                     f"images per CPU-second in one process"
                     + (f", {with_workers:.0f} through workers" if with_workers else "")
                     + f"; the projected rates need {d['cores_for_extraction']:.1f} cores (extraction), "
                     f"{d['cores_for_training']:.1f} (training)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_projection", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"), help="folder for the JSON and CSV")
    ap.add_argument("--data-root", default=None, help="Pittsburgh's folder (.mat files); default: published sizes")
    ap.add_argument("--decode-from", default=str(ROOT / "results" / "benchmarks" / "datapath.csv"),
                    help="bench_datapath's CSV, whose JPEG decoding rate per core prices the loader")
    args = ap.parse_args(argv)
    decode = decode_rate(Path(args.decode_from))
    if decode is None:
        print(f"no JPEG decoding rate in {args.decode_from}: python -m benchmarks.run_all --only datapath "
              "measures it; the projection goes on without the loader's cores", flush=True)
    rep = projection(decode, data_root=args.data_root)
    print("\n".join(summary_lines(rep)), flush=True)
    for p in write(rep, Path(args.out)):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
