"""recall_at_n and helpers against brute-force numpy/Python references."""
import warnings

import numpy as np
import pytest
import torch

from repro import metrics
from repro.errors import ConfigError
from repro.metrics import k_smallest, nearest_neighbours, recall_at_n, recall_from_ranking

NS = (1, 2, 5, 10, 20)


def brute_order(q, db):
    """[Q] lists: database indices sorted by float64 L2 distance, ties by index."""
    d = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    return [list(np.argsort(row, kind="stable")) for row in d]


def brute_recall(orders, positives, ns, pano=None):
    """Recall@N and 1-based first-hit ranks (within max(ns)) by Python loops."""
    n_max = max(ns)
    ranks = []
    for order, pos in zip(orders, positives):
        if pano is not None:  # keep the first (closest) image of each panorama
            seen, kept = set(), []
            for i in order:
                if pano[i] not in seen:
                    seen.add(pano[i])
                    kept.append(i)
            order = kept
        pos = set(int(p) for p in pos)
        rank = -1
        for r, i in enumerate(order[:n_max]):
            if int(i) in pos:
                rank = r + 1
                break
        ranks.append(rank)
    recall = {n: 100.0 * sum(1 for r in ranks if 1 <= r <= n) / len(ranks) for n in ns}
    return recall, ranks


def random_positives(rng, num_q, num_db, max_pos=6, p_empty=0.0):
    out = []
    for _ in range(num_q):
        k = 0 if rng.random() < p_empty else rng.integers(1, max_pos + 1)
        out.append(rng.choice(num_db, size=k, replace=False))
    return out


def positives_near(orders, rng, depth=(3, 60), count=3):
    """Positives among each query's d nearest, d drawn from `depth`, so recall is mid-range."""
    return [rng.choice(o[:rng.integers(*depth)], size=count, replace=False) for o in orders]


@pytest.mark.parametrize("num_q", [15, 60])  # faiss uses a direct path below 20 queries, BLAS above
@pytest.mark.parametrize("kind", ["float", "integer"])
def test_recall_matches_brute_force(num_q, kind):
    rng = np.random.default_rng(100 + num_q)
    if kind == "float":
        db = rng.standard_normal((300, 16)).astype(np.float32)
        q = rng.standard_normal((num_q, 16)).astype(np.float32)
    else:  # small integers: exact float32 distances and many exact ties
        db = rng.integers(-2, 3, (300, 6)).astype(np.float32)
        q = rng.integers(-2, 3, (num_q, 6)).astype(np.float32)
    orders = brute_order(q, db)
    positives = positives_near(orders, rng)
    res = recall_at_n(q, db, positives, ns=NS, return_details=True)
    ref_recall, ref_ranks = brute_recall(orders, positives, NS)
    assert res.recall == pytest.approx(ref_recall)
    assert res.ranks.tolist() == ref_ranks
    assert res.num_queries == num_q and res.num_without_positive == 0
    assert 0 < res.recall[1] < 100  # non-trivial data
    assert recall_at_n(q, db, positives, ns=NS) == res.recall


def test_n_larger_than_database_is_clipped():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((5, 4))
    q = rng.standard_normal((9, 4))
    positives = random_positives(rng, 9, 5, max_pos=1)
    rec = recall_at_n(q, db, positives, ns=(1, 5, 10, 100))
    assert rec[10] == rec[100] == rec[5] == 100.0  # every query has a positive among all 5
    assert rec[1] < 100.0


