"""PCA whitening of global descriptors (paper Sec. 5, "+white" curves).

Fitted on database descriptors: project onto the top ``out_dim`` principal
components, divide each by the square root of its eigenvalue, L2-normalise.
Following the authors' code the eigenvalues get a small epsilon (1e-9) so
that near-zero directions do not blow up. faiss's PCAMatrix does the fit
(it subsamples to 1000 points per input dimension, far above our counts).

A whitened descriptor can be cropped to its first n dimensions (the
strongest components) and L2-normalised again: the paper's dimensionality
reduction (e.g. 4096 -> 256 -> 128).
"""
from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ConfigError

EPSILON = 1e-9


class PCAWhitening(nn.Module):
    """``[B, in_dim]`` -> ``[B, out_dim]`` (or fewer, cropped) unit vectors.

    The projection lives in buffers, so it is saved with the model.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if not 1 <= int(out_dim) <= int(in_dim):
            raise ConfigError(f"whitening dimension must be in [1, {in_dim}], got {out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.register_buffer("projection", torch.zeros(self.out_dim, self.in_dim))  # A, whitened rows
        self.register_buffer("offset", torch.zeros(self.out_dim))  # b = -A mean
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, descriptors) -> "PCAWhitening":
        """Fit on ``[M, in_dim]`` descriptors (numpy or torch). Needs M > out_dim."""
        x = descriptors.detach().cpu().numpy() if torch.is_tensor(descriptors) else np.asarray(descriptors)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ConfigError(f"whitening expects [M, {self.in_dim}] descriptors, got {list(x.shape)}")
        if x.shape[0] <= self.out_dim:
            raise ConfigError(f"whitening to {self.out_dim}-D needs more than {self.out_dim} descriptors "
                              f"to fit on (got {x.shape[0]}); lower the dimension or use more database images")
        pca = faiss.PCAMatrix(self.in_dim, self.out_dim, -0.5)
        # faiss's eigenvalues are those of the scatter matrix sum_i x_i x_i^T
        # over the n points it trains on, i.e. n times the covariance's. Scale
        # epsilon and the result so that eigenvalues are the covariance's and
        # whitened training data has unit variance, as in the authors' code.
        n = min(x.shape[0], pca.max_points_per_d * self.in_dim)
        pca.epsilon = EPSILON * n
        pca.train(x)
        a = faiss.vector_to_array(pca.A).reshape(self.out_dim, self.in_dim) * np.sqrt(n)
        b = faiss.vector_to_array(pca.b) * np.sqrt(n)
        self.projection.copy_(torch.from_numpy(a))
        self.offset.copy_(torch.from_numpy(b))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Whiten and L2; with ``dim``, keep only the first ``dim`` components."""
        if not bool(self.fitted):
            raise ConfigError("PCA whitening is used before being fitted; call fit() on database descriptors")
        dim = self.out_dim if dim is None else int(dim)
        if not 1 <= dim <= self.out_dim:
            raise ConfigError(f"cropped dimension must be in [1, {self.out_dim}], got {dim}")
        y = F.linear(x, self.projection[:dim], self.offset[:dim])
        return F.normalize(y, dim=1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"


def crop_descriptors(descriptors: torch.Tensor, dim: int) -> torch.Tensor:
    """First ``dim`` columns of already-whitened ``[B, D]`` descriptors, re-L2-normalised."""
    return F.normalize(descriptors[:, :dim], dim=1)
