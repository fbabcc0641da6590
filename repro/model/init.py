"""Initialising NetVLAD from data, as the paper does (Sec. 3 and the authors' code).

1. Sample local conv descriptors from training images (authors: 50k
   descriptors from 500 images, i.e. 100 random positions per image),
   L2-normalised per position when the layer normalises its input.
2. k-means (faiss) with K clusters -> centroids c_k. The authors
   (getClusters.m) run yael's k-means for 100 iterations on all 50k
   descriptors; faiss by default runs 25 and subsamples to 256 points per
   centroid (16,384 of 50k at K = 64), so both are arguments here, with the
   authors' values as defaults.
3. alpha by the ratio rule (:func:`alpha_from_ratio`) unless an explicit
   alpha is given (the alpha sweep).
"""
from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm  # plain text, also under papermill (no widgets)

from repro.data.images import collate_images, same_size_groups
from repro.errors import ConfigError
from repro.model.netvlad import NetVLAD, alpha_from_ratio


@torch.no_grad()
def sample_local_descriptors(base, dataset, num_images: int = 500, num_descriptors: int = 50_000,
                             normalize: bool = True, batch_size: int = 16, device="cpu",
                             seed: int = 0) -> np.ndarray:
    """Random conv descriptors ``[M, D]`` float32 from up to ``num_images`` images.

    ``dataset[i]`` returns ``(image [3, H, W], index)``. Each image gives
    ceil(num_descriptors / num_images) random map positions (fewer when its
    map is smaller); M <= num_descriptors.
    """
    if len(dataset) == 0:
        raise ConfigError("no images to sample NetVLAD initialisation descriptors from")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(dataset), size=min(num_images, len(dataset)), replace=False))
    per_image = -(-num_descriptors // len(chosen))
    loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_images)
    out = []
    was_training = base.training
    base.eval()
    for images, _ in tqdm(loader, desc="init descriptors", leave=False, mininterval=5.0):
        for group in same_size_groups(images):
            maps = base(torch.stack([images[j] for j in group]).to(device)).flatten(2)  # [B, D, N]
            if normalize:
                maps = F.normalize(maps, dim=1)
            out.extend(_sample_positions(maps, per_image, rng))
    base.train(was_training)
    return torch.cat(out)[:num_descriptors].numpy()


def _sample_positions(maps: torch.Tensor, per_image: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``per_image`` random columns of each ``[D, N]`` map, as ``[n, D]`` rows."""
    out = []
    for m in maps:
        n = m.shape[1]
        idx = rng.choice(n, size=min(per_image, n), replace=False)
        out.append(m[:, torch.from_numpy(idx).to(m.device)].T.float().cpu())
    return out


KMEANS_ITERATIONS = 100  # the authors' niter (getClusters.m)
# faiss's own defaults (25 iterations on at most 256 descriptors per
# centroid): what every synthetic-city run of the committed report used;
# kept there so that the report regenerates unchanged (README: their effect).
FAISS_DEFAULT_KMEANS = {"kmeans_iterations": 25, "kmeans_points_per_centroid": 256}


def fit_centroids(descriptors: np.ndarray, num_clusters: int = 64, seed: int = 0, niter: int = KMEANS_ITERATIONS,
                  max_points_per_centroid: int | None = None) -> np.ndarray:
    """k-means centroids ``[K, D]`` float32 (faiss, exact assignment).

    ``max_points_per_centroid=None`` clusters every descriptor (the
    authors); an int lets faiss subsample to that many per centroid (its
    own default is 256).
    """
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.shape[0] < num_clusters:
        raise ConfigError(f"k-means with K={num_clusters} needs at least {num_clusters} descriptors, "
                          f"got {x.shape[0]}; use more images")
    if max_points_per_centroid is None:
        max_points_per_centroid = -(-x.shape[0] // num_clusters)  # ceil: no subsampling
    km = faiss.Kmeans(x.shape[1], num_clusters, niter=int(niter), seed=seed, verbose=False,
                      max_points_per_centroid=int(max_points_per_centroid))
    km.train(x)
    return km.centroids.copy()


def init_netvlad(layer: NetVLAD, descriptors: np.ndarray, alpha: float | None = None,
                 ratio: float = 100.0, seed: int = 0, kmeans_iterations: int = KMEANS_ITERATIONS,
                 kmeans_points_per_centroid: int | None = None) -> dict:
    """Fit centroids on ``descriptors`` and set the layer's parameters.

    With ``alpha=None`` alpha follows the paper's rule at ``ratio``; an
    explicit alpha overrides it. Returns ``{"alpha", "alpha_rule",
    "num_descriptors"}`` where ``alpha_rule`` is what the rule gives either way.
    """
    centroids = fit_centroids(descriptors, layer.num_clusters, seed=seed, niter=kmeans_iterations,
                              max_points_per_centroid=kmeans_points_per_centroid)
    rule = alpha_from_ratio(descriptors, centroids, ratio=ratio, assignment=layer.assignment)
    layer.init_from_centroids(centroids, alpha=rule if alpha is None else alpha)
    return {"alpha": layer.alpha, "alpha_rule": rule, "num_descriptors": int(len(descriptors))}
