"""What a profile costs before it runs, and the throughput that prices it.

``python -m repro.pipeline --profile paper --list`` prints, for every run,
the image passes of each stage (forward only: initialisation, descriptor
cache refreshes, validation, test, whitening; forward and backward: the
training tuples), the descriptor cache's memory and a projected wall time
for every device whose throughput was measured. Counts come from the
dataset's ``.mat`` files when they are at hand (exact: the training tuples
are built from them), else from the datasets' published sizes
(:data:`KNOWN_SIZES`); they follow the trainer's own rules
(:mod:`repro.train`), so an upper bound is said where the run decides at
run time (how many negatives violate the margin).

Throughput is measured, never assumed (``python -m repro.report.costs measure``):
images per second of descriptor extraction from the JPEG files at 480x640
(decoding included, one process: the trainer's default), and of the
training step (forward and backward of one tuple's 12 images from the
first trainable layer, the authors' depth), per backbone and device, into
``results/throughput/{device}.json``. ``make rehearsal`` measures the CPU;
``benchmarks/gpu_check.py`` a GPU, where one is lent.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

# (database images, queries) per split, where the .mat is not at hand: the
# datasets' published sizes (../shared/data/README.md, from the authors'
# dbStruct files; Tokyo 24/7 from its geometry file). TokyoTM: not known here.
KNOWN_SIZES = {
    "pitts30k": {"train": (10000, 7416), "val": (10000, 7608), "test": (10000, 6816)},
    "pitts250k": {"train": (91464, 7824), "val": (78648, 7608), "test": (83952, 8280)},
    "tokyo247": {"test": (75984, 315)},
}
THROUGHPUT_DIR = "results/throughput"

__all__ = ["KNOWN_SIZES", "Stage", "authors_stages", "format_costs", "load_throughput", "measure", "profile_costs",
           "projected_seconds", "training_stages"]


@dataclass
class Stage:
    """One stage of one run: how many images pass through the network."""

    run: str
    stage: str
    backbone: str
    forward: int = 0        # images, forward only (no gradients)
    train: int = 0          # images, forward and backward (training tuples)
    note: str = ""


# ---------------------------------------------------------------------------
# counting


@functools.lru_cache(maxsize=None)
def _metadata(dataset: str, root: str, split: str):
    """The split from its .mat alone (no image checks), or None where there is none. Cached: a profile's
    runs ask for the same splits many times (``--list`` is one short process)."""
    from repro.data.datasets import load_split

    if not Path(root).is_dir():
        return None
    try:
        return load_split(dataset, root, split, check_files=False)
    except Exception:  # noqa: BLE001 - no usable .mat here: the caller falls back to the published sizes
        return None


@functools.lru_cache(maxsize=None)
def _trainable(dataset: str, root: str, pos_radius, neg_radius, pos_min_dist) -> int | None:
    """Training queries with a potential positive and a negative (the trainer's tuples), or None."""
    from repro.train.tuples import build_tuples

    split = _metadata(dataset, root, "train")
    return None if split is None else len(build_tuples(split, pos_radius, neg_radius, pos_min_dist).query_ids)


def split_sizes(dataset: str, root, split: str):
    """(database images, queries, where the numbers come from) of one split, or None when unknown."""
    s = _metadata(dataset, str(root), split) if root else None
    if s is not None:
        return s.num_db, s.num_q, ".mat"
    if split in KNOWN_SIZES.get(dataset, {}):
        return (*KNOWN_SIZES[dataset][split], "published size")
    return None


def training_stages(cfg, run: str) -> tuple[list[Stage], dict]:
    """The stages of one ``train(cfg)`` and ``{"cache_mib", "sizes"}``; ``None``
    counts where a split's size is unknown."""
    from repro.model.place_model import pooled_dim
    from repro.train.cache import _choose_dtype, cache_bytes
    from repro.train.config import parse_test_set

    root = cfg.data_root
    sizes = {s: split_sizes(cfg.dataset, root, s) for s in ("train", "val")}
    if cfg.test_split:
        sizes[f"{cfg.dataset}_{cfg.test_split}"] = split_sizes(cfg.dataset, root, cfg.test_split)
    for spec in cfg.test_on:
        ds, r, sp = parse_test_set(spec)
        sizes[f"{ds}_{sp}"] = split_sizes(ds, r, sp)
    bb = cfg.backbone
    if any(v is None for v in sizes.values()):
        unknown = [k for k, v in sizes.items() if v is None]
        return [Stage(run, "all", bb, note=f"sizes of {', '.join(unknown)} unknown (no .mat at hand)")], {}
    (ntr, qtr, _), (nv, qv, _) = sizes["train"], sizes["val"]
    exact = _trainable(cfg.dataset, str(cfg.data_root), cfg.pos_radius, cfg.neg_radius, cfg.pos_min_dist) \
        if cfg.data_root else None
    trainable = qtr if exact is None else exact  # the published size: all queries
    val = nv + min(qv, cfg.val_queries)
    tests = [(name, n + q) for name, (n, q, _) in sizes.items() if name not in ("train", "val")]
    out = []
    if cfg.pooling == "netvlad":
        out.append(Stage(run, "NetVLAD initialisation", bb, forward=min(cfg.init_images, ntr)))
    out.append(Stage(run, "epoch 0: validation", bb, forward=val))
    if cfg.eval_untrained:
        out += [Stage(run, f"epoch 0: test {name}", bb, forward=n) for name, n in tests]
    refresh = tuples = 0
    for epoch in range(1, cfg.epochs + 1):
        queries = min(trainable, cfg.queries_per_epoch or trainable)
        batches = queries // cfg.batch_size
        every = math.ceil(cfg.cache_refresh / cfg.batch_size) * 2 ** ((epoch - 1) // cfg.lr_step)
        refresh += (1 + max(0, batches - 1) // every) * (ntr + qtr)
        tuples += batches * cfg.batch_size * (2 + cfg.num_hard_negatives)
    out.append(Stage(run, f"cache refreshes ({cfg.epochs} epochs)", bb, forward=refresh))
    out.append(Stage(run, f"training tuples ({cfg.epochs} epochs)", bb, train=tuples,
                     note=f"at most: 1 query + 1 positive + {cfg.num_hard_negatives} negatives per tuple"))
    out.append(Stage(run, f"validation ({cfg.epochs} epochs)", bb, forward=cfg.epochs * val))
    if cfg.whiten_dim:
        out.append(Stage(run, f"whitening fit ({cfg.whiten_dim}-D)", bb, forward=min(ntr, cfg.whiten_fit_images)))
    out += [Stage(run, f"test {name}", bb, forward=n, note="the whitened test reuses these descriptors"
                  if cfg.whiten_dim else "") for name, n in tests]
    dim = pooled_dim(cfg.backbone, cfg.pooling, cfg.num_clusters, cfg.fmax_output_size)
    dtype = _choose_dtype(ntr + qtr, dim, cfg.cache_dtype, cfg.cache_fp16_gb)
    return out, {"cache_mib": cache_bytes(ntr + qtr, dim, dtype) / 2**20, "cache_dtype": dtype,
                 "sizes": {k: v[:2] for k, v in sizes.items()}, "size_source": sorted({v[2] for v in sizes.values()})}


def offline_stages(notebook: str, params: dict, run: str, seen: set) -> list[Stage]:
    """03/04: the untrained base's conv maps of the evaluated split, computed
    once for every alpha and grid (cached, so counted at their first run
    only), the k-means images, and 04's whitening fit images."""
    bb = params.get("backbone", "alexnet")
    dataset, root, split = params.get("dataset"), params.get("data_root"), params.get("split", "test")
    evaluated, train = split_sizes(dataset, root, split), split_sizes(dataset, root, "train")
    if evaluated is None or train is None:
        return [Stage(run, "all", bb, note="split sizes unknown (no .mat at hand)")]
    out = []
    key = (dataset, str(root), bb, split, str(params.get("image_size")))
    if key not in seen:
        seen.add(key)
        out.append(Stage(run, f"conv maps of {split} (cached for every alpha / grid)", bb,
                         forward=evaluated[0] + evaluated[1]))
        out.append(Stage(run, "NetVLAD initialisation", bb, forward=min(params.get("init_images", 500), train[0])))
    if notebook.startswith("04"):
        out.append(Stage(run, "PCA fit on training images", bb,
                         forward=min(params.get("whiten_fit_images", 10_000), train[0])))
    return out or [Stage(run, "pooling of cached maps only", bb)]


def authors_stages(params: dict, run: str) -> list[Stage]:
    """06: one forward pass of every test image per evaluated (model, test set); absent files: a note."""
    from repro.report.authors_models import authors_plan

    out = []
    for e in authors_plan(params.get("test_sets", ()), params.get("authors_model"), params.get("data_root"),
                          params.get("tokyo247_root")):
        stage = f"authors' {e['trained_on']} model on {e['dataset']} {e['split']}"
        sizes = split_sizes(e["dataset"], e["root"] if e["skip"] is None else None, e["split"])
        if e["skip"] is not None:  # not counted; what it would cost, from the published sizes
            would = f"; with it, {sizes[0] + sizes[1]:,} images ({sizes[2]})" if sizes else ""
            out.append(Stage(run, stage, "vgg16", note=f"skipped: {e['skip']}{would}"))
        elif sizes is None:
            out.append(Stage(run, stage, "vgg16", note="split size unknown"))
        else:
            out.append(Stage(run, stage, "vgg16", forward=sizes[0] + sizes[1], note="native size"))
    return out


def profile_costs(runs) -> tuple[list[Stage], dict]:
    """Stages of every run of a pipeline plan, and per training run its cache memory."""
    from repro.report.profiles import with_defaults
    from repro.report.training import planned_train_configs

    stages, memory, seen = [], {}, set()
    for run in runs:
        if run.missing():
            stages.append(Stage(run.name, "skipped", "", note=run.missing()))
            continue
        params = with_defaults(run.notebook, run.abs_params)
        if run.notebook.startswith("02"):
            for cfg in planned_train_configs(run.notebook, params):
                st, mem = training_stages(cfg, f"{run.name}/{cfg.pooling}")
                stages += st
                if mem:
                    memory[f"{run.name}/{cfg.pooling}"] = mem
        elif run.notebook.startswith(("03", "04")):
            stages += offline_stages(run.notebook, params, run.name, seen)
        elif run.notebook.startswith("06"):
            stages += authors_stages(params, run.name)
    return stages, memory


# ---------------------------------------------------------------------------
# throughput


def load_throughput(folder=None) -> list[dict]:
    """Every measurement in ``results/throughput/*.json``."""
    from repro.paths import repo_root

    folder = Path(folder) if folder else repo_root() / THROUGHPUT_DIR
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            out.append({**json.loads(p.read_text()), "file": p.name})
        except (OSError, ValueError):
            continue
    return out


def projected_seconds(stages: list[Stage], measurement: dict) -> tuple[float | None, list[str]]:
    """Seconds of ``stages`` at one device's measured rates (None and the
    backbones lacking a rate when one is not measured)."""
    rates = measurement.get("backbones", {})
    total, missing = 0.0, set()
    for st in stages:
        if not (st.forward or st.train):
            continue
        r = rates.get(st.backbone)
        if not r:
            missing.add(st.backbone)
            continue
        total += st.forward / r["extract_images_per_s"] + st.train / r["train_images_per_s"]
    return (None if missing else total), sorted(missing)


def format_costs(stages: list[Stage], memory: dict, measurements: list[dict]) -> str:
    """The ``--list`` report: a table of stages, totals, cache memory, projections."""
    lines = [f"{'run / stage':<66} {'forward':>10} {'fwd+bwd':>10}  note"]
    for st in stages:
        lines.append(f"{(st.run + ': ' + st.stage)[:66]:<66} {st.forward:>10,} {st.train:>10,}  {st.note}")
    fwd, trn = sum(s.forward for s in stages), sum(s.train for s in stages)
    lines.append(f"{'total image passes':<66} {fwd:>10,} {trn:>10,}")
    for run, mem in memory.items():
        lines.append(f"descriptor cache of {run}: {mem['cache_mib']:,.0f} MiB ({mem['cache_dtype']}; sizes from "
                     f"{', '.join(mem['size_source'])})")
    if not measurements:
        lines.append("projected time: no throughput measured yet (make rehearsal measures this CPU; "
                     "benchmarks/gpu_check.py a GPU)")
    per_run = {}
    for st in stages:
        per_run.setdefault(st.run.split("/")[0], []).append(st)
    for m in measurements:
        secs, missing = projected_seconds(stages, m)
        where = f"{m.get('device', '?')} ({m.get('file')}, measured {m.get('measured', '?')}, {m.get('source', '')})"
        if secs is None:
            lines.append(f"projected on {where}: not measured for {', '.join(missing)}")
            continue
        lines.append(f"projected on {where}: {secs / 3600:,.1f} hours of network passes "
                     "(k-means, mining and recall excluded)")
        parts = [f"{run} {t / 3600:,.1f} h" for run, sts in per_run.items()
                 for t in [projected_seconds(sts, m)[0]] if t]
        lines.append(f"per run on {m.get('device', '?')}: " + ", ".join(parts))
    return "\n".join(lines)


def measure(backbones=("vgg16", "alexnet"), device="cpu", images=None, image_size=(480, 640), num_images: int = 6,
            channels_last: bool = True, source: str = "", precision: str = "auto", num_workers="auto") -> dict:
    """Measured rates per backbone on ``device``: ``extract_images_per_s``
    (repro.evaluate.extract_descriptors of JPEG files, decoding included,
    NetVLAD K = 64 on top) and ``train_images_per_s`` (one tuple of 12 images,
    forward and backward from the authors' trainable depth, through the
    triplet loss's gradient path; decoding of those images included).
    ``images``: JPEG files at ``image_size`` (default: the rehearsal's
    Pittsburgh-layout city, made or reused as params/rehearsal.yaml says).
    Random weights: the speed does not depend on them. ``precision`` and
    ``num_workers`` as a training run resolves them on ``device`` ("auto":
    bf16 and DataLoader workers on CUDA, float32 and none on a CPU), so the
    rates price the run as it will go."""
    import warnings

    import torch

    from repro.data.images import ImageListDataset, normalize_images
    from repro.data.loader import resolve_workers
    from repro.evaluate import extract_descriptors, resolve_device
    from repro.model import build_model
    from repro.model.backbone import use_channels_last
    from repro.model.precision import resolve_precision

    dev = resolve_device(device)
    precision, workers = resolve_precision(precision, dev), resolve_workers(num_workers, dev)
    paths = list(images) if images else _rehearsal_images()
    paths = paths[:max(num_images, 12)]
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU: {_cpu_name()}",
           "device_kind": dev.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "image_size": list(image_size), "channels_last": channels_last, "precision": precision,
           "num_workers": workers, "measured": time.strftime("%Y-%m-%d"),
           "source": source, "backbones": {}}
    for bb in backbones:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(bb, "netvlad", weights=None, num_clusters=64, train_from="authors").to(dev)
        use_channels_last(model.base, channels_last)
        model.set_precision(precision)
        extract_descriptors(model, paths[:2], batch_size=2, device=dev)  # warm-up: kernels, allocator
        _sync(dev)
        t0 = time.perf_counter()
        extract_descriptors(model, paths[:num_images], batch_size=min(num_images, 8), device=dev, num_workers=workers)
        _sync(dev)
        extract = num_images / (time.perf_counter() - t0)
        data = ImageListDataset(paths[:12], uint8=True)
        model.train()
        for rep in range(2):  # the first is a warm-up
            t0 = time.perf_counter()
            batch = normalize_images(torch.stack([data[i][0] for i in range(12)]).to(dev))
            desc = model(batch)
            (desc[1:] @ desc[0]).sum().backward()  # the loss's shape: query against positive and negatives
            _sync(dev)
            train_rate = 12 / (time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        out["backbones"][bb] = {"extract_images_per_s": extract, "train_images_per_s": train_rate}
    return out


def _cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rehearsal_images() -> list[Path]:
    """The training database of the rehearsal's Pittsburgh-layout city (480x640 JPEGs), from the
    profile's own ``generate`` entry, so the rehearsal's data is reused, never rewritten."""
    from repro.data.datasets import load_split
    from repro.paths import repo_root
    from repro.report.profiles import generate_datasets, load_profile

    spec = next(g for g in load_profile("rehearsal")["generate"] if g["layout"] == "pittsburgh")
    generate_datasets({"generate": [spec]}, log=lambda m: None)
    return load_split("pitts30k", repo_root() / spec["root"], "train").db_paths


def main(argv=None) -> int:
    from repro.atomic import write_json
    from repro.errors import report_errors

    ap = argparse.ArgumentParser(prog="python -m repro.report.costs", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure extraction and training throughput into results/throughput/")
    m.add_argument("--device", default="cpu")
    m.add_argument("--backbones", nargs="+", default=["vgg16", "alexnet"], choices=("vgg16", "alexnet"))
    m.add_argument("--images", type=int, default=6, help="images timed per backbone (extraction)")
    m.add_argument("--no-channels-last", action="store_true")
    m.add_argument("--source", default="python -m repro.report.costs measure", help="what to record as the measurement's origin")
    m.add_argument("--out", default=None, help=f"default: {THROUGHPUT_DIR}/DEVICE_KIND.json")
    args = ap.parse_args(argv)

    def run() -> int:
        from repro.paths import repo_root

        rec = measure(args.backbones, args.device, num_images=args.images, channels_last=not args.no_channels_last,
                      source=args.source)
        out = Path(args.out) if args.out else repo_root() / THROUGHPUT_DIR / f"{rec['device_kind']}.json"
        write_json(out, rec)
        for bb, r in rec["backbones"].items():
            print(f"{rec['device']}: {bb} extraction {r['extract_images_per_s']:.2f} images/s, "
                  f"training {r['train_images_per_s']:.2f} images/s")
        print(f"wrote {out}")
        return 0

    return report_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
