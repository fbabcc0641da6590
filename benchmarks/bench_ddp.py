"""Training under torchrun: 2 CPU ranks (gloo) against 1 process, the same run.

The paper-scale path trains with one process per GPU under ``torchrun``
(:mod:`repro.distributed`); on a CPU the same code runs with gloo. Here the
same ``TrainConfig`` (the same global batch of 4 tuples, so the same work
and, as asserted, the same results) runs as

* ``2_ranks_1_thread``: ``python -m torch.distributed.run --standalone
  --nproc_per_node 2 -m repro train ...``, ``OMP_NUM_THREADS=1`` per rank;
* ``1_process_2_threads``: ``python -m repro train ...`` on 2 torch threads
  (the reference: how one process uses this machine's 2 cores);
* ``1_process_1_thread``: the same on 1 thread (each rank's share).

**On this 2-core machine this measures overhead, not speed-up**: the two
ranks share the two cores that one process already uses with its two
threads, and add the collectives (gradients all-gathered every batch,
descriptors gathered every extraction, tuples broadcast), a torchrun agent
and a second interpreter. What more GPUs give is not measured here.

Times: ``seconds`` is the training record's ``wall_seconds`` (from the
start of ``train()``: no interpreter start, no torch import; under torchrun
rank 0's, after the rendezvous); ``command_seconds`` the whole command's
wall time (with the imports, and torchrun's agent and rendezvous for the 2
ranks). The three run interleaved (A, B, C, A, ...), each in a fresh
output folder. Asserted: every run's per-epoch losses, counts, validation
recall, best epoch and test recall and ranks equal the 2-rank run's, bit
for bit, for the 1-thread process (the claim of repro.distributed); the
2-thread process's equality is reported (``same_results``), not asserted:
2 threads may round a convolution differently.

Runs: ``--quick``: the fake street of ``tests/train_fakes.py`` (40 64x64
database images, AlexNet + NetVLAD K=4), 1 epoch of one batch, once, the
2 ranks and the 1-thread process only (the bit-identity pair); otherwise
the default run's tiny synthetic city (124 training database images at
96x128, AlexNet + NetVLAD K=16 as ``TrainConfig.synthetic_default``), 2
epochs of 24 queries, validation on 30 queries, then the test split.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, interleaved, median, rows_for
from repro.cli import train_arguments
from repro.train import TrainConfig

# name -> (processes, torch threads per process)
RUNS = {"1_process_2_threads": (1, 2), "1_process_1_thread": (1, 1), "2_ranks_1_thread": (2, 1)}
REFERENCE = "1_process_2_threads"  # how one process uses this machine
# --quick: the pair of the bit-identity claim (a third command would add ~10-20 s to the unit test)
QUICK_RUNS = ["1_process_1_thread", "2_ranks_1_thread"]
TIMEOUT_S = 600  # a hung collective fails the benchmark instead of blocking it


def base_config(quick: bool, folder: Path) -> tuple[str, TrainConfig]:
    """(case name, the compared run's config); output paths are set per run."""
    if quick:
        from tests.train_fakes import make_fake_street, tiny_config

        street = make_fake_street(folder / "street")
        return "fake_street_64x64_1_batch", tiny_config(street, folder, epochs=1, queries_per_epoch=4)
    from repro.data.synthetic import default_city_root, make_synthetic_city

    city = make_synthetic_city(default_city_root("tiny", 0), preset="tiny", seed=0)
    return "tiny_city_96x128_2_epochs", TrainConfig.synthetic_default(
        data_root=str(city), epochs=2, queries_per_epoch=24, init_images=60, init_descriptors=5000, val_queries=30,
        eval_untrained=False, progress=False, verbose=False)


def launch(cfg: TrainConfig, processes: int, threads: int) -> tuple[float, dict]:
    """Run ``cfg`` as a command (under torchrun for more than one process); (command seconds, its record)."""
    command = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                   str(processes)] if processes > 1 else [])
    command += ["-m", "repro", *train_arguments(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # as the Makefile does for every command: spinning OpenMP threads made 2-thread runs several
    # times slower when another job held a core (1 thread per rank does not wait on others)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    record = json.loads(Path(cfg.record_path).read_text())
    assert (record["world_size"], record["torch_threads"]) == (processes, threads), \
        f"ran with {record['world_size']} process(es) of {record['torch_threads']} thread(s)"
    return seconds, record


def untimed(value):
    """``value`` (a record's part) without its wall times, which no two runs share."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def results(record: dict) -> dict:
    """What a run computed: every epoch's losses, counts and validation recall, the NetVLAD
    initialisation, the best epoch, the tests (recall, every query's rank)."""
    return untimed({k: record[k] for k in ("init", "epochs", "best_epoch", "test_untrained", "test", "test_whitened")})


def run(quick: bool = False, repeats: int | None = None, memory: bool = False) -> list[dict]:
    repeats = repeats or (1 if quick else 3)
    names = QUICK_RUNS if quick else list(RUNS)
    reference = REFERENCE if REFERENCE in names else names[0]
    with tempfile.TemporaryDirectory() as tmp:
        case, cfg = base_config(quick, Path(tmp))
        commands, records = {name: [] for name in names}, {name: [] for name in names}

        def one(name):
            def run_once():
                out = Path(tmp) / f"{name}_{len(records[name])}"
                seconds, record = launch(dataclasses.replace(cfg, out_dir=str(out / "run"),
                                                             record_path=str(out / "record.json")), *RUNS[name])
                commands[name].append(seconds)
                records[name].append(record)
                return record["wall_seconds"]
            return run_once

        # no warm-up round: every run is a fresh process anyway
        times = interleaved({name: one(name) for name in names}, repeats, warmup=0)
    ranks = results(records["2_ranks_1_thread"][0])
    assert ranks["epochs"][-1]["updates"] > 0, "no update: the comparison would be vacuous"
    same = {name: all(results(r) == ranks for r in rs) for name, rs in records.items()}
    assert same["2_ranks_1_thread"], "the 2-rank runs differ from each other"
    assert same["1_process_1_thread"], "2 ranks do not give the 1-thread process's results bit for bit"
    shape = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, queries_per_epoch=cfg.queries_per_epoch,
                 image_h=cfg.image_size[0], image_w=cfg.image_size[1], cpu_count=os.cpu_count(),
                 note="2 cores: overhead, not speed-up", omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    rows = rows_for("ddp", case, times, reference, shape)
    for r in rows:
        name = r["impl"]
        cmd = median(commands[name]) if r["repeat"] == "median" else commands[name][r["repeat"]]
        r.update(processes=RUNS[name][0], threads_per_process=RUNS[name][1], command_seconds=cmd,
                 same_results=same[name])
        if r["repeat"] == "median":  # against each single process: records' and whole commands' times
            for single in (n for n in names if RUNS[n][0] == 1):
                r[f"ratio_to_{single}"] = median(times[name]) / median(times[single])
                r[f"command_ratio_to_{single}"] = cmd / median(commands[single])
    two = next(r for r in rows if r["impl"] == "2_ranks_1_thread" and r["repeat"] == "median")
    print(f"ddp {case}: 2 ranks / 1 process, records' wall time (whole command): "
          + ", ".join(f"{n} {two[f'ratio_to_{n}']:.2f}x ({two[f'command_ratio_to_{n}']:.2f}x)"
                      for n in names if RUNS[n][0] == 1)
          + f"; results identical to 2 ranks: {same}", flush=True)
    return rows
