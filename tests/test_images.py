"""Image loading (mode conversion, normalisation) and check_images."""
import numpy as np
import pytest
import torch
from PIL import Image

from repro.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageListDataset, check_images, to_rgb8
from repro.errors import ConfigError, DatasetError


def norm(v8, c):
    """Hand computation: 8-bit value of channel c after ImageNet normalisation."""
    return (v8 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]


def save(tmp_path, name, arr, mode=None):
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    path = tmp_path / name
    img.save(path)
    return path


def test_rgb_values_and_shape(tmp_path):
    arr = np.zeros((5, 7, 3), np.uint8)
    arr[2, 3] = (10, 128, 250)
    x, i = ImageListDataset([save(tmp_path, "a.png", arr)])[0]
    assert i == 0 and x.dtype == torch.float32 and x.shape == (3, 5, 7)
    for c, v in enumerate((10, 128, 250)):
        assert x[c, 2, 3].item() == pytest.approx(norm(v, c), abs=1e-6)
    assert x[0, 0, 0].item() == pytest.approx(norm(0, 0), abs=1e-6)
    raw, _ = ImageListDataset([tmp_path / "a.png"], normalize=False)[0]
    assert raw[2, 2, 3].item() == pytest.approx(250 / 255, abs=1e-7)


def test_grayscale_replicated(tmp_path):
    arr = np.full((4, 6), 30, np.uint8)
    arr[1, 2] = 200
    path = save(tmp_path, "g.png", arr)
    assert Image.open(path).mode == "L"
    x, _ = ImageListDataset([path])[0]
    assert x.shape == (3, 4, 6)
    for c in range(3):
        assert x[c, 1, 2].item() == pytest.approx(norm(200, c), abs=1e-6)
        assert x[c, 0, 0].item() == pytest.approx(norm(30, c), abs=1e-6)


def test_rgba_drops_alpha(tmp_path):
    arr = np.zeros((3, 3, 4), np.uint8)
    arr[1, 1] = (100, 50, 25, 0)  # fully transparent: colour kept as stored
    arr[0, 0] = (1, 2, 3, 255)
    path = save(tmp_path, "a.png", arr)
    assert Image.open(path).mode == "RGBA"
    x, _ = ImageListDataset([path], normalize=False)[0]
    assert x.shape == (3, 3, 3)
    np.testing.assert_allclose(x[:, 1, 1].numpy(), np.array([100, 50, 25]) / 255, atol=1e-7)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), np.array([1, 2, 3]) / 255, atol=1e-7)


def test_16bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535], [1000, 30000, 257]], dtype=np.uint16)
    path = tmp_path / "d.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # Pillow version dependent
    x, _ = ImageListDataset([path])[0]
    assert x.shape == (3, 2, 3)
    # Hand computation: v * 255 / 65535, rounded (25700 -> 100, 30000 -> 116.7 -> 117).
    expected = np.rint(arr / 65535 * 255)
    assert expected[0, 1] == 100 and expected[1, 1] == 117
    for c in range(3):
        np.testing.assert_allclose(x[c].numpy(), norm(expected, c), atol=1e-6)
    # A plain convert('RGB') would saturate 30000 to 255; ours keeps it mid-grey.
    assert x[0, 1, 1].item() < x[0, 0, 2].item()


def test_32bit_int_mode_conversion():
    in_range = Image.fromarray(np.array([[0, 65535, 257 * 3]], dtype=np.int32))
    assert in_range.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb8(in_range))[0, :, 0], [0, 255, 3])
    wide = Image.fromarray(np.array([[-100, 100, 200000]], dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(to_rgb8(wide))[0, :, 0], [0, 0, 255])  # min-max scaled


def test_resize(tmp_path):
    path = save(tmp_path, "a.png", np.full((40, 30, 3), 77, np.uint8))
    x, _ = ImageListDataset([path], image_size=(16, 12))[0]
    assert x.shape == (3, 16, 12)
    assert x[1, 5, 5].item() == pytest.approx(norm(77, 1), abs=1e-6)
    with pytest.raises(ConfigError, match="image_size"):
        ImageListDataset([path], image_size=(16,))


def _truncated_png(tmp_path):
    good = save(tmp_path, "good.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = good.read_bytes()
    bad = tmp_path / "trunc.png"
    bad.write_bytes(data[: len(data) // 2])
    return good, bad


def test_check_images_missing(tmp_path):
    good = save(tmp_path, "good.png", np.zeros((8, 8), np.uint8))
    paths = [good] + [tmp_path / f"missing{i}.jpg" for i in range(7)]
    check_images([good])  # no error
    with pytest.raises(DatasetError, match=r"7 of 8 database images are missing: .*missing0\.jpg.*\(2 more\)"):
        check_images(paths, what="database images")


def test_check_images_truncated(tmp_path):
    good, bad = _truncated_png(tmp_path)
    check_images([good, bad], headers=False)  # existence only: passes
    with pytest.raises(DatasetError, match=r"1 of 2 images are unreadable or truncated: .*trunc\.png"):
        check_images([good, bad])  # by default the header and the end of each PNG/JPEG are read
    check_images([good], decode=True)
    with pytest.raises(DatasetError, match=r"1 of 2 images are unreadable or truncated: .*trunc\.png"):
        check_images([good, bad], decode=True)
    with pytest.raises(DatasetError, match=r"trunc\.png"):
        ImageListDataset([bad])[0]
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match=r"text\.jpg"):
        check_images([tmp_path / "text.jpg"], min_size=1)


def test_check_images_too_small(tmp_path):
    big = save(tmp_path, "big.png", np.zeros((32, 40), np.uint8))
    tiny = save(tmp_path, "tiny.png", np.zeros((31, 100), np.uint8))
    check_images([big, tiny], min_size=31)
    with pytest.raises(DatasetError, match=r"1 of 2 images have a side below 32 pixels: .*tiny\.png \(100x31\)"):
        check_images([big, tiny], min_size=32)


def test_kept_decoded_images_give_identical_tensors_and_respect_the_budget(tmp_path):
    from repro.data.images import keep_decoded_images

    rng = np.random.default_rng(7)
    paths = []
    for k in range(3):
        p = tmp_path / f"im{k}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    ds = ImageListDataset(paths, image_size=(16, 24))
    fresh = [ds[i][0] for i in range(3)]
    one_image = 16 * 24 * 3
    with keep_decoded_images(2 * one_image) as kept:      # room for two of the three
        first = [ds[i][0] for i in range(3)]
        for p in paths:
            p.unlink()                                        # kept ones no longer need the file
        again = [ds[i][0] for i in range(2)]
        assert (kept.hits, kept.misses, kept.nbytes) == (2, 3, 2 * one_image)
        with pytest.raises(DatasetError, match="not found"):
            ds[2]                                             # over budget: not kept, read again
    for a, b, c in zip(fresh, first, again + [first[2]]):
        assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(DatasetError):                         # outside the block nothing is kept
        ds[0]
