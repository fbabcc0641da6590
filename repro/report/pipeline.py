"""Run the report: every notebook in order, with papermill, for one profile.

    python -m repro.pipeline --profile default      # make repro (<= 20 min on 2 CPU cores)
    python -m repro.pipeline --profile smoke        # tiny city, 1 epoch (<= 5 min); writes under cache/smoke/
    python -m repro.pipeline --profile paper        # Pittsburgh 30k, VGG-16, ImageNet weights, GPU
    python -m repro.pipeline --profile default --only 05 --force   # make figures: no training, seconds
    python -m repro.pipeline --profile default --list               # the plan, what would run or be skipped
    python -m repro.pipeline --profile paper --list   # ... and what it costs: image passes per stage,
                                                      # cache memory, projected time (repro.report.costs)
    python -m repro.pipeline --profile rehearsal      # make rehearsal: the paper profile, counts shrunk, on CPU

A profile (``params/{profile}.yaml``) lists the notebooks and their
parameters; :mod:`repro.report.profiles` reads it and plans the runs.

Before the first notebook starts, every run's parameters are checked as the
notebook's first cell would check them (types and values, data root, weights
file, device, writable folders; :func:`check_runs`), so a bad value in the
last run of a sweep stops the pipeline at once; every training run's whole
:class:`repro.train.TrainConfig` is built and checked with its data's
``.mat`` files (:func:`repro.train.trainer.training_data`), so no
configuration error can surface hours into a profile. A run is skipped when all of
its result files exist (complete), unless ``--force``; a run without result files of
its own (05, which gathers the others', and 06 where nothing is evaluable) when its
executed notebook is newer than every result file it reads (``--only`` and
``--force`` run it), so an invocation with nothing to do rewrites no tracked file. Executed notebooks go to ``executed_dir`` (``results/executed/``
for the default profile) with an HTML render beside them (``html/``); a
failing notebook stops the pipeline with the notebook's name and the failing
cell's error (the partly executed notebook is kept under
``cache/pipeline/failed/``). At the end: ``results/summary.csv``,
``results/claims.csv``, the measured runtimes (``results/runtimes/``) and,
for profiles that write to ``results/``, the README's results section.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from repro.errors import ConfigError, ReproError, report_errors
from repro.paths import rel, repo_root
from repro.report.profiles import (
    Run,
    _abs,
    _resolve_rule,
    generate_datasets,
    load_profile,
    notebooks_dir,
    plan,
    with_defaults,
)

KERNEL_ENV = {"TQDM_DISABLE": "1", "SOURCE_DATE_EPOCH": "0"}


# ---------------------------------------------------------------------------
# execution


def ensure_kernel() -> None:
    """Register this interpreter as the Jupyter kernel ``python3`` (inside the
    virtual environment) when no such kernel spec is installed there."""
    spec = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    if spec.is_file():
        return
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
                   check=True, capture_output=True)


class _Echo:
    """A file-like sink for the notebook's printed output (papermill
    ``stdout_file``/``stderr_file``): each line to the console, indented."""

    def __init__(self, stream):
        self.stream, self.buf = stream, ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                print(f"    | {line}", file=self.stream, flush=True)
        return len(text)

    def flush(self) -> None:
        if self.buf.strip():
            print(f"    | {self.buf}", file=self.stream, flush=True)
        self.buf = ""


def execute(run: Run, executed_dir: Path, html: bool = True, echo: bool = True, timeout: int | None = None,
            env: dict | None = None) -> Path:
    """Execute one notebook with papermill; on success the executed notebook
    lands in ``executed_dir`` (and its HTML render in ``executed_dir/html``).
    ``env``: more environment variables for the kernel (a profile's
    ``threads``: ``OMP_NUM_THREADS``). Raises :class:`NotebookFailed` naming
    the notebook and the failing cell."""
    import papermill as pm

    ensure_kernel()
    work = repo_root() / "cache" / "pipeline"
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f"{run.name}.ipynb"
    out_sink, err_sink = (_Echo(sys.stdout), _Echo(sys.stderr)) if echo else (None, None)
    # TQDM_DISABLE: progress bars would fill the executed notebooks;
    # SOURCE_DATE_EPOCH: PDFs without a creation date, so an unchanged figure
    # keeps its bytes. The kernel inherits both.
    kernel_env = {**KERNEL_ENV, **(env or {})}
    env_before = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        pm.execute_notebook(str(notebooks_dir() / f"{run.notebook}.ipynb"), str(tmp), parameters=run.params,
                            cwd=str(notebooks_dir()), kernel_name="python3", progress_bar=False,
                            stdout_file=out_sink, stderr_file=err_sink, execution_timeout=timeout)
    except pm.PapermillExecutionError as exc:
        failed = work / "failed" / f"{run.name}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        if tmp.is_file():
            shutil.move(str(tmp), failed)
        raise NotebookFailed(run.name, exc.exec_count, exc.ename, exc.evalue, failed) from None
    finally:
        for sink in (out_sink, err_sink):
            if sink:
                sink.flush()
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    executed_dir.mkdir(parents=True, exist_ok=True)
    out = executed_dir / f"{run.name}.ipynb"
    _relative_paths(tmp, notebooks_dir() / f"{run.notebook}.ipynb", out)
    shutil.move(str(tmp), out)
    if html:
        render_html(out, executed_dir / "html" / f"{run.name}.html")
    return out


def _relative_paths(executed: Path, source: Path, final: Path) -> None:
    """Papermill records the input and output paths; make them relative to
    the repository, so committed notebooks carry no machine-specific paths."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"] = rel(source)
    meta["output_path"] = rel(final)
    nbformat.write(nb, executed)


