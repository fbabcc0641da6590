"""The paper path (issue 12): its settings are the authors' (Relja/netvlad), the
paper profile cannot fail on a configuration error mid-run, the rehearsal is
the paper profile with only counts shrunk, and ``--list`` counts what
training does."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from repro.data.datasets import load_split
from repro.data.dbstruct import DbStruct
from repro.data.synthetic import make_layout_city
from repro.errors import ConfigError
from repro.model.backbone import build_backbone
from repro.report import pipeline
from repro.report.costs import Stage, format_costs, projected_seconds, training_stages
from repro.report.training import planned_train_configs
from repro.train import TrainConfig
from repro.train.tuples import build_tuples

REPO = Path(__file__).resolve().parents[1]
SMALL = (48, 64)
pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")


@pytest.fixture(scope="module")
def pitts(tmp_path_factory):
    """A Pittsburgh-layout synthetic city (its .mat files and JPEGs), small images."""
    return make_layout_city(tmp_path_factory.mktemp("p") / "pitts", "pittsburgh", preset="tiny", places=2,
                            views_per_place=8, query_places=2, views_per_query_place=3, image_size=SMALL,
                            workers=1)


def trainable_convs(base):
    import torch.nn as nn

    return [i for i, m in enumerate(base) if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


# ---------------------------------------------------------------------------
# the authors' settings


def test_paper_config_is_the_authors():
    cfg = TrainConfig.paper()
    assert cfg.assignment == "fixed_bias"                     # layerVLAD, all their experiments (README_more.md)
    assert cfg.resolved_lr() == 1e-3                           # demo.m, "% Pittsburgh 30k": lr= 0.001
    assert TrainConfig.paper(dataset="pitts250k", data_root="x").resolved_lr() == 1e-4   # demo.m
    assert TrainConfig.paper(dataset="tokyoTM", data_root="x").resolved_lr() == 1e-4     # demo.m, Tokyo example
    assert TrainConfig.paper(lr=1e-4).resolved_lr() == 1e-4   # a parameter
    assert (cfg.margin, cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.lr_step, cfg.lr_gamma, cfg.epochs) == (
        0.1, 4, 0.9, 1e-3, 5, 0.5, 30)
    assert (cfg.num_random_negatives, cfg.num_hard_negatives, cfg.num_cached_negatives, cfg.cache_refresh) == (
        1000, 10, 10, 1000)
    assert (cfg.pos_min_dist, cfg.kmeans_iterations, cfg.kmeans_points_per_centroid) == (1.0, 100, None)
    assert (cfg.init_images, cfg.init_descriptors, cfg.whiten_dim, cfg.whiten_fit_images) == (500, 50_000, 4096,
                                                                                             10_000)
    assert cfg.val_queries == 1000 and cfg.select_n == 5 and not cfg.exclude_very_hard
    assert TrainConfig.paper(pooling="fmax").whiten_dim is None  # f_max's 512-D is not whitened to 4096-D
    assert TrainConfig.paper(dataset="tokyoTM", data_root="x").test_split is None  # TokyoTM has no test split


@pytest.mark.parametrize("backbone,first,trained", [("vgg16", "conv5_1", [24, 26, 28]), ("alexnet", "conv2",
                                                                                           [3, 6, 8, 10])])
def test_trainable_depth_per_backbone(backbone, first, trained):
    """The authors' backPropToLayer: VGG-16 from conv5_1, AlexNet (their demo) from conv2. The paper
    profile's AlexNet run used to ask for conv5_1, which AlexNet does not have."""
    cfg = TrainConfig.paper(data_root="x", backbone=backbone).validate()
    assert cfg.train_from == "authors"
    assert trainable_convs(build_backbone(backbone, None, train_from=cfg.train_from)) == trained
    assert trainable_convs(build_backbone(backbone, None, train_from=first)) == trained
    with pytest.raises(ConfigError, match="not a layer of alexnet"):
        TrainConfig.paper(data_root="x", backbone="alexnet", train_from="conv5_1").validate()