@pytest.mark.parametrize("num_q", [3, 40])
def test_ties_broken_by_database_index(num_q):
    # Database images 2 and 7 are identical and nearest to every query.
    rng = np.random.default_rng(2)
    db = rng.standard_normal((10, 8)).astype(np.float32) + 5.0
    db[2] = db[7] = 0.0
    q = rng.standard_normal((num_q, 8)).astype(np.float32) * 0.01
    lower = recall_at_n(q, db, [[2]] * num_q, ns=(1, 2))
    higher = recall_at_n(q, db, [[7]] * num_q, ns=(1, 2))
    assert lower == {1: 100.0, 2: 100.0}
    assert higher == {1: 0.0, 2: 100.0}
    _, idx = nearest_neighbours(q, db, 1)
    assert (idx[:, 0] == 2).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_smallest_is_the_head_of_a_stable_sort(seed):
    # Values from a small set (many exact ties) and inf padding at random places.
    rng = np.random.default_rng(seed)
    d2 = rng.integers(0, 6, (50, 40)).astype(np.float32)
    d2[rng.random((50, 40)) < 0.3] = np.inf
    d2[0, 3:] = np.inf  # a row with fewer finite entries than k
    for k in (0, 1, 5, 12, 40, 60):
        vals, cols = k_smallest(torch.from_numpy(d2), k)
        kk = min(k, 40)
        assert vals.shape == cols.shape == (50, kk)
        for r in range(50):
            ref = sorted(range(40), key=lambda c: (d2[r, c], c))[:kk]  # stable sort, in plain Python
            finite = np.isfinite(d2[r, ref])
            assert cols[r][finite].tolist() == [c for c, f in zip(ref, finite) if f], (k, r)
            assert np.array_equal(vals[r], d2[r, ref])  # the padding picked may differ, never its count
            assert np.array_equal(vals[r], d2[r, cols[r]])


