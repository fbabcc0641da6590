"""The report's notebooks: clean sources, and every one run end to end by the
pipeline (papermill) with tiny parameters, into temporary folders.

The end-to-end run is one pipeline invocation over a tiny profile (tiny
synthetic city, 1 training epoch of a few queries, two alphas): about two
minutes on 2 CPU cores. Nothing is written to the repository's results/ or
figures/.
"""
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from repro.errors import ConfigError
from repro.report import pipeline

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = ["01_data_prep", "02_train", "03_alpha_sweep", "04_fmax_output_size", "05_paper_comparison",
         "06_authors_models", "07_real_images", "08_retrievals"]
PAPER_KNOBS = ["dataset", "data_root", "backbone", "weights", "image_size", "epochs", "device"]

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")


def test_the_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_has_no_outputs_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: a code cell has outputs"
    # the paper-scale knobs are named in the parameters cell (as a parameter or a comment)
    src = tagged[0].source
    missing = [k for k in PAPER_KNOBS if k not in src]
    assert not missing, f"{path.name}: parameters cell does not mention {missing}"
    assert "papermill" not in json.dumps(nb.metadata), f"{path.name}: executed-notebook metadata in the source"


def test_profiles_plan(monkeypatch):
    """Every parameter a profile sets is declared by its notebook; sweeps expand."""
    for name in ("default", "smoke"):
        runs = pipeline.plan(pipeline.load_profile(name))
        assert [r.notebook for r in runs][0] == "01_data_prep" and [r.notebook for r in runs][-2:] == \
            ["05_paper_comparison", "06_authors_models"]
        sweep = [r for r in runs if r.notebook == "03_alpha_sweep"]
        assert len(sweep) >= 3 and sweep[-1].params["alpha"] == "rule"
        assert len({r.name for r in runs}) == len(runs)
        for r in runs:  # paths reach the notebooks relative to notebooks/
            for k in ("results_dir", "figures_dir"):
                if k in r.params:
                    assert r.params[k].startswith("../")
    monkeypatch.delenv("PITTSBURGH_ROOT", raising=False)
    with pytest.raises(ConfigError, match="PITTSBURGH_ROOT"):
        pipeline.plan(pipeline.load_profile("paper"))
    monkeypatch.setenv("PITTSBURGH_ROOT", "/data/pittsburgh")
    runs = pipeline.plan(pipeline.load_profile("paper"))
    assert {r.params.get("backbone") for r in runs if r.notebook == "02_train" and not r.unavailable} == {
        "vgg16", "alexnet"}
    # TOKYOTM_ROOT / TOKYO247_ROOT unset: listed, skipped
    assert [r.name for r in runs if r.unavailable] == ["02_train_tokyoTM", "06_authors_models_tokyo247"]
    assert all(r.params.get("data_root") == "/data/pittsburgh" for r in runs if "data_root" in r.params)


def test_the_seeds_and_rerun_profiles_plan_02_only():
    """`make seeds`: 02 once per extra seed into results/; `make rerun`: 02's seed-0 runs with one thread into a
    folder of their own, with their own checkpoints (never resuming the committed runs')."""
    seeds = pipeline.plan(pipeline.load_profile("seeds"))
    assert [(r.name, r.params["seed"]) for r in seeds] == [("02_train_seed1", 1), ("02_train_seed2", 2)]
    assert all(r.params["results_dir"] == "../results" for r in seeds)
    rerun_profile = pipeline.load_profile("rerun_threads1")
    rerun = pipeline.plan(rerun_profile)
    assert [r.name for r in rerun] == ["02_train"] and rerun[0].params["seed"] == 0
    assert rerun[0].params["results_dir"] == "../results/rerun/threads1"
    assert "rerun_threads1" in rerun[0].params["cache_dir"]
    assert pipeline.thread_env(rerun_profile) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    default = {k: v for k, v in pipeline.load_profile("default")["common"].items() if k in rerun[0].params}
    assert {k: rerun[0].params[k] for k in default if k not in ("seed",)} == {k: v for k, v in default.items()
                                                                           if k != "seed"}


def test_unknown_profile_and_parameter(tmp_path):
    with pytest.raises(ConfigError, match="no profile"):
        pipeline.load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"notebooks": [{"notebook": "05_paper_comparison", "parameters": {"alpha": 1}}]}))
    with pytest.raises(ConfigError, match="no parameter"):
        pipeline.plan(pipeline.load_profile(str(bad)))


