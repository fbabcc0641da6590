"""One training epoch: mine, forward, Eq. 7, backward, SGD step.

Follows the authors' ``trainWeakly.m`` batch loop:

* the epoch's queries are visited in a random order, ``batch_size`` (4) at a
  time; a last incomplete batch is dropped (authors: ``floor(numQueries /
  batchSize)`` batches);
* before batch b (b > 0) the descriptor cache is refreshed when b is a
  multiple of ``refresh_batches`` (``ceil(cache_refresh / batch_size)``,
  doubled at each learning-rate halving by the caller);
* mining (:mod:`.mining`) happens after each refresh, for all the batches
  before the next one;
* each mined tuple (query, positive(s), violating negatives) is forwarded as
  one small batch of images with the current network and its Eq. 7 loss
  back-propagated; gradients add up over the tuples of the batch;
* the summed gradient is divided by the number of triplets that violate the
  margin in the current descriptors (``thisBatchSize`` in the authors' code),
  unless ``loss_normalization="none"``; a batch with none makes no update;
* the reported loss of an epoch is the mean over visited queries of the
  per-tuple loss, skipped queries counting 0 (authors' ``obj.train.loss``).

Forwarding tuple by tuple (at most 1 + 1 + 10 images) bounds memory to one
tuple's activations, as the authors' per-tuple forward/backward does.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from tqdm.std import tqdm

from repro.data.images import normalize_images
from repro.data.loader import ImageStream, LoaderClock, collate_tuple, resolve_workers
from repro.distributed import SINGLE, Dist, all_gather_rows, broadcast_object, comm_device
from repro.errors import ReproError, explain_out_of_memory
from repro.evaluate import image_dataset
from repro.loss import triplet_ranking_loss
from repro.train.mining import HardNegativeMiner, MinedTuple


class NonFiniteLossError(ReproError):
    """The training loss became NaN or infinite."""


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A plain-text tqdm bar (never a notebook widget): under papermill or a
    pipe it prints a line at most every 30 s, in a terminal every second."""
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, mininterval=1.0 if tty else 30.0,
                ascii=not tty, dynamic_ncols=tty, leave=tty)


class TupleImages:
    """The images of mined tuples: query first, then positives, then negatives (8-bit, normalised
    on the device by :func:`forward_images`), through one :class:`repro.data.loader.ImageStream`
    over the split's queries and database whose workers persist for the run."""

    def __init__(self, split, image_size=None):
        self.num_q = split.num_q
        self.images = image_dataset(list(split.q_paths) + list(split.db_paths), image_size, uint8=True)
        self._stream = None  # ((num_workers, device), ImageStream), built at first use

    def indices(self, t: MinedTuple) -> list[int]:
        """``t``'s images as indices into :attr:`images` (queries, then the database)."""
        return [t.query] + [self.num_q + int(i) for i in t.positives] + [self.num_q + int(i) for i in t.negatives]

    def load(self, t: MinedTuple) -> list[torch.Tensor]:
        """``t``'s images ``[3, H, W]`` uint8, read here (no workers)."""
        return [self.images[i][0] for i in self.indices(t)]

    def stream(self, tuples: list[MinedTuple], num_workers: int = 0, device="cpu", clock: LoaderClock | None = None):
        """The tuples' images, one tuple at a time (``[n, 3, H, W]`` uint8, or a list when sizes
        differ), decoded ahead by ``num_workers`` processes while the network trains."""
        key = (int(num_workers), str(device))
        if self._stream is None or self._stream[0] != key:
            self._stream = (key, ImageStream(self.images, num_workers, device, collate_fn=collate_tuple,
                                             persistent=True))
        return self._stream[1].batches([self.indices(t) for t in tuples], clock)


def forward_images(model, ims, device) -> torch.Tensor:
    """Descriptors ``[n, D]`` of one tuple's 8-bit images: a ``[n, 3, H, W]`` tensor (one
    batch) or a list of ``[3, H, W]`` of different sizes (one at a time)."""
    if torch.is_tensor(ims):
        return model(normalize_images(ims.to(device, non_blocking=True)))
    return torch.cat([model(normalize_images(im[None].to(device))) for im in ims])


