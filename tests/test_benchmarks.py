"""The benchmark scripts run on tiny shapes and write tidy CSVs; their
reference implementations agree with the project's (asserted inside each
benchmark). No timing is asserted here: speed goals live in `make bench`."""
import csv
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
