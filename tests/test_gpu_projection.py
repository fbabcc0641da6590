"""benchmarks/gpu_projection.py (issue 16, no GPU): FLOPs per image against torch's
own FLOP counter and a count by hand, the Pitts30k projection against a slow
reference that walks the trainer's epochs and batches, the peak table, and
the command's labelled JSON and CSV."""
from __future__ import annotations

import csv
import json
import math
import warnings

import pytest
import torch

from benchmarks import gpu_projection as gp
from repro.train import TrainConfig

# VGG-16's 13 convolutions (3x3, padding 1): (in, out) channels and the pooling level they run at
VGG16 = [(3, 64, 0), (64, 64, 0), (64, 128, 1), (128, 128, 1), (128, 256, 2), (256, 256, 2), (256, 256, 2),
         (256, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 4), (512, 512, 4), (512, 512, 4)]


def vgg16_by_hand(h: int, w: int, k: int = 64) -> dict:
    """Forward and training-step FLOPs of VGG-16 (trained from conv5_1) + NetVLAD, layer by layer."""
    convs = [2 * 9 * cin * cout * (h >> level) * (w >> level) for cin, cout, level in VGG16]
    n = (h >> 4) * (w >> 4)
    vlad = 2 * k * 512 * n
    # conv5_1..5_3 train: their weight gradients; conv5_2 and 5_3 also pass a gradient to their input
    backward = sum(convs[10:]) + sum(convs[11:]) + 4 * vlad
    return {"forward": sum(convs) + 2 * vlad, "train": sum(convs) + 2 * vlad + backward}


def test_vgg16_flops_at_480x640_by_hand():
    f = gp.image_flops("vgg16", (480, 640), 64, "authors")
    ref = vgg16_by_hand(480, 640)
    assert f["forward"] == ref["forward"] and f["train"] == ref["train"]
    assert f["conv_forward"] == pytest.approx(187.9e9, rel=1e-3)  # the README's ~188 GFLOP per image
    assert f["map_hw"] == [30, 40] and f["trainable_convs"] == 3


