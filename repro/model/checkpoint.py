"""Saving and loading a :class:`PlaceModel` with the config that rebuilds it."""
from __future__ import annotations

import warnings
from pathlib import Path

from repro.atomic import atomic_torch_save
from repro.errors import WeightsError
from repro.safe_load import load_torch_file


def save_model(path, model, extra: dict | None = None) -> None:
    """Write ``{"config", "state_dict", **extra}`` atomically (temp file + rename)."""
    atomic_torch_save({"config": model.config, "state_dict": model.state_dict(), **(extra or {})}, path)


def load_model(path, map_location="cpu"):
    """Rebuild a model saved by :func:`save_model` (or a training checkpoint
    holding ``config`` and ``state_dict``/``model``)."""
    from repro.model.place_model import build_model

    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint", map_location)  # no code from the file runs
    state = ckpt.get("state_dict", ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or "config" not in ckpt or not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a checkpoint with 'config' and 'state_dict' (written by repro)")
    with warnings.catch_warnings():  # the weights come from the checkpoint
        warnings.simplefilter("ignore")
        model = build_model(weights=None, **ckpt["config"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: state dict does not fit its config ({exc})") from None
    return model
