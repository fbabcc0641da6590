"""The authors' released networks (converted MatConvNet structs): loading, the
forward against a slow reference written here from the format description
(../shared/reference/authors_models.md), bad files, evaluate and extract."""
import json
from pathlib import Path
import struct

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from repro.cli import main
from repro.errors import WeightsError
from repro.model import build_model, load_model, save_model
from repro.model.authors import load_authors_model, write_authors_struct
from repro.model.netvlad import NetVLAD, convert_vlad_layout

# VGG-16 up to conv5_3, from the paper (Simonyan & Zisserman, config D): channels, "M" = 2x2 max-pool
VGG16_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
K, WHITEN = 4, 16


def fixture_struct(path, seed=0, average_image=(1, 1), k=K, whiten=WHITEN, convs=VGG16_D):
    """A converted authors' model, written here to the documented layout with scipy (not with repro's writer):
    net.layers{i}.weights, conv kernels [S, S, IN, OUT], the NetVLAD layer's [D, K] assignment weights and
    negated centres, the [1, 1, K*D, OUT] whitening conv, net.meta.normalization.averageImage."""
    rng = np.random.default_rng(seed)
    layers, c_in = [], 3

    def add(kind, *arrays):
        cell = np.empty((1, len(arrays)), dtype=object)
        for j, a in enumerate(arrays):
            cell[0, j] = np.asarray(a, np.float32)
        layers.append({"type": kind, "weights": cell})

    for j, c in enumerate(convs):
        if c == "M":
            add("pool")
            continue
        add("conv", rng.standard_normal((3, 3, c_in, c)) * np.sqrt(2 / (9 * c_in)), rng.standard_normal(c) * 0.05)
        if j < len(convs) - 1:
            add("relu")
        c_in = c
    centres = rng.standard_normal((c_in, k))
    add("custom")  # preL2
    add("custom", rng.standard_normal((c_in, k)) * 3, -centres)
    add("custom")  # intra-normalisation
    add("custom")  # L2
    if whiten:
        add("conv", rng.standard_normal((1, 1, k * c_in, whiten)), rng.standard_normal(whiten))
        add("custom")  # L2
    cells = np.empty((1, len(layers)), dtype=object)
    for j, entry in enumerate(layers):
        cells[0, j] = entry
    avg = rng.uniform(90, 130, (*average_image, 3)).astype(np.float32)
    scipy.io.savemat(path, {"net": {"layers": cells, "meta": {"normalization": {"averageImage": avg}}}})
    return path


