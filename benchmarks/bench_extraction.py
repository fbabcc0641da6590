"""Feature extraction throughput: base + NetVLAD against the base alone.

Inference (eval mode, ``torch.no_grad``) on random ImageNet-normalised
images already in memory, so image decoding is not in the measurement (it is
the same for both). ``base``: ``model.base(images)``; ``netvlad``:
``model.pooled(images)`` = base, then NetVLAD. ratio = netvlad / base
seconds; the goal is ratio <= 1.15 (NetVLAD adds at most 15%).

Cases: the project's synthetic default (random AlexNet, 96x128 images,
K = 16), and the paper's shapes, Pittsburgh's full 640x480 images (H x W =
480 x 640), for AlexNet (K = 64) and, in the full
run, VGG-16 (K = 64; conv5_3 map 30x40, the NetVLAD benchmark's shape).
"""
from __future__ import annotations

import warnings

import torch

from benchmarks.common import interleaved, peak_mib, rows_for, timed
from repro.model import build_model

FULL_CASES = [
    dict(backbone="alexnet", K=16, H=96, W=128, batch=32),
    dict(backbone="alexnet", K=64, H=480, W=640, batch=8),
    dict(backbone="vgg16", K=64, H=480, W=640, batch=2),
]
QUICK_CASES = [dict(backbone="alexnet", K=8, H=64, W=64, batch=2)]


def make(backbone, K, H, W, batch, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: fine for timing
        model = build_model(backbone, "netvlad", weights=None, num_clusters=K).eval()
    images = torch.randn(batch, 3, H, W)
    return model, images


def _fns(model, images):
    @torch.no_grad()
    def base():
        return timed(model.base, images)

    @torch.no_grad()
    def netvlad():
        return timed(model.pooled, images)

    return {"netvlad": netvlad, "base": base}


def memory_case(case: str, impl: str, **shape):
    model, images = make(**shape)
    return _fns(model, images)[impl]


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    cases = QUICK_CASES if quick else FULL_CASES
    rows = []
    for shape in cases:
        case = "{backbone}_K{K}_{H}x{W}_b{batch}".format(**shape)
        model, images = make(**shape)
        with torch.no_grad():
            maps = model.base(images)
        reps = repeats or (3 if quick else (7 if shape["backbone"] == "vgg16" else 9))
        times = interleaved(_fns(model, images), reps)
        peaks = None
        if memory and not quick:  # quick: bench_netvlad alone exercises the subprocess path
            impls = ["netvlad", "base"]
            peaks = {i: peak_mib("benchmarks.bench_extraction", case, i, shape) for i in impls}
        extra = dict(shape, map_h=int(maps.shape[2]), map_w=int(maps.shape[3]), D=int(maps.shape[1]))
        r = rows_for("extraction", case, times, "base", extra, peaks)
        for row in r:
            row["images_per_s"] = shape["batch"] / row["seconds"]
        rows += r
        med = {i: sorted(t)[len(t) // 2] for i, t in times.items()}
        print(f"extraction {case} (map {tuple(maps.shape[1:])}): base {shape['batch'] / med['base']:.1f} img/s, "
              f"+NetVLAD {shape['batch'] / med['netvlad']:.1f} img/s, ratio {med['netvlad'] / med['base']:.3f}",
              flush=True)
    return rows
