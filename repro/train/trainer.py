"""``train(config)``: the whole weakly supervised training run.

1. data: the training, val and test splits (the synthetic default city is
   generated on demand); images checked; training tuples built - a split
   without a valid tuple fails here, before any network work;
2. model: base + NetVLAD/f_max; NetVLAD initialised as in the paper
   (k-means on descriptors of training database images, alpha by the rule);
3. epoch 0: val recall (and test recall of the untrained model);
4. epochs: descriptor-cache refresh, :func:`repro.train.loop.train_epoch`,
   learning-rate step, val recall@N on a fixed random subset of at most 1000
   val queries (authors: ``nTestSample`` = 1000, fixed seed), atomic
   checkpoint (``last.pt``; ``best.pt`` when val recall@5 improves);
5. final test with the best epoch's model (and, with ``whiten_dim``, with PCA
   whitening fitted on training database descriptors of that model);
6. a JSON record in ``results/`` (updated after every epoch).

Determinism: every random choice of epoch e (query order, negative samples)
comes from ``numpy.random.default_rng([seed, e])``, the model's random init
from ``torch.manual_seed(seed)``; with ``deterministic=True`` torch uses
deterministic kernels where it has them. A run resumed from ``last.pt``
(epoch e done) therefore repeats epochs e+1... exactly as the uninterrupted
run would (on the same machine and thread count).

Speed (issue 16): ``precision`` ("auto": bf16 autocast of the base on
CUDA, float32 on a CPU), ``tf32``, ``channels_last`` and ``num_workers``
("auto": DataLoader workers on CUDA) change how fast, not what is computed
(beyond rounding). Under ``torchrun --nproc_per_node=N`` (:mod:`repro.distributed`)
the ranks share the extraction and the tuples of each batch; the result is
bit-identical to one process with the same batch (tested on CPU with gloo);
rank 0 writes every file.
"""
from __future__ import annotations

import math
import os
import resource
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from repro.atomic import check_writable, write_json
from repro.data.datasets import is_synthetic, load_split
from repro.data.images import keep_decoded_images
from repro.errors import ConfigError
from repro.data.loader import LoaderClock, resolve_workers
from repro.distributed import (SINGLE, Dist, RankFailedError, barrier, broadcast_module, broadcast_object, setup,
                               teardown)
from repro.evaluate import (check_split_images, check_whitening_fit, evaluate_split, fit_whitening,
                            init_netvlad_from_images, resolve_device)
from repro.model import build_model, load_model
from repro.model.backbone import use_channels_last
from repro.model.netvlad import NetVLAD
from repro.model.precision import resolve_precision, set_tf32
from repro.train.cache import DescriptorCache
from repro.paths import rel
from repro.train.checkpoint import atomic_torch_save, load_training_checkpoint, rng_states, set_rng_states
from repro.train.config import RESUMABLE_CHANGES, TrainConfig, changed_fields, parse_test_set
from repro.train.loop import NonFiniteLossError, TupleImages, train_epoch
from repro.train.mining import HardNegativeMiner
from repro.train.tuples import build_tuples

VAL_SUBSET_SEED = 43  # the authors' rng(43) for the val query subset


@dataclass
class TrainResult:
    run_name: str
    best_epoch: int
    history: list[dict]                 # per epoch (0 = before training): train stats, val recall
    test: dict | None                   # best model's test recall, {"recall": {N: pct}, ...}
    test_untrained: dict | None         # epoch-0 model's test recall
    test_whitened: dict | None          # best model + PCA whitening
    record_path: Path
    checkpoint_last: Path
    checkpoint_best: Path
    wall_seconds: float
    peak_rss_mib: float
    model: torch.nn.Module | None = field(default=None, repr=False)  # the best model (whitened if whiten_dim)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device):
    """Deterministic kernels where torch has them (``warn_only``: a kernel without one warns) or not,
    as asked, restored afterwards. On CUDA, cuBLAS needs a fixed workspace for that
    (``CUBLAS_WORKSPACE_CONFIG``, read when it starts: set here unless the user set it), and
    torch's filling of every new allocation (``fill_uninitialized_memory``, which only matters
    to code that reads memory it never wrote; this project writes every buffer it allocates)
    is turned off: on a GPU it costs a pass over each allocation."""
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              det.fill_uninitialized_memory)
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]


