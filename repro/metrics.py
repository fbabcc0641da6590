"""Recall@N for place recognition, with exact (brute-force) L2 search.

Paper definition (Sec. 5.1): a query is correctly localised at N if at least
one of the top N retrieved database images is within the positive radius
(25 m); recall@N is the percentage of correctly localised queries over *all*
queries. Which database images are positives is decided by the caller (from
GPS); here they arrive as index arrays.

Ties: equal distances are ordered by database index, lowest first, also
when choosing which of several tied candidates make the top k (faiss
IndexFlatL2's rule; the search used faiss until issue 6). Distances are
float32, computed as |x|^2 + |y|^2 - 2 x.y by one matrix product (as faiss
does for 20+ queries), so nearly equal distances may swap order relative to
an exact float64 computation.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from repro.errors import ConfigError

# First search depth per requested N with panorama deduplication: Tokyo 24/7
# has 12 cut-outs per panorama, so 12 * max(ns) always suffices there.
PANO_START_FACTOR = 12


@dataclass
class RecallResult:
    """Recall@N and per-query details.

    Attributes:
        recall: {N: recall@N in percent, float}, keys as requested.
        num_queries: Q, the denominator (all queries).
        num_without_positive: queries with an empty positive set; they are
            in the denominator and can never be correct.
        ranks: [Q] int64, 1-based position of the first correct entry in the
            ranking (correct at N iff 1 <= rank <= N), -1 when there is none
            within the searched depth (max(ns), clipped to the database).
    """

    recall: dict[int, float]
    num_queries: int
    num_without_positive: int
    ranks: np.ndarray


def _as_descriptors(x, name: str) -> np.ndarray:
    """numpy array or torch tensor [n, D] -> C-contiguous float32 numpy [n, D]."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().float().numpy()  # .float() also handles bfloat16
    try:
        arr = np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: cannot convert to a float32 array ({e})") from None
    if arr.ndim != 2:
        raise ConfigError(f"{name}: expected a 2-D array [n, D], got shape {list(arr.shape)}")
    if arr.shape[1] == 0:
        raise ConfigError(f"{name}: descriptors have dimension 0")
    # row chunks of <= 16M values: np.isfinite makes a bool copy of what it checks
    step = max(1, (1 << 24) // max(1, arr.shape[1]))
    if not all(np.isfinite(arr[s:s + step]).all() for s in range(0, arr.shape[0], step)):
        # the search would silently return garbage neighbours for NaN/inf.
        raise ConfigError(f"{name}: descriptors contain NaN or inf")
    return arr


def _check_ns(ns) -> tuple[int, ...]:
    """Validate the list of N values (positive ints, at least one)."""
    ns = tuple(ns) if not isinstance(ns, numbers.Integral) else (ns,)
    if not ns:
        raise ConfigError("ns: need at least one N")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ConfigError(f"ns: every N must be an integer >= 1, got {n!r}")
    return tuple(int(n) for n in ns)


def _check_positives(positives, num_queries: int, num_db: int | None) -> list[np.ndarray]:
    """List of per-query index arrays -> list of 1-D int64 arrays, range-checked."""
    if len(positives) != num_queries:
        raise ConfigError(f"positives: got {len(positives)} entries for {num_queries} queries")
    out = []
    for i, p in enumerate(positives):
        a = np.asarray(p).reshape(-1)
        if a.size == 0:
            out.append(np.zeros(0, np.int64))
            continue
        if not np.issubdtype(a.dtype, np.integer):
            raise ConfigError(f"positives[{i}]: expected integer database indices, got dtype {a.dtype}")
        if a.min() < 0 or (num_db is not None and a.max() >= num_db):
            bound = f"[0, {num_db})" if num_db is not None else ">= 0"
            raise ConfigError(f"positives[{i}]: index out of range, expected {bound}")
        out.append(a.astype(np.int64))
    return out


def _check_times(query_times, db_times, num_q: int, num_db: int):
    """(query_times [Q], db_times [M]) as numpy arrays, or (None, None)."""
    if (query_times is None) != (db_times is None):
        raise ConfigError("query_times and db_times go together: give both or neither")
    if query_times is None:
        return None, None
    qt, dt = np.asarray(query_times).reshape(-1), np.asarray(db_times).reshape(-1)
    if qt.shape[0] != num_q or dt.shape[0] != num_db:
        raise ConfigError(f"capture times: expected {num_q} query and {num_db} database values, "
                          f"got {qt.shape[0]} and {dt.shape[0]}")
    return qt, dt


def nearest_neighbours(query_desc, db_desc, k: int, batch_size: int = 4096, query_times=None, db_times=None):
    """Exact k nearest database descriptors of each query (brute force, torch).

    One float32 matrix product per block of queries and a top-k; the same
    arithmetic as faiss ``IndexFlatL2`` (|q|^2 + |x|^2 - 2 q.x by BLAS) and the
    same tie rule, but with torch's BLAS, several times faster than
    faiss-cpu 1.15's on this project's 2-core AVX-512 machine (``make bench``:
    results/benchmarks/eval.csv), and without faiss's copy of the database.

    Args:
        query_desc: [Q, D] numpy array or torch tensor (any float dtype).
        db_desc: [M, D] numpy array or torch tensor, M >= 1.
        k: neighbours per query; clipped to M.
        batch_size: at most this many queries per block (fewer when the
            block's [queries, M] float32 distances would exceed 256 MiB).
        query_times, db_times: optional [Q] and [M] capture times (Tokyo
            Time Machine): a database image taken at the query's time is
            left out of its search, as the authors' validation does
            (dbTokyoTimeMachine.m, ``nnSearchPostprocess``: TokyoTM's
            queries are cut from database panoramas, so the query's own
            panorama would be its nearest neighbour).

    Returns:
        (distances [Q, min(k, M)] float32 squared L2, indices [Q, min(k, M)]
        int64), nearest first, ties by lower database index. With capture
        times, slots beyond a query's remaining candidates hold inf and -1.
    """
    q = _as_descriptors(query_desc, "query_desc")
    db = _as_descriptors(db_desc, "db_desc")
    if db.shape[0] == 0:
        raise ConfigError("db_desc: the database is empty")
    if q.shape[1] != db.shape[1]:
        raise ConfigError(f"descriptor dimensions differ: queries {q.shape[1]}, database {db.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    k = min(int(k), db.shape[0])
    q_times, db_times = _check_times(query_times, db_times, q.shape[0], db.shape[0])
    qt, dbt = torch.from_numpy(q), torch.from_numpy(db)  # views, no copies
    db_sq = squared_norms(dbt)  # [M]
    # Distance rows per block: at most ~64M floats (256 MiB) at a time.
    block = max(1, min(int(batch_size), (64 << 20) // db.shape[0]))
    dist = np.empty((q.shape[0], k), np.float32)
    idx = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], block):
        qb = qt[s:s + block]
        # |q|^2 + |x|^2 - 2 q.x in one product (what faiss does too, via BLAS)
        d2 = torch.addmm(db_sq[None], qb, dbt.T, beta=1.0, alpha=-2.0).add_(squared_norms(qb)[:, None])
        d2.clamp_(min=0)
        if q_times is not None:
            same = torch.from_numpy(q_times[s:s + block, None] == db_times[None, :])
            d2.masked_fill_(same, float("inf"))
        dist[s:s + block], idx[s:s + block] = k_smallest(d2, k)
    if q_times is not None:
        idx[np.isinf(dist)] = -1
    return dist, idx


def squared_norms(x: torch.Tensor, chunk_elems: int = 1 << 18) -> torch.Tensor:
    """``[n]`` squared L2 norms of the rows of ``x`` [n, D], in row chunks of at
    most ``chunk_elems`` values: x*x is materialised per chunk only (1 MiB),
    never for the whole database. Why small chunks, written into one output:
    a 64 MiB temporary is a fresh allocation (page faults) each time, which
    is slow; and keeping each chunk's own sum tensor instead kept memory as
    large as ``x`` alive (seen in ``make bench``'s evaluation peak). Each row is reduced on its own, so chunking
    does not change the result, except that with several threads a chunk of
    fewer rows than threads may have a row split between threads (other
    rounding; at 2 threads and D <= 131072 every chunk has >= 2 rows)."""
    rows = max(1, chunk_elems // max(1, x.shape[1]))
    out = x.new_empty(x.shape[0])
    for s in range(0, x.shape[0], rows):
        torch.sum(x[s:s + rows].pow(2), 1, out=out[s:s + rows])
    return out


def k_smallest(d2: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, columns) ``[B, k]`` of the k smallest entries per row of ``d2``
    ``[B, M]`` (torch float), in (value, column) order: exactly the first k of
    a stable sort of each row, as faiss ranks ties (lower index first).
    ``k`` is clipped to M.

    One exception: in a row with fewer than k finite entries, *which* ``inf``
    entries fill it is arbitrary (callers use ``inf`` for padding and drop it).

    torch.topk picks arbitrarily among values equal to the k-th; rows where
    more values equal a finite k-th than were picked are redone with a stable
    sort (rare: exact float ties). Inside the k, ties are ordered by column.
    """
    k = min(int(k), d2.shape[1])
    if k <= 0:
        return np.zeros((d2.shape[0], 0), np.float32), np.zeros((d2.shape[0], 0), np.int64)
    vals, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    # the checks in numpy: on mining's [4, ~1010] rows a torch op's dispatch
    # costs more than its work
    vals, idx, d2 = vals.numpy(), idx.numpy(), d2.numpy()
    kth = vals[:, -1:]
    ambiguous = np.isfinite(kth[:, 0]) & ((d2 == kth).sum(1) > (vals == kth).sum(1))
    for r in np.flatnonzero(ambiguous):
        sel = np.argsort(d2[r], kind="stable")[:k]
        vals[r], idx[r] = d2[r][sel], sel
    order = np.lexsort((idx, vals), axis=-1)
    return np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)


def recall_from_ranking(ranking, positives: Sequence, ns=(1, 5, 10, 20)) -> RecallResult:
    """Recall@N from precomputed rankings.

    Args:
        ranking: [Q, K] integer database indices per query, best first; -1
            marks an empty slot (e.g. fewer distinct panoramas than K).
        positives: Q index arrays (database indices of each query's
            positives; may be empty).
        ns: N values. An N larger than K uses the whole ranking, so pass
            K >= max(ns) unless the ranking is shorter for a reason (a small
            database: then recall@N is clipped to recall@K).

    Returns:
        RecallResult; a warning is issued when some query has no positive.
    """
    ns = _check_ns(ns)
    ranking = np.asarray(ranking)
    if ranking.ndim != 2 or not (np.issubdtype(ranking.dtype, np.integer) or ranking.size == 0):
        raise ConfigError(f"ranking: expected an integer array [Q, K], got shape {list(ranking.shape)} "
                          f"dtype {ranking.dtype}")
    ranking = ranking.astype(np.int64)
    nq = ranking.shape[0]
    if nq == 0:
        raise ConfigError("recall: no queries")
    pos = _check_positives(positives, nq, None)

    # Membership test for all (query, retrieved) pairs at once: encode pairs
    # as q * width + index and look the ranking's codes up among the
    # positives' codes.
    lens = np.array([len(p) for p in pos], np.int64)
    pos_idx = np.concatenate(pos) if lens.sum() else np.zeros(0, np.int64)
    width = int(max(ranking.max(initial=-1), pos_idx.max(initial=-1))) + 1
    pos_codes = np.repeat(np.arange(nq, dtype=np.int64), lens) * width + pos_idx
    rank_codes = np.arange(nq, dtype=np.int64)[:, None] * width + ranking
    hits = np.isin(rank_codes, pos_codes) & (ranking >= 0)  # [Q, K]

    found = hits.any(axis=1)
    ranks = np.where(found, hits.argmax(axis=1) + 1, -1).astype(np.int64)
    recall = {n: 100.0 * float(np.mean(found & (ranks <= n))) for n in ns}

    num_without = int(np.sum(lens == 0))
    if num_without:
        warnings.warn(
            f"{num_without} of {nq} queries have no positive database image; they count as "
            f"failures (every query is in the recall denominator, as in the paper)",
            stacklevel=2,
        )
    return RecallResult(recall=recall, num_queries=nq, num_without_positive=num_without, ranks=ranks)


def _first_per_panorama(idx: np.ndarray, pano: np.ndarray, width: int) -> np.ndarray:
    """Keep the first (closest) entry of each panorama in every row.

    Args:
        idx: [Q, k] database indices, best first; -1 (empty slot) is dropped.
        pano: [M] int64 panorama label of each database image.
        width: columns of the output.

    Returns:
        [Q, width] database indices with panoramas distinct within a row,
        order preserved, padded with -1.
    """
    labels = np.where(idx >= 0, pano[np.maximum(idx, 0)], -1)  # [Q, k]; -1: an empty slot
    # A stable sort by label keeps equal labels in rank order, so the first
    # of each run in sorted order is the panorama's best-ranked cut-out.
    order = np.argsort(labels, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, order, 1)
    first_sorted = np.ones_like(sorted_labels, dtype=bool)
    first_sorted[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    keep = np.empty_like(first_sorted)
    np.put_along_axis(keep, order, first_sorted, 1)
    keep &= idx >= 0
    # Move kept entries to the front, still in rank order (stable sort of ~keep).
    compact = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(idx, compact, 1)
    out[np.arange(idx.shape[1])[None, :] >= keep.sum(axis=1)[:, None]] = -1
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=-1)
    return out[:, :width]


def _dedup_ranking(q, db, pano: np.ndarray, n_max: int, batch_size: int, query_times=None,
                   db_times=None) -> np.ndarray:
    """[Q, min(n_max, #panoramas)] ranking with one cut-out per panorama.

    Searches k = PANO_START_FACTOR * n_max deep and doubles k for the queries
    that found fewer distinct panoramas than needed. k never needs to exceed
    n_max * (largest number of images of one panorama): any that many
    images span at least n_max panoramas (pigeonhole), so the loop ends with
    the exact answer.
    """
    counts = np.bincount(pano)
    width = min(n_max, len(counts))
    k_enough = min(db.shape[0], n_max * int(counts.max()))
    k = min(k_enough, PANO_START_FACTOR * n_max)
    out = np.full((q.shape[0], width), -1, np.int64)
    todo = np.arange(q.shape[0])
    while todo.size:
        times = {} if query_times is None else dict(query_times=np.asarray(query_times)[todo], db_times=db_times)
        _, idx = nearest_neighbours(q[todo], db, k, batch_size, **times)
        ded = _first_per_panorama(idx, pano, width)
        done = (ded[:, -1] >= 0) | (k >= k_enough)
        out[todo[done]] = ded[done]
        todo = todo[~done]
        k = min(2 * k, k_enough)
    return out


def recall_at_n(
    query_desc,
    db_desc,
    positives: Sequence,
    ns=(1, 5, 10, 20),
    panorama_ids=None,
    return_details: bool = False,
    batch_size: int = 4096,
    query_times=None,
    db_times=None,
):
    """Recall@N (percent) of exact L2 retrieval.

    Args:
        query_desc: [Q, D] query descriptors (numpy or torch, any float dtype;
            searched as float32).
        db_desc: [M, D] database descriptors.
        positives: Q index arrays of database positives per query.
        ns: N values. N > M is clipped to M (recall@N = recall@M), with
            panorama_ids to the number of panoramas; keys stay as requested.
        panorama_ids: optional [M] panorama label of each database image
            (Tokyo 24/7: 12 cut-outs per panorama). The ranking then keeps
            only the closest cut-out of each panorama, so one panorama fills
            at most one of the top N; a query is correct when that kept
            cut-out is a positive (all cut-outs of a panorama share its GPS
            position, so they are positive together).
        return_details: return a RecallResult instead of the dict.
        batch_size: at most this many queries per search block.
        query_times, db_times: optional capture times (Tokyo Time Machine);
            database images of the query's own time are left out of its
            ranking (see :func:`nearest_neighbours`). They can still be
            positives, as in the authors' code, but are never retrieved.

    Returns:
        {N: recall in percent} or, with return_details, a RecallResult.
        Queries without any positive stay in the denominator; a warning
        reports how many there are.
    """
    ns = _check_ns(ns)
    q = _as_descriptors(query_desc, "query_desc")
    db = _as_descriptors(db_desc, "db_desc")
    if db.shape[0] == 0:
        raise ConfigError("db_desc: the database is empty")
    if q.shape[0] == 0:
        raise ConfigError("query_desc: no queries")
    if q.shape[1] != db.shape[1]:
        raise ConfigError(f"descriptor dimensions differ: queries {q.shape[1]}, database {db.shape[1]}")
    pos = _check_positives(positives, q.shape[0], db.shape[0])
    n_max = max(ns)

    times = dict(query_times=query_times, db_times=db_times)
    if panorama_ids is None:
        _, ranking = nearest_neighbours(q, db, n_max, batch_size, **times)
    else:
        labels = np.asarray(panorama_ids)
        if labels.ndim != 1 or labels.shape[0] != db.shape[0]:
            raise ConfigError(f"panorama_ids: expected one label per database image ({db.shape[0]}), "
                              f"got shape {list(labels.shape)}")
        # Any hashable labels (ints, strings) -> 0..P-1.
        _, pano = np.unique(labels, return_inverse=True)
        ranking = _dedup_ranking(q, db, pano.reshape(-1).astype(np.int64), n_max, batch_size, **times)

    result = recall_from_ranking(ranking, pos, ns)
    return result if return_details else result.recall


def recall_by_group(ranks, groups, ns=(1, 5, 10, 20)) -> dict:
    """Recall@N (percent) within each group of queries, from per-query ranks.

    Args:
        ranks: [Q] 1-based rank of the first correct database entry, -1 for
            none within the searched depth (``RecallResult.ranks``).
        groups: [Q] group label per query (e.g. the capture condition).
        ns: N values; each must be within the depth the ranks were computed to.
    Returns:
        {group: {N: recall in percent}}, groups in sorted order.
    """
    ranks = np.asarray(ranks)
    groups = np.asarray(groups)
    if ranks.shape != groups.shape or ranks.ndim != 1:
        raise ConfigError(f"ranks and groups must be [Q] arrays of one length, got {ranks.shape} and {groups.shape}")
    ns = _check_ns(ns)
    out = {}
    for g in sorted(set(groups.tolist())):
        r = ranks[groups == g]
        out[g] = {n: 100.0 * float(np.mean((r >= 1) & (r <= n))) for n in ns}
    return out
