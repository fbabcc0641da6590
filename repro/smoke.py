"""``make repro``'s short end-to-end check (until the notebook pipeline lands).

Generates the tiny synthetic city, builds a randomly initialised AlexNet +
NetVLAD (no ImageNet weights offline), initialises NetVLAD as the paper does
(k-means on database descriptors, alpha by the rule), and reports recall@N on
the test split. The numbers are synthetic and untrained: they check that
the parts fit together, not the paper's claims.
"""
from __future__ import annotations

import warnings

import torch

from repro.atomic import write_json
from repro.data.datasets import load_split
from repro.data.synthetic import default_city_root, make_synthetic_city
from repro.evaluate import (
    check_split_images,
    evaluate_split,
    init_netvlad_from_images,
    print_recall_table,
)
from repro.model import build_model
from repro.model.init import FAISS_DEFAULT_KMEANS

SEED = 0


def run_smoke(out: str = "results/smoke_check.json", preset: str = "tiny", root=None) -> dict:
    """Run the check, print recall@N, write ``out``; ``root``: an existing city to reuse."""
    root = make_synthetic_city(root or default_city_root(preset, SEED), preset=preset, seed=SEED)
    split = load_split("synthetic", root, "test")
    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are the point here
        model = build_model("alexnet", "netvlad", weights=None, num_clusters=16)
    check_split_images(split, "alexnet")
    init = init_netvlad_from_images(model, split.db_paths, num_images=100, num_descriptors=5000,
                                    device="cpu", seed=SEED, **FAISS_DEFAULT_KMEANS)
    result = evaluate_split(model, split, ns=(1, 5, 10), device="cpu")
    print_recall_table(f"{split.name} (synthetic city, preset {preset}; untrained, random AlexNet)",
                       model.config, result)
    record = {
        "experiment": "smoke_check", "dataset": f"synthetic_{preset}", "split": "test", "seed": SEED,
        "config": model.config, "init": init, "synthetic": True,
        "recall": {str(n): v for n, v in result["recall"].items()},
        "num_queries": result["num_queries"], "seconds": result["seconds"],
    }
    write_json(out, record)
    print(f"wrote {out}")
    return record
