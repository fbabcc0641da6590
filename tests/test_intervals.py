"""The paired bootstrap of recall differences and the verdict rule (repro.report.intervals)."""
import numpy as np
import pytest

from repro.errors import ConfigError
from repro.report.intervals import paired_bootstrap, verdict


def slow_bootstrap(ranks_a, ranks_b, ns, resamples, seed, level):
    """Plain-Python reference: the same draws (same generator, same order and shapes), every mean by hand."""
    a = [list(r) for r in np.atleast_2d(ranks_a)]
    b = [list(r) for r in np.atleast_2d(ranks_b)]
    q = len(a[0])
    rng = np.random.default_rng(seed)
    seeds_a = rng.integers(0, len(a), size=(resamples, len(a)))
    seeds_b = rng.integers(0, len(b), size=(resamples, len(b)))
    queries = rng.integers(0, q, size=(resamples, q))
    hit = lambda r, n: 1.0 if 1 <= r <= n else 0.0  # noqa: E731
    out = {}
    for n in ns:
        diffs = []
        for r in range(resamples):
            total = 0.0
            for j in queries[r]:
                pa = sum(hit(a[s][j], n) for s in seeds_a[r]) / len(a)
                pb = sum(hit(b[s][j], n) for s in seeds_b[r]) / len(b)
                total += pa - pb
            diffs.append(100.0 * total / q)
        diffs.sort()
        # numpy's default quantile: linear interpolation between order statistics
        def quantile(p):
            x = p * (len(diffs) - 1)
            i = int(np.floor(x))
            return diffs[i] + (x - i) * (diffs[min(i + 1, len(diffs) - 1)] - diffs[i])
        ra = 100.0 * sum(hit(v, n) for row in a for v in row) / (len(a) * q)
        rb = 100.0 * sum(hit(v, n) for row in b for v in row) / (len(b) * q)
        out[n] = {"diff": ra - rb, "low": quantile((1 - level) / 2), "high": quantile((1 + level) / 2), "a": ra, "b": rb}
    return out


def random_ranks(rng, shape, depth=30):
    r = rng.integers(1, depth + 1, size=shape)
    r[rng.random(shape) < 0.2] = -1  # no correct image within the depth
    return r


@pytest.mark.parametrize("shape_a, shape_b", [((40,), (40,)), ((3, 25), (2, 25)), ((1, 30), (4, 30))])
def test_paired_bootstrap_matches_a_slow_reference(shape_a, shape_b):
    rng = np.random.default_rng(int(np.prod(shape_a)) * 7 + int(np.prod(shape_b)))
    a, b = random_ranks(rng, shape_a), random_ranks(rng, shape_b)
    got = paired_bootstrap(a, b, ns=(1, 5, 10), resamples=300, seed=3, level=0.9)
    want = slow_bootstrap(a, b, (1, 5, 10), 300, 3, 0.9)
    for n in (1, 5, 10):
        for k in ("diff", "low", "high", "a", "b"):
            assert got[n][k] == pytest.approx(want[n][k], abs=1e-9), (n, k)


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """Coverage on fresh data with a known truth: query hits drawn with P(a hit) = 0.6, P(b hit) = 0.5
    per query, paired through a shared latent difficulty."""
    rng = np.random.default_rng(11)
    covered, trials, q = 0, 200, 400
    for t in range(trials):
        u = rng.random(q)
        a = np.where(u < 0.6, 1, -1)
        b = np.where(u < 0.5, 1, -1)  # paired: every b hit is an a hit
        iv = paired_bootstrap(a, b, ns=(1,), resamples=500, seed=t)[1]
        covered += iv["low"] <= 10.0 <= iv["high"]
    assert 0.88 <= covered / trials <= 0.99, covered / trials


