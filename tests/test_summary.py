"""From hand-built result records to the summary, the claims table and the README section."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repro.errors import ConfigError
from repro.report import claims, readme, reference, summary
from repro.report.names import alpha_sweep_path, expected_outputs
from repro.report.parameters import check_alpha_param
from repro.report.training import train_rows

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
NS = [1, 5, 10]


def curve(r1, r5, r10, nq=400):
    return {"recall": {"1": r1, "5": r5, "10": r10}, "num_queries": nq, "seconds": 1.0}


def train_record(pooling, untrained, trained, status="complete", backbone="alexnet", dataset="synthetic", k=16):
    return {
        "experiment": "train", "run_name": f"synthetic_default_seed0_{backbone}_{pooling}_seed0", "status": status,
        "seed": 0, "dataset": dataset, "synthetic": dataset == "synthetic", "git_commit": "abc",
        "config": {"synthetic_preset": "default", "city_seed": 0, "test_split": "test", "whiten_dim": None,
                   "backbone": backbone, "pooling": pooling, "num_clusters": k, "fmax_output_size": [1, 1],
                   "data_root": None},
        "model_config": {"backbone": backbone, "pooling": pooling, "num_clusters": k, "fmax_output_size": [1, 1],
                         "alpha": 40.0},
        "init": {"alpha": 40.0} if pooling == "netvlad" else None,
        "epochs": [{"epoch": 0, "val": curve(10, 20, 30)}, {"epoch": 1, "loss": 0.5, "val": curve(20, 30, 40)}],
        "best_epoch": 1, "test_untrained": curve(*untrained), "test": curve(*trained), "test_whitened": None,
    }


def sweep_record(alpha, r1, rule=40.0, dataset="synthetic_default_seed0"):
    return {"experiment": "alpha_sweep", "dataset": dataset, "split": "test", "synthetic": True, "seed": 0,
            "alpha": alpha, "alpha_rule": rule, "is_rule_alpha": math.isclose(alpha, rule), "trained": False,
            "git_commit": "abc", "config": {"backbone": "alexnet", "num_clusters": 16},
            "rows": [{"backbone": "alexnet", "pooling": "netvlad", "alpha": alpha, "whitened": False, "trained": False,
                      "variant": "off-the-shelf", "dim": 4096, "n": n, "recall_pct": r1 + 10 * i, "num_queries": 400}
                     for i, n in enumerate(NS)]}


def fmax_record(white, plain, fmax):
    """white/plain: {dim: R@1}; fmax: {(grid, dim): R@1}."""
    rows = []

    def add(variant, pooling, dim, r1, whitened=False):
        rows.extend({"backbone": "alexnet", "pooling": pooling, "variant": variant, "dim": dim, "trained": False,
                     "whitened": whitened, "alpha": None if pooling == "fmax" else 40.0, "n": n,
                     "recall_pct": r1 + 10 * i, "num_queries": 400} for i, n in enumerate(NS))

    for (grid, dim), r1 in fmax.items():
        add(f"f_max {grid}", "fmax", dim, r1)
    add("NetVLAD", "netvlad", 4096, 30.0)
    for dim, r1 in white.items():
        add("NetVLAD + PCA-whitening", "netvlad", dim, r1, True)
    for dim, r1 in plain.items():
        add("NetVLAD + PCA", "netvlad", dim, r1)
    return {"experiment": "fmax_output_size", "dataset": "synthetic_default_seed0", "split": "test", "synthetic": True,
            "seed": 0, "git_commit": "abc", "alpha": 40.0, "alpha_rule": 40.0,
            "config": {"backbone": "alexnet", "num_clusters": 16}, "rows": rows}


def write(path: Path, rec: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    write(r / "train" / "nv.json", train_record("netvlad", (20, 40, 50), (30, 50, 60)))
    write(r / "train" / "fm.json", train_record("fmax", (18, 35, 45), (25, 45, 55)))
    write(r / "train" / "unfinished.json", train_record("netvlad", (1, 2, 3), (4, 5, 6), status="running",
                                                        backbone="vgg16"))
    for a, r1 in [(0.01, 15.0), (1.0, 18.0), (40.0, 24.0), (100.0, 25.0), (1e4, 23.0)]:
        write(alpha_sweep_path(r, "synthetic_default_seed0", "alexnet", 16, a), sweep_record(a, r1))
    write(r / "fmax_output_size" / "x.json",
          fmax_record({256: 26.0, 1024: 28.0}, {256: 21.0, 1024: 22.0}, {("1x1", 256): 19.0, ("2x2", 1024): 24.0}))
    return r


def test_summary_columns_rows_and_flags(results):
    s = summary.collect_summary(results)
    for c in ["experiment", "dataset", "backbone", "pooling", "dim", "trained", "alpha", "seed", "n", "recall_pct",
              "synthetic", "source"]:
        assert c in s.columns
    assert set(s["experiment"]) == {"train", "alpha_sweep", "fmax_output_size"}
    assert s["synthetic"].all()
    assert "vgg16" not in set(s["backbone"])  # the unfinished record is left out
    tr = s[s["experiment"] == "train"]
    nv = tr[(tr["pooling"] == "netvlad") & tr["trained"] & (tr["n"] == 1)]
    assert nv["recall_pct"].tolist() == [30.0] and nv["dim"].tolist() == [16 * 256] and nv["alpha"].tolist() == [40.0]
    fm = tr[(tr["pooling"] == "fmax") & ~tr["trained"].astype(bool) & (tr["n"] == 5)]
    assert fm["recall_pct"].tolist() == [35.0] and fm["dim"].tolist() == [256] and fm["alpha"].isna().all()
    assert tr["dataset"].unique().tolist() == ["synthetic_default_seed0"]
    assert s.loc[s["experiment"] == "alpha_sweep", "is_rule_alpha"].sum() == 3  # one alpha, three N
    assert (s["source"].str.startswith("results/")).all()
    path, df = summary.write_summary(results)
    assert path == results / "summary.csv" and len(pd.read_csv(path)) == len(df)


def test_empty_results_give_an_empty_summary_and_untested_claims(tmp_path):
    s = summary.collect_summary(tmp_path / "nothing")
    assert s.empty and "recall_pct" in s.columns
    c = claims.claims_table(s)
    assert len(c) == len(claims.CLAIMS) and set(c["supported"]) == {"not tested"}


def test_compare_verdicts():
    a = pd.DataFrame({"n": NS, "recall_pct": [30.0, 50.0, 60.0]})
    assert claims.compare(a, a.assign(recall_pct=[20.0, 40.0, 50.0]))[0] == "yes"
    assert claims.compare(a, a.assign(recall_pct=[30.0, 40.0, 50.0]))[0] == "yes"  # a tie at one N, higher elsewhere
    assert claims.compare(a, a.assign(recall_pct=[40.0, 60.0, 70.0]))[0] == "no"
    assert claims.compare(a, a)[0] == "no" and "tie" in claims.compare(a, a)[1]
    assert claims.compare(a, a.assign(recall_pct=[20.0, 60.0, 50.0]))[0] == "mixed"
    assert claims.compare(a, a.iloc[0:0])[0] == "not tested"


def _claims(results):
    c = claims.claims_table(summary.collect_summary(results))
    return {cid: g for cid, g in c.groupby("claim_id")}


def test_claims_from_hand_built_records(results):
    c = _claims(results)
    nv = c["netvlad_vs_fmax"]
    trained = nv[nv["note"].str.contains("both trained")]
    assert trained["supported"].tolist() == ["yes"] and "30.0/50.0/60.0 vs 25.0/45.0/55.0" in trained["ours"].iloc[0]
    same_base = nv[nv["note"].str.contains("same base")]
    assert same_base["supported"].tolist() == ["yes"]  # NetVLAD 30 vs f_max 1x1 19
    tr = c["trained_vs_off_the_shelf"].set_index(c["trained_vs_off_the_shelf"]["note"].str.split(",").str[0])
    assert tr.loc["alexnet + netvlad", "supported"] == "yes" and tr.loc["alexnet + fmax", "supported"] == "yes"
    w = c["whitening_equal_dim"]
    # one row per common dimension, by point estimates (these records hold no ranks)
    assert w["supported"].tolist() == ["yes"] * len(w) and len(w) >= 2
    at256 = w[w["ours"].str.startswith("256-D")].iloc[0]
    assert "26.0/36.0/46.0 vs 21.0/31.0/41.0" in at256["ours"] and "f_max at 256-D" in at256["note"]
    assert (w["verdict_rule"] == claims.POINT_RULE).all()
    a = c["alpha_rule_near_best"]
    # best 25.0 at alpha 100, rule 24.0 at alpha 40: gap 1.0 < 1 s.e. (sqrt(.25*.75/400) = 2.2 points)
    assert a["supported"].tolist() == ["yes"] and "gap 1.0" in a["ours"].iloc[0]
    assert c["vgg16_vs_alexnet"]["supported"].tolist() == ["not tested"]
    assert (c["netvlad_vs_fmax"]["dataset"] == "synthetic_default_seed0 (test)").all()
    assert c["netvlad_vs_fmax"]["synthetic"].all()


def test_claims_that_fail(results):
    write(results / "train" / "fm.json", train_record("fmax", (18, 35, 45), (35, 55, 65)))
    write(alpha_sweep_path(results, "synthetic_default_seed0", "alexnet", 16, 100.0), sweep_record(100.0, 35.0))
    write(results / "fmax_output_size" / "x.json",
          fmax_record({256: 20.0, 1024: 25.0}, {256: 21.0, 1024: 22.0}, {("1x1", 256): 19.0}))
    c = _claims(results)
    nv = c["netvlad_vs_fmax"]
    assert nv.loc[nv["note"].str.contains("both trained"), "supported"].tolist() == ["no"]
    assert c["alpha_rule_near_best"]["supported"].tolist() == ["no"]
    w = c["whitening_equal_dim"].set_index(c["whitening_equal_dim"]["ours"].str.split(" ").str[0])
    assert w.loc["256-D", "supported"] == "no" and w.loc["1024-D", "supported"] == "yes"


def test_synthetic_and_real_never_compared_together(results):
    real = train_record("fmax", (1, 2, 3), (90, 95, 97), dataset="pitts30k")
    real["run_name"] = "pitts30k_alexnet_fmax_seed0"
    write(results / "train" / "real_fm.json", real)
    c = claims.claims_table(summary.collect_summary(results))
    nv = c[c["claim_id"] == "netvlad_vs_fmax"]
    # the real f_max (90) has no NetVLAD partner on pitts30k, so no row for it; the synthetic verdict is unchanged
    assert set(nv["dataset"]) == {"synthetic_default_seed0 (test)"}
    assert nv.loc[nv["note"].str.contains("both trained"), "supported"].tolist() == ["yes"]
    tr = c[c["claim_id"] == "trained_vs_off_the_shelf"]
    assert set(tr["dataset"]) == {"synthetic_default_seed0 (test)", "pitts30k (test)"}
    assert tr.loc[tr["dataset"] == "pitts30k (test)", "synthetic"].tolist() == [False]


def test_vgg16_vs_alexnet_when_both_ran(results):
    for pooling, r in [("netvlad", (40, 60, 70)), ("fmax", (30, 50, 60))]:
        rec = train_record(pooling, (20, 30, 40), r, backbone="vgg16")
        rec["run_name"] = f"synthetic_default_seed0_vgg16_{pooling}_seed0"
        write(results / "train" / f"vgg_{pooling}.json", rec)
    c = _claims(results)["vgg16_vs_alexnet"]
    trained = c[c["note"].str.contains("netvlad, trained")]
    assert trained["supported"].tolist() == ["yes"] and "random-init" in trained["note"].iloc[0]


def test_train_rows_whitened_and_grid():
    rec = train_record("netvlad", (1, 2, 3), (4, 5, 6))
    rec["config"]["whiten_dim"] = 4096
    rec["test_whitened"] = curve(7, 8, 9)
    rows = pd.DataFrame(train_rows(rec))
    w = rows[rows["whitened"]]
    assert w["dim"].unique().tolist() == [4096] and w["recall_pct"].tolist() == [7, 8, 9]
    rec = train_record("fmax", (1, 2, 3), (4, 5, 6))
    rec["model_config"]["fmax_output_size"] = [2, 2]
    assert {r["dim"] for r in train_rows(rec)} == {1024}


def test_readme_section_between_markers(results, tmp_path):
    s = summary.collect_summary(results)
    section = readme.readme_section(s, claims.claims_table(s), "python -m repro.pipeline --profile default")
    assert "(synthetic)" in section and "The paper's claims" in section
    path = tmp_path / "README.md"
    path.write_text("# Title\n\n## Results\n\n<!-- results:start -->\nOLD-SECTION\n<!-- results:end -->\n\n## After\ntext\n")
    assert readme.update_readme(path, section)
    text = path.read_text()
    assert "OLD-SECTION" not in text and section in text and text.endswith("## After\ntext\n") and text.startswith("# Title")
    assert not readme.update_readme(path, section)  # idempotent
    bare = tmp_path / "BARE.md"
    bare.write_text("# Only a title\n")
    readme.update_readme(bare, section)
    assert bare.read_text().count(readme.README_START) == 1


def test_runtimes_table(tmp_path):
    (tmp_path / "default.json").write_text(json.dumps({
        "profile": "default",
        "runs": {"02_train": {"seconds": 600}, "03_alpha_sweep_alpha0.01": {"seconds": 10},
                 "03_alpha_sweep_alpha_rule": {"seconds": 12}, "01_data_prep_pitts30k": {"seconds": 5}},
        "full_run": {"wall_seconds": 700.0, "cpu_count": 2}}))
    rt = readme.load_runtimes(tmp_path).set_index("notebook")
    assert rt.loc["03_alpha_sweep", "runs"] == 2 and rt.loc["03_alpha_sweep", "seconds"] == 22
    assert rt.loc["01_data_prep", "seconds"] == 5 and rt.loc["(whole profile)", "seconds"] == 700
    assert "11.7" in readme.runtimes_markdown(rt.reset_index())
    # a fresh-tree run is kept beside the last (warm) full run
    (tmp_path / "default.json").write_text(json.dumps({
        "profile": "default", "runs": {"02_train": {"seconds": 600}},
        "full_run": {"wall_seconds": 500.0, "caches_at_start": ["features", "synthetic"]},
        "full_run_fresh": {"wall_seconds": 700.0, "caches_at_start": []}}))
    whole = readme.load_runtimes(tmp_path).query("notebook == '(whole profile)'")
    assert whole["seconds"].tolist() == [700.0, 500.0]
    assert "fresh tree" in whole["conditions"].iloc[0] and "features" in whole["conditions"].iloc[1]


# ---------------------------------------------------------------------------
# the paper's numbers


def fake_reference(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = ["dataset,legend,base,pooling,trained,whitened,dim,n,recall_pct,read_quality"]
    for n, (a, b) in zip(NS, [(85.5, 79.0), (93.1, 90.1), (95.0, 93.3)]):
        rows.append(f"pitts30k_test,f_VLAD ours (V),vgg16,netvlad,yes,no,32768,{n},{a},clear")
        rows.append(f"pitts30k_test,f_max ours (V),vgg16,fmax,yes,no,512,{n},{b},clear")
        rows.append(f"pitts250k_test,RootSIFT+VLAD,rootsift,vlad,,no,,{n},{b - 10},clear")
    (folder / "netvlad_fig5.csv").write_text("\n".join(rows) + "\n")
    (folder / "cs4240_reproduction_pitts30k_val.csv").write_text(
        "base,pooling,trained,n,recall_pct\nalexnet,fmax_1x1,yes,1,52.46\nalexnet,none,no,1,53.12\n")
    return folder


def test_paper_copy_cites_the_figure_and_is_tidy(tmp_path):
    ref = fake_reference(tmp_path / "ref")
    written = reference.write_paper_reference(tmp_path / "paper", ref)
    assert [p.name for p in written] == [reference.PAPER_FILE, reference.CS4240_FILE]
    paper, cs = reference.load_paper_reference(tmp_path, ref, refresh=False)
    assert (paper["source"] == "NetVLAD paper, Figure 5 (b, c), values digitised from the figure").all()
    assert set(paper["dataset"]) == {"pitts30k", "pitts250k"} and set(paper["split"]) == {"test"}
    assert paper.loc[paper["dataset"] == "pitts30k", "panel"].unique().tolist() == ["b"]
    assert paper.loc[paper["backbone"] == "rootsift", "trained"].unique().tolist() == ["n/a"]
    assert paper["dim"].isna().sum() == 3 and paper.loc[paper["pooling"] == "fmax", "dim"].unique().tolist() == [512]
    assert cs["split"].unique().tolist() == ["val"] and "CS4240" in cs["source"].iloc[0]
    assert set(cs["pooling"]) == {"fmax", "none (flattened conv5)"}
    # evidence for a claim comes from the copy
    ev = claims._paper_evidence(paper, "netvlad_vs_fmax")
    assert ev.startswith("yes") and "85.5/93.1/95.0 vs 79.0/90.1/93.3" in ev


def test_paper_copy_works_without_shared(tmp_path, monkeypatch):
    ref = fake_reference(tmp_path / "ref")
    reference.write_paper_reference(tmp_path / "paper", ref)
    paper, _ = reference.load_paper_reference(tmp_path, tmp_path / "absent")  # no reference folder: the copy is used
    assert len(paper) == 9
    # another results folder (the smoke profile's) falls back to the repository's committed copy
    repo = tmp_path / "repo"
    reference.write_paper_reference(repo / "results" / "paper", ref)
    monkeypatch.setattr(reference, "repo_root", lambda: repo)
    paper, cs = reference.load_paper_reference(tmp_path / "smoke", tmp_path / "absent")
    assert len(paper) == 9 and cs is not None and not (tmp_path / "smoke").exists()
    monkeypatch.setattr(reference, "repo_root", lambda: tmp_path / "fresh-clone-without-copy")
    with pytest.raises(FileNotFoundError, match="neither"):
        reference.load_paper_reference(tmp_path / "empty", tmp_path / "absent")


def test_committed_copy_matches_the_reference():
    committed = REPO / "results" / "paper" / reference.PAPER_FILE
    if not REFERENCE.is_dir() and not committed.is_file():
        pytest.skip("neither ../shared/reference nor the committed results/paper copy is present")
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is absent (a fresh clone): nothing to compare the committed copy with")
    if not committed.is_file():
        pytest.skip("results/paper/ has not been generated yet (python -m repro.pipeline)")
    fresh = reference._paper_table(pd.read_csv(REFERENCE / "netvlad_fig5.csv"))
    copy, _ = reference.load_paper_reference(REPO / "results", REPO / "no-such-folder", refresh=False)
    assert len(copy) == len(fresh) == 252
    assert copy["recall_pct"].tolist() == fresh["recall_pct"].tolist()
    assert copy["legend"].tolist() == fresh["legend"].tolist()


# ---------------------------------------------------------------------------
# parameters and result names


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("nan"), float("inf"), "abc", None, True])
def test_alpha_must_be_positive(bad):
    with pytest.raises(ConfigError, match="alpha must be a positive"):
        check_alpha_param(bad)


def test_alpha_accepts_numbers_and_strings():
    assert check_alpha_param(50) == 50.0 and check_alpha_param("0.1") == 0.1


def test_expected_outputs_name_one_file_per_alpha(tmp_path):
    p = {"dataset": "synthetic", "synthetic_preset": "default", "city_seed": 0, "backbone": "alexnet",
         "num_clusters": 16, "results_dir": str(tmp_path), "seed": 0}
    a = expected_outputs("03_alpha_sweep", {**p, "alpha": 0.01})
    b = expected_outputs("03_alpha_sweep", {**p, "alpha": 10000})
    assert len(a) == len(b) == 1 and a[0] != b[0] and a[0].parent == tmp_path / "alpha_sweep"
    assert len(expected_outputs("03_alpha_sweep", {**p, "alpha": 1, "train": True})) == 2
    assert [q.name for q in expected_outputs("02_train", {**p, "poolings": ["netvlad", "fmax"]})] == [
        "synthetic_default_seed0_alexnet_netvlad_seed0.json", "synthetic_default_seed0_alexnet_fmax_seed0.json"]
    assert expected_outputs("05_paper_comparison", p) == []
    with pytest.raises(ConfigError):
        expected_outputs("03_alpha_sweep", {**p, "alpha": -1})


def test_replicate_runs_count_once(results):
    """A second run of one configuration (another name, other reported N) is a replicate."""
    rec = train_record("netvlad", (20, 40, 50), (30, 50, 60))
    rec["run_name"] = "replicate_of_nv"
    rec["config"]["ns"] = [1, 5, 10, 20]
    write(results / "train" / "replicate.json", rec)
    s = summary.collect_summary(results)
    assert s.loc[s["experiment"] == "train", "run"].nunique() == 3
    c = claims.claims_table(s)
    assert (c["claim_id"] == "trained_vs_off_the_shelf").sum() == 2  # netvlad once, fmax once
    rec["config"]["seed"], rec["seed"] = 1, 1  # another seed of the same recipe: pooled with seed 0 in one row
    write(results / "train" / "replicate.json", rec)
    c = claims.claims_table(summary.collect_summary(results))
    tr = c[c["claim_id"] == "trained_vs_off_the_shelf"]
    assert len(tr) == 2
    nv = tr[tr["note"].str.contains("netvlad")].iloc[0]
    assert "mean of 2 seeds (0, 1)" in nv["note"] and "replicate_of_nv" in nv["note"]
    rec["config"]["lr"] = 0.5  # another recipe is another row
    write(results / "train" / "replicate.json", rec)
    c = claims.claims_table(summary.collect_summary(results))
    assert (c["claim_id"] == "trained_vs_off_the_shelf").sum() == 3


def _ranks_for(recall_at_1, q=400, seed=0):
    """Per-query ranks with exactly ``recall_at_1`` percent at rank 1, the rest at rank 20 (so R@10 = R@1)."""
    r = np.full(q, 20)
    r[np.random.default_rng(seed).permutation(q)[:round(q * recall_at_1 / 100)]] = 1
    return r


def test_training_claims_follow_the_interval_rule_where_records_hold_ranks(tmp_path):
    """Point estimates say NetVLAD beats f_max (31 vs 30 at every N), the interval says that is not significant;
    its trained-vs-untrained gap (31 vs 20) is significant. Rows name the rule they follow."""
    from repro.report.intervals import paired_bootstrap

    r = tmp_path / "results"
    ranks = {"nv": (_ranks_for(20, seed=1), _ranks_for(31, seed=2)), "fm": (_ranks_for(29, seed=3), _ranks_for(30, seed=4))}
    for name, pooling in (("nv", "netvlad"), ("fm", "fmax")):
        untrained, trained = ranks[name]
        rec = train_record(pooling, (0, 0, 0), (0, 0, 0))
        for key, rk in (("test_untrained", untrained), ("test", trained)):
            pct = {str(n): 100.0 * float(np.mean((rk >= 1) & (rk <= n))) for n in NS}
            rec[key] = {"recall": pct, "num_queries": len(rk), "seconds": 1.0, "ranks": rk.tolist()}
        write(r / "train" / f"{name}.json", rec)
    s = summary.collect_summary(r)
    c = claims.claims_table(s, results_dir=r)
    nvf = c[c["claim_id"] == "netvlad_vs_fmax"].iloc[0]
    assert claims.claims_table(s).set_index("claim_id").loc["netvlad_vs_fmax", "supported"] == "yes"  # points
    assert nvf["supported"] == "not significant" and nvf["verdict_rule"] == claims.INTERVAL_RULE
    want = paired_bootstrap(ranks["nv"][1], ranks["fm"][1], (1, 5, 10), seed=0)
    for n in (1, 5, 10):
        assert (nvf[f"diff_r{n}"], nvf[f"low_r{n}"], nvf[f"high_r{n}"]) == pytest.approx(
            (want[n]["diff"], want[n]["low"], want[n]["high"]))
    tr = c[(c["claim_id"] == "trained_vs_off_the_shelf") & c["note"].str.contains("netvlad")].iloc[0]
    assert tr["supported"] == "yes" and tr["low_r1"] > 0
    fm = c[(c["claim_id"] == "trained_vs_off_the_shelf") & c["note"].str.contains("fmax")].iloc[0]
    assert fm["supported"] == "not significant"  # 30 vs 29
    # claims without ranks keep the point rule, said so
    assert (c[c["claim_id"] == "alpha_rule_near_best"]["verdict_rule"] == claims.POINT_RULE).all()


def _with_ranks(res: dict, ranks) -> dict:
    """A recall dict (as the trainer writes it) from ranks, with the ranks."""
    ranks = np.asarray(ranks)
    return {**res, "recall": {str(n): 100.0 * float(np.mean((ranks >= 1) & (ranks <= n))) for n in NS},
            "num_queries": len(ranks), "ranks": ranks.tolist()}


def _rows_from(ranks, **fields):
    ranks = np.asarray(ranks)
    return [{**fields, "n": n, "recall_pct": 100.0 * float(np.mean((ranks >= 1) & (ranks <= n))),
             "num_queries": len(ranks)} for n in NS]


def test_every_claim_with_ranks_follows_the_interval_rule(tmp_path):
    """Fresh random ranks in each kind of result file: three training seeds per pooling, an alpha sweep,
    the output-size experiment, the calibration. Each row's interval is the bootstrap of exactly those
    ranks (seeds stacked), and its verdict is the rule's reading of it."""
    from repro.data.synthetic.calibration import ranks_path
    from repro.report.intervals import gap_to_best, near_verdict, paired_bootstrap, verdict

    rng = np.random.default_rng(2026)
    q = 120
    r = tmp_path / "results"
    draw = lambda p_hit: np.where(rng.random(q) < p_hit, rng.integers(1, 4, q), rng.integers(11, 60, q))  # noqa: E731
    seeds = {"netvlad": {}, "fmax": {}}
    for pooling, p in (("netvlad", 0.6), ("fmax", 0.3)):
        for seed in (0, 1, 2):
            untrained, trained = draw(0.25), draw(p)
            rec = train_record(pooling, (0, 0, 0), (0, 0, 0))
            rec["run_name"] = f"synthetic_default_seed0_alexnet_{pooling}_seed{seed}"
            rec["seed"], rec["config"]["seed"] = seed, seed
            rec["test_untrained"], rec["test"] = _with_ranks({}, untrained), _with_ranks({}, trained)
            seeds[pooling][seed] = (untrained, trained)
            write(r / "train" / f"{pooling}{seed}.json", rec)
    sweep = {a: draw(p) for a, p in ((0.1, 0.2), (40.0, 0.5), (100.0, 0.55), (1e3, 0.3))}
    for a, rk in sweep.items():
        rec = sweep_record(a, 0.0)
        rec["rows"] = _rows_from(rk, backbone="alexnet", pooling="netvlad", alpha=a, whitened=False, trained=False,
                                 variant="off-the-shelf", dim=4096)
        rec["ranks"] = rk.tolist()
        write(alpha_sweep_path(r, "synthetic_default_seed0", "alexnet", 16, a), rec)
    fo = {("NetVLAD", "netvlad", 4096): draw(0.5), ("f_max 1x1", "fmax", 256): draw(0.3),
          ("NetVLAD + PCA-whitening", "netvlad", 256): draw(0.5), ("NetVLAD + PCA", "netvlad", 256): draw(0.45)}
    rec = fmax_record({}, {}, {})
    rec["rows"] = [row for (variant, pooling, dim), rk in fo.items() for row in _rows_from(
        rk, backbone="alexnet", pooling=pooling, variant=variant, dim=dim, trained=False,
        whitened="whitening" in variant, alpha=None)]
    rec["query_ranks"] = [{"variant": v, "dim": dim, "ranks": rk.tolist()} for (v, _, dim), rk in fo.items()]
    write(r / "fmax_output_size" / "x.json", rec)
    cal = {"random vgg16 + netvlad": ("vgg16", draw(0.55)), "random alexnet + netvlad": ("alexnet", draw(0.35))}
    csv = r / "calibration" / "synthetic_default_seed0_test.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame([{"dataset": "synthetic_default_seed0_test", "method": m, "backbone": bb, "pooling": "netvlad",
                   "dim": 4096, "condition": "all", "seed": 0, "trained": False, "git_commit": "abc", **row}
                  for m, (bb, rk) in cal.items() for row in _rows_from(rk)]).to_csv(csv, index=False)
    write(ranks_path(csv), {"ranks": {m: rk.tolist() for m, (_, rk) in cal.items()}})

    c = claims.claims_table(summary.collect_summary(r), results_dir=r)

    def check(row, want, rule=claims.INTERVAL_RULE, read=verdict):
        for n in (1, 5, 10):
            assert (row[f"diff_r{n}"], row[f"low_r{n}"], row[f"high_r{n}"]) == pytest.approx(
                (want[n]["diff"], want[n]["low"], want[n]["high"])), n
        assert row["supported"] == read(want) and row["verdict_rule"] == rule

    stack = lambda pooling, i: np.stack([seeds[pooling][s][i] for s in (0, 1, 2)])  # noqa: E731
    nvf = c[(c["claim_id"] == "netvlad_vs_fmax") & c["note"].str.contains("both trained")]
    assert len(nvf) == 1 and "mean of 3 seeds (0, 1, 2)" in nvf["note"].iloc[0]
    check(nvf.iloc[0], paired_bootstrap(stack("netvlad", 1), stack("fmax", 1), (1, 5, 10), seed=0))
    for pooling in ("netvlad", "fmax"):
        tr = c[(c["claim_id"] == "trained_vs_off_the_shelf") & c["note"].str.contains(f"alexnet \\+ {pooling}")]
        assert len(tr) == 1
        check(tr.iloc[0], paired_bootstrap(stack(pooling, 1), stack(pooling, 0), (1, 5, 10), seed=0))
    base = c[(c["claim_id"] == "netvlad_vs_fmax") & c["note"].str.contains("same base")].iloc[0]
    check(base, paired_bootstrap(fo[("NetVLAD", "netvlad", 4096)], fo[("f_max 1x1", "fmax", 256)], (1, 5, 10), seed=0))
    white = c[c["claim_id"] == "whitening_equal_dim"]
    assert len(white) == 1
    check(white.iloc[0], paired_bootstrap(fo[("NetVLAD + PCA-whitening", "netvlad", 256)],
                                          fo[("NetVLAD + PCA", "netvlad", 256)], (1, 5, 10), seed=0))
    vgg = c[c["claim_id"] == "vgg16_vs_alexnet"]
    assert len(vgg) == 1
    check(vgg.iloc[0], paired_bootstrap(cal["random vgg16 + netvlad"][1], cal["random alexnet + netvlad"][1],
                                        (1, 5, 10), seed=0))
    alpha = c[c["claim_id"] == "alpha_rule_near_best"]
    assert len(alpha) == 1
    want = gap_to_best(sweep[40.0], np.stack([sweep[a] for a in (0.1, 100.0, 1e3)]), (1, 5, 10), seed=0)
    check(alpha.iloc[0], want, claims.NEAR_INTERVAL_RULE, near_verdict)
    assert (c["verdict_rule"] != claims.POINT_RULE).sum() == len(c) - (c["supported"] == "not tested").sum()