@pytest.mark.parametrize("n, dim", [(37, 5), (300, 1000), (9, 70000)])
def test_squared_norms_in_chunks_equal_the_one_shot_sum(n, dim):
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((n, dim), dtype=np.float32))
    ref = (x.double() ** 2).sum(1).numpy()
    for chunk_elems in (1, 4096, 1 << 18, 1 << 30):
        np.testing.assert_allclose(metrics.squared_norms(x, chunk_elems).numpy(), ref, rtol=1e-5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: each row is summed in one fixed order, however it is chunked
    try:
        whole = x.pow(2).sum(1)
        for chunk_elems in (1, 4096, 1 << 18, 1 << 30):
            assert torch.equal(metrics.squared_norms(x, chunk_elems), whole)
    finally:
        torch.set_num_threads(threads)


def test_queries_without_positive_stay_in_denominator():
    db = np.eye(4, dtype=np.float32)
    q = np.eye(4, dtype=np.float32)[:4]
    positives = [[0], [1], np.array([], dtype=np.int64), [3]]
    with pytest.warns(UserWarning, match="1 of 4 queries have no positive"):
        res = recall_at_n(q, db, positives, ns=(1, 4), return_details=True)
    assert res.recall == {1: 75.0, 4: 75.0}
    assert res.num_without_positive == 1 and res.num_queries == 4
    assert res.ranks.tolist() == [1, 1, -1, 1]


def test_no_warning_when_every_query_has_a_positive():
    db = np.eye(3, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recall_at_n(db, db, [[0], [1], [2]], ns=(1,)) == {1: 100.0}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_input(dtype):
    rng = np.random.default_rng(3)
    db = rng.integers(-3, 4, (50, 8)).astype(np.float32)  # exact in every dtype
    q = rng.integers(-3, 4, (12, 8)).astype(np.float32)
    positives = positives_near(brute_order(q, db), rng, depth=(1, 10), count=1)
    ref = recall_at_n(q, db, positives, ns=NS)
    got = recall_at_n(torch.from_numpy(q).to(dtype), torch.from_numpy(db).to(dtype), positives, ns=NS)
    assert got == ref


def test_recall_from_ranking_by_hand():
    ranking = np.array([[4, 1, 3],
                        [0, 2, -1],    # padded slot
                        [5, -1, -1],
                        [1, 0, 2]])
    positives = [[3], [9], [5, 6], [2, 0]]
    res = recall_from_ranking(ranking, positives, ns=(1, 2, 3, 10))
    assert res.ranks.tolist() == [3, -1, 1, 2]
    assert res.recall == {1: 25.0, 2: 50.0, 3: 75.0, 10: 75.0}
    # A -1 slot never matches; here it would collide with the (query 0,
    # index 9) pair if padding were treated as an index.
    res = recall_from_ranking(np.array([[0, 1], [-1, -1]]), [[9], [3]], ns=(2,))
    assert res.recall == {2: 0.0} and res.ranks.tolist() == [-1, -1]


def test_nearest_neighbours_matches_brute_force_and_batches():
    rng = np.random.default_rng(4)
    db = rng.integers(-2, 3, (40, 5)).astype(np.float32)
    q = rng.integers(-2, 3, (23, 5)).astype(np.float32)
    dist, idx = nearest_neighbours(q, db, 8, batch_size=5)
    orders = brute_order(q, db)
    assert idx.tolist() == [o[:8] for o in orders]
    ref_d = ((q[:, None] - db[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, np.take_along_axis(ref_d, idx, 1), atol=1e-5)
    _, i2 = nearest_neighbours(q, db, 100)  # k clipped to the database size
    assert i2.shape == (23, 40) and i2.min() >= 0


def make_panorama_db(rng, sizes, dim=8):
    """Database whose panoramas are tight clusters, so dedup changes the ranking."""
    centres = rng.standard_normal((len(sizes), dim))
    pano = np.repeat(np.arange(len(sizes)), sizes)
    db = centres[pano] + 0.15 * rng.standard_normal((len(pano), dim))
    perm = rng.permutation(len(pano))  # cut-outs of a panorama not contiguous
    return db[perm].astype(np.float32), pano[perm], centres


@pytest.mark.parametrize("sizes,start_factor", [
    ([12] * 30, 12),            # Tokyo 24/7 layout
    ([1, 5, 40, 3] * 8, 12),    # panoramas larger than 12 images
    ([12] * 30, 1),             # shallow first search: forces the growing loop
])
def test_panorama_dedup_matches_brute_force(sizes, start_factor, monkeypatch):
    monkeypatch.setattr(metrics, "PANO_START_FACTOR", start_factor)
    rng = np.random.default_rng(len(sizes) + start_factor)
    db, pano, centres = make_panorama_db(rng, sizes)
    q = (centres[rng.integers(0, len(centres), 25)]
         + 0.6 * rng.standard_normal((25, db.shape[1]))).astype(np.float32)
    orders = brute_order(q, db)
    # Positives: all images of 2 panoramas near the query, plus single stray images.
    near_panos = [np.unique(pano[o[:60]])[:4] for o in orders]
    positives = [np.concatenate([np.flatnonzero(np.isin(pano, rng.choice(p, 2, replace=False))),
                                 rng.choice(len(db), 2, replace=False)])
                 for p in near_panos]
    res = recall_at_n(q, db, positives, ns=NS, panorama_ids=pano, return_details=True)
    ref_recall, ref_ranks = brute_recall(orders, positives, NS, pano=pano)
    assert res.recall == pytest.approx(ref_recall)
    assert res.ranks.tolist() == ref_ranks
    # Non-vacuous: deduplication changes the result on this data.
    plain = recall_at_n(q, db, positives, ns=NS, return_details=True)
    assert plain.ranks.tolist() != res.ranks.tolist()


def test_panorama_labels_may_be_strings_and_n_clips_to_panoramas():
    db = np.array([[0.0], [0.1], [1.0], [1.1]], np.float32)
    pano = np.array(["a", "a", "b", "b"])
    q = np.array([[0.0]], np.float32)
    res = recall_at_n(q, db, [[2]], ns=(1, 2, 3), panorama_ids=pano, return_details=True)
    # Ranking after dedup: [0 (pano a), 2 (pano b)]; image 1 is suppressed.
    assert res.ranks.tolist() == [2]
    assert res.recall == {1: 0.0, 2: 100.0, 3: 100.0}
    assert recall_at_n(q, db, [[1]], ns=(1, 2), panorama_ids=pano) == {1: 0.0, 2: 0.0}


@pytest.mark.parametrize("call,match", [
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((4, 5)), [[0], [1]]), "dimensions differ"),
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((4, 3)), [[0]]), "1 entries for 2 queries"),
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((0, 3)), [[0], [1]]), "empty"),
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((4, 3)), [[0], [4]]), "out of range"),
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((4, 3)), [[0], [1]], ns=(0, 1)), "ns"),
    (lambda: recall_at_n(np.zeros((2, 3)), np.zeros((4, 3)), [[0], [1]], panorama_ids=[0, 1]), "panorama_ids"),
    (lambda: recall_at_n(np.full((2, 3), np.nan), np.zeros((4, 3)), [[0], [1]]), "NaN"),
    (lambda: recall_at_n(np.zeros(3), np.zeros((4, 3)), [[0]]), "2-D"),
    (lambda: nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 2)), 1), "dimensions differ"),
    (lambda: nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 3)), 0), "k must be"),
    (lambda: recall_from_ranking(np.zeros((2, 3), int), [[0]], ns=(1,)), "1 entries for 2 queries"),
])
def test_validation_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()



