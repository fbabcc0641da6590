"""Evaluating a model on a split: descriptors -> (whitening) -> recall@N.

The same functions serve the command line (``python -m repro evaluate``),
validation during training and the notebooks.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from tqdm import tqdm  # plain text, also under papermill (no widgets)

from repro.data.datasets import PlaceSplit, check_evaluable
from repro.data.images import ImageListDataset, check_images, normalize_images
from repro.data.loader import ImageStream, LoaderClock, consecutive_batches
from repro.distributed import SINGLE, Dist, block_sizes, broadcast_object, gather_rows, shard
from repro.errors import ConfigError, explain_out_of_memory
from repro.metrics import recall_at_n
from repro.model import (
    PlaceModel,
    crop_descriptors,
    init_netvlad,
    sample_local_descriptors,
)
from repro.model.backbone import MIN_INPUT_SIZE, check_backbone
from repro.model.netvlad import NetVLAD, check_alpha


def resolve_device(device="auto") -> torch.device:
    """"auto" -> the GPU when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use device='auto' or 'cpu'")
    return dev


def image_dataset(paths, image_size=None, uint8: bool = False) -> ImageListDataset:
    """ImageNet-normalised images (``uint8``: 8-bit ones), resized to ``image_size`` (H, W) if given."""
    return ImageListDataset(paths, image_size=tuple(image_size) if image_size else None, uint8=uint8)


def check_split_images(split: PlaceSplit, backbone: str, image_size=None, decode: bool = False) -> None:
    """Fail fast on missing, unreadable or too small images, and on a split
    whose recall would mean nothing (``check_evaluable``), before long work."""
    check_backbone(backbone)
    check_evaluable(split)
    min_size = None if image_size else MIN_INPUT_SIZE[backbone]
    if image_size and min(image_size) < MIN_INPUT_SIZE[backbone]:
        raise ConfigError(f"image size {tuple(image_size)} is below the {backbone} minimum of "
                          f"{MIN_INPUT_SIZE[backbone]} pixels per side")
    check_images(split.db_paths, min_size=min_size, decode=decode, what=f"{split.name} database images")
    check_images(split.q_paths, min_size=min_size, decode=decode, what=f"{split.name} query images")


@torch.no_grad()
def extract_descriptors(model: PlaceModel, paths, image_size=None, batch_size: int = 32, device="cpu",
                        num_workers: int = 0, whiten: bool = True, desc: str = "descriptors", dist: Dist = SINGLE,
                        clock: LoaderClock | None = None) -> np.ndarray | None:
    """``[N, dim]`` float32 descriptors of the images at ``paths``.

    ``image_size=None`` keeps native sizes: each batch is split into groups
    of equal size (one group for Pittsburgh's uniform 640x480).
    ``whiten=False`` returns the pooled descriptors before PCA whitening.
    The images come through a :class:`repro.data.loader.ImageStream`
    (``num_workers`` processes decode; 8-bit images normalised on
    ``device``); the model runs in its own precision (``model.precision``).
    Under torchrun (``dist``) each rank extracts a block of whole batches and
    rank 0 returns all ``N`` rows, the other ranks None. ``clock``: adds the
    time spent waiting for images.
    """
    paths = list(paths)
    stream = ImageStream(image_dataset(paths, image_size, uint8=True), num_workers, resolve_device(device))
    return extract_batches(model, stream, consecutive_batches(len(paths), batch_size), device, whiten, desc, dist,
                           clock)


