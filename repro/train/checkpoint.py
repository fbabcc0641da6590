"""Training checkpoints, written atomically.

``last.pt`` (overwritten every epoch) holds everything a resumed run needs to
continue exactly as if it had never stopped: model, optimiser, scheduler,
the miner's per-query hard-negative cache, RNG states, config and the
metrics so far. ``best.pt`` holds the model of the best epoch so far, in the
format of :func:`repro.model.load_model` (``config`` + ``state_dict``).

The descriptor cache is not stored (hundreds of MB to GB on real data): it is
recomputed from the saved model when a run resumes, which gives the same
values because every epoch starts with a refresh anyway.

Atomicity: ``torch.save`` goes to a temporary file in the same folder, which
is flushed to disk and then renamed over the target. A crash or error at any
point leaves the previous checkpoint untouched (and the temporary file is
removed when Python still runs).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from repro.atomic import atomic_torch_save  # noqa: F401  (re-exported)
from repro.errors import WeightsError


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy_global": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy_global"])
    random.setstate(states["python"])


def load_training_checkpoint(path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable training checkpoint ({exc}); delete it to start afresh, "
                           "or pass resume=False") from None
