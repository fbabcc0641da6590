"""The paper's numbers (and an earlier reproduction's), as the report's own copy.

:func:`write_paper_reference` copies the paper's Figure 5 (digitised;
``../shared/reference/netvlad_fig5.csv``) and the CS4240 reproduction's
numbers, each row citing where it comes from, to ``results/paper/``;
:func:`load_paper_reference` reads that copy and works without ``../shared``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro.atomic import atomic_write_text
from repro.paths import repo_root

PAPER_CITATION = "NetVLAD paper, Figure 5 (b, c), values digitised from the figure"


CS4240_CITATION = ("CS4240 reproduction (Duinkerken and Verlaan, TU Delft), reported recall@N on Pitts30k-val "
                   "(224x224, no whitening, alpha 0.1, K 64, last conv layer trained, Adam)")


PAPER_FILE = "netvlad_fig5.csv"


CS4240_FILE = "cs4240_pitts30k_val.csv"


def shared_dir() -> Path:
    """``<repo>/../shared`` (reference numbers and real metadata; absent in a fresh clone)."""
    return repo_root().parent / "shared"


def _paper_table(raw: pd.DataFrame) -> pd.DataFrame:
    split_of = raw["dataset"].str.rsplit("_", n=1)
    trained = raw["trained"].map({"yes": "yes", "no": "no"}).fillna("n/a")
    out = pd.DataFrame({
        "dataset": split_of.str[0], "split": split_of.str[1],
        "panel": raw["dataset"].map({"pitts30k_test": "b", "pitts250k_test": "c"}),
        "legend": raw["legend"], "backbone": raw["base"], "pooling": raw["pooling"], "trained": trained,
        "whitened": raw["whitened"].eq("yes"), "dim": raw["dim"].astype("Int64"), "n": raw["n"].astype(int),
        "recall_pct": raw["recall_pct"].astype(float), "read_quality": raw["read_quality"],
        "source": PAPER_CITATION,
    })
    return out


def _cs4240_table(raw: pd.DataFrame) -> pd.DataFrame:
    pooling = raw["pooling"].map({"fmax_1x1": "fmax", "netvlad": "netvlad", "none": "none (flattened conv5)"})
    return pd.DataFrame({
        "dataset": "pitts30k", "split": "val", "backbone": raw["base"], "pooling": pooling,
        "trained": raw["trained"], "n": raw["n"].astype(int), "recall_pct": raw["recall_pct"].astype(float),
        "source": CS4240_CITATION,
    })


def write_paper_reference(out_dir=None, reference_dir=None) -> list[Path]:
    """Write ``results/paper/netvlad_fig5.csv`` and ``cs4240_pitts30k_val.csv``
    from ``reference_dir`` (default ``../shared/reference``). Raises
    FileNotFoundError when the reference folder is absent."""
    ref = Path(reference_dir) if reference_dir else shared_dir() / "reference"
    out = Path(out_dir) if out_dir else repo_root() / "results" / "paper"
    fig5, cs = ref / "netvlad_fig5.csv", ref / "cs4240_reproduction_pitts30k_val.csv"
    if not fig5.is_file():
        raise FileNotFoundError(f"{fig5} not found: the digitised Figure 5 numbers live in ../shared/reference")
    written = [_write_if_changed(out / PAPER_FILE, _paper_table(pd.read_csv(fig5)).to_csv(index=False))]
    if cs.is_file():
        written.append(_write_if_changed(out / CS4240_FILE, _cs4240_table(pd.read_csv(cs)).to_csv(index=False)))
    return written


def _write_if_changed(path: Path, text: str) -> Path:
    """Rewrite only a changed copy: its mtime then says when the reference changed (the pipeline's
    test of whether 05 must rerun, ``repro.report.pipeline._up_to_date``)."""
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)
    return path


def load_paper_reference(results_dir=None, reference_dir=None, refresh: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(Figure 5 table, CS4240 table or None) from ``results_dir/paper/``.

    The copy is (re)made there first when ``../shared/reference`` exists and
    ``refresh``; without it, the copy under ``results_dir`` is read, else the
    repository's committed ``results/paper/`` (so other results folders, e.g.
    the smoke profile's, work in a fresh clone)."""
    out = Path(results_dir) / "paper" if results_dir else repo_root() / "results" / "paper"
    ref = Path(reference_dir) if reference_dir else shared_dir() / "reference"
    if refresh and (ref / "netvlad_fig5.csv").is_file():
        write_paper_reference(out, ref)
    committed = repo_root() / "results" / "paper"
    folder = next((f for f in (out, committed) if (f / PAPER_FILE).is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"neither the project's copy {out / PAPER_FILE} (or {committed / PAPER_FILE}) nor "
                                f"the reference {ref / 'netvlad_fig5.csv'} exists")
    paper = pd.read_csv(folder / PAPER_FILE, dtype={"trained": str}, keep_default_na=False, na_values={"dim": [""]})
    paper["dim"] = paper["dim"].astype("Int64")
    cs = pd.read_csv(folder / CS4240_FILE, dtype={"trained": str}) if (folder / CS4240_FILE).is_file() else None
    return paper, cs
