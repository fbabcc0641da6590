"""Weakly supervised training of NetVLAD / f_max (paper Sec. 4), as in the authors' code.

    from repro.train import TrainConfig, train
    result = train(TrainConfig.synthetic_default())       # ~5 min on 2 CPU cores
    result.test["recall"], result.test_untrained["recall"]

One idea per module: :mod:`.config` (every setting), :mod:`.tuples` (GPS ->
potential positives and negatives), :mod:`.cache` (descriptor cache),
:mod:`.mining` (hard negatives), :mod:`.loop` (one epoch), :mod:`.checkpoint`
(atomic checkpoints), :mod:`.trainer` (the run).
Command line: ``python -m repro train --help``.
"""
from repro.train.cache import DescriptorCache
from repro.train.checkpoint import atomic_torch_save
from repro.train.config import TrainConfig
from repro.train.loop import NonFiniteLossError
from repro.train.mining import HardNegativeMiner, MinedTuple, MiningResult
from repro.train.trainer import TrainResult, train
from repro.train.tuples import TrainingTuples, build_tuples

__all__ = [
    "DescriptorCache", "HardNegativeMiner", "MinedTuple", "MiningResult", "NonFiniteLossError", "TrainConfig",
    "TrainResult", "TrainingTuples", "atomic_torch_save", "build_tuples", "train",
]