def render_html(notebook: Path, out: Path) -> Path:
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    from repro.atomic import atomic_write_text

    return atomic_write_text(out, body)


class NotebookFailed(ReproError):
    def __init__(self, name, cell, ename, evalue, path):
        self.name, self.cell, self.ename, self.evalue, self.path = name, cell, ename, evalue, path
        super().__init__(f"notebook {name} failed in cell [{cell}]: {ename}: {evalue}\n"
                         f"  the partly executed notebook: {path}")


# ---------------------------------------------------------------------------
# the whole profile


def _describe(params: dict) -> str:
    keys = [k for k in ("dataset", "synthetic_preset", "backbone", "alpha", "train", "epochs", "poolings")
            if k in params]
    if params.get("dataset") != "synthetic":
        keys = [k for k in keys if k != "synthetic_preset"]
    if "poolings" not in params and not params.get("train"):
        keys = [k for k in keys if k != "epochs"]
    return ", ".join(f"{k}={params[k]!r}" if not isinstance(params[k], float) else f"{k}={params[k]:.4g}" for k in keys)


def _runtimes_path(profile: dict) -> Path:
    return Path(_abs(profile.get("runtimes_dir", "results/runtimes"), repo_root())) / f"{profile['name']}.json"


def _save_runtimes(profile: dict, measured: dict, plan_names: list[str], wall: float, complete: bool,
                   not_available: list[str] = (), caches_at_start: list[str] = ()) -> None:
    """Merge this invocation's measured seconds into ``runtimes_dir/{profile}.json``
    (per run: the last time it was executed; ``full_run``: the wall time of
    the last invocation that executed every run)."""
    from repro.atomic import write_json

    profile_name = profile["name"]
    path = _runtimes_path(profile)
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    runs = dict(old.get("runs", {}))
    runs.update(measured)
    runs = {k: v for k, v in runs.items() if k in plan_names}
    rec = {"profile": profile_name, "runs": runs,
           "total_executed_seconds": sum(v["seconds"] for v in runs.values()),
           "last_invocation": {"wall_seconds": wall, "executed": sorted(measured), "complete": complete,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count()}}
    full, fresh = old.get("full_run"), old.get("full_run_fresh")
    if full and full.get("caches_at_start") == [] and not fresh:
        fresh = full
    if complete and len(measured) + len(not_available) == len(plan_names):  # nothing skipped for existing results
        full = {"wall_seconds": wall, "finished": rec["last_invocation"]["finished"], "cpu_count": os.cpu_count(),
                "not_available": list(not_available), "caches_at_start": list(caches_at_start)}
        if not caches_at_start:
            fresh = full
    if full:
        rec["full_run"] = full
    if fresh:  # the last full run from a fresh tree (no caches): what `make repro` costs on a fresh clone
        rec["full_run_fresh"] = fresh
    write_json(path, rec)


def finish(profile: dict, log=print) -> None:
    """Summary, claims and (if the profile says so) the README section."""
    from repro.report.claims import write_claims
    from repro.report.readme import load_runtimes, readme_section, update_readme
    from repro.report.reference import load_paper_reference
    from repro.report.summary import write_summary

    results_dir = Path(_abs(profile.get("results_dir", "results"), repo_root()))
    summary_path, summary = write_summary(results_dir)
    try:
        paper, _ = load_paper_reference(results_dir)
    except FileNotFoundError:
        paper = None
    claims_path, claims = write_claims(results_dir, summary, paper)
    log(f"summary: {summary_path} ({len(summary)} rows); claims: {claims_path}")
    if profile.get("update_readme"):
        from repro.report.rerun import write_rerun_tables

        write_rerun_tables(results_dir)
        section = readme_section(summary, claims, f"python -m repro.pipeline --profile {profile['name']}",
                                 runtimes=load_runtimes(_runtimes_path(profile).parent), results_dir=results_dir)
        changed = update_readme(repo_root() / "README.md", section)
        log("README results section " + ("updated" if changed else "unchanged"))


