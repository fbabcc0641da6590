"""Every notebook's parameters, declared once, and their checks.

Each :class:`Param` names a notebook parameter: its default (Python source),
what it is, its paper-scale value, and its :class:`Check` (a pydantic type,
what the value must be, a papermill example; :data:`CHECKS` gives one per
name, since a name means the same thing in every notebook). From
:data:`NOTEBOOK_PARAMETERS` follow:

- the notebook's ``parameters`` cell (:func:`parameters_cell`;
  ``python -m repro.report.parameters --write`` rewrites the cells and the
  README table, and a test fails when either disagrees with the declarations);
- the check each notebook's first cell and the pipeline (for every run,
  before the first starts) make: :func:`check_params`;
- the README's table of parameters (:func:`readme_table`).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import (
    AfterValidator,
    Field,
    InstanceOf,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from repro.data import DATASETS
from repro.errors import ConfigError
from repro.model.backbone import BACKBONES
from repro.model.fmax import check_output_size
from repro.model.netvlad import check_alpha
from repro.model.place_model import POOLINGS

__all__ = ["Check", "CHECKS", "Param", "Note", "NOTEBOOK_PARAMETERS", "check_params", "check_alpha_param",
           "parameters_cell", "readme_table", "declared_names"]


# ---------------------------------------------------------------------------
# the checks: pydantic types (scalars strict: 16.0 is not an integer, "yes" not a bool), each with
# what the value must be (the error says it) and a papermill example


def _at_least(low: int):
    return Annotated[StrictInt, Field(ge=low)]


def _choice(*values):
    return Literal[values]


_PATH = Union[Annotated[StrictStr, Field(min_length=1)], InstanceOf[os.PathLike]]
_ALPHA = Annotated[Union[StrictInt, StrictFloat], AfterValidator(check_alpha)]
_PAIR = Annotated[list[_at_least(1)], Field(min_length=2, max_length=2)]


def _train_fields(options: dict) -> dict:
    from repro.train import TrainConfig

    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown: {unknown}")
    return options


def _grids(grids: list) -> list:
    for g in grids:
        check_output_size(g)  # the layer's own check (a ConfigError is a ValueError)
    return grids


@dataclass(frozen=True)
class Check:
    """What a parameter must be: ``type`` (checked with pydantic), ``expected``
    (said in the error), ``example`` (how to pass it with papermill)."""

    type: Any
    expected: str
    example: str

    def problem(self, value) -> str | None:
        """None when ``value`` passes, else what it must be (and, where the check says more, why)."""
        try:
            _adapter(self.type).validate_python(_plain(value))
        except ValidationError as exc:
            why = [str(e["ctx"]["error"]) for e in exc.errors() if e["type"] == "value_error"]
            return self.expected + (f" ({why[0].removeprefix('Value error, ')})" if why else "")
        return None


@cache
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp)


def _plain(value):
    """numpy scalars as Python's (a profile or a caller may pass them; papermill passes Python values)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


