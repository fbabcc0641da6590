"""Whole training runs on a tiny fake street: learning, resume, faults, records."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import repro.train.loop as loop_module
import repro.train.trainer as trainer_module
from repro.data.datasets import load_split
from repro.errors import DatasetError
from repro.evaluate import extract_descriptors, init_netvlad_from_images
from repro.model import build_model
from repro.train import NonFiniteLossError, TrainConfig, atomic_torch_save, train
from repro.train.cache import DescriptorCache
from repro.train.loop import TupleImages, train_epoch
from repro.train.mining import HardNegativeMiner
from repro.train.trainer import _optimizer
from repro.train.tuples import build_tuples
from train_fakes import comparable, make_fake_street, single_thread, tiny_config

pytestmark = [pytest.mark.filterwarnings("ignore:.*randomly initialised"), pytest.mark.usefixtures("one_thread")]

TESTS = Path(__file__).resolve().parent


def fixed_tuple_loss(model, split, tuples, image_size, margin=0.1) -> float:
    """Eq. 7 over fixed tuples (every potential positive, every negative), mean over queries."""
    db = torch.from_numpy(extract_descriptors(model, split.db_paths, image_size))
    q = torch.from_numpy(extract_descriptors(model, split.q_paths, image_size))
    total = 0.0
    for qi in tuples.query_ids:
        d_pos = ((db[tuples.potential_positives[qi]] - q[qi]) ** 2).sum(1).min()
        negatives = np.setdiff1d(np.arange(len(db)), tuples.non_negatives[qi])
        total += torch.clamp(d_pos + margin - ((db[negatives] - q[qi]) ** 2).sum(1), min=0).sum().item()
    return total / len(tuples.query_ids)


def test_loss_decreases_on_a_tiny_set(street):
    cfg = tiny_config(street, street, lr=1e-4)
    split = load_split("synthetic", street, "train")
    tuples = build_tuples(split)
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        model = build_model("alexnet", "netvlad", weights=None, num_clusters=4)
    init_netvlad_from_images(model, split.db_paths, cfg.image_size, num_images=20, num_descriptors=400)
    optimizer, _ = _optimizer(cfg, model)
    miner = HardNegativeMiner(tuples, cfg.num_random_negatives, margin=cfg.margin)
    cache = DescriptorCache(split.num_db, split.num_q, model.pooled_dim)
    images = TupleImages(split, cfg.image_size)
    before = fixed_tuple_loss(model, split, tuples, cfg.image_size)
    updates = 0
    for epoch in range(1, 5):
        rng = np.random.default_rng([0, epoch])
        cache.refresh(model, split.db_paths, split.q_paths, cfg.image_size)
        stats = train_epoch(model, optimizer, miner, cache, split, images, rng.permutation(tuples.query_ids),
                            epoch, rng, cfg, "cpu", refresh_batches=2)
        updates += stats["updates"]
    after = fixed_tuple_loss(model, split, tuples, cfg.image_size)
    assert before > 0.02 and updates > 0
    assert after < 0.5 * before, (before, after)


class Interrupt(Exception):
    pass


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(street, tmp_path_factory):
    before = single_thread()
    out = tmp_path_factory.mktemp("full")
    result = train(tiny_config(street, out, epochs=3))
    torch.set_num_threads(before)
    return out, result


def test_record_and_checkpoints_of_a_run(uninterrupted):
    out, result = uninterrupted
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "complete" and record["seed"] == 0
    assert record["run_name"] == result.run_name and record["run_name"].endswith("_alexnet_netvlad_seed0")
    assert record["test_on"] == {}
    assert record["config"]["epochs"] == 3 and record["config"]["lr"] == 1e-3
    assert "git_commit" in record and record["peak_rss_mib"] > 0 and record["wall_seconds"] > 0
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2, 3]
    assert {"loss", "violating_mined", "skipped", "val", "lr"} <= set(record["epochs"][1])
    assert set(record["test"]["recall"]) == {"1", "5", "10"}
    assert record["best_epoch"] == result.best_epoch >= 1
    last = torch.load(out / "run" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "miner", "rng", "config", "train_config", "history"} <= set(last)
    assert last["epoch"] == 3 and len(last["miner"]["neg_cache"]) == 12
    best = torch.load(out / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch
    assert same_state(best["state_dict"], result.model.state_dict())


def test_resume_after_an_interruption_gives_identical_results(street, uninterrupted, tmp_path):
    _, full = uninterrupted

    def stop(epoch, batch, stats):
        if (epoch, batch) == (2, 1):  # mid-epoch: two of three batches done
            raise Interrupt

    cfg = tiny_config(street, tmp_path, epochs=3)
    with pytest.raises(Interrupt):
        train(cfg, callback=stop)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train(cfg.replace(resume=True))
    assert comparable(resumed.history) == comparable(full.history)
    assert resumed.test["recall"] == full.test["recall"] and resumed.best_epoch == full.best_epoch
    assert same_state(resumed.model.state_dict(), full.model.state_dict())
    # and the equality is not vacuous: training changed the model
    assert full.history[1]["updates"] > 0


def test_kept_decoded_images_do_not_change_training(street, uninterrupted, tmp_path):
    """``image_memory_gb`` only saves decoding: the run is the same without it."""
    _, full = uninterrupted
    assert tiny_config(street, tmp_path).image_memory_gb > 0      # the fixture's run kept its images
    plain = train(tiny_config(street, tmp_path, epochs=3, image_memory_gb=0))
    assert comparable(plain.history) == comparable(full.history)
    assert plain.test["recall"] == full.test["recall"]
    assert same_state(plain.model.state_dict(), full.model.state_dict())


def test_resume_after_sigkill_gives_identical_results(street, uninterrupted, tmp_path):
    _, full = uninterrupted
    script = f"""