def test_pairing_narrows_the_interval_and_seed_spread_widens_it():
    rng = np.random.default_rng(5)
    q = 300
    u = rng.random(q)
    a, b = np.where(u < 0.55, 1, -1), np.where(u < 0.5, 1, -1)
    paired = paired_bootstrap(a, b, ns=(1,), resamples=1000, seed=0)[1]
    unpaired_b = b[rng.permutation(q)]  # the same recall, no pairing with a
    unpaired = paired_bootstrap(a, unpaired_b, ns=(1,), resamples=1000, seed=0)[1]
    assert paired["high"] - paired["low"] < 0.6 * (unpaired["high"] - unpaired["low"])
    # three seeds of a that disagree: wider than one seed of the same mean recall
    seeds = np.stack([np.where(u < p, 1, -1) for p in (0.45, 0.55, 0.65)])
    one = paired_bootstrap(seeds[1], b, ns=(1,), resamples=1000, seed=0)[1]
    three = paired_bootstrap(seeds, b, ns=(1,), resamples=1000, seed=0)[1]
    assert three["high"] - three["low"] > 1.5 * (one["high"] - one["low"])
    assert three["diff"] == pytest.approx(one["diff"], abs=3.0)  # the same mean recall, up to sampling


def test_same_seed_same_interval_and_bad_input_is_refused():
    rng = np.random.default_rng(2)
    a, b = random_ranks(rng, (50,)), random_ranks(rng, (50,))
    assert paired_bootstrap(a, b, seed=4) == paired_bootstrap(a, b, seed=4)
    with pytest.raises(ConfigError, match="same queries"):
        paired_bootstrap(a, b[:40])
    with pytest.raises(ConfigError, match="integers"):
        paired_bootstrap(a.astype(float), b)
    with pytest.raises(ConfigError, match="resamples"):
        paired_bootstrap(a, b, resamples=0)


@pytest.mark.parametrize("bounds, expected", [
    ([(0.5, 3.0), (0.1, 2.0), (1.0, 4.0)], "yes"),
    ([(-3.0, -0.5), (-2.0, -0.1), (-4.0, -1.0)], "no"),
    ([(0.5, 3.0), (-1.0, 2.0), (1.0, 4.0)], "not significant"),  # one N includes 0
    ([(-1.0, 1.0), (-2.0, 2.0), (-0.5, 0.5)], "not significant"),
    ([(0.5, 3.0), (-3.0, -0.5), (-1.0, 1.0)], "mixed"),
    ([(0.0, 3.0), (0.1, 2.0), (1.0, 4.0)], "not significant"),  # touching 0 does not exclude it
])
def test_verdict_rule(bounds, expected):
    assert verdict({n: {"low": lo, "high": hi} for n, (lo, hi) in zip((1, 5, 10), bounds)}) == expected


def _quantile(values, p):
    """numpy's default quantile (linear interpolation between order statistics), by hand."""
    v = sorted(values)
    x = p * (len(v) - 1)
    i = int(np.floor(x))
    return v[i] + (x - i) * (v[min(i + 1, len(v) - 1)] - v[i])


def slow_gap_to_best(rule, others, ns, resamples, seed, level):
    """Reference for gap_to_best: the same query draws, the best alpha re-chosen in each resample by a loop."""
    q = len(rule)
    queries = np.random.default_rng(seed).integers(0, q, size=(resamples, q))
    hit = lambda r, n: 1.0 if 1 <= r <= n else 0.0  # noqa: E731
    out = {}
    for n in ns:
        gaps = []
        for draw in queries:
            rule_recall = sum(hit(rule[j], n) for j in draw) / q
            best = max(sum(hit(o[j], n) for j in draw) / q for o in others)
            gaps.append(100.0 * (rule_recall - best))
        full = [sum(hit(v, n) for v in o) / q for o in others]
        out[n] = {"diff": 100.0 * (sum(hit(v, n) for v in rule) / q - max(full)),
                  "low": _quantile(gaps, (1 - level) / 2), "high": _quantile(gaps, (1 + level) / 2),
                  "best_index": full.index(max(full))}
    return out


