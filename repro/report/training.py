"""Report step 02 (``notebooks/02_train.ipynb``): the training runs, from the notebook's parameters.

:func:`train_config` turns the notebooks' parameters into a
:class:`repro.train.TrainConfig` (the synthetic profile on the synthetic
city, the authors' settings elsewhere); :func:`run_training` trains (or
reuses a complete record with the same settings); :func:`train_rows` and
:func:`training_table` turn trainer records into tidy recall rows.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from repro.report.data_prep import resolve_root
from repro.report.names import (
    NS,
    _image_size,
    dataset_label,
    record_complete,
    resolve_dir,
    train_record_path,
    train_run_name,
)


def train_config(dataset="synthetic", data_root=None, synthetic_preset="default", city_seed=0, backbone="alexnet",
                 weights=None, pooling="netvlad", image_size=None, epochs=None, device="cpu", seed=0, num_clusters=None,
                 whiten_dim=None, results_dir=None, cache_dir=None, run_name=None, assignment=None,
                 options: dict | None = None, check: bool = True):
    """A :class:`repro.train.TrainConfig` from the notebooks' parameters:
    ``TrainConfig.synthetic_default`` on the synthetic city, else
    ``TrainConfig.paper``; ``options`` sets any other field."""
    from repro.train import TrainConfig

    name = dataset_label(dataset, synthetic_preset, city_seed, data_root)
    run_name = run_name or train_run_name(name, backbone, pooling, seed)
    results = resolve_dir(results_dir, "results")
    cache = resolve_dir(cache_dir, "cache/train")
    fields = dict(backbone=backbone, weights=None if weights in (None, "none", "None") else weights, pooling=pooling,
                  image_size=_image_size(image_size), device=device, seed=int(seed), ns=NS, select_n=5,
                  run_name=run_name, record_path=str(train_record_path(results, run_name)),
                  out_dir=str(cache / run_name), progress=False, verbose=True)
    if epochs is not None:
        fields["epochs"] = int(epochs)
    if num_clusters is not None:
        fields["num_clusters"] = int(num_clusters)
    if whiten_dim is not None and pooling == "netvlad":  # the paper whitens NetVLAD (f_VLAD+white) only
        fields["whiten_dim"] = int(whiten_dim)
    if assignment is not None:
        fields["assignment"] = assignment
    fields.update(options or {})
    if dataset == "synthetic":
        cfg = TrainConfig.synthetic_default(synthetic_preset=synthetic_preset, city_seed=int(city_seed),
                                            data_root=str(data_root) if data_root else None, **fields)
    else:
        cfg = TrainConfig.paper(dataset=dataset, data_root=str(resolve_root(dataset, data_root)), **fields)
    return check_train_config(cfg) if check else cfg.validate()


# the notebook parameters that go into a training run's TrainConfig (02, and 03 with train=True)
TRAIN_PARAMS = ("dataset", "data_root", "synthetic_preset", "city_seed", "backbone", "weights", "image_size",
                "epochs", "device", "seed", "num_clusters", "whiten_dim", "assignment")


def planned_train_configs(notebook: str, params: dict) -> list:
    """The :class:`repro.train.TrainConfig` of every training run a notebook
    run would start (02: one per pooling; 03 with ``train``: NetVLAD at its
    alpha), from its complete parameters (absolute paths), without touching
    data: the pipeline checks them all before the first notebook starts."""
    stem = Path(notebook).name[:2]
    kw = {k: params[k] for k in TRAIN_PARAMS if k in params}
    if stem == "02":
        return [train_config(pooling=p, results_dir=params.get("results_dir"), cache_dir=params.get("cache_dir"),
                             options=params.get("train_options"), check=False, **kw)
                for p in params.get("poolings", [])]
    if stem == "03" and params.get("train") and params.get("alpha") not in (None, "rule"):
        kw.pop("whiten_dim", None)
        return [train_config(pooling="netvlad", results_dir=params.get("results_dir"),
                             cache_dir=params.get("train_cache_dir"),
                             options={"alpha": float(params["alpha"]), **(params.get("train_options") or {})},
                             check=False, **kw)]
    return []


def check_train_config(cfg):
    """``cfg.validate()`` plus what training would otherwise find out late:
    the model options (an alpha of 0, an f_max grid of 0, an unknown
    backbone or pooling) and output folders that cannot be written."""
    from repro.atomic import check_writable
    from repro.model.place_model import check_model_options

    cfg.validate()
    check_model_options(cfg.backbone, cfg.pooling, cfg.alpha, cfg.fmax_output_size)
    out_dir, record = cfg.paths()
    check_writable(out_dir, what="checkpoints (out_dir)")
    check_writable(record.parent, what=f"the training record ({record.name})")
    return cfg


def record_test_sets(record: dict) -> list[dict]:
    """Where a trainer record was tested: its own test split (``test_set``
    None) and every ``test_on`` set (e.g. Tokyo 24/7 for a TokyoTM run), each
    ``{"test_set", "dataset" (label), "split", "synthetic"}``."""
    cfg = record.get("config") or {}
    from repro.report.names import train_dataset_label

    out = []
    if record.get("test") or record.get("test_untrained"):
        out.append({"test_set": None, "dataset": train_dataset_label(record), "split": cfg.get("test_split") or "test",
                    "synthetic": bool(record.get("synthetic", False))})
    for name, t in (record.get("test_on") or {}).items():
        # the record's own synthetic flag: its data_root may be relative to another clone
        out.append({"test_set": name, "dataset": f"synthetic_{t['dataset']}" if t.get("synthetic") else t["dataset"],
                    "split": t.get("split", "test"), "synthetic": bool(t.get("synthetic", False))})
    return out


def train_rows(record: dict, test_set: str | None = None) -> list[dict]:
    """Tidy recall rows of a trainer record: untrained (epoch 0), trained
    (best epoch) and, if present, trained + PCA whitening; on the run's own
    test split, or with ``test_set`` on that ``test_on`` set."""
    from repro.model.backbone import backbone_channels

    mc = record.get("model_config") or {}
    cfg = record.get("config") or {}
    backbone = mc.get("backbone", cfg.get("backbone"))
    pooling = mc.get("pooling", cfg.get("pooling"))
    d = backbone_channels(backbone)
    if pooling == "netvlad":
        dim = int(mc.get("num_clusters", cfg.get("num_clusters", 64))) * d
        alpha = (record.get("init") or {}).get("alpha", mc.get("alpha"))
    else:
        gh, gw = mc.get("fmax_output_size", cfg.get("fmax_output_size", [1, 1]))
        dim, alpha = d * gh * gw, None
    grid = None if pooling == "netvlad" else "x".join(str(v) for v in mc.get("fmax_output_size", [1, 1]))
    out = []
    source = record if test_set is None else {f"test{k}": v for k, v in (
        ("_untrained", record["test_on"][test_set].get("untrained")), ("", record["test_on"][test_set].get("trained")),
        ("_whitened", record["test_on"][test_set].get("whitened")))}
    for key, trained, whitened, dm, variant in (
            ("test_untrained", False, False, dim, "off-the-shelf"),
            ("test", True, False, dim, "trained"),
            ("test_whitened", True, True, cfg.get("whiten_dim"), "trained + PCA-whitening")):
        res = source.get(key)
        if not res:
            continue
        for n, v in res["recall"].items():
            out.append({"backbone": backbone, "pooling": pooling, "dim": dm, "trained": trained, "whitened": whitened,
                        "alpha": alpha, "variant": variant, "grid": grid, "n": int(n), "recall_pct": float(v),
                        "num_queries": res.get("num_queries")})
    return out


def trained_checkpoint(results_dir, run_name: str, train_cache_dir=None) -> tuple:
    """(checkpoint path, training record, None) when the best checkpoint of
    ``run_name`` exists and matches its record ``results_dir/train/{run}.json``
    (complete; the checkpoint's epoch is the record's best epoch, its
    validation recall the record's at that epoch, its model config the
    record's), else (None, record or None, why not). The checkpoint is
    ``train_cache_dir/{run}/best.pt``, or without ``train_cache_dir`` the
    record's ``checkpoint_best`` (relative to the repository root). It is read
    with the safe loader (:func:`repro.safe_load.load_torch_file`: no code
    from the file runs). Used by 07 (sim-to-real) and 08 (retrievals)."""
    from repro.errors import WeightsError
    from repro.paths import rel, repo_root
    from repro.safe_load import load_torch_file

    rec_path = train_record_path(resolve_dir(results_dir, "results"), run_name)
    if not rec_path.is_file():
        return None, None, f"no training record {rel(rec_path)} (run 02_train)"
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError) as exc:
        return None, None, f"unreadable training record {rel(rec_path)} ({exc})"
    if rec.get("status") != "complete":
        return None, rec, f"training record {rel(rec_path)} is {rec.get('status')!r}, not complete (still training?)"
    if train_cache_dir is not None:
        ckpt = resolve_dir(train_cache_dir, "cache/train") / run_name / "best.pt"
    else:
        ckpt = Path(rec.get("checkpoint_best") or "")
        ckpt = ckpt if ckpt.is_absolute() else repo_root() / ckpt
    if not ckpt.is_file():
        return None, rec, (f"no checkpoint {rel(ckpt)}: absent (checkpoints are not committed: a fresh clone has "
                           "none; 02_train with reuse_existing=False / make seeds makes them)")
    try:
        meta = load_torch_file(ckpt, "checkpoint")
    except WeightsError as exc:
        return None, rec, str(exc)
    best = int(rec.get("best_epoch", -1))
    val = next((e.get("val", {}).get("recall") for e in rec.get("epochs", []) if e.get("epoch") == best), None)
    theirs = {str(k): float(v) for k, v in (val or {}).items()}
    ours = {str(k): float(v) for k, v in ((meta.get("val") or {}).get("recall") or {}).items()}
    problems = []
    if int(meta.get("epoch", -2)) != best:
        problems.append(f"epoch {meta.get('epoch')} vs the record's best epoch {best}")
    if ours != theirs:
        problems.append("its validation recall differs from the record's")
    if dict(meta.get("config") or {}) != dict(rec.get("model_config") or {}):
        problems.append("its model config differs from the record's")
    if problems:
        return None, rec, f"{rel(ckpt)} does not match {rel(rec_path)} ({'; '.join(problems)}): retrained since?"
    return ckpt, rec, None


def same_settings(recorded: dict, now: dict) -> bool:
    """Whether a record's training config is ``now`` (both JSON-like): equal, where a field the
    record lacks (written before the field existed) counts as that field's default."""
    from repro.train.config import changed_fields

    return set(recorded) <= set(now) and not changed_fields(recorded, now)


def run_training(poolings=("netvlad", "fmax"), reuse_existing: bool = True, results_dir=None, cache_dir=None,
                 options: dict | None = None, log=print, **params) -> list[dict]:
    """Train (or, with ``reuse_existing``, reuse a complete record with the
    same configuration) each pooling; returns the trainer records."""
    from repro.train import train as run_train

    records = []
    configs = [train_config(pooling=pooling, results_dir=results_dir, cache_dir=cache_dir, options=options, **params)
               for pooling in poolings]  # all checked before the first run starts
    for cfg in configs:
        path = Path(cfg.record_path)
        if reuse_existing and record_complete(path):
            rec = json.loads(path.read_text())
            from repro.train.trainer import portable_config

            # records store paths relative to the repository; those written before did not
            if any(same_settings(rec.get("config") or {}, now)
                   for now in (json.loads(json.dumps(portable_config(cfg))), json.loads(json.dumps(cfg.to_dict())))):
                log(f"{cfg.resolved_run_name()}: reusing the complete record {path}")
                rec["path"] = path
                records.append(rec)
                continue
            log(f"{cfg.resolved_run_name()}: the record at {path} has other settings; training again")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*randomly initialised.*")
            result = run_train(cfg)
        rec = json.loads(Path(result.record_path).read_text())
        rec["path"] = Path(result.record_path)
        records.append(rec)
    return records


def training_table(records: list[dict]) -> pd.DataFrame:
    """Recall@N of every trainer record, tidy (one row per model and N)."""
    from repro.report.names import train_dataset_label

    rows = []
    for rec in records:
        for t in record_test_sets(rec):
            for r in train_rows(rec, t["test_set"]):
                rows.append({"dataset": t["dataset"], "split": t["split"], "synthetic": t["synthetic"],
                             "trained_on": train_dataset_label(rec), "run": rec["run_name"], **r})
    return pd.DataFrame(rows)


def training_history(records: list[dict]) -> pd.DataFrame:
    """Per epoch: loss and val recall@N of every record (epoch 0 = untrained)."""
    rows = []
    for rec in records:
        pooling = (rec.get("model_config") or rec["config"]).get("pooling")
        for e in rec.get("epochs", []):
            base = {"run": rec["run_name"], "pooling": pooling, "epoch": e["epoch"], "loss": e.get("loss"),
                    "seconds": e.get("seconds")}
            for n, v in (e.get("val") or {}).get("recall", {}).items():
                rows.append({**base, "n": int(n), "val_recall_pct": float(v)})
    return pd.DataFrame(rows)


def _r(rows: pd.DataFrame, n: int) -> float | None:
    v = rows.loc[rows["n"] == n, "recall_pct"]
    return float(v.iloc[0]) if len(v) else None


def describe_training(table: pd.DataFrame) -> str:
    """One line per pooling: recall@1/5/10 off-the-shelf -> trained."""
    lines = []
    for (backbone, pooling), g in table.groupby(["backbone", "pooling"]):
        a, b = g[g["variant"] == "off-the-shelf"], g[g["variant"] == "trained"]
        name = "NetVLAD" if pooling == "netvlad" else "f_max"
        fmt = lambda r: "/".join(f"{_r(r, n):.1f}" if _r(r, n) is not None else "-" for n in (1, 5, 10))  # noqa: E731
        lines.append(f"{backbone} + {name}: R@1/5/10 off-the-shelf {fmt(a)} -> trained {fmt(b)}"
                     + (f" ({_r(b, 1) - _r(a, 1):+.1f} points at R@1)" if _r(a, 1) is not None and _r(b, 1) is not None else ""))
    return "\n".join(lines)