def check_runs(runs: list[Run], executed_dir: Path) -> None:
    """Fail fast, before the first notebook starts: every run's parameters
    (types and values, data root, weights file, device, writable output
    folders; :func:`repro.report.parameters.check_params`, the check each notebook
    also makes in its first cell) and the executed-notebook folders. A
    ReproError names the run; runs whose ``requires`` are absent are skipped
    as when running."""
    from repro.atomic import check_writable
    from repro.report.parameters import check_params
    from repro.report.training import check_train_config, planned_train_configs
    from repro.train.trainer import training_data

    check_writable(executed_dir, what="executed notebooks (executed_dir)")
    check_writable(repo_root() / "cache" / "pipeline", what="notebooks being executed")
    for run in runs:
        if run.missing():
            continue
        params = {k: v for k, v in run.params.items() if not (k == "alpha" and v == "rule")}
        try:
            check_params(run.notebook, params, base=notebooks_dir())
            for cfg in planned_train_configs(run.notebook, with_defaults(run.notebook, run.abs_params)):
                check_train_config(cfg)  # options, model spec (train_from, whitening size), output folders
                if cfg.dataset != "synthetic" or cfg.data_root:  # the default city may not exist yet (01 makes it)
                    training_data(cfg, check_files=False)  # .mat files, tuples, batch fill, whitening fit, test_on
        except ReproError as exc:
            raise type(exc)(f"run {run.name} (nothing has run yet): {exc}") from None