_GRIDS = "a non-empty list of f_max grids (g for g x g, or [h, w]), each at least 1x1"
_DATASETS = tuple(d for d in DATASETS if d != "vprbench")
_TEST_SETS = ("pitts30k", "pitts250k", "tokyo247")  # repro.report.authors_models.AUTHORS_TESTS (a test checks)
# repro.report.real_images.REAL_SETS (a test checks; not imported: that module draws with matplotlib)
_REAL_SETS = ("gardens_point_night", "gardens_point_day_left", "nordland_summer_winter")
C = Check
# name -> its check, in every notebook that declares the name
CHECKS = {
    "dataset": C(_choice(*_DATASETS), "one of " + ", ".join(map(repr, _DATASETS)), "-p dataset pitts30k"),
    "data_root": C(Optional[_PATH], "None or a non-empty string (a path or a name)", "-p data_root /data/pittsburgh"),
    "synthetic_preset": C(_choice("tiny", "default", "large"), "one of 'tiny', 'default', 'large'",
                          "-p synthetic_preset tiny"),
    "city_seed": C(_at_least(0), "an integer >= 0", "-p city_seed 0"),
    "seed": C(_at_least(0), "an integer >= 0", "-p seed 0"),
    "n_samples": C(_at_least(0), "an integer >= 0", "-p n_samples 6"),
    "backbone": C(_choice(*BACKBONES), "one of " + ", ".join(map(repr, BACKBONES)), "-p backbone vgg16"),
    "weights": C(Optional[_PATH], "None (random init), 'imagenet', the path of a .pth state dict, or the authors' "
                 "converted model (PATH.mat or authors:PATH: their VGG-16 base)", "-p weights imagenet"),
    "image_size": C(Optional[_PAIR], "None (native size) or [H, W], two positive integers",
                    '-y "image_size: [96, 128]"'),
    "device": C(_PATH, "a non-empty string (a path or a name)", "-p device cpu"),
    "epochs": C(_at_least(1), "an integer >= 1", "-p epochs 4"),
    "poolings": C(Annotated[list[_choice(*POOLINGS)], Field(min_length=1)],
                  f"a non-empty list drawn from {list(POOLINGS)}", '-y "poolings: [netvlad, fmax]"'),
    "num_clusters": C(_at_least(2), "an integer >= 2", "-p num_clusters 64"),
    "whiten_dim": C(Optional[_at_least(1)], "None or an integer >= 1", "-p whiten_dim 4096"),
    "assignment": C(Optional[_choice("paper", "fixed_bias")], "None or one of 'paper', 'fixed_bias'",
                    "-p assignment fixed_bias"),
    "train_options": C(Annotated[dict[str, Any], AfterValidator(_train_fields)],
                       "a dict of repro.train.TrainConfig fields",
                       '-y "train_options: {queries_per_epoch: 200}"'),
    "reuse_existing": C(StrictBool, "True or False", "-p reuse_existing False"),
    "train": C(StrictBool, "True or False", "-p train True"),
    "alpha": C(_ALPHA, "a positive, finite number (NetVLAD's alpha)",
               "-p alpha 50"),
    "init_images": C(_at_least(1), "an integer >= 1", "-p init_images 500"),
    "init_descriptors": C(_at_least(1), "an integer >= 1", "-p init_descriptors 50000"),
    "split": C(_choice("train", "val", "test"), "one of 'train', 'val', 'test'", "-p split test"),
    "feature_dtype": C(_choice("float32", "float16"), "one of 'float32', 'float16'", "-p feature_dtype float16"),
    "grids": C(Annotated[list[Union[_at_least(1), _PAIR]], Field(min_length=1), AfterValidator(_grids)], _GRIDS,
               '-y "grids: [1, 2, 4]"'),
    "whiten_dims": C(list[_at_least(1)], "a list of positive integers", '-y "whiten_dims: [256, 128]"'),
    "whiten_fit_images": C(_at_least(1), "an integer >= 1", "-p whiten_fit_images 10000"),
    "results_dir": C(_PATH, "a non-empty string (a path or a name)", "-p results_dir ../results"),
    "figures_dir": C(_PATH, "a non-empty string (a path or a name)", "-p figures_dir ../figures"),
    "cache_dir": C(Optional[_PATH], "None or a non-empty string (a path)", "-p cache_dir ../cache/features"),
    "train_cache_dir": C(Optional[_PATH], "None or a non-empty string (a path)", "-p train_cache_dir ../cache/train"),
    "reference_dir": C(Optional[_PATH], "None or a non-empty string (a path)",
                       "-p reference_dir ../../shared/reference"),
    "authors_model": C(Optional[_PATH], "None or a non-empty string (a path)", "-p authors_model /data/models/authors"),
    "tokyo247_root": C(Optional[_PATH], "None or a non-empty string (a path)", "-p tokyo247_root /data/tokyo247"),
    "test_sets": C(Annotated[list[_choice(*_TEST_SETS)], Field(min_length=1)],
                   f"a non-empty list of test sets among {list(_TEST_SETS)}", '-y "test_sets: [pitts30k, tokyo247]"'),
    "batch_size": C(_at_least(1), "an integer >= 1", "-p batch_size 16"),
    "n_retrievals": C(_at_least(1), "an integer >= 1", "-p n_retrievals 5"),
    "real_root": C(_PATH, "a non-empty string (a path)", "-p real_root ../../shared/data/real"),
    "real_sets": C(Annotated[list[_choice(*_REAL_SETS)], Field(min_length=1)],
                   f"a non-empty list of real sets among {list(_REAL_SETS)}",
                   '-y "real_sets: [gardens_point_night]"'),
    "real_alpha_set": C(_choice(*_REAL_SETS), "one of " + ", ".join(map(repr, _REAL_SETS)),
                        "-p real_alpha_set gardens_point_night"),
    "alphas": C(Annotated[list[_ALPHA], Field(min_length=1)], "a non-empty list of positive, finite numbers",
                '-y "alphas: [0.1, 10, 1000]"'),
    "fmax_grid": C(Optional[Union[_at_least(1), _PAIR]], "None (04's best grid) or an f_max grid (g, or [h, w])",
                   "-p fmax_grid 3"),
    "raw_pixel_size": C(_PAIR, "[H, W], two positive integers", '-y "raw_pixel_size: [24, 32]"'),
    "sim_to_real_seeds": C(list[_at_least(0)], "a list of integers >= 0 (training seeds; [] skips the step)",
                           '-y "sim_to_real_seeds: [0, 1, 2]"'),
    "n_retrieval_queries": C(_at_least(0), "an integer >= 0", "-p n_retrieval_queries 6"),
}
del C
# folders a run writes to: checked writable before it starts
WRITABLE_PARAMS = ("results_dir", "figures_dir", "cache_dir", "train_cache_dir")


