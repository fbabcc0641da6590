"""The synthetic city in the real datasets' on-disk layouts (repro.data.synthetic.layouts):
the real loaders read it unchanged, names and geometry match the real sets, deterministic, reused."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repro.data.datasets import check_evaluable, load_split
from repro.data.ground_truth import panorama_ids
from repro.data.synthetic import CONDITIONS, LAYOUTS, load_query_conditions, main, make_layout_city
from repro.errors import ConfigError, DatasetError

SIZE = (48, 64)          # (H, W): small, so a whole layout renders in well under a second
ARGS = {
    "pittsburgh": dict(places=2, query_places=2, views_per_query_place=3),
    "tokyo247": dict(places=3, query_places=2),
    "tokyoTM": dict(places=2, query_places=2, views_per_query_place=3, captures=3),
}
DATASET = {"pittsburgh": "pitts30k", "tokyo247": "tokyo247", "tokyoTM": "tokyoTM"}
SPLITS = {"pittsburgh": ("train", "val", "test"), "tokyo247": ("test",), "tokyoTM": ("train", "val")}

PITTS_NAME = re.compile(r"^(\d{3})/(\d{6})_pitch([12])_yaw([1-9]|1[0-2])\.jpg$")
TOKYO_DB_NAME = re.compile(r"^(\d{5})/(\d{7})_012_(\d{3})\.jpg$")
TOKYO_Q_NAME = re.compile(r"^\d{5}\.jpg$")
TM_NAME = re.compile(r"^images/(\d{5})/(\d{6})_(\d{5})_(\d{3})\.jpg$")


def _make(root, layout, **kw):
    args = {**ARGS.get(layout, {}), "preset": "tiny", "seed": 0, "image_size": SIZE, "workers": 1, **kw}
    return make_layout_city(root, layout, **args)


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    """One small city per layout, generated once for this module."""
    base = tmp_path_factory.mktemp("layouts")
    return {layout: _make(base / layout, layout) for layout in LAYOUTS}


def _files(root: Path) -> dict[str, bytes]:
    """Every generated file except the manifest (it holds timings) and the layout npz."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "city_layout.npz")}


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


# ----------------------------------------------------------------------------
# each layout reads unchanged with the real loaders

def test_pittsburgh_loads_unchanged(cities):
    root = cities["pittsburgh"]
    all_db = set()
    for split in SPLITS["pittsburgh"]:
        ps = load_split("pitts30k", root, split)
        db = ps.dbstruct
        assert Path(ps.meta["mat"]) == root / "datasets" / f"pitts30k_{split}.mat"
        assert db.which_set == split and not db.has_time_stamps
        assert (db.pos_dist_thr, db.pos_dist_sq_thr, db.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)
        assert (ps.num_db, ps.num_q) == (2 * 24, 2 * 3)
        assert all(p.is_file() for p in ps.db_paths + ps.q_paths)
        assert all(p.parent.parent == root for p in ps.db_paths)
        assert all(p.parent.parent == root / "queries_real" for p in ps.q_paths)
        parsed = []
        for fn in db.db_image_fns:
            m = PITTS_NAME.match(fn)
            assert m, fn
            folder, pid, pitch, yaw = (int(g) for g in m.groups())
            assert folder == pid // 1000
            parsed.append((pid, pitch, yaw))
        order = [(pitch, yaw) for pitch in (1, 2) for yaw in range(1, 13)]
        pids = []
        for p in range(2):                   # 24 views per place, one position, the real order
            rows = parsed[24 * p:24 * (p + 1)]
            assert len({r[0] for r in rows}) == 1
            assert [r[1:] for r in rows] == order
            assert (db.utm_db[24 * p:24 * (p + 1)] == db.utm_db[24 * p]).all()
            pids.append(rows[0][0])
        assert pids == sorted(pids) and len(set(pids)) == 2
        q = [PITTS_NAME.match(fn) for fn in db.q_image_fns]
        assert all(q), db.q_image_fns
        q_ids = [int(m.group(2)) for m in q]
        assert q_ids == sorted(q_ids) and len(set(q_ids)) == 2
        for qid in set(q_ids):               # a query place: distinct views, one position
            idx = [i for i, v in enumerate(q_ids) if v == qid]
            assert len({(q[i].group(3), q[i].group(4)) for i in idx}) == 3
            assert (db.utm_q[idx] == db.utm_q[idx[0]]).all()
        all_db |= set(db.db_image_fns)
    assert len(all_db) == 3 * 48             # splits never share a file name


