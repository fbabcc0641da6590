"""Hard-negative mining cost per 1000 training queries, and the cache refresh.

Implementations, all on the same cached descriptors and the same random
negatives (same seed), checked to mine identical tuples (assert):

* ``table``: the project's miner as the training loop runs it: the query x
  database distance table (:meth:`HardNegativeMiner.plan`, one matrix
  product for the queries mined before the next refresh), then those
  queries' batches mined in one pass (:meth:`HardNegativeMiner.mine_batches`);
  timed together.
* ``product``: only the table's matrix product, ``[n, D] x [D, N]`` in
  float32 (no norms, no mining): the floor of the table approach.
* ``gather``: the project's miner without a table (per batch of 4 queries,
  one gather of the candidates' rows and one matrix product).
* ``naive_sklearn``: what the most used port does (Nanne/pytorch-NetVlad,
  ``QueryDatasetFromStruct.__getitem__``): per query, fit scikit-learn's
  ``NearestNeighbors(n_jobs=-1)`` on its potential positives and search the
  nearest, then fit it on its ~1010 candidate negatives and search the 100
  nearest (``nNeg * 10``). (The port compares unsquared distances with the
  margin; here they are squared, so every implementation mines the same
  tuples and only speed is compared.)
* ``naive``: the same per-query procedure with a faster index, faiss
  ``IndexFlatL2`` (the port's own TODO says "replace with faiss?"). The
  stricter baseline: every ratio in the CSV is to this one.

Synthetic training split: N database and Q query descriptors (random unit
vectors, float32), ~10 potential positives and ~30 non-negatives per query,
1000 random negatives + 10 remembered ones per query, batches of 4. Seconds
are per 1000 queries. ``table`` is timed over one refresh interval, as
training uses it: min(Q, 1000) queries (the authors' ``compFeatsFrequency``),
one table and their mining. The per-query implementations cost the same for
every query, so they are timed on the first ``n_mined`` of those queries and
scaled (the naive ones take minutes per 1000 queries at 32768-D); on those,
every implementation, and the table over the whole interval, mine identical
tuples (assert).

Cache refresh: measured separately in bench_extraction (it is feature
extraction of every training image); here its storage: MiB of the cache in
float32 and float16 for the case's N + Q rows and for Pittsburgh's.
"""
from __future__ import annotations

import faiss
import numpy as np
import torch

from benchmarks.common import interleaved, peak_mib, rows_for, timed
from repro.data.ground_truth import sample_negatives
from repro.train.cache import DescriptorCache, cache_bytes
from repro.train.mining import HardNegativeMiner, MinedTuple
from repro.train.tuples import TrainingTuples

FULL_CASES = [
    # the project's default synthetic run: AlexNet conv5 (256) x K=16
    dict(name="synthetic_default", N=1116, Q=400, dim=4096, n_mined=400),
    # Pitts30k-train's database with VGG-16 x K=64 descriptors (32768-D) and
    # with 4096-D ones (e.g. K=16 on AlexNet, or PCA)
    dict(name="pitts30k_32768d", N=10000, Q=1000, dim=32768, n_mined=100),
    dict(name="pitts30k_4096d", N=10000, Q=1000, dim=4096, n_mined=200),
]
QUICK_CASES = [dict(name="tiny", N=300, Q=40, dim=64, n_mined=40)]
BATCH = 4