def test_real_image_rows_are_claims_of_their_own_dataset(tmp_path):
    """A record with a ``ranks`` dict and summary rows naming ``ranks_key`` (the real-image track) is
    judged by the interval rule within its own dataset, never beside synthetic rows."""
    rng = np.random.default_rng(5)
    ranks = {"nv": rng.integers(1, 30, 80), "fm": rng.integers(1, 30, 80)}
    rows = pd.DataFrame([{"experiment": "real_off_the_shelf", "run": "gp", "dataset": "gardens_point_night",
                          "split": "test", "synthetic": False, "backbone": "alexnet", "pooling": pooling,
                          "variant": variant, "dim": dim, "trained": False, "whitened": False, "seed": 0,
                          "source": "results/real_images/gp.json", "ranks_key": key, **row}
                         for key, pooling, variant, dim in (("nv", "netvlad", "NetVLAD", 4096),
                                                            ("fm", "fmax", "f_max 1x1", 256))
                         for row in _rows_from(ranks[key])])
    r = tmp_path / "results"
    write(r / "real_images" / "gp.json", {"ranks": {k: v.tolist() for k, v in ranks.items()}})
    c = claims.claims_table(rows, results_dir=r)
    row = c[c["claim_id"] == "netvlad_vs_fmax"].iloc[0]
    assert row["dataset"] == "gardens_point_night (test)" and row["synthetic"] == False  # noqa: E712
    assert row["verdict_rule"] == claims.INTERVAL_RULE and "real images, random-init base" in row["note"]
    from repro.report.intervals import paired_bootstrap
    assert row["low_r1"] == pytest.approx(paired_bootstrap(ranks["nv"], ranks["fm"], (1,), seed=0)[1]["low"])