def test_pitts250k_name(tmp_path):
    root = _make(tmp_path / "p250", "pittsburgh", dataset_name="pitts250k", query_places=1,
                 views_per_query_place=1)
    assert sorted(p.name for p in (root / "datasets").iterdir()) == [
        "pitts250k_test.mat", "pitts250k_train.mat", "pitts250k_val.mat"]
    assert load_split("pitts250k", root, "val").num_q == 1


def test_tokyo247_loads_unchanged(cities):
    root = cities["tokyo247"]
    ps = load_split("tokyo247", root, "test")
    db = ps.dbstruct
    assert Path(ps.meta["mat"]) == root / "datasets" / "tokyo247.mat" and db.which_set == "test"
    assert (ps.num_db, ps.num_q) == (3 * 12, 2 * 3)
    assert (ps.panorama_ids == np.repeat(np.arange(3), 12)).all()
    assert (panorama_ids(db.utm_db, 12) == ps.panorama_ids).all()
    names = [TOKYO_DB_NAME.match(fn) for fn in db.db_image_fns]
    assert all(names), db.db_image_fns[:3]
    assert all(int(m.group(1)) == int(m.group(2)) // 100 for m in names)
    for p in range(3):
        block = names[12 * p:12 * (p + 1)]
        assert [int(m.group(3)) for m in block] == list(range(0, 360, 30))
        assert len({m.group(2) for m in block}) == 1
    assert all(p.parent == root / "247query_subset_v2" and p.is_file() for p in ps.q_paths)
    assert db.q_image_fns == [f"{i:05d}.jpg" for i in range(1, 7)]
    assert all(TOKYO_Q_NAME.match(fn) for fn in db.q_image_fns)
    # the real order: day, sunset, night per query place, one position per place
    conds = load_query_conditions(root / "synthetic", "test")
    assert list(conds["condition"]) == ["day", "dusk", "night"] * 2
    assert list(conds["tokyo_condition"]) == ["day", "sunset", "night"] * 2
    for q in range(2):
        assert (db.utm_q[3 * q:3 * q + 3] == db.utm_q[3 * q]).all()
    # queries come in two sizes: image_size and its transpose
    sizes = [Image.open(p).size for p in ps.q_paths]
    assert sizes == [(SIZE[1], SIZE[0]), (SIZE[0], SIZE[1])] * 3


def test_tokyo_tm_loads_unchanged(cities):
    root = cities["tokyoTM"]
    for split in SPLITS["tokyoTM"]:
        ps = load_split("tokyoTM", root, split)
        db = ps.dbstruct
        assert Path(ps.meta["mat"]) == root / "datasets" / f"tokyoTM_{split}.mat" and db.which_set == split
        assert (ps.num_db, ps.num_q) == (2 * 3 * 12, 2 * 3)
        assert db.has_time_stamps
        assert db.db_time_stamp.shape == (72,) and db.q_time_stamp.shape == (6,)
        parsed = []
        for fn, ts in zip(db.db_image_fns, db.db_time_stamp):
            m = TM_NAME.match(fn)
            assert m, fn
            folder, stamp, place, yaw = (int(g) for g in m.groups())
            assert folder == place and stamp == ts and 200001 <= stamp <= 203012
            parsed.append((place, stamp, yaw))
        for c in range(6):                   # a capture: 12 cut-outs, one position, one time
            rows = parsed[12 * c:12 * (c + 1)]
            assert [r[2] for r in rows] == list(range(0, 360, 30))
            assert len({r[:2] for r in rows}) == 1
            assert (db.utm_db[12 * c:12 * (c + 1)] == db.utm_db[12 * c]).all()
        for p in range(2):                   # several capture times per place, at different spots
            rows = parsed[36 * p:36 * (p + 1)]
            assert len({r[1] for r in rows}) == 3
            spots = db.utm_db[36 * p:36 * (p + 1):12]
            d = _dist(spots, spots)[np.triu_indices(3, 1)]
            assert (d >= 1.5).all() and (d <= 10.0).all()
        # queries are database images: same files, positions and capture times
        index = {fn: i for i, fn in enumerate(db.db_image_fns)}
        assert all(fn in index for fn in db.q_image_fns)
        j = np.array([index[fn] for fn in db.q_image_fns])
        assert (db.utm_q == db.utm_db[j]).all() and (db.q_time_stamp == db.db_time_stamp[j]).all()
        assert ps.q_paths == [ps.db_paths[i] for i in j]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_images_are_jpeg_at_requested_size(cities, layout):
    root = cities[layout]
    for split in SPLITS[layout]:
        ps = load_split(DATASET[layout], root, split)
        for p in ps.db_paths[:3] + ps.db_paths[-2:] + ps.q_paths[:3]:
            with Image.open(p) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert im.size in ((SIZE[1], SIZE[0]), (SIZE[0], SIZE[1]))
                if p in ps.db_paths or layout != "tokyo247":
                    assert im.size == (SIZE[1], SIZE[0])
                im.load()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_query_has_positives_and_negatives(cities, layout):
    """Within 25 m of a database image (evaluation), a potential training positive
    with 1 m < d <= 10 m (TokyoTM: of another capture time), and negatives beyond 25 m."""
    for split in SPLITS[layout]:
        ps = load_split(DATASET[layout], cities[layout], split)
        assert check_evaluable(ps) == 0
        d = _dist(ps.utm_q, ps.utm_db)
        assert (d.min(1) <= 25.0).all()
        assert (d.max(1) > 25.0).all()
        train_pos = (d > 1.0) & (d <= 10.0)
        if layout == "tokyoTM":
            train_pos &= ps.dbstruct.q_time_stamp[:, None] != ps.dbstruct.db_time_stamp[None, :]
        else:       # queries are 1.5-10 m from a database place
            assert ((d.min(1) >= 1.5 - 1e-9) & (d.min(1) <= 10.0)).all()
        assert train_pos.any(1).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_query_conditions_csv(cities, layout):
    root = cities[layout]
    for split in SPLITS[layout]:
        ps = load_split(DATASET[layout], root, split)
        df = load_query_conditions(root / "synthetic", split)
        assert list(df["image"]) == ps.dbstruct.q_image_fns
        assert set(df["condition"]) <= set(CONDITIONS)
        assert np.allclose(df[["easting", "northing"]].to_numpy(), ps.utm_q)
        dbcsv = (root / "synthetic" / f"{split}_database.csv").read_text().splitlines()
        assert len(dbcsv) == 1 + ps.num_db
    if layout == "tokyoTM":
        assert set(df["condition"]) <= {"day", "occluded"}      # Time Machine captures are all daytime


def test_manifest(cities):
    for layout, root in cities.items():
        man = json.loads((root / "manifest.json").read_text())
        assert man["complete"] is True and man["synthetic"] is True
        assert (man["layout"], man["dataset_name"], man["seed"]) == (layout, DATASET[layout], 0)
        assert man["image_size_hw"] == list(SIZE) and man["config_hash"]
        assert sorted(man["counts"]) == sorted(SPLITS[layout])
        assert man["request"]["places"] == ARGS[layout]["places"]
        assert man["timings"]["total_s"] > 0


# ----------------------------------------------------------------------------
# determinism, reuse, refusal, errors

@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_arguments_same_bytes(cities, layout, tmp_path):
    again = _make(tmp_path / "again", layout)
    a, b = _files(cities[layout]), _files(again)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    other = _make(tmp_path / "other", layout, seed=1)
    mats = [k for k in a if k.endswith(".mat")]
    assert mats and all(a[k] != (other / k).read_bytes() for k in mats)


def test_second_call_reuses_force_regenerates(cities):
    root = cities["tokyo247"]
    before = (root / "manifest.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert _make(root, "tokyo247") == root
    assert time.perf_counter() - t0 < 1.0
    assert (root / "manifest.json").stat().st_mtime_ns == before
    old = _files(root)
    assert _make(root, "tokyo247", force=True) == root
    assert (root / "manifest.json").stat().st_mtime_ns != before
    assert _files(root) == old
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []   # no temp folders left


def test_changed_arguments_regenerate(tmp_path):
    root = _make(tmp_path / "c", "tokyo247", places=2, query_places=1)
    assert load_split("tokyo247", root, "test").num_db == 24
    _make(root, "tokyo247", places=3, query_places=1)
    assert load_split("tokyo247", root, "test").num_db == 36


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="manifest"):
        _make(tmp_path, "pittsburgh")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    from repro.data.synthetic import layouts

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(layouts, "_write", boom)
    with pytest.raises(KeyboardInterrupt):
        _make(tmp_path / "city", "tokyo247")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout, kwargs, match", [
    ("paris", {}, "unknown synthetic dataset layout"),
    ("pittsburgh", {"places": 1}, "places"),
    ("pittsburgh", {"places": 2.5}, "places"),
    ("pittsburgh", {"query_places": 0}, "query_places"),
    ("pittsburgh", {"views_per_query_place": 25}, "views_per_query_place"),
    ("pittsburgh", {"dataset_name": "tokyo247"}, "pitts30k"),
    ("pittsburgh", {"captures": 2}, "captures applies to the tokyoTM layout only"),
    ("tokyo247", {"views_per_query_place": 4}, "views_per_query_place"),
    ("tokyoTM", {"captures": 1}, "captures"),
    ("tokyoTM", {"query_places": 3}, "query_places"),
    ("tokyo247", {"views_per_place": 6}, "views_per_place"),
    ("pittsburgh", {"views_per_place": 25}, "views_per_place"),
    ("tokyoTM", {"views_per_place": 2, "views_per_query_place": 3}, "views_per_query_place"),
    ("tokyoTM", {"image_size": (48,)}, "image_size"),
    ("tokyoTM", {"height": 48}, "image_size"),
    ("tokyoTM", {"image_size": (8, 8)}, "too small"),
    ("pittsburgh", {"n_headigns": 3}, "unknown synthetic city option"),
    ("pittsburgh", {"places": 50}, r"room for only \d+ places at least 40 m apart"),
])
def test_config_errors(tmp_path, layout, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _make(tmp_path / "x", layout, **kwargs)
    assert list(tmp_path.iterdir()) == []          # failed before writing anything


def test_cli_layout(tmp_path, capsys):
    root = tmp_path / "cli"
    argv = [str(root), "--layout", "tokyo247", "--preset", "tiny", "--places", "2", "--query-places", "1",
            "--image-size", "48", "64", "--workers", "1", "-q"]
    assert main(argv) == 0
    assert "datasets/tokyo247.mat" in capsys.readouterr().out
    assert load_split("tokyo247", root, "test").num_q == 3
    assert main([str(tmp_path / "bad"), "--layout", "pittsburgh", "--preset", "tiny", "--places", "1", "-q"]) == 2
    assert "places" in capsys.readouterr().err


def test_fewer_views_per_place_keep_the_real_names_and_order(tmp_path):
    """A rehearsal shrinks the database with views_per_place: evenly spread views, real names, real order."""
    root = _make(tmp_path / "p", "pittsburgh", views_per_place=8)
    split = load_split("pitts30k", root, "train")
    views = [(int(m[3]), int(m[4])) for m in (PITTS_NAME.match(f) for f in split.dbstruct.db_image_fns)]
    assert split.num_db == 2 * 8 and all(PITTS_NAME.match(f) for f in split.dbstruct.db_image_fns)
    assert views[:8] == [(1, 1), (1, 4), (1, 7), (1, 10), (2, 1), (2, 4), (2, 7), (2, 10)] == views[8:]
    tm = _make(tmp_path / "tm", "tokyoTM", views_per_place=6, views_per_query_place=2)
    s = load_split("tokyoTM", tm, "train")
    yaws = sorted({int(TM_NAME.match(f)[4]) for f in s.dbstruct.db_image_fns})
    assert s.num_db == 2 * 3 * 6 and yaws == [0, 60, 120, 180, 240, 300]
    assert set(s.dbstruct.q_image_fns) <= set(s.dbstruct.db_image_fns)
