"""Training under torchrun on CPU (gloo ranks): the same run as one process, bit for bit; more ranks than the
batch scale it; a killed rank stops the job with a clear message, and --resume under torchrun continues to the
uninterrupted run's results."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.cli import build_parser, train_arguments, train_config_from_args
from repro.distributed import SINGLE, Dist, block_sizes, gather_rows, shard
from repro.train import train
from train_fakes import comparable, tiny_config, untimed

pytestmark = [pytest.mark.filterwarnings("ignore:.*randomly initialised"), pytest.mark.usefixtures("one_thread")]

TESTS = Path(__file__).resolve().parent
# the bit-identity test's run: NetVLAD with every stage (untrained test, 3 epochs, whitening)
RUN = dict(epochs=3, eval_untrained=True, whiten_dim=8, whiten_fit_images=40)
TIMEOUT = 300  # s: a hang fails the test instead of the CI job


def torchrun(nproc: int, *args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC ARGS``, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=TESTS.parent)


def train_command(cfg, *extra) -> list[str]:
    """``python -m repro train`` with the options of ``cfg``."""
    return ["-m", "repro", *train_arguments(cfg), *extra]


def record(cfg) -> dict:
    return json.loads(Path(cfg.record_path).read_text())


def same_results(a: dict, b: dict) -> None:
    """Two training records describe the same run: every epoch's loss, counts and validation recall, the
    tests (untrained, trained, whitened: recall and every query's rank), bit for bit."""
    assert comparable(a["epochs"]) == comparable(b["epochs"])
    assert a["best_epoch"] == b["best_epoch"] and a["init"] == b["init"]
    for key in ("test_untrained", "test", "test_whitened"):
        assert (a[key] is None) == (b[key] is None), key
        if a[key] is not None:
            assert untimed(a[key]) == untimed(b[key]), key


def same_weights(dir_a: Path, dir_b: Path) -> None:
    for name in ("best.pt", "best_whitened.pt"):
        sa = torch.load(dir_a / name, weights_only=True)["state_dict"]
        sb = torch.load(dir_b / name, weights_only=True)["state_dict"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    la, lb = (torch.load(d / "last.pt", weights_only=True) for d in (dir_a, dir_b))
    assert all(torch.equal(la["model"][k], lb["model"][k]) for k in la["model"])
    assert la["miner"]["neg_cache"].keys() == lb["miner"]["neg_cache"].keys()
    assert all(torch.equal(la["miner"]["neg_cache"][q], lb["miner"]["neg_cache"][q]) for q in la["miner"]["neg_cache"])


@pytest.fixture(scope="module")
def one_process(street, tmp_path_factory):
    """The reference: one process, batch of 4 tuples."""
    from train_fakes import single_thread

    before = single_thread()
    out = tmp_path_factory.mktemp("one")
    cfg = tiny_config(street, out, **RUN)
    result = train(cfg)
    torch.set_num_threads(before)
    # the comparison is not vacuous: training moved the weights and the recall of the untrained model
    assert result.history[-1]["updates"] > 0
    return cfg, record(cfg)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("n,unit,world", [(0, 4, 2), (1, 4, 3), (10, 4, 2), (10, 4, 3), (17, 5, 4), (100, 32, 3),
                                          (7, 1, 7), (5, 2, 8)])
def test_shards_are_whole_batches_covering_every_item_once(n, unit, world):
    blocks = [shard(n, Dist(r, world), unit) for r in range(world)]
    covered = [i for b in blocks for i in range(n)[b]]
    assert covered == list(range(n))  # in order, each once
    for b in blocks:
        assert b.start % unit == 0 and (b.stop % unit == 0 or b.stop == n)
    batches = [-(-(b.stop - b.start) // unit) for b in blocks]
    assert max(batches) - min(batches) <= 1  # the batches are dealt out evenly


def test_one_process_gathers_its_own_rows():
    rows = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert gather_rows(rows, [5], SINGLE) is rows
    seen = []
    assert gather_rows(rows, [5], SINGLE, sink=lambda offset, block: seen.append((offset, block))) is None
    assert seen[0][0] == 0 and seen[0][1] is rows
    assert shard(5, SINGLE, 2) == slice(0, 5)
    assert block_sizes([4, 4, 4, 3], 2) == [8, 7] and block_sizes([4, 1], 3) == [0, 4, 1]


def test_train_arguments_give_back_the_config(tmp_path):
    cfg = tiny_config(tmp_path / "street", tmp_path, num_workers="auto", precision="bf16", tf32=True, resume=True,
                      test_on=("tokyo247:/data/tokyo247",), image_size=None, alpha=12.5, dist_timeout_s=60.0)
    assert train_config_from_args(build_parser().parse_args(train_arguments(cfg))) == cfg


def test_nproc_per_node_must_be_positive(tmp_path, street, capsys):
    from repro.cli import main

    assert main(train_arguments(tiny_config(street, tmp_path)) + ["--nproc-per-node", "0"]) == 2
    assert "--nproc-per-node must be at least 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_two_ranks_train_bit_identically_to_one_process(street, one_process, tmp_path):
    cfg_one, rec_one = one_process
    cfg = tiny_config(street, tmp_path, **RUN)
    run = torchrun(2, *train_command(cfg))
    assert run.returncode == 0, run.stderr[-3000:]
    rec = record(cfg)
    assert rec["world_size"] == 2 and rec["batch_size_global"] == 4 and rec["status"] == "complete"
    same_results(rec, rec_one)
    same_weights(Path(cfg.out_dir), Path(cfg_one.out_dir))
    assert run.stdout.count("wrote ") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_more_ranks_than_tuples_in_a_batch_make_the_batch_larger(street, tmp_path):
    """3 ranks with batch_size 2: one tuple per rank, a batch of 3; the same as one process with batch_size 3."""
    three = tiny_config(street, tmp_path / "three", **{**RUN, "whiten_dim": None}, batch_size=2)
    run = torchrun(3, *train_command(three))
    assert run.returncode == 0, run.stderr[-3000:]
    one = tiny_config(street, tmp_path / "one", **{**RUN, "whiten_dim": None}, batch_size=3)
    train(one)
    rec = record(three)
    assert rec["batch_size_global"] == 3 and rec["epochs"][1]["num_batches"] == 12 // 3
    same_results(rec, record(one))


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_resume_under_torchrun_continues(street, one_process, tmp_path):
    cfg_one, rec_one = one_process
    cfg = tiny_config(street, tmp_path, **RUN)
    start = time.monotonic()
    run = torchrun(2, TESTS / "dist_worker.py", json.dumps(cfg.to_dict()), "--kill-rank", "1", "--kill-at", 2, 1,
                   timeout=TIMEOUT)
    assert run.returncode != 0 and time.monotonic() - start < TIMEOUT  # stopped, no hang
    # rank 0 says what happened and where to resume; torchrun names the killed rank
    assert "another rank of this torchrun job stopped" in run.stderr or "stopped by torchrun" in run.stderr
    assert "SIGKILL" in run.stderr
    assert torch.load(Path(cfg.out_dir) / "last.pt", weights_only=True)["epoch"] == 1
    assert record(cfg)["status"] == "running"

    resumed = tiny_config(street, tmp_path, **RUN, resume=True)
    run = subprocess.run([sys.executable, *train_command(resumed, "--verbose", "--nproc-per-node", "2")],
                         capture_output=True,
                         text=True, timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=TESTS.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torchrun --standalone --nproc_per_node=2" in run.stderr
    assert "resuming from" in run.stdout and "epoch 2/3" in run.stdout and "epoch 1/3" not in run.stdout
    same_results(record(resumed), rec_one)
    same_weights(Path(cfg.out_dir), Path(cfg_one.out_dir))


def test_pipeline_train_commands_give_each_runs_config(capsys):
    """``python -m repro.pipeline --train-commands N``: one command per training run, which parses back to
    exactly the config the notebook would train with (so the pipeline reuses the record it writes)."""
    import shlex

    from repro.report.pipeline import main, train_commands
    from repro.report.profiles import load_profile, plan, with_defaults
    from repro.report.training import planned_train_configs

    planned = [cfg for run in plan(load_profile("default")) if not run.missing()
               for cfg in planned_train_configs(run.notebook, with_defaults(run.notebook, run.abs_params))]
    lines = [line for line in train_commands("default", 2) if not line.startswith("#")]  # "#": a skipped run
    assert len(planned) >= 2 and len(lines) == len(planned)
    for line, cfg in zip(lines, planned):
        words = shlex.split(line)
        assert words[:4] == ["python", "-m", "repro", "train"] and words[-2:] == ["--nproc-per-node", "2"]
        args = build_parser().parse_args(words[3:])
        assert args.nproc_per_node == 2 and train_config_from_args(args) == cfg
    assert main(["--profile", "default", "--train-commands", "--only", "02_train"]) == 0
    out = [line for line in capsys.readouterr().out.strip().splitlines() if not line.startswith("#")]
    assert len(out) >= 2 and out == [line.removesuffix(" --nproc-per-node 2") for line in lines][:len(out)]


def _gather_worker(rank: int, world: int, store: str, n: int, unit: int, width: int, out: str):
    import repro.distributed as d

    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    d.GATHER_MIB = 4 * width * 3 * world / 2**20  # pieces of 3 rows per rank: several pieces, a ragged last one
    dist = Dist(rank, world)
    rows = np.arange(n * width, dtype=np.float32).reshape(n, width)  # the rows every rank "extracted"
    batches = [min(unit, n - s) for s in range(0, n, unit)]  # rows per batch
    got = d.gather_rows(rows[shard(n, dist, unit)], d.block_sizes(batches, world), dist)
    pieces = []
    d.gather_rows(rows[shard(n, dist, unit)], d.block_sizes(batches, world), dist,
                  sink=lambda offset, block: pieces.append((offset, block.copy())))
    if rank == 0:  # the same rows through a sink, each piece at its offset
        whole = np.zeros_like(rows)
        for offset, block in pieces:
            whole[offset:offset + len(block)] = block
        sizes = d.block_sizes(batches, world)  # pieces of 3 rows per rank, a piece for each rank's rows
        assert np.array_equal(whole, rows) and len(pieces) == sum(-(-k // 3) for k in sizes)
    obj = d.broadcast_object({"from": rank}, dist)
    if rank == 0:
        np.save(out, got)
        assert obj == {"from": 0}
    else:
        assert got is None and obj == {"from": 0}
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("n,unit,world", [(23, 4, 2), (2, 4, 3)])  # ragged pieces; ranks with no rows
def test_gather_rows_in_pieces_across_ranks(tmp_path, n, unit, world):
    """Blocks of whole batches, gathered in pieces (the piece size forced small), land in order on rank 0."""
    out = tmp_path / "got.npy"
    torch.multiprocessing.spawn(_gather_worker, args=(world, str(tmp_path / "store"), n, unit, 5, str(out)),
                                nprocs=world)
    assert np.array_equal(np.load(out), np.arange(n * 5, dtype=np.float32).reshape(n, 5))
