"""A profile (``params/{profile}.yaml``) and the runs it plans.

    python -m repro.pipeline --profile default --list   # the plan, what would run or be skipped

A profile lists the notebooks and their parameters: ``common`` parameters
go to every notebook that declares them (:mod:`repro.report.parameters`);
an entry's ``parameters`` add to or override them; ``sweep`` runs the
notebook once per value (the alpha sweep: a log-spaced list, plus the alpha
the paper's rule gives, computed once before the sweep); ``requires`` names
a path without which the entry is skipped (also when it names an unset
``${VAR}``: the paper profile's Tokyo runs without ``TOKYOTM_ROOT``). Paths
in a profile are relative to the repository root; ``${VAR}`` is taken from
the environment. A ``generate`` list (the rehearsal profile) names
synthetic datasets in the real datasets' layouts to make (or reuse) before
anything else: ``{layout, root, ...}``, the arguments of
:func:`repro.data.synthetic.make_layout_city`; and ``{authors_models: DIR,
...}``, stand-ins for the authors' released model files (random weights in
their layout, :func:`repro.model.authors.write_authors_struct`).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from repro.errors import ConfigError
from repro.paths import rel, repo_root

PATH_KEYS = ("results_dir", "figures_dir", "cache_dir", "train_cache_dir", "data_root", "reference_dir", "authors_model",
             "tokyo247_root", "real_root")


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


@dataclass
class Run:
    """One papermill execution."""

    notebook: str                     # e.g. "03_alpha_sweep"
    name: str                         # executed file stem, e.g. "03_alpha_sweep_alpha10"
    params: dict                      # injected (paths relative to notebooks/)
    abs_params: dict                  # the same with absolute paths (for the pipeline's own use)
    requires: list = field(default_factory=list)
    unavailable: str | None = None    # why it cannot run here (an unset environment variable)

    def missing(self) -> str | None:
        """Why this run is skipped (an unset variable, an absent required path), or None."""
        if self.unavailable:
            return self.unavailable
        gone = [r for r in self.requires if not Path(r).exists()]
        return f"needs {gone[0]} (absent)" if gone else None

    def outputs(self) -> list[Path]:
        """The result files this run writes ([] when unknown: the notebook then
        runs and reports a bad parameter itself)."""
        from repro.report.names import expected_outputs

        try:
            return expected_outputs(self.notebook, self.abs_params)
        except (ConfigError, KeyError, TypeError, ValueError):
            return []


def load_profile(profile: str) -> dict:
    """``params/{profile}.yaml`` (or a path to a YAML file) as a dict."""
    path = Path(profile)
    if not path.suffix:
        path = repo_root() / "params" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (repo_root() / "params").glob("*.yaml"))
        raise ConfigError(f"no profile {profile!r}: {path} not found (known profiles: {', '.join(known)})")
    try:
        prof = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(prof.get("notebooks"), list):
        raise ConfigError(f"{path}: needs a 'notebooks' list")
    prof.setdefault("name", path.stem)
    return prof


def _unset_vars(value) -> list[str]:
    """Environment variables named in ``value`` (str, list, dict) that are not set."""
    if isinstance(value, str):
        return [v for v in re.findall(r"\$\{?(\w+)\}?", value) if v not in os.environ]
    if isinstance(value, dict):
        return [v for x in value.values() for v in _unset_vars(x)]
    if isinstance(value, list):
        return [v for x in value for v in _unset_vars(x)]
    return []


def _expand(value):
    if isinstance(value, str) and "$" in value:
        out = os.path.expandvars(value)
        missing = re.findall(r"\$\{?(\w+)\}?", out)
        if missing:
            raise ConfigError(f"environment variable {missing[0]} is not set (used in the profile as {value!r}); "
                              f"set it, e.g. export {missing[0]}=/data/pittsburgh")
        return out
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def with_defaults(notebook: str, params: dict) -> dict:
    """``params`` (absolute paths) completed with the notebook's own defaults (its parameters cell)."""
    import ast

    out = {}
    for name, spec in _declared(notebook).items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            continue  # an expression papermill cannot give us; the profile sets it or the notebook does
        if name in PATH_KEYS and out[name] is not None:  # the notebook's defaults are relative to notebooks/
            out[name] = _abs(out[name], notebooks_dir())
    return {**out, **params}


def generate_datasets(profile: dict, log=print) -> None:
    """Make (or reuse) the synthetic datasets a profile's ``generate`` list names."""
    from repro.data.synthetic import make_layout_city

    for spec in profile.get("generate") or []:
        spec = dict(_expand(spec))
        if "authors_models" in spec:  # stand-ins for the authors' released files (random weights, their layout)
            _write_authors_standins(Path(_abs(spec.pop("authors_models"), repo_root())), log=log, **spec)
            continue
        root = _abs(spec.pop("root"), repo_root())
        layout = spec.pop("layout")
        t0 = time.perf_counter()
        if "image_size" in spec:
            spec["image_size"] = tuple(spec["image_size"])
        make_layout_city(root, layout, **spec)
        log(f"synthetic {layout} layout at {rel(root)} ({time.perf_counter() - t0:.0f} s)")


