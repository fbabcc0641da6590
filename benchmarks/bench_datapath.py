"""The training data path on 480x640 JPEGs: DataLoader workers, and 8-bit
images against the old float32 ones.

At the paper's scale every image the trainer reads (cache refreshes,
validation, test, the whitening fit, the training tuples) is a Pittsburgh
640x480 JPEG, decoded on the CPU; a GPU consumes them faster than one core
decodes them, so the question for a GPU machine is how many cores it takes
to feed it. This measures the CPU side, no network:

* ``workers``: ``ImageListDataset(paths, None, uint8=True)`` through
  ``repro.data.loader.ImageStream(batch_size=8, device="cpu")``, as
  :func:`repro.evaluate.extract_descriptors` reads them, every batch of
  every image, with ``num_workers`` 0 (decoding in this process) against 2
  (two worker processes; each pass starts its workers, as every refresh,
  validation and test of a training run does, so the start-up is in the
  time: ``first_batch_s`` is its part). Besides wall time, ``cpu_seconds``:
  the CPU time of this process and its workers, from which
  ``images_per_cpu_s`` = images per fully used core. With 0 workers (one
  process, one torch thread) that is the rate of one core; with 2 it also
  pays the hand-over between processes. A GPU machine needs about N /
  ``images_per_cpu_s`` cores to decode N images/s. The CPU time does not
  depend on other jobs taking cores from the workers; the wall time does
  (the 1-minute load average is in the rows).
* ``uint8_vs_float``: the cost per image of the uint8 path (what workers
  hand over since issue 16; normalised where the network runs) and of the
  uint8 path normalised here on the CPU (``normalize_images``), against
  the old float path (``ImageListDataset(uint8=False)``: ``to_tensor``
  normalises each image on the CPU), all with 0 workers. The uint8 batch is
  a quarter of the bytes to pin and copy to a GPU (``bytes_per_image``).

Images: every JPEG of a Pittsburgh-layout synthetic city
(``make_layout_city``, 480x640, kept in ``cache/benchmarks/`` so reruns do
not render it again; ``--quick``: 60x80 in a temporary folder), each read
``READS_PER_FILE`` times a pass. The files sit in the
page cache: this is decoding, not disk reads. Asserted
first: the batches with 0 and 2 workers are identical, and
``normalize_images`` of the uint8 batches equals the float path bit for bit.
Torch runs on one thread here (restored after), so that "0 workers" is one
core; the 2-worker rate is for the whole 2-core machine (workers and the
main process share it).
"""
from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, interleaved, median, rows_for
from repro.data.images import ImageListDataset, normalize_images
from repro.data.loader import ImageStream, consecutive_batches
from repro.data.synthetic import make_layout_city

BATCH_SIZE = 8  # the eval batch of the rehearsal and of benchmarks/gpu_check.py
WORKERS = 2     # this machine's cores
READS_PER_FILE = 4  # a pass of ~700 reads: the workers' start-up weighs little, as in a refresh of thousands
CITY_DIR = ROOT / "cache" / "benchmarks" / "datapath"


def city_jpegs(folder: Path, quick: bool) -> list[Path]:
    """Every JPEG of a small Pittsburgh-layout city (all splits: database and query views)."""
    size = (60, 80) if quick else (480, 640)
    root = make_layout_city(folder / f"pittsburgh_{size[0]}x{size[1]}", "pittsburgh", preset="tiny", seed=0,
                            places=2, query_places=2, views_per_query_place=2 if quick else 4,
                            views_per_place=4 if quick else None, image_size=size)
    return sorted(root.rglob("*.jpg"))


def stream(dataset, num_workers: int, first_batch: list | None = None):
    """The (images, indices) groups of ``dataset`` through the trainer's loader; ``first_batch``
    collects the seconds until the first batch arrived (the workers' start-up)."""
    t0 = time.perf_counter()
    # one pass, its workers started and joined in it (so getrusage counts their CPU time); the
    # trainer's streams keep theirs between passes (persistent), which only saves the start-up
    passes = ImageStream(dataset, num_workers, "cpu").batches(consecutive_batches(len(dataset), BATCH_SIZE))
    for i, batch in enumerate(passes):
        if first_batch is not None and i == 0:
            first_batch.append(time.perf_counter() - t0)
        yield from batch


def read_all(dataset, num_workers: int) -> list[tuple[torch.Tensor, object]]:
    return list(stream(dataset, num_workers))


def drain(dataset, num_workers: int, first_batch: list | None = None, then=None) -> None:
    """Read every batch and let it go, as extraction does (``then``: applied to each image batch)."""
    for images, _ in stream(dataset, num_workers, first_batch):
        if then is not None:
            then(images)


