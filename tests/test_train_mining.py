"""Hard-negative mining against a brute-force reference, and cache refreshes."""

import numpy as np
import pytest
import torch

from repro.data.datasets import load_split
from repro.data.ground_truth import sample_negatives
from repro.evaluate import extract_descriptors
from repro.model import build_model
from repro.train.cache import DescriptorCache
from repro.train.loop import TupleImages, train_epoch
from repro.train.mining import HardNegativeMiner
from repro.train.trainer import _optimizer
from repro.train.tuples import TrainingTuples, build_tuples
from train_fakes import tiny_config

MARGIN = 0.5

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_built(seed=0):
    """60 database rows in 8-D and 4 queries built to have many, a few and no violators."""
    rng = np.random.default_rng(seed)
    db = rng.normal(0, 3, (60, 8))
    q = rng.normal(0, 3, (4, 8))
    pos = [np.array([0, 1]), np.array([2]), np.array([3, 4]), np.array([5, 6, 7])]
    db[2] = q[1] + rng.normal(0, 0.01, 8)          # q1: its positive is almost identical, negatives far
    db[3] = q[2] + rng.normal(0, 1.0, 8)           # q2: positive at d^2 ~ 8 ...
    db[4] = q[2] + rng.normal(0, 3.0, 8)
    db[20:24] = q[2] + rng.normal(0, 1.0, (4, 8))  # ... and four negatives about as close: a few violators
    db[5:8] = q[3] + rng.normal(0, 0.5, (3, 8))    # q3: close positives, far negatives
    db[30] = q[3] + rng.normal(0, 0.1, 8)          # ... but one negative is closer than them
    # q0: positives are random far points, so about half of all negatives violate (> 10)
    non_neg = [np.unique(np.r_[p, np.arange(8)]) for p in pos]
    tuples = TrainingTuples(query_ids=np.arange(4), potential_positives=pos, non_negatives=non_neg, num_db=60,
                            pos_radius=10.0, neg_radius=25.0, num_without_positive=0, num_without_negative=0)
    cache = DescriptorCache(60, 4, 8, dtype="float32")
    cache.db[:], cache.q[:] = db, q
    return tuples, cache


def reference_mine(tuples, cache, query_ids, rng, ref_cache, num_random, num_cached=10, num_hard=10,
                   num_positives=1, margin=MARGIN, exclude_very_hard=False):
    """Plain-Python, float64 restatement of the authors' mining."""
    db, q = cache.db.astype(np.float64), cache.q.astype(np.float64)
    out = {}
    for qi in query_ids:
        sampled = sample_negatives(tuples.non_negatives[qi], tuples.num_db, num_random, rng)
        cands = sorted(set(sampled.tolist()) | set(ref_cache.get(qi, [])))
        d = {i: float(((db[i] - q[qi]) ** 2).sum()) for i in cands}
        dp = sorted((float(((db[i] - q[qi]) ** 2).sum()), i) for i in tuples.potential_positives[qi])
        ranked = sorted(cands, key=lambda i: (d[i], i))
        ref_cache[qi] = ranked[:num_cached]
        viol = [i for i in ranked if d[i] < dp[0][0] + margin and not (exclude_very_hard and d[i] < dp[0][0])]
        viol = viol[:num_hard]
        out[qi] = ([i for _, i in dp[:num_positives]], viol)
    return out


def as_dict(result):
    got = {t.query: (t.positives.tolist(), t.negatives.tolist()) for t in result.tuples}
    got.update({qi: None for qi in result.skipped})
    return got


def test_mining_picks_the_true_hardest_violators_all_candidates():
    tuples, cache = hand_built()
    miner = HardNegativeMiner(tuples, num_random_negatives=1000, margin=MARGIN)  # >= all 52 negatives
    result = miner.mine(cache, [0, 1, 2, 3], np.random.default_rng(0))
    ref = reference_mine(tuples, cache, [0, 1, 2, 3], np.random.default_rng(0), {}, 1000)
    got = as_dict(result)
    assert result.skipped == [1] and got[1] is None and ref[1][1] == []
    for qi in (0, 2, 3):
        assert got[qi] == ref[qi], qi
    assert len(ref[0][1]) == 10 and 1 <= len(ref[2][1]) < 10  # the cases the set was built for
    assert result.num_violating == sum(len(ref[qi][1]) for qi in (0, 2, 3))


