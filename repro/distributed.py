"""Several processes, one training run: torch.distributed under ``torchrun``.

    torchrun --nproc_per_node=4 -m repro train --profile paper --dataset pitts30k --data-root /data/pitts

``torchrun`` starts one process per GPU (rank) and sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` reads them and joins the
process group (NCCL between GPUs, gloo between CPU processes). Without
them (a plain ``python -m repro train``) nothing here does anything: a
:class:`Dist` of one process, and every helper returns its input.

What the ranks share (see :mod:`repro.train.trainer` for where):

* image extraction (cache refreshes, validation, test, the whitening fit)
  is dealt out in whole batches: each rank extracts a contiguous block of
  the batches (:func:`shard`) and the blocks are gathered on rank 0
  (:func:`gather_rows`);
* rank 0 alone holds the descriptor cache, mines hard negatives and sends
  the mined tuples to every rank (:func:`broadcast_object`); the tuples of
  a batch are dealt out across ranks, each rank computes its tuples'
  gradients, and one all-gather (:func:`all_gather_rows`) brings every
  tuple's gradient, loss and violating triplets to every rank, which add
  them up in tuple order: the authors' normalisation by the batch's
  violating triplets is the global one, and the sum is bit-identical to one
  process's (:func:`repro.train.loop._distributed_batch`);
* rank 0 alone writes checkpoints, records and logs.

Why not ``DistributedDataParallel``: its reducer expects every rank to run
the same number of backward passes per step, but here a rank may have no
violating tuple in a batch (no backward at all) or a different number of
tuples than another; and its all-reduce of per-rank sums adds the tuples'
gradients in another order than one process does. Gathering them by hand
is one collective per batch and cannot deadlock on an uneven batch.
"""
from __future__ import annotations

import datetime
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist

from repro.errors import ConfigError, ReproError

__all__ = ["Dist", "SINGLE", "RankFailedError", "all_gather_rows", "barrier", "broadcast_module",
           "block_sizes", "broadcast_object", "comm_device", "from_env", "gather_rows", "setup", "shard", "teardown"]


class RankFailedError(ReproError):
    """Another rank of a torchrun job stopped (killed, out of memory, a bug): this rank stops too."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: ``rank`` of ``world_size``;
    ``local_rank`` picks its GPU on a node; ``device``: what it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    local_world_size: int = 1  # ranks on this machine (they share its cores)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) as torchrun sets them; (0, 1, 0, 1) without it."""
    def get(name, default):
        value = os.environ.get(name, default)
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None

    return get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", 1)


def setup(device: torch.device, timeout_s: float = 1800.0) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (no-op for one process) and pick this rank's device.

    ``device``: the run's resolved device. CUDA ranks take ``cuda:LOCAL_RANK``
    and NCCL; CPU ranks gloo. ``timeout_s``: how long a collective waits for
    a rank that does not answer before every rank stops with an error
    (torchrun itself stops the job at once when a rank dies).
    """
    rank, world, local, local_world = from_env()
    if world <= 1:
        return SINGLE, device
    if device.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"rank {rank}: LOCAL_RANK={local} but this node has {torch.cuda.device_count()} "
                              "GPU(s); start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                      timeout=datetime.timedelta(seconds=timeout_s))
    _stop_cleanly_on_sigterm(rank)
    return Dist(rank, world, local, str(device), local_world), device


def teardown(dist: Dist) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _stop_cleanly_on_sigterm(rank: int) -> None:
    """torchrun sends SIGTERM to the other ranks when one dies: say so in one line (not a
    traceback from inside a collective) and exit with 128 + SIGTERM, as the default handler would."""
    def handler(signum, frame):
        print(f"[rank {rank}] stopped by torchrun: another rank of this job failed (its error is above, and "
              "torchrun's summary names it). Checkpoints are written by rank 0 after each epoch: rerun the "
              "same command with --resume to continue from the last complete epoch.", file=sys.stderr, flush=True)
        os._exit(128 + signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test harness): keep the default
        pass


def shard(n: int, dist: Dist, unit: int = 1) -> slice:
    """This rank's contiguous block of ``n`` items, in whole ``unit``-item batches.

    Extraction deals out its list of batches (``shard(len(batches), dist)``),
    so every image is computed in the same batch, with the same neighbours,
    as one process computes it: the gathered descriptors are bit-identical
    to one process's, whatever the number of ranks (convolution kernels may
    round differently for another batch composition). ``unit``: the same for
    a list of items cut into batches of ``unit``."""
    batches = -(-n // unit)
    first, last = batches * dist.rank // dist.world_size, batches * (dist.rank + 1) // dist.world_size
    return slice(min(first * unit, n), min(last * unit, n))


def comm_device(dist: Dist) -> torch.device:
    """Where collective tensors live: the rank's GPU under NCCL, the CPU under gloo."""
    return torch.device(dist.device) if torch.device(dist.device).type == "cuda" else torch.device("cpu")


