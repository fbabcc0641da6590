"""cProfile of the default profile's costliest stage: one ``repro.train.train``
call of ``TrainConfig.synthetic_default()`` (02_train's NetVLAD run), with
checkpoints and its record in a temporary folder (never results/).

``before``: the NetVLAD layer's op-by-op autograd definition
(``NetVLAD.forward_autograd``) and mining without the distance table, i.e.
the code before issue 6; ``after``: the code as it is. Each variant runs in
its own subprocess; writes ``results/benchmarks/profile_default.csv`` (per
variant: wall seconds, then the named stages and the top functions by own
time, seconds and share of the wall time).

    python -m benchmarks.run_all --only profile     # both variants, ~8 min on 2 cores
    python -m benchmarks.profile_train after /tmp/after.pstats   # one variant
"""
from __future__ import annotations

import cProfile
import pstats
import subprocess
import sys
import tempfile
import time

from benchmarks import common
from benchmarks.common import ROOT, write_csv

# (label, file suffix, function name) of the stages named in the report
STAGES = [
    ("train() total", "repro/train/trainer.py", "train"),
    ("training epochs (train_epoch)", "repro/train/loop.py", "train_epoch"),
    ("descriptor cache refresh", "repro/train/cache.py", "refresh"),
    ("hard-negative mining", "repro/train/mining.py", "mine"),
    ("tuple image loading", "repro/train/loop.py", "load"),
    ("backward passes", "torch/_tensor.py", "backward"),
    ("evaluation (val/test)", "repro/evaluate.py", "evaluate_split"),
    ("descriptor extraction (all)", "repro/evaluate.py", "extract_descriptors"),
    ("NetVLAD initialisation", "repro/evaluate.py", "init_netvlad_from_images"),
    ("conv layers forward", "torch/nn/modules/conv.py", "_conv_forward"),
    ("NetVLAD forward", "repro/model/netvlad.py", "forward"),
    ("image decoding (PIL)", "PIL/Image.py", "open"),
]


def profile_once(variant: str, pstats_path: str) -> float:
    """Run train() under cProfile (this process); returns wall seconds."""
    from repro.model.netvlad import NetVLAD
    from repro.train import TrainConfig, train
    from repro.train.mining import HardNegativeMiner

    if variant == "before":
        NetVLAD.forward = NetVLAD.forward_autograd
        HardNegativeMiner.plan = lambda self, cache, ids: False  # no distance table: gather per batch
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.synthetic_default(out_dir=f"{tmp}/out", record_path=f"{tmp}/record.json")
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.enable()
        train(cfg)
        pr.disable()
        wall = time.perf_counter() - t
    pr.dump_stats(pstats_path)
    return wall


def summarise(variant: str, pstats_path: str, wall: float, top: int = 15) -> list[dict]:
    st = pstats.Stats(pstats_path).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    rows = [dict(benchmark="profile", case="train_synthetic_default", impl=variant, repeat="", seconds=wall,
                 kind="wall", function="(wall time of train())", share=1.0)]
    for label, suffix, name in STAGES:
        cum = max((v[3] for (f, _, n), v in st.items() if n == name and f.endswith(suffix)), default=None)
        if cum is not None:
            rows.append(dict(rows[0], kind="stage", function=label, seconds=cum, share=cum / wall))
    for (f, line, name), v in sorted(st.items(), key=lambda kv: -kv[1][2])[:top]:
        short = f.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        rows.append(dict(rows[0], kind="self", function=f"{short}:{line}({name})", seconds=v[2], share=v[2] / wall))
    return rows


def run(quick: bool = False, variants=("before", "after")) -> list[dict]:
    if quick:
        print("profile: skipped with --quick (a full training run)")
        return []
    rows = []
    for variant in variants:
        path = f"{tempfile.gettempdir()}/profile_{variant}.pstats"
        out = subprocess.run([sys.executable, "-m", "benchmarks.profile_train", variant, path], cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"profile {variant} failed:\n{out.stderr[-3000:]}")
        wall = float([ln for ln in out.stdout.splitlines() if ln.startswith("WALL ")][-1].split()[1])
        rows += summarise(variant, path, wall)
        print(f"profile {variant}: train() {wall:.0f} s", flush=True)
    write_csv(rows, "profile_default")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "summarise":  # summarise VARIANT PSTATS (wall from the stats)
        _v, _p = sys.argv[2], sys.argv[3]
        _wall = max(v[3] for (f, _, n), v in pstats.Stats(_p).stats.items() if n == "train")
        common.set_results_dir(ROOT / "results" / "benchmarks")
        print(summarise(_v, _p, _wall)[:20])
    else:
        print(f"WALL {profile_once(sys.argv[1], sys.argv[2])}")