def test_mining_with_sampled_negatives_and_the_previous_rounds_cache():
    tuples, cache = hand_built(seed=1)
    miner = HardNegativeMiner(tuples, num_random_negatives=8, num_cached_negatives=10, margin=MARGIN)
    ref_cache = {}
    for round_seed in (1, 2, 3):  # the cache of round r feeds round r + 1
        result = miner.mine(cache, [0, 2, 3, 1], np.random.default_rng(round_seed))
        ref = reference_mine(tuples, cache, [0, 2, 3, 1], np.random.default_rng(round_seed), ref_cache, 8)
        got = as_dict(result)
        for qi in (0, 1, 2, 3):
            assert got[qi] == (ref[qi] if ref[qi][1] else None), (round_seed, qi)
        for qi in (0, 1, 2, 3):
            assert miner.neg_cache[qi].tolist() == ref_cache[qi]
    # with only 8 random negatives a round, the remembered ones must matter
    assert len(ref_cache[0]) == 10


def test_exclude_very_hard_keeps_only_negatives_beyond_the_positive():
    tuples, cache = hand_built()
    miner = HardNegativeMiner(tuples, num_random_negatives=1000, margin=MARGIN, exclude_very_hard=True)
    result = miner.mine(cache, [0, 1, 2, 3], np.random.default_rng(0))
    ref = reference_mine(tuples, cache, [0, 1, 2, 3], np.random.default_rng(0), {}, 1000, exclude_very_hard=True)
    plain = reference_mine(tuples, cache, [0, 1, 2, 3], np.random.default_rng(0), {}, 1000)
    got = as_dict(result)
    assert got == {qi: (r if r[1] else None) for qi, r in ref.items()}
    assert got[3] is None and plain[3][1] == [30]  # q3's only violator is closer than its positive
    assert ref[0][1] != plain[0][1]


def test_more_than_one_positive_are_the_closest_potential_positives():
    tuples, cache = hand_built()
    miner = HardNegativeMiner(tuples, num_random_negatives=1000, num_positives=2, margin=MARGIN)
    got = as_dict(miner.mine(cache, [3], np.random.default_rng(0)))
    ref = reference_mine(tuples, cache, [3], np.random.default_rng(0), {}, 1000, num_positives=2)
    assert got[3] == ref[3] and len(got[3][0]) == 2


@pytest.mark.parametrize("exclude_very_hard", [False, True])
def test_exact_distance_ties_are_broken_by_database_index(exclude_very_hard):
    # Small-integer descriptors: every squared distance is an exact integer
    # (in float32 and in the float64 reference), so ties are everywhere,
    # across the boundaries of the 10 remembered and the 10 kept negatives.
    rng = np.random.default_rng(7)
    tuples, cache = hand_built(seed=3)
    cache.db[:] = rng.integers(0, 3, (60, 8))
    cache.q[:] = rng.integers(0, 3, (4, 8))
    miner = HardNegativeMiner(tuples, num_random_negatives=20, margin=MARGIN, exclude_very_hard=exclude_very_hard)
    ref_cache, ties = {}, 0
    for round_seed in (4, 5, 6):
        got = as_dict(miner.mine(cache, [0, 1, 2, 3], np.random.default_rng(round_seed)))
        ref = reference_mine(tuples, cache, [0, 1, 2, 3], np.random.default_rng(round_seed), ref_cache, 20,
                             exclude_very_hard=exclude_very_hard)
        assert got == {qi: (r if r[1] else None) for qi, r in ref.items()}, round_seed
        for qi in range(4):
            assert miner.neg_cache[qi].tolist() == ref_cache[qi]
            d = ((cache.db[ref_cache[qi]] - cache.q[qi]) ** 2).sum(1)
            ties += int((d[1:] == d[:-1]).sum())
    assert ties > 10  # the data does tie


