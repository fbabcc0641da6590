"""Write the report's source notebooks (``notebooks/0*.ipynb``), without outputs.

The notebooks are the source of truth once written (edit them in Jupyter if
you like; keep exactly one cell tagged ``parameters`` and clear outputs before
committing). This script only makes the first version reproducible:

    .venv/bin/python tools/make_notebooks.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"

SETUP = """\
from IPython.display import Markdown, display

from repro import experiments as ex, plots, results as res"""


def params(text: str):
    return new_code_cell(text.strip("\n"), metadata={"tags": ["parameters"]})


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    path = NB / f"{name}.ipynb"
    nbformat.write(nb, path)
    print(f"wrote {path}")


DATA_KNOBS = '''\
dataset = "synthetic"          # paper-scale: "pitts30k" (or "pitts250k")
data_root = None               # paper-scale: "/data/pittsburgh" (dbStruct .mat files and images)
synthetic_preset = "default"   # synthetic city only: "tiny" | "default" | "large"
city_seed = 0                  # synthetic city only: its generator seed'''

MODEL_KNOBS = '''\
backbone = "alexnet"           # paper-scale: "vgg16"
weights = None                 # paper-scale: "imagenet" (torchvision checkpoint) or a .pth path. None: random init
image_size = [96, 128]         # paper-scale: None (native 640x480). [H, W] resizes every image
device = "cpu"                 # paper-scale: "cuda"'''


def nb01():
    write("01_data_prep", [
        md("""
# 01 · The data: build or validate the dataset

By default this builds the project's **synthetic city** (a geo-tagged street
scene rendered offline, in the Pittsburgh `dbStruct` format, with train, val
and test parts of the city far apart). With `dataset="pitts30k"` and
`data_root` it validates the real Pittsburgh data instead. With only the
`.mat` files (no images) it still shows the statistics and the maps.

Results here are **synthetic** unless `dataset` names a real benchmark.
"""),
        params(f'''
# Parameters (papermill -p NAME VALUE). Defaults: the embedded synthetic city on the CPU.
{DATA_KNOBS}
n_samples = 6                  # query / nearest-database image pairs to show
seed = 0
results_dir = "../results"     # tidy result files
figures_dir = "../figures"     # PNG + PDF
# Used by the other notebooks: backbone, weights, image_size, epochs, device.
'''),
        code(SETUP),
        md("## Build (or reuse) and check the dataset"),
        code('''
data = ex.data_overview(dataset, data_root, synthetic_preset, city_seed, results_dir, seed)
synthetic = ex.is_synthetic(dataset)
print(f"{data['name']} at {ex.rel(data['root'])}")
print("images available" if data["images"] else "images NOT available: statistics and maps from the .mat files only")
print(f"counts written to {ex.rel(data['path'])}")
'''),
        md("""
## Counts

Database images and queries per split, and the positives of each query:
database images within the evaluation radius (25 m), as the paper counts a
query correctly localised.
"""),
        code('data["counts"]'),
        code('''
if data["conditions"] is not None:
    display(Markdown("Queries per capture condition (the database is all daytime):"))
    display(data["conditions"])
'''),
        md("## Where the database and query images are"),
        code('''
fig = plots.plot_split_maps(data["splits"], title=f"{data['name']}: database and query positions", synthetic=synthetic)
plots.save_figure(fig, figures_dir, f"data_{data['name']}_maps");
'''),
        md("## Positives per query"),
        code('''
fig = plots.plot_positives_histogram(data["splits"], title=f"{data['name']}: positives per query", synthetic=synthetic)
plots.save_figure(fig, figures_dir, f"data_{data['name']}_positives");
'''),
        md("""
## Sample images

Test queries (top) and the database image nearest to each by position
(bottom). On the synthetic city, one query per capture condition.
"""),
        code('''
if data["images"]:
    test = data["splits"].get("test") or next(iter(data["splits"].values()))
    groups = ex.query_groups(dataset, data["root"], test.name.rsplit("_", 1)[-1])
    fig = plots.plot_sample_images(test, n_samples, groups=groups, seed=seed, synthetic=synthetic,
                                   title=f"{data['name']} test: queries and the nearest database image")
    plots.save_figure(fig, figures_dir, f"data_{data['name']}_samples")
else:
    print("No images under data_root: sample images are skipped (statistics and maps above come from the .mat files).")
'''),
        md("""
