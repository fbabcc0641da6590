"""The calibration table: structure and per-condition consistency."""
import numpy as np
import pandas as pd
import pytest

from repro.data.synthetic import load_query_conditions
from repro.data.synthetic.calibration import calibrate_city, thumbnails

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")


def test_calibration_table(tiny_city, tmp_path):
    out = tmp_path / "calib.csv"
    table = calibrate_city("tiny", 0, "test", models=[("alexnet", "fmax")], out=str(out), root=tiny_city)
    saved = pd.read_csv(out)
    assert len(saved) == len(table)
    assert set(saved["method"]) == {"raw pixels 32x24", "random alexnet + fmax"}
    conditions = load_query_conditions(tiny_city, "test")["condition"]
    counts = conditions.value_counts()
    for method, rows in saved.groupby("method"):
        for n, at_n in rows.groupby("n"):
            overall = at_n.loc[at_n.condition == "all", "recall_pct"].item()
            per = at_n[at_n.condition != "all"].set_index("condition")
            assert set(per.index) == set(counts.index)
            # the overall recall is the query-weighted mean of the per-condition recalls
            weighted = sum(per.loc[c, "recall_pct"] * counts[c] for c in counts.index) / counts.sum()
            assert overall == pytest.approx(weighted)
            assert (per["num_queries"] == counts[per.index].to_numpy()).all()
    # the per-query ranks beside the CSV give back every overall recall
    import json

    from repro.data.synthetic.calibration import ranks_path
    ranks = json.loads(ranks_path(out).read_text())["ranks"]
    assert set(ranks) == set(saved["method"])
    for method, rk in ranks.items():
        rk = np.asarray(rk)
        assert len(rk) == len(conditions)
        for row in saved[(saved.method == method) & (saved.condition == "all")].itertuples():
            assert row.recall_pct == pytest.approx(100.0 * np.mean((rk >= 1) & (rk <= row.n)))


def test_thumbnails_are_unit_zero_mean(tiny_city):
    import glob
    paths = sorted(glob.glob(str(tiny_city / "database" / "test" / "*.png")))[:5]
    x = thumbnails(paths)
    assert x.shape == (5, 32 * 24 * 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-6)