def tuple_loss(desc: torch.Tensor, num_pos: int, margin: float,
               exclude_very_hard: bool = False) -> tuple[torch.Tensor, int]:
    """Eq. 7 for one tuple's descriptors [query, positives..., negatives...],
    and how many of its triplets violate the margin now. With
    ``exclude_very_hard`` negatives now closer than the positive are masked
    out (authors: no gradient for them)."""
    q, pos, neg = desc[:1], desc[1:1 + num_pos][None], desc[1 + num_pos:][None]
    with torch.no_grad():
        d2_pos = (pos[0] - q).pow(2).sum(1).min()
        d2_neg = (neg[0] - q).pow(2).sum(1)
        violating = d2_neg < d2_pos + margin
        keep = d2_neg >= d2_pos if exclude_very_hard else torch.ones_like(violating)
    loss = triplet_ranking_loss(q, pos, neg, margin=margin, reduction="sum",
                                neg_mask=keep[None] if exclude_very_hard else None)
    return loss, int((violating & keep).sum())


def _tuple_oom(t: MinedTuple, n: int, ims, cfg):
    shape = ims.shape[-2:] if torch.is_tensor(ims) else ims[0].shape[-2:]
    return explain_out_of_memory(
        f"training on a tuple of {n} images of {shape[0]}x{shape[1]} (query {t.query})",
        f"num_hard_negatives (--num-hard-negatives, now {cfg.num_hard_negatives}; the tuple is 1 query + "
        f"{cfg.num_positives} positive(s) + up to that many negatives, forwarded together whatever the batch "
        "size) or image_size (--image-size H W)")


def train_epoch(model, optimizer, miner: HardNegativeMiner, cache, split, images: TupleImages, order: np.ndarray,
                epoch: int, rng: np.random.Generator, cfg, device, refresh_batches: int, callback=None,
                dist: Dist = SINGLE, num_workers: int | None = None, batch_size: int | None = None) -> dict:
    """Train on the queries ``order`` (indices into ``split``'s queries), in that order.

    Returns the epoch's statistics. ``callback(epoch, batch, stats)`` runs
    after every batch (tests use it to interrupt a run). ``num_workers``:
    the resolved worker count (default: ``cfg.num_workers`` resolved for ``device``);
    ``batch_size``: tuples per update (default ``cfg.batch_size``; a
    torchrun job with more ranks than that passes one tuple per rank).

    Under torchrun (``dist``) rank 0 mines and sends the tuples to every
    rank; tuple i of a batch is rank ``i % world_size``'s; see
    :func:`_reduce_batch` for how the gradients are added up.
    """
    start = time.perf_counter()
    batch_size = batch_size or cfg.batch_size
    workers = num_workers if num_workers is not None else resolve_workers(cfg.num_workers, device)
    num_batches = len(order) // batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    stats = dict(epoch=epoch, num_batches=num_batches, queries=0, skipped=0, tuples=0, violating_mined=0,
                 violating_now=0, loss_sum=0.0, updates=0, cache_refreshes=0, tuple_images=0)
    clock, refresh_seconds = LoaderClock(), 0.0
    model.train()
    bar = progress_bar(num_batches, f"epoch {epoch}", cfg.progress and dist.is_main)
    for b in range(num_batches):
        if b > 0 and b % refresh_batches == 0:
            t0 = time.perf_counter()
            cache.refresh(model, split.db_paths, split.q_paths, cfg.image_size, cfg.eval_batch_size, device,
                          workers, dist=dist, clock=clock)
            refresh_seconds += time.perf_counter() - t0
            model.train()
            stats["cache_refreshes"] += 1
        if b % refresh_batches == 0:
            # the batches before the next refresh: one distance table, mined
            # together (same tuples and draws as batch by batch: the cache is
            # fixed until then, and each query comes once per epoch)
            batches = [order[i * batch_size:(i + 1) * batch_size]
                       for i in range(b, min(b + refresh_batches, num_batches))]
            if dist.is_main:
                miner.plan(cache, order[b * batch_size:(b + refresh_batches) * batch_size])
                mined_ahead = miner.mine_batches(cache, batches, rng)
            mined_ahead = broadcast_object(mined_ahead if dist.is_main else None, dist)
            # this rank's tuples of those batches, decoded ahead by the loader's workers
            stream = images.stream([t for m in mined_ahead for t in m.tuples[dist.rank::dist.world_size]],
                                   workers, device, clock)
        query_ids = order[b * batch_size:(b + 1) * batch_size]
        mined = mined_ahead[b % refresh_batches]
        stats["queries"] += len(query_ids)
        stats["skipped"] += len(mined.skipped)
        stats["violating_mined"] += mined.num_violating
        optimizer.zero_grad(set_to_none=True)
        if dist.enabled:
            batch_violating = _distributed_batch(model, params, mined, stream, epoch, b, cfg, device, dist, stats)
        else:
            batch_violating = 0
            for t in mined.tuples:
                batch = next(stream)
                n = len(batch)
                stats["tuple_images"] += n  # forward and backward (for repro.report.costs' count)
                with _tuple_oom(t, n, batch, cfg):
                    desc = forward_images(model, batch, device)
                    loss, num_violating = tuple_loss(desc, len(t.positives), cfg.margin, cfg.exclude_very_hard)
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(f"the training loss is {loss.item()} at epoch {epoch}, batch {b + 1} "
                                                 f"(query {t.query})")
                    if num_violating:
                        loss.backward()
                stats["loss_sum"] += loss.detach().item()
                batch_violating += num_violating
        stats["tuples"] += len(mined.tuples)
        stats["violating_now"] += batch_violating
        if batch_violating:
            if cfg.loss_normalization == "violating":
                for p in params:
                    if p.grad is not None:
                        p.grad.div_(batch_violating)
            optimizer.step()
            stats["updates"] += 1
        bar.update(1)
        if stats["queries"]:
            bar.set_postfix(loss=f"{stats['loss_sum'] / stats['queries']:.4f}", refresh=False)
        if callback is not None:
            callback(epoch, b, stats)
    bar.close()
    stats["loss"] = stats["loss_sum"] / stats["queries"] if stats["queries"] else math.nan
    stats["seconds"] = time.perf_counter() - start
    stats["refresh_seconds"] = refresh_seconds  # the refreshes inside the epoch (not the one before it)
    stats["loader_wait_seconds"] = clock.wait  # waiting for decoded images: tuples and those refreshes
    return stats


