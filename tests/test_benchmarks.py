"""The benchmark scripts run on tiny shapes and write tidy CSVs; their
reference implementations agree with the project's (asserted inside each
benchmark). No timing is asserted here: speed goals live in `make bench`."""
import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks import run_all  # noqa: E402
from benchmarks.common import BASE_COLUMNS  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run_all.main(["--quick", "--out", str(out), "--only", "netvlad,extraction,images,mining,eval,scaling,pipeline"])
    return out


@pytest.mark.parametrize("name, extra", [
    ("netvlad", {"B", "K", "D", "H", "W"}),
    ("extraction", {"backbone", "images_per_s"}),
    ("mining", {"N", "Q", "dim", "cache_mib_f32", "cache_mib_f16"}),
    ("images", {"images", "image_h", "image_w", "kept_mib"}),
    ("eval", {"M", "Q", "dim", "recall@1"}),
    ("scaling", {"M", "dim"}),
    ("pipeline", {"budget_s"}),
])
def test_quick_benchmark_writes_tidy_csv(quick_run, name, extra):
    rows = list(csv.DictReader(open(quick_run / f"{name}.csv")))
    assert rows
    assert set(BASE_COLUMNS) | extra <= set(rows[0])
    if name in ("netvlad", "extraction", "mining", "eval"):
        medians = [r for r in rows if r["repeat"] == "median"]
        assert medians and all(float(r["seconds"]) > 0 and float(r["ratio"]) > 0 for r in medians)


def test_summary_lists_goals(quick_run):
    rows = list(csv.DictReader(open(quick_run / "summary.csv")))
    goals = {r["impl"] for r in rows}
    assert any(g.startswith("NetVLAD") for g in goals) and any(g.startswith("mining") for g in goals)
    assert (quick_run / "summary.md").read_text().startswith("| goal |")


def test_reference_netvlad_matches_project():
    from benchmarks.bench_netvlad import Setup, check_same

    check_same(Setup(B=2, K=4, D=8, H=3, W=5))


def test_reference_miner_matches_project():
    import numpy as np

    from benchmarks.bench_mining import check_same, make_split

    tuples, cache = make_split(200, 12, 16)
    check_same(tuples, cache, np.arange(12))


# --------------------------------------------------------------------------- issue 16: data path and torchrun


def _quick(tmp_path, name) -> tuple[list[dict], list[dict]]:
    """``run_all --quick --only NAME`` into ``tmp_path``: (its rows, the summary's rows)."""
    run_all.main(["--quick", "--out", str(tmp_path), "--only", name])
    return (list(csv.DictReader(open(tmp_path / f"{name}.csv"))),
            list(csv.DictReader(open(tmp_path / "summary.csv"))))


def test_quick_datapath_rows(tmp_path):
    # the benchmark asserts first that 0 and 2 workers give identical batches and that
    # normalize_images(uint8) is the float path bit for bit: finishing means both held
    rows, summary = _quick(tmp_path, "datapath")
    medians = {(r["case"].split("_jpeg")[0], r["impl"]): r for r in rows if r["repeat"] == "median"}
    assert set(medians) == {("workers", "workers_0"), ("workers", "workers_2"), ("uint8_vs_float", "float"),
                            ("uint8_vs_float", "uint8"), ("uint8_vs_float", "uint8_normalized_cpu")}
    extra = {"images", "images_per_s", "images_per_cpu_s", "cpu_seconds", "bytes_per_image"}
    assert set(BASE_COLUMNS) | extra <= set(rows[0])
    assert all(float(r["images_per_s"]) > 0 and float(r["images_per_cpu_s"]) > 0 for r in medians.values())
    w2 = medians["workers", "workers_2"]
    assert float(w2["first_batch_s"]) > 0 and float(w2["images_per_s_after_first_batch"]) > 0
    nbytes = {impl: int(r["bytes_per_image"]) for (case, impl), r in medians.items() if case == "uint8_vs_float"}
    assert nbytes["float"] == 4 * nbytes["uint8"] == 4 * nbytes["uint8_normalized_cpu"]
    goals = {r["impl"] for r in summary}
    assert any(g.startswith("data path, JPEG decode: images/s, 2 workers") for g in goals)
    assert any(g.startswith("data path: CPU time per image") for g in goals)


def test_datapath_identity_checks_catch_a_difference():
    import torch

    from benchmarks.bench_datapath import check_same
    from repro.data.images import normalize_images

    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    idx = torch.arange(2).numpy()
    other = images.clone()
    other[1, 2, 3, 4] ^= 1
    check_same([(images, idx)], [(images.clone(), idx)])
    check_same([(images, idx)], [(normalize_images(images), idx)], normalize=True)
    with pytest.raises(AssertionError):
        check_same([(images, idx)], [(other, idx)])
    with pytest.raises(AssertionError):
        check_same([(images, idx)], [(normalize_images(other), idx)], normalize=True)


def test_quick_ddp_rows(tmp_path):
    # the benchmark asserts that 2 torchrun ranks give the 1-thread process's losses, recall and ranks
    rows, summary = _quick(tmp_path, "ddp")
    medians = {r["impl"]: r for r in rows if r["repeat"] == "median"}
    assert set(medians) == {"1_process_1_thread", "2_ranks_1_thread"}
    assert set(BASE_COLUMNS) | {"command_seconds", "processes", "threads_per_process", "same_results"} <= set(rows[0])
    assert all(r["same_results"] == "True" for r in rows)
    two = medians["2_ranks_1_thread"]
    assert (two["processes"], two["threads_per_process"]) == ("2", "1")
    assert float(two["seconds"]) > 0 and float(two["command_seconds"]) > float(two["seconds"])
    assert any(r["impl"].startswith("torchrun, 2 CPU ranks / 1 process 1 thread") for r in summary)


def test_ddp_results_leave_out_only_times():
    from benchmarks.bench_ddp import results

    record = {"init": {"alpha": 1.0}, "best_epoch": 1, "test_untrained": None, "test_whitened": None,
              "epochs": [{"epoch": 1, "loss": 0.5, "seconds": 3.0, "refresh_seconds": 1.0,
                          "val": {"recall": {"1": 50.0}, "seconds": 2.0}}],
              "test": {"recall": {"1": 40.0}, "ranks": [1, 3], "seconds": 1.0}, "wall_seconds": 9.0}
    slower = json.loads(json.dumps(record).replace("3.0", "30.0").replace("2.0", "20.0"))
    assert results(record) == results(slower)
    assert results(record)["epochs"][0] == {"epoch": 1, "loss": 0.5, "val": {"recall": {"1": 50.0}}}
    assert results(record) != results({**record, "test": {**record["test"], "ranks": [1, 4]}})
