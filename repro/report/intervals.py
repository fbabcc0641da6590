"""Confidence intervals of recall differences, and the verdict rule of the claims.

A claim of the paper compares two methods on the same queries ("NetVLAD
beats f_max"). Our evidence is the difference of their recall@N, and a
difference is only as good as its interval:

- :func:`paired_bootstrap` resamples the queries (the same resampled
  queries for both methods: the comparison is paired) and, where a method
  was trained with several seeds, the seeds too (each resample draws seeds
  with replacement, per method, and averages their per-query hits), so the
  interval holds query sampling and training variance together. It returns
  the observed difference and a percentile interval per N, in percentage
  points.
- :func:`verdict` turns the intervals at every N into the claim's verdict by
  :data:`VERDICT_RULE`.

Inputs are per-query ranks as :class:`repro.metrics.RecallResult` gives
them: the 1-based rank of the first correct database image, -1 when none is
within the searched depth (a query without any positive counts as a failure,
as in the paper's recall).
"""
from __future__ import annotations

import numpy as np

from repro.errors import ConfigError

__all__ = ["RESAMPLES", "LEVEL", "VERDICT_RULE", "hits_at", "paired_bootstrap", "verdict"]

RESAMPLES = 2000  # at least 2000 (issue 15); seeded, so a rerun gives the same interval
LEVEL = 0.95
VERDICT_RULE = ("yes: the 95% interval of the difference excludes 0 in the claimed direction at every N; "
                "no: it excludes 0 in the other direction at every N; mixed: it excludes 0 in opposite "
                "directions at different N; not significant: otherwise")


def hits_at(ranks, n: int) -> np.ndarray:
    """``ranks`` [..., Q] -> float [..., Q]: 1 where the first correct image is within the top ``n``."""
    ranks = np.asarray(ranks)
    return ((ranks >= 1) & (ranks <= n)).astype(np.float64)


def _as_runs(ranks, what: str) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim == 1:
        r = r[None]
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise ConfigError(f"{what}: per-query ranks must be [Q] or [seeds, Q] with Q >= 1, got shape {r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        raise ConfigError(f"{what}: ranks must be integers (1-based, -1 for no match), got {r.dtype}")
    return r


def paired_bootstrap(ranks_a, ranks_b, ns=(1, 5, 10), resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict:
    """Recall@N of ``a`` minus ``b`` with a paired bootstrap interval.

    Args:
        ranks_a, ranks_b: [Q] or [S, Q] integer ranks (S training seeds; the
            two may have different S) of the same Q queries in the same order.
        ns: the N.
        resamples: bootstrap resamples (>= 1; 2000 by default).
        seed: the resampling's seed.
        level: the interval's coverage (0.95: the 2.5 and 97.5 percentiles).

    Returns:
        ``{n: {"diff", "low", "high", "a", "b"}}`` in percentage points:
        the observed difference (mean over seeds, all queries), the
        interval's ends, and each method's observed recall.
    """
    a, b = _as_runs(ranks_a, "a"), _as_runs(ranks_b, "b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"paired bootstrap: both methods must rank the same queries, got {a.shape[1]} and "
                          f"{b.shape[1]}")
    if int(resamples) < 1 or not 0 < level < 1:
        raise ConfigError(f"paired bootstrap: resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    q = a.shape[1]
    rng = np.random.default_rng(seed)
    # one set of draws for every N: the same resampled queries and seeds at each N
    seeds_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
    queries = rng.integers(0, q, size=(resamples, q))
    out = {}
    for n in ns:
        ha, hb = hits_at(a, n), hits_at(b, n)
        diffs = np.empty(resamples)
        for r in range(resamples):
            per_query = ha[seeds_a[r]].mean(axis=0) - hb[seeds_b[r]].mean(axis=0)
            diffs[r] = per_query[queries[r]].mean()
        lo, hi = np.quantile(100.0 * diffs, [(1 - level) / 2, (1 + level) / 2])
        ra, rb = 100.0 * ha.mean(), 100.0 * hb.mean()
        out[int(n)] = {"diff": ra - rb, "low": float(lo), "high": float(hi), "a": ra, "b": rb}
    return out


def verdict(intervals: dict) -> str:
    """``yes`` / ``no`` / ``mixed`` / ``not significant`` from :func:`paired_bootstrap`'s
    intervals of (claimed better) minus (claimed worse), by :data:`VERDICT_RULE`."""
    if not intervals:
        raise ConfigError("verdict: no intervals")
    above = [iv["low"] > 0 for iv in intervals.values()]
    below = [iv["high"] < 0 for iv in intervals.values()]
    if all(above):
        return "yes"
    if all(below):
        return "no"
    if any(above) and any(below):
        return "mixed"
    return "not significant"
