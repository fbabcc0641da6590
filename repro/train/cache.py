"""The descriptor cache that hard-negative mining ranks with.

Mining needs descriptors of the query and of ~1000 candidate database images
per tuple; computing them with the current network each time would cost ~1000
forward passes per query. The authors instead keep descriptors of every
training query and database image from an earlier network ("the cache"),
recomputed every ``compFeatsFrequency`` = 1000 queries (the interval doubles
at each learning-rate halving) and at the end of each epoch. Same here
(the end-of-epoch refresh happens at the start of the next epoch, which is the
same network).

Storage: float32 while small; float16 (half the memory, plenty for ranking)
when the float32 estimate exceeds ``fp16_gb``; a memory-mapped ``.npy`` file
in the run folder when even that exceeds ``memmap_gb`` (Pitts250k with VGG-16
and K=64: 254k x 32768 x 2 bytes = 16.6 GB). The estimate is logged.

Everything here runs in the main process: a popular PyTorch port mines inside
DataLoader workers, whose copies of the cache never see the refreshes.
Under torchrun every rank extracts its block of the images at a refresh
and rank 0 alone holds the cache (``hold=False`` elsewhere) and mines.
"""
from __future__ import annotations

import numpy as np
import torch

from repro.data.loader import ImageStream, LoaderClock, consecutive_batches
from repro.distributed import SINGLE, Dist
from repro.evaluate import extract_batches, image_dataset
from repro.metrics import squared_norms

GB = 1024 ** 3


def cache_bytes(num_rows: int, dim: int, dtype: str) -> int:
    return int(num_rows) * int(dim) * np.dtype(dtype).itemsize


def _choose_dtype(num_rows: int, dim: int, dtype: str, fp16_gb: float) -> str:
    if dtype != "auto":
        return dtype
    return "float16" if cache_bytes(num_rows, dim, "float32") > fp16_gb * GB else "float32"


