"""Reliability (issue 7): bad input fails fast with a clear error, faults
never lose results, same seed gives the same recall, a failing notebook
stops the pipeline. One test (or parametrised case) per row of the README's
reliability table; rows already covered elsewhere name that test there.

Every "fails fast" test replaces the next expensive step (model building,
descriptor sampling, extraction, training) with a function that fails the
test if it is reached, so the error is shown to come before that work.
Data: a tiny fake street (64x64 PNGs, tests/train_fakes.py; copied per test
when a test damages it) and, for the notebooks, the tiny synthetic city.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from train_fakes import comparable, make_fake_street, single_thread, tiny_config

from repro.atomic import atomic_torch_save, atomic_write_text
from repro.cli import main
from repro.data.datasets import load_split
from repro.data.dbstruct import load_dbstruct, save_dbstruct
from repro.data.images import ImageListDataset, check_images, load_rgb8, to_tensor
from repro.errors import (
    ConfigError,
    DatasetError,
    ReproError,
    StorageError,
    WeightsError,
    report_errors,
)
from repro.evaluate import check_split_images, evaluate_split
from repro.model import build_model, save_model
from repro.report import (
    alpha_sweep,
    data_prep,
    fmax_size,
    names,
    off_the_shelf,
    pipeline,
    training,
)
from repro.report.parameters import check_params
from repro.train import train

pytestmark = [pytest.mark.filterwarnings("ignore:.*randomly initialised"), pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def data(street, tmp_path):
    """A private copy of the street, for tests that damage it."""
    return Path(shutil.copytree(street, tmp_path / "data"))


def evaluate_args(root, *extra):
    return ["evaluate", "--dataset", "synthetic", "--data-root", str(root), "--split", "test", "--weights", "none",
            "--num-clusters", "4", "--init-images", "20", "--ns", "1", "5", *extra]


def cli_error(args, capsys) -> str:
    """Run the command line; it must end with one ``error:`` line and status 2."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def forbid(monkeypatch, target: str, what: str):
    """Make ``target`` (module.attr) fail the test when reached: the error must come before ``what``."""
    def reached(*args, **kwargs):
        pytest.fail(f"{what} started before the error")
    monkeypatch.setattr(target, reached)


@pytest.fixture
def no_model(monkeypatch):
    """The command line must fail before building or loading a model."""
    forbid(monkeypatch, "repro.model.build_model", "model building")
    forbid(monkeypatch, "repro.model.load_model", "model loading")


@pytest.fixture
def no_training_work(monkeypatch):
    """``train`` must fail before the model is built."""
    forbid(monkeypatch, "repro.train.trainer._build_model", "model building")
    forbid(monkeypatch, "repro.train.trainer.init_netvlad_from_images", "NetVLAD initialisation")


def train_cli_args(root, out: Path, *extra):
    return ["train", "--dataset", "synthetic", "--data-root", str(root), "--weights", "none",
            "--out-dir", str(out / "run"), "--record-path", str(out / "record.json"), "--no-progress", *extra]


def rewrite_mat(path: Path, drop=(), **fields):
    """Rewrite a dbStruct .mat with a field dropped or replaced (raw MATLAB arrays)."""
    s = scipy.io.loadmat(path)["dbStruct"][0, 0]
    struct_ = {n: s[n] for n in s.dtype.names if n not in drop}
    struct_.update(fields)
    scipy.io.savemat(path, {"dbStruct": struct_})


def move_queries(root: Path, split: str, which, metres: float = 1000.0):
    """Move the given queries of ``split`` ``metres`` north (away from every database image)."""
    db = load_dbstruct(root / f"{split}.mat")
    db.utm_q = db.utm_q.copy()
    db.utm_q[list(which), 1] += metres
    save_dbstruct(root / f"{split}.mat", db)
    return db


# ===========================================================================
# Bad input


