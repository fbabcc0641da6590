"""The synthetic city generator (issue 3): layout, determinism, geometry, round trips."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repro.data.dbstruct import load_dbstruct
from repro.data.synthetic import (CONDITIONS, PRESETS, SPLITS, default_city_root, get_config,
                                  load_query_conditions, main, make_synthetic_city)
from repro.data.synthetic import generate as gen
from repro.errors import ConfigError, DatasetError


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny preset, seed 0, generated once for the whole session."""
    root = tmp_path_factory.mktemp("synthetic") / "tiny_seed0"
    t0 = time.perf_counter()
    make_synthetic_city(root, preset="tiny", seed=0)
    return root, time.perf_counter() - t0


@pytest.fixture(scope="session")
def tiny_root(tiny):
    return tiny[0]


def _all_files(root: Path) -> dict[str, bytes]:
    """Every generated file except the manifest (which holds timings)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "city_layout.npz")}


def test_tiny_generates_quickly(tiny):
    root, elapsed = tiny
    man = json.loads((root / "manifest.json").read_text())
    print(f"tiny preset: {elapsed:.2f} s, {man['timings']}")
    assert man["complete"] and man["preset"] == "tiny" and man["seed"] == 0
    assert elapsed < 60, "tiny preset should take a few seconds"


def test_layout_matches_manifest(tiny_root):
    man = json.loads((tiny_root / "manifest.json").read_text())
    cfg = PRESETS["tiny"]
    for split in SPLITS:
        db = load_dbstruct(tiny_root / f"{split}.mat")
        assert db.which_set == split
        assert db.num_images == man["counts"][split]["database"] == len(db.db_image_fns)
        assert db.num_queries == man["counts"][split]["queries"] == cfg.queries_per_split
        assert db.num_images >= 50
        assert (db.pos_dist_thr, db.pos_dist_sq_thr, db.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)
        # UTM-like coordinates
        assert db.utm_db[:, 0].min() > 500_000 and db.utm_db[:, 1].min() > 4_000_000
        for fn in db.db_image_fns[:3] + db.db_image_fns[-2:]:
            img = Image.open(tiny_root / "database" / fn)
            assert img.size == (cfg.width, cfg.height) and img.mode == "RGB"
        for fn in db.q_image_fns[:3]:
            assert (tiny_root / "queries" / fn).is_file()
        n_db = len(list((tiny_root / "database" / split).glob("*.png")))
        n_q = len(list((tiny_root / "queries" / split).glob("*.png")))
        assert (n_db, n_q) == (db.num_images, db.num_queries)


def test_second_call_reuses(tiny_root):
    before = (tiny_root / "manifest.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert make_synthetic_city(tiny_root, preset="tiny", seed=0) == tiny_root
    assert time.perf_counter() - t0 < 1.0
    assert (tiny_root / "manifest.json").stat().st_mtime_ns == before


def test_same_seed_same_bytes_different_seed_differs(tiny_root, tmp_path):
    again = make_synthetic_city(tmp_path / "again", preset="tiny", seed=0)
    a, b = _all_files(tiny_root), _all_files(again)
    assert sorted(a) == sorted(b)
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"same seed, different bytes: {differing[:5]}"

    other = make_synthetic_city(tmp_path / "other", preset="tiny", seed=1)
    c = _all_files(other)
    for split in SPLITS:
        assert c[f"{split}.mat"] != a[f"{split}.mat"]
    common = [k for k in a if k.endswith(".png") and k in c]
    assert common and sum(a[k] != c[k] for k in common) > 0.95 * len(common)


def _positions(root):
    return {s: np.vstack([load_dbstruct(root / f"{s}.mat").utm_db, load_dbstruct(root / f"{s}.mat").utm_q])
            for s in SPLITS}


def test_splits_are_geographically_disjoint(tiny_root):
    pos = _positions(tiny_root)
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1:]:
            d = np.sqrt(((pos[s][:, None, :] - pos[t][None, :, :]) ** 2).sum(-1)).min()
            assert d > 25.0, f"{s} and {t} are only {d:.1f} m apart"


def test_every_query_has_a_positive(tiny_root):
    for split in SPLITS:
        db = load_dbstruct(tiny_root / f"{split}.mat")
        d2 = ((db.utm_q[:, None, :] - db.utm_db[None, :, :]) ** 2).sum(-1)
        assert (d2.min(1) <= db.pos_dist_sq_thr).all()
        # most queries have a training positive within 10 m
        assert (d2.min(1) <= db.non_triv_pos_dist_sq_thr).mean() >= 0.9
        # ... but none sits exactly on a database place
        assert d2.min(1).min() > 0.5


def test_query_conditions_cover_every_query(tiny_root):
    for split in SPLITS:
        db = load_dbstruct(tiny_root / f"{split}.mat")
        df = load_query_conditions(tiny_root, split)
        assert len(df) == db.num_queries
        assert list(df["image"]) == db.q_image_fns
        assert set(df["condition"]) == set(CONDITIONS)
        np.testing.assert_allclose(df[["easting", "northing"]].to_numpy(), db.utm_q, atol=1e-3)
        for col in ("heading_deg", "height_m", "tilt_deg", "fov_deg", "nearest_db_m", "occluded_frac"):
            assert df[col].notna().all()
        occ = df[df["condition"] == "occluded"]
        assert (occ["occluded_frac"] > 0).mean() >= 0.5
        assert (df[df["condition"] == "fog"]["fog_visibility_m"] > 0).all()


def test_load_split_round_trip(tiny_root):
    datasets = pytest.importorskip("repro.data.datasets", reason="repro.data.datasets not written yet")
    for split in SPLITS:
        ps = datasets.load_split("synthetic", tiny_root, split)
        db = load_dbstruct(tiny_root / f"{split}.mat")
        assert ps.num_db == db.num_images and ps.num_q == db.num_queries
        assert all(p.is_file() for p in ps.db_paths[:5] + ps.q_paths[:5])
        assert all(len(p) > 0 for p in ps.positives)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(gen, "_generate", boom)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_city(tmp_path / "city", preset="tiny", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not a city")
    with pytest.raises(DatasetError, match="manifest"):
        make_synthetic_city(tmp_path, preset="tiny", seed=0)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown synthetic city preset"):
        get_config("huge")
    with pytest.raises(ConfigError, match="split_gap"):
        get_config("tiny", split_gap=20.0)
    with pytest.raises(ConfigError, match="unknown condition"):
        get_config("tiny", condition_mix=(("snow", 1.0),))
    with pytest.raises(ConfigError, match="unknown synthetic city option"):
        get_config("tiny", no_such_knob=1)
    assert get_config("default", n_styles=4).config_hash() != get_config("default").config_hash()


def test_presets_and_default_root():
    assert set(PRESETS) == {"tiny", "default", "large"}
    assert PRESETS["default"].height == 120 and PRESETS["default"].width == 160
    root = default_city_root("default", 0)
    assert root.parts[-3:] == ("cache", "synthetic", "default_seed0")


def test_cli_reuses_existing(tiny_root, capsys):
    assert main([str(tiny_root), "--preset", "tiny", "--seed", "0", "-q"]) == 0
    assert "train:" in capsys.readouterr().out


def test_cli_reports_user_errors(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    assert main([str(tmp_path), "--preset", "tiny", "-q"]) == 2
    assert "manifest" in capsys.readouterr().err