# ---------------------------------------------------------------------------
# the declarations


@dataclass(frozen=True)
class Param:
    """One parameter: ``name = default`` (Python source), what it is, its paper-scale value (source)."""

    name: str
    default: str
    what: str = ""
    paper: str | None = None
    check: Check | None = field(default=None, compare=False)  # None: CHECKS[name]

    def __post_init__(self):
        if self.check is None:
            object.__setattr__(self, "check", CHECKS[self.name])

    def comment(self) -> str:
        return "; ".join(x for x in ((f"paper-scale: {self.paper}" if self.paper else ""), self.what) if x)


@dataclass(frozen=True)
class Note:
    """A comment line of the cell (knobs a notebook does not use, and why)."""

    text: str


def _shared():
    P = Param
    return {
        "dataset": P("dataset", '"synthetic"', "the dataset (or \"pitts250k\")", '"pitts30k"'),
        "data_root": P("data_root", "None", "the dataset's root: dbStruct .mat files and images", '"/data/pittsburgh"'),
        "synthetic_preset": P("synthetic_preset", '"default"', 'synthetic city only: "tiny" | "default" | "large"'),
        "city_seed": P("city_seed", "0", "synthetic city only: its generator seed"),
        "backbone": P("backbone", '"alexnet"', "", '"vgg16"'),
        "weights": P("weights", "None", "None: random init; \"imagenet\" (torchvision), a .pth path, or the authors' "
                     ".mat (their VGG-16 base)", '"imagenet"'),
        "image_size": P("image_size", "[96, 128]", "[H, W] resizes every image", "None (native 640x480)"),
        "device": P("device", '"cpu"', "", '"cuda"'),
        "num_clusters": P("num_clusters", "16", "NetVLAD K", "64"),
        "assignment": P("assignment", "None", "NetVLAD layer; None: the training profile's (\"paper\" on the synthetic "
                        "city, \"fixed_bias\", the authors' layerVLAD, on real data)"),
        "seed": P("seed", "0"),
        "results_dir": P("results_dir", '"../results"', "tidy result files"),
        "figures_dir": P("figures_dir", '"../figures"', "PNG + PDF"),
    }