@torch.no_grad()
def extract_batches(model: PlaceModel, stream: ImageStream, batches: list[list[int]], device="cpu",
                    whiten: bool = True, desc: str = "descriptors", dist: Dist = SINGLE,
                    clock: LoaderClock | None = None, sink=None) -> np.ndarray | None:
    """Descriptors of the images of ``batches`` (lists of indices into ``stream``'s dataset),
    one row per image in the order of the batches laid end to end.

    Returns the ``[rows, dim]`` float32 array, or, with ``sink``, calls
    ``sink(offset, rows)`` as rows are ready (no array of them all: a cache
    refresh writes straight into the cache) and returns None. Under
    torchrun each rank extracts a contiguous block of whole batches, so
    every image is computed in the same batch as one process would (results
    bit-identical to one process's), and rank 0 gets every row; the other
    ranks return None.
    """
    device = resolve_device(device)
    mine = batches[shard(len(batches), dist)]
    was_training = model.training
    model.eval().to(device)
    dim = model.descriptor_dim if whiten else model.pooled_dim
    local = np.empty((sum(len(b) for b in mine), dim), dtype=np.float32) if dist.enabled or sink is None else None
    offset = 0
    # the loader first: zip then reads it to its end (a persistent stream's pass must end)
    for groups, batch in zip(tqdm(stream.batches(mine, clock), total=len(mine), desc=desc, leave=False,
                                  mininterval=5.0, disable=not dist.is_main), mine):
        rows = np.empty((len(batch), dim), dtype=np.float32)
        for images, pos in groups:
            with explain_out_of_memory(f"{desc}: a batch of {len(pos)} images of {images.shape[2]}x{images.shape[3]}",
                                       f"the batch size (eval_batch_size / --batch-size, now {len(batch)}) or the "
                                       "image size (image_size / --image-size)"):
                x = normalize_images(images.to(device, non_blocking=True))
                d = model(x) if whiten else model.pooled(x)
                rows[pos] = d.float().cpu().numpy()
        if local is not None:
            local[offset:offset + len(batch)] = rows
        else:
            sink(offset, rows)
        offset += len(batch)
    model.train(was_training)
    if not dist.enabled:
        return local
    return gather_rows(local, block_sizes(map(len, batches), dist.world_size), dist, sink)


def fit_split(dataset: str, data_root, evaluated: PlaceSplit, init_from: str | None = None) -> tuple[PlaceSplit, dict]:
    """The split whose database images NetVLAD's centroids and alpha and the
    PCA whitening are fitted on, when evaluating ``evaluated`` off the shelf.

    As the authors (addLayers/getClusters and addPCA on ``dbTrain``): the
    same dataset's training split; with ``init_from`` ("DATASET:ROOT[:SPLIT]",
    split default "train") another dataset's, e.g. Tokyo Time Machine's for
    Tokyo 24/7. A dataset without a training split (Tokyo 24/7, a VPR-Bench
    folder) and no ``init_from`` falls back to the evaluated database itself,
    with a warning: a transductive fit, which leaks the test database into
    the model, labelled ``"transductive": True``.

    Returns (split, ``{"dataset", "split", "data_root", "num_images",
    "transductive"}``).
    """
    from repro.data.datasets import DATASETS, load_split, parse_dataset_spec

    if init_from:
        ds, root, sp = parse_dataset_spec(init_from, default_split="train", what="--init-from")
        source = load_split(ds, root, sp)
    elif "train" in DATASETS[dataset].splits:
        ds, root, sp = dataset, data_root, "train"
        source = evaluated if evaluated.meta.get("split") == "train" else load_split(dataset, data_root, "train")
    else:
        ds, root, sp, source = dataset, data_root, evaluated.meta.get("split", "test"), evaluated
        warnings.warn(f"{dataset} has no training split: NetVLAD's centroids and alpha (and any whitening) are "
                      f"fitted on the evaluated database itself ({evaluated.name}), a transductive setting that "
                      "the paper does not use. Pass --init-from DATASET:ROOT (e.g. tokyoTM:/data/tokyoTM for "
                      "Tokyo 24/7) to fit on another dataset's training images.", stacklevel=2)
    transductive = [str(p) for p in source.db_paths] == [str(p) for p in evaluated.db_paths]
    return source, {"dataset": ds, "split": sp, "data_root": str(root), "num_images": source.num_db,
                    "transductive": transductive}