@pytest.mark.parametrize("num_alphas", [1, 4])
def test_gap_to_best_matches_a_slow_reference(num_alphas):
    from repro.report.intervals import gap_to_best

    rng = np.random.default_rng(100 + num_alphas)
    rule, others = random_ranks(rng, (35,)), random_ranks(rng, (num_alphas, 35))
    got = gap_to_best(rule, others, ns=(1, 5, 10), resamples=200, seed=5, level=0.9)
    want = slow_gap_to_best(list(rule), [list(o) for o in others], (1, 5, 10), 200, 5, 0.9)
    for n in (1, 5, 10):
        for k in ("diff", "low", "high", "best_index"):
            assert got[n][k] == pytest.approx(want[n][k], abs=1e-9), (n, k)


def test_gap_to_best_rechooses_the_best_so_a_tie_is_not_a_loss():
    """Two alphas with identical ranks: the rule is one of them. Choosing the best per resample can only
    make the gap <= 0, but with the rule itself an equal copy of the other, every resample's gap is 0."""
    from repro.report.intervals import gap_to_best, near_verdict

    rng = np.random.default_rng(7)
    r = random_ranks(rng, (50,))
    iv = gap_to_best(r, np.stack([r, random_ranks(rng, (50,), depth=200)]), resamples=300)
    assert all(v["high"] <= 1e-12 for v in iv.values())
    assert near_verdict(iv) == "yes"  # reaches 0: not significantly below the best


def test_near_verdict_follows_the_rule():
    from repro.report.intervals import near_verdict

    iv = lambda lo, hi: {"diff": (lo + hi) / 2, "low": lo, "high": hi}  # noqa: E731
    assert near_verdict({1: iv(-5, 1), 5: iv(-3, 0), 10: iv(0.5, 2)}) == "yes"
    assert near_verdict({1: iv(-5, -1), 5: iv(-3, -0.5), 10: iv(-4, -2)}) == "no"
    assert near_verdict({1: iv(-5, -1), 5: iv(-3, 0.5), 10: iv(-4, 2)}) == "mixed"
    with pytest.raises(ConfigError):
        near_verdict({})


def test_a_rule_clearly_worse_than_the_best_is_not_near():
    """Fresh data with a known truth: the rule finds 20% of the queries at rank 1, another alpha 70%."""
    from repro.report.intervals import gap_to_best, near_verdict

    rng = np.random.default_rng(11)
    q = 300
    rule = np.where(rng.random(q) < 0.2, 1, 50)
    good = np.where(rng.random(q) < 0.7, 1, 50)
    iv = gap_to_best(rule, good[None], ns=(1, 5, 10), resamples=500)
    assert near_verdict(iv) == "no"
    assert iv[1]["diff"] == pytest.approx(100.0 * ((rule == 1).mean() - (good == 1).mean()))


@pytest.mark.parametrize("shape", [(40,), (3, 30)])
def test_recall_interval_matches_a_slow_reference(shape):
    from repro.report.intervals import recall_interval

    rng = np.random.default_rng(sum(shape))
    ranks = random_ranks(rng, shape)
    got = recall_interval(ranks, ns=(1, 5), resamples=250, seed=2, level=0.9)
    runs = [list(r) for r in np.atleast_2d(ranks)]
    q = len(runs[0])
    draws = np.random.default_rng(2)
    seeds = draws.integers(0, len(runs), size=(250, len(runs)))
    queries = draws.integers(0, q, size=(250, q))
    hit = lambda r, n: 1.0 if 1 <= r <= n else 0.0  # noqa: E731
    for n in (1, 5):
        stats = [100.0 * sum(sum(hit(runs[s][j], n) for s in seeds[r]) / len(runs) for j in queries[r]) / q
                 for r in range(250)]
        assert got[n]["low"] == pytest.approx(_quantile(stats, 0.05), abs=1e-9)
        assert got[n]["high"] == pytest.approx(_quantile(stats, 0.95), abs=1e-9)
        assert got[n]["recall"] == pytest.approx(100.0 * sum(hit(v, n) for r in runs for v in r) / (len(runs) * q))
