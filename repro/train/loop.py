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

from repro.errors import ReproError
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
    """Loads the images of a mined tuple: query first, then positives, then negatives."""

    def __init__(self, split, image_size=None):
        self.queries = image_dataset(split.q_paths, image_size)
        self.database = image_dataset(split.db_paths, image_size)

    def load(self, t: MinedTuple) -> list[torch.Tensor]:
        ims = [self.queries[t.query][0]]
        ims += [self.database[int(i)][0] for i in t.positives]
        ims += [self.database[int(i)][0] for i in t.negatives]
        return ims


def forward_images(model, ims: list[torch.Tensor], device) -> torch.Tensor:
    """Descriptors ``[n, D]`` of a list of images (one batch when they share a size)."""
    if all(im.shape == ims[0].shape for im in ims):
        return model(torch.stack(ims).to(device))
    return torch.cat([model(im[None].to(device)) for im in ims])


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


def train_epoch(model, optimizer, miner: HardNegativeMiner, cache, split, images: TupleImages, order: np.ndarray,
                epoch: int, rng: np.random.Generator, cfg, device, refresh_batches: int, callback=None) -> dict:
    """Train on the queries ``order`` (indices into ``split``'s queries), in that order.

    Returns the epoch's statistics. ``callback(epoch, batch, stats)`` runs
    after every batch (tests use it to interrupt a run).
    """
    start = time.perf_counter()
    num_batches = len(order) // cfg.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    stats = dict(epoch=epoch, num_batches=num_batches, queries=0, skipped=0, tuples=0, violating_mined=0,
                 violating_now=0, loss_sum=0.0, updates=0, cache_refreshes=0, tuple_images=0)
    model.train()
    bar = progress_bar(num_batches, f"epoch {epoch}", cfg.progress)
    for b in range(num_batches):
        if b > 0 and b % refresh_batches == 0:
            cache.refresh(model, split.db_paths, split.q_paths, cfg.image_size, cfg.eval_batch_size, device,
                          cfg.num_workers)
            model.train()
            stats["cache_refreshes"] += 1
        if b % refresh_batches == 0:
            # the batches before the next refresh: one distance table, mined
            # together (same tuples and draws as batch by batch: the cache is
            # fixed until then, and each query comes once per epoch)
            batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                       for i in range(b, min(b + refresh_batches, num_batches))]
            miner.plan(cache, order[b * cfg.batch_size:(b + refresh_batches) * cfg.batch_size])
            mined_ahead = miner.mine_batches(cache, batches, rng)
        query_ids = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        mined = mined_ahead[b % refresh_batches]
        stats["queries"] += len(query_ids)
        stats["skipped"] += len(mined.skipped)
        stats["violating_mined"] += mined.num_violating
        optimizer.zero_grad(set_to_none=True)
        batch_violating = 0
        for t in mined.tuples:
            batch = images.load(t)
            stats["tuple_images"] += len(batch)  # forward and backward (for repro.report.costs' count)
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
    return stats
