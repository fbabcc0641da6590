"""Geographic ground truth: which database images show a query's place.

All positions are UTM easting/northing in metres, arrays of shape [n, 2].
A database image is "within r" of a query when its squared Euclidean distance
is ``<= r**2`` (inclusive, like the authors' ``posDistSqThr`` test and the
``radius_neighbors`` of Nanne/pytorch-NetVlad).

Radius search uses ``scipy.spatial.cKDTree.query_ball_point`` over all queries
at once; candidates come from a radius inflated by 1e-9 (relative) and are then
filtered with the exact squared distance, so the boundary rule above holds bit
for bit whatever rounding the tree does internally.

Results are per-query lists of sorted int64 database indices. Negatives are the
complement of :func:`non_negatives` and are never materialised as a
[Q, N] matrix (pitts250k train would need 91464 x 7824 entries).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from repro.errors import ConfigError, DatasetError

__all__ = [
    "eval_positives",
    "train_positives",
    "non_negatives",
    "sample_negatives",
    "panorama_ids",
]


def _as_utm(utm, what: str) -> np.ndarray:
    utm = np.asarray(utm, dtype=np.float64)
    if utm.ndim != 2 or utm.shape[1] != 2:
        raise DatasetError(f"{what} UTM coordinates must have shape [n, 2], got {list(utm.shape)}")
    return utm


def _within(utm_db, utm_q, radius: float, min_dist: float = 0.0) -> list[np.ndarray]:
    """Per query, sorted int64 indices of db rows with min_dist < d <= radius
    (min_dist = 0: 0 <= d <= radius).

    Both bounds are tested on squared distances (d^2 <= radius^2, and
    d^2 > min_dist^2 as the authors' ``dSq > 1``).
    """
    db = _as_utm(utm_db, "database")
    q = _as_utm(utm_q, "query")
    if not radius > 0 or min_dist < 0 or min_dist > radius:
        raise ConfigError(f"need 0 <= min_dist <= radius and radius > 0, got min_dist={min_dist}, radius={radius}")
    if len(q) == 0:
        return []
    if len(db) == 0:
        return [np.empty(0, np.int64) for _ in range(len(q))]

    # Superset of the answer: the tree's own boundary rounding must not drop
    # a point that lies exactly on the radius.
    r_search = radius * (1.0 + 1e-9)
    cand = cKDTree(db).query_ball_point(q, r=r_search, return_sorted=True)
    counts = np.fromiter((len(c) for c in cand), dtype=np.int64, count=len(cand))
    if counts.sum() == 0:
        return [np.empty(0, np.int64) for _ in range(len(q))]
    idx = np.concatenate([np.asarray(c, dtype=np.int64) for c in cand if len(c)])
    qi = np.repeat(np.arange(len(q)), counts)

    # Exact test, same arithmetic as a brute-force ((a - b)**2).sum(-1).
    d2 = ((db[idx] - q[qi]) ** 2).sum(axis=1)
    keep = d2 <= radius**2
    if min_dist > 0:
        keep &= d2 > min_dist**2
    kept_counts = np.bincount(qi[keep], minlength=len(q))
    return np.split(idx[keep], np.cumsum(kept_counts)[:-1])


def eval_positives(utm_db, utm_q, radius: float = 25.0) -> list[np.ndarray]:
    """True matches for evaluation: database images within ``radius`` metres.

    Args:
        utm_db: [N, 2] database positions, metres.
        utm_q: [Q, 2] query positions, metres.
        radius: metres; 25 in the paper (``posDistThr``), inclusive.

    Returns:
        Q sorted int64 arrays of database indices (possibly empty).
    """
    return _within(utm_db, utm_q, radius)


def train_positives(utm_db, utm_q, radius: float = 10.0, min_dist: float = 1.0,
                    q_time=None, db_time=None) -> list[np.ndarray]:
    """Potential training positives: database images within ``radius`` metres.

    The paper's weak supervision picks, per query, the best-matching image
    among these "potential positives". The authors' rule (dbBase.m,
    ``nontrivialPosQ``): ``dSq > 1 & dSq <= nonTrivPosDistSqThr``, i.e.
    1 m < d <= 10 m: images at (nearly) the query's own position are not
    positives ("non-trivial"). That is the default here (``min_dist=1.0``);
    ``min_dist=0`` keeps them, as Nanne/pytorch-NetVlad does (its
    ``nontrivial_positives`` is a plain 10 m radius search). On the real
    Pitts30k-train metadata the rule removes positives of few queries
    (README, "Ground truth"; ``tests/test_datasets.py`` measures it).

    With capture times (Tokyo Time Machine's ``qTimeStamp``/``dbTimeStamp``,
    dbTokyoTimeMachine.m) a positive must also be from another time than the
    query: TokyoTM's queries are cut from the database panoramas themselves.

    Args:
        utm_db: [N, 2] metres. utm_q: [Q, 2] metres.
        radius: outer radius, metres, inclusive.
        min_dist: inner radius, metres, exclusive (dropped when d == min_dist,
            as ``dSq > 1`` drops d = 1 m).
        q_time, db_time: [Q] and [N] capture times, or None (no time rule).

    Returns:
        Q sorted int64 arrays; queries with none get an empty array (training
        skips them, as the authors do).
    """
    found = _within(utm_db, utm_q, radius, min_dist)
    if (q_time is None) != (db_time is None):
        raise ConfigError("train_positives: give both q_time and db_time, or neither")
    if q_time is None:
        return found
    q_time, db_time = np.asarray(q_time), np.asarray(db_time)
    return [p[db_time[p] != q_time[i]] for i, p in enumerate(found)]


def non_negatives(utm_db, utm_q, radius: float = 25.0) -> list[np.ndarray]:
    """Database images that must NOT be used as negatives for each query.

    Negatives are images farther than ``radius`` (25 m, ``posDistThr``) from
    the query; this returns the complement (within ``radius``, inclusive), which
    is small, instead of the huge negative sets. Use :func:`sample_negatives`
    to draw from the complement.

    Returns:
        Q sorted int64 arrays of database indices.
    """
    return _within(utm_db, utm_q, radius)


def sample_negatives(non_neg: np.ndarray, num_db: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` distinct database indices uniformly outside ``non_neg``.

    The complement is never built: ranks ``p`` in ``[0, num_db - k)`` are drawn
    and mapped to the p-th index not in ``non_neg`` through a searchsorted over
    the sorted exclusions (O(k log k + n log k)).

    Args:
        non_neg: int array of excluded indices (one entry of :func:`non_negatives`).
        num_db: N, the database size.
        n: how many to draw; if fewer than ``n`` remain, all of them are returned.
        rng: numpy Generator.

    Returns:
        int64 array, sorted, length ``min(n, num_db - len(unique(non_neg)))``.
    """
    excl = np.unique(np.asarray(non_neg, dtype=np.int64))
    free = num_db - len(excl)
    ranks = np.sort(rng.choice(free, size=min(n, free), replace=False)).astype(np.int64)
    # excl[j] - j = how many free indices lie below excl[j]; every exclusion
    # with that count <= p shifts the p-th free index up by one.
    return ranks + np.searchsorted(excl - np.arange(len(excl)), ranks, side="right")


