"""dbStruct .mat reading/writing: round trip, malformed files, real Pittsburgh."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from repro.data.dbstruct import DbStruct, load_dbstruct, save_dbstruct
from repro.errors import DatasetError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PITTS = SHARED / "pittsburgh"

# README of ../shared/data: (database images, queries) per file.
PITTS_COUNTS = {
    "pitts30k_train": (10000, 7416),
    "pitts30k_val": (10000, 7608),
    "pitts30k_test": (10000, 6816),
    "pitts250k_train": (91464, 7824),
    "pitts250k_val": (78648, 7608),
    "pitts250k_test": (83952, 8280),
}


def random_dbstruct(rng, n_db=37, n_q=11, which="val") -> DbStruct:
    return DbStruct(
        which_set=which,
        db_image_fns=[f"{i // 10:03d}/{i:06d}_pitch{i % 2 + 1}_yaw{i % 12 + 1}.jpg" for i in range(n_db)],
        utm_db=rng.uniform([5e5, 4e6], [5.1e5, 4.1e6], size=(n_db, 2)),
        q_image_fns=[f"q/{i:05d}.jpg" for i in range(n_q)],
        utm_q=rng.uniform([5e5, 4e6], [5.1e5, 4.1e6], size=(n_q, 2)),
        num_images=n_db,
        num_queries=n_q,
        pos_dist_thr=25.0,
        pos_dist_sq_thr=625.0,
        non_triv_pos_dist_sq_thr=100.0,
    )


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    db = random_dbstruct(rng)
    save_dbstruct(tmp_path / "sub" / "x.mat", db)
    back = load_dbstruct(tmp_path / "sub" / "x.mat")
    assert back.which_set == "val"
    assert back.db_image_fns == db.db_image_fns
    assert back.q_image_fns == db.q_image_fns
    np.testing.assert_array_equal(back.utm_db, db.utm_db)  # float64, bit exact
    np.testing.assert_array_equal(back.utm_q, db.utm_q)
    assert back.utm_db.shape == (37, 2) and back.utm_q.shape == (11, 2)
    assert (back.num_images, back.num_queries) == (37, 11)
    assert (back.pos_dist_thr, back.pos_dist_sq_thr, back.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)
    assert not (tmp_path / "sub" / "x.mat.tmp").exists()


def _rewrite(src: Path, dst: Path, drop=(), **replace):
    """Copy a dbStruct .mat, dropping or replacing fields (to make bad files)."""
    s = scipy.io.loadmat(src)["dbStruct"][0, 0]
    fields = {k: s[k] for k in s.dtype.names if k not in drop}
    fields.update(replace)
    scipy.io.savemat(dst, {"dbStruct": fields})


def test_missing_field_names_the_field(tmp_path):
    save_dbstruct(tmp_path / "ok.mat", random_dbstruct(np.random.default_rng(1)))
    _rewrite(tmp_path / "ok.mat", tmp_path / "bad.mat", drop=("utmQ",))
    with pytest.raises(DatasetError, match=r"bad\.mat.*utmQ"):
        load_dbstruct(tmp_path / "bad.mat")


def test_count_disagreeing_with_lists(tmp_path):
    save_dbstruct(tmp_path / "ok.mat", random_dbstruct(np.random.default_rng(2)))
    _rewrite(tmp_path / "ok.mat", tmp_path / "bad.mat", numImages=np.array([[99.0]]))
    with pytest.raises(DatasetError, match=r"37 database image names but the count field says 99"):
        load_dbstruct(tmp_path / "bad.mat")


def test_positions_disagreeing_with_names(tmp_path):
    save_dbstruct(tmp_path / "ok.mat", random_dbstruct(np.random.default_rng(3)))
    _rewrite(tmp_path / "ok.mat", tmp_path / "bad.mat", utmQ=np.zeros((2, 5)))
    with pytest.raises(DatasetError, match=r"11 query image names but 5 query UTM positions"):
        load_dbstruct(tmp_path / "bad.mat")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match=r"not found.*nope\.mat"):
        load_dbstruct(tmp_path / "nope.mat")
    (tmp_path / "junk.mat").write_bytes(b"this is not a mat file")
    with pytest.raises(DatasetError, match=r"junk\.mat"):
        load_dbstruct(tmp_path / "junk.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(DatasetError, match=r"no variable 'dbStruct'.*foo"):
        load_dbstruct(tmp_path / "other.mat")


def test_save_refuses_inconsistent_struct(tmp_path):
    db = random_dbstruct(np.random.default_rng(4))
    db.num_queries = 3
    with pytest.raises(DatasetError):
        save_dbstruct(tmp_path / "x.mat", db)
    assert not (tmp_path / "x.mat").exists()


@pytest.mark.parametrize("name", sorted(PITTS_COUNTS))
def test_real_pittsburgh_counts(name):
    path = PITTS / f"{name}.mat"
    if not path.is_file():
        pytest.skip(f"real Pittsburgh metadata not available at {path} (only beside the project checkout)")
    db = load_dbstruct(path)
    assert (db.num_images, db.num_queries) == PITTS_COUNTS[name]
    assert (len(db.db_image_fns), len(db.q_image_fns)) == PITTS_COUNTS[name]
    assert db.which_set == name.split("_")[1]
    assert (db.pos_dist_thr, db.pos_dist_sq_thr, db.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)
    # README: each place is 24 images (2 pitches x 12 yaws) at one position.
    # Places are named by the file stem before '_pitch'; pitts30k keeps only
    # 16 images of its last place (10000 = 416 * 24 + 16).
    assert db.db_image_fns[0].endswith("_pitch1_yaw1.jpg")
    _, first, place, per_place = np.unique(
        [f.rsplit("_pitch", 1)[0] for f in db.db_image_fns],
        return_index=True, return_inverse=True, return_counts=True,
    )
    assert per_place.max() == 24 and (per_place == 24).sum() >= len(per_place) - 1
    np.testing.assert_array_equal(db.utm_db, db.utm_db[first[place]])
    # UTM zone 17N around Pittsburgh: easting ~585 km, northing ~4477 km.
    assert 5.5e5 < db.utm_db[:, 0].mean() < 6.2e5 and 4.4e6 < db.utm_db[:, 1].mean() < 4.5e6


def test_saved_bytes_are_deterministic(tmp_path):
    """scipy stamps the creation time into the header; save_dbstruct replaces it."""
    import time
    from repro.data.dbstruct import MAT_HEADER, DbStruct, save_dbstruct
    db = DbStruct("test", ["a.jpg"], np.zeros((1, 2)), ["q.jpg"], np.ones((1, 2)), 1, 1)
    save_dbstruct(tmp_path / "a.mat", db)
    time.sleep(1.1)  # the stamp has one-second resolution
    save_dbstruct(tmp_path / "b.mat", db)
    a, b = (tmp_path / "a.mat").read_bytes(), (tmp_path / "b.mat").read_bytes()
    assert a.startswith(MAT_HEADER) and a == b


def test_time_stamps_round_trip_and_are_optional(tmp_path):
    """Tokyo Time Machine's dbTimeStamp / qTimeStamp: kept when present, absent otherwise."""
    rng = np.random.default_rng(3)
    db = random_dbstruct(rng, n_db=24, n_q=5)
    save_dbstruct(tmp_path / "plain.mat", db)
    plain = load_dbstruct(tmp_path / "plain.mat")
    assert plain.db_time_stamp is None and plain.q_time_stamp is None and not plain.has_time_stamps
    assert "dbTimeStamp" not in scipy.io.loadmat(tmp_path / "plain.mat")["dbStruct"].dtype.names
    db.db_time_stamp = rng.choice([200907.0, 201103.0, 201306.0], size=24)
    db.q_time_stamp = rng.choice([200907.0, 201103.0], size=5)
    save_dbstruct(tmp_path / "tm.mat", db)
    s = scipy.io.loadmat(tmp_path / "tm.mat")["dbStruct"][0, 0]
    assert s["dbTimeStamp"].shape == (1, 24) and s["qTimeStamp"].shape == (1, 5)  # MATLAB row vectors
    back = load_dbstruct(tmp_path / "tm.mat")
    np.testing.assert_array_equal(back.db_time_stamp, db.db_time_stamp)
    np.testing.assert_array_equal(back.q_time_stamp, db.q_time_stamp)
    assert back.has_time_stamps


def test_time_stamps_of_the_wrong_length_or_alone_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    db = random_dbstruct(rng, n_db=10, n_q=4)
    save_dbstruct(tmp_path / "a.mat", db)
    _rewrite(tmp_path / "a.mat", tmp_path / "short.mat", dbTimeStamp=np.ones((1, 9)), qTimeStamp=np.ones((1, 4)))
    with pytest.raises(DatasetError, match="dbTimeStamp must hold one capture time per image \\(10\\)"):
        load_dbstruct(tmp_path / "short.mat")
    _rewrite(tmp_path / "a.mat", tmp_path / "alone.mat", dbTimeStamp=np.ones((1, 10)))
    with pytest.raises(DatasetError, match="given together"):
        load_dbstruct(tmp_path / "alone.mat")