def test_recall_by_group_matches_per_group_brute_force():
    from repro.metrics import recall_by_group
    rng = np.random.default_rng()
    q, db = rng.normal(size=(90, 6)), rng.normal(size=(50, 6))
    positives = [rng.choice(50, size=rng.integers(1, 6), replace=False) for _ in range(90)]
    groups = rng.choice(["day", "night", "fog"], size=90)
    details = recall_at_n(q, db, positives, ns=(1, 5), return_details=True)
    got = recall_by_group(details.ranks, groups, ns=(1, 5))
    d = ((q[:, None] - db[None]) ** 2).sum(-1)
    for g in ("day", "night", "fog"):
        idx = np.flatnonzero(groups == g)
        for n in (1, 5):
            want = 100.0 * np.mean([bool(set(np.argsort(d[i])[:n]) & set(positives[i])) for i in idx])
            assert got[g][n] == pytest.approx(want)


@pytest.mark.parametrize("with_panoramas", [False, True])
def test_same_capture_time_is_left_out_of_the_ranking(with_panoramas):
    """Tokyo Time Machine (the authors' nnSearchPostprocess): a database image
    of the query's own capture time is never retrieved; brute force by loops."""
    rng = np.random.default_rng(7 + with_panoramas)
    sizes = [12] * 20
    db, pano, centres = make_panorama_db(rng, sizes)
    pano_time = rng.choice([200907.0, 201103.0, 201306.0], size=len(sizes))
    db_time = pano_time[pano]  # all cut-outs of a panorama share its capture time
    # queries are database cut-outs themselves (as TokyoTM's), so their own panorama is nearest
    q_idx = rng.choice(len(db), 30, replace=False)
    q, q_time = db[q_idx] + 0.01 * rng.standard_normal((30, db.shape[1])).astype(np.float32), db_time[q_idx]
    # positives: the query's own panorama (never retrieved) and one panorama of another time
    other_time = [rng.choice(np.flatnonzero(pano_time != db_time[i])) for i in q_idx]
    positives = [np.flatnonzero((pano == pano[i]) | (pano == o)) for i, o in zip(q_idx, other_time)]
    kept = [[j for j in o if db_time[j] != q_time[n]] for n, o in enumerate(brute_order(q, db))]
    pano_arg = dict(panorama_ids=pano) if with_panoramas else {}
    res = recall_at_n(q, db, positives, ns=NS, return_details=True, query_times=q_time, db_times=db_time, **pano_arg)
    ref_recall, ref_ranks = brute_recall(kept, positives, NS, pano=pano if with_panoramas else None)
    assert res.recall == pytest.approx(ref_recall)
    assert res.ranks.tolist() == ref_ranks
    plain = recall_at_n(q, db, positives, ns=NS, return_details=True, **pano_arg)
    assert plain.recall[1] == 100.0 and res.recall[1] < 100.0  # without the rule the own panorama wins
    # nearest_neighbours itself: no same-time image, and -1 / inf once a query runs out of candidates
    dist, idx = nearest_neighbours(q, db, len(db), query_times=q_time, db_times=db_time)
    for n in range(len(q)):
        valid = idx[n] >= 0
        assert (db_time[idx[n][valid]] != q_time[n]).all()
        assert valid.sum() == (db_time != q_time[n]).sum() and np.isinf(dist[n][~valid]).all()
    with pytest.raises(ConfigError, match="give both"):
        recall_at_n(q, db, positives, query_times=q_time)
