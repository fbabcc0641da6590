"""Backbones, weights handling, f_max, PCA whitening, build_model, checkpoints."""
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from repro.errors import ConfigError, WeightsError
from repro.model import (FMaxPool, PCAWhitening, build_backbone, build_model, crop_descriptors,
                         load_model, save_model)

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")


@pytest.mark.parametrize("name,channels,last_conv", [("alexnet", 256, 10), ("vgg16", 512, 28)])
def test_backbone_cut_before_last_relu(name, channels, last_conv):
    base = build_backbone(name, weights=None)
    full = getattr(torchvision.models, name)(weights=None).features
    assert len(base) == last_conv + 1
    assert isinstance(base[-1], torch.nn.Conv2d) and base[-1].out_channels == channels
    # the cut equals the torchvision features up to that conv, with the same weights
    full.load_state_dict(base.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(base(x), full[: last_conv + 1](x))
        assert (base(x) < 0).any()  # no ReLU at the end


def trainable_convs(base):
    return [i for i, m in enumerate(base) if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad]


def test_train_from():
    assert trainable_convs(build_backbone("alexnet", None)) == [10]  # default: last conv only
    assert trainable_convs(build_backbone("alexnet", None, train_from="conv4")) == [8, 10]
    assert trainable_convs(build_backbone("alexnet", None, train_from="all")) == [0, 3, 6, 8, 10]
    assert trainable_convs(build_backbone("alexnet", None, train_from="none")) == []
    assert trainable_convs(build_backbone("vgg16", None, train_from="conv5_1")) == [24, 26, 28]
    with pytest.raises(ConfigError, match="conv5_1"):
        build_backbone("alexnet", None, train_from="conv5_1")


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="not comparable with the paper"):
        build_backbone("alexnet", weights=None)


def test_imagenet_without_network_names_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as err:
        build_model("alexnet", weights="imagenet")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--weights PATH" in msg


def test_imagenet_weights_read_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    reference = torchvision.models.alexnet(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    base = build_backbone("alexnet", weights="imagenet")
    torch.testing.assert_close(base[10].weight, reference.features[10].weight)


def test_weights_file_full_model_and_features_only(tmp_path):
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / "full.pth")
    base = build_backbone("alexnet", weights=str(tmp_path / "full.pth"))
    torch.testing.assert_close(base[3].weight, alexnet.features[3].weight)
    vgg_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save(vgg_features.state_dict(), tmp_path / "features.pth")
    base = build_backbone("vgg16", weights=str(tmp_path / "features.pth"))
    torch.testing.assert_close(base[28].weight, vgg_features[28].weight)


def test_weights_file_of_another_architecture(tmp_path):
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    with pytest.raises(WeightsError, match="does not hold vgg16 weights"):
        build_backbone("vgg16", weights=str(tmp_path / "alexnet.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        build_backbone("alexnet", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("alexnet", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(backbone="resnet50"), "unknown backbone"),
    (dict(pooling="gem"), "unknown pooling"),
    (dict(pooling="fmax", fmax_output_size=0), "at least 1x1"),
    (dict(alpha=-1.0), "alpha"),
])
def test_bad_options_fail_before_loading(kwargs, match, monkeypatch):
    monkeypatch.setattr("repro.model.place_model.build_backbone", lambda *a, **k: pytest.fail("loaded weights"))
    with pytest.raises(ConfigError, match=match):
        build_model(weights="imagenet", **kwargs)


def test_fmax_against_reference():
    rng = np.random.default_rng()
    x = rng.normal(size=(2, 3, 6, 7))
    for (h, w) in [(1, 1), (2, 2), (3, 2)]:
        got = FMaxPool(3, (h, w)).double()(torch.from_numpy(x)).numpy()
        want = np.zeros((2, 3 * h * w))
        for b in range(2):
            cells = []
            for c in range(3):
                for i in range(h):
                    for j in range(w):
                        # adaptive pooling bins: [floor(i*H/h), ceil((i+1)*H/h))
                        r0, r1 = (i * 6) // h, -(-((i + 1) * 6) // h)
                        c0, c1 = (j * 7) // w, -(-((j + 1) * 7) // w)
                        cells.append(x[b, c, r0:r1, c0:c1].max())
            v = np.array(cells)
            want[b] = v / np.linalg.norm(v)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert FMaxPool(256, 3).output_dim == 256 * 9