class DescriptorCache:
    """Descriptors ``db [N, D]`` and ``q [Q, D]`` of the training split.

    Args:
        num_db, num_q, dim: sizes.
        dtype: "float32", "float16" or "auto".
        fp16_gb, memmap_gb: thresholds (GiB) of the storage rules above.
        memmap_dir: folder for the memory-mapped files (needed above memmap_gb).
        log: a print-like function for the memory estimate, or None.
        hold: False on the ranks of a torchrun job other than rank 0: they
            extract their share at each refresh and store nothing.
    """

    def __init__(self, num_db: int, num_q: int, dim: int, dtype: str = "auto", fp16_gb: float = 1.0,
                 memmap_gb: float = 4.0, memmap_dir=None, log=None, hold: bool = True):
        self.dtype = _choose_dtype(num_db + num_q, dim, dtype, fp16_gb)
        self.nbytes = cache_bytes(num_db + num_q, dim, self.dtype)
        self.memmap = self.nbytes > memmap_gb * GB
        self.hold = hold
        self.num_db, self.num_q = int(num_db), int(num_q)
        self._stream = None  # (what it serves, ImageStream): built at the first refresh
        if self.memmap and memmap_dir is None:
            raise ValueError("a memory-mapped descriptor cache needs memmap_dir")
        if not hold:
            self.db = self.q = None
        elif self.memmap:
            memmap_dir.mkdir(parents=True, exist_ok=True)
            self.db = np.lib.format.open_memmap(memmap_dir / "cache_db.npy", "w+", self.dtype, (num_db, dim))
            self.q = np.lib.format.open_memmap(memmap_dir / "cache_q.npy", "w+", self.dtype, (num_q, dim))
        else:
            self.db = np.zeros((num_db, dim), self.dtype)
            self.q = np.zeros((num_q, dim), self.dtype)
        self.dim = int(dim)
        self.version = 0  # number of refreshes so far
        self._table = None  # (version, query -> table row or -1, [n, N] d2), see build_table
        if log and hold:
            where = f"memory-mapped in {memmap_dir}" if self.memmap else "in RAM"
            log(f"descriptor cache: {num_db} db + {num_q} query descriptors x {dim}-D {self.dtype} = "
                f"{self.nbytes / 2**20:.1f} MiB {where}")

    def summary(self) -> dict:
        return {"dtype": self.dtype, "mib": self.nbytes / 2**20, "memmap": self.memmap,
                "num_db": self.num_db, "num_q": self.num_q, "dim": self.dim}

    def refresh(self, model, db_paths, q_paths, image_size=None, batch_size: int = 32, device="cpu",
                num_workers: int = 0, dist: Dist = SINGLE, clock: LoaderClock | None = None) -> None:
        """Recompute every descriptor with ``model`` (eval mode, no whitening), written into the
        cache batch by batch. One :class:`repro.data.loader.ImageStream` over the split's
        images serves every refresh of a run (its workers persist). Batches of ``batch_size``
        database images, then of queries (a batch never mixes them: the batches of earlier
        versions, so the same images meet in the same batches). Under torchrun each rank
        extracts a block of the batches (``dist``)."""
        db_paths, q_paths = list(db_paths), list(q_paths)
        key = ([str(p) for p in db_paths + q_paths], tuple(image_size) if image_size else None, num_workers, str(device))
        if self._stream is None or self._stream[0] != key:
            dataset = image_dataset(db_paths + q_paths, image_size, uint8=True)
            self._stream = (key, ImageStream(dataset, num_workers, device, persistent=True))
        n_db = len(db_paths)
        batches = consecutive_batches(n_db, batch_size) + consecutive_batches(len(q_paths), batch_size, start=n_db)

        def store(offset: int, rows: np.ndarray) -> None:  # rows offset.. of [database; queries]
            for part, first in ((self.db, 0), (self.q, n_db)):
                lo, hi = max(offset, first), min(offset + len(rows), first + len(part))
                if lo < hi:
                    part[lo - first:hi - first] = rows[lo - offset:hi - offset]

        extract_batches(model, self._stream[1], batches, device, whiten=False, desc="cache refresh", dist=dist,
                        clock=clock, sink=store if self.hold else None)
        if self.memmap and self.hold:
            self.db.flush()
            self.q.flush()
        self.version += 1

    def query_rows(self, ids) -> torch.Tensor:
        """Cached descriptors of queries ``ids``, ``[B, D]`` float32."""
        return torch.from_numpy(np.asarray(self.q[np.asarray(ids)], dtype=np.float32))

    def build_table(self, query_ids, max_mib: float = 512.0, chunk: int = 4096) -> bool:
        """Precompute ``d2`` of queries ``query_ids`` to the whole database.

        Why: between refreshes the cache does not change, so each query's
        distances are fixed; one matrix product ``[n, D] x [D, N]`` reads
        every database row once for all n queries, where per-batch ranking
        gathers ~1000 candidate rows per query (memory-bound). Mining then
        only looks the candidates up. Returns False (no table) when the
        ``[n, N]`` float32 table would exceed ``max_mib``. Valid until the next
        :meth:`refresh` (which bumps ``version``; code writing ``db``/``q``
        directly must not keep using a table built before).
        """
        ids = np.unique(np.asarray(query_ids, dtype=np.int64))
        if len(ids) * self.db.shape[0] * 4 > max_mib * 2**20:
            return False
        q = self.query_rows(ids)
        table = torch.empty(len(ids), self.db.shape[0])
        q_sq = q.pow(2).sum(1, keepdim=True)
        for s in range(0, self.db.shape[0], chunk):
            _fill_squared_distances(q, q_sq, np.asarray(self.db[s:s + chunk], dtype=np.float32), table[:, s:s + chunk])
        table.clamp_(min=0)
        row_of = np.full(self.q.shape[0], -1, np.int64)
        row_of[ids] = np.arange(len(ids))
        self._table = (self.version, row_of, table)
        return True

    def table_covers(self, query_ids) -> bool:
        """Whether a table built since the last refresh holds all of ``query_ids``."""
        if self._table is None or self._table[0] != self.version:
            return False
        return bool(np.all(self._table[1][np.asarray(query_ids, dtype=np.int64)] >= 0))

    def candidate_distances(self, query_ids, db_idx: torch.Tensor) -> torch.Tensor:
        """``d2[b, c] = |q[query_ids[b]] - db[db_idx[b, c]]|^2``; ``inf`` where ``db_idx`` is -1.

        From the table when it covers the queries (:meth:`build_table`), else
        by :meth:`squared_distances` on gathered rows. Both compute
        |q|^2 + |x|^2 - 2 q.x in float32 (they may differ in the last bits).
        """
        if not self.table_covers(query_ids):
            return self.squared_distances(self.query_rows(query_ids), db_idx)
        _, row_of, table = self._table
        rows = row_of[np.asarray(query_ids, dtype=np.int64)]
        idx = db_idx.numpy()
        # numpy fancy indexing picks the [B, C] entries directly (no [B, N] row copies)
        d2 = np.where(idx >= 0, table.numpy()[rows[:, None], np.maximum(idx, 0)], np.float32(np.inf))
        return torch.from_numpy(d2)

    def squared_distances(self, q: torch.Tensor, db_idx: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """``d2[b, c] = |q[b] - db[db_idx[b, c]]|^2``; ``inf`` where ``db_idx`` is -1 (padding).

        Vectorised over the whole batch: the distinct indices are gathered
        once (in chunks, bounding memory to ``chunk`` rows) and compared with
        every query by one matrix product, |q|^2 + |x|^2 - 2 q.x.
        """
        q = q.float()
        valid = db_idx >= 0
        uniq, inv = torch.unique(db_idx.clamp(min=0), return_inverse=True)
        out = torch.empty(q.shape[0], len(uniq))
        q_sq = q.pow(2).sum(1, keepdim=True)
        uniq_np = uniq.numpy()
        for s in range(0, len(uniq), chunk):
            _fill_squared_distances(q, q_sq, np.asarray(self.db[uniq_np[s:s + chunk]], dtype=np.float32),
                               out[:, s:s + chunk])
        d2 = out.gather(1, inv.view_as(db_idx)).clamp_(min=0)
        return torch.where(valid, d2, torch.full_like(d2, float("inf")))


def _fill_squared_distances(q: torch.Tensor, q_sq: torch.Tensor, rows: np.ndarray, out: torch.Tensor) -> None:
    """``out[b, j] = |q[b]|^2 + |rows[j]|^2 - 2 q[b].rows[j]`` (float32) by one
    product written straight into ``out`` (no [B, chunk] temporary per term)."""
    rows = torch.from_numpy(rows)
    torch.addmm(q_sq + squared_norms(rows)[None], q, rows.T, beta=1.0, alpha=-2.0, out=out)