def reference_forward(path, image_file, whiten=True) -> np.ndarray:
    """The authors' network in float64, slowly, straight from the .mat and the format description."""
    net = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["net"]
    layers = list(net.layers)
    rgb = np.asarray(Image.open(image_file).convert("RGB"), np.float64)  # H x W x 3, 0..255
    avg = np.asarray(net.meta.normalization.averageImage, np.float64).reshape(-1, 3)[0]
    x = torch.from_numpy(rgb - avg).permute(2, 0, 1)[None]  # no std division
    i = 0
    convs_done = 0
    while convs_done < 13:  # VGG-16's conv/relu/pool sequence, cut after conv5_3 (no ReLU)
        w = list(layers[i].weights) if np.size(layers[i].weights) else []
        if layers[i].type == "conv":
            kernel = torch.from_numpy(np.asarray(w[0], np.float64)).permute(3, 2, 0, 1)
            x = F.conv2d(x, kernel, torch.from_numpy(np.asarray(w[1], np.float64)), padding=1)
            convs_done += 1
        elif layers[i].type == "relu":
            x = x.clamp_min(0)
        elif layers[i].type == "pool":
            x = F.max_pool2d(x, 2, 2)
        i += 1
    desc = x[0].reshape(x.shape[1], -1).numpy()  # D x N local descriptors
    desc = desc / np.linalg.norm(desc, axis=0, keepdims=True)
    vlad_layer = next(layer for layer in layers[i:] if np.size(layer.weights) == 2)
    assign, neg_centres = (np.asarray(a, np.float64) for a in vlad_layer.weights)
    d, k = assign.shape
    logits = assign.T @ desc  # K x N
    a = np.exp(logits - logits.max(0))
    a /= a.sum(0)
    v = np.zeros((k, d))
    for kk in range(k):
        for n in range(desc.shape[1]):
            v[kk] += a[kk, n] * (desc[:, n] + neg_centres[:, kk])  # x - c_k, c_k = -weights[1]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v.flatten(order="F")  # MATLAB's column-major K x D: (k, d) -> k + K*d
    v /= np.linalg.norm(v)
    if not whiten:
        return v
    wl = layers[[j for j, layer in enumerate(layers) if np.size(layer.weights) == 2][-1]]
    proj, bias = (np.asarray(a, np.float64) for a in wl.weights)
    y = proj.reshape(k * d, -1).T @ v + bias
    return y / np.linalg.norm(y)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(48, 64), (40, 40), (37, 53)]):  # different sizes, odd ones too
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.mark.parametrize("average_image", [(1, 1), (5, 7)])
def test_forward_matches_the_slow_reference(tmp_path, images, average_image):
    from repro.evaluate import extract_descriptors

    path = fixture_struct(tmp_path / "net.mat", average_image=average_image)
    files = sorted(images.glob("*.png"))
    for whiten in (True, False):
        model = load_authors_model(path, whiten=whiten)
        assert model.descriptor_dim == (WHITEN if whiten else K * 512)
        ours32 = extract_descriptors(model, files, batch_size=2)  # the real path: loader, float32
        ours64 = extract_descriptors(model.double(), files, batch_size=2)
        for j, f in enumerate(files):
            ref = reference_forward(path, f, whiten)
            np.testing.assert_allclose(ours64[j], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
            np.testing.assert_allclose(ours32[j], ref, rtol=1e-3, atol=2e-4 * np.abs(ref).max())


def test_saved_and_reloaded_authors_model_is_the_same_network(tmp_path, images):
    path = fixture_struct(tmp_path / "net.mat", seed=3)
    model = load_authors_model(path)
    save_model(tmp_path / "m.pt", model)
    again = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_repro_writer_produces_the_documented_layout(tmp_path):
    path = write_authors_struct(tmp_path / "w.mat", num_clusters=K, whiten_dim=WHITEN, seed=0)
    net = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["net"]
    weights = [list(layer.weights) if np.size(layer.weights) else [] for layer in net.layers]
    assert [np.shape(w[0]) for w in weights if w and np.ndim(w[0]) == 4][0] == (3, 3, 3, 64)
    assert len([w for w in weights if w and np.ndim(w[0]) == 4]) == 13
    assert net.layers[29].type != "relu" and np.size(net.layers[29].weights) == 0  # preL2 after conv5_3
    assert [np.shape(a) for a in weights[30]] == [(512, K), (512, K)]  # NetVLAD at index 30, as the release
    assert np.shape(weights[33][0]) == (K * 512, WHITEN)  # whitening at index 33
    ref_files = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(ref_files)
    from repro.evaluate import extract_descriptors
    ours = extract_descriptors(load_authors_model(path).double(), [ref_files])[0]
    np.testing.assert_allclose(ours, reference_forward(path, ref_files), rtol=1e-5, atol=1e-6)


def test_layout_conversion_both_ways():
    k, d = 3, 5
    x = torch.randn(4, k * d)
    dim_major = convert_vlad_layout(x, k, d, "dim_major")
    for b in range(4):  # element (k, d) at k*D + d in ours, at k + K*d in the authors'
        for kk in range(k):
            for dd in range(d):
                assert dim_major[b, kk + k * dd] == x[b, kk * d + dd]
    torch.testing.assert_close(convert_vlad_layout(dim_major, k, d, "cluster_major"), x)
    np.testing.assert_array_equal(convert_vlad_layout(x.numpy(), k, d, "dim_major"), dim_major.numpy())
    layer = NetVLAD(k, d, alpha=5.0)
    twin = NetVLAD(k, d, alpha=5.0, layout="dim_major")
    twin.load_state_dict(layer.state_dict())
    conv = torch.randn(2, d, 3, 4)
    torch.testing.assert_close(twin(conv), convert_vlad_layout(layer(conv), k, d, "dim_major"))
    torch.testing.assert_close(twin.forward_autograd(conv), twin(conv))


def class_object_mat(path):
    """A MAT v5 file whose variable is a MATLAB class object (mxOPAQUE_CLASS), as the authors' own release."""
    def elem(t, data):
        return struct.pack("<II", t, len(data)) + data + b"\0" * ((-len(data)) % 8)

    def text(s):
        return elem(1, s.encode())

    inner = elem(14, elem(6, struct.pack("<II", 6, 0)) + elem(5, struct.pack("<ii", 1, 1)) + text("")
                 + elem(9, np.array([1.0]).tobytes()))
    body = elem(6, struct.pack("<II", 17, 0)) + text("net") + text("MCOS") + text("FileWrapper__") + inner
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + elem(14, body))
    return path


def test_bad_files_give_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="class objects.*net_class2struct"):
        load_authors_model(class_object_mat(tmp_path / "obj.mat"))
    with pytest.raises(WeightsError, match="VGG-16's 13 conv layers"):  # another architecture (AlexNet-like)
        load_authors_model(fixture_struct(tmp_path / "alex.mat", convs=[64, "M", 192, "M", 384, 256, 256]))
    good = fixture_struct(tmp_path / "good.mat")
    truncated = tmp_path / "cut.mat"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable .mat|truncated"):
        load_authors_model(truncated)
    scipy.io.savemat(tmp_path / "other.mat", {"model": np.zeros(3)})
    with pytest.raises(WeightsError, match="struct 'net'.*found variables \\['model'\\]"):
        load_authors_model(tmp_path / "other.mat")
    with pytest.raises(WeightsError, match="not found"):
        load_authors_model(tmp_path / "absent.mat")


