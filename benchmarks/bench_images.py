"""Image loading: decoded images kept in RAM (``keep_decoded_images``) against
decoding every time.

Training reads the same images again and again (every mined tuple's ~12
images, every cache refresh, every validation); the profile of the default
training (``profile_default.csv``) put PNG decoding and the tensor copy at
about 17% of the run. ``TrainConfig.image_memory_gb`` keeps the decoded,
resized 8-bit images of a run in RAM.

Case: the images of a synthetic city (real renders, PNG, 120x160, resized to
the default run's 96x128), loaded one by one through ``ImageListDataset``
as training does. ``decode``: every read decodes the file; ``kept``: the same
reads inside ``keep_decoded_images`` after one untimed pass that filled it.
Seconds are per 1000 images; the tensors are asserted identical.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved, rows_for, timed
from repro.data.images import ImageListDataset, keep_decoded_images
from repro.data.synthetic import make_synthetic_city

IMAGE_SIZE = (96, 128)


def city_images(folder: Path, preset: str, limit: int) -> list[Path]:
    root = make_synthetic_city(folder / preset, preset=preset, seed=0)
    return sorted((root / "database").rglob("*.png"))[:limit]


def run(quick: bool = False, repeats: int | None = None, memory: bool = True) -> list[dict]:
    preset, limit = ("tiny", 60) if quick else ("tiny", 400)
    with tempfile.TemporaryDirectory() as tmp:
        paths = city_images(Path(tmp), preset, limit)
        ds = ImageListDataset(paths, image_size=IMAGE_SIZE)

        def read_all():
            return [ds[i][0] for i in range(len(ds))]

        reference = read_all()
        with keep_decoded_images(2**31) as kept:
            first = read_all()  # fills the memory; untimed
            assert all(torch.equal(a, b) for a, b in zip(reference, first)), "kept images differ"

            def kept_fn():
                return timed(read_all)

            def decode_fn():
                with keep_decoded_images(0):  # nothing kept inside: every read decodes
                    return timed(read_all)

            times = interleaved({"kept": kept_fn, "decode": decode_fn}, repeats or (3 if quick else 7))
            assert kept.hits >= len(paths)
        shape = dict(images=len(paths), image_h=IMAGE_SIZE[0], image_w=IMAGE_SIZE[1], source=f"synthetic {preset} "
                     "city database PNGs (120x160)", unit="s per 1000 images", kept_mib=kept.nbytes / 2**20)
    rows = rows_for("images", f"synthetic_png_{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}", times, "decode", shape,
                    per=1000.0 / len(paths))
    med = {i: sorted(t)[len(t) // 2] * 1000.0 / len(paths) for i, t in times.items()}
    print(f"images: s/1000 images decode {med['decode']:.3f}, kept {med['kept']:.3f} "
          f"({med['decode'] / med['kept']:.1f}x)", flush=True)
    return rows