On the synthetic city, the generator's overview figures (one pose rendered
under every query condition, and the map of the whole city with its three
splits) are regenerated too; they are large, so they are written to
`figures/` rather than shown here.
"""),
        code('''
if synthetic and data["images"]:
    from repro.data.synthetic import plot_city_overview

    for p in plot_city_overview(data["root"], figures_dir):
        print(ex.rel(p))
'''),
    ])


def nb02():
    write("02_train", [
        md("""
# 02 · Training: NetVLAD and f_max, off-the-shelf against trained

Trains the two main configurations of the paper with its weakly supervised
triplet ranking loss (Eq. 7) and hard-negative mining (`repro.train`), and
compares each trained model with the model it started from ("off-the-shelf":
the same network right after initialisation, NetVLAD initialised by k-means
and the alpha rule).

The default is sized for a CPU: `repro.train.TrainConfig.synthetic_default`
(randomly initialised AlexNet, K = 16, 96x128 images, a few short epochs),
sized so that both models fit the `make repro` budget on 2 CPU cores; the
measured time of each run is printed below. There are no ImageNet weights offline, so the
base network starts **random**, unlike the paper's: the point here is whether
the training procedure does what the paper says, on a **synthetic** city. The
paper-scale run (VGG-16, ImageNet weights, Pittsburgh, 30 epochs, a GPU) is
the `paper` profile.

Each model's training record goes to `results/train/` (config, seed, git
commit, per-epoch loss and validation recall, test recall@N before and after
training); the checkpoints to `cache/train/`.
"""),
        params(f'''
# Parameters (papermill -p NAME VALUE). Defaults: synthetic city, CPU, ~10 minutes.
{DATA_KNOBS}
{MODEL_KNOBS}
epochs = 10                    # paper-scale: 30
poolings = ["netvlad", "fmax"] # one training run each
num_clusters = 16              # NetVLAD K; paper-scale: 64
whiten_dim = None              # paper-scale: 4096 (PCA whitening fitted after training)
train_options = {{}}             # any other repro.train.TrainConfig field, e.g. {{"queries_per_epoch": 200}}
reuse_existing = True          # reuse a complete training record with the same settings
seed = 0
results_dir = "../results"
figures_dir = "../figures"
cache_dir = "../cache/train"   # checkpoints
'''),
        code(SETUP),
        md("## Train (or reuse the records of identical runs)"),
        code('''
records = ex.run_training(poolings, reuse_existing, results_dir, cache_dir, options=train_options,
                          dataset=dataset, data_root=data_root, synthetic_preset=synthetic_preset,
                          city_seed=city_seed, backbone=backbone, weights=weights, image_size=image_size,
                          epochs=epochs, device=device, seed=seed, num_clusters=num_clusters, whiten_dim=whiten_dim)
for r in records:
    print(f"{r['run_name']}: best epoch {r['best_epoch']} of {len(r['epochs']) - 1}, "
          f"{r['wall_seconds'] / 60:.1f} min, record {ex.rel(r['path'])}")
'''),
        md("## Recall@N on the test split, before and after training"),
        code('''
table = ex.training_table(records)
name = table["dataset"].iloc[0]
table.pivot_table(index=["pooling", "variant", "dim"], columns="n", values="recall_pct").round(1)
'''),
        code('print(ex.describe_training(table))'),
        code('''
fig, paths = plots.figure_training(results_dir, figures_dir, name, records)
'''),
        md("""
Reading the figure: solid lines are trained models, dashed their
off-the-shelf starting points; NetVLAD red, f_max blue. The right panel is
the validation recall@5 after each epoch (epoch 0: before training), by which
the best epoch is chosen, as in the authors' code.

Caveats: one seed, a few hundred test queries (each query is worth 100/Q
points of recall), a random-init base. The claims table in
`05_paper_comparison` sets these numbers beside the paper's.
"""),
    ])


def nb03():
    write("03_alpha_sweep", [
        md("""
