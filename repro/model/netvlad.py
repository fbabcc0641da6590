"""The NetVLAD layer (paper Sec. 3, Eq. 1-4) and the paper's rule for alpha.

A ``[B, D, H, W]`` conv map is read as N = H*W local descriptors x_i in R^D.
NetVLAD aggregates them into K x D residual sums

    V(k, d) = sum_i a_k(x_i) (x_i(d) - c_k(d)),                       (Eq. 4)
    a_k(x)  = exp(w_k^T x + b_k) / sum_k' exp(w_k'^T x + b_k'),        (Eq. 3)

then L2-normalises each cluster's row (intra-normalisation), flattens
cluster-major (output index k*D + d) and L2-normalises the whole vector.
The authors' MATLAB layer flattens the K x D matrix column-major instead
(index k + K*d, "dim-major"); ``layout="dim_major"`` gives that order, which
their PCA whitening expects (their released models, ``repro.model.authors``),
and :func:`convert_vlad_layout` converts vectors between the two.

Two parameterisations of the soft-assignment, both with {w_k}, {b_k}, {c_k}
as separate trainable parameters (the decoupling that is the paper's point):

``"paper"`` (default): the paper's Eq. 2->3 expansion of
    exp(-alpha ||x - c_k||^2), i.e. w_k = 2 alpha c_k, b_k = -alpha ||c_k||^2
    (the ||x||^2 term cancels in the softmax). This is ``vladv2`` in the
    authors' MATLAB code.
``"fixed_bias"``: what the authors' released code uses by default
    (``vlad``/``preL2``): assignment by dot products with the L2-normalised
    centroids, w_k = alpha c_k / ||c_k||, and no bias at all (b_k fixed at 0,
    not a parameter). With L2-normalised inputs this ranks clusters by
    cosine rather than by distance, and alpha is set from dot-product gaps.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ConfigError

ASSIGNMENTS = ("paper", "fixed_bias")
LAYOUTS = ("cluster_major", "dim_major")


def convert_vlad_layout(vectors, num_clusters: int, dim: int, to: str):
    """Reorder flattened NetVLAD vectors ``[..., K*D]`` between the two layouts.

    ``to="dim_major"``: from ours (element (k, d) at k*D + d) to the
    authors' (MATLAB's column-major K x D: element (k, d) at k + K*d);
    ``to="cluster_major"``: back. A permutation: norms and distances are
    unchanged. Works on torch tensors and numpy arrays.
    """
    if to not in LAYOUTS:
        raise ConfigError(f"unknown NetVLAD layout {to!r}; choose one of {LAYOUTS}")
    k, d = int(num_clusters), int(dim)
    if vectors.shape[-1] != k * d:
        raise ConfigError(f"NetVLAD vectors must have K*D = {k * d} elements, got shape {list(vectors.shape)}")
    lead = tuple(vectors.shape[:-1])
    grid = (k, d) if to == "dim_major" else (d, k)  # the order the input is in
    v = vectors.reshape(*lead, *grid)
    v = v.transpose(-1, -2) if torch.is_tensor(v) else v.swapaxes(-1, -2)
    return v.reshape(*lead, k * d)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to(torch.float64)


def check_alpha(alpha) -> float:
    """Return alpha as a float, or raise ConfigError unless it is finite and > 0."""
    if isinstance(alpha, bool):  # float(True) would pass as 1.0
        raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"alpha must be a positive number (e.g. -p alpha 50), got {alpha!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"alpha must be a positive, finite number (the NetVLAD soft-assignment sharpness), "
                          f"got {alpha!r}")
    return value


def _check_assignment(assignment: str) -> str:
    if assignment not in ASSIGNMENTS:
        raise ConfigError(f"unknown NetVLAD assignment {assignment!r}; choose one of {ASSIGNMENTS}")
    return assignment


def alpha_from_ratio(descriptors, centroids, ratio: float = 100.0, assignment: str = "paper") -> float:
    """The paper's rule for alpha (Sec. 3.1 and the authors' code).

    alpha is set so that, at the mean gap over ``descriptors``, the largest
    soft-assignment weight is ``ratio`` times the second largest:
    alpha = ln(ratio) / mean(d2 - d1), where for ``"paper"`` d1 <= d2 are the
    two smallest squared distances to the centroids, and for ``"fixed_bias"``
    d1 >= d2 are the two largest dot products with the L2-normalised
    centroids (then the gap is d1 - d2).

    Args:
        descriptors: [M, D] local descriptors (already L2-normalised if the
            layer normalises its input), torch tensor or numpy array.
        centroids: [K, D], K >= 2.
        ratio: > 1.
    Returns:
        alpha, a positive float.
    """
    _check_assignment(assignment)
    if not ratio > 1:
        raise ConfigError(f"ratio must be > 1, got {ratio!r}")
    x, c = _as_tensor(descriptors), _as_tensor(centroids)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1] or c.shape[0] < 2:
        raise ConfigError(f"need descriptors [M, D] and centroids [K>=2, D]; got {list(x.shape)} and {list(c.shape)}")
    if assignment == "paper":
        sq = torch.cdist(x, c).pow(2)  # [M, K]
        two = sq.topk(2, dim=1, largest=False).values
        gap = two[:, 1] - two[:, 0]
    else:
        dots = x @ F.normalize(c, dim=1).T
        two = dots.topk(2, dim=1).values
        gap = two[:, 0] - two[:, 1]
    mean_gap = gap.mean().item()
    if not mean_gap > 0:
        raise ConfigError("alpha rule undefined: the descriptors are equidistant from their two nearest centroids")
    return math.log(ratio) / mean_gap


class NetVLAD(nn.Module):
    """NetVLAD pooling: ``[B, D, H, W]`` conv map -> ``[B, K*D]`` unit vector.

    Args:
        num_clusters: K (64 in the paper).
        dim: D, channels of the input map (256 AlexNet conv5, 512 VGG-16 conv5_3).
        alpha: sharpness of the soft-assignment used by
            :meth:`init_from_centroids`. The paper sets it from data with
            :func:`alpha_from_ratio`; the value here is only a placeholder
            until then.
        assignment: ``"paper"`` or ``"fixed_bias"`` (see module docstring).
        normalize_input: L2-normalise every local descriptor over channels
            first, as the authors' code does.
        layout: ``"cluster_major"`` (ours, index k*D + d) or ``"dim_major"``
            (the authors' MATLAB order, k + K*d; see :func:`convert_vlad_layout`).
    """

    def __init__(self, num_clusters: int = 64, dim: int = 512, alpha: float = 100.0,
                 assignment: str = "paper", normalize_input: bool = True, layout: str = "cluster_major"):
        super().__init__()
        if int(num_clusters) < 1 or int(dim) < 1:
            raise ConfigError(f"num_clusters and dim must be >= 1, got {num_clusters}, {dim}")
        self.num_clusters, self.dim = int(num_clusters), int(dim)
        self.alpha = check_alpha(alpha)
        self.assignment = _check_assignment(assignment)
        self.normalize_input = normalize_input
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown NetVLAD layout {layout!r}; choose one of {LAYOUTS}")
        self.layout = layout
        # w_k as the [K, D] weight of a 1x1 convolution, b_k its bias, c_k the
        # anchors of the residuals: three independent parameters.
        self.assign_weight = nn.Parameter(torch.empty(self.num_clusters, self.dim))
        self.centroids = nn.Parameter(torch.empty(self.num_clusters, self.dim))
        if self.assignment == "paper":
            self.assign_bias = nn.Parameter(torch.empty(self.num_clusters))
        else:
            self.register_parameter("assign_bias", None)
        # Until init_from_centroids is called: random unit centroids (a
        # usable, if uninformed, layer).
        self.init_from_centroids(F.normalize(torch.randn(self.num_clusters, self.dim), dim=1))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @torch.no_grad()
    def init_from_centroids(self, centroids, alpha: float | None = None) -> None:
        """Set c_k to ``centroids`` [K, D] and w_k, b_k from alpha.

        ``alpha`` (optional) replaces ``self.alpha`` first.
        """
        if alpha is not None:
            self.alpha = check_alpha(alpha)
        c = _as_tensor(centroids).to(self.centroids.dtype)
        if c.shape != (self.num_clusters, self.dim):
            raise ConfigError(f"centroids must have shape [{self.num_clusters}, {self.dim}], got {list(c.shape)}")
        self.centroids.copy_(c)
        if self.assignment == "paper":
            self.assign_weight.copy_(2.0 * self.alpha * c)
            self.assign_bias.copy_(-self.alpha * c.pow(2).sum(dim=1))
        else:
            self.assign_weight.copy_(self.alpha * F.normalize(c, dim=1))

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, N] descriptors (already normalised if so configured) -> [B, K, N]."""
        logits = torch.matmul(self.assign_weight, x)  # the 1x1 convolution
        if self.assign_bias is not None:
            logits = logits + self.assign_bias[:, None]
        return logits.softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ConfigError(f"NetVLAD expects [B, {self.dim}, H, W], got {list(x.shape)}")
        # One autograd node with a hand-written backward (see _NetVLADFunction):
        # the same maths as forward_autograd, about half its time and fewer
        # temporaries of the [B, D, N] input size.
        # in the parameters' precision (float32) whatever the caller's autocast (issue 16): the sums
        # over N local descriptors and the normalisations would lose too much in bf16; free on float32 maps
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = _NetVLADFunction.apply(x.flatten(2).to(self.centroids.dtype), self.assign_weight, self.assign_bias, self.centroids,
                                         self.normalize_input)
        return out if self.layout == "cluster_major" else convert_vlad_layout(out, self.num_clusters, self.dim,
                                                                              self.layout)

    def forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        """The layer written with plain torch ops (autograd derives the
        backward); :meth:`forward` must agree with it. Kept as the readable
        definition and for tests."""
        x = x.flatten(2)  # [B, D, N]
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        a = self.soft_assignment(x)  # [B, K, N]
        # sum_i a_k(x_i) x_i - (sum_i a_k(x_i)) c_k, as two batched products:
        # no [B, K, D, N] residual tensor is ever formed.
        vlad = torch.matmul(a, x.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * self.centroids
        # intra-normalisation, per cluster. F.normalize divides by max(norm, 1e-12):
        # a cluster that received (almost) no assignment stays (almost) zero.
        vlad = F.normalize(vlad, dim=2)
        out = F.normalize(vlad.flatten(1), dim=1)  # index k*D + d, then L2
        return out if self.layout == "cluster_major" else convert_vlad_layout(out, self.num_clusters, self.dim,
                                                                              self.layout)

    def extra_repr(self) -> str:
        return (f"num_clusters={self.num_clusters}, dim={self.dim}, alpha={self.alpha:.4g}, "
                f"assignment={self.assignment!r}, normalize_input={self.normalize_input}"
                + (f", layout={self.layout!r}" if self.layout != "cluster_major" else ""))


EPS = 1e-12  # F.normalize's: divide by max(norm, EPS)


def _normalize(x: torch.Tensor, dim: int):
    """(x / max(|x|, EPS), max(|x|, EPS), |x| > EPS) along ``dim`` (kept)."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    denom = norm.clamp_min(EPS)
    return x / denom, denom, norm > EPS


def _normalize_backward(y: torch.Tensor, denom: torch.Tensor, above: torch.Tensor, dy: torch.Tensor, dim: int,
                        inplace: bool = False) -> torch.Tensor:
    """Gradient of y = x / max(|x|, EPS) w.r.t. x: (dy - [|x| > EPS] y <y, dy>) / max(|x|, EPS).

    Below EPS the clamped norm is a constant, as in autograd's clamp_min.
    """
    proj = torch.linalg.vecdot(y, dy, dim=dim).unsqueeze(dim) * above
    out = dy if inplace else dy.clone()
    return out.addcmul_(y, proj, value=-1.0).div_(denom)


class _NetVLADFunction(torch.autograd.Function):
    """NetVLAD forward and backward by hand, on ``x [B, D, N]``.

    Why: autograd of the op-by-op layer keeps and walks many [B, D, N]
    temporaries (normalise: norm, clamp, expand, divide; their backward
    another five). Here the backward is the six matrix products that any
    implementation needs (two forward, four backward) plus a few in-place
    elementwise passes over [B, D, N] for the input normalisation; everything
    else is on the small [B, K, N] and [B, K, D] tensors. Shapes: weight [K, D], bias [K]
    or None, centroids [K, D]; output [B, K*D].
    """

    @staticmethod
    def forward(ctx, x, weight, bias, centroids, normalize_input):
        if normalize_input:
            xn, x_denom, x_above = _normalize(x, 1)  # [B, D, N], [B, 1, N]
        else:
            xn, x_denom, x_above = x, None, None
        logits = torch.matmul(weight, xn)  # [B, K, N], the 1x1 convolution
        if bias is not None:
            logits += bias[:, None]
        a = logits.softmax(dim=1)
        s = a.sum(dim=2)  # [B, K]
        # V = a x^T - s c, as one batched product added to -s c.
        v = torch.baddbmm(s.unsqueeze(2) * -centroids, a, xn.transpose(1, 2))  # [B, K, D]
        vn, v_denom, v_above = _normalize(v, 2)  # intra-normalisation
        out, g_denom, g_above = _normalize(vn.flatten(1), 1)  # [B, K*D]
        ctx.normalize_input = normalize_input
        ctx.has_bias = bias is not None
        ctx.dtype = x.dtype
        ctx.save_for_backward(xn, x_denom, x_above, weight, centroids, a, s, vn, v_denom, v_above, out,
                              g_denom, g_above)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        # float32 too when backward() is called inside an autocast region (CPU backward runs on
        # the caller's thread, with its autocast state)
        with torch.autocast(device_type=dout.device.type, enabled=False):
            return _NetVLADFunction._backward(ctx, dout.to(ctx.dtype))

    @staticmethod
    def _backward(ctx, dout):
        (xn, x_denom, x_above, weight, centroids, a, s, vn, v_denom, v_above, out, g_denom,
         g_above) = ctx.saved_tensors
        need_x, need_w, need_b, need_c = ctx.needs_input_grad[:4]
        B, K, D = vn.shape
        dvn = _normalize_backward(out, g_denom, g_above, dout.contiguous(), 1).view(B, K, D)
        dv = _normalize_backward(vn, v_denom, v_above, dvn, 2, inplace=True)  # [B, K, D]
        dc = -torch.einsum("bk,bkd->kd", s, dv) if need_c else None
        if not (need_x or need_w or need_b):
            return None, None, None, dc, None
        ds = -(dv * centroids).sum(dim=2, keepdim=True)  # [B, K, 1]
        da = torch.baddbmm(ds, dv, xn)  # dL/da [B, K, N]
        # softmax backward over K: a * (da - <a, da>)
        dlogits = da.sub_(torch.linalg.vecdot(a, da, dim=1).unsqueeze(1)).mul_(a)
        dw = torch.matmul(dlogits, xn.transpose(1, 2)).sum(0) if need_w else None
        db = dlogits.sum(dim=(0, 2)) if (need_b and ctx.has_bias) else None
        dx = None
        if need_x:
            # dL/dxn from the aggregation (V = a xn^T) and from the assignment (W xn).
            dxn = torch.matmul(dv.transpose(1, 2), a)  # [B, D, N]
            dxn.baddbmm_(weight.t().expand(B, D, K), dlogits)
            dx = _normalize_backward(xn, x_denom, x_above, dxn, 1, inplace=True) if ctx.normalize_input else dxn
        return dx, dw, db, dc, None