def _declarations() -> dict:
    s, P = _shared(), Param
    optional_alpha = Optional[_ALPHA]
    real = [s["dataset"], s["data_root"], s["synthetic_preset"], s["city_seed"]]
    model = [s["backbone"], s["weights"], s["image_size"], s["device"]]
    out = [s["seed"], s["results_dir"], s["figures_dir"]]
    return {
        "01_data_prep": ("Defaults: the embedded synthetic city on the CPU.", [
            *real, P("n_samples", "6", "query / nearest-database image pairs to show"), *out,
            Note("Used by the other notebooks: backbone, weights, image_size, epochs, device.")]),
        "02_train": ("Defaults: synthetic city, CPU, ~10 minutes.", [
            *real, *model, P("epochs", "10", "", "30"),
            P("poolings", '["netvlad", "fmax"]', "one training run each"), s["num_clusters"],
            P("whiten_dim", "None", "PCA whitening of NetVLAD, fitted after training; f_max stays unwhitened", "4096"),
            s["assignment"],
            P("train_options", "{}", 'any other repro.train.TrainConfig field, e.g. {"queries_per_epoch": 200}'),
            P("reuse_existing", "True", "reuse a complete training record with the same settings"), *out,
            P("cache_dir", '"../cache/train"', "checkpoints")]),
        "03_alpha_sweep": ("Defaults: synthetic city, CPU, seconds per alpha once cached.", [
            P("alpha", "10.0", "NetVLAD alpha (> 0); the pipeline sweeps 1e-2 .. 1e4 and the paper's rule"),
            P("train", "False", "True: also train NetVLAD with alpha fixed at this value (~5 min on a CPU)"),
            *real, *model, P("epochs", "10", "only used to train (train True)", "30"), s["num_clusters"],
            s["assignment"],
            P("init_images", "300", "k-means on descriptors of this many training database images", "500"),
            P("init_descriptors", "20000", "", "50000"), P("split", '"test"', "the split evaluated"),
            P("train_options", "{}", "to train: other repro.train.TrainConfig fields"), *out,
            P("cache_dir", '"../cache/features"', "cached conv maps of the untrained base"),
            P("feature_dtype", '"float32"', "float16 halves the cache: ~20 GB for Pitts30k-test, VGG-16", '"float16"'),
            P("train_cache_dir", '"../cache/train"', "checkpoints, when training")]),
        "04_fmax_output_size": ("Defaults: synthetic city, CPU, evaluation only (no training).", [
            *real, *model, Note("epochs: not used (off-the-shelf only); paper-scale training is in 02_train."),
            P("grids", "[1, 2, 3, 4, 5]", "f_max output grids g x g (each at most the conv map's size)"),
            P("whiten_dims", "[1024, 512, 256, 128, 64]", "NetVLAD PCA reductions", "[4096, 2048, 1024, 512, 256, 128]"),
            P("whiten_fit_images", "10000", "training database images PCA is fitted on (authors: 10000)"),
            P("alpha", "None", "None: the paper's rule",
              check=Check(optional_alpha, "None (the paper's rule) or a positive, finite number "
                          "(NetVLAD's alpha)", "-p alpha 50")), s["num_clusters"], s["assignment"],
            P("init_images", "300", "", "500"), P("init_descriptors", "20000", "", "50000"), P("split", '"test"'),
            *out, P("cache_dir", '"../cache/features"', "cached conv maps of the untrained base"),
            P("feature_dtype", '"float32"', "halves the cache", '"float16"')]),
        "05_paper_comparison": ("Nothing is trained or evaluated here.", [
            s["results_dir"], s["figures_dir"],
            P("reference_dir", "None", "None: ../shared/reference when present (refreshes results/paper/), else the "
                                       "committed copy"),
            Note("The experiments' knobs (dataset, data_root, backbone, weights, image_size, epochs, device) are set "
                 "in 01-04.")]),
        "06_authors_models": ("Defaults: the files in ../models/authors, if present; nothing else needed.", [
            P("authors_model", '"../models/authors"', "folder holding Pitts30K_struct.mat and/or TokyoTM_struct.mat "
                                                       "(or one .mat file)"),
            P("data_root", "None", "Pittsburgh: datasets/pitts30k_test.mat, pitts250k_test.mat, images",
              '"/data/pittsburgh"'),
            P("tokyo247_root", "None", "tokyo247.mat, database and 247query_subset_v2", '"/data/tokyo247"'),
            P("test_sets", '["pitts30k", "pitts250k", "tokyo247"]'),
            Note("dataset, backbone, weights: fixed by the authors' files (VGG-16 + NetVLAD K=64 + whitening to 4096-D)"),
            Note("epochs: not used (nothing is trained here)"),
            P("image_size", "None", "None: native size, as the authors; [H, W] resizes"), s["device"],
            P("batch_size", "16"), P("reuse_existing", "True", "False re-evaluates even where results exist"),
            s["results_dir"], s["figures_dir"],
            P("reference_dir", '"../../shared/reference"', "the digitised Figure 5 (copied to results/paper/)")]),
        "08_retrievals": ("Defaults: synthetic city, CPU, evaluation only (02's models), ~1-2 minutes.", [
            *real, *model, Note("epochs: not used (the trained models are 02_train's runs of this seed)."),
            P("poolings", '["netvlad", "fmax"]', "02's trained models shown beside the off-the-shelf NetVLAD"),
            s["num_clusters"], s["assignment"],
            P("init_images", "300", "the off-the-shelf NetVLAD's k-means images (as 02)", "500"),
            P("init_descriptors", "20000", "", "50000"), P("split", '"test"', "the split evaluated"),
            P("n_samples", "6", "queries shown: half correct at rank 1 (by the trained NetVLAD), half not"),
            P("n_retrievals", "5", "retrievals shown per query"), *out,
            P("cache_dir", '"../cache/features"', "cached conv maps of the untrained base")]),
        "07_real_images": ("Defaults: the three real sets in ../shared, CPU, evaluation only, ~2-3 minutes.", [
            P("real_root", '"../../shared/data/real"', "VPR-Bench folders (absent in a fresh clone: every step says "
              "skipped)"),
            P("real_sets", '["gardens_point_night", "gardens_point_day_left", "nordland_summer_winter"]'),
            Note("data_root: not used (the real sets are under real_root; dataset, synthetic_preset, city_seed name "
                 "the synthetic data the NetVLAD init is fitted on and 02 trained on)"),
            P("dataset", '"synthetic"', "where the main NetVLAD init is fitted and 02 trained: the synthetic city",
              check=Check(_choice("synthetic"), "'synthetic' (02's training data)", "-p dataset synthetic")),
            s["synthetic_preset"], s["city_seed"], s["backbone"], s["weights"],
            P("image_size", "[96, 128]", "[H, W] every image is resized to (the models' training input; Nordland's "
              "64x32 upsampled)", "None (native size)"), s["device"],
            Note("epochs: not used (the trained models are 02_train's)"), s["num_clusters"], s["assignment"],
            P("init_images", "300", "k-means images (the synthetic training database; transductive: the reference)",
              "500"),
            P("init_descriptors", "20000", "", "50000"),
            P("fmax_grid", "None", "None: the best grid (R@5) of 04's record"),
            P("raw_pixel_size", "[24, 32]", "[H, W] grayscale thumbnails of the raw-pixel baseline"),
            P("real_alpha_set", '"gardens_point_night"', "the set of the alpha sweep"),
            P("alphas", "[0.01, 0.1, 1, 10, 100, 1000, 10000]", "swept alphas (plus the rule's), as 03's"),
            P("sim_to_real_seeds", "[0, 1, 2]", "02's training seeds to evaluate (those with matching checkpoints)"),
            P("n_retrieval_queries", "6", "queries in each retrieval figure"), s["seed"],
            s["results_dir"], s["figures_dir"],
            P("cache_dir", '"../cache/features"', "cached conv maps of the untrained bases"),
            P("train_cache_dir", '"../cache/train"', "02's checkpoints (run_name/best.pt)")]),
    }