# 03 · The alpha sweep: NetVLAD at one alpha

NetVLAD's soft-assignment (paper Eq. 2-3) has a sharpness `alpha`. The paper
sets it with a rule, from data: after k-means, alpha is chosen so that at the
mean distance gap the nearest centroid's weight is 100 times the second's.
This notebook evaluates NetVLAD at **one** `alpha` (a parameter) and writes
one result file for it; the pipeline runs it for a log-spaced list of alphas
plus the rule's, and the figure at the end plots every alpha run so far.

    cd notebooks && papermill 03_alpha_sweep.ipynb out.ipynb -p alpha 50

The model is off-the-shelf (the same untrained base, centroids and
initialisation as the training notebook's starting point); `train=True` also
trains NetVLAD with alpha held at this value. The base network's conv maps
are computed once and cached under `cache/features/`, so a run only re-pools
them.
"""),
        params(f'''
# Parameters (papermill -p NAME VALUE). Defaults: synthetic city, CPU, seconds per alpha once cached.
alpha = 10.0                   # NetVLAD alpha (> 0); the pipeline sweeps 1e-2 .. 1e4 and the paper's rule
train = False                  # True: also train NetVLAD with alpha fixed at this value (~5 min on a CPU)
{DATA_KNOBS}
{MODEL_KNOBS}
epochs = 10                    # only used to train (train True). paper-scale: 30
num_clusters = 16              # NetVLAD K; paper-scale: 64
init_images = 300              # k-means on descriptors of this many training database images; paper: 500
init_descriptors = 20000       # paper: 50000
split = "test"                 # the split evaluated
train_options = {{}}             # to train: other repro.train.TrainConfig fields
seed = 0
results_dir = "../results"
figures_dir = "../figures"
cache_dir = "../cache/features"      # cached conv maps of the untrained base
feature_dtype = "float32"            # paper-scale: "float16" (halves the cache: ~20 GB for Pitts30k-test, VGG-16)
train_cache_dir = "../cache/train"   # checkpoints, when training
'''),
        code(SETUP + '''

alpha = ex.check_alpha_param(alpha)  # a non-positive alpha stops here with a clear error'''),
        md("## Evaluate NetVLAD at this alpha"),
        code('''
point = ex.run_alpha_point(alpha, train, results_dir, train_options, epochs, train_cache_dir,
                           dataset=dataset, data_root=data_root, synthetic_preset=synthetic_preset,
                           city_seed=city_seed, backbone=backbone, weights=weights, seed=seed,
                           num_clusters=num_clusters, image_size=image_size, split=split, init_images=init_images,
                           init_descriptors=init_descriptors, device=device, cache_dir=cache_dir,
                           feature_dtype=feature_dtype)
rec = point["off_the_shelf"]
name, synthetic = rec["dataset"], rec["synthetic"]
print(f"{name} ({'synthetic' if synthetic else 'real'}), {split} split: alpha = {alpha:.4g}; "
      f"the paper's rule gives alpha = {rec['alpha_rule']:.4g}" + (" (this run)" if rec["is_rule_alpha"] else ""))
for p in (point["off_the_shelf"], point["trained"]):
    if p is not None:
        print(("trained     " if p["trained"] else "off-the-shelf ") +
              "  ".join(f"R@{r['n']} {r['recall_pct']:.1f}" for r in p["rows"] if r["n"] in (1, 5, 10, 20))
              + f"   -> {ex.rel(p['path'])}")
'''),
        code('''
if rec["condition_rows"]:
    display(Markdown("Recall@N by query condition (off-the-shelf):"))
    import pandas as pd
    display(pd.DataFrame(rec["condition_rows"]).pivot_table(index="condition", columns="n", values="recall_pct")[[1, 5, 10]].round(1))
'''),
        md("## The sweep so far"),
        code('''
fig, paths, sweep = plots.figure_alpha_sweep(results_dir, figures_dir, name, backbone, num_clusters)
sweep.pivot_table(index=["trained", "alpha"], columns="n", values="recall_pct")[[1, 5, 10]].round(1)
'''),
        code('print(ex.describe_alpha_sweep(sweep))'),
        md("""
## Against the earlier CS4240 reproduction

The CS4240 reproduction (`../shared/reference/README.md`) did not implement
the paper's rule: it swept alpha instead and used alpha = 0.1, and for
off-the-shelf (probably AlexNet) features saw recall@1 flat above about
alpha = 0.1, low below. The alpha scale depends on the parameterisation of
the assignment and on whether local descriptors are L2-normalised first (we
use the paper's w_k = 2 alpha c_k, b_k = -alpha ||c_k||^2 on L2-normalised
descriptors, whose squared distances lie in [0, 4]), so alpha values do not
transfer between implementations: what does is the shape, a low plateau for a
too-soft assignment and a flat region once the assignment is sharp enough. The lines above say where that region starts here, where the
best swept alpha lies, and how far the rule's alpha is from it (the claims
table of `05_paper_comparison` turns this into a verdict, with a tolerance of
one binomial standard error).
"""),
    ])


def nb04():
    write("04_fmax_output_size", [
        md("""
