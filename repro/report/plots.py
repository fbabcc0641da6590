"""The report's figures (matplotlib), shared by the notebooks.

Every function returns the figure; :func:`save_figure` writes it as PNG and
PDF under ``figures/``. Synthetic results are drawn in their own panels, titled
"synthetic", never in a panel with real-data curves.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
POOLING_COLOURS = {"netvlad": "tab:red", "fmax": "tab:blue", "vlad": "tab:gray", "none (flattened conv5)": "tab:purple"}
N_TICKS = (1, 5, 10, 15, 20, 25)


def save_figure(fig, figures_dir, name: str) -> list[Path]:
    """``figures_dir/name.png`` (150 dpi) and ``.pdf``; returns both paths.
    No creation date or software version in the files, so an unchanged
    figure keeps its bytes."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        p = folder / f"{name}.{ext}"
        fig.savefig(p, dpi=150, bbox_inches="tight", metadata=meta)
        out.append(p)
    return out


def _synthetic_title(title: str, synthetic: bool) -> str:
    return f"{title}\n(SYNTHETIC city: not Pittsburgh)" if synthetic else title


# ---------------------------------------------------------------------------
# data (01)


def plot_split_maps(splits: dict, title: str = "", synthetic: bool = False):
    """Database and query positions of each split (UTM metres), one panel each."""
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 4.2), squeeze=False)
    for ax, (name, s) in zip(axes[0], splits.items()):
        if s.utm_db is None:
            ax.text(0.5, 0.5, "no positions", ha="center", transform=ax.transAxes)
            continue
        ax.scatter(s.utm_db[:, 0], s.utm_db[:, 1], s=2, c="0.55", linewidths=0, label=f"database ({s.num_db})")
        ax.scatter(s.utm_q[:, 0], s.utm_q[:, 1], s=5, c=SPLIT_COLOURS.get(name, "tab:red"), marker="x",
                   linewidths=0.5, label=f"queries ({s.num_q})")
        ax.set_aspect("equal", adjustable="datalim")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
        ax.set_title(name)
        ax.set_xlabel("easting (m)")
        ax.legend(fontsize=7, loc="upper right", markerscale=3)
    axes[0, 0].set_ylabel("northing (m)")
    fig.suptitle(_synthetic_title(title or "Database and query positions", synthetic))
    fig.tight_layout()
    return fig


