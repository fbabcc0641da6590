"""Evaluating a model on a split: descriptors -> (whitening) -> recall@N.

The same functions serve the command line (``python -m repro evaluate``),
validation during training and the notebooks.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # plain text, also under papermill (no widgets)

from repro.data.datasets import PlaceSplit, check_evaluable
from repro.data.images import ImageListDataset, check_images, collate_images, same_size_groups
from repro.errors import ConfigError
from repro.metrics import recall_at_n
from repro.model import PlaceModel, crop_descriptors, init_netvlad, sample_local_descriptors
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


def image_dataset(paths, image_size=None) -> ImageListDataset:
    """ImageNet-normalised images, resized to ``image_size`` (H, W) if given."""
    return ImageListDataset(paths, image_size=tuple(image_size) if image_size else None)


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
                        num_workers: int = 0, whiten: bool = True, desc: str = "descriptors") -> np.ndarray:
    """``[N, dim]`` float32 descriptors of the images at ``paths``.

    ``image_size=None`` keeps native sizes: each batch is split into groups
    of equal size (one group for Pittsburgh's uniform 640x480).
    ``whiten=False`` returns the pooled descriptors before PCA whitening.
    """
    device = resolve_device(device)
    dataset = image_dataset(paths, image_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_images, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval().to(device)
    out = np.empty((len(dataset), model.descriptor_dim if whiten else model.pooled_dim), dtype=np.float32)
    for images, idx in tqdm(loader, desc=desc, leave=False, mininterval=5.0):
        for group in same_size_groups(images):
            batch = torch.stack([images[j] for j in group]).to(device, non_blocking=True)
            d = model(batch) if whiten else model.pooled(batch)
            out[idx[group]] = d.float().cpu().numpy()
    model.train(was_training)
    return out



def init_netvlad_from_images(model: PlaceModel, paths, image_size=None, num_images: int = 500,
                             num_descriptors: int = 50_000, alpha: float | None = None, ratio: float = 100.0,
                             device="cpu", seed: int = 0) -> dict:
    """The paper's NetVLAD initialisation (k-means + alpha rule) from images.

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
    info = init_netvlad(model.pool, descs, alpha=alpha, ratio=ratio, seed=seed)
    model.config["alpha"] = info["alpha"]  # so records and checkpoints show the alpha in use
    return info


def evaluate_split(model: PlaceModel, split: PlaceSplit, image_size=None, ns=(1, 5, 10, 20),
                   batch_size: int = 32, device="cpu", num_workers: int = 0, whiten_dims=None) -> dict:
    """Recall@N of ``model`` on ``split``.

    If the model has a PCA whitening that is not fitted yet, it is fitted on
    this split's database descriptors (the paper fits on the training
    database; pass a fitted model for that). ``whiten_dims`` (e.g. [256,
    128]) also reports recall of the whitened descriptor cropped to each.

    Returns ``{"recall": {N: pct}, "num_queries", "num_without_positive",
    "dim", "seconds", "cropped": {dim: {N: pct}}, "ranks": [Q] first correct
    rank per query (-1: none within max(ns)), for per-condition recall}``.
    """
    check_evaluable(split)  # before extraction
    start = time.perf_counter()
    db = extract_descriptors(model, split.db_paths, image_size, batch_size, device, num_workers,
                             whiten=False, desc=f"{split.name} database")
    q = extract_descriptors(model, split.q_paths, image_size, batch_size, device, num_workers,
                            whiten=False, desc=f"{split.name} queries")
    if model.whitening is not None:
        if not bool(model.whitening.fitted):
            model.whitening.fit(db)
        db, q = (model.whitening(torch.from_numpy(x).to(model.whitening.projection.device)).cpu().numpy()
                 for x in (db, q))
    details = recall_at_n(q, db, split.positives, ns=ns, panorama_ids=split.panorama_ids, return_details=True)
    cropped = {}
    for dim in whiten_dims or []:
        if model.whitening is None:
            raise ConfigError("whiten_dims needs a model with PCA whitening (whiten_dim=...)")
        crop = [crop_descriptors(torch.from_numpy(x), dim).numpy() for x in (db, q)]
        cropped[int(dim)] = recall_at_n(crop[1], crop[0], split.positives, ns=ns, panorama_ids=split.panorama_ids)
    return {
        "recall": details.recall,
        "num_queries": details.num_queries,
        "num_without_positive": details.num_without_positive,
        "dim": int(db.shape[1]),
        "seconds": time.perf_counter() - start,
        "cropped": cropped,
        "ranks": details.ranks,
    }