# 04 · f_max output size, and NetVLAD at equal dimension

The paper's f_max max-pools each channel over the whole conv map (a 1x1
grid). Here f_max also pools to 2x2, 3x3, ... grids (adaptive max pooling),
which keeps some layout and multiplies the dimension, and NetVLAD is reduced
by PCA to the same sizes, whitened (the paper's `+white`) and not whitened,
with PCA fitted on training database images. Everything runs on the same
untrained base, so the curves differ only by the pooling. NetVLAD uses the
rule's alpha unless `alpha` is given.
"""),
        params(f'''
# Parameters (papermill -p NAME VALUE). Defaults: synthetic city, CPU, evaluation only (no training).
{DATA_KNOBS}
{MODEL_KNOBS}
# epochs: not used (off-the-shelf only); paper-scale training is in 02_train.
grids = [1, 2, 3, 4, 5]        # f_max output grids g x g (each at most the conv map's size)
whiten_dims = [1024, 512, 256, 128, 64]   # NetVLAD PCA reductions; paper-scale: [4096, 2048, 1024, 512, 256, 128]
whiten_fit_images = 10000      # training database images PCA is fitted on (authors: 10000)
alpha = None                   # None: the paper's rule
num_clusters = 16              # NetVLAD K; paper-scale: 64
init_images = 300              # paper: 500
init_descriptors = 20000       # paper: 50000
split = "test"
seed = 0
results_dir = "../results"
figures_dir = "../figures"
cache_dir = "../cache/features"  # cached conv maps of the untrained base
feature_dtype = "float32"        # paper-scale: "float16" (halves the cache)
'''),
        code(SETUP),
        code('''
rec = ex.run_fmax_output_size(grids, whiten_dims, alpha, whiten_fit_images, results_dir,
                              dataset=dataset, data_root=data_root, synthetic_preset=synthetic_preset,
                              city_seed=city_seed, backbone=backbone, weights=weights, seed=seed,
                              num_clusters=num_clusters, image_size=image_size, split=split,
                              init_images=init_images, init_descriptors=init_descriptors, device=device,
                              cache_dir=cache_dir, feature_dtype=feature_dtype)
print(f"{rec['dataset']} ({'synthetic' if rec['synthetic'] else 'real'}), conv map {rec['config']['conv_map']}, "
      f"NetVLAD alpha {rec['alpha']:.4g}; PCA fitted on {rec['config']['whiten_fit_images']} training images -> {ex.rel(rec['path'])}")
'''),
        md("## Recall@N by pooling and dimension"),
        code('''
import pandas as pd
rows = pd.DataFrame(rec["rows"])
rows.pivot_table(index=["variant", "dim"], columns="n", values="recall_pct")[[1, 5, 10]].round(1)
'''),
        code('''
fig, paths = plots.figure_recall_vs_dim(figures_dir, rec)
print(ex.describe_dimension(rows, 1))
print(ex.describe_dimension(rows, 5))
'''),
        md("""
The paper reports that NetVLAD reduced by PCA with whitening keeps its
advantage over f_max at equal dimension, and that whitening is what makes
small NetVLAD descriptors work. The lines above give both comparisons for
this run; `05_paper_comparison` turns them into a row of the claims table.
"""),
    ])


def nb05():
    write("05_paper_comparison", [
        md("""
# 05 · Our results beside the paper's

Gathers every result file under `results/` into `results/summary.csv`, sets
our recall@N curves beside the paper's Figure 5 (digitised; the project's
copy is `results/paper/netvlad_fig5.csv`, each row citing "NetVLAD paper,
Figure 5 (b, c), values digitised from the figure") and beside the earlier
CS4240 reproduction's Pitts30k-val numbers, and checks each of the paper's
claims against our runs.

No model runs here: `make figures` re-runs this notebook alone, in seconds.
Synthetic-city results get their own panels and rows, labelled synthetic;
they are never drawn in a panel with Pittsburgh curves.
"""),
        params('''
# Parameters (papermill -p NAME VALUE). Nothing is trained or evaluated here.
results_dir = "../results"
figures_dir = "../figures"
reference_dir = None           # None: ../shared/reference when present (refreshes results/paper/), else the committed copy
# The experiments' knobs (dataset, data_root, backbone, weights, image_size, epochs, device) are set in 01-04.
'''),
        code(SETUP),
        md("## The paper's numbers (project copy) and the summary of our runs"),
        code('''
paper, cs4240 = res.load_paper_reference(results_dir, reference_dir)
summary_path, summary = res.write_summary(results_dir)
print(f"{len(paper)} values from the paper's Figure 5, "
      f"{0 if cs4240 is None else len(cs4240)} from the CS4240 reproduction; "
      f"{len(summary)} rows of ours -> {ex.rel(summary_path)}")
summary.groupby(["dataset", "split", "synthetic", "experiment"]).size().rename("rows").to_frame()
'''),
        md("""
## Recall@N in the paper's layout

Panels (b) and (c) are the paper's Figure 5 panels (Pittsburgh 30k and 250k
test; our curves join them only from a run on that dataset). Then the CS4240
reproduction on Pitts30k-val, and our synthetic-city runs in their own
(shaded) panel. Line styles as in our other figures: NetVLAD red, f_max
blue, solid trained, dashed off-the-shelf, thick whitened.
"""),
        code('''
fig = plots.plot_paper_comparison(summary, paper, cs4240)
plots.save_figure(fig, figures_dir, "paper_comparison_fig5");
'''),
        md("## The CS4240 reproduction against the paper (recall@1/5/10)"),
        code('''
import pandas as pd
p = paper[(paper["dataset"] == "pitts30k") & paper["n"].isin([1, 5, 10])]
p = p.pivot_table(index="legend", columns="n", values="recall_pct", sort=False)
p.columns = [f"paper Pitts30k-test R@{n}" for n in p.columns]
display(p)
if cs4240 is not None:
    c = cs4240[cs4240["n"].isin([1, 5, 10])].pivot_table(index=["backbone", "pooling", "trained"], columns="n", values="recall_pct")
    c.columns = [f"CS4240 Pitts30k-val R@{n}" for n in c.columns]
    display(c)
'''),
        md("""
## The paper's claims, checked

One row per claim and dataset: `supported` is `yes` when our run shows the
claimed ordering at recall@1, 5 and 10 (for whitening: at every common
dimension; for alpha: the rule's alpha within one binomial standard error of
the best swept alpha), `no` when it shows the opposite everywhere, `mixed`
otherwise, `not tested` when no run of ours compares the two. The `paper`
column gives the evidence from Figure 5. Also written to `results/claims.csv`.
"""),
        code('''
claims_path, claims = res.write_claims(results_dir, summary, paper)
with pd.option_context("display.max_colwidth", None):
    display(claims[["claim", "dataset", "supported", "ours", "note", "paper"]])
'''),
        md("## Every per-experiment figure, redrawn from the result files"),
        code('''
written = plots.redraw_all(results_dir, figures_dir)
print("\\n".join(sorted({ex.rel(p.with_suffix("")) for p in written})))
'''),
    ])


if __name__ == "__main__":
    nb01()
    nb02()
    nb03()
    nb04()
    nb05()
