"""Training checkpoints, written atomically.

``last.pt`` (overwritten every epoch) holds everything a resumed run needs to
continue exactly as if it had never stopped: model, optimiser, scheduler,
the miner's per-query hard-negative cache, RNG states, config and the
metrics so far. ``best.pt`` holds the model of the best epoch so far, in the
format of :func:`repro.model.load_model` (``config`` + ``state_dict``).

The descriptor cache is not stored (hundreds of MB to GB on real data): it is
recomputed from the saved model when a run resumes, which gives the same
values because every epoch starts with a refresh anyway.

Every value in them is a tensor, number, string, list, tuple or dict, so
they load with ``torch.load(weights_only=True)`` (:mod:`repro.safe_load`):
a downloaded checkpoint cannot run code.

Atomicity: ``torch.save`` goes to a temporary file in the same folder, which
is flushed to disk and then renamed over the target. A crash or error at any
point leaves the previous checkpoint untouched (and the temporary file is
removed when Python still runs).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from repro.atomic import atomic_torch_save  # noqa: F401  (re-exported)
from repro.safe_load import load_torch_file


def rng_states() -> dict:
    """The global RNG states as tensors, numbers and tuples (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy_global": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                             "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np_state = states["numpy_global"]
    if isinstance(np_state, dict):
        np_state = (np_state["kind"], np.asarray(np_state["keys"], dtype=np.int64).astype(np.uint32),
                    np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(np_state)  # a tuple: checkpoints written before the tensor format
    random.setstate(states["python"])


def load_training_checkpoint(path) -> dict:
    """``last.pt``, read with ``weights_only=True``: no code in the file runs.
    Checkpoints of earlier repro versions (numpy arrays inside) load too."""
    return load_torch_file(path, "training checkpoint",
                           hint="delete it to start afresh, or pass resume=False")