def test_a_whitening_larger_than_the_descriptor_is_refused_before_training():
    with pytest.raises(ConfigError, match="whiten_dim=4096 exceeds the fmax descriptor's 512 dimensions"):
        TrainConfig.paper(data_root="x", pooling="fmax", whiten_dim=4096).validate()


def test_kmeans_clusters_every_descriptor_by_default(monkeypatch):
    """The authors cluster all 50k descriptors for 100 iterations; faiss alone would subsample
    to 256 per centroid and run 25."""
    import faiss

    from repro.model.init import fit_centroids

    seen = {}
    real = faiss.Kmeans

    class Spy(real):
        def __init__(self, d, k, **kw):
            seen.update(kw)
            super().__init__(d, k, **kw)

        def train(self, x, *a, **k):
            seen["n"] = len(x)
            return super().train(x, *a, **k)

    monkeypatch.setattr(faiss, "Kmeans", Spy)
    x = np.random.default_rng(0).standard_normal((5000, 8)).astype(np.float32)
    fit_centroids(x, 4)
    assert seen["niter"] == 100 and seen["max_points_per_centroid"] * 4 >= 5000  # nothing subsampled
    full = fit_centroids(x, 4, seed=1)
    sub = fit_centroids(x, 4, seed=1, max_points_per_centroid=16)  # faiss would sample 64 of the 5000
    assert not np.allclose(full, sub)


def test_tokyo_time_machine_positives_come_from_another_capture_time(tmp_path):
    """dbTokyoTimeMachine.m: a query's potential positives are 1 m < d <= 10 m away AND from another time;
    TokyoTM's queries are database cut-outs, so without the rule their own panorama is a positive."""
    root = make_layout_city(tmp_path / "tm", "tokyoTM", preset="tiny", places=2, captures=3, views_per_place=4,
                            query_places=2, views_per_query_place=2, image_size=SMALL, workers=1)
    split = load_split("tokyoTM", root, "train")
    assert split.q_time is not None and len(split.q_time) == split.num_q
    tuples = build_tuples(split)
    assert tuples.time_rule and tuples.summary()["positives_from_another_time"]
    d2 = ((split.utm_q[:, None] - split.utm_db[None]) ** 2).sum(-1)
    for qi, pos in enumerate(tuples.potential_positives):
        want = np.flatnonzero((d2[qi] > 1) & (d2[qi] <= 100) & (split.db_time != split.q_time[qi]))
        np.testing.assert_array_equal(pos, want)
        own = np.flatnonzero(split.db_time == split.q_time[qi])
        assert not set(pos) & set(own)
    assert any(len(p) for p in tuples.potential_positives)


def test_the_time_rule_on_a_small_dbstruct():
    """By hand: three images at one spot taken at two times, and a query cut from the first."""
    db = DbStruct("train", ["a.jpg", "b.jpg", "c.jpg", "far.jpg"],
                  np.array([[0.0, 0.0], [3.0, 0.0], [0.5, 0.0], [100.0, 0.0]]), ["a.jpg"], np.array([[0.0, 0.0]]),
                  4, 1, db_time_stamp=np.array([200907.0, 201103.0, 201103.0, 200907.0]),
                  q_time_stamp=np.array([200907.0]))
    from repro.data.datasets import PlaceSplit
    from repro.data.ground_truth import eval_positives

    split = PlaceSplit("tm", [Path(f) for f in db.db_image_fns], [Path("a.jpg")], db.utm_db, db.utm_q,
                       eval_positives(db.utm_db, db.utm_q), dbstruct=db, q_time=db.q_time_stamp,
                       db_time=db.db_time_stamp)
    # a.jpg: the query itself (same time, 0 m); c.jpg: another time but 0.5 m; b.jpg: another time, 3 m
    assert build_tuples(split).potential_positives[0].tolist() == [1]
    assert build_tuples(split, pos_min_dist=0.0).potential_positives[0].tolist() == [1, 2]