def test_findings_table_opens_with_one_row_per_claim_and_kind(results):
    c = claims.claims_table(summary.collect_summary(results))
    f = claims.findings_table(c)
    assert list(f.columns) == ["claim", "data", "our verdict", "difference [95% interval], R@1 / R@5 / R@10",
                               "evidence", "the paper"]
    # the whitening claim's dimensions are one row, naming each dimension's verdict
    w = f[f["claim"] == "Whitening helps at equal dimension"]
    assert len(w) == 1 and "256-D" in w["our verdict"].iloc[0] and "1024-D" in w["our verdict"].iloc[0]
    # every other claims row is one findings row, its verdict unchanged
    other = c[c["claim_id"] != "whitening_equal_dim"]
    assert len(f) == len(other) + 1
    assert f[f["claim"] != "Whitening helps at equal dimension"]["our verdict"].tolist() == other["supported"].tolist()
    assert (f["data"].str.contains("synthetic") | (f["data"] == "-")).all()
    section = readme.readme_section(summary.collect_summary(results), c, "cmd")
    assert section.index("**Findings") < section.index("**Training runs")


def test_seed_table_mean_and_spread(results):
    for seed, r1 in ((1, 34.0), (2, 29.0)):
        rec = train_record("netvlad", (20, 40, 50), (r1, 50, 60))
        rec["run_name"] = f"synthetic_default_seed0_alexnet_netvlad_seed{seed}"
        rec["seed"], rec["config"]["seed"] = seed, seed
        write(results / "train" / f"nv{seed}.json", rec)
    t = readme.seed_table(summary.collect_summary(results)).set_index(["model", "state"])
    row = t.loc[("alexnet + netvlad", "trained")]
    assert row["seeds"] == "0, 1, 2"
    v = np.array([30.0, 34.0, 29.0])
    assert row["R@1 mean ± s.d. (min-max)"] == f"{v.mean():.1f} ± {v.std(ddof=1):.1f} (29.0-34.0)"
    assert ("alexnet + fmax", "trained") not in t.index  # one seed only: no spread to show


def test_calibration_table_gives_intervals_from_the_ranks(tmp_path):
    from repro.data.synthetic.calibration import ranks_path
    from repro.report.intervals import recall_interval

    rng = np.random.default_rng(9)
    rk = rng.integers(-1, 30, 100)
    rk[rk == 0] = 1
    csv = tmp_path / "calibration" / "synthetic_default_seed0_test.csv"
    csv.parent.mkdir()
    rows = [{"dataset": "synthetic_default_seed0_test", "method": "m", "condition": cond, "n": n,
             "recall_pct": 100.0 * float(np.mean((rk >= 1) & (rk <= n))), "num_queries": 100}
            for cond in ("all", "night") for n in NS]
    pd.DataFrame(rows).to_csv(csv, index=False)
    write(ranks_path(csv), {"ranks": {"m": rk.tolist()}})
    t = readme.calibration_table(tmp_path)
    iv = recall_interval(rk, (1, 5, 10), seed=0)
    assert t["R@5 [95% interval]"].iloc[0] == f"{iv[5]['recall']:.1f} [{iv[5]['low']:.1f}, {iv[5]['high']:.1f}]"
    assert "R@1 night (100 q.)" in t.columns
