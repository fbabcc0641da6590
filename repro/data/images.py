"""Image loading for the CNN and a fast sanity check of image lists.

Images become float32 tensors [3, H, W] in ImageNet statistics (the VGG16 /
AlexNet backbones were pretrained that way; Nanne/pytorch-NetVlad uses the
same mean/std). Every input is first brought to 8-bit RGB:

* grayscale ('L', '1', 'P', ...) -> replicated to 3 channels;
* RGBA / LA -> alpha dropped, colour kept as stored (what MATLAB ``imread``,
  used by the authors, returns; street-view images are opaque anyway);
* 16-bit ('I;16*') and 32-bit integer ('I') -> scaled linearly so 0..65535
  maps to 0..255 (a plain ``convert('RGB')`` would clip everything above 255
  to white). 'I' images whose values leave 0..65535, and float 'F' images,
  are min-max scaled to 0..255.

EXIF orientation is ignored, as MATLAB ``imread`` does.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from repro.errors import ConfigError, DatasetError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DecodedImages", "ImageListDataset", "check_images", "collate_images",
           "keep_decoded_images", "load_rgb8", "normalize_images", "same_size_groups", "to_rgb8", "to_tensor"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _rescale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map lo..hi -> 0..255, rounded to uint8."""
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.rint((arr.astype(np.float64) - lo) * scale).astype(np.uint8)


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit 'RGB' (rules in the module docstring)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            gray = _rescale(arr, 0, 65535)
        elif img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            # Pillow may open 16-bit PNG/TIFF as 'I'; keep the 16-bit scale.
            gray = _rescale(arr, 0, 65535)
        else:
            gray = _rescale(arr, float(arr.min()), float(arr.max())) if arr.size else arr.astype(np.uint8)
        gray_img = Image.fromarray(np.ascontiguousarray(gray))  # uint8 [H, W] -> mode "L"
        return gray_img.convert("RGB")
    # 'L', '1', 'P', 'RGBA', 'LA', 'CMYK', 'YCbCr', ...: Pillow's conversion
    # is exact for these (alpha is dropped, palettes are looked up).
    return img.convert("RGB")


def load_rgb8(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as 8-bit RGB; DatasetError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb8(img)
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's truncated/corrupt errors
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def to_tensor(img: Image.Image | np.ndarray, normalize: bool = True) -> torch.Tensor:
    """8-bit RGB PIL image (or its uint8 [H, W, 3] array) -> float32 [3, H, W]; values in 0..1, then
    ``(x - IMAGENET_MEAN) / IMAGENET_STD`` when ``normalize``."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        x = (x - mean) / std
    return x


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[..., 3, H, W]`` -> float32, ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.

    The same float32 operations as :func:`to_tensor`, element for element
    (IEEE division and subtraction are exactly rounded on every device), so
    the result is bit-identical to it. Why it exists: a DataLoader can then
    hand over 8-bit images (a quarter of the bytes to copy and pin) and the
    normalisation runs where the network does, on the GPU.
    """
    x = images.to(torch.float32)  # a new tensor: the in-place steps below touch no input
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)  # in place: the same values, no temporaries


