"""Evaluation: recall@N by exact search, project (faiss) against numpy brute force.

* ``project``: :func:`repro.metrics.recall_at_n` (blocks of queries, one
  float32 torch matrix product each for |q|^2 + |x|^2 - 2 q.x, top-N by
  ``torch.topk``, ties by index; distances for at most 256 MiB at a time).
* ``faiss``: faiss ``IndexFlatL2`` (float32, exact; what the project used
  before issue 6 and what Nanne/pytorch-NetVlad uses), same recall code.
* ``numpy``: the straightforward brute force: the whole [Q, M] matrix of
  squared distances |q|^2 + |x|^2 - 2 q.x in one float32 product, a full
  argsort of each row, top N, then recall. Checked to give the same recall
  (assert).
* ``torch_f16``: the database stored in float16 (half the memory of the
  largest input) and searched in blocks of 1024 queries, each block's
  distances in float32 (database rows converted block by block),
  top-N by ``torch.topk``. Tells whether float16 storage pays on this CPU.

Synthetic descriptors: random unit vectors with each query a noisy copy of a
random database vector (so recall is neither 0 nor 100); positives: the
source image and its 4 index neighbours. Shape of Pitts30k-test: 10 000
database x 6 816 queries (the issue's "7k") at 32768-D (VGG-16 x K = 64).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from benchmarks.common import interleaved, peak_mib, rows_for, timed
import faiss

from repro.metrics import recall_at_n, recall_from_ranking

FULL_CASES = [dict(name="pitts30k_test_32768d", M=10000, Q=6816, dim=32768)]
QUICK_CASES = [dict(name="tiny", M=500, Q=100, dim=64)]
NS = (1, 5, 10, 20)


def make_data(M, Q, dim, seed=0, noise=1.0):
    """(db [M, dim], queries [Q, dim], positives) float32, unit rows.

    The query noise is scaled so that its cosine with its source is about the
    largest cosine among M random unit vectors, sqrt(2 ln M / dim), times
    1/``noise``: recall@1 lands well inside (0, 100).
    """
    rng = np.random.default_rng(seed)
    noise = noise * np.sqrt(dim / (2 * np.log(M)))
    db = np.empty((M, dim), np.float32)
    for s in range(0, M, 2048):
        x = rng.standard_normal((min(2048, M - s), dim), dtype=np.float32)
        db[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.integers(0, M, Q)
    q = np.empty((Q, dim), np.float32)
    for s in range(0, Q, 2048):
        x = db[src[s:s + 2048]] + np.float32(noise / np.sqrt(dim)) * rng.standard_normal(
            (len(src[s:s + 2048]), dim), dtype=np.float32)
        q[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    positives = [np.arange(max(0, i - 2), min(M, i + 3)) for i in src]
    return db, q, positives


def faiss_recall(q, db, positives, ns=NS):
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    _, ranking = index.search(q, max(ns))
    return recall_from_ranking(ranking, positives, ns).recall


def numpy_recall(q, db, positives, ns=NS):
    d2 = (q * q).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2.0 * (q @ db.T)  # [Q, M]
    ranking = np.argsort(d2, axis=1, kind="stable")[:, :max(ns)]
    return recall_from_ranking(ranking, positives, ns).recall


def torch_f16_recall(q, db16, positives, ns=NS, block=1024):
    qt = torch.from_numpy(q)
    dbt = torch.from_numpy(db16)
    n = min(max(ns), dbt.shape[0])
    db_sq = torch.cat([dbt[s:s + 1024].float().pow(2).sum(1) for s in range(0, dbt.shape[0], 1024)])
    ranking = np.empty((q.shape[0], n), np.int64)
    for s in range(0, q.shape[0], block):
        qb = qt[s:s + block]
        d2 = torch.empty(len(qb), dbt.shape[0])
        for t in range(0, dbt.shape[0], 1024):  # 1024 rows: a 128 MiB float32 copy at 32768-D
            rows = dbt[t:t + 1024].float()
            torch.addmm(db_sq[None, t:t + 1024], qb, rows.T, beta=1.0, alpha=-2.0, out=d2[:, t:t + 1024])
        ranking[s:s + block] = torch.topk(d2, n, dim=1, largest=False, sorted=True).indices.numpy()
    return recall_from_ranking(ranking, positives, ns).recall


def _impls(db, q, positives, db16):
    return {
        "project": lambda: recall_at_n(q, db, positives, NS),
        "faiss": lambda: faiss_recall(q, db, positives),
        "numpy": lambda: numpy_recall(q, db, positives),
        "torch_f16": lambda: torch_f16_recall(q, db16, positives),
    }


def memory_case(case: str, impl: str, M, Q, dim):
    db, q, positives = make_data(M, Q, dim)
    db16 = db.astype(np.float16)
    if impl == "torch_f16":
        del db  # this implementation keeps only the float16 database
        db = None
    f = _impls(db, q, positives, db16)[impl]
    return lambda: _quiet(f)


def _quiet(f):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f()


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    cases = QUICK_CASES if quick else FULL_CASES
    repeats = repeats or (3 if quick else 2)
    rows = []
    for c in cases:
        db, q, positives = make_data(c["M"], c["Q"], c["dim"])
        db16 = db.astype(np.float16)
        impls = _impls(db, q, positives, db16)
        results = {}

        def call(name, f):
            t = timed(lambda: results.__setitem__(name, _quiet(f)))
            return t

        # no warm-up round: one search here is seconds of BLAS, where start-up costs are noise
        times = interleaved({name: (lambda n=name, f=f: call(n, f)) for name, f in impls.items()}, repeats, warmup=0)
        for ref in ("faiss", "numpy"):
            assert results["project"] == results[ref], f"recall differs: project {results['project']} {ref} {results[ref]}"
        # float16 storage rounds descriptors: it may move a near-tie, so only "close" is required
        assert max(abs(results["project"][n] - results["torch_f16"][n]) for n in NS) <= 0.5, results
        del db, db16, q
        peaks = None
        if memory and not quick:  # quick: bench_netvlad alone exercises the subprocess path
            args = {k: c[k] for k in ("M", "Q", "dim")}
            # faiss's peak is left out of the full run (one more 1.5-minute search); it copies the database
            peaks = {i: peak_mib("benchmarks.bench_eval", c["name"], i, args) for i in impls if i != "faiss"}
        shape = dict(M=c["M"], Q=c["Q"], dim=c["dim"], db_mib_f32=c["M"] * c["dim"] * 4 / 2**20,
                     **{f"recall@{n}": results["project"][n] for n in NS})
        rows += rows_for("eval", c["name"], times, "project", shape, peaks)
        med = {i: sorted(t)[len(t) // 2] for i, t in times.items()}
        print(f"eval {c['name']}: " + ", ".join(f"{i} {v:.2f} s" for i, v in med.items())
              + (", peak MiB " + ", ".join(f"{i} {p:.0f}" for i, p in peaks.items()) if peaks else "")
              + f"; recall {results['project']}", flush=True)
    return rows
