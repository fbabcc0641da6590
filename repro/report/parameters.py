"""Every notebook's parameters, declared once.

From :data:`NOTEBOOK_PARAMETERS` follow: the notebook's ``parameters`` cell
(:func:`parameters_cell`; ``python -m repro.report.parameters --write``
rewrites the cells and the README table, and a test fails when either
disagrees with the declarations), the check each notebook's first cell and
the pipeline make (:func:`repro.experiments.check_params`, with the check of
:data:`repro.experiments.PARAM_CHECKS` of each declared name) and the README's
table of parameters (:func:`readme_table`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

__all__ = ["Param", "Note", "NOTEBOOK_PARAMETERS", "parameters_cell", "readme_table", "declared_names"]


@dataclass(frozen=True)
class Param:
    """One parameter: ``name = default`` (Python source), what it is, its paper-scale value (source)."""

    name: str
    default: str
    what: str = ""
    paper: str | None = None

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
            P("alpha", "None", "None: the paper's rule"), s["num_clusters"], s["assignment"],
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
    }


NOTEBOOK_PARAMETERS = _declarations()


def declared_names(notebook: str) -> list[str]:
    return [p.name for p in NOTEBOOK_PARAMETERS[notebook][1] if isinstance(p, Param)]


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
    from repro.experiments import PARAM_CHECKS

    rows = ["| notebook | parameter | default | paper-scale | what | e.g. |", "| --- | --- | --- | --- | --- | --- |"]
    for nb, (_, entries) in NOTEBOOK_PARAMETERS.items():
        for e in entries:
            if isinstance(e, Param):
                example = PARAM_CHECKS[e.name][1]
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