def make_split(N, Q, dim, seed=0):
    """(TrainingTuples, filled DescriptorCache) of a synthetic split."""
    rng = np.random.default_rng(seed)
    pos = [np.sort(rng.choice(N, size=10, replace=False)).astype(np.int64) for _ in range(Q)]
    non_neg = [np.union1d(p, rng.choice(N, size=20, replace=False)).astype(np.int64) for p in pos]
    tuples = TrainingTuples(query_ids=np.arange(Q, dtype=np.int64), potential_positives=pos, non_negatives=non_neg,
                            num_db=N, pos_radius=10.0, neg_radius=25.0, num_without_positive=0,
                            num_without_negative=0)
    cache = DescriptorCache(N, Q, dim, dtype="float32")
    for s in range(0, N, 2048):  # unit vectors, written in chunks (bounded temporaries)
        x = rng.standard_normal((min(2048, N - s), dim), dtype=np.float32)
        cache.db[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = rng.standard_normal((Q, dim), dtype=np.float32)
    cache.q[:] = x / np.linalg.norm(x, axis=1, keepdims=True)
    cache.version = 1  # as after a refresh
    return tuples, cache


def _faiss_knn(points: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh exact index over ``points`` [n, D]: (squared distances [1, k], indices [1, k])."""
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    return index.search(query, k)


def _sklearn_knn(points: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """As Nanne/pytorch-NetVlad: ``NearestNeighbors(n_jobs=-1).fit(points).kneighbors(query, k)``,
    distances squared here to match the project's criterion."""
    from sklearn.neighbors import NearestNeighbors  # benchmark-only dependency (dev extra)

    dist, idx = NearestNeighbors(n_jobs=-1).fit(points).kneighbors(query, k)
    return dist ** 2, idx


class NaiveMiner:
    """Per query: a fresh nearest-neighbour index over its positives, then one over its candidates."""

    def __init__(self, tuples: TrainingTuples, num_random=1000, num_cached=10, num_hard=10, margin=0.1,
                 knn=_faiss_knn):
        self.tuples, self.num_random, self.num_cached, self.num_hard, self.margin = \
            tuples, num_random, num_cached, num_hard, margin
        self.knn = knn
        self.neg_cache: dict[int, np.ndarray] = {}

    def mine(self, cache: DescriptorCache, query_ids, rng) -> list[MinedTuple]:
        t, out = self.tuples, []
        # sample every query's negatives first, as the project's miner does, so both draw the same
        cands = []
        for q in query_ids:
            negs = sample_negatives(t.non_negatives[q], t.num_db, self.num_random, rng)
            cands.append(np.union1d(self.neg_cache.get(q, np.zeros(0, np.int64)), negs))
        for q, cand in zip(query_ids, cands):
            qf = np.asarray(cache.q[q:q + 1], dtype=np.float32)
            pos = t.potential_positives[q]
            d_pos, i_pos = self.knn(np.asarray(cache.db[pos], dtype=np.float32), qf, 1)
            d_neg, i_neg = self.knn(np.asarray(cache.db[cand], dtype=np.float32), qf,
                                    min(self.num_hard * 10, len(cand)))
            ranked = cand[i_neg[0]]
            self.neg_cache[q] = ranked[:self.num_cached].copy()
            hard = ranked[d_neg[0] < d_pos[0, 0] + self.margin][:self.num_hard]
            if len(hard):
                out.append(MinedTuple(q, pos[i_pos[0]], hard))
        return out


def mine_all(impl: str, tuples, cache, query_ids, seed=1):
    """Mine ``query_ids`` in batches of 4 from a fresh miner; returns the tuples."""
    rng = np.random.default_rng(seed)
    cache._table = None  # no table left over from another run
    if impl in ("naive", "naive_sklearn"):
        miner = NaiveMiner(tuples, knn=_sklearn_knn if impl == "naive_sklearn" else _faiss_knn)
        return [t for s in range(0, len(query_ids), BATCH) for t in miner.mine(cache, query_ids[s:s + BATCH], rng)]
    miner = HardNegativeMiner(tuples)  # "table" plans one below; "gather" mines without
    batches = [query_ids[s:s + BATCH] for s in range(0, len(query_ids), BATCH)]
    if impl == "table":  # as the training loop: one table, then all batches in one pass
        assert miner.plan(cache, query_ids)
        return [t for r in miner.mine_batches(cache, batches, rng) for t in r.tuples]
    return [t for b in batches for t in miner.mine(cache, b, rng).tuples]


def refresh_interval(Q: int, n_mined: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries of one refresh interval, the first ``n_mined`` of them): a fixed random order."""
    interval = np.random.default_rng(2).permutation(Q)[:min(Q, 1000)]
    return interval, interval[:n_mined]


def table_product(cache, query_ids) -> None:
    """The floor of ``table``: its ``[n, D] x [D, N]`` product alone."""
    q = cache.query_rows(np.unique(query_ids))
    torch.mm(q, torch.from_numpy(np.asarray(cache.db, dtype=np.float32)).T)


def check_same(tuples, cache, query_ids, interval=None) -> None:
    """Every implementation mines the naive one's tuples for ``query_ids``; with
    ``interval`` (whose prefix is ``query_ids``), so does a table over all of it."""
    ref = mine_all("naive", tuples, cache, query_ids)
    got = {impl: mine_all(impl, tuples, cache, query_ids) for impl in ("table", "gather", "naive_sklearn")}
    if interval is not None:
        first = set(query_ids.tolist())
        got["table over the interval"] = [t for t in mine_all("table", tuples, cache, interval) if t.query in first]
    for impl, tuples_ in got.items():
        assert len(tuples_) == len(ref), f"mining: {impl} kept {len(tuples_)} tuples, naive {len(ref)}"
        for a, b in zip(tuples_, ref):
            assert a.query == b.query and np.array_equal(a.positives, b.positives) \
                and np.array_equal(a.negatives, b.negatives), f"mining: {impl} differs from naive at query {a.query}"


def memory_case(case: str, impl: str, N, Q, dim, n_mined, name=None):
    tuples, cache = make_split(N, Q, dim)
    interval, ids = refresh_interval(Q, n_mined)
    return lambda: mine_all(impl, tuples, cache, interval if impl == "table" else ids)


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    cases = QUICK_CASES if quick else FULL_CASES
    repeats = repeats or 3
    rows = []
    for c in cases:
        tuples, cache = make_split(c["N"], c["Q"], c["dim"])
        interval, ids = refresh_interval(c["Q"], c["n_mined"])
        check_same(tuples, cache, ids, interval)
        impls = ["table", "gather", "naive", "naive_sklearn"]
        queries = {i: interval if i in ("table", "product") else ids for i in impls + ["product"]}
        fns = {i: (lambda i=i: timed(mine_all, i, tuples, cache, queries[i])) for i in impls}
        fns["product"] = lambda: timed(table_product, cache, interval)
        times = interleaved(fns, repeats, warmup=0)
        times = {i: [t * 1000.0 / len(queries[i]) for t in ts] for i, ts in times.items()}  # s per 1000 queries
        peaks = None
        if memory and not quick:  # quick: bench_netvlad alone exercises the subprocess path
            args = {k: c[k] for k in ("N", "Q", "dim", "n_mined")}
            peaks = {i: peak_mib("benchmarks.bench_mining", c["name"], i, args) for i in impls}
        shape = dict(N=c["N"], Q=c["Q"], dim=c["dim"], n_mined=c["n_mined"], n_table=len(interval),
                     unit="s per 1000 queries",
                     cache_mib_f32=cache_bytes(c["N"] + c["Q"], c["dim"], "float32") / 2**20,
                     cache_mib_f16=cache_bytes(c["N"] + c["Q"], c["dim"], "float16") / 2**20)
        rows += rows_for("mining", c["name"], times, "naive", shape, peaks)
        med = {i: sorted(t)[len(t) // 2] for i, t in times.items()}
        print(f"mining {c['name']}: s/1000 queries " + ", ".join(f"{i} {v:.3f}" for i, v in med.items())
              + f"; naive/table {med['naive'] / med['table']:.1f}x, naive/gather {med['naive'] / med['gather']:.1f}x"
              + f", naive_sklearn/table {med['naive_sklearn'] / med['table']:.1f}x"
              + f", table/product {med['table'] / med['product']:.2f}x",
              flush=True)
        del cache
    return rows


def cache_sizes() -> list[dict]:
    """Descriptor-cache storage of real training splits (rows = database + queries), MiB."""
    splits = {"pitts30k_train": (10000, 7416), "pitts250k_train": (91464, 7824), "synthetic_default": (1116, 400)}
    dims = {"vgg16_K64": 32768, "alexnet_K64": 16384, "alexnet_K16": 4096}
    rows = []
    for split, (n, q) in splits.items():
        for model, dim in dims.items():
            rows.append(dict(benchmark="cache_memory", case=f"{split}_{model}", impl="cache", repeat="",
                             seconds="", peak_mib="", ratio="", ratio_to="", N=n, Q=q, dim=dim,
                             cache_mib_f32=cache_bytes(n + q, dim, "float32") / 2**20,
                             cache_mib_f16=cache_bytes(n + q, dim, "float16") / 2**20))
    return rows