def _data_root(cfg: TrainConfig) -> Path:
    if cfg.data_root:
        return Path(cfg.data_root)
    from repro.data.synthetic import default_city_root, make_synthetic_city

    return make_synthetic_city(default_city_root(cfg.synthetic_preset, cfg.city_seed), preset=cfg.synthetic_preset,
                               seed=cfg.city_seed)


def _val_subset(split, n: int):
    """The fixed random subset of at most ``n`` val queries (sorted)."""
    if split.num_q <= n:
        return split, np.arange(split.num_q)
    idx = np.sort(np.random.default_rng(VAL_SUBSET_SEED).choice(split.num_q, size=n, replace=False))
    return split.subset_queries(idx), idx


def _build_model(cfg: TrainConfig, weights):
    with warnings.catch_warnings():
        if weights is None:
            warnings.simplefilter("ignore")  # random init is announced once by the caller
        return build_model(cfg.backbone, cfg.pooling, weights=weights, train_from=cfg.train_from,
                           num_clusters=cfg.num_clusters, alpha=cfg.alpha or 100.0, assignment=cfg.assignment,
                           fmax_output_size=tuple(cfg.fmax_output_size))


def _optimizer(cfg: TrainConfig, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"nothing to train: train_from={cfg.train_from!r} freezes every layer of the base "
                          f"and {cfg.pooling} has no parameters")
    lr = cfg.resolved_lr()
    if cfg.optimizer == "sgd":
        # PyTorch SGD: buf = momentum*buf + (grad + wd*w); w -= lr*buf. The
        # authors' update (momentum = 0.9*momentum - wd*w - grad; w += lr*momentum)
        # is the same recursion with the sign folded in.
        opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    # Halve every lr_step epochs (authors: at epochs 6, 11, ... for lrDownFreq 5).
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    return opt, sched


def _refresh_batches(cfg: TrainConfig, epoch: int, batch_size: int | None = None) -> int:
    """Batches between cache refreshes in ``epoch`` (1-based): doubles at each lr halving."""
    halvings = (epoch - 1) // cfg.lr_step
    return math.ceil(cfg.cache_refresh / (batch_size or cfg.batch_size)) * 2 ** halvings


def global_batch_size(cfg: TrainConfig, world_size: int) -> int:
    """Tuples per update: the configured batch (authors: 4), or one tuple per rank when a
    torchrun job has more ranks than that (the batch grows with the ranks)."""
    return max(cfg.batch_size, world_size)


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    diff = [k for k in changed_fields(saved, now) if k not in RESUMABLE_CHANGES]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in diff[:5])
        raise ConfigError(f"cannot resume from {path}: the training options differ ({detail}). "
                          "Use the same options, another out_dir, or resume=False to start afresh.")


def _recall_line(r: dict | None, ns=(1, 5, 10)) -> str:
    if not r:
        return "-"
    return "/".join(f"{r['recall'][n]:.1f}" for n in ns if n in r["recall"])


def train(config: TrainConfig | None = None, callback=None, **overrides) -> TrainResult:
    """Train as configured (default: ``TrainConfig()``; keyword ``overrides`` replace fields).

    ``callback(epoch, batch, stats)`` is called after every training batch.
    Raises ConfigError/DatasetError for unusable options or data (before
    training), NonFiniteLossError when the loss becomes NaN/inf (the last good
    checkpoint stays in place).
    """
    cfg = (config or TrainConfig()).replace(**overrides).validate()
    device = resolve_device(cfg.device)
    dist, device = setup(device, cfg.dist_timeout_s)  # torchrun: join the job; else one process
    tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        if device.type == "cuda":
            set_tf32(cfg.tf32)
        with deterministic_algorithms(cfg.deterministic, device), keep_decoded_images(int(cfg.image_memory_gb * 2**30)):
            return _train(cfg, callback, device, dist)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        teardown(dist)


@dataclass
class TrainingData:
    """What a run trains and tests on (:func:`training_data`)."""

    root: Path
    train: object                    # PlaceSplit
    val: object
    test: object | None
    other_tests: dict                # test_on: {split name: PlaceSplit}
    tuples: object                   # TrainingTuples