# ---------------------------------------------------------------------------
# the profiles


def _load(name):
    return yaml.safe_load((REPO / "params" / f"{name}.yaml").read_text())


def test_paper_profile_trains_the_authors_layer_at_their_depths(pitts, monkeypatch):
    monkeypatch.setenv("PITTSBURGH_ROOT", str(pitts))
    monkeypatch.delenv("TOKYOTM_ROOT", raising=False)
    runs = pipeline.plan(pipeline.load_profile("paper"))
    configs = [c for r in runs if not r.missing()
               for c in planned_train_configs(r.notebook, pipeline.with_defaults(r.notebook, r.abs_params))]
    assert {(c.backbone, c.pooling) for c in configs} == {("vgg16", "netvlad"), ("vgg16", "fmax"),
                                                          ("alexnet", "netvlad"), ("alexnet", "fmax")}
    for c in configs:
        assert c.assignment == "fixed_bias" and c.train_from == "authors" and c.weights == "imagenet"
        assert c.whiten_dim == (4096 if c.pooling == "netvlad" else None) and c.epochs == 30
        assert c.kmeans_iterations == 100 and c.pos_min_dist == 1.0 and c.image_size is None
    tokyo = [r for r in runs if r.name == "02_train_tokyoTM"][0]
    assert "TOKYOTM_ROOT" in tokyo.missing()  # skipped with its reason where the Tokyo data is not configured


# The only keys the rehearsal may change, and why: counts, and what this machine forces (README).
REHEARSAL_MAY_CHANGE = {
    "description", "results_dir", "figures_dir", "executed_dir", "update_readme", "generate", "x-counts",
    "data_root", "weights", "device",                      # synthetic data, no ImageNet weights, no GPU
    "authors_model", "tokyo247_root",                      # stand-ins for the authors' files, synthetic data
    "epochs", "init_images", "init_descriptors", "whiten_dim", "whiten_dims", "requires",   # counts
}
COUNT_OPTIONS = {"init_images", "init_descriptors", "queries_per_epoch", "val_queries", "num_random_negatives",
                 "num_cached_negatives", "num_hard_negatives", "cache_refresh", "eval_batch_size"}


def test_the_rehearsal_is_the_paper_profile_with_only_counts_shrunk():
    paper, reh = _load("paper"), _load("rehearsal")
    assert set(reh) - set(paper) <= REHEARSAL_MAY_CHANGE
    for key in set(paper) | set(reh):
        if key not in REHEARSAL_MAY_CHANGE and key != "notebooks" and key != "common":
            assert reh.get(key) == paper.get(key), key
    assert set(reh["common"]) == set(paper["common"])
    for key, value in paper["common"].items():
        assert reh["common"][key] == value or key in REHEARSAL_MAY_CHANGE, key
    assert [(e["notebook"], e.get("name")) for e in reh["notebooks"]] == \
        [(e["notebook"], e.get("name")) for e in paper["notebooks"]]
    for p, r in zip(paper["notebooks"], reh["notebooks"]):
        pp, rp = p.get("parameters") or {}, r.get("parameters") or {}
        assert set(pp) == set(rp) or set(rp) - set(pp) <= {"train_options"}, p["notebook"]
        for key in set(pp) | set(rp):
            if key == "train_options":  # only counts added; test_on names the same datasets
                extra = {k: v for k, v in rp[key].items() if k not in (pp.get(key) or {})}
                assert set(extra) <= COUNT_OPTIONS, extra
                assert [s.split(":")[0] for s in rp[key].get("test_on", [])] == \
                    [s.split(":")[0] for s in (pp.get(key) or {}).get("test_on", [])]
            elif key not in REHEARSAL_MAY_CHANGE:
                assert rp.get(key) == pp.get(key), (p["notebook"], key)
        if "sweep" in p:  # fewer points, and the rule's alpha as in the paper profile
            assert set(r["sweep"]["alpha"]) <= set(p["sweep"]["alpha"])
            assert r["sweep"]["add_rule_alpha"] == p["sweep"]["add_rule_alpha"]


