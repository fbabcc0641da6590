"""The conv-map cache behind the evaluation-only sweeps (repro.report.conv_maps)."""
import numpy as np
import pytest
import torch

import repro.report.conv_maps as features
from repro.data import load_split
from repro.evaluate import extract_descriptors, init_netvlad_from_images
from repro.metrics import recall_at_n
from repro.model import build_model
from repro.report.conv_maps import (
    BaseSpec,
    cache_key,
    conv_maps,
    evaluate_descriptors,
    fmax_pool,
    netvlad_pool,
    pca_fit,
    pca_project,
    pool_maps,
)
from repro.report.off_the_shelf import OffTheShelf, netvlad_init_cached, rule_alpha

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")
SIZE = (64, 80)
SPEC = BaseSpec("alexnet", None, seed=0, num_clusters=4)


@pytest.fixture(scope="module")
def split(tiny_city):
    return load_split("synthetic", tiny_city, "test")


def trainer_like_model(pooling="netvlad", k=4, seed=0, **kw):
    """Built as repro.train builds its model: seed, then build_model."""
    torch.manual_seed(seed)
    return build_model("alexnet", pooling, weights=None, num_clusters=k, **kw)


def test_maps_are_cached_and_reused(split, tmp_path, monkeypatch):
    paths = split.q_paths
    maps = conv_maps(SPEC, paths, SIZE, cache_dir=tmp_path, log=None)
    assert maps.shape[:2] == (len(paths), 256) and maps.dtype == np.float32
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".npy"]

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(features, "_compute_maps", boom)
    again = conv_maps(SPEC, paths, SIZE, cache_dir=tmp_path, log=None)
    np.testing.assert_array_equal(np.asarray(again), maps)


def test_cache_key_depends_on_what_changes_the_maps(split):
    k = cache_key(SPEC, split.q_paths, SIZE)[0]
    assert cache_key(SPEC, split.q_paths, SIZE)[0] == k
    assert cache_key(SPEC, split.q_paths, (96, 128))[0] != k
    assert cache_key(BaseSpec("alexnet", None, seed=1, num_clusters=4), split.q_paths, SIZE)[0] != k
    assert cache_key(BaseSpec("alexnet", None, seed=0, num_clusters=8), split.q_paths, SIZE)[0] != k
    assert cache_key(BaseSpec("vgg16", None, seed=0, num_clusters=4), split.q_paths, SIZE)[0] != k
    assert cache_key(SPEC, split.q_paths[:-1], SIZE)[0] != k
    assert cache_key(SPEC, split.q_paths[::-1], SIZE)[0] != k
    _, full = cache_key(SPEC, split.q_paths, SIZE)
    assert full["data"]["kind"] == "synthetic" and full["data"]["config_hash"]