def training_data(cfg: TrainConfig, check_files: bool = True, batch_size: int | None = None) -> TrainingData:
    """Every split of a run loaded and checked, and its training tuples built;
    ConfigError/DatasetError for anything that would stop the run later:
    a missing .mat or image (``check_files``), a split without a usable
    training query, too few queries for one batch, too few training images
    for the PCA whitening, a bad ``test_on`` set. No network work: the
    pipeline calls this (``check_files=False``, the .mat files only) for
    every training run before its first notebook starts. ``batch_size``:
    tuples per update when not ``cfg.batch_size`` (torchrun, more ranks)."""
    root = _data_root(cfg)
    load = lambda dataset, r, split: load_split(dataset, r, split, check_files=check_files)  # noqa: E731
    train_split = load(cfg.dataset, root, "train")
    val_split = load(cfg.dataset, root, "val")
    test_split = load(cfg.dataset, root, cfg.test_split) if cfg.test_split else None
    other_tests = {}
    for spec in cfg.test_on:  # e.g. Tokyo 24/7 for a TokyoTM run
        dataset, r, split = parse_test_set(spec)
        s = load(dataset, r, split)
        if s.name in other_tests or (test_split is not None and s.name == test_split.name):
            raise ConfigError(f"test_on: {s.name} is given twice (or is the run's own test split)")
        other_tests[s.name] = s
    tuples = build_tuples(train_split, cfg.pos_radius, cfg.neg_radius, cfg.pos_min_dist)
    if cfg.whiten_dim:  # found out here, not after the last epoch
        check_whitening_fit(cfg.whiten_dim, min(train_split.num_db, cfg.whiten_fit_images),
                            f"{train_split.name} (whiten_fit_images={cfg.whiten_fit_images})")
    per_epoch = min(len(tuples.query_ids), cfg.queries_per_epoch or len(tuples.query_ids))
    batch_size = batch_size or cfg.batch_size
    if per_epoch < batch_size:
        raise ConfigError(f"{train_split.name}: {per_epoch} training queries an epoch cannot fill one batch of "
                          f"{batch_size} tuples (batch_size={cfg.batch_size}, or one per torchrun rank when there "
                          "are more ranks); lower batch_size or use more queries")
    return TrainingData(root, train_split, val_split, test_split, other_tests, tuples)