@pytest.mark.parametrize("entry", ["cli-evaluate", "cli-train", "train", "notebook"])
def test_missing_data_root(entry, tmp_path, capsys, no_model, no_training_work):
    missing = tmp_path / "nowhere"
    if entry == "cli-evaluate":
        msg = cli_error(evaluate_args(missing), capsys)
    elif entry == "cli-train":
        msg = cli_error(train_cli_args(missing, tmp_path), capsys)
    elif entry == "train":
        with pytest.raises(DatasetError) as info:
            train(tiny_config(missing, tmp_path))
        msg = str(info.value)
    else:
        with pytest.raises(DatasetError) as info:
            check_params("02_train", {"dataset": "pitts30k", "data_root": str(missing)})
        msg = str(info.value)
        assert "DATA_ROOT/datasets/pitts30k_{split}.mat" in msg and "on request" in msg
    assert "not found" in msg and str(missing) in msg and "Expected layout" in msg
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("change, expected", [
    (dict(drop=["utmQ"]), r"test\.mat: dbStruct lacks field\(s\) \['utmQ'\]"),
    (dict(numImages=np.array([[41.0]])), r"test\.mat: 40 database image names but the count field says 41"),
    (dict(numQueries=np.array([[11.0]])), r"test\.mat: 12 query image names but the count field says 11"),
    (dict(utmDb=np.zeros((2, 39))), r"test\.mat: 40 database image names but 39 database UTM positions"),
], ids=["field-missing", "numImages", "numQueries", "utm-rows"])
def test_mat_field_missing_or_counts_disagree(change, expected, data, capsys, no_model):
    rewrite_mat(data / "test.mat", **change)
    msg = cli_error(evaluate_args(data), capsys)
    assert re.search(expected, msg), msg
    with pytest.raises(DatasetError, match=expected):
        load_split("synthetic", data, "test")


def data_error(entry, data, tmp_path, capsys) -> str:
    """The error message of ``python -m repro evaluate`` ("cli-evaluate") or of ``train()`` ("train") on ``data``."""
    if entry == "cli-evaluate":
        return cli_error(evaluate_args(data), capsys)
    with pytest.raises(DatasetError) as info:
        train(tiny_config(data, tmp_path))
    return str(info.value)


@pytest.mark.parametrize("entry", ["cli-evaluate", "train"])
def test_listed_image_absent(entry, data, tmp_path, capsys, no_model, no_training_work):
    (data / "database" / "db_005.png").unlink()
    msg = data_error(entry, data, tmp_path, capsys)
    assert "1 of 40 synthetic" in msg and "database images" in msg and "are missing" in msg
    assert "db_005.png" in msg and "fully extracted" in msg


