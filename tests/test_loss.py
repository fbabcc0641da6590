"""triplet_ranking_loss against a hand-written loop of paper Eq. 7."""
import math

import pytest
import torch

from repro.errors import ConfigError
from repro.loss import triplet_ranking_loss


def reference_terms(q, pos, neg, margin, mask=None):
    """Eq. 7 by explicit Python loops over plain floats.

    Returns B lists of the hinge terms of the unmasked negatives.
    """
    q, pos, neg = q.tolist(), pos.tolist(), neg.tolist()
    mask = mask.tolist() if mask is not None else None
    out = []
    for b in range(len(q)):
        def d2(x):
            return sum((qi - xi) ** 2 for qi, xi in zip(q[b], x))
        best = min(d2(p) for p in pos[b])
        terms = []
        for j, n in enumerate(neg[b]):
            if mask is not None and not mask[b][j]:
                continue
            terms.append(max(best + margin - d2(n), 0.0))
        out.append(terms)
    return out


def random_tuples(seed, B=6, P=4, J=7, D=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, generator=g, dtype=torch.float64) * 0.3
    pos = q[:, None] + torch.randn(B, P, D, generator=g, dtype=torch.float64) * 0.25
    neg = q[:, None] + torch.randn(B, J, D, generator=g, dtype=torch.float64) * 0.3
    mask = torch.rand(B, J, generator=g) < 0.7
    mask[0] = False  # one tuple with every negative padded
    return q, pos, neg, mask


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_reference(reduction, use_mask):
    q, pos, neg, mask = random_tuples(seed=11 + use_mask)
    mask = mask if use_mask else None
    margin = 0.5
    terms = reference_terms(q, pos, neg, margin, mask)
    # The data must exercise both sides of the hinge, else the test is weak.
    flat = [t for ts in terms for t in ts]
    assert any(t > 0 for t in flat) and any(t == 0 for t in flat)
    ref = [sum(ts) for ts in terms]
    got = triplet_ranking_loss(q, pos, neg, margin=margin, reduction=reduction, neg_mask=mask)
    expected = {"none": torch.tensor(ref, dtype=torch.float64),
                "sum": torch.tensor(sum(ref), dtype=torch.float64),
                "mean": torch.tensor(sum(ref) / len(ref), dtype=torch.float64)}[reduction]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_mask_changes_loss_and_padded_values_are_ignored():
    q, pos, neg, mask = random_tuples(seed=3)
    full = triplet_ranking_loss(q, pos, neg, margin=0.5, reduction="none")
    masked = triplet_ranking_loss(q, pos, neg, margin=0.5, reduction="none", neg_mask=mask)
    assert masked[0] == 0 and full[0] > 0
    # Replacing padded negatives by anything (here: the query itself, the
    # most violating value possible) must not change the masked loss.
    neg2 = torch.where(mask[..., None], neg, q[:, None].expand_as(neg))
    again = triplet_ranking_loss(q, pos, neg2, margin=0.5, reduction="none", neg_mask=mask)
    torch.testing.assert_close(again, masked)


def test_margin_behaviour_on_hand_made_triples():
    q = torch.zeros(1, 2, dtype=torch.float64)
    p = torch.tensor([[[0.1, 0.0]]], dtype=torch.float64)          # d^2 = 0.01
    loose = torch.tensor([[[0.5, 0.0]]], dtype=torch.float64)      # d^2 = 0.25 > 0.01 + 0.1
    tight = torch.tensor([[[0.2, 0.0]]], dtype=torch.float64)      # d^2 = 0.04 < 0.11
    assert triplet_ranking_loss(q, p, loose, margin=0.1).item() == 0.0
    assert triplet_ranking_loss(q, p, tight, margin=0.1).item() == pytest.approx(0.01 + 0.1 - 0.04)
    # Margin is on squared distances: with m = 0.3 the loose one now violates.
    assert triplet_ranking_loss(q, p, loose, margin=0.3).item() == pytest.approx(0.01 + 0.3 - 0.25)


