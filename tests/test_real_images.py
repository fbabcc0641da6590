"""07_real_images (repro.report.real_images): real photographs in the VPR-Bench layout.

The real sets live beside the project (../shared/data/real) and are absent in
a fresh clone, so most tests here run the step on generated VPR-Bench
folders (random images, known ground truth) and the tiny synthetic city;
the one test that reads the real folders skips with the reason when they
are absent.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from repro.report import real_images as ri
from repro.report.names import REAL_SETS, expected_outputs, train_run_name

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = REPO.parent / "shared" / "data" / "real"
SIZE = (64, 80)  # the tiny models' input (H, W)

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")


# ---------------------------------------------------------------------------
# generated VPR-Bench folders


def _blobs(rng, h, w) -> np.ndarray:
    """A smooth random colour image (uint8 [h, w, 3]): a few Gaussian blobs on a gradient."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3)) + rng.uniform(0, 80, 3) * (x / w)[..., None]
    for _ in range(6):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 16)
        img += rng.uniform(40, 200, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_vprbench(folder: Path, num_ref=24, num_q=12, seed=0, size=(48, 64)) -> list:
    """A VPR-Bench folder: ``num_ref`` reference images, ``num_q`` queries
    (query i a noisy copy of reference 2i; its positives 2i-1..2i+1), one
    query stored grayscale. Returns the positives."""
    rng = np.random.default_rng(seed)
    h, w = size
    (folder / "ref").mkdir(parents=True)
    (folder / "query").mkdir()
    refs = [_blobs(rng, h, w) for _ in range(num_ref)]
    for i, im in enumerate(refs):
        Image.fromarray(im).save(folder / "ref" / f"{i:04d}.png")
    positives = []
    for i in range(num_q):
        src = refs[(2 * i) % num_ref].astype(np.float64)
        im = np.clip(src * rng.uniform(0.6, 1.2) + rng.normal(0, 25, src.shape), 0, 255).astype(np.uint8)
        pil = Image.fromarray(im)
        (pil.convert("L") if i == 0 else pil).save(folder / "query" / f"{i:04d}.png")
        positives.append(np.array([j for j in (2 * i - 1, 2 * i, 2 * i + 1) if 0 <= j < num_ref], dtype=np.int64))
    gt = np.empty((num_q, 2), dtype=object)
    for i, p in enumerate(positives):
        gt[i, 0], gt[i, 1] = i, p
    np.save(folder / "ground_truth_new.npy", gt, allow_pickle=True)
    return positives


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    make_vprbench(root / "gardens_point_night", seed=1)
    make_vprbench(root / "gardens_point_day_left", seed=2, num_q=10)
    return root  # nordland_summer_winter absent: skipped with its reason


@pytest.fixture(scope="module")
def ctx(real_root, tiny_city, tmp_path_factory):
    return ri.prepare(real_root, ("gardens_point_night", "gardens_point_day_left", "nordland_summer_winter"),
                      synthetic_preset="tiny", num_clusters=4, image_size=SIZE, init_images=20, init_descriptors=400,
                      cache_dir=tmp_path_factory.mktemp("features"), fit_root=tiny_city, log=lambda m: None)


# ---------------------------------------------------------------------------
# absent data: skipped, not failed


def test_absent_real_folder_is_skipped_with_a_reason(tmp_path):
    logs = []
    ctx = ri.prepare(tmp_path / "no_real_data", log=logs.append)
    assert not ctx.available and len(ctx.skipped) == 3
    assert all(s.startswith("skipped: ") and "absent" in s for s in ctx.skipped)
    results = tmp_path / "results"
    assert ri.run_off_the_shelf(ctx, results, log=logs.append) == {}
    assert ri.run_alpha_sweep(ctx, [1, 10], "gardens_point_night", results, log=logs.append) is None
    assert ri.run_sim_to_real(ctx, [0], results, tmp_path / "ckpt", log=logs.append) == {}
    assert ri.figure_off_the_shelf(tmp_path / "figs", {}) == (None, [])
    assert not (results / "real_images").exists()  # nothing written (nor replaced)
    assert any("skipped: no real image set" in line for line in logs)


def test_the_pipeline_plan_skips_07_without_the_real_images(tmp_path):
    from repro.report import pipeline

    absent = tmp_path / "real" / "gardens_point_night" / "ground_truth_new.npy"
    prof = {"results_dir": str(tmp_path / "results"), "figures_dir": str(tmp_path / "figures"),
            "executed_dir": str(tmp_path / "executed"), "runtimes_dir": str(tmp_path / "runtimes"),
            "update_readme": False, "common": {"dataset": "synthetic"},
            "notebooks": [{"notebook": "07_real_images", "parameters": {"real_root": str(tmp_path / "real")},
                           "requires": [str(absent)]}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(prof))
    (run,) = pipeline.plan(pipeline.load_profile(str(path)))
    assert run.missing() == f"needs {absent} (absent)"
    logs = []
    assert pipeline.run_profile(str(path), list_only=True, log=logs.append) == 0
    assert any("07_real_images: skipped, needs" in line and "(absent)" in line for line in logs)
    # and the default profile's entry carries the requires line
    default = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    (entry,) = [e for e in default["notebooks"] if e["notebook"] == "07_real_images"]
    assert entry["requires"] == ["../shared/data/real/gardens_point_night/ground_truth_new.npy"]
    names = [e.get("name", e["notebook"]) for e in default["notebooks"]]
    assert names.index("07_real_images") < names.index("05_paper_comparison")  # 05 gathers 07's results


def test_expected_outputs_name_the_records_of_the_present_sets(real_root, tmp_path):
    out = expected_outputs("07_real_images", {"results_dir": str(tmp_path), "real_root": str(real_root)})
    names = sorted(p.name for p in out)
    assert names == sorted(["real_off_the_shelf_gardens_point_night.json", "real_off_the_shelf_gardens_point_day_left.json",
                            "alpha_sweep_gardens_point_night.json", "sim_to_real_gardens_point_night.json",
                            "sim_to_real_gardens_point_day_left.json"])


def test_real_set_names_agree():
    from repro.report.parameters import _REAL_SETS

    assert tuple(_REAL_SETS) == tuple(REAL_SETS) == tuple(ri.CONDITION)


# ---------------------------------------------------------------------------
# the raw-pixel baseline against a slow, independent reference


def _gray_reference(path) -> np.ndarray:
    """PIL's own RGB -> L rule (ITU-R 601, fixed point), written out in numpy."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.float64)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    da, db = a - a.mean(), b - b.mean()
    return float((da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum()))


def test_raw_pixels_match_a_slow_ncc_reference(tmp_path):
    """Thumbnails at their native size (no resize): grayscale, zero mean, unit
    norm, and recall@N by L2 on them = a brute-force NCC ranking, rank for rank."""
    h, w = 24, 32
    rng = np.random.default_rng(7)
    folder = tmp_path / "set"
    (folder / "ref").mkdir(parents=True)
    (folder / "query").mkdir()
    num_ref, num_q = 40, 15
    refs = rng.integers(0, 256, (num_ref, h, w, 3), dtype=np.uint8)
    for i, im in enumerate(refs):
        Image.fromarray(im).save(folder / "ref" / f"{i:03d}.png")
    positives = []
    for i in range(num_q):
        src = refs[rng.integers(num_ref)].astype(np.float64)
        im = np.clip(0.5 * src + 0.5 * rng.integers(0, 256, src.shape), 0, 255).astype(np.uint8)
        Image.fromarray(im).save(folder / "query" / f"{i:03d}.png")
        positives.append(np.sort(rng.choice(num_ref, size=3, replace=False)))
    gt = np.empty((num_q, 2), dtype=object)
    for i, p in enumerate(positives):
        gt[i, 0], gt[i, 1] = i, p
    np.save(folder / "ground_truth_new.npy", gt, allow_pickle=True)

    from repro.data import load_split

    split = load_split("vprbench", folder)
    db, q = (ri.raw_pixel_descriptors(p, (h, w)) for p in (split.db_paths, split.q_paths))
    assert db.shape == (num_ref, h * w) and q.shape == (num_q, h * w)
    np.testing.assert_allclose(db.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    # the thumbnails are PIL's grayscale, centred and normalised
    g = _gray_reference(split.db_paths[3])
    g = (g - g.mean()) / np.linalg.norm(g - g.mean())
    np.testing.assert_allclose(db[3], g.ravel(), atol=1e-6)
    ev = ri._evaluate(db, q, split)
    # slow reference: NCC of every pair from the grayscale pixels, sorted by hand
    ref_imgs = [_gray_reference(p) for p in split.db_paths]
    depth = max(ev["recall"])
    for i, qp in enumerate(split.q_paths):
        qi = _gray_reference(qp)
        scores = [_ncc(qi, r) for r in ref_imgs]
        order = sorted(range(num_ref), key=lambda j: (-scores[j], j))
        rank = next((k + 1 for k, j in enumerate(order[:depth]) if j in set(positives[i].tolist())), -1)
        assert ev["ranks"][i] == rank, f"query {i}"
    for n, v in ev["recall"].items():
        assert v == pytest.approx(100 * np.mean([1 <= r <= n for r in ev["ranks"]]))


# ---------------------------------------------------------------------------
# records and summary rows, on generated folders and the tiny city


def _fake_training_run(results, cache, run, pooling, seed, epoch=3, record_epoch=3, init_alpha=None):
    """A complete training record and its best.pt (a freshly built model stands in for a trained one)."""
    from repro.model import build_model

    torch.manual_seed(100 + seed)
    model = build_model("alexnet", pooling, weights=None, train_from="all", num_clusters=4, assignment="paper")
    val = {1: 50.0, 5: 75.0}
    (cache / run).mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict(), "epoch": epoch, "val": {"recall": val}},
               cache / run / "best.pt")
    rec = {"status": "complete", "run_name": run, "seed": seed, "best_epoch": record_epoch, "git_commit": "test",
           "epochs": [{"epoch": e, "val": {"recall": {str(k): v for k, v in val.items()}}} for e in range(4)],
           "model_config": model.config, "init": {"alpha_rule": init_alpha} if init_alpha else None,
           "config": {"image_size": list(SIZE), "init_images": 20, "init_descriptors": 400, "assignment": "paper",
                      "kmeans_iterations": 25, "kmeans_points_per_centroid": 256}}
    (results / "train").mkdir(parents=True, exist_ok=True)
    (results / "train" / f"{run}.json").write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def runs(ctx, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("train_cache")
    name = ctx.fit_name
    for pooling in ("netvlad", "fmax"):
        _fake_training_run(results, cache, train_run_name(name, "alexnet", pooling, 0), pooling, 0,
                           init_alpha=ctx.init["alpha_rule"])
    # seed 1: a checkpoint of another epoch than its record's best: not this record's model
    _fake_training_run(results, cache, train_run_name(name, "alexnet", "netvlad", 1), "netvlad", 1, epoch=2)
    logs = []
    ots = ri.run_off_the_shelf(ctx, results, fmax_grid=2, raw_pixel_size=(12, 16), log=logs.append)
    sweep = ri.run_alpha_sweep(ctx, [1, 100], "gardens_point_night", results, log=logs.append)
    sim = ri.run_sim_to_real(ctx, [0, 1, 2], results, cache, log=logs.append)
    return {"results": results, "ots": ots, "sweep": sweep, "sim": sim, "logs": logs}


def test_records_hold_rows_ranks_and_where_things_were_fitted(ctx, runs):
    assert set(runs["ots"]) == set(runs["sim"]) == {"gardens_point_night", "gardens_point_day_left"}
    for rec in [*runs["ots"].values(), runs["sweep"], *runs["sim"].values()]:
        on_disk = json.loads(Path(rec["path"]).read_text())
        assert on_disk["synthetic"] is False and on_disk["label"] == ri.LABEL and on_disk["git_commit"]
        nq = ctx.splits[on_disk["dataset"]].num_q
        assert {r["ranks_key"] for r in on_disk["rows"]} == set(on_disk["ranks"])
        for key, ranks in on_disk["ranks"].items():
            assert len(ranks) == nq and all(r == -1 or 1 <= r <= 25 for r in ranks)
        for r in on_disk["rows"]:
            ranks = on_disk["ranks"][r["ranks_key"]]
            assert r["recall_pct"] == pytest.approx(100 * np.mean([1 <= k <= r["n"] for k in ranks]))
            assert r["num_queries"] == nq
    variants = {r["variant"] for r in runs["ots"]["gardens_point_night"]["rows"]}
    assert variants == {"NetVLAD", "NetVLAD (transductive)", "f_max 1x1", "f_max 2x2", "raw pixels"}
    sweep = runs["sweep"]
    assert sorted({r["alpha"] for r in sweep["rows"]}) == sorted({1.0, 100.0, sweep["alpha_rule"]})
    assert sum(r["is_rule_alpha"] for r in sweep["rows"] if r["n"] == 1) == 1


def test_sim_to_real_uses_only_checkpoints_that_match_their_records(ctx, runs):
    rec = runs["sim"]["gardens_point_night"]
    assert set(rec["ranks"]) == {"netvlad_untrained_seed0", "netvlad_trained_seed0", "fmax_untrained_seed0",
                                 "fmax_trained_seed0"}
    skipped = " | ".join(rec["skipped"])
    assert "seed 1 netvlad" in skipped and "does not match" in skipped and "epoch 2" in skipped
    assert "seed 1 fmax: no training record" in skipped and "seed 2 netvlad: no training record" in skipped
    # the untrained NetVLAD of seed 0 is the off-the-shelf NetVLAD (02's starting point, same base and init)
    ots = runs["ots"]["gardens_point_night"]
    assert rec["ranks"]["netvlad_untrained_seed0"] == ots["ranks"]["NetVLAD"]
    (info,) = [v for v in rec["models"].values() if v["pooling"] == "netvlad"]
    assert info["init_matches_record"] is True


def test_summary_rows_of_the_real_records(runs):
    from repro.report.summary import collect_summary

    df = collect_summary(runs["results"])
    real = df[df["source"].astype(str).str.contains("real_images")]
    assert set(real["experiment"]) == {"real_off_the_shelf", "alpha_sweep", "sim_to_real"}
    assert not real["synthetic"].any() and set(real["split"]) == {"test"}
    assert set(real["dataset"]) == {"gardens_point_night", "gardens_point_day_left"}
    assert real["ranks_key"].notna().all()
    for src, g in real.groupby("source"):
        rec = json.loads((runs["results"].parent / src).read_text())
        assert set(g["ranks_key"]) <= set(rec["ranks"])
    sim = real[real["experiment"] == "sim_to_real"]
    assert set(sim["seed"]) == {0} and set(sim["trained"]) == {True, False} and set(sim["pooling"]) == {"netvlad", "fmax"}
    sweep = real[real["experiment"] == "alpha_sweep"]
    assert sweep["alpha_rule"].notna().all() and sweep["is_rule_alpha"].any()


def test_centroids_are_never_fitted_on_query_images(real_root, tiny_city, tmp_path, monkeypatch):
    """Every NetVLAD initialisation of the step (main, transductive, each seed's
    starting point) is fitted on database images only; the records say where."""
    from repro.report import off_the_shelf

    calls = []
    original = off_the_shelf.netvlad_init_cached

    def spy(spec, paths, *args, **kwargs):
        calls.append([str(Path(p).resolve()) for p in paths])
        return original(spec, paths, *args, **kwargs)

    monkeypatch.setattr(off_the_shelf, "netvlad_init_cached", spy)
    c = ri.prepare(real_root, ("gardens_point_night",), synthetic_preset="tiny", num_clusters=4, image_size=SIZE,
                   init_images=20, init_descriptors=400, cache_dir=tmp_path / "f", fit_root=tiny_city, log=lambda m: None)
    results = tmp_path / "results"
    ots = ri.run_off_the_shelf(c, results, fmax_grid=1, log=lambda m: None)
    split = c.splits["gardens_point_night"]
    queries = {str(Path(p).resolve()) for p in split.q_paths}
    assert len(calls) == 2  # the main fit and the transductive one
    assert all(not (set(paths) & queries) for paths in calls)
    assert calls[1] == [str(Path(p).resolve()) for p in split.db_paths]  # transductive: the reference images
    fitted = ots["gardens_point_night"]["fitted"]
    assert all(f["query_images_among_them"] == 0 for f in fitted.values())
    assert fitted["NetVLAD"]["transductive"] is False and "synthetic" in fitted["NetVLAD"]["on"]
    assert fitted["NetVLAD"]["folders"] != [str(Path(p).parent) for p in split.q_paths[:1]]
    assert fitted["NetVLAD (transductive)"]["transductive"] is True
    assert fitted["NetVLAD (transductive)"]["folders"] == [ri.rel(split.db_paths[0].parent)]


def test_figures(ctx, runs, tmp_path):
    figs = tmp_path / "figures"
    for fn, arg in ((ri.figure_off_the_shelf, runs["ots"]), (ri.figure_alpha_sweep, runs["sweep"]),
                    (ri.figure_sim_to_real, runs["sim"])):
        fig, paths = fn(figs, arg)
        assert fig is not None and all(p.is_file() for p in paths) and {p.suffix for p in paths} == {".png", ".pdf"}
    shown = ri.figure_retrievals(ctx, figs, runs["sim"], n_queries=4)
    assert set(shown) == {"gardens_point_night", "gardens_point_day_left"}
    counts = shown["gardens_point_night"]["counts"]
    assert set(counts["method"]) == {"off-the-shelf NetVLAD", "trained NetVLAD (seed 0)"}


# ---------------------------------------------------------------------------
# the real folders, where present


@pytest.mark.skipif(not (REAL_ROOT / "gardens_point_night" / "ground_truth_new.npy").is_file(),
                    reason=f"the real images are absent ({REAL_ROOT}: they live beside the project, not in it)")
def test_the_real_folders_load_as_their_readme_says():
    found, skipped = ri.find_sets(REAL_ROOT)
    assert not skipped
    counts = {n: (s.num_db, s.num_q) for n, s in found.items()}
    assert counts == {"gardens_point_night": (200, 199), "gardens_point_day_left": (200, 200),
                      "nordland_summer_winter": (3356, 3356)}
