"""The rerun check (repro.report.rerun) and the profile's thread count (repro.report.pipeline.thread_env)."""
import json
from pathlib import Path

import numpy as np
import pytest

from repro.errors import ConfigError
from repro.report.pipeline import thread_env
from repro.report.rerun import rerun_tables, write_rerun_tables

NS = (1, 5, 10)


def _record(pooling, untrained, trained, seed=0, threads=2):
    def res(ranks):
        ranks = np.asarray(ranks)
        return {"recall": {str(n): 100.0 * float(np.mean((ranks >= 1) & (ranks <= n))) for n in NS},
                "num_queries": len(ranks), "ranks": ranks.tolist()}
    return {"experiment": "train", "run_name": f"synthetic_default_seed0_alexnet_{pooling}_seed{seed}",
            "status": "complete", "seed": seed, "dataset": "synthetic", "synthetic": True, "git_commit": "abc",
            "torch_threads": threads,
            "config": {"synthetic_preset": "default", "city_seed": 0, "test_split": "test", "backbone": "alexnet",
                       "pooling": pooling, "num_clusters": 16, "fmax_output_size": [1, 1], "seed": seed},
            "model_config": {"backbone": "alexnet", "pooling": pooling, "num_clusters": 16,
                             "fmax_output_size": [1, 1], "alpha": 40.0},
            "init": {"alpha": 40.0}, "epochs": [], "best_epoch": 1,
            "test_untrained": res(untrained), "test": res(trained)}


def _write(path: Path, rec):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def _ranks(rng, p, q=200):
    return np.where(rng.random(q) < p, 1, 40)


def test_a_rerun_that_changes_a_verdict_is_reported_as_flipped(tmp_path):
    rng = np.random.default_rng(0)
    r = tmp_path / "results"
    base = _ranks(rng, 0.3)
    # committed: NetVLAD clearly above f_max; the rerun of the NetVLAD run lands level with f_max
    _write(r / "train" / "nv.json", _record("netvlad", base, _ranks(rng, 0.6)))
    _write(r / "train" / "fm.json", _record("fmax", base, _ranks(rng, 0.3)))
    nv_rerun = _record("netvlad", base, _ranks(rng, 0.3), threads=1)
    _write(r / "rerun" / "threads1" / "train" / "nv.json", nv_rerun)
    verdicts, recall = rerun_tables(r)
    nvf = verdicts[(verdicts["claim"] == "NetVLAD beats f_max") & (verdicts["seeds"] == "seed 0 alone")].iloc[0]
    assert nvf["committed"] == "yes" and nvf["rerun"] == "not significant" and bool(nvf["flipped"])
    fm = verdicts[verdicts["comparison"].str.startswith("alexnet + fmax") & (verdicts["seeds"] == "seed 0 alone")]
    assert len(fm) == 1
    fm = fm.iloc[0]
    assert not fm["flipped"]  # the f_max run was not rerun: its verdict stays
    row = recall[(recall["run"] == nv_rerun["run_name"]) & recall["trained"]].iloc[0]
    assert row["rerun_threads"] == 1 and row["committed_threads"] == 2
    assert row["diff_r1"] == pytest.approx(row["rerun_r1"] - row["committed_r1"])
    written = write_rerun_tables(r)
    assert [p.name for p in written] == ["verdicts.csv", "recall.csv"]
    # the committed records are untouched
    assert json.loads((r / "train" / "nv.json").read_text())["torch_threads"] == 2


def test_no_rerun_no_tables(tmp_path):
    (tmp_path / "train").mkdir()
    v, r = rerun_tables(tmp_path)
    assert v.empty and r.empty and write_rerun_tables(tmp_path) == []


def test_thread_env_from_a_profile():
    assert thread_env({"name": "p"}) == {}
    assert thread_env({"name": "p", "threads": 1}) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ConfigError, match="threads"):
            thread_env({"name": "p", "threads": bad})
