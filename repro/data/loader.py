"""The image streams that feed the network: DataLoaders with workers, pinned memory and prefetching.

Every image the trainer and the evaluation read goes through
:func:`image_loader`: cache refreshes, validation, test, the whitening fit
(:func:`repro.evaluate.extract_descriptors`) and the training tuples
(:class:`repro.train.loop.TupleStream`). With ``num_workers`` > 0 the JPEG
decoding and resizing run in that many worker processes, ``prefetch``
batches ahead each; on CUDA the batches come in page-locked (pinned) memory
so the copy to the GPU overlaps the compute. Items are 8-bit images: a
quarter of the bytes of float32 to copy and pin, normalised on the device
by :func:`repro.data.images.normalize_images` (bit-identical to normalising
on the CPU, so results do not depend on the worker count: tested).

``num_workers="auto"``: 0 on a CPU (the network already has every core;
workers would take them from it, and one process keeps the run's decoded
images in RAM, ``image_memory_gb``), and on CUDA this process's share of
the machine's cores less one for the main process (each rank of a torchrun
job gets its share), at most :data:`MAX_AUTO_WORKERS`.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from repro.errors import ConfigError

MAX_AUTO_WORKERS = 16

__all__ = ["MAX_AUTO_WORKERS", "LoaderClock", "check_workers", "collate_groups", "image_loader", "resolve_workers"]


def check_workers(num_workers) -> int | str:
    """An integer >= 0 or "auto"; ConfigError otherwise."""
    if num_workers == "auto":
        return num_workers
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers={num_workers!r}: must be an integer >= 0 (DataLoader worker processes) "
                          "or 'auto' (0 on a CPU; on CUDA this process's share of the cores, less one)")
    return num_workers


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(num_workers, device, processes_per_node: int = 1) -> int:
    """``num_workers`` as a number for ``device`` ("auto": see the module docstring)."""
    check_workers(num_workers)
    if num_workers != "auto":
        return int(num_workers)
    if torch.device(device).type != "cuda":
        return 0
    share = usable_cores() // max(1, processes_per_node)
    return max(1, min(MAX_AUTO_WORKERS, share - 1))


def collate_groups(items) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Collate ``(image [3, H, W], index)`` items into one stacked tensor per image size:
    ``[(images [g, 3, H, W], indices [g])]``, in order of first appearance (one group
    for a dataset of one image size, e.g. Pittsburgh's 640x480). Stacked here, in the
    worker, so the pinned copy is the batch itself."""
    groups: dict[tuple, list[int]] = {}
    for j, (img, _) in enumerate(items):
        groups.setdefault(tuple(img.shape), []).append(j)
    return [(torch.stack([items[j][0] for j in js]), np.array([items[j][1] for j in js], dtype=np.int64))
            for js in groups.values()]


def image_loader(dataset, batch_size: int | None, num_workers: int, device, collate_fn=collate_groups,
                 prefetch: int = 2) -> DataLoader:
    """A DataLoader over ``dataset`` in order (no shuffling): ``num_workers`` processes,
    ``prefetch`` batches ahead per worker, pinned memory on CUDA. ``batch_size=None``:
    each item is already a batch (the training tuples)."""
    kw = dict(num_workers=int(num_workers), pin_memory=torch.device(device).type == "cuda", shuffle=False)
    if num_workers > 0:
        kw["prefetch_factor"] = int(prefetch)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, **kw)


class LoaderClock:
    """Seconds spent waiting for the next batch of a loader (``wait``), and batches read.

    The trainer and the extraction read a result back to the CPU after each
    tuple or batch (``loss.item()``, ``.cpu()``), which waits for the GPU;
    so the time then spent waiting for the next batch is time the GPU sat
    idle for want of data: the data path's stall.
    """

    def __init__(self):
        self.wait = 0.0
        self.batches = 0

    def iterate(self, loader):
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.wait += time.perf_counter() - t0
            self.batches += 1
            yield batch