NOTEBOOK_PARAMETERS = _declarations()


def declared_names(notebook: str) -> list[str]:
    return [p.name for p in NOTEBOOK_PARAMETERS[notebook][1] if isinstance(p, Param)]


def check_alpha_param(alpha) -> float:
    """The notebook's ``alpha`` as a float; a clear ConfigError unless > 0 (the layer's own check)."""
    return check_alpha(alpha)


def check_params(notebook: str, params: dict, check_paths: bool = True, base=None) -> dict:
    """Check a notebook's parameters (its first code cell calls this with
    ``globals()``); ConfigError naming the parameter, its value and type,
    what was expected and how to pass it with papermill.

    Only the notebook's declared names that ``params`` holds are checked
    (the rest of ``globals()`` is ignored; a notebook without declarations:
    every name of :data:`CHECKS`). With ``check_paths`` also: the data root
    exists (DatasetError with the expected layout), a weights file exists
    (WeightsError), the device is available and the output folders are
    writable; relative paths are taken from ``base`` (default: the current
    folder, the notebook's under papermill). Returns the checked parameters
    (as given).
    """
    stem = Path(notebook).name.split(".")[0]
    declared = ({p.name: p.check for p in NOTEBOOK_PARAMETERS[stem][1] if isinstance(p, Param)}
                if stem in NOTEBOOK_PARAMETERS else CHECKS)
    checked = {}
    for name, check in declared.items():
        if name not in params:
            continue
        value = params[name]
        expected = check.problem(value)
        if expected:
            raise ConfigError(f"{stem}: parameter {name}={value!r} ({type(value).__name__}) must be {expected}; "
                              f"e.g. papermill ... {check.example}")
        checked[name] = value
    if check_paths:
        _check_paths(stem, checked, Path(base) if base is not None else Path.cwd())
    return checked