def test_flops_match_torch_flop_counter():
    """torch's FlopCounterMode on a real forward and backward (CPU, 96x128): the convolutions of the
    base as the trainer runs them, and NetVLAD's readable autograd definition (its six products;
    the fast layer's in-place product is invisible to the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from repro.model.backbone import build_backbone
    from repro.model.netvlad import NetVLAD

    f = gp.image_flops("vgg16", (96, 128), 64, "authors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = build_backbone("vgg16", weights=None, train_from="authors")
    with FlopCounterMode(display=False) as fc:
        base(torch.randn(1, 3, 96, 128)).sum().backward()
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution"] == f["conv_forward"]
    assert counts["aten.convolution_backward"] == f["conv_backward"]
    x = torch.randn(1, 512, *f["map_hw"], requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        NetVLAD(64, 512, assignment="fixed_bias").forward_autograd(x).sum().backward()
    assert fc.get_total_flops() == f["netvlad_forward"] + f["netvlad_backward"]


def slow_stage_counts(cfg: TrainConfig, sizes: dict) -> tuple[int, int]:
    """Image passes of one training run, walking its epochs and batches as the trainer does (refresh
    before each epoch, then before batch b > 0 every ceil(1000 / 4) batches, doubled every 5 epochs)."""
    (n_train, q_train), (n_val, q_val), (n_test, q_test) = sizes["train"], sizes["val"], sizes["test"]
    forward = cfg.init_images  # k-means on 500 training database images
    val = n_val + min(q_val, cfg.val_queries)
    forward += val + (n_test + q_test)  # epoch 0: validation and the untrained model's test
    train = 0
    for epoch in range(1, cfg.epochs + 1):
        every = math.ceil(cfg.cache_refresh / cfg.batch_size) * 2 ** ((epoch - 1) // cfg.lr_step)
        forward += n_train + q_train  # the refresh before the epoch
        for b in range(q_train // cfg.batch_size):
            if b > 0 and b % every == 0:
                forward += n_train + q_train
            train += cfg.batch_size * (1 + 1 + cfg.num_hard_negatives)
        forward += val
    forward += min(n_train, cfg.whiten_fit_images) + (n_test + q_test)  # whitening fit, final test
    return forward, train


def test_projection_against_a_slow_reference():
    rep = gp.projection()
    cfg = TrainConfig.paper(dataset="pitts30k", pooling="netvlad")
    sizes = {"train": (10000, 7416), "val": (10000, 7608), "test": (10000, 6816)}  # published sizes
    forward, train = slow_stage_counts(cfg, sizes)
    assert (rep["network"]["images_forward"], rep["network"]["images_train"]) == (forward, train)
    ref = vgg16_by_hand(480, 640)
    peak = 989.4e12  # the H200's dense bf16 TFLOP/s
    seconds = forward * ref["forward"] / (0.30 * peak) + train * ref["train"] / (0.25 * peak)
    assert rep["network"]["seconds"] == pytest.approx(seconds, rel=1e-12)
    assert rep["network_hours"] == pytest.approx(seconds / 3600, rel=1e-12)
    assert rep["rates"]["extract_images_per_s"] == pytest.approx(0.30 * peak / ref["forward"])
    assert rep["network"]["flops"] == forward * ref["forward"] + train * ref["train"]
    assert rep["label"] == gp.LABEL and all(g["status"] == "not measured" for g in rep["goals"])


def test_cpu_side_by_hand(tmp_path):
    """Mining and recall scaled from the benchmark rows: here made-up rows, so the arithmetic is checked."""
    (tmp_path / "mining.csv").write_text("benchmark,case,impl,repeat,seconds,N,dim\n"
                                         "mining,pitts30k_32768d,table,median,2.0,5000,16384\n")
    (tmp_path / "eval.csv").write_text("benchmark,case,impl,repeat,seconds,M,Q,dim\n"
                                       "eval,pitts30k_test_32768d,project,median,10.0,1000,500,32768\n")
    cfg, stages, info = gp.paper_run()
    out = gp.cpu_side_seconds(cfg, stages, info, bench_dir=tmp_path)
    queries = 30 * 7416  # every training query, every epoch
    assert out["mined_queries"] == queries
    assert out["mining_seconds"] == pytest.approx(queries / 1000 * 2.0 * (10000 / 5000) * (32768 / 16384))
    per = 10.0 / (1000 * 500 * 32768)
    val = 31 * 1000 * 10000 * 32768                    # epoch 0 and 30 epochs, 1000 val queries
    test = 2 * 6816 * 10000 * 32768 + 6816 * 10000 * 4096  # untrained, best; whitened 4096-D
    assert out["recall_seconds"] == pytest.approx(per * (val + test))
    missing = gp.cpu_side_seconds(cfg, stages, info, bench_dir=tmp_path / "none")
    assert missing["mining_seconds"] is None and missing["recall_seconds"] is None


@pytest.mark.parametrize("name,bf16", [("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4),
                                       ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
                                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.05)])
def test_peak_table_by_device_name(name, bf16):
    assert gp.peak_tflops(name)["bf16"] == bf16


def test_unknown_gpu_and_override():
    assert gp.peak_tflops("NVIDIA GeForce RTX 4090") is None
    assert gp.peak_tflops("anything", override=(100, 50, 10)) == {"bf16": 100.0, "tf32": 50.0, "float32": 10.0,
                                                                    "source": "--peak-tflops", "matched": None}


def test_command_writes_labelled_json_and_csv(tmp_path):
    """The loader's cores priced by bench_datapath's median rows (its largest images), through workers."""
    fields = ["benchmark", "case", "impl", "repeat", "image_h", "image_w", "images", "images_per_cpu_s"]
    rows = [("workers_jpeg_60x80", "workers_0", "median", 60, 80, 8, 900.0),
            ("workers_jpeg_480x640", "workers_0", "median", 480, 640, 672, 333.0),
            ("workers_jpeg_480x640", "workers_2", "median", 480, 640, 672, 199.0),
            ("workers_jpeg_480x640", "workers_2", 0, 480, 640, 672, 5.0)]
    with open(tmp_path / "datapath.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for case, impl, repeat, h, wd, n, rate in rows:
            w.writerow(dict(benchmark="datapath", case=case, impl=impl, repeat=repeat, image_h=h, image_w=wd,
                            images=n, images_per_cpu_s=rate))
    assert gp.main(["--out", str(tmp_path / "out"), "--decode-from", str(tmp_path / "datapath.csv")]) == 0
    rep = json.loads((tmp_path / "out" / "gpu_projection.json").read_text())
    assert rep["label"] == "projected (not measured on a GPU)"
    # VGG-16 from conv5_1 (3 convs of 512x512x3x3 + bias) and the fixed-bias NetVLAD (centroids, weights)
    g = rep["torchrun_gather"]
    assert g["trainable_parameters"] == 3 * (512 * 512 * 9 + 512) + 2 * 64 * 512
    assert g["bytes_per_batch"] == g["trainable_parameters"] * 4 * 4
    d = rep["decode"]
    assert d["image_hw"] == [480, 640] and d["images_per_s_per_core"] == 333.0
    assert d["images_per_s_per_core_with_workers"] == 199.0
    assert d["cores_for_extraction"] == pytest.approx(rep["rates"]["extract_images_per_s"] / 199.0)
    assert d["cores_for_training"] == pytest.approx(rep["rates"]["train_images_per_s"] / 199.0)
    assert gp.main(["--out", str(tmp_path / "none"), "--decode-from", str(tmp_path / "absent.csv")]) == 0
    assert "decode" not in json.loads((tmp_path / "none" / "gpu_projection.json").read_text())
    with open(tmp_path / "out" / "gpu_projection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["label"] for r in rows)
    total = next(r for r in rows if r["stage"] == "network passes, total")
    assert float(total["seconds"]) == pytest.approx(rep["network"]["seconds"], rel=1e-5)
