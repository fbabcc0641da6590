"""A tiny fake street for the training tests: 64x64 PNGs and dbStruct files.

Database images every 4 m along a 160 m street; each 12 m segment shows one of
three shared textures plus its own weaker pattern, so places look alike across
the street (hard negatives exist) and queries add noise.
All three splits share the same street (fine for tests).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.data.dbstruct import DbStruct, save_dbstruct
from repro.train import TrainConfig

ORIGIN = np.array([585000.0, 4477000.0])
SIZE = 64


def _texture(segment: int) -> np.ndarray:
    # Three shared styles (perceptual aliasing) plus a weaker per-segment pattern.
    style = np.random.default_rng(1000 + segment % 3).integers(0, 256, (8, 8, 3)).astype(np.float64)
    own = np.random.default_rng(2000 + segment).normal(0, 20, (8, 8, 3))
    return np.kron(style + own, np.ones((SIZE // 8, SIZE // 8, 1)))


def _image(x: float, rng: np.random.Generator, noise: float) -> Image.Image:
    tex = _texture(int(x // 12))
    shift = int((x % 12) / 12 * SIZE // 4)  # a little parallax within a segment
    arr = np.roll(tex, shift, axis=1) + rng.normal(0, noise, tex.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_fake_street(root: Path, num_db: int = 40, num_q: int = 12, seed: int = 0,
                     query_offset: tuple[float, float] = (1.0, 3.0), splits=("train", "val", "test")) -> Path:
    """Write the fake street under ``root`` in the synthetic layout; returns root."""
    rng = np.random.default_rng(seed)
    xs_db = np.arange(num_db) * 4.0
    xs_q = rng.choice(xs_db[1:-1], num_q, replace=False) + rng.uniform(*query_offset, num_q)
    db_fns = [f"db_{i:03d}.png" for i in range(num_db)]
    q_fns = [f"q_{i:03d}.png" for i in range(num_q)]
    (root / "database").mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    for fn, x in zip(db_fns, xs_db):
        _image(x, rng, 10.0).save(root / "database" / fn)
    for fn, x in zip(q_fns, xs_q):
        _image(x, rng, 40.0).save(root / "queries" / fn)
    utm_db = ORIGIN + np.c_[xs_db, np.zeros(num_db)]
    utm_q = ORIGIN + np.c_[xs_q, np.zeros(num_q)]
    for split in splits:
        save_dbstruct(root / f"{split}.mat", DbStruct(split, db_fns, utm_db, q_fns, utm_q, num_db, num_q))
    return root


def tiny_config(root: Path, out: Path, **overrides) -> TrainConfig:
    """Fast settings: random AlexNet + NetVLAD K=4 at 64x64, 3 batches an epoch."""
    base = dict(dataset="synthetic", data_root=str(root), weights=None, backbone="alexnet", pooling="netvlad",
                num_clusters=4, image_size=(SIZE, SIZE), train_from="last", init_images=20, init_descriptors=400,
                epochs=2, queries_per_epoch=12, batch_size=4, num_random_negatives=20, cache_refresh=8,
                lr=1e-3, val_queries=12, ns=(1, 5, 10), eval_untrained=False, eval_batch_size=16,
                out_dir=str(out / "run"), record_path=str(out / "record.json"), progress=False, verbose=False)
    base.update(overrides)
    return TrainConfig(**base)


def single_thread():
    """Tiny tensors run fastest on one thread (and a busy second core stalls OpenMP)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


def untimed(d: dict) -> dict:
    """``d`` without its timings (keys "seconds", "*_seconds": wall time, refreshes, waiting for images)."""
    return {k: v for k, v in d.items() if not (k == "seconds" or k.endswith("_seconds"))}


def comparable(history):
    """Per-epoch metrics without wall times."""
    out = []
    for h in history:
        h = untimed(h)
        if "val" in h:
            h["val"] = untimed(h["val"])
        out.append(h)
    return out