import os, signal, sys, torch
sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
from train_fakes import tiny_config
from repro.train import train
torch.set_num_threads(1)
def kill(epoch, batch, stats):
    if (epoch, batch) == (3, 0):
        os.kill(os.getpid(), signal.SIGKILL)
train(tiny_config(Path({str(street)!r}), Path({str(tmp_path)!r}), epochs=3), callback=kill)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = train(tiny_config(street, tmp_path, epochs=3, resume=True))
    assert comparable(resumed.history) == comparable(full.history)
    assert same_state(resumed.model.state_dict(), full.model.state_dict())


def test_resume_refuses_changed_options(street, uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(Exception, match="training options differ"):
        train(tiny_config(street, out, epochs=3, resume=True, lr=5e-4))


def test_atomic_save_never_replaces_a_good_file_with_a_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1, "w": torch.arange(5)}, path)
    good = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2, "w": torch.zeros(5)}, path)
    assert path.read_bytes() == good
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_failed_checkpoint_write_during_training_keeps_the_previous_one(street, tmp_path, monkeypatch):
    cfg = tiny_config(street, tmp_path, epochs=1)
    train(cfg)
    run = tmp_path / "run"
    good = (run / "last.pt").read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2 and "optimizer" in obj:
            f.write(b"partial")
            raise OSError("killed while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="killed while writing"):
        train(cfg.replace(epochs=2, resume=True))
    assert (run / "last.pt").read_bytes() == good
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(street, tmp_path, monkeypatch):
    real_loss = loop_module.triplet_ranking_loss
    state = {"epoch_1_done": False}

    def watch(epoch, batch, stats):
        if epoch == 1 and batch == stats["num_batches"] - 1:
            state["epoch_1_done"] = True

    def nan_in_epoch_2(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if state["epoch_1_done"] else loss

    monkeypatch.setattr(loop_module, "triplet_ranking_loss", nan_in_epoch_2)
    cfg = tiny_config(street, tmp_path, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 2.*last good checkpoint.*last\.pt \(after epoch 1\)"):
        train(cfg, callback=watch)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert json.loads((tmp_path / "record.json").read_text())["status"].startswith("failed")


@pytest.mark.parametrize("offset, reason", [((500.0, 600.0), "12 have no database image within 10 m"),
                                             ((1.0, 3.0), "3 have no database image farther than 25 m")])
def test_no_valid_tuple_is_an_error_before_training(tmp_path, monkeypatch, offset, reason):
    if "farther" in reason:
        root = make_fake_street(tmp_path / "data", num_db=6, num_q=3, query_offset=offset)  # a 20 m street
    else:
        root = make_fake_street(tmp_path / "data", query_offset=offset)

    def no_network_work(*args, **kwargs):
        raise AssertionError("training work started")

    monkeypatch.setattr(trainer_module, "init_netvlad_from_images", no_network_work)
    monkeypatch.setattr(trainer_module, "_build_model", no_network_work)
    with pytest.raises(DatasetError, match=f"no valid training tuple.*{reason}"):
        train(tiny_config(root, tmp_path))
    assert not (tmp_path / "run").exists()


def test_adam_and_lr_defaults():
    assert TrainConfig(dataset="pitts250k", data_root="x").resolved_lr() == 1e-4
    assert TrainConfig(dataset="tokyoTM", data_root="x").resolved_lr() == 1e-4
    assert TrainConfig(dataset="pitts30k", data_root="x").resolved_lr() == 1e-3
    model = torch.nn.Linear(2, 2)
    opt, sched = _optimizer(TrainConfig(optimizer="adam", lr=1e-4), model)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-4
    opt, sched = _optimizer(TrainConfig(), model)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-3
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [1e-3] * 5 + [5e-4] * 5 + [2.5e-4]  # halved after epochs 5 and 10 (authors)
    with pytest.raises(Exception, match="data_root is required"):
        TrainConfig(dataset="pitts30k").validate()
    with pytest.raises(Exception, match="optimizer"):
        TrainConfig(optimizer="rmsprop").validate()


def test_command_line_builds_the_config(monkeypatch):
    from repro.cli import build_parser

    seen = {}

    class Result:
        test = {"recall": {1: 50.0}}
        best_epoch = 1
        record_path = "r.json"

    def fake_train(config):
        seen["config"] = config
        return Result()

    monkeypatch.setattr("repro.train.train", fake_train)
    args = build_parser().parse_args(
        ["train", "--dataset", "pitts30k", "--data-root", "/data/pitts", "--backbone", "vgg16", "--weights", "none",
         "--pooling", "fmax", "--epochs", "3", "--lr", "1e-4", "--optimizer", "adam", "--resume",
         "--out-dir", "/tmp/o", "--device", "cpu", "--seed", "7", "--image-size", "240", "320"])
    assert args.func(args) == 0
    c = seen["config"]
    assert (c.dataset, c.data_root, c.backbone, c.weights, c.pooling, c.epochs, c.lr, c.optimizer, c.resume,
            c.out_dir, c.device, c.seed, c.image_size) == (
        "pitts30k", "/data/pitts", "vgg16", None, "fmax", 3, 1e-4, "adam", True, "/tmp/o", "cpu", 7, (240, 320))
    assert c.train_from == "authors" and c.num_clusters == 64 and c.assignment == "fixed_bias"  # the authors' profile
    args = build_parser().parse_args(["train", "--profile", "paper", "--dataset", "tokyoTM", "--data-root", "/d/tm",
                                      "--test-on", "tokyo247:/d/t247", "--backbone", "alexnet", "--out-dir", "/tmp/o",
                                      "--record-path", "/tmp/o/r.json"])
    assert args.func(args) == 0
    c = seen["config"]
    assert c.test_on == ("tokyo247:/d/t247",) and c.test_split is None and c.whiten_dim == 4096
    assert (c.backbone, c.train_from, c.resolved_lr()) == ("alexnet", "authors", 1e-4)
    args = build_parser().parse_args(["train", "--image-size", "none"])
    args.func(args)
    assert seen["config"] == TrainConfig.synthetic_default(image_size=None)


def test_fmax_adam_and_whitening_at_evaluation(street, tmp_path):
    from repro.model import load_model

    result = train(tiny_config(street, tmp_path, pooling="fmax", optimizer="adam", lr=1e-4, epochs=1, whiten_dim=8))
    assert result.history[1]["updates"] > 0
    assert result.model.whitening is not None and result.model.descriptor_dim == 8
    assert set(result.test_whitened["recall"]) == {1, 5, 10} and len(result.test_whitened["ranks"]) == 12
    reloaded = load_model(tmp_path / "run" / "best_whitened.pt")
    assert bool(reloaded.whitening.fitted) and reloaded.config["whiten_dim"] == 8
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["init"] is None and record["test_whitened"]["recall"] == {
        str(n): v for n, v in result.test_whitened["recall"].items()}


def test_records_store_paths_relative_to_the_repository(tmp_path):
    """A record is valid in another clone: paths inside the checkout are stored relative to it."""
    from repro.paths import rel, repo_root
    from repro.train.trainer import portable_config

    root = repo_root()
    cfg = tiny_config(root / "cache" / "synthetic" / "x", root / "cache" / "t",
                      test_on=(f"synthetic:{root / 'cache' / 'other'}",))
    d = portable_config(cfg)
    assert (d["data_root"], d["out_dir"], d["record_path"]) == ("cache/synthetic/x", "cache/t/run", "cache/t/record.json")
    assert d["test_on"] == ["synthetic:cache/other:test"]
    assert cfg.to_dict()["data_root"] == str(root / "cache" / "synthetic" / "x")  # the config itself is unchanged
    assert rel("/elsewhere-than-the-checkout/a") == "/elsewhere-than-the-checkout/a"  # outside it: absolute