def check_same(uint8_groups, other_groups, normalize: bool = False) -> None:
    """The same images in the same order (``normalize``: the uint8 ones normalised, bit for bit)."""
    assert len(uint8_groups) == len(other_groups)
    for (a, ia), (b, ib) in zip(uint8_groups, other_groups):
        assert (ia == ib).all(), "image order differs"
        if normalize:
            assert a.dtype == torch.uint8 and b.dtype == torch.float32
            assert torch.equal(normalize_images(a), b), "normalize_images(uint8) differs from the float path"
        else:
            assert torch.equal(a, b), "images differ between worker counts"


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = city_jpegs(Path(tmp) if quick else CITY_DIR, quick)
            rows = _measure(files, READS_PER_FILE, repeats or (2 if quick else 3))
    finally:
        torch.set_num_threads(threads)
    return rows


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the loader's workers, once joined);
    getrusage counts microseconds (os.times 10 ms ticks, a sizeable part of a --quick pass)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(files: list[Path], reads: int, repeats: int) -> list[dict]:
    reference = read_all(ImageListDataset(files, None, uint8=True), 0)
    check_same(reference, read_all(ImageListDataset(files, None, uint8=True), WORKERS))
    check_same(reference, read_all(ImageListDataset(files, None, uint8=False), 0), normalize=True)
    h, w = reference[0][0].shape[-2:]
    paths = files * reads
    uint8 = ImageListDataset(paths, None, uint8=True)
    floats = ImageListDataset(paths, None, uint8=False)
    cpu, first_batch = {}, []

    def clocked(name, f, *args):
        """``f(*args)``'s wall seconds (returned) and CPU seconds (kept in ``cpu[name]``): on this
        shared machine other jobs can take a core from the workers, which the wall time shows and
        the CPU time does not."""
        def run_once():
            c0, t0 = cpu_seconds(), time.perf_counter()
            f(*args)
            wall = time.perf_counter() - t0
            cpu.setdefault(name, []).append(cpu_seconds() - c0)
            return wall
        return run_once

    load_before = os.getloadavg()[0]
    times = interleaved({"workers_0": clocked("workers_0", drain, uint8, 0),
                         f"workers_{WORKERS}": clocked(f"workers_{WORKERS}", drain, uint8, WORKERS, first_batch),
                         "uint8_normalized_cpu": clocked("uint8_normalized_cpu", drain, uint8, 0, None,
                                                         normalize_images),
                         "float": clocked("float", drain, floats, 0)},
                        repeats, warmup=0)  # the checks above were the warm-up: every file read, workers started
    n = len(paths)
    steady = [(n - BATCH_SIZE) / (t - f) for t, f in zip(times[f"workers_{WORKERS}"], first_batch)]
    shape = dict(images=n, files=len(files), image_h=int(h), image_w=int(w), batch_size=BATCH_SIZE, torch_threads=1,
                 source=f"synthetic Pittsburgh-layout city, JPEG {h}x{w}", unit="s per 1000 images",
                 load_1min_before=load_before, load_1min_after=os.getloadavg()[0])
    per = 1000.0 / n
    by_case = {"workers": ["workers_0", f"workers_{WORKERS}"],
               "uint8_vs_float": ["float", "workers_0", "uint8_normalized_cpu"]}
    rows = []
    for case, impls in by_case.items():
        case_rows = rows_for("datapath", f"{case}_jpeg_{h}x{w}", {i: times[i] for i in impls}, impls[0], shape,
                             per=per)
        for r in case_rows:
            c = cpu[r["impl"]]
            r["cpu_seconds"] = (median(c) if r["repeat"] == "median" else c[r["repeat"]]) * per
            r["images_per_s"] = 1000.0 / r["seconds"]
            r["images_per_cpu_s"] = 1000.0 / r["cpu_seconds"]  # images/s per fully used core
            r["bytes_per_image"] = 3 * h * w * (4 if r["impl"] == "float" else 1)
            if r["impl"] == f"workers_{WORKERS}":  # the workers' start-up (every pass pays it), and the rate after
                pick = median if r["repeat"] == "median" else (lambda xs: xs[r["repeat"]])
                r["first_batch_s"] = pick(first_batch)
                r["images_per_s_after_first_batch"] = pick(steady)
            if r["impl"] == "workers_0" and case == "uint8_vs_float":
                r["impl"] = "uint8"
        rows += case_rows
    med = {r["impl"]: r for r in rows if r["repeat"] == "median"}
    w0, w2 = med["workers_0"], med[f"workers_{WORKERS}"]
    print(f"datapath {h}x{w} JPEG, {n} images (load {load_before:.1f}): images/s {w0['images_per_s']:.0f} with 0 "
          f"workers, {w2['images_per_s']:.0f} with {WORKERS}; per CPU-second {w0['images_per_cpu_s']:.0f} and "
          f"{w2['images_per_cpu_s']:.0f}; ms per image: float {med['float']['seconds']:.2f}, uint8 "
          f"{med['uint8']['seconds']:.2f}, uint8 normalised on the CPU {med['uint8_normalized_cpu']['seconds']:.2f}",
          flush=True)
    return rows
