"""Retrieval figures and failure counts (repro.report.retrievals): the search
against a slow reference, the seeded choice of queries, the counts against a
hand count, and the green/red frames of the figure."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from repro.errors import ConfigError  # noqa: E402
from repro.report.retrievals import (  # noqa: E402
    MATCH,
    MISS,
    _trained_model,
    choose_queries,
    failure_counts,
    figure_retrievals,
    plot_failure_counts,
    top_k,
)


def brute_force_top_k(q, db, k):
    """Python loops, float64: squared L2 to every database row, ties by lower index."""
    out = []
    for qi in range(len(q)):
        d = []
        for j in range(len(db)):
            s = 0.0
            for a, b in zip(q[qi].tolist(), db[j].tolist()):
                s += (float(a) - float(b)) ** 2
            d.append((s, j))
        out.append([j for _, j in sorted(d)[:k]])
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("seed", [1, 2])
def test_top_k_matches_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((17, 12)).astype(np.float32)
    db = rng.standard_normal((53, 12)).astype(np.float32)
    got = top_k(q, db, 5)
    assert got.dtype == np.int64 and got.shape == (17, 5)
    np.testing.assert_array_equal(got, brute_force_top_k(q, db, 5))
    # and as faiss IndexFlatL2 ranks them
    import faiss

    index = faiss.IndexFlatL2(12)
    index.add(db)
    np.testing.assert_array_equal(got, index.search(q, 5)[1])


def test_top_k_breaks_ties_by_lower_index_and_clips_k():
    rng = np.random.default_rng(3)
    # small integers: every distance is exact in float32, so there are many exact ties
    q = rng.integers(-2, 3, (20, 3)).astype(np.float32)
    db = rng.integers(-2, 3, (30, 3)).astype(np.float32)
    db[10] = db[4]  # duplicate rows: the lower index comes first
    np.testing.assert_array_equal(top_k(q, db, 7), brute_force_top_k(q, db, 7))
    assert top_k(q, db[:3], 5).shape == (20, 3)


def test_choose_queries_is_seeded_and_mixes_successes_and_failures():
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.4
    a, b = choose_queries(correct, 6, seed=0), choose_queries(correct, 6, seed=0)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0) and len(a) == 6
    assert correct[a].sum() == 3 and (~correct[a]).sum() == 3
    others = [choose_queries(correct, 6, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(a, o) for o in others)
    odd = choose_queries(correct, 5, seed=4)
    assert correct[odd].sum() == 3 and (~correct[odd]).sum() == 2


def test_choose_queries_when_one_kind_is_short():
    all_ok = np.ones(10, bool)
    got = choose_queries(all_ok, 6, seed=0)
    assert len(got) == 6 and all_ok[got].all()
    none_ok = np.zeros(10, bool)
    got = choose_queries(none_ok, 6, seed=0)
    assert len(got) == 6 and not none_ok[got].any()
    one_fail = np.ones(10, bool)
    one_fail[7] = False
    got = choose_queries(one_fail, 6, seed=0)
    assert len(got) == 6 and 7 in got and one_fail[got].sum() == 5
    assert len(choose_queries(np.array([True, False]), 6)) == 2
    assert len(choose_queries(np.zeros(0, bool), 6)) == 0
    with pytest.raises(ConfigError):
        choose_queries(np.array([0.5, 1.0]), 2)


def test_failure_counts_against_a_hand_count():
    rng = np.random.default_rng(5)
    Q, M = 40, 25
    positives = [rng.choice(M, rng.integers(0, 4), replace=False) for _ in range(Q)]
    conditions = rng.choice(["night", "day", "fog"], Q)
    top = {"a": rng.integers(0, M, (Q, 3)), "b": rng.integers(0, M, (Q, 3))}
    for i in range(0, Q, 3):  # some certain successes
        if len(positives[i]):
            top["b"][i, 0] = positives[i][0]
    counts = failure_counts(top, positives, conditions)
    assert list(counts.columns) == ["method", "condition", "queries", "failures_at1", "failure_pct"]
    for m in top:
        g = counts[counts["method"] == m].set_index("condition")
        assert list(g.index) == ["day", "night", "fog", "all"]  # the synthetic city's order, then "all"
        for c in ["day", "night", "fog", "all"]:
            n = f = 0
            for i in range(Q):
                if c == "all" or conditions[i] == c:
                    n += 1
                    if top[m][i, 0] not in list(positives[i]):
                        f += 1
            assert g.loc[c, "queries"] == n and g.loc[c, "failures_at1"] == f
            assert g.loc[c, "failure_pct"] == pytest.approx(100.0 * f / n)
    only_all = failure_counts(top, positives)
    assert list(only_all["condition"]) == ["all", "all"]
    fig = plot_failure_counts(counts, "test")
    assert len(fig.axes[0].patches) == 2 * 4
    plt.close(fig)


def _colour(spine):
    return mcolors.to_hex(spine.get_edgecolor())


def test_figure_retrievals_frames_true_matches_green_and_others_red():
    rng = np.random.default_rng(0)
    q_imgs = [rng.integers(0, 255, (6, 8, 3), dtype=np.uint8) for _ in range(4)]
    db_imgs = [rng.integers(0, 255, (6, 8, 3), dtype=np.uint8) for _ in range(10)]
    positives = [np.array([1, 2]), np.array([5]), np.array([], dtype=np.int64), np.array([9])]
    top = {"off-the-shelf": np.array([[0, 1, 3], [5, 6, 7], [0, 1, 2], [9, 8, 7]]),
           "trained": np.array([[2, 0, 1], [4, 5, 3], [3, 4, 5], [8, 9, 0]])}
    queries = [0, 2, 3]
    fig = figure_retrievals(q_imgs, db_imgs, queries, top, positives, "synthetic test",
                            conditions=np.array(["day", "fog", "night", "dusk"]))
    axes = np.array(fig.axes).reshape(len(queries) * 2, 4)
    green, red = mcolors.to_hex(MATCH), mcolors.to_hex(MISS)
    r = 0
    for qi in queries:
        for method, t in top.items():
            row = axes[r]
            assert method in row[0].get_ylabel() and f"query {qi}" in row[0].get_ylabel()
            assert ["day", "fog", "night", "dusk"][qi] in row[0].get_ylabel()
            for j in range(3):
                want = green if t[qi, j] in positives[qi] else red
                spines = row[1 + j].spines.values()
                assert all(s.get_visible() and _colour(s) == want for s in spines), (qi, method, j)
                assert f"db {t[qi, j]}" in row[1 + j].get_title()
            r += 1
    # the known cases: query 0 off-the-shelf: red, green, red; query 3 trained: red, green, red
    assert [_colour(axes[0, j].spines["top"]) for j in (1, 2, 3)] == [red, green, red]
    assert [_colour(axes[5, j].spines["top"]) for j in (1, 2, 3)] == [red, green, red]
    assert all(_colour(axes[2, j].spines["left"]) == red for j in (1, 2, 3))  # query 2: no true match at all
    plt.close(fig)


def test_a_missing_training_run_is_skipped_with_a_reason(tmp_path):
    model, rec, why = _trained_model(tmp_path, "no_such_run")
    assert model is None and rec is None and "no training record" in why
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "run.json").write_text('{"status": "complete", "checkpoint_best": "%s", "best_epoch": 1}'
                                                 % (tmp_path / "absent" / "best.pt"))
    model, rec, why = _trained_model(tmp_path, "run")
    assert model is None and rec["status"] == "complete" and "absent" in why