def run_profile(profile_name: str, force: bool = False, only: list[str] | None = None, html: bool = True,
                list_only: bool = False, log=print) -> int:
    profile = load_profile(profile_name)
    runs = plan(profile)
    if only:
        runs = [r for r in runs if any(r.name.startswith(o) or r.notebook.startswith(o) for o in only)]
        if not runs:
            raise ConfigError(f"--only {only}: no run of profile {profile['name']!r} matches")
    executed_dir = Path(_abs(profile.get("executed_dir", "results/executed"), repo_root()))
    names = [r.name for r in plan(profile)]
    log(f"profile {profile['name']}: {len(runs)} notebook run(s); executed notebooks -> {executed_dir}")
    if not list_only:
        generate_datasets(profile, log)  # the rehearsal's data, before the checks that read it
        thread_env(profile)  # a bad ``threads`` stops here
        check_runs(runs, executed_dir)  # every run's parameters and training configs, before the first one starts
    start = time.perf_counter()
    measured = {}
    not_available = []
    # what was already computed when this invocation started (a fresh clone: nothing)
    caches = sorted(p.name for p in (repo_root() / "cache").glob("*") if p.is_dir() and any(p.iterdir())) \
        if (repo_root() / "cache").is_dir() else []
    complete = False
    try:
        for i, run in enumerate(runs, 1):
            head = f"[{i}/{len(runs)}] {run.name}"
            missing = run.missing()
            if missing:
                log(f"{head}: skipped, {missing}")
                not_available.append(run.name)
                continue
            if run.abs_params.get("alpha") == "rule" and not list_only:
                log(f"{head}: computing the paper's rule for alpha")
                run = _resolve_rule(run, log)
            outputs = run.outputs() if run.abs_params.get("alpha") != "rule" else []
            if not outputs and not force and not only and not list_only and _up_to_date(run, executed_dir, profile):
                log(f"{head}: skipped, its executed notebook is newer than every result it reads; --force reruns")
                continue
            # results made outside the pipeline (e.g. training under torchrun, --train-commands) with no
            # executed notebook yet: the notebook runs, reusing them, to render them
            if outputs and not force and all(_complete(p) for p in outputs) and \
                    (executed_dir / f"{run.name}.ipynb").is_file():
                log(f"{head}: skipped, results exist ({rel(outputs[0])}{' ...' if len(outputs) > 1 else ''}); "
                    "--force reruns")
                continue
            if list_only:
                log(f"{head}: would run ({_describe(run.params)})")
                continue
            if force and "reuse_existing" in run.params:
                run.params["reuse_existing"] = False
            log(f"{head}: running ({_describe(run.params)})")
            t0 = time.perf_counter()
            out = execute(run, executed_dir, html=html, env=thread_env(profile))
            dt = time.perf_counter() - t0
            measured[run.name] = {"seconds": round(dt, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            log(f"{head}: done in {dt:.0f} s -> {rel(out)}")
        complete = True
    finally:
        wall = time.perf_counter() - start
        if measured and not list_only:
            _save_runtimes(profile, measured, names, wall, complete and not only, not_available, caches)
    if list_only:
        from repro.report.costs import format_costs, load_throughput, profile_costs

        stages, memory = profile_costs(runs)
        log("\nWhat it costs (image passes through the network, per stage):\n"
            + format_costs(stages, memory, load_throughput()))
        return 0
    finish(profile, log)
    log(f"profile {profile['name']} finished in {time.perf_counter() - start:.0f} s")
    return 0


def train_commands(profile_name: str, nproc_per_node: int | None = None, only: list[str] | None = None) -> list[str]:
    """One ``python -m repro train`` command per training run of a profile (02, and 03 with
    ``train``), with exactly the settings the notebook would use, and ``--nproc-per-node N``:
    to train on several GPUs under torchrun outside the notebooks. The pipeline afterwards
    finds the complete records and reuses them (the notebooks only render them). Runs whose
    data is not configured are listed as comments."""
    import shlex

    from repro.cli import train_arguments
    from repro.report.training import planned_train_configs

    lines = []
    for run in plan(load_profile(profile_name)):
        if only and not any(run.name.startswith(o) or run.notebook.startswith(o) for o in only):
            continue
        missing = run.missing()
        if missing:
            lines.append(f"# {run.name}: skipped, {missing}")
            continue
        for cfg in planned_train_configs(run.notebook, with_defaults(run.notebook, run.abs_params)):
            args = train_arguments(cfg) + (["--nproc-per-node", str(nproc_per_node)] if nproc_per_node else [])
            lines.append(f"python -m repro {shlex.join(args)}")
    return lines


def thread_env(profile: dict) -> dict:
    """The kernel's thread count from a profile's ``threads`` (the rerun
    with another thread count, ``params/rerun_threads1.yaml``): torch reads
    ``OMP_NUM_THREADS`` when it starts; {} when the profile sets none."""
    n = profile.get("threads")
    if n is None:
        return {}
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"profile {profile['name']!r}: threads must be a positive integer, got {n!r}")
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


# The result folders the notebooks without result files of their own (05, which gathers them, and 06
# where nothing is evaluable) read; their outputs change only when one of these does.
RESULT_FOLDERS = ("data", "train", "alpha_sweep", "fmax_output_size", "authors_models", "paper", "calibration",
                  "real_images", "retrievals", "rerun")


def _up_to_date(run: Run, executed_dir: Path, profile: dict) -> bool:
    """A run without result files of its own (05; 06 with nothing to evaluate) whose executed notebook is
    newer than every result file it could read: rerunning it would only rewrite the same notebook with new
    timings, so a pipeline invocation with nothing to do leaves the tree as it was."""
    executed = executed_dir / f"{run.name}.ipynb"
    if not executed.is_file():
        return False
    results_dir = Path(_abs(profile.get("results_dir", "results"), repo_root()))
    newest = max((f.stat().st_mtime for d in RESULT_FOLDERS if (results_dir / d).is_dir()
                  for f in (results_dir / d).rglob("*") if f.is_file() and not _gathered(f, results_dir)),
                 default=0.0)
    return executed.stat().st_mtime >= newest


def _gathered(path: Path, results_dir: Path) -> bool:
    """Files 05 and the pipeline's end write themselves from the others (the rerun comparison, a rerun
    profile's own summary): reading them is no reason to run again, and counting them would rerun 05
    after every 05."""
    rel_path = path.relative_to(results_dir)
    return rel_path.parts[0] == "rerun" and path.name in ("verdicts.csv", "recall.csv", "summary.csv",
                                                         "claims.csv")


def _complete(path: Path) -> bool:
    from repro.report.names import record_complete

    return record_complete(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="default | smoke | paper, or a YAML file (params/*.yaml)")
    ap.add_argument("--force", action="store_true", help="rerun notebooks whose results exist")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only notebooks whose name starts with NAME (e.g. 05 or 03_alpha_sweep); repeatable")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML renders")
    ap.add_argument("--list", action="store_true", help="show the plan (what would run or be skipped), run nothing")
    ap.add_argument("--train-commands", type=int, nargs="?", const=0, default=None, metavar="N",
                    help="print one `python -m repro train` command per training run of the profile (with "
                         "--nproc-per-node N when N is given: several GPUs under torchrun), run nothing; the "
                         "pipeline reuses the records they write")
    args = ap.parse_args(argv)

    def run() -> int:
        if args.train_commands is not None:
            if args.train_commands < 0:
                raise ConfigError(f"--train-commands N: N must be >= 1 (or left out), got {args.train_commands}")
            print("\n".join(train_commands(args.profile, args.train_commands or None, args.only)))
            return 0
        try:
            return run_profile(args.profile, force=args.force, only=args.only, html=not args.no_html,
                               list_only=args.list)
        except NotebookFailed as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