def init_netvlad_from_images(model: PlaceModel, paths, image_size=None, num_images: int = 500,
                             num_descriptors: int = 50_000, alpha: float | None = None, ratio: float = 100.0,
                             device="cpu", seed: int = 0, kmeans_iterations: int = 100,
                             kmeans_points_per_centroid: int | None = None) -> dict:
    """The paper's NetVLAD initialisation (k-means + alpha rule) from images
    (the training database's, as the authors' addLayers does).

    Returns the dict of :func:`repro.model.init_netvlad`.
    """
    if not isinstance(model.pool, NetVLAD):
        raise ConfigError("init_netvlad_from_images needs a NetVLAD model")
    if alpha is not None:
        check_alpha(alpha)  # before sampling descriptors
    device = resolve_device(device)
    model.to(device)
    descs = sample_local_descriptors(model.base, image_dataset(paths, image_size), num_images=num_images,
                                     num_descriptors=num_descriptors, normalize=model.pool.normalize_input,
                                     device=device, seed=seed)
    info = init_netvlad(model.pool, descs, alpha=alpha, ratio=ratio, seed=seed, kmeans_iterations=kmeans_iterations,
                        kmeans_points_per_centroid=kmeans_points_per_centroid)
    model.config["alpha"] = info["alpha"]  # so records and checkpoints show the alpha in use
    return info


def evaluate_split(model: PlaceModel, split: PlaceSplit, image_size=None, ns=(1, 5, 10, 20),
                   batch_size: int = 32, device="cpu", num_workers: int = 0, whiten_dims=None,
                   pooled: tuple[np.ndarray, np.ndarray] | None = None, keep_pooled: bool = False,
                   dist: Dist = SINGLE) -> dict:
    """Recall@N of ``model`` on ``split``.

    A model with PCA whitening must have it fitted already, on training
    images (:func:`fit_whitening`; the authors' addPCA uses the training
    database): fitting it on the evaluated database would leak the test set
    into the model. ``whiten_dims`` (e.g. [256, 128]) also reports recall of
    the whitened descriptor cropped to each. ``pooled``: the split's
    descriptors before whitening (database, queries), already extracted with
    this model's base and pooling (e.g. by an unwhitened evaluation with
    ``keep_pooled``), so that evaluating the whitened model extracts nothing.
    With capture times (Tokyo Time Machine) a query's own time is left out
    of its ranking.

    Returns ``{"recall": {N: pct}, "num_queries", "num_without_positive",
    "dim", "seconds", "cropped": {dim: {N: pct}}, "ranks": [Q] first correct
    rank per query (-1: none within max(ns)), for per-condition recall}``,
    plus ``"pooled": (db, q)`` with ``keep_pooled``.

    Under torchrun (``dist``) every rank extracts its block of the images,
    rank 0 computes the recall and every rank returns rank 0's result
    (``"pooled"`` only on rank 0, None elsewhere). With ``pooled`` given
    nothing is extracted, so that call is rank 0's alone (``dist`` left out).
    """
    check_evaluable(split)  # before extraction
    if model.whitening is not None and not bool(model.whitening.fitted):
        raise ConfigError("the model's PCA whitening is not fitted: fit it on training database images first "
                          "(repro.evaluate.fit_whitening), never on the evaluated split")
    start = time.perf_counter()
    if pooled is None:
        db = extract_descriptors(model, split.db_paths, image_size, batch_size, device, num_workers,
                                 whiten=False, desc=f"{split.name} database", dist=dist)
        q = extract_descriptors(model, split.q_paths, image_size, batch_size, device, num_workers,
                                whiten=False, desc=f"{split.name} queries", dist=dist)
        if not dist.is_main:  # rank 0 computes the recall; every rank gets its result
            return {**broadcast_object(None, dist), **({"pooled": None} if keep_pooled else {})}
    else:
        db, q = pooled
        if db.shape != (split.num_db, model.pooled_dim) or q.shape != (split.num_q, model.pooled_dim):
            raise ConfigError(f"pooled descriptors {list(db.shape)}, {list(q.shape)} do not fit {split.name} "
                              f"({split.num_db} database images, {split.num_q} queries, {model.pooled_dim}-D)")
    kept = (db, q)
    if model.whitening is not None:
        db, q = (model.whitening(torch.from_numpy(x).to(model.whitening.projection.device)).cpu().numpy()
                 for x in (db, q))
    details = recall_at_n(q, db, split.positives, ns=ns, panorama_ids=split.panorama_ids, return_details=True,
                          **split.search_times())
    cropped = {}
    for dim in whiten_dims or []:
        if model.whitening is None:
            raise ConfigError("whiten_dims needs a model with PCA whitening (whiten_dim=...)")
        crop = [crop_descriptors(torch.from_numpy(x), dim).numpy() for x in (db, q)]
        cropped[int(dim)] = recall_at_n(crop[1], crop[0], split.positives, ns=ns, panorama_ids=split.panorama_ids,
                                        **split.search_times())
    out = {
        "recall": details.recall,
        "num_queries": details.num_queries,
        "num_without_positive": details.num_without_positive,
        "dim": int(db.shape[1]),
        "seconds": time.perf_counter() - start,
        "cropped": cropped,
        "ranks": details.ranks,
    }
    if pooled is None:
        broadcast_object(out, dist)  # the other ranks wait for it above
    if keep_pooled:
        out["pooled"] = kept
    return out


