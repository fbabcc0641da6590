"""The data path of issue 16: 8-bit images normalised on the device (bit-identical to the float path),
DataLoader workers (identical results with and without them), the worker count, mixed precision in
training, NetVLAD in float32 under a caller's autocast, and GPU out-of-memory errors that name the setting
to lower."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import repro.train.loop as loop_module
from repro.data.images import ImageListDataset, normalize_images, to_tensor
from repro.data.loader import (ImageStream, LoaderClock, collate_groups, collate_tuple, consecutive_batches,
                               resolve_workers)
from repro.errors import ConfigError, DeviceMemoryError, report_errors
from repro.evaluate import extract_descriptors
from repro.model import build_model
from repro.model.netvlad import NetVLAD
from repro.train import TrainConfig, train
from train_fakes import comparable, tiny_config

pytestmark = [pytest.mark.filterwarnings("ignore:.*randomly initialised"), pytest.mark.usefixtures("one_thread")]


# --------------------------------------------------------------------------- 8-bit images


def test_normalising_8bit_images_gives_the_float_path_bit_for_bit():
    rng = np.random.default_rng(16)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((1, 1), (7, 5), (48, 64), (480, 640))]
    for arr in arrays:
        expected = to_tensor(arr)  # numpy float32 / 255, then (x - mean) / std
        got = normalize_images(torch.from_numpy(arr).permute(2, 0, 1))
        assert got.dtype == torch.float32 and torch.equal(got, expected)
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in [arrays[2]] * 3])
    assert torch.equal(normalize_images(batch)[1], to_tensor(arrays[2]))  # batched: the same per image


@pytest.mark.parametrize("fmt,size", [("png", None), ("jpeg", (24, 40)), ("png", (31, 17))])
def test_8bit_items_normalised_equal_the_float_items(tmp_path, fmt, size):
    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate([(40, 60), (40, 60), (33, 21)]):
        p = tmp_path / f"im{i}.{fmt}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    plain, eight = ImageListDataset(paths, size), ImageListDataset(paths, size, uint8=True)
    for i in range(len(paths)):
        u8, j = eight[i]
        assert u8.dtype == torch.uint8 and j == i
        assert torch.equal(normalize_images(u8), plain[i][0])


def test_collate_groups_stacks_each_image_size_in_order():
    items = [(torch.full((3, 2, 2), i, dtype=torch.uint8), 10 + i) for i in range(3)]
    items.insert(1, (torch.zeros(3, 4, 5, dtype=torch.uint8), 9))
    groups = collate_groups(items)
    assert [g[0].shape for g in groups] == [(3, 3, 2, 2), (1, 3, 4, 5)]
    assert groups[0][1].tolist() == [0, 2, 3] and groups[1][1].tolist() == [1]  # positions in the batch
    assert [int(x[0, 0, 0]) for x in groups[0][0]] == [0, 1, 2]
    same = [(torch.full((3, 2, 2), i, dtype=torch.uint8), i) for i in range(3)]
    assert collate_tuple(same).shape == (3, 3, 2, 2) and isinstance(collate_tuple(items), list)


def test_a_persistent_stream_serves_pass_after_pass(tiny_city):
    """The trainer's streams keep their worker processes; each pass gives the images asked for, in order,
    the same as reading them here (and an unfinished pass does not leak into the next)."""
    from repro.data.datasets import load_split

    paths = load_split("synthetic", tiny_city, "test").db_paths[:12]
    data = ImageListDataset(paths, (32, 40), uint8=True)
    stream = ImageStream(data, 2, "cpu", collate_fn=collate_tuple, persistent=True)
    for batches in ([[0, 1, 2], [5]], [[11, 3], [4, 4, 4], [7]], [[1]]):
        got = list(stream.batches(batches))
        assert len(got) == len(batches)
        for b, g in zip(batches, got):
            assert torch.equal(g, torch.stack([data[i][0] for i in b]))
    first = stream.batches([[0], [1], [2]])
    next(first)  # abandoned after one batch
    assert [torch.equal(g, data[9][0][None]) for g in stream.batches([[9]])] == [True]
    assert consecutive_batches(5, 2, start=3) == [[3, 4], [5, 6], [7]] and consecutive_batches(0, 4) == []


# --------------------------------------------------------------------------- workers


def test_extraction_is_identical_with_and_without_workers(tiny_city):
    from repro.data.datasets import load_split

    paths = load_split("synthetic", tiny_city, "test").db_paths[:40]
    torch.manual_seed(0)
    model = build_model("alexnet", "fmax", weights=None)
    clocks = [LoaderClock(), LoaderClock()]
    a = extract_descriptors(model, paths, (64, 80), batch_size=8, num_workers=0, clock=clocks[0])
    b = extract_descriptors(model, paths, (64, 80), batch_size=8, num_workers=2, clock=clocks[1])
    assert a.shape == (40, 256) and np.array_equal(a, b)
    assert [c.batches for c in clocks] == [5, 5] and all(c.wait >= 0 for c in clocks)


@pytest.mark.slow
def test_training_is_identical_with_and_without_workers(street, tmp_path):
    runs = [train(tiny_config(street, tmp_path / f"w{w}", num_workers=w, epochs=2)) for w in (0, 2)]
    assert comparable(runs[0].history) == comparable(runs[1].history)
    assert runs[0].test == {**runs[1].test, "seconds": runs[0].test["seconds"]}
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rec = json.loads((tmp_path / "w2" / "record.json").read_text())
    assert rec["num_workers"] == 2 and rec["precision"] == "float32" and rec["world_size"] == 1
    assert all(e["loader_wait_seconds"] >= 0 and e["refresh_seconds"] > 0 for e in rec["epochs"][1:])


def test_worker_count(monkeypatch):
    import repro.data.loader as loader

    assert resolve_workers(3, "cpu") == 3 and resolve_workers(0, "cuda") == 0
    assert resolve_workers("auto", "cpu") == 0  # a CPU run keeps its cores for the network
    monkeypatch.setattr(loader, "usable_cores", lambda: 16)
    assert resolve_workers("auto", "cuda") == 15
    assert resolve_workers("auto", "cuda", processes_per_node=4) == 3  # each torchrun rank its share
    assert resolve_workers("auto", "cuda", processes_per_node=16) == 1
    monkeypatch.setattr(loader, "usable_cores", lambda: 64)
    assert resolve_workers("auto", "cuda") == loader.MAX_AUTO_WORKERS
    for bad in (-1, 1.5, "many", True):
        with pytest.raises(ConfigError, match="num_workers"):
            resolve_workers(bad, "cpu")
        with pytest.raises(ConfigError, match="num_workers"):
            TrainConfig(num_workers=bad).validate()
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16").validate()
    assert TrainConfig.paper(data_root="/data").num_workers == "auto"


def test_an_empty_pass_and_the_clock():
    clock = LoaderClock()
    assert list(ImageStream(ImageListDataset([]), 0, "cpu").batches([], clock)) == []
    assert clock.batches == 0


# --------------------------------------------------------------------------- precision


def test_netvlad_stays_float32_under_a_callers_autocast():
    torch.manual_seed(0)
    layer = NetVLAD(8, 16, assignment="paper")
    layer.init_from_centroids(torch.nn.functional.normalize(torch.randn(8, 16), dim=1), alpha=20.0)
    x = torch.randn(2, 16, 5, 6).to(torch.bfloat16).requires_grad_()
    ref_x = x.detach().float().requires_grad_()
    target = torch.randn(2, 8 * 16)
    ref = layer(ref_x)
    (ref * target).sum().backward()
    ref_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        (out * target).sum().backward()  # backward inside the region too (CPU runs it on this thread)
    assert out.dtype == torch.float32 and torch.equal(out, ref)  # every sum in float32, as without autocast
    assert all(torch.equal(p.grad, g) for p, g in zip(layer.parameters(), ref_grads))
    assert x.grad.dtype == torch.bfloat16 and torch.equal(x.grad, ref_x.grad.to(torch.bfloat16))


@pytest.mark.slow
def test_training_in_bf16_on_the_cpu(street, tmp_path):
    """precision="bf16" runs the base under CPU autocast through the whole run; "auto" on a CPU is float32,
    bit for bit the default."""
    low = train(tiny_config(street, tmp_path / "bf16", precision="bf16", epochs=2))
    rec = json.loads((tmp_path / "bf16" / "record.json").read_text())
    assert rec["precision"] == "bf16" and rec["config"]["precision"] == "bf16"
    assert all(np.isfinite(e["loss"]) for e in rec["epochs"][1:]) and sum(e["updates"] for e in rec["epochs"][1:]) > 0
    assert low.model.precision == "bf16" and low.test["recall"][10] > 0
    auto = train(tiny_config(street, tmp_path / "auto", epochs=1))
    f32 = train(tiny_config(street, tmp_path / "f32", precision="float32", epochs=1))
    assert json.loads((tmp_path / "auto" / "record.json").read_text())["precision"] == "float32"
    assert comparable(auto.history) == comparable(f32.history)


# --------------------------------------------------------------------------- out of memory


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_extraction_names_the_batch_and_image_size(tiny_city, monkeypatch, capsys):
    from repro.data.datasets import load_split

    paths = load_split("synthetic", tiny_city, "test").db_paths[:4]
    model = build_model("alexnet", "fmax", weights=None)
    monkeypatch.setattr(model, "pooled", _out_of_memory)
    with pytest.raises(DeviceMemoryError) as info:
        extract_descriptors(model, paths, (64, 80), batch_size=4, whiten=False, desc="cache: database")
    msg = str(info.value)
    assert "a batch of 4 images of 64x80" in msg and "eval_batch_size" in msg and "now 4" in msg
    assert "image_size" in msg and "Tried to allocate 20.00 GiB" in msg
    assert report_errors(extract_descriptors, model, paths, (64, 80), 4, whiten=False) == 2  # the command line
    err = capsys.readouterr().err
    assert "\nerror: the GPU ran out of memory" in "\n" + err.split("\r")[-1] and "Traceback" not in err


def test_out_of_memory_in_training_names_the_tuple_size(street, tmp_path, monkeypatch):
    monkeypatch.setattr(loop_module, "forward_images", _out_of_memory)
    with pytest.raises(DeviceMemoryError, match=r"training on a tuple of \d+ images of 64x64 .*num_hard_negatives"
                                                r" \(--num-hard-negatives, now 10"):
        train(tiny_config(street, tmp_path, epochs=1))