def test_pooling_cached_maps_equals_the_model_on_images(split, tmp_path):
    """NetVLAD and f_max on cached maps == the whole model run on the images,
    with the base the trainer builds (same seed and recipe)."""
    paths = split.db_paths[:24]
    maps = conv_maps(SPEC, paths, SIZE, cache_dir=tmp_path, log=None)
    model = trainer_like_model()
    init = init_netvlad_from_images(model, split.db_paths, SIZE, num_images=20, num_descriptors=400, seed=0)
    ours = netvlad_init_cached(SPEC, split.db_paths, SIZE, 20, 400, 0, tmp_path, log=None)
    np.testing.assert_allclose(ours["centroids"], model.pool.centroids.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ours["alpha_rule"] == pytest.approx(init["alpha_rule"], rel=1e-6)
    direct = extract_descriptors(model, paths, SIZE)
    pooled = pool_maps(maps, netvlad_pool(ours["centroids"], ours["alpha_rule"]))
    np.testing.assert_allclose(pooled, direct, rtol=1e-4, atol=1e-5)
    fm = trainer_like_model(k=4)  # same base as above (NetVLAD drawn first), f_max on top
    fm.pool = fmax_pool(256, (2, 2))
    np.testing.assert_allclose(pool_maps(maps, fmax_pool(256, (2, 2))), extract_descriptors(fm, paths, SIZE),
                               rtol=1e-4, atol=1e-5)


def test_init_is_cached(split, tmp_path, monkeypatch):
    a = netvlad_init_cached(SPEC, split.db_paths, SIZE, 20, 400, 0, tmp_path, log=None)
    monkeypatch.setattr(features, "build_base", lambda spec: (_ for _ in ()).throw(AssertionError("rebuilt")))
    b = netvlad_init_cached(SPEC, split.db_paths, SIZE, 20, 400, 0, tmp_path, log=None)
    assert b["cached"] and b["alpha_rule"] == a["alpha_rule"]
    np.testing.assert_array_equal(a["centroids"], b["centroids"])


def test_off_the_shelf_matches_recall_at_n(tiny_city, split, tmp_path):
    ots = OffTheShelf(synthetic_preset="tiny", data_root=tiny_city, num_clusters=4, image_size=SIZE,
                      init_images=20, init_descriptors=400, cache_dir=tmp_path, log=None)
    assert ots.name == "synthetic_tiny_seed0" and ots.groups is not None and len(ots.groups) == split.num_q
    ev, (db, q) = ots.evaluate_netvlad(ots.alpha_rule, ns=(1, 5))
    assert ev["recall"] == recall_at_n(q, db, split.positives, ns=(1, 5))
    assert set(ev["by_group"]) == set(ots.groups)
    # counts agree: recall per group weighted by group size is the overall recall
    sizes = {g: int((ots.groups == g).sum()) for g in ev["by_group"]}
    overall = sum(ev["by_group"][g][1] * sizes[g] for g in sizes) / split.num_q
    assert overall == pytest.approx(ev["recall"][1])
    assert rule_alpha(synthetic_preset="tiny", data_root=tiny_city, num_clusters=4, image_size=SIZE, init_images=20,
                      init_descriptors=400, cache_dir=tmp_path, log=None) == ots.alpha_rule


def test_pca_whitening_and_projection():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)) * np.linspace(5, 0.1, 40)
    pca = pca_fit(x, 20)
    w = pca_project(pca, x, 10, whiten=True)
    p = pca_project(pca, x, 10, whiten=False)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1, rtol=1e-5)
    # before normalisation, whitened training data has (near) unit variance per component
    y = (x - pca["mean"]) @ pca["components"][:10].T / np.sqrt(pca["eigenvalues"][:10])
    np.testing.assert_allclose(y.var(axis=0, ddof=1), 1, rtol=1e-6)
    assert np.all(np.diff(pca["eigenvalues"]) <= 0)
    with pytest.raises(Exception, match="PCA dimension"):
        pca_project(pca, x, 21, whiten=True)


def test_evaluate_descriptors_with_panoramas(split):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(split.num_db, 8)).astype(np.float32)
    q = rng.normal(size=(split.num_q, 8)).astype(np.float32)
    ev = evaluate_descriptors(db, q, split, ns=(1, 5))
    assert ev["recall"] == recall_at_n(q, db, split.positives, ns=(1, 5)) and ev["by_group"] is None


def test_evaluate_descriptors_ranks_give_its_recall(split):
    """The per-query ranks the claims' bootstrap resamples: recall@N is the share of ranks in 1..N, and each
    rank is where the first positive sits in a brute-force sort (written here, independently)."""
    rng = np.random.default_rng(3)
    db = rng.normal(size=(split.num_db, 8)).astype(np.float32)
    q = rng.normal(size=(split.num_q, 8)).astype(np.float32)
    ev = evaluate_descriptors(db, q, split, ns=(1, 5))
    ranks = np.asarray(ev["ranks"])
    assert ranks.shape == (split.num_q,)
    for n in (1, 5):
        assert ev["recall"][n] == pytest.approx(100.0 * np.mean((ranks >= 1) & (ranks <= n)))
    assert split.panorama_ids is None and not split.search_times()  # plain nearest neighbours on this split
    for i in range(split.num_q):
        order = np.argsort(((db - q[i]) ** 2).sum(axis=1), kind="stable")
        hit = [k + 1 for k, j in enumerate(order[:5]) if j in set(split.positives[i])]
        assert ranks[i] == (hit[0] if hit else -1)