def plot_positives_histogram(splits: dict, title: str = "", synthetic: bool = False):
    """Histogram of the number of database images within 25 m of each query."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    counts = {name: np.array([len(p) for p in s.positives]) for name, s in splits.items()}
    hi = max(int(c.max()) for c in counts.values())
    bins = np.arange(0, hi + 2) - 0.5 if hi <= 80 else 40
    for name, c in counts.items():
        ax.hist(c, bins=bins, histtype="step", lw=1.5, color=SPLIT_COLOURS.get(name), label=f"{name} (median {np.median(c):g})")
    ax.set_xlabel(f"positives per query (database images within {next(iter(splits.values())).pos_dist_thr:g} m)")
    ax.set_ylabel("queries")
    ax.legend(fontsize=8)
    ax.set_title(_synthetic_title(title or "Positives per query", synthetic))
    fig.tight_layout()
    return fig


def plot_sample_images(split, n: int = 6, groups=None, seed: int = 0, title: str = "", synthetic: bool = False):
    """Query images (top) above their nearest database image by position
    (bottom). With ``groups`` (conditions), one query per group."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if groups is not None:
        picks = [int(rng.choice(np.nonzero(groups == g)[0])) for g in pd.unique(groups)][:n]
    else:
        picks = sorted(rng.choice(split.num_q, size=min(n, split.num_q), replace=False).tolist())
    fig, axes = plt.subplots(2, len(picks), figsize=(2.3 * len(picks), 4.9), squeeze=False)
    for j, qi in enumerate(picks):
        d = np.linalg.norm(split.utm_db - split.utm_q[qi], axis=1) if split.utm_db is not None else None
        di = int(np.argmin(d)) if d is not None else 0
        axes[0, j].imshow(Image.open(split.q_paths[qi]).convert("RGB"))
        axes[0, j].set_title(f"query {qi}" + (f"\n{groups[qi]}" if groups is not None else ""), fontsize=8)
        axes[1, j].imshow(Image.open(split.db_paths[di]).convert("RGB"))
        axes[1, j].set_title(f"db {di}" + (f", {d[di]:.1f} m" if d is not None else ""), fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(_synthetic_title(title or f"{split.name}: queries and the nearest database image", synthetic), fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# recall curves


def _style(pooling: str, trained, whitened=False) -> dict:
    colour = POOLING_COLOURS.get(pooling, "tab:green")
    filled = trained in (True, "yes")
    return dict(color=colour, ls="-" if filled else "--", marker="o" if filled else "s",
                mfc=colour if filled else "white", lw=2.4 if whitened else 1.4, ms=4)


def recall_curve(ax, rows: pd.DataFrame, label: str, **style):
    r = rows.sort_values("n")
    ax.plot(r["n"], r["recall_pct"], label=label, **style)


def _finish_recall_axes(ax, title: str, ymin=None):
    ax.set_xlabel("N (number of top database candidates)")
    ax.set_ylabel("Recall@N (%)")
    ax.set_xticks(N_TICKS)
    ax.set_xlim(0.5, 25.5)
    if ymin is not None:
        ax.set_ylim(ymin, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")


def plot_training_results(table: pd.DataFrame, history: pd.DataFrame | None = None, synthetic: bool = False,
                          title: str = ""):
    """Left: recall@N on the test split, off-the-shelf (dashed) vs trained
    (solid), NetVLAD (red) and f_max (blue). Right: val recall@5 by epoch."""
    ncols = 2 if history is not None and not history.empty else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.6), squeeze=False)
    ax = axes[0, 0]
    several = table.groupby("pooling")["run"].nunique().max() > 1 if "run" in table else False
    for (run, pooling, variant, dim), r in table.groupby(["run", "pooling", "variant", "dim"], sort=False):
        trained = variant != "off-the-shelf"
        label = f"{'NetVLAD' if pooling == 'netvlad' else 'f_max'}, {variant} ({int(dim)}-D)" + \
            (f" [{run}]" if several else "")
        recall_curve(ax, r, label, **_style(pooling, trained, "whiten" in variant))
    _finish_recall_axes(ax, _synthetic_title(title or "Test split", synthetic))
    if ncols == 2:
        ax = axes[0, 1]
        h = history[history["n"] == 5]
        for (run, pooling), g in h.groupby(["run", "pooling"]):
            ax.plot(g["epoch"], g["val_recall_pct"], marker="o", color=POOLING_COLOURS.get(pooling),
                    label=("NetVLAD" if pooling == "netvlad" else "f_max") + (f" [{run}]" if several else ""))
        ax.set_xlabel("epoch (0 = initialised, untrained)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("val Recall@5 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Validation during training", fontsize=10)
    fig.tight_layout()
    return fig


def plot_alpha_sweep(table: pd.DataFrame, alpha_rule: float | None = None, ns=(1, 5, 10), synthetic: bool = False,
                     title: str = ""):
    """Recall@1/5/10 against alpha (log scale), off-the-shelf solid and
    trained dashed; the rule's alpha marked by a vertical line."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    colours = dict(zip(ns, ("tab:red", "tab:orange", "tab:green", "tab:blue")))
    for trained, g in table.groupby("trained"):
        for n in ns:
            r = g[g["n"] == n].sort_values("alpha")
            if r.empty:
                continue
            ax.plot(r["alpha"], r["recall_pct"], marker="o" if not trained else "^", ls="--" if trained else "-",
                    color=colours[n], label=f"R@{n}, {'trained' if trained else 'off-the-shelf'}")
    if alpha_rule is not None:
        ax.axvline(alpha_rule, color="k", ls=":", lw=1.2)
        ax.annotate(f"paper's rule\nalpha = {alpha_rule:.3g}", (alpha_rule, 0.02), xycoords=("data", "axes fraction"),
                    xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("alpha (NetVLAD soft-assignment sharpness)")
    ax.set_ylabel("Recall@N (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(_synthetic_title(title or "NetVLAD recall against alpha", synthetic), fontsize=10)
    fig.tight_layout()
    return fig


VARIANT_STYLE = {
    "NetVLAD": dict(color="tab:red", marker="*", ms=12, ls="none"),
    "NetVLAD + PCA-whitening": dict(color="tab:red", marker="o", ls="-"),
    "NetVLAD + PCA": dict(color="tab:pink", marker="o", ls="--", mfc="white"),
    "f_max": dict(color="tab:blue", marker="s", ls="-"),
}


def plot_recall_vs_dim(rows: pd.DataFrame, ns=(1, 5), synthetic: bool = False, title: str = ""):
    """Recall@N against descriptor dimension (log scale): f_max at each grid
    (labelled), NetVLAD and its PCA(-whitened) reductions."""
    fig, axes = plt.subplots(1, len(ns), figsize=(6.2 * len(ns), 4.4), squeeze=False)
    for ax, n in zip(axes[0], ns):
        r = rows[rows["n"] == n]
        fm = r[r["pooling"] == "fmax"].sort_values("dim")
        ax.plot(fm["dim"], fm["recall_pct"], label="f_max, grid h x w", **VARIANT_STYLE["f_max"])
        for _, row in fm.iterrows():
            ax.annotate(row["variant"].replace("f_max ", ""), (row["dim"], row["recall_pct"]), fontsize=7,
                        xytext=(3, -10), textcoords="offset points", color="tab:blue")
        for v in ("NetVLAD + PCA-whitening", "NetVLAD + PCA", "NetVLAD"):
            g = r[r["variant"] == v].sort_values("dim")
            if not g.empty:
                ax.plot(g["dim"], g["recall_pct"], label=v + (" (full)" if v == "NetVLAD" else ""), **VARIANT_STYLE[v])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("descriptor dimension")
        ax.set_ylabel(f"Recall@{n} (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_title(f"Recall@{n}", fontsize=10)
    fig.suptitle(_synthetic_title(title or "Recall against dimension (off-the-shelf)", synthetic), fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# the paper's layout (05)


def _paper_panel(ax, paper: pd.DataFrame, dataset: str, title: str, ours: pd.DataFrame | None = None):
    p = paper[paper["dataset"] == dataset]
    for legend, r in p.groupby("legend", sort=False):
        first = r.iloc[0]
        style = _style(first["pooling"], first["trained"], bool(first["whitened"]))
        if first["backbone"] in ("places205", "rootsift"):
            style.update(color="tab:green" if first["backbone"] == "places205" else "tab:gray")
        if first["backbone"] == "alexnet":
            style.update(alpha=0.55)
        recall_curve(ax, r, f"paper: {legend}", **style)
    if ours is not None and not ours.empty:
        for (label, pooling, trained, whitened), r in ours.groupby(["label", "pooling", "trained", "whitened"], sort=False):
            st = _style(pooling, trained, whitened)
            st.update(color="k" if pooling == "netvlad" else "0.4", marker="D")
            recall_curve(ax, r, f"ours: {label}", **st)
    _finish_recall_axes(ax, title)


def ours_curves(summary: pd.DataFrame, dataset: str, split: str) -> pd.DataFrame:
    """Our training runs on one dataset/split as labelled curves, one run
    per backbone and pooling."""
    from repro.report.summary import pick_run

    t = summary[(summary["experiment"] == "train") & (summary["dataset"] == dataset) & (summary["split"] == split)].copy()
    if t.empty:
        return t
    # one run per model (replicates and variants of the training recipe are in
    # results/summary.csv): the pipeline's own run where there is one
    t = pd.concat([pick_run(g) for _, g in t.groupby(["backbone", "pooling"], sort=False)])
    name = {"netvlad": "f_VLAD", "fmax": "f_max"}
    t["label"] = t.apply(lambda r: f"{name.get(r['pooling'], r['pooling'])} {r['backbone']} "
                                   f"{r['variant']} ({int(r['dim'])}-D)", axis=1)
    return t


def plot_paper_comparison(summary: pd.DataFrame, paper: pd.DataFrame, cs4240: pd.DataFrame | None = None):
    """Figure 5's layout: (b) Pitts30k-test and (c) Pitts250k-test with the
    paper's curves (and ours where we ran on that dataset), the CS4240
    reproduction on Pitts30k-val, and one panel per synthetic dataset of ours."""
    real_ours = {(d, s) for d, s in summary[~summary["synthetic"].astype(bool)][["dataset", "split"]].drop_duplicates().itertuples(index=False)} \
        if not summary.empty else set()
    syn = summary[summary["synthetic"].astype(bool) & (summary["experiment"] == "train")] if not summary.empty else summary
    syn_sets = list(syn[["dataset", "split"]].drop_duplicates().itertuples(index=False)) if not syn.empty else []
    panels = [("pitts30k", "(b) Pitts30k-test: paper" + (" and ours" if ("pitts30k", "test") in real_ours else "")),
              ("pitts250k", "(c) Pitts250k-test: paper" + (" and ours" if ("pitts250k", "test") in real_ours else ""))]
    n = len(panels) + (cs4240 is not None) + len(syn_sets)
    ncols = 2 if n > 1 else 1
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(7.2 * ncols, 5.6 * nrows), squeeze=False)
    axes = grid.reshape(1, -1)
    for ax in axes[0, n:]:
        ax.axis("off")
    for ax, (ds, title) in zip(axes[0], panels):
        ours = ours_curves(summary, ds, "test") if (ds, "test") in real_ours else None
        _paper_panel(ax, paper, ds, title, ours)
        ax.set_ylim(50, 100)
    k = len(panels)
    if cs4240 is not None:
        ax = axes[0, k]
        for (bb, pooling, trained), r in cs4240.groupby(["backbone", "pooling", "trained"], sort=False):
            st = _style(pooling, trained)
            if bb == "alexnet":
                st.update(alpha=0.55)
            recall_curve(ax, r, f"CS4240: {bb} {pooling}, {'trained' if trained == 'yes' else 'off-the-shelf'}", **st)
        ours = ours_curves(summary, "pitts30k", "val")
        if not ours.empty:
            for label, r in ours.groupby("label"):
                recall_curve(ax, r, f"ours: {label}", color="k", marker="D")
        _finish_recall_axes(ax, "Pitts30k-val: the CS4240 reproduction")
        ax.set_ylim(20, 100)
        k += 1
    for ax, (ds, split) in zip(axes[0, k:n], syn_sets):
        t = ours_curves(summary, ds, split)
        for (label, pooling, trained, whitened), r in t.groupby(["label", "pooling", "trained", "whitened"], sort=False):
            recall_curve(ax, r, f"ours: {label}", **_style(pooling, trained, whitened))
        _finish_recall_axes(ax, _synthetic_title(f"Ours: {ds} {split}", True))
        ax.set_facecolor("#fff8e6")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# the authors' released networks (06)


def plot_authors_models(table: pd.DataFrame):
    """One panel per test set: the authors' released network evaluated here
    (black diamonds) beside the paper's digitised "f_VLAD ours (V)+white"
    curve (red, with its reading uncertainty as error bars, where the paper
    has that panel). ``table``: :func:`repro.report.authors_models.authors_table` rows."""
    from repro.report.authors_models import PAPER_LEGEND

    sets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], sets):
        r = table[table["dataset"] == dataset].sort_values("n")
        synthetic = bool(r["synthetic"].iloc[0])
        recall_curve(ax, r, f"authors' {r['model'].iloc[0]}, evaluated here", color="k", marker="D")
        if "paper_recall_pct" in r and r["paper_recall_pct"].notna().any():
            p = r[r["paper_recall_pct"].notna()]
            # the digitisation's reading uncertainty (../shared/reference/README.md)
            err = p["read_quality"].map({"clear": 0.2, "overlap": 0.5, "estimate": 1.0}).fillna(1.0)
            ax.errorbar(p["n"], p["paper_recall_pct"], yerr=err, color="tab:red", marker="o", capsize=2,
                        label=f"paper, Fig. 5: {PAPER_LEGEND}")
        _finish_recall_axes(ax, _synthetic_title(f"{dataset} {r['split'].iloc[0]}", synthetic)
                            + ("" if "paper_recall_pct" in r and r["paper_recall_pct"].notna().any()
                               else "\n(no Figure 5 panel for this set)"))
    fig.tight_layout()
    return fig