def panorama_ids(utm_db, per_panorama: int | None = None) -> np.ndarray:
    """Panorama id of each database row, for "one cut-out per panorama" recall.

    Tokyo 24/7 stores 12 perspective cut-outs per panorama as consecutive rows
    with an identical position.

    Args:
        utm_db: [N, 2] metres.
        per_panorama: None groups runs of consecutive rows with an identical
            position. An int k takes rows ``[i*k, (i+1)*k)`` as one panorama and
            checks that they share a position (DatasetError otherwise). Prefer
            ``k=12`` for Tokyo 24/7: there 78 of the 6332 panoramas repeat the
            position of the previous one, so runs merge them (6254 groups).

    Returns:
        [N] int64 ids, 0..P-1, non-decreasing.
    """
    db = _as_utm(utm_db, "database")
    if per_panorama is None:
        if len(db) == 0:
            return np.empty(0, np.int64)
        new = np.r_[True, np.any(db[1:] != db[:-1], axis=1)]
        return np.cumsum(new, dtype=np.int64) - 1
    k = int(per_panorama)
    if k <= 0 or len(db) % k:
        raise DatasetError(
            f"{len(db)} database images cannot be split into panoramas of {per_panorama} cut-outs"
        )
    blocks = db.reshape(-1, k, 2)
    bad = np.flatnonzero(np.any(blocks != blocks[:, :1], axis=(1, 2)))
    if len(bad):
        raise DatasetError(
            f"{len(bad)} of {len(blocks)} panoramas of {k} consecutive database images do not share "
            f"one position (first at rows {bad[0] * k}..{bad[0] * k + k - 1}); "
            "expected each panorama's cut-outs to be stored consecutively"
        )
    return np.repeat(np.arange(len(blocks), dtype=np.int64), k)
