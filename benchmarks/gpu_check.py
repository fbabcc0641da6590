"""The GPU check (issue 12): the rehearsal's training and evaluation at native
480x640 with VGG-16 on ``cuda``, in one command of at most 8 minutes.

1. makes the rehearsal's Pittsburgh-layout city (480x640 JPEGs, 24 views per place);
2. checks that CUDA gives the CPU's descriptors for the same weights and
   images (cosine > 0.999 per image, VGG-16 + NetVLAD K = 64 with the
   k-means initialisation, float32 and channels-last);
3. measures extraction and training throughput (``repro.report.costs.measure``)
   into ``results/throughput/cuda.json``, which ``python -m repro.pipeline
   --profile paper --list`` uses to project the paper profile's time;
4. trains the rehearsal's VGG-16 + NetVLAD run on ``cuda`` (the paper's
   settings, counts shrunk) and evaluates it, timing every stage;
5. prints images/s per stage and the projected time of the paper profile's
   training runs (02_train, 02_train_alexnet: 30 epochs on Pitts30k).

The device machine has its own torch (2.11) and no faiss or papermill, so
this runs the stages without papermill; carry the faiss wheel (README,
"The GPU check"). From the repository root on the device machine::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT

It also runs on the CPU (``--device cpu --quick``: small images, for the
project's own test).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from repro.atomic import write_json  # noqa: E402
from repro.data.datasets import load_split  # noqa: E402
from repro.data.synthetic import make_layout_city  # noqa: E402
from repro.evaluate import evaluate_split, extract_descriptors, init_netvlad_from_images  # noqa: E402
from repro.model import build_model  # noqa: E402
from repro.model.backbone import use_channels_last  # noqa: E402
from repro.report.costs import (  # noqa: E402
    THROUGHPUT_DIR,
    measure,
    projected_seconds,
    training_stages,
)
from repro.train import TrainConfig, train  # noqa: E402

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
    return {"train_seconds": t1 - t0, "evaluate_seconds": time.perf_counter() - t1,
            "epochs": [{k: e.get(k) for k in ("epoch", "loss", "seconds", "tuples", "cache_refreshes")}
                       for e in rec["epochs"]],
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small images and counts (the project's CPU test)")
    ap.add_argument("--out", default=None, help="folder for the report (default: cache/gpu_check)")
    ap.add_argument("--throughput-out", default=None,
                    help=f"throughput record (default: {THROUGHPUT_DIR}/cuda.json on cuda; none on cpu)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out) if args.out else REPO / "cache" / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    size = (64, 80) if args.quick else (480, 640)
    root = make_layout_city(out / "pittsburgh", "pittsburgh", preset="tiny", seed=0, places=2, query_places=2,
                            views_per_query_place=4, image_size=size)
    train_db = load_split("pitts30k", root, "train").db_paths
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
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
    tp_out = args.throughput_out or (str(REPO / THROUGHPUT_DIR / "cuda.json") if args.device.startswith("cuda")
                                     else None)
    if tp_out:
        write_json(tp_out, rates)
        print(f"wrote {tp_out}", flush=True)

    report["training"] = rehearsal_training(root, args.device, out, epochs=1 if args.quick else 2)
    print(f"rehearsal training {report['training']['train_seconds']:.0f} s, evaluation "
          f"{report['training']['evaluate_seconds']:.1f} s, test R@1/5/10 "
          + "/".join(f"{report['training']['test_recall'].get(n, float('nan')):.1f}" for n in ("1", "5", "10")),
          flush=True)

    report["paper_training_projection"] = paper_training_projection(rates)
    total = 0.0
    for run, p in report["paper_training_projection"].items():
        total += p["seconds"] or 0.0
        print(f"paper profile {run}: {p['images_forward']:,} forward + {p['images_train']:,} fwd+bwd images -> "
              f"{(p['seconds'] or float('nan')) / 3600:.2f} h", flush=True)
    print(f"paper profile, the four Pitts30k training runs: {total / 3600:.2f} h of network passes", flush=True)
    report["seconds"] = time.perf_counter() - start
    write_json(out / "gpu_check.json", report)
    print(f"wrote {out / 'gpu_check.json'} ({report['seconds']:.0f} s)", flush=True)
    return 0 if report["agreement"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
