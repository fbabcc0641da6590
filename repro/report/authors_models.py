"""Report step 06: the authors' released networks through this project's evaluation.

The released VGG-16 models (converted to plain structs, ``repro.model.authors``)
are evaluated where the files and the data are present:

    Pitts30K_struct.mat  -> Pitts30k-test and Pitts250k-test
    TokyoTM_struct.mat   -> Tokyo 24/7 (recall counted once per panorama)

and drawn beside the paper's "f_VLAD ours (V)+white" curve of Figure 5
(digitised, ``results/paper/netvlad_fig5.csv``; the figure has no Tokyo
24/7 panel, so Tokyo is reported without a paper curve). Where a model file
or a dataset is absent, that pair is skipped with one line saying which file
is missing; nothing else in the report depends on this step.

Note the released Pitts30k model is evaluated on Pitts250k-test too: the
paper's Pitts250k-test curves come from a network trained on Pitts250k-train,
which was not released in this converted form, so agreement there is not
expected to be as close as on Pitts30k-test.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from repro.atomic import atomic_write_text
from repro.data.datasets import DATASETS
from repro.model.authors import AUTHORS_FILES
from repro.report.names import authors_record_path

__all__ = ["AUTHORS_TESTS", "FIG5_NS", "authors_plan", "authors_record_path", "run_authors_models",
           "authors_table", "PAPER_LEGEND"]

# (the model trained on, test dataset, test split, parameter holding the dataset's root)
AUTHORS_TESTS = {
    "pitts30k": ("pitts30k", "test", "data_root"),
    "pitts250k": ("pitts30k", "test", "data_root"),
    "tokyo247": ("tokyoTM", "test", "tokyo247_root"),
}
FIG5_NS = (1, 2, 3, 4, 5, 10, 15, 20, 25)  # the N of the paper's Figure 5
PAPER_LEGEND = "f_VLAD ours (V)+white"


def _model_file(authors_model, trained_on: str) -> Path | None:
    if authors_model is None:
        return None
    p = Path(authors_model).expanduser()
    return p if p.suffix.lower() == ".mat" else p / AUTHORS_FILES[trained_on]


def authors_plan(test_sets, authors_model=None, data_root=None, tokyo247_root=None) -> list[dict]:
    """One entry per test set: ``{"dataset", "split", "trained_on", "model", "root", "skip"}``;
    ``skip`` is None or one line saying what is absent."""
    roots = {"data_root": data_root, "tokyo247_root": tokyo247_root}
    plan = []
    for dataset in test_sets:
        trained_on, split, root_param = AUTHORS_TESTS[dataset]
        model, root = _model_file(authors_model, trained_on), roots[root_param]
        skip = None
        if model is None:
            skip = "authors_model not set (the folder with the authors' converted models)"
        elif not model.is_file():
            skip = f"no authors' model at {model}"
        elif root is None:
            skip = f"{root_param} not set"
        elif DATASETS[dataset].find_mat(Path(root).expanduser(), split)[0] is None:
            skip = f"no {dataset} {split} split under {root} (expected {DATASETS[dataset].mat[0].format(split=split)})"
        plan.append({"dataset": dataset, "split": split, "trained_on": trained_on,
                     "model": None if model is None else str(model), "root": None if root is None else str(root),
                     "skip": skip})
    return plan


def run_authors_models(test_sets=("pitts30k", "pitts250k", "tokyo247"), authors_model=None, data_root=None,
                       tokyo247_root=None, results_dir="results", device="cpu", image_size=None,
                       batch_size: int = 16, reuse_existing: bool = True, log=print) -> list[dict]:
    """Evaluate the authors' networks on every available test set; returns the records (skipped ones too)."""
    from repro.data.datasets import is_synthetic, load_split
    from repro.evaluate import check_split_images, evaluate_split
    from repro.model.authors import load_authors_model
    from repro.paths import rel
    from repro.report.names import record_complete

    plan = authors_plan(test_sets, authors_model, data_root, tokyo247_root)
    for entry in plan:  # every check before the first (long) evaluation
        if entry["skip"] is None:
            entry["split_obj"] = load_split(entry["dataset"], entry["root"], entry["split"])
            check_split_images(entry["split_obj"], "vgg16", image_size)
    skipped = [e for e in plan if e["skip"]]
    if skipped:  # one line, however many sets are absent
        reasons = {}
        for e in skipped:
            reasons.setdefault(e["skip"], []).append(e["dataset"])
        log("authors' models: skipped " + "; ".join(f"{', '.join(v)} ({k})" for k, v in reasons.items())
            + ". README: 'The authors' released networks' says how to get and place the files.")
    records, models = [], {}
    for entry in plan:
        if entry["skip"]:
            records.append({**entry, "experiment": "authors_model", "status": "skipped"})
            continue
        path = authors_record_path(results_dir, entry["trained_on"], entry["dataset"])
        if reuse_existing and record_complete(path):
            log(f"{entry['dataset']}: {rel(path)} exists (reuse_existing)")
            records.append(json.loads(path.read_text()))
            continue
        split = entry.pop("split_obj")
        if entry["model"] not in models:
            models[entry["model"]] = load_authors_model(entry["model"])
        model = models[entry["model"]]
        t0 = time.perf_counter()
        result = evaluate_split(model, split, image_size, ns=FIG5_NS, batch_size=batch_size, device=device)
        rec = {"experiment": "authors_model", "status": "complete", **{k: entry[k] for k in
               ("dataset", "split", "trained_on")}, "name": split.name, "model_file": Path(entry["model"]).name,
               "synthetic": is_synthetic(entry["dataset"], entry["root"]), "skip": None,
               "config": model.config, "image_size": image_size, "device": str(device),
               "recall": {str(n): v for n, v in result["recall"].items()}, "num_queries": result["num_queries"],
               "num_db": split.num_db, "num_without_positive": result["num_without_positive"],
               "dim": result["dim"], "ranks": [int(r) for r in result["ranks"]],
               "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
        log(f"{entry['dataset']}: R@1/5/10 " + "/".join(f"{result['recall'][n]:.1f}" for n in (1, 5, 10))
            + f" ({split.num_q} queries, {split.num_db} database images) -> {rel(path)}")
        records.append(rec)
    return records


def authors_table(records: list[dict], paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy rows (dataset, n, recall_pct, paper_recall_pct, difference, paper read quality) of the evaluated records."""
    rows = []
    for rec in records:
        if rec.get("skip") or "recall" not in rec:
            continue
        for n, value in rec["recall"].items():
            rows.append({"dataset": rec["dataset"], "split": rec["split"], "model": rec["model_file"],
                         "synthetic": rec["synthetic"], "n": int(n), "recall_pct": float(value)})
    out = pd.DataFrame(rows, columns=["dataset", "split", "model", "synthetic", "n", "recall_pct"])
    if paper is not None and not out.empty:
        ref = paper[paper["legend"] == PAPER_LEGEND][["dataset", "split", "n", "recall_pct", "read_quality"]]
        out = out.merge(ref.rename(columns={"recall_pct": "paper_recall_pct"}), on=["dataset", "split", "n"],
                        how="left")
        out["difference"] = out["recall_pct"] - out["paper_recall_pct"]
    return out
