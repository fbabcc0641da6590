"""Geographic ground truth against an independent brute-force reference."""
from pathlib import Path

import numpy as np
import pytest

from repro.data.dbstruct import load_dbstruct
from repro.data.ground_truth import (
    eval_positives,
    non_negatives,
    panorama_ids,
    sample_negatives,
    train_positives,
)
from repro.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def brute_force(db, q, radius, min_dist=0.0, chunk=500):
    """``min_dist`` is exclusive (the authors' dSq > 1); 0 keeps everything from d = 0."""
    """Reference: full pairwise squared distances, chunked over queries.

    ``radius`` may be a list of radii (one d^2 matrix serves all); then a
    list of results is returned, one per radius.
    """
    radii = radius if isinstance(radius, (list, tuple)) else [radius]
    out = [[] for _ in radii]
    for s in range(0, len(q), chunk):
        dx = np.subtract.outer(q[s:s + chunk, 0], db[:, 0])
        dy = np.subtract.outer(q[s:s + chunk, 1], db[:, 1])
        d2 = dx * dx + dy * dy
        for r, res in zip(radii, out):
            inner = d2 > min_dist**2 if min_dist > 0 else np.ones_like(d2, bool)
            res.extend(np.flatnonzero(row) for row in (d2 <= r**2) & inner)
    return out if isinstance(radius, (list, tuple)) else out[0]


def assert_same(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.int64, i
        np.testing.assert_array_equal(g, w, err_msg=f"query {i}")


@pytest.fixture(scope="module")
def city():
    rng = np.random.default_rng(0)
    offset = np.array([585000.0, 4477000.0])  # realistic UTM magnitudes
    db = offset + rng.uniform(0, 300, size=(3000, 2))
    q = offset + rng.uniform(-20, 320, size=(400, 2))
    return db, q


def test_random_against_brute_force(city):
    db, q = city
    want25 = brute_force(db, q, 25.0)
    assert_same(eval_positives(db, q), want25)
    assert_same(non_negatives(db, q), want25)
    assert_same(train_positives(db, q, min_dist=0.0), brute_force(db, q, 10.0))
    assert_same(train_positives(db, q), brute_force(db, q, 10.0, 1.0))  # the authors' 1 m < d <= 10 m
    assert_same(train_positives(db, q, radius=10.0, min_dist=3.0), brute_force(db, q, 10.0, 3.0))
    # The data must exercise both cases, or the comparison proves little.
    sizes = np.array([len(p) for p in want25])
    assert (sizes > 0).mean() > 0.5 and sizes.max() > 5


def test_boundary_is_inclusive():
    o = np.array([4.0e5, 4.0e6])
    # Integer offsets at exactly 25 m (3-4-5 triangles), just outside and inside.
    pts = np.array([[15, 20], [25, 0], [-7, -24], [15, 20.000001], [25.0000001, 0], [0, 24.9999999]])
    got = eval_positives(o + pts, o[None])
    np.testing.assert_array_equal(got[0], [0, 1, 2, 5])
    # min_dist is exclusive, as the authors' dSq > 1: exactly 6 m is dropped, 6.001 kept.
    pts = np.array([[6, 0], [0, 5.999], [6, 8], [6, 8.001], [0, 6.001]])
    np.testing.assert_array_equal(train_positives(o + pts, o[None], radius=10.0, min_dist=6.0)[0], [2, 4])
    # the default is the authors' 1 m: an image at the query's own position, or exactly 1 m away, is not a positive
    pts = np.array([[0, 0], [1, 0], [0, 1.0001], [0.5, 0.5]])
    np.testing.assert_array_equal(train_positives(o + pts, o[None])[0], [2])
    np.testing.assert_array_equal(train_positives(o + pts, o[None], min_dist=0.0)[0], [0, 1, 2, 3])


def test_empty_inputs_and_no_matches():
    db = np.array([[0.0, 0.0], [100.0, 0.0]])
    got = eval_positives(db, np.array([[50.0, 0.0], [0.0, 1.0]]))
    assert len(got[0]) == 0 and got[0].dtype == np.int64
    np.testing.assert_array_equal(got[1], [0])
    assert eval_positives(db, np.empty((0, 2))) == []
    assert [len(p) for p in eval_positives(np.empty((0, 2)), db)] == [0, 0]
    with pytest.raises(DatasetError, match=r"shape \[n, 2\]"):
        eval_positives(np.zeros((3, 3)), db)
    with pytest.raises(ConfigError):
        train_positives(db, db, radius=10.0, min_dist=20.0)


def test_sample_negatives_avoids_exclusions_uniformly():
    rng = np.random.default_rng(1)
    excl = np.array([0, 3, 4, 5, 17, 30, 31, 49, 12, 20])
    counts = np.zeros(50, int)
    for _ in range(4000):
        s = sample_negatives(excl, 50, 5, rng)
        assert len(np.unique(s)) == 5 and s.min() >= 0 and s.max() < 50
        counts[s] += 1
    assert counts[excl].sum() == 0
    free = np.setdiff1d(np.arange(50), excl)
    # 4000 * 5 / 40 = 500 expected draws each; +-120 is about 5.5 sigma.
    assert np.all(np.abs(counts[free] - 500) < 120), counts[free]
    # Asking for more than remain returns exactly the complement.
    np.testing.assert_array_equal(sample_negatives(excl, 50, 100, rng), free)


def test_panorama_ids():
    pos = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [9.0, 1.0]]), 3, axis=0)
    np.testing.assert_array_equal(panorama_ids(pos), np.repeat([0, 1, 2], [3, 6, 3]))
    np.testing.assert_array_equal(panorama_ids(pos, per_panorama=3), np.repeat([0, 1, 2, 3], 3))
    with pytest.raises(DatasetError, match="do not share"):
        panorama_ids(pos, per_panorama=2)
    with pytest.raises(DatasetError, match="cannot be split"):
        panorama_ids(pos, per_panorama=5)