def _jpeg_bytes(arr) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["truncated-png", "truncated-jpeg", "not-an-image", "empty"])
@pytest.mark.parametrize("entry", ["cli-evaluate", "train"])
def test_corrupt_or_truncated_image(damage, entry, data, tmp_path, capsys, no_model, no_training_work):
    """Caught by the default check (headers, and the end of every PNG/JPEG), before any model."""
    bad = data / "queries" / "q_003.png"
    raw = bad.read_bytes()
    if damage == "truncated-png":
        bad.write_bytes(raw[: len(raw) * 2 // 3])
    elif damage == "truncated-jpeg":  # PIL reads the content, whatever the name says
        jpeg = _jpeg_bytes(np.asarray(Image.open(data / "queries" / "q_004.png")))
        bad.write_bytes(jpeg[: len(jpeg) - 200])
    elif damage == "not-an-image":
        bad.write_text("<html>404 Not Found</html>")
    else:
        bad.write_bytes(b"")
    msg = data_error(entry, data, tmp_path, capsys)
    # all three splits of the street list the same files: training meets the damage in its train split
    split = "test" if entry == "cli-evaluate" else "train"
    assert f"1 of 12 synthetic_{split} query images are unreadable or truncated" in msg
    assert "q_003.png" in msg and "Replace or remove these files" in msg


def test_complete_jpeg_with_trailing_bytes_is_not_flagged(tmp_path):
    """No false alarm: a JPEG with bytes after its end marker decodes, so it passes."""
    arr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = tmp_path / "padded.jpg"
    path.write_bytes(_jpeg_bytes(arr) + b"\0" * 300)
    check_images([path])
    assert load_rgb8(path).size == (40, 40)


def _png48(path: Path, rgb16: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_grayscale_rgba_and_16bit_images_are_converted_to_8bit_rgb(data, capsys):
    q = data / "queries"
    rgb = [np.asarray(Image.open(q / f"q_{i:03d}.png").convert("RGB")) for i in range(4)]
    gray = rgb[0][..., 1]
    Image.fromarray(gray).save(q / "q_000.png")                                     # 'L'
    Image.fromarray(np.dstack([rgb[1], np.full(gray.shape, 90, np.uint8)])).save(q / "q_001.png")  # 'RGBA'
    Image.fromarray(rgb[2][..., 1].astype(np.uint16) * 257).save(q / "q_002.png")  # 'I;16', 16-bit gray
    _png48(q / "q_003.png", rgb[3].astype(np.uint16) * 257)                        # 16-bit RGB
    assert [Image.open(q / f"q_00{i}.png").mode for i in range(3)] == ["L", "RGBA", "I;16"]
    expected = [np.dstack([gray] * 3), rgb[1], np.dstack([rgb[2][..., 1]] * 3), rgb[3]]
    split = load_split("synthetic", data, "test")
    check_split_images(split, "alexnet")  # accepted
    dataset = ImageListDataset(split.q_paths[:4])
    for i, want in enumerate(expected):
        got = np.asarray(load_rgb8(split.q_paths[i]))
        assert got.dtype == np.uint8 and got.shape == want.shape and np.array_equal(got, want), i
        assert torch.equal(dataset[i][0], to_tensor(Image.fromarray(want)))
    # 16-bit is scaled (x / 257), not clipped: a clipped image would be almost all white
    assert np.asarray(load_rgb8(split.q_paths[2])).mean() == pytest.approx(rgb[2][..., 1].mean(), abs=0.5)
    # and the whole evaluation runs on them
    assert main(evaluate_args(data, "--json", str(data / "r.json"))) == 0
    assert json.loads((data / "r.json").read_text())["num_queries"] == 12


@pytest.mark.parametrize("entry", ["cli-native", "cli-image-size", "train"])
def test_images_smaller_than_the_network_input(entry, data, tmp_path, capsys, no_model, no_training_work):
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(data / "queries" / "q_004.png")
    if entry == "cli-native":
        msg = cli_error(evaluate_args(data), capsys)
        assert "1 of 12 synthetic_test query images have a side below 31 pixels" in msg
        assert "q_004.png (24x20)" in msg and "or resize every image (image_size / --image-size)" in msg
    elif entry == "cli-image-size":
        msg = cli_error(evaluate_args(data, "--image-size", "16", "16"), capsys)
        assert "image size (16, 16) is below the alexnet minimum of 31 pixels" in msg
    else:
        with pytest.raises(DatasetError, match=r"side below 31 pixels: .*q_004\.png \(24x20\)"):
            train(tiny_config(data, tmp_path, image_size=None))


def test_queries_without_positive_count_as_failures_in_evaluation(data, capsys):
    """The paper's convention: every query is in the recall denominator;
    those without a positive within 25 m are counted, warned about and reported."""
    move_queries(data, "test", [0, 5])
    out = data / "r.json"
    with pytest.warns(UserWarning, match="2 of 12 queries have no positive database image"):
        assert main(evaluate_args(data, "--ns", "1", "5", "40", "--json", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["num_queries"] == 12 and result["num_without_positive"] == 2
    assert result["recall"]["40"] == pytest.approx(100 * 10 / 12)  # N = the whole database: 10 of 12 found
    assert "(2 without a positive)" in capsys.readouterr().out


def test_queries_without_positive_are_dropped_and_counted_in_training(data, tmp_path):
    move_queries(data, "train", [1, 2])
    result = train(tiny_config(data, tmp_path, epochs=1, queries_per_epoch=None))
    record = json.loads(Path(result.record_path).read_text())
    assert record["tuples"]["num_without_positive"] == 2
    assert record["tuples"]["num_training_queries"] == 10
    assert record["epochs"][1]["queries"] <= 10


@pytest.mark.parametrize("entry", ["cli-evaluate", "evaluate_split"])
def test_no_query_with_a_positive_fails_fast(entry, data, capsys, monkeypatch, no_model):
    move_queries(data, "test", range(12))
    forbid(monkeypatch, "repro.evaluate.extract_descriptors", "extraction")
    if entry == "cli-evaluate":
        msg = cli_error(evaluate_args(data), capsys)
    else:
        with pytest.raises(DatasetError) as info:
            evaluate_split(object(), load_split("synthetic", data, "test"))
        msg = str(info.value)
    assert "test.mat: none of its 12 queries has a database image within 25 m" in msg
    assert "UTM coordinates in metres" in msg


BAD_ALPHAS = [0, -1, float("nan")]


@pytest.mark.parametrize("alpha", BAD_ALPHAS, ids=["zero", "negative", "nan"])
@pytest.mark.parametrize("entry", ["cli-evaluate", "cli-train", "train", "build_model", "notebook"])
def test_bad_alpha(entry, alpha, street, tmp_path, capsys, monkeypatch):
    if entry == "cli-evaluate":
        forbid(monkeypatch, "repro.data.datasets.load_split", "loading the data")
        msg = cli_error(evaluate_args(street, "--alpha", alpha), capsys)
    elif entry == "cli-train":
        forbid(monkeypatch, "repro.train.train", "training")
        msg = cli_error(train_cli_args(street, tmp_path, "--alpha", alpha), capsys)
    elif entry == "train":
        forbid(monkeypatch, "repro.evaluate.sample_local_descriptors", "NetVLAD initialisation")
        with pytest.raises(ConfigError) as info:
            train(tiny_config(street, tmp_path, alpha=alpha))
        msg = str(info.value)
    elif entry == "build_model":
        forbid(monkeypatch, "repro.model.place_model.build_backbone", "loading weights")
        with pytest.raises(ConfigError) as info:
            build_model(weights="imagenet", alpha=alpha)
        msg = str(info.value)
    else:
        with pytest.raises(ConfigError) as info:
            check_params("03_alpha_sweep", {"alpha": alpha})
        msg = str(info.value)
        assert "03_alpha_sweep: parameter alpha=" in msg and "-p alpha 50" in msg
    assert "positive, finite number" in msg
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("entry", ["cli-evaluate", "train", "build_model", "notebook-04", "notebook-params"])
def test_fmax_output_size_zero(entry, street, tmp_path, capsys, monkeypatch):
    if entry == "cli-evaluate":
        forbid(monkeypatch, "repro.data.datasets.load_split", "loading the data")
        msg = cli_error(evaluate_args(street, "--pooling", "fmax", "--fmax-size", "0", "0"), capsys)
    elif entry == "train":
        forbid(monkeypatch, "repro.train.trainer.evaluate_split", "evaluation")
        with pytest.raises(ConfigError) as info:
            train(tiny_config(street, tmp_path, pooling="fmax", fmax_output_size=(0, 0)))
        msg = str(info.value)
    elif entry == "build_model":
        with pytest.raises(ConfigError) as info:
            build_model(pooling="fmax", weights=None, fmax_output_size=(2, 0))
        msg = str(info.value)
    elif entry == "notebook-04":
        forbid(monkeypatch, "repro.report.fmax_size.OffTheShelf", "loading data and the base network")
        with pytest.raises(ConfigError) as info:
            fmax_size.run_fmax_output_size(grids=[1, 0], results_dir=tmp_path)
        msg = str(info.value)
    else:
        with pytest.raises(ConfigError, match=r"grids=\[1, 0\] \(list\) must be a non-empty list of f_max grids"):
            check_params("04_fmax_output_size", {"grids": [1, 0]})
        return
    assert "f_max output size must be at least 1x1" in msg
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("entry", ["cli", "train-backbone", "train-pooling", "build_model", "notebook"])
def test_unknown_backbone_or_pooling(entry, street, tmp_path, capsys, monkeypatch):
    if entry == "cli":  # argparse lists the choices; exit status 2
        for option in (["--backbone", "resnet50"], ["--pooling", "gem"]):
            with pytest.raises(SystemExit) as info:
                main(evaluate_args(street, *option))
            assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
        return
    if entry == "train-backbone":
        forbid(monkeypatch, "repro.train.trainer._build_model", "model building")
        with pytest.raises(ConfigError, match=r"unknown backbone 'resnet50'; choose one of \['alexnet', 'vgg16'\]"):
            train(tiny_config(street, tmp_path, backbone="resnet50"))
    elif entry == "train-pooling":
        forbid(monkeypatch, "repro.evaluate.sample_local_descriptors", "NetVLAD initialisation")
        forbid(monkeypatch, "repro.train.trainer.evaluate_split", "evaluation")
        with pytest.raises(ConfigError, match=r"unknown pooling 'gem'; choose one of \('netvlad', 'fmax'\)"):
            train(tiny_config(street, tmp_path, pooling="gem"))
    elif entry == "build_model":
        forbid(monkeypatch, "repro.model.place_model.build_backbone", "loading weights")
        with pytest.raises(ConfigError, match="unknown backbone 'resnet50'"):
            build_model("resnet50", weights="imagenet")
    else:
        forbid(monkeypatch, "repro.report.off_the_shelf.resolve_root", "loading or generating the data")
        with pytest.raises(ConfigError, match="unknown backbone 'resnet50'"):
            off_the_shelf.OffTheShelf(backbone="resnet50", data_root=str(street))
        with pytest.raises(ConfigError, match=r"03_alpha_sweep: parameter backbone='resnet50' \(str\) must be one of"):
            check_params("03_alpha_sweep", {"backbone": "resnet50"})
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("entry", ["build_backbone", "cli-weights", "cli-checkpoint", "train", "notebook"])
def test_weights_of_another_architecture(entry, street, tmp_path, capsys, monkeypatch):
    """Also tests/test_model.py::test_weights_file_of_another_architecture and
    tests/test_cli.py::test_weights_of_another_architecture."""
    from repro.model.backbone import _alexnet_features, build_backbone

    alexnet = tmp_path / "alexnet_features.pth"
    torch.save({f"features.{k}": v for k, v in _alexnet_features().state_dict().items()}, alexnet)
    if entry == "build_backbone":
        with pytest.raises(WeightsError, match=r"alexnet_features\.pth does not hold vgg16 weights \(.*file \[64, 3, "
                                               r"11, 11\] vs vgg16 \[64, 3, 3, 3\]"):
            build_backbone("vgg16", weights=str(alexnet))
    elif entry == "cli-weights":
        forbid(monkeypatch, "repro.evaluate.sample_local_descriptors", "NetVLAD initialisation")
        msg = cli_error(evaluate_args(street, "--backbone", "vgg16", "--weights", alexnet), capsys)
        assert "does not hold vgg16 weights" in msg and "choose the matching --backbone" in msg
    elif entry == "cli-checkpoint":
        ckpt = tmp_path / "model.pth"
        save_model(ckpt, build_model("alexnet", "fmax", weights=None))
        saved = torch.load(ckpt, weights_only=True)
        saved["config"]["backbone"] = "vgg16"
        torch.save(saved, ckpt)
        forbid(monkeypatch, "repro.evaluate.extract_descriptors", "extraction")
        msg = cli_error(evaluate_args(street, "--checkpoint", ckpt), capsys)
        assert "model.pth: state dict does not fit its config" in msg
    elif entry == "train":
        forbid(monkeypatch, "repro.evaluate.sample_local_descriptors", "NetVLAD initialisation")
        with pytest.raises(WeightsError, match="does not hold vgg16 weights"):
            train(tiny_config(street, tmp_path, backbone="vgg16", weights=str(alexnet)))
    else:
        with pytest.raises(WeightsError, match=r"02_train: weights file not found: .*missing\.pth"):
            check_params("02_train", {"weights": str(tmp_path / "missing.pth")})


@pytest.mark.parametrize("notebook, params, expected", [
    ("02_train", {"epochs": "four"}, r"parameter epochs='four' \(str\) must be an integer >= 1; .*-p epochs 4"),
    ("02_train", {"image_size": 96}, r"image_size=96 \(int\) must be None \(native size\) or \[H, W\].*-y"),
    ("02_train", {"poolings": "netvlad"}, r"poolings='netvlad' \(str\) must be a non-empty list"),
    ("02_train", {"train_options": {"lrr": 1}}, r"TrainConfig fields \(unknown: \['lrr'\]\)"),
    ("03_alpha_sweep", {"train": "yes"}, r"train='yes' \(str\) must be True or False"),
    ("03_alpha_sweep", {"alpha": "rule"}, r"alpha='rule' \(str\) must be a positive, finite number"),
    ("04_fmax_output_size", {"whiten_dims": [256, 0]}, r"whiten_dims=\[256, 0\] \(list\) must be a list of positive"),
    ("04_fmax_output_size", {"num_clusters": 16.0}, r"num_clusters=16\.0 \(float\) must be an integer >= 2"),
    ("01_data_prep", {"dataset": "pitts"}, r"dataset='pitts' \(str\) must be one of 'pitts30k'"),
    ("01_data_prep", {"synthetic_preset": "huge"}, r"must be one of 'tiny', 'default', 'large'"),
])
def test_notebook_parameter_of_the_wrong_type(notebook, params, expected):
    with pytest.raises(ConfigError, match=expected):
        check_params(notebook, params, check_paths=False)


def test_papermill_parameter_of_the_wrong_type_stops_in_the_first_cell(tmp_path):
    import papermill as pm

    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(REPO / "notebooks" / "02_train.ipynb"), str(out), cwd=str(REPO / "notebooks"),
                            parameters={"epochs": "four", "results_dir": str(tmp_path / "results")},
                            kernel_name="python3", progress_bar=False)
    err = info.value
    assert err.ename == "ConfigError"
    assert "02_train: parameter epochs='four' (str) must be an integer >= 1" in err.evalue
    assert "check_params(" in err.source  # the first code cell after the parameters: nothing ran before
    assert not (tmp_path / "results" / "train").exists()


@pytest.mark.parametrize("entry", ["cli-evaluate", "evaluate_split", "notebook-01", "train"])
def test_dataset_with_a_single_place(entry, tmp_path, capsys, monkeypatch, no_model, no_training_work):
    root = make_fake_street(tmp_path / "data", num_db=6, num_q=3)  # a 20 m street: every image within 25 m
    forbid(monkeypatch, "repro.evaluate.extract_descriptors", "extraction")
    if entry == "cli-evaluate":
        msg = cli_error(evaluate_args(root), capsys)
    elif entry == "evaluate_split":
        with pytest.raises(DatasetError) as info:
            evaluate_split(object(), load_split("synthetic", root, "test"))
        msg = str(info.value)
    elif entry == "notebook-01":
        with pytest.raises(DatasetError) as info:
            data_prep.data_overview("synthetic", str(root), results_dir=tmp_path / "results")
        msg = str(info.value)
    else:  # training: no negatives (also tests/test_train_run.py::test_no_valid_tuple_is_an_error_before_training)
        with pytest.raises(DatasetError, match=r"no valid training tuple .*3 have no database image farther than 25 m"):
            train(tiny_config(root, tmp_path))
        return
    assert "all 6 database images are within 25 m of every query: the split shows a single place" in msg
    assert "recall would be 100% for any model" in msg


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A folder that cannot be created (its parent is a file): unwritable even for root."""
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file" / "results"


@pytest.mark.parametrize("entry", ["cli-evaluate", "cli-train", "notebook-02", "notebook-params", "pipeline"])
def test_results_folder_not_writable(entry, blocked, street, tmp_path, capsys, monkeypatch):
    forbid(monkeypatch, "repro.data.datasets.load_split", "loading the data")
    forbid(monkeypatch, "repro.train.train", "training")
    if entry == "cli-evaluate":
        msg = cli_error(evaluate_args(street, "--json", blocked / "r.json"), capsys)
    elif entry == "cli-train":
        msg = cli_error(train_cli_args(street, tmp_path, "--record-path", blocked / "record.json"), capsys)
    elif entry == "notebook-02":
        with pytest.raises(ConfigError) as info:
            training.run_training(["netvlad"], results_dir=str(blocked), cache_dir=str(tmp_path / "cache"),
                            data_root=str(street))
        msg = str(info.value)
    elif entry == "notebook-params":
        with pytest.raises(ConfigError) as info:
            check_params("03_alpha_sweep", {"results_dir": str(blocked)})
        msg = str(info.value)
    else:
        prof = tmp_path / "p.yaml"
        prof.write_text(json.dumps({"executed_dir": str(blocked / "executed"), "results_dir": str(tmp_path / "r"),
                                    "notebooks": [{"notebook": "05_paper_comparison"}]}))
        forbid(monkeypatch, "repro.report.pipeline.execute", "running a notebook")
        with pytest.raises(ConfigError) as info:
            pipeline.run_profile(str(prof), log=lambda m: None)
        msg = str(info.value)
    assert "cannot write" in msg and str(tmp_path / "file") in msg and "Not a directory" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot write .* Permission denied"):
            check_params("03_alpha_sweep", {"results_dir": str(folder)})
    finally:
        folder.chmod(0o755)


def test_train_api_checks_its_output_folders_first(blocked, street, tmp_path, monkeypatch):
    forbid(monkeypatch, "repro.evaluate.sample_local_descriptors", "NetVLAD initialisation")
    with pytest.raises(ConfigError, match="cannot write"):
        train(tiny_config(street, tmp_path, record_path=str(blocked / "record.json")))


# ===========================================================================
# Faults

# kill -9 during training, then resume, gives the same final metrics:
# tests/test_train_run.py::test_resume_after_sigkill_gives_identical_results

KILL_SCRIPT = """
import os, signal, sys, torch
from repro.atomic import atomic_open, atomic_torch_save
from repro.atomic import write_json
mode, path = sys.argv[1], sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if mode == "json-before-rename":      # every byte written to the temporary file, not yet renamed
    os.fsync = die
    write_json(path, {"status": "complete", "recall": {"1": 99.0}, "rows": list(range(100000))})
elif mode == "json-mid-write":        # killed with half of the new file written
    with atomic_open(path, "w") as f:
        f.write('{"status": "complete", "recall": {"1": 99')
        f.flush()
        die()
elif mode == "checkpoint-mid-write":  # torch.save interrupted
    def half(obj, f, *a, **k):
        f.write(b"PK\\x03\\x04 half a checkpoint"); f.flush(); die()
    torch.save = half
    atomic_torch_save({"epoch": 2}, path)
"""


@pytest.mark.parametrize("mode", ["json-before-rename", "json-mid-write", "checkpoint-mid-write"])
def test_kill_during_a_results_write_keeps_the_previous_file(mode, tmp_path):
    from repro.atomic import write_json

    if mode.startswith("json"):
        path = tmp_path / "alpha_sweep" / "r.json"
        write_json(path, {"status": "complete", "recall": {"1": 42.0}})
    else:
        path = tmp_path / "last.pt"
        atomic_torch_save({"epoch": 1, "w": torch.arange(3)}, path)
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, mode, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert path.read_bytes() == before
    if mode.startswith("json"):
        assert json.loads(path.read_text())["recall"] == {"1": 42.0}
        assert names.record_complete(path)
        assert [p.name for p in path.parent.glob("*.json")] == ["r.json"]  # readers never see the leftover
    else:
        assert torch.load(path, weights_only=True)["epoch"] == 1
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{path.name}.") and leftovers[0].endswith(".tmp")


def test_rerunning_a_notebook_replaces_only_its_own_results(tiny_city, tmp_path):
    import papermill as pm

    results, figures, cache = tmp_path / "results", tmp_path / "figures", tmp_path / "cache"
    setup = dict(dataset="synthetic", data_root=str(tiny_city), synthetic_preset="tiny", backbone="alexnet",
                 weights=None, seed=0, num_clusters=4, image_size=[64, 80], split="test", init_images=20,
                 init_descriptors=400, device="cpu", cache_dir=str(cache))
    quiet = dict(log=lambda m: None)
    # earlier results: other alphas, another experiment, another notebook's figure
    alpha_sweep.run_alpha_point(5, results_dir=str(results), **quiet, **setup)
    first = alpha_sweep.run_alpha_point(50, results_dir=str(results), **quiet, **setup)["off_the_shelf"]["path"]
    (results / "train").mkdir()
    (results / "train" / "other_run.json").write_text('{"status": "complete"}\n')
    figures.mkdir()
    (figures / "train_other.png").write_bytes(b"\x89PNG other notebook's figure")
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [*results.rglob("*"), *figures.rglob("*")]
                if p.is_file()}
    own_before = json.loads(first.read_text())

    pm.execute_notebook(str(REPO / "notebooks" / "03_alpha_sweep.ipynb"), str(tmp_path / "out.ipynb"),
                        cwd=str(REPO / "notebooks"), kernel_name="python3", progress_bar=False,
                        parameters={**setup, "alpha": 50, "results_dir": str(results), "figures_dir": str(figures)})
    own_after = json.loads(first.read_text())
    assert first.stat().st_mtime_ns != snapshot[first][1]  # replaced ...
    assert own_after["rows"] == own_before["rows"]         # ... by the same result
    for p, (data_, mtime) in snapshot.items():
        if p != first:
            assert p.read_bytes() == data_ and p.stat().st_mtime_ns == mtime, f"{p} was touched"
    assert sorted(p.name for p in (results / "alpha_sweep").iterdir()) == sorted(
        [first.name, first.name.replace("alpha50", "alpha5")])


def test_an_alpha_that_rounds_to_another_alphas_file_does_not_replace_it(tiny_city, tmp_path, monkeypatch):
    from repro.report.names import alpha_sweep_path, dataset_label

    results = tmp_path / "results"
    path = alpha_sweep_path(results, dataset_label("synthetic", "tiny"), "alexnet", 4, 50)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"alpha": 50.0, "rows": []}))
    before = path.read_bytes()
    forbid(monkeypatch, "repro.report.off_the_shelf.OffTheShelf.evaluate_netvlad", "evaluation")
    with pytest.raises(ConfigError, match=r"holds the result of alpha=50\.0; alpha=50\.001 would replace it"):
        alpha_sweep.run_alpha_point(50.001, results_dir=str(results), log=lambda m: None, dataset="synthetic",
                           data_root=str(tiny_city), synthetic_preset="tiny", num_clusters=4, image_size=[64, 80])
    assert path.read_bytes() == before


def test_the_same_alpha_up_to_last_bits_replaces_its_own_file(tiny_city, tmp_path, monkeypatch):
    """The rule's alpha recomputed from a fresh k-means moves in its last bits (seen: 39.68584138912695 vs
    39.68584255067982 on a fresh clone); under --force it replaces its own result, and is still the rule's."""
    from repro.report.alpha_sweep import SAME_ALPHA
    from repro.report.names import alpha_sweep_path, dataset_label

    results = tmp_path / "results"
    path = alpha_sweep_path(results, dataset_label("synthetic", "tiny"), "alexnet", 4, 50)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"alpha": 50.0, "rows": []}))
    alpha = 50.0 * (1 + SAME_ALPHA / 30)
    alpha_sweep.run_alpha_point(alpha, results_dir=str(results), log=lambda m: None, dataset="synthetic",
                                data_root=str(tiny_city), synthetic_preset="tiny", num_clusters=4, image_size=[64, 80],
                                cache_dir=str(tmp_path / "cache"))
    rec = json.loads(path.read_text())
    assert rec["alpha"] == alpha and rec["rows"]