def _write_authors_standins(folder: Path, log=print, **kwargs) -> None:
    """``Pitts30K_struct.mat`` and ``TokyoTM_struct.mat`` in the authors' converted layout, random weights
    (:func:`repro.model.authors.write_authors_struct`; ``kwargs``: its options), unless present."""
    from repro.model.authors import AUTHORS_FILES, write_authors_struct

    for seed, name in enumerate(AUTHORS_FILES.values()):
        if not (folder / name).is_file():
            t0 = time.perf_counter()
            write_authors_struct(folder / name, seed=seed, **kwargs)
            log(f"stand-in for the authors' {name} (random weights) at {rel(folder / name)} "
                f"({time.perf_counter() - t0:.0f} s)")


def _declared(notebook: str) -> dict:
    import papermill as pm

    path = notebooks_dir() / f"{notebook}.ipynb"
    if not path.is_file():
        raise ConfigError(f"notebook not found: {path}")
    return pm.inspect_notebook(str(path))


def _abs(value, root: Path):
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _for_notebook(value: str) -> str:
    """An absolute path as the notebook (cwd notebooks/) sees it: relative when inside the repository."""
    p = Path(value)
    try:
        p.relative_to(repo_root())
        return os.path.relpath(p, notebooks_dir())
    except ValueError:
        return str(p)


def plan(profile: dict) -> list[Run]:
    """The runs of a profile, in order (the rule's alpha is added at run time)."""
    root = repo_root()
    common = dict(profile.get("common") or {})
    for k in ("results_dir", "figures_dir"):
        common.setdefault(k, profile.get(k, "results" if k == "results_dir" else "figures"))
    runs = []
    for entry in profile["notebooks"]:
        if isinstance(entry, str):
            entry = {"notebook": entry}
        nb = entry["notebook"]
        declared = _declared(nb)
        params = {k: v for k, v in common.items() if k in declared}
        extra = entry.get("parameters") or {}
        unset = _unset_vars(entry.get("requires") or [])
        if unset:  # an optional run (e.g. Tokyo) whose data is not configured here: listed, skipped
            runs.append(Run(nb, entry.get("name", nb), {}, {}, [],
                            unavailable=f"needs ${unset[0]} (not set; export {unset[0]}=... to run it)"))
            continue
        unknown = [k for k in extra if k not in declared]
        if unknown:
            raise ConfigError(f"profile {profile['name']!r}: {nb} has no parameter(s) {unknown}; "
                              f"it declares {sorted(declared)}")
        params.update(extra)
        if "reuse_existing" in declared:  # set per invocation: --force retrains
            params.setdefault("reuse_existing", True)
        params = _expand(params)
        abs_params = {k: (_abs(v, root) if k in PATH_KEYS and v is not None else v) for k, v in params.items()}
        abs_params = _test_on_paths(abs_params, lambda v: _abs(v, root))
        nb_params = {k: (_for_notebook(v) if k in PATH_KEYS and v is not None else v) for k, v in abs_params.items()}
        nb_params = _test_on_paths(nb_params, _for_notebook)
        requires = [_abs(_expand(r), root) for r in (entry.get("requires") or [])]
        name = entry.get("name", nb)
        sweep = entry.get("sweep") or {}
        if sweep:
            key = [k for k in sweep if k != "add_rule_alpha"]
            if len(key) != 1 or key[0] not in declared:
                raise ConfigError(f"profile {profile['name']!r}: a sweep of {nb} needs one declared parameter, got {key}")
            key = key[0]
            values = list(sweep[key])
            for v in values:
                runs.append(Run(nb, f"{name}_{key}{_tag(v)}", {**nb_params, key: v}, {**abs_params, key: v}, requires))
            if sweep.get("add_rule_alpha"):
                runs.append(Run(nb, f"{name}_{key}_rule", {**nb_params, key: "rule"}, {**abs_params, key: "rule"},
                                requires))
        else:
            runs.append(Run(nb, name, nb_params, abs_params, requires))
    return runs


def _test_on_paths(params: dict, fix) -> dict:
    """The data roots inside ``train_options.test_on`` ("DATASET:ROOT[:SPLIT]") through ``fix``, as other paths."""
    opts = params.get("train_options")
    if not isinstance(opts, dict) or not isinstance(opts.get("test_on"), list):
        return params
    from repro.data.datasets import parse_dataset_spec

    specs = []
    for spec in opts["test_on"]:
        dataset, root, split = parse_dataset_spec(spec, default_split="test", what="train_options.test_on")
        specs.append(f"{dataset}:{fix(root)}:{split}")
    return {**params, "train_options": {**opts, "test_on": specs}}


def _tag(v) -> str:
    from repro.report.names import alpha_tag

    return alpha_tag(v) if isinstance(v, (int, float)) else re.sub(r"[^\w.-]", "_", str(v))


def _resolve_rule(run: Run, log) -> Run:
    """Replace alpha "rule" by the value the paper's rule gives (cached init)."""
    if run.abs_params.get("alpha") != "rule":
        return run
    from repro.report.off_the_shelf import rule_alpha

    p = dict(run.abs_params)
    p.pop("alpha")
    alpha = rule_alpha(log=log, **p)
    log(f"    the paper's rule gives alpha = {alpha:.6g}")
    return Run(run.notebook, run.name, {**run.params, "alpha": alpha}, {**run.abs_params, "alpha": alpha}, run.requires)