def test_differs_from_triplet_margin_loss_with_sqrt_margin():
    # d_p = 0.5, d_n^2 = d_p^2 + 0.15: satisfies the paper's squared margin
    # (0.1) but not the port's d_n > d_p + sqrt(0.1) (0.632 < 0.816).
    q = torch.zeros(1, 2, dtype=torch.float64)
    p = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    n = torch.tensor([[math.sqrt(0.25 + 0.15), 0.0]], dtype=torch.float64)
    ours = triplet_ranking_loss(q, p[:, None], n[:, None], margin=0.1)
    port = torch.nn.TripletMarginLoss(margin=0.1 ** 0.5, p=2, reduction="sum")(q, p, n)
    assert ours.item() == 0.0
    assert port.item() > 0.1


def test_gradient_only_through_best_positive_and_violating_negatives():
    q, pos, neg, mask = random_tuples(seed=5)
    q.requires_grad_(True)
    pos = pos.clone().requires_grad_(True)
    neg = neg.clone().requires_grad_(True)
    margin = 0.5
    triplet_ranking_loss(q, pos, neg, margin=margin, neg_mask=mask).backward()

    with torch.no_grad():
        d2p = ((pos - q[:, None]) ** 2).sum(-1)
        d2n = ((neg - q[:, None]) ** 2).sum(-1)
        best = d2p.argmin(1)
        violating = (d2p.min(1).values[:, None] + margin - d2n > 0) & mask
    pos_has_grad = pos.grad.abs().sum(-1) > 0
    neg_has_grad = neg.grad.abs().sum(-1) > 0
    tuple_active = violating.any(1)
    expected_pos = torch.zeros_like(pos_has_grad)
    expected_pos[torch.arange(len(best)), best] = tuple_active
    assert torch.equal(pos_has_grad, expected_pos)
    assert torch.equal(neg_has_grad, violating)
    # Non-vacuous: violating, real non-violating, and masked-but-violating negatives.
    would_violate = d2p.min(1).values[:, None] + margin - d2n > 0
    assert violating.any() and (mask & ~would_violate).any() and (~mask & would_violate).any()
    # Value of the gradient for a violating negative: d/dn of -(d^2(q, n)) = -2 (n - q).
    b, j = torch.nonzero(violating)[0].tolist()
    torch.testing.assert_close(neg.grad[b, j], -2 * (neg[b, j] - q[b]).detach())


@pytest.mark.parametrize("shapes", [
    ((4, 8), (4, 8), (4, 3, 8)),        # positives missing the P axis
    ((4, 8), (4, 2, 8), (4, 3, 7)),     # negatives with another D
    ((4, 8), (3, 2, 8), (4, 3, 8)),     # batch mismatch
    ((4, 8), (4, 0, 8), (4, 3, 8)),     # no positive
    ((4, 1, 8), (4, 2, 8), (4, 3, 8)),  # q with an extra axis
])
def test_shape_errors(shapes):
    q, p, n = (torch.zeros(s) for s in shapes)
    with pytest.raises(ConfigError, match="triplet_ranking_loss"):
        triplet_ranking_loss(q, p, n)


def test_argument_errors():
    q, p, n = torch.zeros(2, 4), torch.zeros(2, 1, 4), torch.zeros(2, 3, 4)
    with pytest.raises(ConfigError, match="reduction"):
        triplet_ranking_loss(q, p, n, reduction="avg")
    with pytest.raises(ConfigError, match="margin"):
        triplet_ranking_loss(q, p, n, margin=-0.1)
    with pytest.raises(ConfigError, match="neg_mask"):
        triplet_ranking_loss(q, p, n, neg_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ConfigError, match="neg_mask"):
        triplet_ranking_loss(q, p, n, neg_mask=torch.ones(2, 3))
