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
- :func:`gap_to_best` is the interval for the claim "the rule's alpha is near
  the best of the sweep": the rule's recall minus the best of the other swept
  alphas, the best chosen again in each resample (choosing it once, on all
  queries, would favour the sweep by its own selection); :func:`near_verdict`
  reads it by :data:`NEAR_RULE`.
- :func:`recall_interval` is a single method's recall with its interval (the
  calibration table).

Inputs are per-query ranks as :class:`repro.metrics.RecallResult` gives
them: the 1-based rank of the first correct database image, -1 when none is
within the searched depth (a query without any positive counts as a failure,
as in the paper's recall).
"""
from __future__ import annotations

import numpy as np

from repro.errors import ConfigError

__all__ = ["RESAMPLES", "LEVEL", "VERDICT_RULE", "NEAR_RULE", "hits_at", "paired_bootstrap", "verdict", "gap_to_best",
           "near_verdict", "recall_interval"]

RESAMPLES = 2000  # at least 2000 (issue 15); seeded, so a rerun gives the same interval
LEVEL = 0.95
VERDICT_RULE = ("yes: the 95% interval of the difference excludes 0 in the claimed direction at every N; "
                "no: it excludes 0 in the other direction at every N; mixed: it excludes 0 in opposite "
                "directions at different N; not significant: otherwise")

NEAR_RULE = ("yes: the rule's alpha is not significantly below the best other swept alpha at any N (the 95% "
             "interval of rule minus best, the best re-chosen in each resample, reaches 0 or above); no: it is "
             "significantly below at every N; mixed: below at some N only")


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


def _quantiles(diffs: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def gap_to_best(rule_ranks, other_ranks, ns=(1, 5, 10), resamples: int = RESAMPLES, seed: int = 0,
                level: float = LEVEL) -> dict:
    """Recall@N of the rule's alpha minus the best of the other alphas, with a bootstrap interval.

    Args:
        rule_ranks: [Q] integer ranks at the rule's alpha.
        other_ranks: [A, Q] integer ranks at each other swept alpha (A >= 1), the same Q queries.
        ns, resamples, seed, level: as :func:`paired_bootstrap`.

    Returns:
        ``{n: {"diff", "low", "high", "a", "b", "best_index"}}`` in percentage
        points: ``diff`` = rule minus the best other alpha on all queries
        (``b``, at row ``best_index`` of ``other_ranks``); the interval is of
        the same statistic with the best re-chosen in every resample.
    """
    rule = _as_runs(rule_ranks, "rule")
    others = _as_runs(other_ranks, "others")
    if rule.shape[0] != 1 or others.shape[1] != rule.shape[1]:
        raise ConfigError(f"gap to best: one [Q] rule and [A, Q] others on the same queries, got {rule.shape} and "
                          f"{others.shape}")
    if int(resamples) < 1 or not 0 < level < 1:
        raise ConfigError(f"gap to best: resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    q = rule.shape[1]
    queries = np.random.default_rng(seed).integers(0, q, size=(resamples, q))
    out = {}
    for n in ns:
        hr, ho = hits_at(rule[0], n), hits_at(others, n)           # [Q], [A, Q]
        gaps = 100.0 * (hr[queries].mean(axis=1) - ho[:, queries].mean(axis=2).max(axis=0))  # [resamples]
        lo, hi = _quantiles(gaps, level)
        per_alpha = 100.0 * ho.mean(axis=1)
        best = int(np.argmax(per_alpha))
        out[int(n)] = {"diff": 100.0 * hr.mean() - per_alpha[best], "low": lo, "high": hi, "a": 100.0 * hr.mean(),
                       "b": float(per_alpha[best]), "best_index": best}
    return out


def near_verdict(intervals: dict) -> str:
    """``yes`` / ``no`` / ``mixed`` from :func:`gap_to_best`'s intervals, by :data:`NEAR_RULE`."""
    if not intervals:
        raise ConfigError("near verdict: no intervals")
    below = [iv["high"] < 0 for iv in intervals.values()]
    return "no" if all(below) else "mixed" if any(below) else "yes"


def recall_interval(ranks, ns=(1, 5, 10), resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """One method's recall@N with a percentile bootstrap interval over its queries.

    ``ranks``: [Q] or [S, Q] (seeds resampled as in :func:`paired_bootstrap`).
    Returns ``{n: {"recall", "low", "high"}}`` in percent.
    """
    r = _as_runs(ranks, "ranks")
    if int(resamples) < 1 or not 0 < level < 1:
        raise ConfigError(f"recall interval: resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, r.shape[0], size=(resamples, r.shape[0]))
    queries = rng.integers(0, r.shape[1], size=(resamples, r.shape[1]))
    out = {}
    for n in ns:
        h = hits_at(r, n)
        per_query = h[seeds].mean(axis=1)                       # [resamples, Q]
        stats = 100.0 * np.take_along_axis(per_query, queries, axis=1).mean(axis=1)
        lo, hi = _quantiles(stats, level)
        out[int(n)] = {"recall": 100.0 * h.mean(), "low": lo, "high": hi}
    return out
