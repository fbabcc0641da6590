"""Result files and their names: where each notebook step writes its records.

    results/data/{dataset}_counts.csv                                          01_data_prep
    results/train/{run_name}.json                                              02_train (the trainer's record)
    results/alpha_sweep/{dataset}_{backbone}_K{K}_{off_the_shelf|trained}_alpha{alpha}.json   03_alpha_sweep
    results/fmax_output_size/{dataset}_{backbone}_K{K}.json                    04_fmax_output_size
    results/authors_models/{Pitts30K|TokyoTM}_struct_on_{dataset}.json         06_authors_models
    results/real_images/{real_off_the_shelf|alpha_sweep|sim_to_real}_{set}.json  07_real_images (real photographs)

Each record is one JSON file (:func:`repro.atomic.write_json`: config, seed,
git commit, tidy ``rows`` of recall@N). :func:`expected_outputs` names them
for a notebook and its parameters, so the pipeline can skip runs whose
results exist; 05 gathers them into ``results/summary.csv`` and
``results/claims.csv`` (:mod:`repro.report.summary`, :mod:`repro.report.claims`).
"""
from __future__ import annotations

import json
from pathlib import Path

from repro.data.datasets import is_synthetic
from repro.model.authors import AUTHORS_FILES
from repro.paths import repo_root
from repro.report.parameters import check_alpha_param

# The N of the paper's Figure 5.
PAPER_NS = (1, 2, 3, 4, 5, 10, 15, 20, 25)
# What the report's experiments report (Figure 5's N).
NS = PAPER_NS


def resolve_dir(path, default: str) -> Path:
    """A results/figures/cache folder: relative paths are taken from the cwd
    (the notebook's folder under papermill); None -> ``<repo>/default``."""
    return Path(path).expanduser().resolve() if path else repo_root() / default


def dataset_label(dataset: str, synthetic_preset: str = "default", city_seed: int = 0, data_root=None) -> str:
    """``synthetic_default_seed0`` for the generated city; ``synthetic_pitts30k``
    for a generated city in a real dataset's layout (the rehearsal), so its
    results are never taken for Pittsburgh's; else the dataset name."""
    if dataset == "synthetic":
        return f"synthetic_{synthetic_preset}_seed{city_seed}"
    return f"synthetic_{dataset}" if is_synthetic(dataset, data_root) else dataset


def train_dataset_label(rec: dict) -> str:
    """The :func:`dataset_label` of the data a trainer record was trained on."""
    cfg = rec.get("config", {})
    if rec.get("dataset") == "synthetic" and cfg.get("data_root"):
        return f"synthetic_{Path(cfg['data_root']).name}"
    if rec.get("dataset") != "synthetic":  # the record's own flag: its data_root may be relative to another clone
        return f"synthetic_{rec['dataset']}" if rec.get("synthetic") else rec.get("dataset", "?")
    return dataset_label("synthetic", cfg.get("synthetic_preset", "default"), cfg.get("city_seed", 0))


def alpha_tag(alpha: float) -> str:
    """A file-name-safe, stable rendering of alpha (4 significant digits)."""
    return f"{float(alpha):.4g}".replace("+", "")


def _image_size(image_size):
    return tuple(int(v) for v in image_size) if image_size else None


def alpha_sweep_path(results_dir, dataset_name: str, backbone: str, num_clusters: int, alpha: float,
                     trained: bool = False) -> Path:
    kind = "trained" if trained else "off_the_shelf"
    return Path(results_dir) / "alpha_sweep" / f"{dataset_name}_{backbone}_K{num_clusters}_{kind}_alpha{alpha_tag(alpha)}.json"


def fmax_size_path(results_dir, dataset_name: str, backbone: str, num_clusters: int) -> Path:
    return Path(results_dir) / "fmax_output_size" / f"{dataset_name}_{backbone}_K{num_clusters}.json"