@pytest.fixture(scope="module")
def reference_run(street, tmp_path_factory):
    """An uninterrupted 2-epoch training run."""
    before = single_thread()
    out = tmp_path_factory.mktemp("reference")
    result = train(tiny_config(street, out, epochs=2))
    torch.set_num_threads(before)
    return result


class FullDisk:
    """A file whose disk fills up after ``room`` bytes: OSError(ENOSPC), as the OS raises it."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_disk_full_during_checkpointing(street, reference_run, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj and obj["epoch"] == 2:  # last.pt after epoch 2
            return real_save(obj, FullDisk(f, 5000), *args, **kwargs)  # torch turns it into a RuntimeError
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    cfg = tiny_config(street, tmp_path, epochs=2)
    assert report_errors(train, cfg) == 2  # what the command line does with it
    err = capsys.readouterr().err
    last = tmp_path / "run" / "last.pt"
    assert f"error: cannot write {last}: No space left on device (" in err
    assert "The previous last.pt is unchanged" in err and "resume=True (--resume)" in err
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the last good checkpoint, loadable
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    resumed = train(cfg.replace(resume=True))  # after freeing space: continues, same result
    assert comparable(resumed.history) == comparable(reference_run.history)
    assert resumed.test["recall"] == reference_run.test["recall"]


def test_disk_full_while_writing_results(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match=r"cannot write .*r\.json: No space left on device .*previous r\.json "
                                           r"is unchanged") as info:
        atomic_write_text(path, "new")
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert isinstance(info.value, ReproError)  # the command line prints it as one error line
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ===========================================================================
# Determinism


def test_same_seed_same_recall_training(street, reference_run, tmp_path):
    again = train(tiny_config(street, tmp_path, epochs=2))
    assert again.test["recall"] == reference_run.test["recall"]  # exact
    assert comparable(again.history) == comparable(reference_run.history)
    a, b = again.model.state_dict(), reference_run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reference_run.history[1]["updates"] > 0  # and training did change the model


def test_same_seed_same_recall_evaluation(street, tmp_path, capsys):
    """k-means initialisation, alpha rule, extraction, exact search: twice, same numbers."""
    outs = [tmp_path / f"r{i}.json" for i in range(2)]
    for out in outs:
        assert main(evaluate_args(street, "--seed", "3", "--json", str(out))) == 0
    a, b = (json.loads(p.read_text()) for p in outs)
    assert a["recall"] == b["recall"] and a["init"]["netvlad"]["alpha"] == b["init"]["netvlad"]["alpha"]


# ===========================================================================
# The pipeline


def test_a_failing_notebook_stops_the_pipeline_and_leaves_other_results(tmp_path, capsys):
    """A notebook failing while it runs (here: a data root without its .mat
    files); a parameter error stops the pipeline before any notebook runs
    (tests/test_notebooks.py::test_a_bad_alpha_stops_the_pipeline_before_any_notebook_runs)."""
    results, figures, executed = tmp_path / "results", tmp_path / "figures", tmp_path / "executed"
    empty = tmp_path / "empty_root"
    empty.mkdir()
    earlier = {results / "alpha_sweep" / "synthetic_tiny_seed0_alexnet_K4_off_the_shelf_alpha7.json":
               '{"status": "complete", "alpha": 7}\n',
               results / "summary.csv": "experiment,n,recall_pct\ntrain,1,50.0\n",
               figures / "train_x.png": "png", executed / "01_data_prep.ipynb": "{}"}
    for p, text in earlier.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    common = {"dataset": "synthetic", "synthetic_preset": "tiny", "backbone": "alexnet", "weights": None,
              "image_size": [64, 80], "device": "cpu", "num_clusters": 4, "init_images": 20,
              "init_descriptors": 400, "cache_dir": str(tmp_path / "cache")}
    prof = tmp_path / "p.yaml"
    prof.write_text(json.dumps({
        "results_dir": str(results), "figures_dir": str(figures), "executed_dir": str(executed),
        "runtimes_dir": str(tmp_path / "runtimes"), "update_readme": False, "common": common,
        "notebooks": [{"notebook": "03_alpha_sweep", "parameters": {"alpha": 5, "data_root": str(empty)},
                       "name": "first"},
                      {"notebook": "03_alpha_sweep", "parameters": {"alpha": 7}, "name": "second"}]}))
    assert pipeline.main(["--profile", str(prof), "--no-html"]) == 1
    captured = capsys.readouterr()
    assert "[1/2] first: running" in captured.out and "[2/2]" not in captured.out
    err = captured.err
    assert "FAILED: notebook first failed in cell [" in err
    assert "DatasetError: no dbStruct .mat for synthetic test" in err and str(empty) in err
    assert "the partly executed notebook:" in err
    for p, text in earlier.items():
        assert p.read_text() == text, f"{p} was touched"
    assert sorted(p.name for p in executed.iterdir()) == ["01_data_prep.ipynb"]  # the failed run is not published
    assert not (results / "claims.csv").exists()  # the summary step did not run