def test_cache_storage_rules_and_float16_distances(tmp_path):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(300, 64)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)  # unit descriptors, like NetVLAD's
    small = DescriptorCache(300, 2, 64, dtype="auto", fp16_gb=1.0)
    half = DescriptorCache(300, 2, 64, dtype="auto", fp16_gb=1e-9)  # "large": float16
    mapped = DescriptorCache(300, 2, 64, dtype="auto", fp16_gb=1e-9, memmap_gb=1e-9, memmap_dir=tmp_path)
    assert (small.dtype, half.dtype, mapped.dtype) == ("float32", "float16", "float16")
    assert not small.memmap and not half.memmap and mapped.memmap
    assert (tmp_path / "cache_db.npy").is_file() and isinstance(mapped.db, np.memmap)
    assert half.nbytes == 302 * 64 * 2
    idx = torch.from_numpy(rng.permutation(300)[:200].reshape(2, 100))
    d2 = {}
    for c in (small, half, mapped):
        c.db[:], c.q[:] = db, db[:2]
        d2[c.dtype, c.memmap] = c.squared_distances(c.query_rows([0, 1]), idx)
    exact = ((db[idx.numpy()] - db[:2, None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2["float32", False], exact, atol=1e-5)
    np.testing.assert_allclose(d2["float16", False], exact, atol=2e-3)
    np.testing.assert_array_equal(d2["float16", True], d2["float16", False])
    padded = small.squared_distances(small.query_rows([0]), torch.tensor([[5, -1]]))
    assert torch.isinf(padded[0, 1]) and torch.isfinite(padded[0, 0])


def tiny_model():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return build_model("alexnet", "netvlad", weights=None, num_clusters=4)


def test_cache_refresh_is_what_the_next_mining_round_sees(street):
    split = load_split("synthetic", street, "train")
    tuples = build_tuples(split)
    model = tiny_model()
    cache = DescriptorCache(split.num_db, split.num_q, model.pooled_dim)
    cache.refresh(model, split.db_paths, split.q_paths, (64, 64))
    before = np.array(cache.db)
    np.testing.assert_allclose(before, extract_descriptors(model, split.db_paths, (64, 64)), atol=1e-6)
    miner = HardNegativeMiner(tuples, num_random_negatives=1000, margin=0.1)
    first = as_dict(miner.mine(cache, tuples.query_ids, np.random.default_rng(0)))

    with torch.no_grad():  # a different network
        for p in model.base[-1].parameters():
            p.add_(torch.randn_like(p) * p.std())
    cache.refresh(model, split.db_paths, split.q_paths, (64, 64))
    assert cache.version == 2
    assert not np.allclose(before, cache.db, atol=1e-3)
    np.testing.assert_allclose(cache.db, extract_descriptors(model, split.db_paths, (64, 64)), atol=1e-6)
    ref_cache = {q: v.tolist() for q, v in miner.neg_cache.items()}
    second = as_dict(miner.mine(cache, tuples.query_ids, np.random.default_rng(1)))
    ref = reference_mine(tuples, cache, tuples.query_ids, np.random.default_rng(1), ref_cache, 1000, margin=0.1)
    assert second == {q: (r if r[1] else None) for q, r in ref.items()}
    assert second != first


@pytest.mark.parametrize("refresh_batches, fresh", [(1, True), (100, False)])
def test_mid_epoch_refresh_reaches_the_miner(street, refresh_batches, fresh):
    """Inside the training loop, the batches after a refresh are mined from the
    descriptors of the network of that moment: refreshed every batch, each
    batch's; otherwise all three from the epoch start's (stale by then)."""
    split = load_split("synthetic", street, "train")
    tuples = build_tuples(split)
    cfg = tiny_config(street, street, lr=1e-3)
    model = tiny_model()
    optimizer, _ = _optimizer(cfg, model)
    cache = DescriptorCache(split.num_db, split.num_q, model.pooled_dim)
    cache.refresh(model, split.db_paths, split.q_paths, cfg.image_size, cfg.eval_batch_size)
    miner = HardNegativeMiner(tuples, cfg.num_random_negatives, margin=cfg.margin)
    seen = []
    mine_batches = miner.mine_batches

    def spy(cache_, batches, rng):
        current = extract_descriptors(model, split.db_paths, cfg.image_size, cfg.eval_batch_size)
        seen.append((cache_.version, len(batches), float(np.abs(current - cache_.db).max())))
        return mine_batches(cache_, batches, rng)

    miner.mine_batches = spy
    rng = np.random.default_rng(0)
    stats = train_epoch(model, optimizer, miner, cache, split, TupleImages(split, cfg.image_size),
                        rng.permutation(tuples.query_ids), 1, rng, cfg, "cpu", refresh_batches)
    assert stats["updates"] >= 1 and stats["num_batches"] == 3
    assert all(diff < 1e-5 for _, _, diff in seen)  # each pass sees the network of its moment
    if fresh:
        assert [(v, n) for v, n, _ in seen] == [(1, 1), (2, 1), (3, 1)]
    else:
        assert [(v, n) for v, n, _ in seen] == [(1, 3)]
        current = extract_descriptors(model, split.db_paths, cfg.image_size, cfg.eval_batch_size)
        assert np.abs(current - cache.db).max() > 1e-4  # the network moved on; batches 2 and 3 used stale ones


def test_mine_batches_equals_mining_batch_by_batch():
    """One pass over several batches: the same tuples, remembered negatives and
    random draws as one mine() per batch, over rounds that feed each other."""
    rng = np.random.default_rng(11)
    num_db, num_q = 300, 40
    pos = [np.sort(rng.choice(num_db, 3, replace=False)) for _ in range(num_q)]
    non_neg = [np.union1d(p, rng.choice(num_db, 5, replace=False)) for p in pos]
    tuples = TrainingTuples(query_ids=np.arange(num_q), potential_positives=pos, non_negatives=non_neg,
                            num_db=num_db, pos_radius=10.0, neg_radius=25.0, num_without_positive=0,
                            num_without_negative=0)
    cache = DescriptorCache(num_db, num_q, 16, dtype="float32")
    cache.db[:], cache.q[:] = rng.normal(size=(num_db, 16)), rng.normal(size=(num_q, 16))
    one, batchwise = (HardNegativeMiner(tuples, num_random_negatives=30, margin=3.0) for _ in range(2))
    skipped = 0
    for round_seed in range(3):
        order = np.random.default_rng(round_seed).permutation(num_q)
        batches = [order[s:s + 4] for s in range(0, num_q, 4)]
        assert one.plan(cache, order)
        r1, r2 = np.random.default_rng(round_seed), np.random.default_rng(round_seed)
        got = one.mine_batches(cache, batches, r1)
        ref = [batchwise.mine(cache, b, r2) for b in batches]
        assert [as_dict(g) for g in got] == [as_dict(r) for r in ref]
        assert [g.num_violating for g in got] == [r.num_violating for r in ref]
        assert {q: v.tolist() for q, v in one.neg_cache.items()} == {q: v.tolist() for q, v in batchwise.neg_cache.items()}
        assert r1.random() == r2.random()  # the same draws
        skipped += sum(len(g.skipped) for g in got)
    assert 0 < skipped < 3 * num_q  # both kinds of query occur
    # a repeated query, or no table: batch by batch (a query's second visit sees its first one's negatives)
    repeated = [np.array([0, 1]), np.array([1, 2])]
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [as_dict(g) for g in one.mine_batches(cache, repeated, r1)] == \
        [as_dict(batchwise.mine(cache, b, r2)) for b in repeated]