def tiny_profile(tmp: Path, notebooks) -> Path:
    prof = {
        "results_dir": str(tmp / "results"), "figures_dir": str(tmp / "figures"),
        "executed_dir": str(tmp / "executed"), "runtimes_dir": str(tmp / "runtimes"), "update_readme": False,
        "common": {"dataset": "synthetic", "synthetic_preset": "tiny", "city_seed": 0, "backbone": "alexnet",
                   "weights": None, "image_size": [64, 80], "device": "cpu", "seed": 0, "epochs": 1,
                   "num_clusters": 4, "init_images": 20, "init_descriptors": 400},
        "notebooks": notebooks,
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(prof))
    return path


def test_every_notebook_runs_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    # 05 needs the paper's numbers: ../shared/reference, or the committed results/paper copy
    have_reference = (REPO.parent / "shared" / "reference" / "netvlad_fig5.csv").is_file() or \
        (REPO / "results" / "paper" / "netvlad_fig5.csv").is_file()
    profile = tiny_profile(tmp_path, [
        {"notebook": "01_data_prep", "parameters": {"n_samples": 3}},
        {"notebook": "02_train", "parameters": {
            "cache_dir": str(cache / "train"), "poolings": ["netvlad", "fmax"],
            "train_options": {"queries_per_epoch": 8, "val_queries": 8, "init_images": 20, "init_descriptors": 400,
                              "num_random_negatives": 20, "eval_batch_size": 16}}},
        {"notebook": "03_alpha_sweep", "parameters": {"cache_dir": str(cache / "features")},
         "sweep": {"alpha": [50], "add_rule_alpha": True}},
        {"notebook": "03_alpha_sweep", "name": "03_alpha_sweep_trained", "parameters": {
            "alpha": 5, "train": True, "cache_dir": str(cache / "features"), "train_cache_dir": str(cache / "train"),
            "train_options": {"queries_per_epoch": 8, "val_queries": 8, "num_random_negatives": 20,
                              "eval_batch_size": 16, "eval_untrained": False}}},
        {"notebook": "04_fmax_output_size", "parameters": {"cache_dir": str(cache / "features"), "grids": [1, 2],
                                                           "whiten_dims": [32, 8]}},
    ] + ([{"notebook": "05_paper_comparison"}] if have_reference else [])
      + [{"notebook": "06_authors_models", "parameters": {"authors_model": str(tmp_path / "no_models")}}])
    logs = []
    assert pipeline.run_profile(str(profile), html=True, log=logs.append) == 0
    executed = sorted(p.stem for p in (tmp_path / "executed").glob("*.ipynb"))
    assert executed == ["01_data_prep", "02_train", "03_alpha_sweep_alpha50", "03_alpha_sweep_alpha_rule",
                        "03_alpha_sweep_trained", "04_fmax_output_size"] + (["05_paper_comparison"] if have_reference else []) \
        + ["06_authors_models"]
    authors = (tmp_path / "executed" / "06_authors_models.ipynb").read_text()
    assert authors.count("authors' models: skipped pitts30k, pitts250k (no authors' model at") == 1  # one line
    assert authors.count("authors' models: skipped") == 1 and "tokyo247 (no authors' model at" in authors
    for p in (tmp_path / "executed").glob("*.ipynb"):
        nb = nbformat.read(p, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{p.name}: {errors[0]['ename']}"
        assert (tmp_path / "executed" / "html" / f"{p.stem}.html").is_file()
    results = tmp_path / "results"
    if not have_reference:
        pytest.skip("01-04 ran; 05 needs the paper's numbers and neither ../shared/reference nor the committed "
                    "results/paper/ copy is present")
    summary = pd.read_csv(results / "summary.csv")
    for c in ["experiment", "dataset", "backbone", "pooling", "dim", "trained", "alpha", "seed", "n", "recall_pct",
              "synthetic", "source"]:
        assert c in summary.columns
    assert set(summary["experiment"]) == {"train", "alpha_sweep", "fmax_output_size"}
    assert summary["synthetic"].all() and (summary["dataset"] == "synthetic_tiny_seed0").all()
    sweep = summary[summary["experiment"] == "alpha_sweep"]
    assert sorted(sweep["alpha"].round(6).unique())[-1] == 50 and sweep["alpha"].nunique() == 3
    assert sweep["is_rule_alpha"].any()
    # train=True: one more result file for that alpha, trained (its trainer record beside the sweep, not in train/)
    trained = sweep[sweep["trained"].astype(bool)]
    assert trained["alpha"].unique().tolist() == [5] and len(list((results / "train").glob("*.json"))) == 2
    assert (results / "alpha_sweep" / "train").is_dir()
    sweep = sweep[~sweep["trained"].astype(bool)]
    # the rule's alpha run is NetVLAD as the trainer initialised it: same recall as its untrained model
    train_nv = summary[(summary["experiment"] == "train") & (summary["pooling"] == "netvlad") & ~summary["trained"]]
    rule = sweep[sweep["is_rule_alpha"]]
    assert rule.set_index("n")["recall_pct"].to_dict() == train_nv.set_index("n")["recall_pct"].to_dict()
    claims = pd.read_csv(results / "claims.csv")
    assert set(claims["claim_id"]) >= {"netvlad_vs_fmax", "trained_vs_off_the_shelf", "whitening_equal_dim",
                                       "vgg16_vs_alexnet", "alpha_rule_near_best"}
    for name in ["paper_comparison_fig5", "train_synthetic_tiny_seed0", "alpha_sweep_synthetic_tiny_seed0_alexnet_K4",
                 "fmax_output_size_synthetic_tiny_seed0_alexnet_K4", "data_synthetic_tiny_seed0_maps"]:
        for ext in ("png", "pdf"):
            assert (tmp_path / "figures" / f"{name}.{ext}").is_file(), name
    assert (results / "paper" / "netvlad_fig5.csv").is_file() or not (REPO.parent / "shared" / "reference").is_dir()
    runtimes = json.loads((tmp_path / "runtimes" / "tiny.json").read_text())
    assert runtimes["full_run"]["wall_seconds"] > 0 and len(runtimes["runs"]) == 8

    # a second invocation skips every run whose results exist (05 always runs; 06 too: nothing to evaluate)
    logs.clear()
    pipeline.run_profile(str(profile), list_only=True, log=logs.append)
    skipped = [line for line in logs if "skipped, results exist" in line]
    assert len(skipped) == 5 and any("would run" in line and "05_paper_comparison" in line for line in logs)
    assert any("would run" in line and "06_authors_models" in line for line in logs)


def test_a_bad_alpha_stops_the_pipeline_before_any_notebook_runs(tmp_path):
    """Every run's parameters are checked before the first notebook starts (a
    notebook failing while it runs: tests/test_reliability.py)."""
    profile = tiny_profile(tmp_path, [{"notebook": "03_alpha_sweep", "parameters": {"alpha": 5}},
                                      {"notebook": "03_alpha_sweep", "name": "bad", "parameters": {"alpha": -1}}])
    logs = []
    with pytest.raises(ConfigError, match=r"run bad \(nothing has run yet\): 03_alpha_sweep: parameter alpha=-1 "
                                          r"\(int\) must be a positive, finite number"):
        pipeline.run_profile(str(profile), html=False, log=logs.append)
    assert not any("running" in line for line in logs)
    assert not (tmp_path / "executed").exists() or not any((tmp_path / "executed").iterdir())
    assert pipeline.main(["--profile", str(profile), "--no-html"]) == 2


def test_a_gathering_notebook_is_rerun_only_when_a_result_it_reads_is_newer(tmp_path):
    """05 (and 06 with nothing to evaluate) have no result files of their own: an invocation that changed no
    result skips them, so a `make repro` with nothing to do leaves the tree as it was."""
    import os

    results, executed = tmp_path / "results", tmp_path / "executed"
    (results / "train").mkdir(parents=True)
    executed.mkdir()
    run = pipeline.Run("05_paper_comparison", "05_paper_comparison", {}, {})
    profile = {"results_dir": str(results)}
    assert not pipeline._up_to_date(run, executed, profile)  # never executed: runs
    record, nb = results / "train" / "r.json", executed / "05_paper_comparison.ipynb"
    record.write_text("{}")
    nb.write_text("{}")
    os.utime(record, (1000, 1000))
    os.utime(nb, (2000, 2000))
    assert pipeline._up_to_date(run, executed, profile)
    os.utime(record, (3000, 3000))  # a result newer than the executed notebook: rerun
    assert not pipeline._up_to_date(run, executed, profile)
    os.utime(record, (1000, 1000))
    # what 05 writes itself (the rerun comparison) is no reason to run again; a rerun's record is
    for name in ("verdicts.csv", "recall.csv"):
        (results / "rerun").mkdir(exist_ok=True)
        (results / "rerun" / name).write_text("x\n")
        os.utime(results / "rerun" / name, (3000, 3000))
    assert pipeline._up_to_date(run, executed, profile)
    rerun_record = results / "rerun" / "threads1" / "train" / "r.json"
    rerun_record.parent.mkdir(parents=True)
    rerun_record.write_text("{}")
    os.utime(rerun_record, (3000, 3000))
    assert not pipeline._up_to_date(run, executed, profile)


def test_parameters_cells_and_the_readme_table_follow_the_declarations():
    """One declaration per notebook (repro.report.parameters): its cell, its checks and the README table
    agree with it; `python -m repro.report.parameters --write` regenerates cells and table."""
    from repro.report.parameters import (
        NOTEBOOK_PARAMETERS,
        README_END,
        README_START,
        Param,
        parameters_cell,
        readme_table,
    )

    assert sorted(NOTEBOOK_PARAMETERS) == NAMES
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert cell.source == parameters_cell(path.stem), f"{path.name}: parameters cell differs from its declaration"
        params = [p for p in NOTEBOOK_PARAMETERS[path.stem][1] if isinstance(p, Param)]
        assert all(p.check is not None and p.name in p.check.example for p in params), path.stem  # each has its check
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index(README_START) + len(README_START):readme.index(README_END)].strip()
    assert table == readme_table()


