"""The image streams that feed the network: DataLoaders with workers, pinned memory and prefetching.

Every image the trainer and the evaluation read goes through an
:class:`ImageStream`: cache refreshes, validation, test, the whitening fit
(:func:`repro.evaluate.extract_batches`) and the training tuples
(:class:`repro.train.loop.TupleImages`). With ``num_workers`` > 0 the JPEG
decoding and resizing run in that many worker processes, ``prefetch``
batches ahead each; on CUDA the batches come in page-locked (pinned) memory
so the copy to the GPU overlaps the compute. A training run keeps two
streams over its training images for the whole run (one for the cache
refreshes, one for the tuples), their worker processes alive between
passes (``persistent``): a pass only says which images come next, so the
~8 refreshes and ~8 tuple intervals of a Pitts30k epoch start no processes. Items are 8-bit images: a
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
from torch.utils.data import DataLoader, Sampler

from repro.data.images import same_size_groups
from repro.errors import ConfigError

MAX_AUTO_WORKERS = 16

__all__ = ["MAX_AUTO_WORKERS", "ImageStream", "LoaderClock", "check_workers", "collate_groups", "collate_tuple",
           "consecutive_batches", "resolve_workers"]


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


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory, as torch's own
    ``default_collate`` does, so the batch is not copied again to reach the main process."""
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate_groups(items) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Collate ``(image [3, H, W], index)`` items into one stacked tensor per image size:
    ``[(images [g, 3, H, W], positions [g])]`` with each image's position in the batch, in
    order of first appearance (one group for a dataset of one image size, e.g. Pittsburgh's
    640x480). Stacked here, in the worker, so the pinned copy is the batch itself."""
    groups = same_size_groups([img for img, _ in items])
    return [(_stack([items[j][0] for j in js]), np.array(js, dtype=np.int64)) for js in groups]


def collate_tuple(items):
    """One training tuple's images in order (query, positives, negatives): ``[n, 3, H, W]``, or a
    list of ``[3, H, W]`` when they differ in size."""
    ims = [img for img, _ in items]
    return _stack(ims) if all(im.shape == ims[0].shape for im in ims) else ims


def consecutive_batches(n: int, batch_size: int, start: int = 0) -> list[list[int]]:
    """``[[start, ..., start + batch_size - 1], ...]`` covering ``start .. start + n - 1``."""
    return [list(range(start + s, start + min(s + batch_size, n))) for s in range(0, n, batch_size)]


class _Batches(Sampler):
    """A batch sampler whose batches are set before each pass (the loader's workers stay)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageStream:
    """Batches of a dataset's images, in the order asked for, through one DataLoader.

    Args:
        dataset: items ``(image, index)`` (:class:`repro.data.images.ImageListDataset`).
        num_workers: worker processes decoding (0: in this process).
        device: where the batches go (CUDA: pinned memory).
        prefetch: batches each worker prepares ahead.
        collate_fn: :func:`collate_groups` (extraction) or :func:`collate_tuple` (training).
        persistent: keep the worker processes between passes (a stream used many times).
    """

    def __init__(self, dataset, num_workers: int, device, collate_fn=collate_groups, prefetch: int = 2,
                 persistent: bool = False):
        self._batches = _Batches()
        kw = dict(num_workers=int(num_workers), pin_memory=torch.device(device).type == "cuda",
                  persistent_workers=bool(persistent and num_workers > 0))
        if num_workers > 0:
            kw["prefetch_factor"] = int(prefetch)
        self.loader = DataLoader(dataset, batch_sampler=self._batches, collate_fn=collate_fn, **kw)

    def batches(self, batches, clock: "LoaderClock | None" = None):
        """Iterate the collated ``batches`` (lists of dataset indices), in order. A pass left
        unfinished is dropped when the next one starts (the workers are then asked for the new list)."""
        self._batches.batches = [list(b) for b in batches]
        return (clock or LoaderClock()).iterate(self.loader)


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
