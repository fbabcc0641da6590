"""load_split on tiny fake layouts, VPR-Bench folders, and real metadata."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repro.data.datasets import DATASETS, load_split
from repro.data.dbstruct import DbStruct, save_dbstruct
from repro.data.vprbench import load_vprbench
from repro.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Database along a street (metres); expected positives within 25 m by hand.
UTM_DB = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0], [100.0, 0.0]]) + [585000.0, 4477000.0]
UTM_Q = np.array([[0.0, 0.0], [28.0, 0.0], [200.0, 0.0]]) + [585000.0, 4477000.0]
EXPECTED_POSITIVES = [[0, 1], [1, 2], []]


def tiny_png(path: Path, value: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def write_dbstruct_layout(root: Path, mat_rel: str, db_dir: str, q_dir: str, which="test") -> DbStruct:
    db = DbStruct(
        which_set=which,
        db_image_fns=[f"000/{i:06d}_pitch1_yaw1.png" for i in range(len(UTM_DB))],
        utm_db=UTM_DB,
        q_image_fns=[f"000/q{i:05d}.png" for i in range(len(UTM_Q))],
        utm_q=UTM_Q,
        num_images=len(UTM_DB),
        num_queries=len(UTM_Q),
    )
    save_dbstruct(root / mat_rel, db)
    for i, f in enumerate(db.db_image_fns):
        tiny_png(root / db_dir / f, i)
    for i, f in enumerate(db.q_image_fns):
        tiny_png(root / q_dir / f, 100 + i)
    return db


def check_split(split, root: Path, db_dir: str, q_dir: str, name: str):
    assert split.name == name
    assert split.db_paths == [root / db_dir / "000" / f"{i:06d}_pitch1_yaw1.png" for i in range(4)]
    assert split.q_paths[2] == root / q_dir / "000" / "q00002.png"
    assert all(p.is_file() for p in split.db_paths + split.q_paths)
    assert [p.tolist() for p in split.positives] == EXPECTED_POSITIVES
    np.testing.assert_array_equal(split.utm_q, UTM_Q)
    assert split.pos_dist_thr == 25.0 and split.dbstruct.num_images == 4


def test_synthetic_layout(tmp_path):
    write_dbstruct_layout(tmp_path, "val.mat", "database", "queries", which="val")
    split = load_split("synthetic", tmp_path, "val")
    check_split(split, tmp_path, "database", "queries", "synthetic_val")
    assert split.panorama_ids is None


@pytest.mark.parametrize("mat_rel", ["datasets/pitts30k_test.mat", "pitts30k_test.mat"])
def test_pitts30k_layout(tmp_path, mat_rel):
    write_dbstruct_layout(tmp_path, mat_rel, "", "queries_real")
    split = load_split("pitts30k", tmp_path, "test")
    check_split(split, tmp_path, "", "queries_real", "pitts30k_test")


def test_tokyo247_layout_has_panoramas(tmp_path):
    # 2 panoramas x 12 cut-outs, all at one position: 24 positives for a query there.
    utm_db = np.repeat(np.array([[0.0, 0.0], [0.0, 0.0]]), 12, axis=0)
    db = DbStruct("test", [f"03814/{i}.png" for i in range(24)], utm_db, ["q0.jpg"], np.zeros((1, 2)), 24, 1)
    save_dbstruct(tmp_path / "datasets" / "tokyo247.mat", db)
    split = load_split("tokyo247", tmp_path, check_files=False)
    assert split.name == "tokyo247_test"
    np.testing.assert_array_equal(split.panorama_ids, np.repeat([0, 1], 12))
    assert split.q_paths == [tmp_path / "247query_subset_v2" / "q0.jpg"]
    assert len(split.positives[0]) == 24
    with pytest.raises(ConfigError, match="valid splits: test"):
        load_split("tokyo247", tmp_path, "train")


def test_missing_data_root_explains_layout(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_split("pitts30k", tmp_path / "nowhere", "test")
    msg = str(err.value)
    assert "nowhere" in msg and "queries_real" in msg and "datasets/pitts30k_{split}.mat" in msg
    assert "https://www.di.ens.fr/willow/research/netvlad/" in msg


def test_missing_mat_lists_paths_tried(tmp_path):
    with pytest.raises(DatasetError, match=r"tried: .*datasets/pitts250k_val\.mat, .*pitts250k_val\.mat"):
        load_split("pitts250k", tmp_path, "val")


def test_missing_images_fail_fast(tmp_path):
    write_dbstruct_layout(tmp_path, "test.mat", "database", "queries")
    (tmp_path / "queries" / "000" / "q00001.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 synthetic test query images .* missing: .*q00001\.png"):
        load_split("synthetic", tmp_path, "test")
    split = load_split("synthetic", tmp_path, "test", check_files=False)  # metadata only
    assert split.num_q == 3


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown dataset 'pitts1M'.*pitts30k.*synthetic.*vprbench"):
        load_split("pitts1M", tmp_path)
    with pytest.raises(ConfigError, match=r"valid splits: train, val, test"):
        load_split("synthetic", tmp_path, "dev")
    assert set(DATASETS) == {"pitts30k", "pitts250k", "tokyo247", "tokyoTM", "synthetic", "vprbench"}


def write_vprbench(root: Path, n_q=3, n_ref=12, gt=None):
    # Unpadded numeric names: numeric order must put 10.jpg after 9.jpg.
    for i in range(n_q):
        tiny_png(root / "query" / f"{i}.jpg", i)
    for i in range(n_ref):
        tiny_png(root / "ref" / f"{i}.jpg", i)
    (root / "ref" / ".DS_Store").write_text("")
    if gt is None:
        gt = [[2, [11, 10]], [0, np.array([0, 1])], [1, 9]]  # rows out of order, a scalar entry
    arr = np.empty((len(gt), 2), dtype=object)
    for r, (qi, refs) in enumerate(gt):
        arr[r, 0], arr[r, 1] = qi, refs
    np.save(root / "ground_truth_new.npy", arr, allow_pickle=True)


def test_vprbench_round_trip(tmp_path):
    write_vprbench(tmp_path)
    b = load_vprbench(tmp_path)
    assert [p.name for p in b.q_paths] == ["0.jpg", "1.jpg", "2.jpg"]
    assert [p.name for p in b.db_paths] == [f"{i}.jpg" for i in range(12)]
    assert [p.tolist() for p in b.positives] == [[0, 1], [9], [10, 11]]
    split = load_split("vprbench", tmp_path, "ignored")
    assert split.utm_db is None and split.num_db == 12
    assert [p.tolist() for p in split.positives] == [[0, 1], [9], [10, 11]]


@pytest.mark.parametrize(
    "gt, pattern",
    [
        ([[0, [0]], [1, [12]], [2, [1]]], r"row 1 \(query 1\): reference index 12 is outside 0..11"),
        ([[0, [0]], [1, [-1]], [2, [1]]], r"reference index -1"),
        ([[0, [0]], [3, [1]], [2, [1]]], r"query indices outside 0..2"),
        ([[0, [0]], [2, [1]]], r"1 of 3 query images have no ground-truth row"),
        ([[0, [0]], [0, [1]], [2, [1]]], r"query index 0 appears in more than one row"),
    ],
)
def test_vprbench_bad_ground_truth(tmp_path, gt, pattern):
    write_vprbench(tmp_path, gt=gt)
    with pytest.raises(DatasetError, match=pattern):
        load_vprbench(tmp_path)


def test_vprbench_missing_parts(tmp_path):
    write_vprbench(tmp_path)
    (tmp_path / "ground_truth_new.npy").unlink()
    with pytest.raises(DatasetError, match="missing ground_truth_new.npy"):
        load_vprbench(tmp_path)
    with pytest.raises(DatasetError, match=r"missing folder 'query/'"):
        load_vprbench(tmp_path / "ref")
    with pytest.raises(DatasetError, match="VPR-Bench folder not found"):
        load_vprbench(tmp_path / "absent")
    with pytest.raises(DatasetError, match=r"data root for 'vprbench' not found: .*absent.*ground_truth_new\.npy"):
        load_split("vprbench", tmp_path / "absent")


def test_real_pittsburgh_metadata_via_load_split():
    root = SHARED / "pittsburgh"
    if not (root / "pitts30k_test.mat").is_file():
        pytest.skip(f"real Pittsburgh metadata not available at {root} (it lives beside the project checkout only)")
    split = load_split("pitts30k", root, "test", check_files=False)
    assert (split.num_db, split.num_q) == (10000, 6816)
    assert min(len(p) for p in split.positives) >= 1  # README: every query has a match within 25 m
    assert split.q_paths[0] == root / "queries_real" / "000" / "000546_pitch1_yaw1.jpg"
    with pytest.raises(DatasetError, match=r"10000 of 10000 pitts30k test database images \(under .*\) are missing"):
        load_split("pitts30k", root, "test")  # no images in ../shared


def test_tokyo247_database_as_png_where_the_mat_lists_jpg(tmp_path):
    """The Tokyo 24/7 archives hold .png files under the .mat's .jpg names: the loader takes them."""
    from repro.data.synthetic import make_layout_city

    root = make_layout_city(tmp_path / "t", "tokyo247", preset="tiny", places=2, query_places=1,
                            image_size=(48, 64), workers=1)
    jpg = load_split("tokyo247", root, "test")
    for p in jpg.db_paths[:12]:  # one panorama converted, as the archives have it
        p.rename(p.with_suffix(".png"))
    got = load_split("tokyo247", root, "test")
    assert [p.suffix for p in got.db_paths] == [".png"] * 12 + [".jpg"] * (jpg.num_db - 12)
    assert [p.with_suffix("") for p in got.db_paths] == [p.with_suffix("") for p in jpg.db_paths]
    got.db_paths[12].unlink()  # a file absent in both forms is still an error
    with pytest.raises(DatasetError, match="1 of"):
        load_split("tokyo247", root, "test")
