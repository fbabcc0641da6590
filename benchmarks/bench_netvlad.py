"""NetVLAD layer, forward + backward, float32 CPU: project vs loop vs floor.

* ``project``: :class:`repro.model.NetVLAD` (hand-written backward).
* ``loop``: the loop-over-clusters layer of the most used PyTorch port
  (Nanne/pytorch-NetVlad, ``netvlad.py``): a [B, 1, D, N] residual per
  cluster, weighted and summed, written into a [B, K, D] buffer. Same
  parameters as the project layer; checked to give the same output and
  gradients (assert) before timing.
* ``floor``: only the six batched matrix products any NetVLAD must do
  (forward W x and a x^T; their backward: two products each), with
  autograd, on the same shapes: the time the layer cannot go below.
* ``autograd``: the project layer's op-by-op definition
  (``NetVLAD.forward_autograd``, the implementation before issue 6).

One timed call = forward, then backward of a fixed random output gradient
(input and parameters require grad). Shapes: B x D x H x W input, K clusters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved, peak_mib, rows_for, timed
from repro.model.netvlad import NetVLAD

FULL_CASES = [dict(B=8, K=64, D=256, H=30, W=40), dict(B=8, K=64, D=512, H=30, W=40)]
QUICK_CASES = [dict(B=2, K=8, D=32, H=6, W=8)]


def loop_netvlad(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    """Nanne/pytorch-NetVlad's forward (loop over clusters), with ``layer``'s parameters."""
    n, c = x.shape[:2]
    if layer.normalize_input:
        x = F.normalize(x, p=2, dim=1)
    soft_assign = F.conv2d(x, layer.assign_weight[:, :, None, None], layer.assign_bias).view(n, layer.num_clusters, -1)
    soft_assign = F.softmax(soft_assign, dim=1)
    x_flatten = x.view(n, c, -1)
    vlad = torch.zeros([n, layer.num_clusters, c], dtype=x.dtype, layout=x.layout, device=x.device)
    for k in range(layer.num_clusters):  # slower than non-looped, but lower memory usage (the port's comment)
        residual = x_flatten.unsqueeze(0).permute(1, 0, 2, 3) - \
            layer.centroids[k:k + 1, :].expand(x_flatten.size(-1), -1, -1).permute(1, 2, 0).unsqueeze(0)
        residual = residual * soft_assign[:, k:k + 1, :].unsqueeze(2)
        vlad[:, k:k + 1, :] = residual.sum(dim=-1)
    vlad = F.normalize(vlad, p=2, dim=2)
    vlad = vlad.view(x.size(0), -1)
    return F.normalize(vlad, p=2, dim=1)


class Setup:
    """Inputs, layer and the per-implementation step functions of one case."""

    def __init__(self, B, K, D, H, W, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.layer = NetVLAD(K, D, alpha=1.0)
        centroids = F.normalize(torch.randn(K, D, generator=g), dim=1)
        # alpha as the paper's rule would give on unit descriptors: sharp but not hard assignment
        self.layer.init_from_centroids(centroids, alpha=10.0)
        self.x = torch.randn(B, D, H, W, generator=g)
        self.grad_out = torch.randn(B, K * D, generator=g)
        self.grad_floor = torch.randn(B, K, D, generator=g)
        self.w_floor = self.layer.assign_weight.detach().clone().requires_grad_()

    def _zero(self):
        self.layer.zero_grad(set_to_none=True)
        self.w_floor.grad = None

    def step(self, impl: str):
        """Forward + backward of ``impl`` once; returns (output, input grad)."""
        self._zero()
        x = self.x.clone().requires_grad_()
        if impl == "floor":
            xf = x.flatten(2)
            a = torch.matmul(self.w_floor, xf)  # [B, K, N]
            y = torch.matmul(a, xf.transpose(1, 2))  # [B, K, D]
            y.backward(self.grad_floor)
        else:
            f = {"project": self.layer, "autograd": self.layer.forward_autograd,
                 "loop": lambda t: loop_netvlad(self.layer, t)}[impl]
            y = f(x)
            y.backward(self.grad_out)
        return y, x.grad

    def timed_step(self, impl: str):
        # the input clone is set-up, outside the timed part
        self._zero()
        x = self.x.clone().requires_grad_()
        return timed(self._run, impl, x)

    def _run(self, impl, x):
        if impl == "floor":
            xf = x.flatten(2)
            torch.matmul(torch.matmul(self.w_floor, xf), xf.transpose(1, 2)).backward(self.grad_floor)
        else:
            f = {"project": self.layer, "autograd": self.layer.forward_autograd,
                 "loop": lambda t: loop_netvlad(self.layer, t)}[impl]
            f(x).backward(self.grad_out)


def check_same(s: Setup, rtol: float = 1e-4) -> None:
    """Project, autograd and loop agree on output, input gradient and parameter gradients."""
    results = {}
    for impl in ("project", "autograd", "loop"):
        y, gx = s.step(impl)
        results[impl] = [y.detach(), gx] + [p.grad.clone() for p in s.layer.parameters()]
    for impl in ("autograd", "loop"):
        for a, b in zip(results["project"], results[impl]):
            err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
            assert err < rtol, f"NetVLAD project vs {impl}: relative difference {err:.2e}"


def memory_case(case: str, impl: str, **shape):
    s = Setup(**shape)
    return lambda: s.step(impl)


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    cases = QUICK_CASES if quick else FULL_CASES
    repeats = repeats or (3 if quick else 7)
    rows = []
    for shape in cases:
        case = "B{B}_K{K}_D{D}_{H}x{W}".format(**shape)
        s = Setup(**shape)
        check_same(s)
        impls = ["project", "loop", "floor", "autograd"]
        times = interleaved({i: (lambda i=i: s.timed_step(i)) for i in impls}, repeats)
        peaks = {i: peak_mib("benchmarks.bench_netvlad", case, i, shape) for i in (impls[:1] if quick else impls)} \
            if memory else None
        rows += rows_for("netvlad", case, times, "project", shape, peaks)
        print(f"netvlad {case}: " + ", ".join(f"{i} {sorted(t)[len(t) // 2] * 1e3:.1f} ms" for i, t in times.items())
              + (", peak MiB " + ", ".join(f"{i} {p:.0f}" for i, p in peaks.items()) if peaks else ""), flush=True)
    return rows