def _train(cfg: TrainConfig, callback, device: torch.device, dist: Dist = SINGLE) -> TrainResult:
    wall_start = time.perf_counter()
    log = (lambda m: print(m, flush=True)) if cfg.verbose and dist.is_main else (lambda m: None)
    out_dir, record_path = cfg.paths()
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    name = cfg.resolved_run_name()
    batch_size = global_batch_size(cfg, dist.world_size)
    workers = resolve_workers(cfg.num_workers, device, dist.local_world_size)
    precision = resolve_precision(cfg.precision, device)
    # ---- data (all checks before any network work)
    data = training_data(cfg, batch_size=batch_size)
    root, train_split, val_split, test_split, other_tests, tuples = (
        data.root, data.train, data.val, data.test, data.other_tests, data.tuples)
    for s in (train_split, val_split, test_split, *other_tests.values()):
        if s is not None:
            check_split_images(s, cfg.backbone, cfg.image_size)
    # Output folders (created here), after the data checks and before any
    # network work: an unwritable one must not cost a training run.
    if dist.is_main:
        check_writable(out_dir, what="checkpoints (out_dir)")
        check_writable(record_path.parent, what=f"the training record ({record_path.name})")
    val_sub, val_idx = _val_subset(val_split, cfg.val_queries)
    log(f"[{name}] {train_split.name}: {len(tuples.query_ids)} training queries "
        f"({tuples.num_without_positive} without a positive within {tuples.pos_radius:g} m, "
        f"{tuples.num_without_negative} without a negative), {train_split.num_db} database images; "
        f"val on {val_sub.num_q} of {val_split.num_q} queries; device {device}, {precision}, "
        f"{workers} loader worker(s)" + (f"; {dist.world_size} ranks (torchrun), {batch_size} tuples per update"
                                          if dist.enabled else ""))

    # ---- model, optimiser, state
    resume_state = load_training_checkpoint(last_path) if cfg.resume and last_path.is_file() else None
    torch.manual_seed(cfg.seed)
    if resume_state is not None:
        _check_resume_config(resume_state["train_config"], cfg, last_path)
        model = _build_model(cfg, None)
        model.load_state_dict(resume_state["model"])
        init = resume_state["init"]
    else:
        if cfg.weights is None:
            warnings.warn(f"{cfg.backbone} is randomly initialised (weights=None): results are not comparable "
                          "with the paper, which starts from ImageNet weights.", stacklevel=3)
        model = _build_model(cfg, cfg.weights)
        init = None
        if isinstance(model.pool, NetVLAD):
            if dist.is_main:  # k-means on rank 0; the other ranks take its weights below
                init = init_netvlad_from_images(
                    model, train_split.db_paths, cfg.image_size, num_images=cfg.init_images,
                    num_descriptors=cfg.init_descriptors, alpha=cfg.alpha, device=device, seed=cfg.seed,
                    kmeans_iterations=cfg.kmeans_iterations, kmeans_points_per_centroid=cfg.kmeans_points_per_centroid)
            init = broadcast_object(init, dist)
            model.config["alpha"] = model.pool.alpha = init["alpha"]
            log(f"NetVLAD initialised from {init['num_descriptors']} descriptors of training database images: "
                f"alpha={init['alpha']:.4g}")
    if dist.enabled:  # every rank starts from rank 0's weights (the same seed gives them; this makes sure)
        model.to(device)
        broadcast_module(model, dist)
    use_channels_last(model.base, cfg.channels_last)
    model.to(device)
    model.set_precision(precision)
    optimizer, scheduler = _optimizer(cfg, model)
    miner = HardNegativeMiner(tuples, cfg.num_random_negatives, cfg.num_cached_negatives, cfg.num_hard_negatives,
                              cfg.num_positives, cfg.margin, cfg.exclude_very_hard)
    history: list[dict] = []
    best = {"epoch": 0, "score": -math.inf}
    test_untrained = None
    others = {set_name: {**spec, "untrained": None, "trained": None, "whitened": None}
              for set_name, spec in _describe_test_sets(other_tests).items()}
    start_epoch = 1
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        miner.load_state_dict(resume_state["miner"])
        set_rng_states(resume_state["rng"])
        history, best = resume_state["history"], resume_state["best"]
        test_untrained = resume_state.get("test_untrained")
        others = resume_state.get("test_on") or others
        start_epoch = resume_state["epoch"] + 1
        log(f"resuming from {last_path} after epoch {resume_state['epoch']}")
    else:
        if cfg.resume:
            log(f"resume=True but there is no checkpoint at {last_path}: starting afresh")
        if dist.is_main:
            best_path.unlink(missing_ok=True)  # a previous run's best model must not be mistaken for this run's

    cache = DescriptorCache(train_split.num_db, train_split.num_q, model.pooled_dim, cfg.cache_dtype,
                            cfg.cache_fp16_gb, cfg.cache_memmap_gb, out_dir, log=log, hold=dist.is_main)
    images = TupleImages(train_split, cfg.image_size)

    def evaluate(m, split, **kw):
        return evaluate_split(m, split, cfg.image_size, ns=cfg.ns, batch_size=cfg.eval_batch_size, device=device,
                              num_workers=workers, **kw)

    def record(status: str, **extra) -> None:
        if not dist.is_main:
            return
        write_json(record_path, {
            "experiment": "train", "run_name": name, "status": status,
            "seed": cfg.seed, "dataset": cfg.dataset, "data_root": rel(root),
            "synthetic": is_synthetic(cfg.dataset, root),
            "config": portable_config(cfg), "model_config": model.config,
            "lr": cfg.resolved_lr(), "init": init, "tuples": tuples.summary(), "cache": cache.summary(),
            "val_query_indices": val_idx.tolist(), "device": str(device), "torch_threads": torch.get_num_threads(),
            "precision": precision, "num_workers": workers, "world_size": dist.world_size,
            "batch_size_global": batch_size,
            "epochs": history, "best_epoch": best["epoch"], "test_untrained": test_untrained, "test_on": others,
            "wall_seconds": time.perf_counter() - wall_start, "peak_rss_mib": peak_rss_mib(),
            "checkpoint_best": rel(best_path), **extra,
        })

    def save_last(epoch: int) -> None:
        if not dist.is_main:
            return
        atomic_torch_save({
            "epoch": epoch, "config": model.config, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "miner": miner.state_dict(), "rng": rng_states(), "train_config": cfg.to_dict(),
            "history": history, "best": best, "init": init, "test_untrained": test_untrained, "test_on": others,
        }, last_path)

    # ---- epoch 0: the initialised, untrained model (authors: test0)
    if start_epoch == 1:
        val0 = evaluate(model, val_sub, dist=dist)
        if cfg.eval_untrained and test_split is not None:
            test_untrained = _public(evaluate(model, test_split, dist=dist), ranks=True)
        if cfg.eval_untrained:
            for set_name, split in other_tests.items():
                others[set_name]["untrained"] = _public(evaluate(model, split, dist=dist), ranks=True)
        history = [{"epoch": 0, "val": _public(val0)}]
        log(f"epoch 0 (untrained): val R@1/5/10 {_recall_line(val0)}"
            + (f", test R@1/5/10 {_recall_line(test_untrained)}" if test_untrained else ""))
        save_last(0)
        record("running")

    # ---- training
    for epoch in range(start_epoch, cfg.epochs + 1):
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(tuples.query_ids)[:cfg.queries_per_epoch]
        lr = optimizer.param_groups[0]["lr"]
        t0, clock = time.perf_counter(), LoaderClock()
        cache.refresh(model, train_split.db_paths, train_split.q_paths, cfg.image_size, cfg.eval_batch_size,
                      device, workers, dist=dist, clock=clock)
        refresh_seconds = time.perf_counter() - t0
        try:
            stats = train_epoch(model, optimizer, miner, cache, train_split, images, order, epoch, rng, cfg, device,
                                _refresh_batches(cfg, epoch, batch_size), callback, dist=dist, num_workers=workers,
                                batch_size=batch_size)
        except RankFailedError as exc:  # a torchrun job lost a rank: say where to resume from
            raise RankFailedError(f"{exc} The last checkpoint is {last_path} (after epoch {epoch - 1}): rerun the "
                                  "same command with --resume to continue from there.") from None
        except NonFiniteLossError as exc:
            good = f"{last_path} (after epoch {epoch - 1})" if last_path.is_file() else "none yet"
            record("failed: non-finite loss", error=str(exc))
            raise NonFiniteLossError(f"{exc}; lr={lr:g}. Training stopped; the last good checkpoint is kept: "
                                     f"{good}. Try a lower learning rate.") from None
        with warnings.catch_warnings():  # an epoch without any update (every query skipped) is legitimate
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            scheduler.step()
        # timings: ``seconds`` is the loop (tuples, mining, the refreshes inside it), the refresh
        # before it is ``start_refresh_seconds``; refreshes and waiting for images count both, so
        # the data path's stall is loader_wait_seconds / (seconds + start_refresh_seconds)
        stats["start_refresh_seconds"] = refresh_seconds
        stats["refresh_seconds"] += refresh_seconds
        stats["loader_wait_seconds"] += clock.wait
        val = evaluate(model, val_sub, dist=dist)
        stats.update(lr=lr, val=_public(val))
        history.append(stats)
        score = val["recall"][cfg.select_n]
        if score > best["score"]:
            best = {"epoch": epoch, "score": score}
            if dist.is_main:
                atomic_torch_save({"config": model.config, "state_dict": model.state_dict(), "epoch": epoch,
                                   "val": _public(val), "train_config": cfg.to_dict()}, best_path)
        save_last(epoch)
        record("running")
        log(f"epoch {epoch}/{cfg.epochs}: loss {stats['loss']:.4f}, violating triplets {stats['violating_mined']}, "
            f"skipped queries {stats['skipped']}/{stats['queries']}, lr {lr:.2g}, "
            f"val R@1/5/10 {_recall_line(val)}, {stats['seconds']:.0f}+{val['seconds']:.0f} s"
            + (f" (waiting for images {stats['loader_wait_seconds']:.0f} s)" if workers else ""))

    # ---- final test with the best epoch's model (and, with whiten_dim, whitened: the
    # same pooled descriptors, so the test images are extracted once)
    test = test_whitened = None
    barrier(dist)  # rank 0 has written best.pt
    best_model = load_model(best_path).to(device)
    use_channels_last(best_model.base, cfg.channels_last)
    best_model.set_precision(precision)
    whitened = None
    if cfg.whiten_dim:
        whitened = fit_whitening(best_model, train_split.db_paths, cfg.whiten_dim, cfg.image_size, cfg.eval_batch_size,
                                 device, workers, cfg.whiten_fit_images, cfg.seed, dist=dist)
        if dist.is_main:
            atomic_torch_save({"config": whitened.config, "state_dict": whitened.state_dict(),
                               "epoch": best["epoch"]}, out_dir / "best_whitened.pt")
    for set_name, split in ([(None, test_split)] if test_split is not None else []) + list(other_tests.items()):
        plain = evaluate(best_model, split, keep_pooled=cfg.whiten_dim is not None, dist=dist)
        pooled = plain.pop("pooled", None)
        # the whitened test reuses rank 0's pooled descriptors: rank 0's alone, nothing extracted
        white = _public(evaluate(whitened, split, pooled=pooled), ranks=True) if whitened else None
        plain = _public(plain, ranks=True)
        if set_name is None:
            test, test_whitened = plain, white
        else:
            others[set_name].update(trained=plain, whitened=white)
        untrained = test_untrained if set_name is None else others[set_name]["untrained"]
        log(f"test {split.name} (best epoch {best['epoch']}): R@1/5/10 {_recall_line(plain)}"
            + (f" (untrained {_recall_line(untrained)})" if untrained else "")
            + (f"; PCA-whitened to {cfg.whiten_dim}-D: {_recall_line(white)}" if white else ""))
    if whitened is not None:
        best_model = whitened
    wall = time.perf_counter() - wall_start
    record("complete", test=test, test_whitened=test_whitened)
    log(f"wall time {wall:.0f} s, peak RSS {peak_rss_mib():.0f} MiB; record: {record_path}")
    return TrainResult(run_name=name, best_epoch=best["epoch"], history=history, test=test,
                       test_untrained=test_untrained, test_whitened=test_whitened, record_path=record_path,
                       checkpoint_last=last_path, checkpoint_best=best_path, wall_seconds=wall,
                       peak_rss_mib=peak_rss_mib(), model=best_model)