def test_a_parameter_a_notebook_does_not_declare_is_not_checked_for_it():
    from repro.report.parameters import check_params

    # 05 declares no alpha: a bad alpha in its globals is none of its business; 03's is
    check_params("05_paper_comparison", {"alpha": -1, "results_dir": "x"}, check_paths=False)
    with pytest.raises(ConfigError, match="alpha"):
        check_params("03_alpha_sweep", {"alpha": -1}, check_paths=False)


@pytest.mark.parametrize("notebook, params, ok", [
    ("02_train", {"epochs": np.int64(4), "seed": np.int32(0)}, True),  # numpy scalars count as Python's
    ("02_train", {"epochs": True}, False),  # a bool is not an integer
    ("02_train", {"epochs": 4.0}, False),  # nor is a float
    ("02_train", {"image_size": (96, 128)}, True),
    ("02_train", {"image_size": [96, 128, 3]}, False),
    ("02_train", {"train_options": {"queries_per_epoch": 20}}, True),
    ("04_fmax_output_size", {"grids": [1, (2, 3), [4, 4]]}, True),
    ("04_fmax_output_size", {"grids": []}, False),
    ("04_fmax_output_size", {"grids": [True]}, False),
    ("04_fmax_output_size", {"alpha": None}, True),  # 04: None = the paper's rule
    ("03_alpha_sweep", {"alpha": None}, False),  # 03 sweeps given alphas
    ("03_alpha_sweep", {"alpha": float("inf")}, False),
    ("03_alpha_sweep", {"alpha": 50}, True),
    ("06_authors_models", {"test_sets": ["pitts30k", "tokyo247"]}, True),
    ("06_authors_models", {"test_sets": ["tokyo"]}, False),
    ("03_alpha_sweep", {"train": np.bool_(True)}, True),
    ("03_alpha_sweep", {"train": 1}, False),
])
def test_parameter_checks_accept_and_refuse(notebook, params, ok):
    """The declared pydantic types: strict for scalars (no bool as an int, no float as an int), lists or
    tuples for pairs, the notebook's own variant of a name (04's alpha may be None)."""
    from repro.report.parameters import check_params

    if ok:
        assert check_params(notebook, params, check_paths=False) == params  # returned as given
    else:
        (name,) = params
        with pytest.raises(ConfigError, match=rf"{notebook}: parameter {name}=.* must be .*; e.g. papermill \.\.\. "):
            check_params(notebook, params, check_paths=False)


def test_the_test_sets_check_names_the_authors_steps_sets():
    from repro.report.authors_models import AUTHORS_TESTS
    from repro.report.parameters import _TEST_SETS

    assert tuple(AUTHORS_TESTS) == _TEST_SETS