# what gloo and NCCL say (in a plain RuntimeError, for gloo) when a peer died or went silent
_PEER_LOST = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "nccl error",
              "nccl communicator", "watchdog")


def _collective(what: str, fn, *args, **kwargs):
    """Run a collective; a peer that vanished becomes a :class:`RankFailedError` (one line, not
    a traceback from inside torch.distributed). Other errors are bugs and keep their traceback."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError, DistNetworkError are RuntimeErrors; gloo raises plain ones
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not (isinstance(exc, torch_dist.DistError) or any(k in message.lower() for k in _PEER_LOST)):
            raise
        raise RankFailedError(f"{what}: another rank of this torchrun job stopped or does not answer "
                              f"({message[:300]}). Its own error, and torchrun's summary, name it.") from None


GATHER_MIB = 256  # what one piece of gather_rows receives on each rank, at most (MiB)


def block_sizes(lengths, world_size: int) -> list[int]:
    """Rows of each rank's block when the batches of ``lengths`` rows each are dealt out by
    :func:`shard` (contiguous blocks of whole batches, rank order)."""
    lengths = list(lengths)
    return [sum(lengths[shard(len(lengths), Dist(r, world_size))]) for r in range(world_size)]


def gather_rows(local: np.ndarray, sizes: list[int], dist: Dist, sink=None) -> np.ndarray | None:
    """Every rank's block ``local`` ``[sizes[rank], D]``, in rank order, on rank 0: the
    ``[sum(sizes), D]`` float32 array, or with ``sink`` a call ``sink(offset, rows)`` per
    piece (its row offset in that array) and None. None on the other ranks; one process:
    ``local`` (or one ``sink(0, local)``). Sent in pieces of at most :data:`GATHER_MIB`
    received per rank, so a test split's 32768-D descriptors (Pitts250k: 11 GB) never sit
    whole on a GPU."""
    if not dist.enabled:
        if sink is None:
            return local
        sink(0, local)
        return None
    dev = comm_device(dist)
    width = local.shape[1]
    rows = max(1, int(GATHER_MIB * 2**20 // (4 * max(width, 1) * dist.world_size)))  # rows per rank per piece
    out = np.empty((sum(sizes), width), np.float32) if dist.is_main and sink is None else None
    write = sink or (lambda offset, block: out.__setitem__(slice(offset, offset + len(block)), block))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    for s in range(0, max(sizes, default=0), rows):  # every rank loops the same number of times
        buf = torch.zeros(min(rows, max(sizes) - s), width, dtype=torch.float32, device=dev)  # equal shapes
        mine = local[s:s + len(buf)]
        buf[:len(mine)] = torch.from_numpy(np.ascontiguousarray(mine, dtype=np.float32)).to(dev)
        parts = [torch.empty_like(buf) for _ in range(dist.world_size)]
        _collective("gathering descriptors", torch_dist.all_gather, parts, buf)
        if dist.is_main:
            for r, part in enumerate(parts):
                k = max(0, min(len(buf), sizes[r] - s))
                if k:
                    write(starts[r] + s, part[:k].cpu().numpy())
    return out


def all_gather_rows(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape everywhere, on :func:`comm_device`) stacked in rank
    order: ``[world_size, *tensor.shape]``. One process: ``tensor[None]``."""
    if not dist.enabled:
        return tensor[None]
    out = torch.empty((dist.world_size * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype,
                      device=tensor.device)  # the ranks' tensors one after the other along dim 0
    # all_gather_single: its newer name (torch 2.14 deprecates the other; older releases lack it)
    gather = getattr(torch_dist, "all_gather_single", None) or torch_dist.all_gather_into_tensor
    _collective("gathering gradients", gather, out, tensor.contiguous())
    return out.view(dist.world_size, *tensor.shape)


def broadcast_object(obj, dist: Dist):
    """Rank 0's ``obj`` on every rank (pickled by torch.distributed between this job's own
    processes: nothing from a file)."""
    if not dist.enabled:
        return obj
    box = [obj if dist.is_main else None]
    _collective("receiving rank 0's data", torch_dist.broadcast_object_list, box, src=0,
                device=comm_device(dist) if comm_device(dist).type == "cuda" else None)
    return box[0]


def broadcast_module(module: torch.nn.Module, dist: Dist) -> None:
    """Every parameter and buffer of ``module`` set to rank 0's values, in place."""
    if not dist.enabled:
        return
    dev = comm_device(dist)
    for t in module.state_dict().values():
        if not torch.is_tensor(t):
            continue
        moved = t.detach().to(dev)
        _collective("receiving rank 0's weights", torch_dist.broadcast, moved, src=0)
        if moved is not t:
            t.detach().copy_(moved)


def barrier(dist: Dist) -> None:
    if dist.enabled:
        _collective("waiting for the other ranks", torch_dist.barrier)
