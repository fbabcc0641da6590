"""Weakly supervised triplet ranking loss (paper Eq. 7).

For a training tuple (q, {p_i}, {n_j}) with potential positives p_i and
definite negatives n_j, the paper's loss is

    L = sum_j  l( min_i d^2(q, p_i) + m - d^2(q, n_j) ),   l(x) = max(x, 0),

with d the Euclidean distance between descriptors and margin m = 0.1. The
min over positives is the "best matching potential positive" of the weak GPS
supervision; only negatives that come within the margin contribute.

Difference from ``nn.TripletMarginLoss(margin=sqrt(m))`` used by popular
PyTorch ports (e.g. Nanne/pytorch-NetVlad, whose comment reads "original
paper/code doesn't sqrt() the distances, we do, so sqrt() the margin"):

* Distances. The port hinges on d, here on d^2 (as in the paper). The margins
  only agree when d(q, p) = 0: the port's condition d_n > d_p + sqrt(m) is,
  squared, d_n^2 > d_p^2 + m + 2 sqrt(m) d_p, i.e. stricter than the paper's
  d_n^2 > d_p^2 + m by 2 sqrt(m) d_p (about 0.63 d_p for m = 0.1). With
  L2-normalised descriptors d^2 = 2 - 2 cos, so the paper's margin is a fixed
  gap of m / 2 = 0.05 in cosine similarity, while the port's gap grows with
  the positive's distance. Loss values (units of d vs d^2) and gradients
  (d d / dx = (x - q) / d versus d d^2 / dx = 2 (x - q)) differ in scale too;
  the port also adds eps = 1e-6 inside its norm.
* Positive. The port passes one positive per tuple, picked beforehand as the
  nearest one in the cached (stale) descriptors. Here the min is taken over
  the current descriptors inside the loss. For the gradient the two are alike
  (either way it flows through a single positive per tuple, torch.min routes
  it to the argmin), but the chosen positive can differ when the cache is out
  of date.
* Reduction. The port sums over all (query, negative) triplets of a batch and
  divides by the number of negatives, i.e. averages over triplets. Here
  "sum" (default) sums over tuples; "mean" averages over tuples, not
  triplets. The authors' trainWeakly.m does normalise, but the gradient, not
  the loss: the update divides the batch's summed gradient by its number of
  violating triplets (``- (1 / thisBatchSize) * dzdw`` with ``thisBatchSize=
  sum(numTriplets)``). The trainer does exactly that on top of "sum"
  (``TrainConfig.loss_normalization="violating"``, the default; see
  :mod:`repro.train.loop`).
* Same: the hinge max(., 0), the per-tuple sum over negatives (before the
  port's normalisation), p = 2 Euclidean distances, gradient only through
  negatives that violate the margin.
"""
from __future__ import annotations

import math
import numbers

import torch

from repro.errors import ConfigError

REDUCTIONS = ("sum", "mean", "none")


def _check_shapes(q, positives, negatives, neg_mask):
    """Raise ConfigError unless q [B, D], positives [B, P>=1, D], negatives [B, J, D]."""
    for name, t, nd, hint in (
        ("q", q, 2, "[B, D]"),
        ("positives", positives, 3, "[B, P, D] (use positives[:, None] for one positive)"),
        ("negatives", negatives, 3, "[B, J, D]"),
    ):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"triplet_ranking_loss: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != nd:
            raise ConfigError(f"triplet_ranking_loss: {name} must have shape {hint}, got {list(t.shape)}")
    b, d = q.shape
    for name, t in (("positives", positives), ("negatives", negatives)):
        if t.shape[0] != b or t.shape[2] != d:
            raise ConfigError(
                f"triplet_ranking_loss: {name} has shape {list(t.shape)} but q has B={b}, D={d}; "
                f"expected [{b}, *, {d}]"
            )
    if positives.shape[1] < 1:
        # min over an empty set of positives is undefined.
        raise ConfigError("triplet_ranking_loss: every tuple needs at least one positive (P >= 1)")
    if neg_mask is not None:
        if not isinstance(neg_mask, torch.Tensor) or neg_mask.dtype != torch.bool:
            raise ConfigError("triplet_ranking_loss: neg_mask must be a bool torch.Tensor [B, J]")
        if tuple(neg_mask.shape) != tuple(negatives.shape[:2]):
            raise ConfigError(
                f"triplet_ranking_loss: neg_mask has shape {list(neg_mask.shape)}, "
                f"expected [B, J] = {list(negatives.shape[:2])}"
            )


def triplet_ranking_loss(
    q: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    margin: float = 0.1,
    reduction: str = "sum",
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paper Eq. 7 on squared Euclidean distances, batched over tuples.

    Args:
        q: [B, D] query descriptors.
        positives: [B, P, D] potential positives per query, P >= 1; the
            closest one (in the current descriptors) is used.
        negatives: [B, J, D] negatives per query.
        margin: m, in units of squared descriptor distance (paper: 0.1).
        reduction: "sum" over tuples (default, as the authors' code), "mean"
            over tuples (B, including tuples whose negatives are all masked),
            or "none" for the [B] per-tuple losses.
        neg_mask: optional [B, J] bool, True for real negatives. False
            entries (padding for tuples with fewer than J negatives)
            contribute 0 loss and 0 gradient; they must hold finite values.

    Returns:
        A scalar (sum/mean) or [B] tensor (none), dtype of q.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"triplet_ranking_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not (isinstance(margin, numbers.Real) and math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"triplet_ranking_loss: margin must be a finite number >= 0, got {margin!r}")
    _check_shapes(q, positives, negatives, neg_mask)

    # Squared distances from explicit differences rather than the
    # |a|^2 + |b|^2 - 2ab expansion: exact for near-duplicates, never
    # negative, and the B*(P+J)*D temporary is small for training batches.
    qx = q.unsqueeze(1)
    d2_pos = (positives - qx).pow(2).sum(-1)  # [B, P]
    d2_neg = (negatives - qx).pow(2).sum(-1)  # [B, J]

    # torch.min's gradient goes to the argmin only: one positive per tuple.
    best_pos = d2_pos.min(dim=1).values  # [B]
    hinge = torch.clamp(best_pos.unsqueeze(1) + margin - d2_neg, min=0)  # [B, J]
    if neg_mask is not None:
        # where (not multiply) so padded entries give exactly 0 and no gradient.
        hinge = torch.where(neg_mask, hinge, torch.zeros_like(hinge))
    per_tuple = hinge.sum(dim=1)  # [B]

    if reduction == "none":
        return per_tuple
    if reduction == "mean":
        return per_tuple.mean()
    return per_tuple.sum()
