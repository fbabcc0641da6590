"""The report's figure files: each reads the result records it draws and saves PNG + PDF under ``figures/``.

The drawing is in :mod:`repro.report.plots`; :func:`redraw_all` redraws
every figure from ``results/`` (05 and ``make figures``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from repro.report.plots import (
    plot_alpha_sweep,
    plot_authors_models,
    plot_recall_vs_dim,
    plot_training_results,
    save_figure,
)


def _records(results_dir, experiment):
    from repro.report.names import load_records

    return load_records(results_dir, experiment)


def train_records(results_dir, dataset_name: str | None = None) -> list[dict]:
    """Complete trainer records under ``results_dir/train``, of one dataset if given."""
    from repro.report.names import train_dataset_label

    out = []
    for rec in _records(results_dir, "train"):
        if rec.get("status") != "complete":
            continue
        if dataset_name and train_dataset_label(rec) != dataset_name:
            continue
        out.append(rec)
    return out


def figure_training(results_dir, figures_dir, dataset_name: str, records=None):
    """Recall@N off-the-shelf vs trained and the validation history, from the
    training records of one dataset; saved as ``train_{dataset}``."""
    from repro.report.training import training_history, training_table

    if records is None:  # the runs 02_train made (other training runs are in the summary)
        from repro.report.names import train_run_name

        records = train_records(results_dir, dataset_name)
        own = [r for r in records if r["run_name"] == train_run_name(
            dataset_name, r["config"]["backbone"], r["config"]["pooling"], r["config"]["seed"])]
        records = own or records
    if not records:
        return None, []
    table = training_table(records)
    if table.empty:
        return None, []
    tested = table["dataset"].iloc[0]  # the runs' own test split, else their first test_on set (TokyoTM: Tokyo 24/7)
    table = table[table["dataset"] == tested]
    synthetic = bool(table["synthetic"].iloc[0])
    where = "test split" if tested == dataset_name else f"trained on {dataset_name}, tested on {tested}"
    fig = plot_training_results(table, training_history(records), synthetic=synthetic,
                                title=f"{dataset_name}: {where}")
    return fig, save_figure(fig, figures_dir, f"train_{dataset_name}")


def figure_alpha_sweep(results_dir, figures_dir, dataset_name: str, backbone: str, num_clusters: int):
    """Recall@1/5/10 against alpha from every sweep result of one
    configuration; saved as ``alpha_sweep_{dataset}_{backbone}_K{K}``."""
    from repro.report.alpha_sweep import alpha_sweep_table

    sweep = alpha_sweep_table(results_dir, dataset_name, backbone, num_clusters)
    if sweep.empty:
        return None, [], sweep
    rule = float(sweep["alpha_rule"].iloc[0])
    fig = plot_alpha_sweep(sweep, rule, synthetic=bool(sweep["synthetic"].iloc[0]),
                           title=f"{dataset_name}: {backbone} + NetVLAD (K={num_clusters}), test split")
    return fig, save_figure(fig, figures_dir, f"alpha_sweep_{dataset_name}_{backbone}_K{num_clusters}"), sweep


def figure_recall_vs_dim(figures_dir, record: dict):
    """Recall against dimension from one f_max output-size record; saved as
    ``fmax_output_size_{dataset}_{backbone}_K{K}``."""
    rows = pd.DataFrame(record["rows"])
    cfg = record["config"]
    fig = plot_recall_vs_dim(rows, synthetic=bool(record.get("synthetic")),
                             title=f"{record['dataset']}: {cfg['backbone']}, off-the-shelf, test split")
    name = f"fmax_output_size_{record['dataset']}_{cfg['backbone']}_K{cfg['num_clusters']}"
    return fig, save_figure(fig, figures_dir, name)


def figure_authors_models(figures_dir, table: pd.DataFrame, name: str | None = None):
    """:func:`plot_authors_models` saved as ``figures/{name}`` (default
    ``authors_models_{test sets}``); (None, []) when nothing was evaluated."""
    if table.empty:
        return None, []
    name = name or "authors_models_" + "_".join(dict.fromkeys(table["dataset"]))
    fig = plot_authors_models(table)
    return fig, save_figure(fig, figures_dir, name)


def redraw_all(results_dir, figures_dir) -> list[Path]:
    """Every per-experiment figure, from the result files alone (no model
    is run): training, alpha sweeps, recall against dimension."""
    from repro.report.names import train_dataset_label

    written = []
    for name in sorted({train_dataset_label(r) for r in train_records(results_dir)}):
        fig, paths = figure_training(results_dir, figures_dir, name)
        written += paths
        if fig is not None:
            plt.close(fig)
    configs = {(r["dataset"], r["config"]["backbone"], r["config"]["num_clusters"])
               for r in _records(results_dir, "alpha_sweep")}
    for ds, bb, k in sorted(configs):
        fig, paths, _ = figure_alpha_sweep(results_dir, figures_dir, ds, bb, k)
        written += paths
        plt.close(fig)
    for rec in _records(results_dir, "fmax_output_size"):
        fig, paths = figure_recall_vs_dim(figures_dir, rec)
        written += paths
        plt.close(fig)
    return written