def test_extract_reproduces_the_reference(tmp_path, images):
    path = fixture_struct(tmp_path / "net.mat", seed=5)
    out = tmp_path / "d.npy"
    assert main(["extract", "--weights", str(path), "--images", str(images), "--out", str(out)]) == 0
    desc = np.load(out)
    names = (tmp_path / "d.names.txt").read_text().split()
    assert desc.dtype == np.float32 and desc.shape == (3, WHITEN)
    assert names == ["im0.png", "im1.png", "im2.png"]
    for row, name in zip(desc, names):
        ref = reference_forward(path, images / name)
        np.testing.assert_allclose(row, ref, rtol=1e-3, atol=2e-4)
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["config"]["vlad_layout"] == "dim_major" and meta["num_images"] == 3
    # --no-whiten: the 2048-D NetVLAD vector, in the authors' order; "authors:PATH" names the same file
    assert main(["extract", "--weights", f"authors:{path}", "--no-whiten", "--images", str(images),
                 "--out", str(tmp_path / "v.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy")[1], reference_forward(path, images / "im1.png", False),
                               rtol=1e-3, atol=2e-5)


def test_extract_of_our_checkpoint_matches_the_model(tmp_path, images):
    from repro.evaluate import extract_descriptors

    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        model = build_model("alexnet", "netvlad", weights=None, num_clusters=4)
    save_model(tmp_path / "m.pt", model)
    assert main(["extract", "--checkpoint", str(tmp_path / "m.pt"), "--images", str(images),
                 "--out", str(tmp_path / "c.npy"), "--image-size", "64", "64"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"),
                               extract_descriptors(model, sorted(images.glob("*.png")), (64, 64)), rtol=1e-5, atol=1e-6)


def test_extract_errors_before_any_work(tmp_path, images, capsys):
    assert main(["extract", "--weights", str(tmp_path / "none.mat"), "--images", str(images),
                 "--out", str(tmp_path / "d.npy")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["extract", "--weights", "none", "--images", str(images), "--out", str(tmp_path / "d.txt")]) == 2
    assert "must name a .npy" in capsys.readouterr().err
    assert main(["extract", "--weights", "none", "--images", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "d.npy")]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert not (tmp_path / "d.npy").exists()


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_evaluate_with_the_authors_model_on_the_synthetic_city(tiny_city, tmp_path):
    from repro.data.datasets import load_split
    from repro.evaluate import extract_descriptors
    from repro.metrics import recall_at_n

    path = fixture_struct(tmp_path / "net.mat", seed=2)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--dataset", "synthetic", "--data-root", str(tiny_city), "--weights", str(path),
                 "--ns", "1", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["init"] == {"from_weights": str(path)} and result["dim"] == WHITEN
    split = load_split("synthetic", tiny_city, "test")
    model = load_authors_model(path)
    db, q = extract_descriptors(model, split.db_paths), extract_descriptors(model, split.q_paths)
    expected = recall_at_n(q, db, split.positives, (1, 5))
    assert result["recall"]["1"] == pytest.approx(expected[1]) and result["recall"]["5"] == pytest.approx(expected[5])
    assert main(["evaluate", "--dataset", "synthetic", "--data-root", str(tiny_city), "--weights", str(path),
                 "--checkpoint", str(tmp_path / "x.pt")]) == 2


def test_an_authors_file_as_base_weights_gives_their_base_and_input_convention(tmp_path, images):
    """weights=PATH.mat in build_model (the notebooks' and train's `weights`): the authors' VGG-16 base and
    preprocessing under this project's own pooling; the conv map equals the authors' network's."""
    path = fixture_struct(tmp_path / "net.mat", seed=4)
    theirs = load_authors_model(path)
    ours = build_model("vgg16", "fmax", weights=str(path))
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours.base(x), theirs.base(x))
    assert ours.config["pixel_mean"] == theirs.config["pixel_mean"]
    with pytest.raises(Exception, match="VGG-16"):
        build_model("alexnet", "fmax", weights=f"authors:{path}")


def test_extract_a_dataset_split_with_names_relative_to_its_root(tiny_city, tmp_path):
    from repro.data.datasets import load_split
    from repro.evaluate import extract_descriptors

    path = fixture_struct(tmp_path / "net.mat", seed=6)
    out = tmp_path / "q.npy"
    assert main(["extract", "--weights", str(path), "--dataset", "synthetic", "--data-root", str(tiny_city),
                 "--split", "test", "--set", "queries", "--out", str(out)]) == 0
    split = load_split("synthetic", tiny_city, "test")
    names = (tmp_path / "q.names.txt").read_text().split()
    assert names == [p.resolve().relative_to(Path(tiny_city).resolve()).as_posix() for p in split.q_paths]
    np.testing.assert_allclose(np.load(out), extract_descriptors(load_authors_model(path), split.q_paths),
                               rtol=1e-5, atol=1e-6)
    assert main(["extract", "--weights", str(path), "--dataset", "synthetic", "--out", str(out)]) == 2  # no root