def _public(result: dict, ranks: bool = False) -> dict:
    """An evaluate_split result as plain JSON-able values (with ``ranks``: the
    1-based rank of each query's first correct match, -1 beyond max N)."""
    out = {"recall": {int(n): float(v) for n, v in result["recall"].items()},
           "num_queries": int(result["num_queries"]), "seconds": float(result["seconds"])}
    if ranks and result.get("ranks") is not None:
        out["ranks"] = [int(r) for r in result["ranks"]]
    return out


def portable_config(cfg: TrainConfig) -> dict:
    """``cfg.to_dict()`` with its paths relative to the repository (:func:`repro.paths.rel`), for records."""
    d = cfg.to_dict()
    for key in ("data_root", "out_dir", "record_path"):
        if d.get(key):
            d[key] = rel(d[key])
    if d.get("test_on"):
        d["test_on"] = [_portable_test_set(t) for t in d["test_on"]]
    return d


def _portable_test_set(spec: str) -> str:
    from repro.data.datasets import parse_dataset_spec

    dataset, root, split = parse_dataset_spec(spec)
    return f"{dataset}:{rel(root)}:{split}"


def _describe_test_sets(splits: dict) -> dict:
    """Where each extra test set comes from, for the record (synthetic: generated by repro)."""
    out = {}
    for name, s in splits.items():
        root = Path(s.meta["data_root"])
        out[name] = {"dataset": s.meta["dataset"], "split": s.meta["split"], "data_root": rel(root),
                     "synthetic": is_synthetic(s.meta["dataset"], root), "num_db": s.num_db, "num_q": s.num_q}
    return out