# The real-photograph sets of 07 (VPR-Bench folders under ../shared/data/real).
REAL_SETS = ("gardens_point_night", "gardens_point_day_left", "nordland_summer_winter")


def real_images_path(results_dir, experiment: str, set_name: str) -> Path:
    """07's record of one experiment (real_off_the_shelf, alpha_sweep, sim_to_real) on one real set."""
    return Path(results_dir) / "real_images" / f"{experiment}_{set_name}.json"


def data_counts_path(results_dir, dataset_name: str) -> Path:
    return Path(results_dir) / "data" / f"{dataset_name}_counts.csv"


def train_run_name(dataset_name: str, backbone: str, pooling: str, seed: int) -> str:
    return f"{dataset_name}_{backbone}_{pooling}_seed{seed}"


def train_record_path(results_dir, run_name: str) -> Path:
    return Path(results_dir) / "train" / f"{run_name}.json"


def authors_record_path(results_dir, trained_on: str, dataset: str) -> Path:
    return Path(results_dir) / "authors_models" / f"{AUTHORS_FILES[trained_on].removesuffix('.mat')}_on_{dataset}.json"


def record_complete(path: Path) -> bool:
    """A result file exists and, if it is a JSON record with a status, is complete."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix != ".json":
        return True
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return rec.get("status", "complete") == "complete"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def load_records(results_dir, experiment: str) -> list[dict]:
    """Every JSON record under ``results_dir/experiment/`` (sorted by name)."""
    folder = resolve_dir(results_dir, "results") / experiment
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        rec["path"] = p
        out.append(rec)
    return out


def expected_outputs(notebook: str, params: dict) -> list[Path]:
    """The result files a run of ``notebook`` with ``params`` writes (absolute
    paths; ``results_dir`` relative to the repository root when relative).
    Empty for notebooks that always run (05)."""
    p = dict(params)
    results = Path(p.get("results_dir") or "results")
    if not results.is_absolute():
        results = repo_root() / results
    name = dataset_label(p.get("dataset", "synthetic"), p.get("synthetic_preset", "default"), p.get("city_seed", 0),
                         p.get("data_root"))
    stem = notebook.split(".")[0]
    if stem.startswith("01"):
        return [data_counts_path(results, name)]
    if stem.startswith("02"):
        return [train_record_path(results, train_run_name(name, p.get("backbone", "alexnet"), pooling, p.get("seed", 0)))
                for pooling in p.get("poolings", ["netvlad", "fmax"])]
    if stem.startswith("03"):
        out = [alpha_sweep_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16),
                                check_alpha_param(p["alpha"]))]
        if p.get("train"):
            out.append(alpha_sweep_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16),
                                        p["alpha"], trained=True))
        return out
    if stem.startswith("04"):
        return [fmax_size_path(results, name, p.get("backbone", "alexnet"), p.get("num_clusters", 16))]
    if stem.startswith("06"):  # the evaluable pairs only; with none (no model files here) the step always runs
        from repro.report.authors_models import authors_plan

        return [authors_record_path(results, e["trained_on"], e["dataset"])
                for e in authors_plan(p.get("test_sets", ()), p.get("authors_model"), p.get("data_root"),
                                      p.get("tokyo247_root")) if e["skip"] is None]
    if stem.startswith("07"):  # the sets present (an absent one is skipped, and the profile's requires skips all)
        root = Path(p.get("real_root") or repo_root().parent / "shared" / "data" / "real")
        sets = [n for n in p.get("real_sets", REAL_SETS) if (root / n / "ground_truth_new.npy").is_file()]
        out = [real_images_path(results, "real_off_the_shelf", n) for n in sets]
        if p.get("real_alpha_set", "gardens_point_night") in sets:
            out.append(real_images_path(results, "alpha_sweep", p.get("real_alpha_set", "gardens_point_night")))
        if p.get("sim_to_real_seeds", [0, 1, 2]):
            out += [real_images_path(results, "sim_to_real", n) for n in sets]
        return out
    return []