def _check_paths(stem: str, checked: dict, base: Path) -> None:
    from repro.atomic import check_writable
    from repro.data.datasets import check_data_root
    from repro.errors import WeightsError
    from repro.evaluate import resolve_device

    at = lambda v: base / Path(v).expanduser()  # noqa: E731 - absolute paths stay as they are
    weights = checked.get("weights")
    if isinstance(weights, str) and weights.startswith("authors:"):
        weights = weights[len("authors:"):]
    if weights is not None and str(weights).lower() not in ("imagenet", "none") and not at(weights).is_file():
        raise WeightsError(f"{stem}: weights file not found: {at(weights)}; pass None (random init), "
                           "'imagenet', or the path of a .pth state dict")
    if "device" in checked:
        resolve_device(checked["device"])
    if checked.get("data_root") is not None:
        check_data_root(checked.get("dataset", "synthetic"), at(checked["data_root"]))
    elif checked.get("dataset", "synthetic") != "synthetic" and "data_root" in checked:
        raise ConfigError(f"{stem}: data_root is required for dataset={checked['dataset']!r}: the folder "
                          "holding its .mat files (and images); e.g. papermill ... -p data_root /data/pittsburgh")
    for name in WRITABLE_PARAMS:
        if checked.get(name) is not None:
            if name == "train_cache_dir" and not checked.get("train", True):
                continue
            check_writable(at(checked[name]), what=f"{stem}'s {name}")


def parameters_cell(notebook: str) -> str:
    """The source of ``notebook``'s ``parameters`` cell, rendered from its declaration."""
    head, entries = NOTEBOOK_PARAMETERS[notebook]
    lines = [f"# Parameters (papermill -p NAME VALUE). {head}"]
    for e in entries:
        if isinstance(e, Note):
            lines.append(f"# {e.text}")
            continue
        code = f"{e.name} = {e.default}"
        comment = e.comment()
        lines.append(f"{code:<30} # {comment}" if comment else code)
    return "\n".join(lines)


def readme_table() -> str:
    """Markdown: every notebook's parameters, defaults, paper-scale values and a papermill example."""
    rows = ["| notebook | parameter | default | paper-scale | what | e.g. |", "| --- | --- | --- | --- | --- | --- |"]
    for nb, (_, entries) in NOTEBOOK_PARAMETERS.items():
        for e in entries:
            if isinstance(e, Param):
                example = e.check.example
                rows.append(f"| {nb} | `{e.name}` | `{e.default}` | {f'`{e.paper}`' if e.paper else ''} | "
                            f"{e.what.replace('|', '/')} | `{example}` |")
    return "\n".join(rows)


README_START, README_END = "<!-- parameters:start -->", "<!-- parameters:end -->"


def write(repo=None) -> list:
    """Rewrite every notebook's parameters cell and the README table from the declarations."""
    import nbformat

    from repro.paths import repo_root

    root = repo or repo_root()
    changed = []
    for nb_name in NOTEBOOK_PARAMETERS:
        path = root / "notebooks" / f"{nb_name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if cell.source != parameters_cell(nb_name):
            cell.source = parameters_cell(nb_name)
            nbformat.write(nb, path)
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text()
    a, b = text.index(README_START) + len(README_START), text.index(README_END)
    new = text[:a] + "\n" + readme_table() + "\n" + text[b:]
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m repro.report.parameters", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite the notebooks' parameters cells and the README table")
    args = p.parse_args(argv)
    if args.write:
        for path in write():
            print(f"rewrote {path}")
    else:
        print(readme_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