def _distributed_batch(model, params, mined, stream, epoch: int, b: int, cfg, device, dist: Dist, stats) -> int:
    """One batch under torchrun: this rank's tuples forward and backward, then
    every tuple's gradient, loss and counts gathered in one all-gather and
    added up in tuple order; returns the batch's violating triplets.

    Each rank keeps the gradient of each of its tuples apart (one row per
    tuple), and every rank adds the rows in the batch's tuple order, as one
    process accumulates them backward after backward: the gradients, the
    losses and so the weights are bit-identical to one process's with the
    same batch (given the same per-tuple arithmetic, e.g. the same hardware).
    It sends a row per tuple (the batch's tuples x parameters, twice what an
    all-reduce of one sum per rank sends) for that exactness.
    """
    tuples = mined.tuples
    mine = list(range(dist.rank, len(tuples), dist.world_size))
    rows = -(-len(tuples) // dist.world_size)  # the most tuples any rank has
    sizes = [p.numel() for p in params]
    width = sum(sizes)
    # per tuple: gradient, then loss, violating triplets, images, finite flag
    buf = torch.zeros(max(rows, 1), width + 4, dtype=torch.float32, device=comm_device(dist))
    for j, i in enumerate(mine):
        t = tuples[i]
        batch = next(stream)
        with _tuple_oom(t, len(batch), batch, cfg):
            desc = forward_images(model, batch, device)
            loss, num_violating = tuple_loss(desc, len(t.positives), cfg.margin, cfg.exclude_very_hard)
            finite = bool(torch.isfinite(loss))
            if finite and num_violating:
                loss.backward()
        buf[j, width:] = torch.tensor([loss.detach().item(), num_violating, len(batch), float(finite)])
        if finite and num_violating:
            torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                       for p in params], out=buf[j, :width])
            for p in params:
                p.grad = None
        if not finite:
            break  # one process would stop here; the others learn it from the gathered flags
    gathered = all_gather_rows(buf, dist)  # [world, rows, width + 4]
    violating = 0
    for i, t in enumerate(tuples):
        row = gathered[i % dist.world_size, i // dist.world_size]
        loss_value, num_violating, n, finite = row[width:].tolist()
        if not finite:
            raise NonFiniteLossError(f"the training loss is {loss_value} at epoch {epoch}, batch {b + 1} "
                                     f"(query {t.query})")
        stats["tuple_images"] += int(n)
        stats["loss_sum"] += loss_value
        violating += int(num_violating)
        if num_violating:
            grads = row[:width].to(params[0].device).split(sizes)
            for p, g in zip(params, grads):
                g = g.view_as(p)
                # the first tuple's gradient is taken as it is, later ones added: autograd's accumulation
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad += g
    return violating