def test_a_configuration_error_in_the_last_run_stops_the_pipeline_before_the_first(pitts, tmp_path):
    """The pre-flight builds every training run's whole TrainConfig and checks it against the data's
    .mat files: here the last run asks for a 4096-D whitening from 16 training images."""
    prof = {
        "results_dir": str(tmp_path / "r"), "figures_dir": str(tmp_path / "f"), "executed_dir": str(tmp_path / "e"),
        "runtimes_dir": str(tmp_path / "t"), "update_readme": False,
        "common": {"dataset": "pitts30k", "data_root": str(pitts), "backbone": "alexnet", "weights": None,
                   "image_size": None, "device": "cpu", "seed": 0, "epochs": 1, "num_clusters": 32},
        "notebooks": [{"notebook": "01_data_prep"},
                      {"notebook": "02_train", "parameters": {"poolings": ["netvlad"], "whiten_dim": 4096}}],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(ConfigError, match=r"run 02_train \(nothing has run yet\).*whitening to 4096-D needs more "
                                          r"than 4096 images.*has 16"):
        pipeline.run_profile(str(path), log=lambda m: None)
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
    prof["notebooks"][1]["parameters"] = {"poolings": ["netvlad"], "train_options": {"train_from": "conv5_1"}}
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(ConfigError, match="conv5_1.*not a layer of alexnet"):
        pipeline.run_profile(str(path), log=lambda m: None)


# ---------------------------------------------------------------------------
# what --list counts


def test_list_counts_what_training_does(pitts, tmp_path, monkeypatch):
    """training_stages against the images a real (tiny) run pushes through the network."""
    import repro.evaluate as ev
    from repro.train import train

    cfg = TrainConfig.paper(data_root=str(pitts), backbone="alexnet", weights=None, num_clusters=4, epochs=2,
                            init_images=3, init_descriptors=300, queries_per_epoch=4, val_queries=3,
                            num_random_negatives=8, num_hard_negatives=2, cache_refresh=4, eval_batch_size=8,
                            whiten_dim=4, lr_step=1, out_dir=str(tmp_path / "run"), record_path=str(tmp_path / "r.json"),
                            progress=False, verbose=False, image_memory_gb=0, channels_last=False)
    counted = {"forward": 0, "train": 0}
    real_extract = ev.extract_batches  # every extraction: evaluation, whitening and cache refreshes

    def extract(model, stream, batches, *a, **k):
        counted["forward"] += sum(len(b) for b in batches)
        return real_extract(model, stream, batches, *a, **k)

    real_sample = ev.sample_local_descriptors

    def sample(base, dataset, num_images=500, *a, **k):
        counted["forward"] += min(num_images, len(dataset))
        return real_sample(base, dataset, num_images, *a, **k)

    monkeypatch.setattr(ev, "extract_batches", extract)
    monkeypatch.setattr("repro.train.cache.extract_batches", extract)
    monkeypatch.setattr(ev, "sample_local_descriptors", sample)
    result = train(cfg)
    stages, memory = training_stages(cfg, "run")
    predicted_forward = sum(s.forward for s in stages)
    assert counted["forward"] == predicted_forward
    rec = result.history
    tuple_images = sum(e.get("tuple_images", 0) for e in rec[1:])
    predicted_train = sum(s.train for s in stages)
    assert 0 < tuple_images <= predicted_train  # an upper bound: fewer negatives may violate the margin
    assert memory["cache_mib"] == pytest.approx((16 + 6) * 4 * 256 * 4 / 2**20)


def test_projection_and_report_format():
    stages = [Stage("r", "a", "vgg16", forward=100), Stage("r", "b", "vgg16", train=24),
              Stage("r", "c", "alexnet", forward=10)]
    m = {"device": "X", "file": "x.json", "measured": "2026-12-01", "source": "test",
         "backbones": {"vgg16": {"extract_images_per_s": 10.0, "train_images_per_s": 4.0}}}
    assert projected_seconds(stages, m) == (None, ["alexnet"])
    m["backbones"]["alexnet"] = {"extract_images_per_s": 100.0, "train_images_per_s": 50.0}
    secs, missing = projected_seconds(stages, m)
    assert missing == [] and secs == pytest.approx(100 / 10 + 24 / 4 + 10 / 100)
    text = format_costs(stages, {}, [m])
    assert "total image passes" in text and "110" in text and "projected on X" in text


def test_list_of_the_paper_profile_runs_nothing_and_prints_costs(pitts, monkeypatch, capsys):
    monkeypatch.setenv("PITTSBURGH_ROOT", str(pitts))
    monkeypatch.delenv("TOKYOTM_ROOT", raising=False)
    logs = []
    assert pipeline.run_profile("paper", list_only=True, log=logs.append) == 0
    text = "\n".join(logs)
    assert "02_train/netvlad: cache refreshes (30 epochs)" in text and "whitening fit (4096-D)" in text
    assert "02_train_tokyoTM: skipped" in text and "descriptor cache of 02_train/netvlad" in text
    assert "would run" in text
    # 30 epochs of one batch (6 training queries, 4 a batch) of 4 tuples of at most 1 + 1 + 10 images
    line = next(x for x in text.splitlines() if x.startswith("02_train/netvlad: training tuples"))
    assert line[66:].split()[:2] == ["0", f"{30 * 4 * 12:,}"]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py in its CPU mode: every stage runs (the device run is the real check),
    the data paths with one worker process (``auto`` is none on a CPU)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--workers", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import json

    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["agreement"]["ok"] and rep["agreement"]["cosine_min"] > 0.999
    assert set(rep["throughput"]["backbones"]) == {"vgg16", "alexnet"}
    assert all(math.isfinite(p["seconds"]) for p in rep["paper_training_projection"].values())
    # issue 16: every precision in memory and through the data path, the training step, the refresh
    assert rep["failed_steps"] == [] and rep["issue16"]["peak"] is None  # no peak fraction on a CPU
    modes = {"float32", "tf32", "bf16"}
    for where in ("in_memory", "data_path"):
        ext = rep["extraction"][where]
        assert set(ext) == modes and all(e["images_per_s"] > 0 and e["tflops"] > 0 for e in ext.values())
        assert not any("peak_fraction" in e for e in ext.values())
    assert all(0 <= e["loader_wait_share"] <= 1 and e["num_workers"] == 1
               for e in rep["extraction"]["data_path"].values())
    trn = rep["training"]
    assert set(trn["in_memory"]) == modes | {"bf16_nondeterministic"}
    assert all(t["tuples_per_s"] > 0 and t["tuple_images"] == 4 for t in trn["in_memory"].values())
    assert trn["data_path"]["tuples"] >= 2 and 0 <= trn["data_path"]["loader_wait_share"] <= 1
    assert rep["refresh"]["images"] == 16 and rep["refresh"]["pitts30k_images"] == 10000 + 7416
    reh = trn["rehearsal"]
    assert reh["precision"] == "float32" and reh["num_workers"] == 0  # "auto" on a CPU
    assert 0 <= reh["loader_stall_share"] <= 1 and reh["epochs"][1]["start_refresh_seconds"] > 0
    proj = rep["paper_run_projection"]
    assert (proj["network"]["images_forward"], proj["network"]["images_train"]) == (1_865_492, 2_669_760)
    assert math.isfinite(proj["hours"]) and proj["hours"] >= proj["network_hours"] > 0
    assert len(rep["goals"]) == 5 and all(g["status"] == "not measured (CPU run)" for g in rep["goals"])


# ---------------------------------------------------------------------------
# the rehearsal itself, smaller: every notebook of the paper profile, as the paper profile runs them


def reduced_rehearsal(tmp: Path, image_size=(96, 128)) -> Path:
    """params/rehearsal.yaml with its data and outputs under ``tmp`` and smaller JPEGs: the same runs,
    code paths and settings (native size is whatever the images are)."""
    text = (REPO / "params" / "rehearsal.yaml").read_text().replace("cache/rehearsal/", f"{tmp}/")
    prof = yaml.safe_load(text)
    prof.pop("x-counts")
    for spec in prof["generate"]:
        if "layout" in spec:  # the datasets (not the authors' model stand-ins)
            spec.update(image_size=list(image_size), workers=1)
    prof["runtimes_dir"] = str(tmp / "runtimes")
    path = tmp / "rehearsal_small.yaml"
    path.write_text(yaml.safe_dump(prof))
    return path


@pytest.mark.slow
def test_the_reduced_rehearsal_runs_every_notebook_of_the_paper_profile(tmp_path):
    import json

    import nbformat

    logs = []
    profile = str(reduced_rehearsal(tmp_path))
    assert pipeline.run_profile(profile, html=False, log=logs.append) == 0
    paper = [r.name for r in pipeline.plan(pipeline.load_profile(profile))]
    executed = sorted(p.stem for p in (tmp_path / "executed").glob("*.ipynb"))
    assert executed == sorted(paper)  # every run, the Tokyo one included
    for p in (tmp_path / "executed").glob("*.ipynb"):
        nb = nbformat.read(p, as_version=4)
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results" / "train").glob("*.json")}
    assert set(records) == {"synthetic_pitts30k_vgg16_netvlad_seed0", "synthetic_pitts30k_vgg16_fmax_seed0",
                            "synthetic_pitts30k_alexnet_netvlad_seed0", "synthetic_pitts30k_alexnet_fmax_seed0",
                            "synthetic_tokyoTM_vgg16_netvlad_seed0"}
    for name, rec in records.items():
        assert rec["status"] == "complete" and rec["synthetic"] is True and rec["run_name"] == name
        assert rec["config"]["assignment"] == "fixed_bias" and rec["config"]["channels_last"] is True
        assert rec["config"]["image_size"] is None  # native size
    tm = records["synthetic_tokyoTM_vgg16_netvlad_seed0"]
    assert tm["tuples"]["positives_from_another_time"] and tm["test"] is None
    (t247,) = tm["test_on"].values()
    assert t247["dataset"] == "tokyo247" and t247["synthetic"] and t247["trained"] and t247["whitened"]
    summary = (tmp_path / "results" / "summary.csv").read_text()
    assert "synthetic_tokyo247" in summary and "synthetic_pitts30k" in summary
    assert ",pitts30k," not in summary  # synthetic data is never labelled as Pittsburgh
    # the authors' networks (stand-ins in their layout) on Pitts30k-test and Tokyo 24/7; no Pitts250k here
    authors = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results" / "authors_models").glob("*.json")}
    assert set(authors) == {"Pitts30K_struct_on_pitts30k", "TokyoTM_struct_on_tokyo247"}
    assert all(r["synthetic"] and r["config"]["vlad_layout"] == "dim_major" and r["dim"] == 8 for r in authors.values())
    assert any("skipped pitts250k (no pitts250k test split" in line for line in logs) or \
        "pitts250k" in (tmp_path / "executed" / "06_authors_models.ipynb").read_text()


def test_the_1m_rule_changes_no_tuple_on_the_synthetic_city(tiny_city):
    """Synthetic queries stand at least 1 m (query_min_offset) from every database place, so the
    authors' rule leaves the synthetic default profile's training (and its committed report) as it was."""
    split = load_split("synthetic", tiny_city, "train")
    a, b = build_tuples(split, pos_min_dist=0.0), build_tuples(split)
    assert np.array_equal(a.query_ids, b.query_ids)
    assert all(np.array_equal(x, y) for x, y in zip(a.potential_positives, b.potential_positives))
    d = np.sqrt(((split.utm_q[:, None] - split.utm_db[None]) ** 2).sum(-1)).min(1)
    assert d.min() > 1.0