def whitening_images(paths, max_images: int = 10_000, seed: int = 0) -> list:
    """The training database images PCA whitening is fitted on: all of
    ``paths``, or ``max_images`` of them at random (the authors' addPCA:
    ``nTrainCap`` = 10k random training database images)."""
    paths = list(paths)
    if len(paths) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), max_images, replace=False))
        paths = [paths[i] for i in idx]
    return paths


def check_whitening_fit(whiten_dim: int | None, num_images: int, what: str) -> None:
    """ConfigError unless ``num_images`` descriptors can fit a PCA to
    ``whiten_dim`` (it needs more descriptors than dimensions; the authors'
    addPCA asserts the same). Cheap: call it before any long work."""
    if whiten_dim is not None and num_images <= whiten_dim:
        raise ConfigError(f"PCA whitening to {whiten_dim}-D needs more than {whiten_dim} images to fit on; "
                          f"{what} has {num_images}. Lower the whitening dimension (below {num_images}) "
                          "or fit on a larger training database")


def fit_whitening(model: PlaceModel, paths, whiten_dim: int, image_size=None, batch_size: int = 32, device="cpu",
                  num_workers: int = 0, max_images: int = 10_000, seed: int = 0,
                  dist: Dist = SINGLE) -> PlaceModel | None:
    """A copy of ``model`` with PCA whitening to ``whiten_dim`` fitted on the
    pooled descriptors of (at most ``max_images`` random) ``paths``: the
    training database's, as the authors do. ``model`` itself is unchanged.
    Under torchrun every rank extracts its block; rank 0 fits and returns
    the model, the other ranks None."""
    import copy

    from repro.model import PCAWhitening

    paths = whitening_images(paths, max_images, seed)
    check_whitening_fit(whiten_dim, len(paths), "the whitening's training images")
    desc = extract_descriptors(model, paths, image_size, batch_size, device, num_workers, whiten=False,
                               desc="whitening: training database", dist=dist)
    if desc is None:  # not rank 0
        return None
    out = copy.deepcopy(model)
    out.whitening = PCAWhitening(model.pooled_dim, whiten_dim).to(resolve_device(device)).fit(desc)
    out.config = {**model.config, "whiten_dim": int(whiten_dim)}
    return out


def print_recall_table(name: str, config: dict, result: dict) -> None:
    """One line per N: ``recall@N  pct``, with the model and split in a header
    (``result``: what :func:`evaluate_split` returns)."""
    pooling = config.get("pooling")
    print(f"\n{name}: {config.get('backbone')} + {pooling}, {result['dim']}-D, "
          f"{result['num_queries']} queries ({result['num_without_positive']} without a positive), "
          f"{result['seconds']:.1f} s")
    for n, pct in result["recall"].items():
        print(f"  recall@{n:<3d} {pct:6.2f} %")
