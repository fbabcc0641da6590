"""NetVLAD against an independent loop-based reference, invariants, alpha rule."""
import math

import numpy as np
import pytest
import torch

from repro.errors import ConfigError
from repro.model import NetVLAD, alpha_from_ratio


def reference_netvlad(x, weight, bias, centroids, normalize_input=True):
    """Paper Eq. 1-4 written out with loops over images, clusters and positions (float64)."""
    B, D, H, W = x.shape
    K = centroids.shape[0]
    out = np.zeros((B, K * D))
    for b in range(B):
        descs = [x[b, :, i, j].astype(np.float64) for i in range(H) for j in range(W)]
        if normalize_input:
            descs = [d / max(np.linalg.norm(d), 1e-12) for d in descs]
        V = np.zeros((K, D))
        for d_i in descs:
            logits = np.array([weight[k] @ d_i + (bias[k] if bias is not None else 0.0) for k in range(K)])
            e = np.exp(logits - logits.max())
            a = e / e.sum()
            for k in range(K):
                V[k] += a[k] * (d_i - centroids[k])
        for k in range(K):
            # the layer's convention for (near-)empty clusters: divide by max(norm, 1e-12)
            V[k] /= max(np.linalg.norm(V[k]), 1e-12)
        v = V.reshape(-1)  # cluster-major: index k*D + d
        out[b] = v / max(np.linalg.norm(v), 1e-12)
    return out


@pytest.mark.parametrize("assignment", ["paper", "fixed_bias"])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_matches_loop_reference(assignment, normalize_input):
    rng = np.random.default_rng()
    K, D = 5, 7
    x = rng.normal(size=(3, D, 4, 3))
    layer = NetVLAD(K, D, alpha=rng.uniform(0.5, 5), assignment=assignment, normalize_input=normalize_input).double()
    layer.init_from_centroids(rng.normal(size=(K, D)))
    # Decouple w, b, c from each other, as training does.
    with torch.no_grad():
        layer.assign_weight.add_(torch.from_numpy(rng.normal(scale=0.3, size=(K, D))))
        if layer.assign_bias is not None:
            layer.assign_bias.add_(torch.from_numpy(rng.normal(scale=0.3, size=K)))
    got = layer(torch.from_numpy(x)).detach().numpy()
    bias = None if layer.assign_bias is None else layer.assign_bias.detach().numpy()
    want = reference_netvlad(x, layer.assign_weight.detach().numpy(), bias,
                             layer.centroids.detach().numpy(), normalize_input)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_parameterisations_from_centroids():
    rng = np.random.default_rng()
    c = rng.normal(size=(4, 6))
    alpha = rng.uniform(1, 50)
    paper = NetVLAD(4, 6, alpha=alpha, assignment="paper").double()
    paper.init_from_centroids(c)
    np.testing.assert_allclose(paper.assign_weight.detach().numpy(), 2 * alpha * c)
    np.testing.assert_allclose(paper.assign_bias.detach().numpy(), -alpha * (c ** 2).sum(1))
    fixed = NetVLAD(4, 6, alpha=alpha, assignment="fixed_bias").double()
    fixed.init_from_centroids(c)
    np.testing.assert_allclose(fixed.assign_weight.detach().numpy(), alpha * c / np.linalg.norm(c, axis=1, keepdims=True))
    assert fixed.assign_bias is None
    names = {n for n, _ in paper.named_parameters()}
    assert names == {"assign_weight", "assign_bias", "centroids"}


def test_paper_assignment_is_softmax_of_negative_squared_distance():
    rng = np.random.default_rng()
    K, D = 6, 5
    c = rng.normal(size=(K, D))
    alpha = rng.uniform(0.5, 3)
    layer = NetVLAD(K, D, alpha=alpha, normalize_input=False).double()
    layer.init_from_centroids(c)
    x = rng.normal(size=(1, D, 10))
    a = layer.soft_assignment(torch.from_numpy(x)).detach().numpy()[0]  # [K, N]
    sq = ((x[0].T[:, None, :] - c[None]) ** 2).sum(-1)  # [N, K]
    e = np.exp(-alpha * (sq - sq.min(1, keepdims=True)))
    np.testing.assert_allclose(a, (e / e.sum(1, keepdims=True)).T, rtol=1e-9)


def test_output_norms():
    K, D = 8, 16
    layer = NetVLAD(K, D)
    y = layer(torch.randn(4, D, 5, 6))
    assert y.shape == (4, K * D)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(4))
    # intra-normalised, then L2: every non-empty cluster block has norm 1/sqrt(#non-empty)
    blocks = y.view(4, K, D).norm(dim=2)
    for row in blocks:
        nonzero = row > 1e-6
        torch.testing.assert_close(row[nonzero], torch.full((int(nonzero.sum()),), nonzero.sum().item() ** -0.5))


def test_spatial_permutation_invariance():
    layer = NetVLAD(6, 10).double()
    x = torch.randn(2, 10, 4, 5, dtype=torch.float64)
    perm = torch.randperm(20)
    x_perm = x.flatten(2)[:, :, perm].view(2, 10, 5, 4)  # other shape, same set of descriptors
    torch.testing.assert_close(layer(x), layer(x_perm))


def test_gradcheck():
    layer = NetVLAD(3, 4, alpha=2.0).double()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6)
    # gradients reach all three parameter sets
    layer(x).pow(3).sum().backward()
    for p in (layer.assign_weight, layer.assign_bias, layer.centroids):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("assignment", ["paper", "fixed_bias"])
def test_alpha_rule_gives_mean_log_ratio(assignment):
    rng = np.random.default_rng()
    K, D = 16, 8
    x = rng.normal(size=(2000, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = x[rng.choice(len(x), K, replace=False)] + rng.normal(scale=0.05, size=(K, D))
    ratio = rng.uniform(10, 1000)
    alpha = alpha_from_ratio(x, torch.from_numpy(c), ratio=ratio, assignment=assignment)
    layer = NetVLAD(K, D, alpha=alpha, assignment=assignment, normalize_input=False).double()
    layer.init_from_centroids(c)
    a = layer.soft_assignment(torch.from_numpy(x.T[None])).detach().numpy()[0].T  # [M, K]
    top = np.sort(a, axis=1)[:, ::-1]
    np.testing.assert_allclose(np.mean(np.log(top[:, 0] / top[:, 1])), math.log(ratio), rtol=1e-8)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_alpha_is_rejected(bad):
    with pytest.raises(ConfigError, match="alpha"):
        NetVLAD(4, 4, alpha=bad)


def test_wrong_input_shape():
    with pytest.raises(ConfigError, match=r"\[B, 8, H, W\]"):
        NetVLAD(4, 8)(torch.randn(1, 7, 3, 3))