class DecodedImages:
    """Decoded (and resized) 8-bit images kept in RAM: ``(path, size) -> uint8 [H, W, 3]``.

    Why: training decodes the same few thousand PNG/JPEG files again at every
    cache refresh, every validation and for every mined tuple; on the
    synthetic default, decoding and resizing were about 14% of a training
    run (``results/benchmarks/profile_default.csv``). Images are added until
    ``max_bytes`` is reached, then further ones are decoded each time (no
    eviction: deterministic, and a full-size Pittsburgh run simply keeps the
    first ones). Tensors made from a kept image are bit-identical to freshly
    decoded ones.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._images: dict[tuple, np.ndarray] = {}

    def get(self, key) -> np.ndarray | None:
        arr = self._images.get(key)
        if arr is None:
            self.misses += 1
        else:
            self.hits += 1
        return arr

    def put(self, key, arr: np.ndarray) -> None:
        if self.nbytes + arr.nbytes <= self.max_bytes:
            arr.setflags(write=False)
            self._images[key] = arr
            self.nbytes += arr.nbytes


_KEPT: DecodedImages | None = None  # set by keep_decoded_images()


@contextmanager
def keep_decoded_images(max_bytes: int):
    """Within this block, every :class:`ImageListDataset` read in this process
    keeps its decoded images in one :class:`DecodedImages` (yielded), up to
    ``max_bytes``; ``max_bytes <= 0`` keeps none. DataLoader worker processes
    never keep images (their copies would not be shared)."""
    global _KEPT
    previous = _KEPT
    _KEPT = DecodedImages(max_bytes) if max_bytes > 0 else None
    try:
        yield _KEPT
    finally:
        _KEPT = previous


class ImageListDataset(Dataset):
    """A list of image files as a torch Dataset.

    Args:
        paths: image files.
        image_size: None keeps each image's size (batch size 1 then, or
            same-size images); (H, W) resizes with bilinear interpolation,
            ignoring aspect ratio.
        normalize: apply ImageNet mean/std (else values are in 0..1).
        uint8: items are the 8-bit images ``[3, H, W]`` uint8 (``normalize``
            does not apply; :func:`normalize_images` later gives exactly
            the float tensor of the default).

    Item ``i`` is ``(tensor [3, H, W] float32, i)``.
    """

    def __init__(self, paths, image_size: tuple[int, int] | None = None, normalize: bool = True,
                 uint8: bool = False):
        self.paths = [Path(p) for p in paths]
        if image_size is not None:
            if len(image_size) != 2 or any(int(s) != s or s <= 0 for s in image_size):
                raise ConfigError(f"image_size must be None or (height, width) positive integers, got {image_size!r}")
            image_size = (int(image_size[0]), int(image_size[1]))
        self.image_size = image_size
        self.normalize = normalize
        self.uint8 = uint8

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        kept = _KEPT if torch.utils.data.get_worker_info() is None else None
        key = (str(self.paths[i]), self.image_size)
        arr = kept.get(key) if kept is not None else None
        if arr is None:
            img = load_rgb8(self.paths[i])
            if self.image_size is not None:
                h, w = self.image_size
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
            if kept is not None:
                kept.put(key, arr)
        if self.uint8:
            return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), i  # a writable copy
        return to_tensor(arr, self.normalize), i


def collate_images(items):
    """DataLoader collate that does not stack, so images of mixed native
    sizes can share a batch: ``([tensor [3, H_i, W_i]], int64 index array)``."""
    return [img for img, _ in items], np.array([i for _, i in items], dtype=np.int64)


def same_size_groups(images) -> list[list[int]]:
    """Positions in ``images`` grouped by tensor shape (each group stackable)."""
    groups: dict[tuple, list[int]] = {}
    for j, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(j)
    return list(groups.values())


def _examples(items, n: int = 5) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# What a complete file of these formats ends with (PNG: the IEND chunk; JPEG:
# the EOI marker, possibly followed by a little padding).
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TAIL = 64


def _looks_complete(path: Path, fmt: str | None) -> bool:
    """Whether a PNG/JPEG file ends as a complete one does (other formats: True)."""
    if fmt not in ("PNG", "JPEG", "MPO"):
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL))
        tail = f.read()
    return tail.endswith(_PNG_END) if fmt == "PNG" else _JPEG_END in tail


def _inspect(path: Path, level: str) -> tuple[str | None, tuple[int, int] | None]:
    """(error message or None, (width, height) or None) for one image.

    level "header": open the header (size, format) and check the end of
    PNG/JPEG files; a file that does not end as expected is fully decoded to
    confirm (so a valid file with trailing bytes passes). "decode": always
    decode fully.
    """
    try:
        with Image.open(path) as img:
            size = img.size
            if level == "decode" or not _looks_complete(path, img.format):
                img.load()  # raises on truncated or corrupt data
            return None, size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        return f"{path} ({type(exc).__name__}: {exc})", None


def check_images(
    paths,
    min_size: int | None = None,
    decode: bool = False,
    what: str = "images",
    workers: int = 8,
    headers: bool = True,
) -> None:
    """Validate an image list before long work starts; raise DatasetError.

    Levels, cheapest first:

    * ``headers=False`` (and no ``min_size``, no ``decode``): one ``stat``
      per file (10k images in well under a second) - only missing files;
    * default: also open each header and read the last bytes of PNG/JPEG
      files: catches files that are not images or are truncated (a PNG
      without its IEND chunk, a JPEG without its end marker; such a file is
      then decoded to confirm), and sizes below ``min_size``. About 0.2 ms
      per image on a local disk (measured: 1660 images in 0.27 s; the
      three Pitts30k splits, 52k images, in about 10 s);
    * ``decode=True``: fully decode every image (also corruption inside a
      file), in ``workers`` threads since PIL's decoders release the GIL.

    Args:
        paths: image files.
        min_size: smallest allowed side, pixels (None: no check).
        decode: fully decode each image.
        what: how to name the list in messages (e.g. "database images").
        headers: open each image's header (see above).

    Raises:
        DatasetError with counts and the first few examples of missing,
        unreadable and too-small images.
    """
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(paths)} {what} are missing: {_examples(missing)}. "
            "Check the data root and that the dataset was fully extracted."
        )
    if min_size is None and not decode and not headers:
        return
    level = "decode" if decode else "header"
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda p: _inspect(p, level), paths))
    bad = [err for err, _ in results if err is not None]
    small = [
        f"{p} ({w}x{h})"
        for p, (_, size) in zip(paths, results)
        if size is not None and min_size is not None
        for w, h in [size]
        if min(w, h) < min_size
    ]
    problems = []
    if bad:
        problems.append(f"{len(bad)} of {len(paths)} {what} are unreadable or truncated: {_examples(bad)}")
    if small:
        problems.append(
            f"{len(small)} of {len(paths)} {what} have a side below {min_size} pixels: {_examples(small)} "
            "(the smallest input the network accepts)"
        )
    if problems:
        raise DatasetError("; ".join(problems) + ". Replace or remove these files (and their entries in the "
                           "dataset's lists)" + (", or resize every image (image_size / --image-size)" if small else "")
                           + ".")
