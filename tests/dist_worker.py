"""A training run for ``tests/test_distributed.py``, started by torchrun: ``train(TrainConfig.from_dict(JSON))``,
where the rank ``--kill-rank`` kills itself (SIGKILL, as the kernel's out-of-memory killer or a lost node
would) after batch ``--kill-at EPOCH BATCH``."""
import argparse
import json
import os
import signal
import warnings

import torch

from repro.train import TrainConfig, train

parser = argparse.ArgumentParser()
parser.add_argument("config", help="a TrainConfig as JSON")
parser.add_argument("--kill-rank", type=int, default=None)
parser.add_argument("--kill-at", type=int, nargs=2, default=None, metavar=("EPOCH", "BATCH"))
args = parser.parse_args()
torch.set_num_threads(1)


def kill(epoch, batch, stats):
    if int(os.environ["RANK"]) == args.kill_rank and [epoch, batch] == args.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    train(TrainConfig.from_dict(json.loads(args.config)), callback=kill if args.kill_at else None)