def test_fmax_grid_larger_than_map():
    with pytest.raises(ConfigError, match="smaller than the f_max grid"):
        FMaxPool(4, (5, 5))(torch.randn(1, 4, 3, 3))


def test_whitening_against_numpy_pca():
    rng = np.random.default_rng()
    M, D, out = 400, 20, 8
    x = (rng.normal(size=(M, D)) * rng.uniform(0.1, 3, size=D)).astype(np.float32)
    w = PCAWhitening(D, out).fit(x)
    got = w(torch.from_numpy(x)).numpy()
    # reference: eigen-decomposition of the covariance, project, divide by sqrt(eigenvalue), L2
    mu = x.astype(np.float64).mean(0)
    cov = np.cov((x - mu).T, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:out]
    proj = (x - mu) @ vecs[:, order] / np.sqrt(vals[order] + 1e-9)
    want = proj / np.linalg.norm(proj, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=2e-4)  # eigenvector signs are arbitrary
    # whitened training data: identity covariance before the final L2
    raw = torch.nn.functional.linear(torch.from_numpy(x), w.projection, w.offset).numpy()
    np.testing.assert_allclose(np.cov(raw.T, bias=True), np.eye(out), atol=2e-3)
    # cropping keeps the leading components
    np.testing.assert_allclose(w(torch.from_numpy(x), dim=3).numpy(), crop_descriptors(torch.from_numpy(raw), 3).numpy(), atol=1e-5)


def test_whitening_needs_enough_samples_and_fit():
    w = PCAWhitening(10, 8)
    with pytest.raises(ConfigError, match="before being fitted"):
        w(torch.randn(2, 10))
    with pytest.raises(ConfigError, match="needs more than 8"):
        w.fit(np.random.randn(5, 10))


def test_build_model_dims_and_checkpoint_round_trip(tmp_path):
    m = build_model("alexnet", "fmax", weights=None, fmax_output_size=(2, 2))
    assert m.descriptor_dim == 256 * 4
    m = build_model("alexnet", "netvlad", weights=None, num_clusters=16, whiten_dim=32)
    assert m.pooled_dim == 16 * 256 and m.descriptor_dim == 32
    x = torch.randn(40, 3, 64, 64)
    with torch.no_grad():
        m.whitening.fit(m.pooled(x))
        want = m(x)
    assert want.shape == (40, 32)
    save_model(tmp_path / "m.pth", m)
    loaded = load_model(tmp_path / "m.pth")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_min_input_size(name):
    from repro.model.backbone import MIN_INPUT_SIZE
    base = build_backbone(name, weights=None)
    s = MIN_INPUT_SIZE[name]
    with torch.no_grad():
        assert base(torch.zeros(1, 3, s, s)).shape[-2:] == (1, 1)
        with pytest.raises(RuntimeError):
            base(torch.zeros(1, 3, s - 1, s - 1))


def test_channels_last_is_the_same_function_and_saves_like_the_plain_model():
    """use_channels_last: speed only. Same descriptors and gradients up to float rounding; a
    state dict that loads into a plain model."""
    import copy

    from repro.model.backbone import use_channels_last

    torch.manual_seed(0)
    plain = build_model("vgg16", "netvlad", weights=None, num_clusters=8, train_from="conv5_1")
    plain.pool.init_from_centroids(torch.randn(8, 512).numpy(), alpha=10.0)
    fast = copy.deepcopy(plain)
    assert use_channels_last(fast.base) is fast.base and use_channels_last(fast.base) is fast.base  # idempotent
    assert fast.base[28].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 80)
    r = torch.randn(8 * 512)
    for m in (plain, fast):
        m.zero_grad()
        (m(x) @ r).sum().backward()  # not |y|^2: descriptors are unit vectors
    cos = torch.nn.functional.cosine_similarity(plain(x), fast(x))
    assert cos.min() > 1 - 1e-5
    for a, b in ((plain.base[28].weight.grad, fast.base[28].weight.grad), (plain.pool.centroids.grad,
                                                                            fast.pool.centroids.grad)):
        assert ((a - b).norm() / a.norm()) < 1e-4
    again = build_model("vgg16", "netvlad", weights=None, num_clusters=8)
    again.load_state_dict(fast.state_dict())
    assert torch.allclose(again(x), fast(x), atol=1e-5)
    off = copy.deepcopy(plain)
    use_channels_last(off.base, enabled=False)
    assert not off.base[28].weight.is_contiguous(memory_format=torch.channels_last) and not off.base._forward_hooks
