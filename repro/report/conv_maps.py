"""Cached conv maps of an untrained (seeded) base, for evaluation-only sweeps.

The alpha sweep and the f_max output-size experiment evaluate many poolings
(NetVLAD at each alpha, f_max at each grid, whitened reductions) on top of
one and the same untrained base network. The base is the expensive part, so
its conv maps ``[N, D, h, w]`` are computed once and kept on disk under
``cache/features/``; every further run only re-pools them (seconds).

The base is built exactly as :func:`repro.train.train` builds the NetVLAD
model it starts from (``torch.manual_seed(seed)`` then
``build_model(backbone, "netvlad", weights, num_clusters=K)``), so the
off-the-shelf NetVLAD here at the rule's alpha is the untrained model of the
training notebook.

A cache entry is keyed by everything that changes its bytes: backbone,
weights, seed, the build recipe (K), image size, the image list, and the
identity of the data (a synthetic city's ``config_hash``, else the data
root). Entries are written atomically (temporary file + rename); a
``.json`` beside each ``.npy`` records the key.

    maps = conv_maps(BaseSpec("alexnet", None, seed=0, num_clusters=16), paths, (96, 128))
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from repro.data.images import collate_images
from repro.errors import ConfigError
from repro.evaluate import image_dataset, resolve_device
from repro.metrics import recall_at_n, recall_by_group
from repro.model import FMaxPool, NetVLAD, build_model
from repro.paths import repo_root

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return repo_root() / "cache" / "features"


@dataclass(frozen=True)
class BaseSpec:
    """Which untrained base: backbone, weights ("imagenet", a path, or None
    for random), the torch seed, and the NetVLAD K the model is built with
    (the random init of the base follows the pooling layer's in the RNG)."""

    backbone: str = "alexnet"
    weights: str | None = None
    seed: int = 0
    num_clusters: int = 16

    def key(self) -> dict:
        d = asdict(self)
        w = self.weights
        if w is not None and str(w).lower() not in ("imagenet", "none"):
            p = Path(w)
            st = p.stat() if p.is_file() else None
            d["weights"] = {"path": str(p.resolve()), "size": st.st_size if st else None,
                            "mtime": int(st.st_mtime) if st else None}
        return d


def build_base(spec: BaseSpec) -> torch.nn.Module:
    """The base network of ``spec`` (eval mode, no gradients)."""
    torch.manual_seed(spec.seed)
    with warnings.catch_warnings():
        if spec.weights is None or str(spec.weights).lower() == "none":
            warnings.simplefilter("ignore")  # random weights are the documented default offline
        model = build_model(spec.backbone, "netvlad", weights=spec.weights, num_clusters=spec.num_clusters)
    base = model.base.eval()
    for p in base.parameters():
        p.requires_grad_(False)
    return base


def _data_identity(paths) -> dict:
    """A synthetic city's manifest hash, else the common folder of the images."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no images to compute conv maps of")
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    for folder in [root, *root.parents][:4]:
        man = folder / "manifest.json"
        if man.is_file():
            try:
                m = json.loads(man.read_text())
                return {"kind": "synthetic", "config_hash": m.get("config_hash"), "seed": m.get("seed"),
                        "generator_version": m.get("generator_version")}
            except (OSError, ValueError):
                break
    return {"kind": "files", "root": str(root.resolve())}


def cache_key(spec: BaseSpec, paths, image_size) -> tuple[str, dict]:
    """(short hash, full key) of the conv maps of ``paths`` under ``spec``."""
    paths = [str(Path(p).resolve()) for p in paths]
    data = _data_identity(paths)
    if data["kind"] == "synthetic":  # the same city in another folder is the same data
        common = os.path.commonpath(paths)
        names = [os.path.relpath(p, common) for p in paths]
    else:
        names = paths
    key = {"version": CACHE_VERSION, "base": spec.key(),
           "image_size": list(image_size) if image_size else None, "data": data,
           "num_images": len(paths), "images_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return digest, key


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def _compute_maps(base, paths, image_size, device, batch_size, dtype, desc) -> np.ndarray:
    dataset = image_dataset(paths, image_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_images)
    out = None
    base = base.to(device)
    for images, idx in tqdm(loader, desc=desc, leave=False, mininterval=5.0):
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ConfigError(f"images of different sizes {sorted(shapes)[:3]}: conv maps can only be cached "
                              "for one image size; set image_size")
        maps = base(torch.stack(images).to(device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(dataset), *maps.shape[1:]), dtype=dtype)
        elif maps.shape[1:] != out.shape[1:]:
            raise ConfigError(f"conv maps of different sizes ({maps.shape[1:]} vs {out.shape[1:]}); set image_size")
        out[idx] = maps
    return out


def conv_maps(spec: BaseSpec, paths, image_size=None, cache_dir=None, device="cpu", batch_size: int = 32,
              dtype: str = "float32", use_cache: bool = True, log=print) -> np.ndarray:
    """``[N, D, h, w]`` conv maps of the images at ``paths`` (read from the
    cache when present, else computed and stored). ``dtype="float16"``
    halves the disk space (paper-scale data)."""
    digest, key = cache_key(spec, paths, image_size)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / f"{spec.backbone}_seed{spec.seed}_{digest}.npy"
    if use_cache and path.is_file():
        try:
            maps = np.load(path, mmap_mode="r")
            if maps.shape[0] == len(paths):
                return maps
        except (OSError, ValueError):
            pass  # unreadable entry: recompute
    start = time.perf_counter()
    maps = _compute_maps(build_base(spec), paths, image_size, resolve_device(device), batch_size, dtype,
                         desc=f"conv maps ({len(paths)} images)")
    if use_cache:
        _atomic_save_npy(path, maps)
        from repro.atomic import atomic_write_text

        atomic_write_text(path.with_suffix(".json"), json.dumps(key, indent=1) + "\n")
    if log:
        log(f"computed conv maps of {len(paths)} images, {tuple(maps.shape[1:])} each, in "
            f"{time.perf_counter() - start:.1f} s" + (f"; cached as {path.name}" if use_cache else ""))
    return maps


# ---------------------------------------------------------------------------
# pooling cached maps


@torch.no_grad()
def pool_maps(maps, pool: torch.nn.Module, batch_size: int = 256) -> np.ndarray:
    """``[N, dim]`` descriptors of cached maps through a pooling layer."""
    out = []
    for s in range(0, len(maps), batch_size):
        x = torch.from_numpy(np.array(maps[s:s + batch_size], dtype=np.float32))
        out.append(pool(x).numpy())
    return np.concatenate(out)


def netvlad_pool(centroids, alpha: float, assignment: str = "paper", normalize_input: bool = True) -> NetVLAD:
    """A NetVLAD layer initialised from ``centroids`` at ``alpha`` (checked > 0)."""
    k, d = np.asarray(centroids).shape
    layer = NetVLAD(k, d, alpha=alpha, assignment=assignment, normalize_input=normalize_input)
    layer.init_from_centroids(centroids, alpha=alpha)
    return layer.eval()


def fmax_pool(dim: int, grid) -> FMaxPool:
    return FMaxPool(dim, grid).eval()


def pca_fit(descriptors: np.ndarray, max_dim: int) -> dict:
    """PCA of ``[M, D]`` descriptors (exact, float64 SVD of the centred data):
    ``{"mean", "components" [r, D], "eigenvalues" [r]}``, r = min(max_dim, M-1, D)."""
    x = np.asarray(descriptors, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    r = min(int(max_dim), x.shape[0] - 1, x.shape[1])
    return {"mean": mean, "components": vt[:r], "eigenvalues": s[:r] ** 2 / (x.shape[0] - 1)}


def pca_project(pca: dict, descriptors: np.ndarray, dim: int, whiten: bool, eps: float = 1e-9) -> np.ndarray:
    """Project onto the first ``dim`` components (whitened: divided by the
    square root of each eigenvalue, as :class:`repro.model.PCAWhitening`),
    then L2-normalise."""
    if not 1 <= dim <= len(pca["eigenvalues"]):
        raise ConfigError(f"PCA dimension must be in [1, {len(pca['eigenvalues'])}] "
                          f"(fitted on too few descriptors for more), got {dim}")
    y = (np.asarray(descriptors, dtype=np.float64) - pca["mean"]) @ pca["components"][:dim].T
    if whiten:
        y = y / np.sqrt(pca["eigenvalues"][:dim] + eps)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return y.astype(np.float32)


def evaluate_descriptors(db: np.ndarray, q: np.ndarray, split, ns=(1, 5, 10, 20), groups=None) -> dict:
    """Recall@N of database/query descriptors on ``split`` (its positives and
    panorama ids); with ``groups`` ([Q] labels) also recall per group.

    Returns ``{"recall": {N: pct}, "dim", "num_queries", "by_group": {g: {N: pct}} | None,
    "ranks": [Q] int list}``: each query's 1-based rank of its first correct
    database image, -1 beyond the largest N (what the claims' paired
    bootstrap resamples, :mod:`repro.report.intervals`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # queries without positives are reported by the caller
        det = recall_at_n(q, db, split.positives, ns=ns, panorama_ids=split.panorama_ids, return_details=True,
                          **split.search_times())
    return {"recall": det.recall, "dim": int(db.shape[1]), "num_queries": det.num_queries,
            "by_group": recall_by_group(det.ranks, groups, ns) if groups is not None else None,
            "ranks": [int(r) for r in det.ranks]}


def l2n(x: np.ndarray) -> np.ndarray:
    return F.normalize(torch.from_numpy(np.asarray(x, dtype=np.float32)), dim=1).numpy()