def _need(path):
    if not path.is_file():
        pytest.skip(f"real metadata not available at {path} (it lives beside the project checkout only)")
    return path


def test_real_pitts30k_test_ground_truth():
    db = load_dbstruct(_need(SHARED / "pittsburgh" / "pitts30k_test.mat"))
    assert (db.num_images, db.num_queries) == (10000, 6816)
    pos25 = eval_positives(db.utm_db, db.utm_q, db.pos_dist_thr)
    assert min(len(p) for p in pos25) > 0, "README: every query has a database image within 25 m"
    pos10 = train_positives(db.utm_db, db.utm_q, np.sqrt(db.non_triv_pos_dist_sq_thr), min_dist=0.0)
    n10 = sum(len(p) > 0 for p in pos10)
    n10_far1 = sum(len(p) > 0 for p in train_positives(db.utm_db, db.utm_q, 10.0, min_dist=1.0))
    print(f"pitts30k_test: {n10}/6816 queries have a potential positive within 10 m "
          f"({n10_far1} when positives closer than 1 m are dropped)")
    want25, want10 = brute_force(db.utm_db, db.utm_q, [25.0, 10.0])
    assert_same(pos25, want25)
    assert_same(pos10, want10)
    assert n10 == 6432  # recorded value; most but not all queries (~94%)
    assert n10_far1 == 6312


def test_real_tokyo247_geometry():
    g = np.load(_need(SHARED / "tokyo247" / "tokyo247_geometry.npz"))
    utm_db, utm_q = g["utmDb"], g["utmQ"]
    assert utm_db.shape == (75984, 2) and utm_q.shape == (315, 2)
    pid = panorama_ids(utm_db, per_panorama=12)
    assert pid[-1] + 1 == 6332 and np.all(np.bincount(pid) == 12)
    # Some panoramas repeat their predecessor's position: runs merge them.
    assert panorama_ids(utm_db).max() + 1 == 6254
    pos = eval_positives(utm_db, utm_q, float(g["posDistThr"]))
    assert_same(pos, brute_force(utm_db, utm_q, 25.0, chunk=50))
    # Whole panoramas are in or out together (they share one position).
    assert all(np.all(np.bincount(pid[p])[pid[p]] == 12) for p in pos)
    n_pano = np.array([len(np.unique(pid[p])) for p in pos])
    assert n_pano.min() >= 1, "every Tokyo 24/7 query has a true panorama within 25 m"


def test_time_rule_keeps_only_positives_of_another_capture_time():
    """dbTokyoTimeMachine.m: positives need qTimeStamp ~= dbTimeStamp, on top of 1 m < d <= 10 m."""
    rng = np.random.default_rng(11)
    db = rng.uniform(0, 60, size=(300, 2))
    q = rng.uniform(0, 60, size=(40, 2))
    db_time = rng.choice([200907, 201103, 201306], size=300).astype(float)
    q_time = rng.choice([200907, 201103, 201306], size=40).astype(float)
    got = train_positives(db, q, q_time=q_time, db_time=db_time)
    d2 = ((q[:, None, :] - db[None, :, :]) ** 2).sum(-1)
    want = [np.flatnonzero((d2[i] > 1) & (d2[i] <= 100) & (db_time != q_time[i])) for i in range(40)]
    assert_same(got, want)
    assert sum(len(w) for w in want) > 40  # the data exercise the rule...
    plain = train_positives(db, q)
    assert sum(len(p) for p in plain) > sum(len(w) for w in want)  # ...and it removes some
    with pytest.raises(ConfigError, match="both"):
        train_positives(db, q, q_time=q_time)


def test_real_pitts30k_train_the_authors_1m_rule():
    """The measured effect of dbBase.m's ``dSq > 1`` on the real Pitts30k-train metadata (README)."""
    db = load_dbstruct(_need(SHARED / "pittsburgh" / "pitts30k_train.mat"))
    kept_all = np.array([len(p) for p in train_positives(db.utm_db, db.utm_q, 10.0, min_dist=0.0)])
    authors = np.array([len(p) for p in train_positives(db.utm_db, db.utm_q, 10.0)])
    assert db.num_queries == 7416
    assert (kept_all > 0).sum() == 7320 and (authors > 0).sum() == 7128
    assert (kept_all > authors).sum() == 312  # queries with a database image within 1 m
    assert ((kept_all > 0) & (authors == 0)).sum() == 192  # ... of which these lose every positive
    assert (kept_all.sum(), authors.sum()) == (313344, 305856)
