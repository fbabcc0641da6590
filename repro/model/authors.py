"""The authors' released NetVLAD networks (VGG-16 + NetVLAD + PCA whitening).

The authors (Relja/netvlad) released their trained networks as MatConvNet
``.mat`` files of MATLAB class objects, which scipy cannot read. The widely
used plain-struct conversion (``net_class2struct.m`` of uzh-rpg/netvlad_tf_open,
distributed by cvg/Hierarchical-Localization as ``Pitts30K_struct.mat`` and
``TokyoTM_struct.mat``) can be read, and :func:`load_authors_model` turns one
into a :class:`~repro.model.PlaceModel` that computes the authors' network:

* their VGG-16 conv layers up to conv5_3 (no ReLU after it); MatConvNet's
  ``[S, S, IN, OUT]`` kernels become PyTorch's ``[OUT, IN, S, S]``
  (both are cross-correlations);
* their input convention, RGB in 0..255 minus ``meta.normalization.averageImage``
  (its first pixel, as the hloc toolbox takes it), no std division
  (:class:`~repro.model.backbone.MatConvNetInput`);
* L2 normalisation of each local descriptor, then their fixed-bias NetVLAD
  layer (``layerVLAD``: assignment weights ``weights[0]`` as ``[D, K]``, no
  bias; centres ``c_k = -weights[1][:, k]``, because the layer stores the
  negated centres), intra-normalisation, flattening in MATLAB's column-major
  order of the K x D matrix (``layout="dim_major"``), L2;
* their PCA whitening, a 1x1 convolution ``[1, 1, K*D, OUT]`` plus ``OUT``
  biases applied to that dim-major vector, then L2 (``whiten=False`` stops
  before it, at the K*D-dimensional NetVLAD vector).

Layers are found by their structure (4-D conv kernels; the NetVLAD layer's
two equal ``[D, K]`` arrays; the 1x1 whitening conv after it), K, D and the
output size come from the shapes, and a file that does not match raises a
:class:`~repro.errors.WeightsError` naming what was expected. scipy reads
the file as data: nothing in it is executed.

:func:`write_authors_struct` writes a file in that layout with random
weights: the tests' fixtures and the rehearsal's stand-in for the real file
(the weights themselves cannot be downloaded here). The layout facts come
from ``../shared/reference/authors_models.md`` (read off the hloc loader).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from repro.errors import WeightsError
from repro.model.place_model import PlaceModel, build_model

__all__ = ["AUTHORS_FILES", "authors_base_weights", "is_authors_weights", "authors_path", "load_authors_model", "read_authors_struct",
           "write_authors_struct"]

# The converted files' names as cvg/Hierarchical-Localization distributes them.
AUTHORS_FILES = {"pitts30k": "Pitts30K_struct.mat", "tokyoTM": "TokyoTM_struct.mat"}

CONVERSION_HINT = ("use the plain-struct conversion of the authors' model (net_class2struct.m of "
                   "uzh-rpg/netvlad_tf_open; cvg/Hierarchical-Localization distributes it as Pitts30K_struct.mat "
                   "and TokyoTM_struct.mat; README: 'The authors' released networks')")


def torchvision_vgg16_cfg() -> list:
    """VGG-16's layer list (output channels, "M" for a max-pool) cut at conv5_3."""
    cfg = list(torchvision.models.vgg.cfgs["D"])
    return cfg[:-1] if cfg[-1] == "M" else cfg


_VGG16_CHANNELS = [c for c in torchvision_vgg16_cfg() if c != "M"]  # 13 convs, 64 ... 512


def is_authors_weights(weights) -> bool:
    """Whether a ``--weights`` value names an authors' model: ``authors:PATH`` or a ``.mat`` file."""
    return isinstance(weights, (str, Path)) and (str(weights).startswith("authors:")
                                                 or str(weights).lower().endswith(".mat"))


def authors_path(weights) -> Path:
    """The file of ``authors:PATH`` / ``PATH.mat``."""
    s = str(weights)
    return Path(s[len("authors:"):] if s.startswith("authors:") else s).expanduser()


def _seq(value) -> list:
    """A MATLAB cell/struct array read with squeeze_me as a Python list (a lone element is not wrapped)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel())
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    return [value]


def _squeezed(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).reshape([n for n in np.shape(a) if n != 1] or [1])


def read_authors_struct(path) -> dict:
    """Parse a converted authors' ``.mat`` into its arrays, checked.

    Returns:
        dict with ``convs`` (list of (weight ``[S, S, IN, OUT]``, bias
        ``[OUT]``) in order), ``assign`` ``[D, K]``, ``centres`` ``[D, K]``
        (already negated back: c_k = column k), ``whiten`` (``[K*D, OUT]``,
        ``[OUT]``) or None, ``pixel_mean`` (3 RGB values), K, D.
    Raises:
        WeightsError naming what was expected.
    """
    import scipy.io
    from scipy.io.matlab import MatlabOpaque, mat_struct

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"authors' model file not found: {path}. Expected one of "
                           f"{', '.join(AUTHORS_FILES.values())}: {CONVERSION_HINT}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns about the class objects it cannot read
            mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except NotImplementedError:
        raise WeightsError(f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB "
                           "with save(..., 'net', '-v7'), or " + CONVERSION_HINT) from None
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, TypeError, OSError on damaged files
        raise WeightsError(f"{path}: not a readable .mat file (truncated or damaged? {type(exc).__name__}: {exc})"
                           ) from None
    variables = sorted(k for k in mat if not k.startswith("__"))
    net = mat.get("net")
    if isinstance(net, MatlabOpaque) or any(isinstance(mat.get(k), MatlabOpaque) for k in variables):
        raise WeightsError(f"{path} holds MATLAB class objects (the authors' MatConvNet release), which scipy "
                           f"cannot read; {CONVERSION_HINT}")
    if not isinstance(net, mat_struct) or not hasattr(net, "layers"):
        raise WeightsError(f"{path}: expected a struct 'net' with fields 'layers' and 'meta' (the plain-struct "
                           f"conversion of the authors' model); found variables {variables}")
    layers = _seq(net.layers)
    weights = []
    for i, layer in enumerate(layers):
        if isinstance(layer, MatlabOpaque) or not isinstance(layer, mat_struct):
            raise WeightsError(f"{path}: layer {i} is a MATLAB class object, not a struct; {CONVERSION_HINT}")
        weights.append([np.asarray(w, dtype=np.float32) for w in _seq(getattr(layer, "weights", np.empty(0)))
                        if np.size(w)])

    # NetVLAD: the only layer with two arrays of the same 2-D shape [D, K] (after dropping unit axes).
    vlad_at = [i for i, w in enumerate(weights)
               if len(w) == 2 and _squeezed(w[0]).ndim == 2 and _squeezed(w[0]).shape == _squeezed(w[1]).shape]
    if len(vlad_at) != 1:
        raise WeightsError(f"{path}: expected one NetVLAD layer (two [D, K] arrays: assignment weights and negated "
                           f"centres), found {len(vlad_at)}; is this a NetVLAD network?")
    v = vlad_at[0]
    assign, neg_centres = (_squeezed(a) for a in weights[v])
    dim, k = assign.shape

    convs = [(w[0], w[1].reshape(-1)) for w in weights[:v] if w and w[0].ndim == 4]
    expected = list(zip([3] + _VGG16_CHANNELS[:-1], _VGG16_CHANNELS))  # (IN, OUT) of each conv
    shapes = [tuple(w.shape) for w, _ in convs]
    if [s[2:] for s in shapes] != expected or any(s[:2] != (3, 3) for s in shapes) or \
            any(b.shape != (w.shape[3],) for w, b in convs):
        raise WeightsError(f"{path}: expected VGG-16's 13 conv layers (3x3 kernels [3, 3, IN, OUT], channels "
                           f"{_VGG16_CHANNELS}) before the NetVLAD layer; found {len(convs)} with shapes "
                           f"{shapes[:5]}{' ...' if len(shapes) > 5 else ''}. Only the VGG-16 models are supported")
    if dim != convs[-1][0].shape[3]:
        raise WeightsError(f"{path}: the NetVLAD layer has D = {dim}, but conv5_3 gives {convs[-1][0].shape[3]} "
                           "channels")
    types = [str(getattr(layer, "type", "")).lower() for layer in layers]
    last_conv = max(i for i in range(v) if weights[i] and weights[i][0].ndim == 4)
    if "relu" in types[last_conv + 1:v]:
        raise WeightsError(f"{path}: a ReLU follows conv5_3; the released models are cut at conv5_3 before its "
                           "ReLU, and this loader builds that network")

    whiten = None
    after = [(i, w) for i, w in enumerate(weights) if i > v and w]
    if after:
        i, w = after[0]
        if len(w) != 2 or w[0].size % (k * dim) or _squeezed(w[1]).ndim != 1 or \
                w[0].size != k * dim * _squeezed(w[1]).size:
            raise WeightsError(f"{path}: expected the PCA whitening after NetVLAD as a 1x1 conv [1, 1, {k * dim}, "
                               f"OUT] with OUT biases; layer {i} has arrays {[list(a.shape) for a in w]}")
        out = _squeezed(w[1]).size
        whiten = (w[0].reshape(k * dim, out), _squeezed(w[1]).reshape(out))
        if len(after) > 1:
            raise WeightsError(f"{path}: unexpected layers with weights after the whitening (layer {after[1][0]})")

    try:
        avg = np.asarray(net.meta.normalization.averageImage, dtype=np.float64)
    except AttributeError:
        raise WeightsError(f"{path}: missing net.meta.normalization.averageImage (the input mean)") from None
    if avg.size < 3 or avg.shape[-1] != 3 and avg.size != 3:
        raise WeightsError(f"{path}: averageImage should be 1x1x3 or HxWx3 RGB values, got shape {list(avg.shape)}")
    pixel_mean = avg.reshape(-1, 3)[0] if avg.shape[-1] == 3 else avg.reshape(3)
    return {"convs": convs, "assign": assign, "centres": -neg_centres, "whiten": whiten,
            "pixel_mean": [float(x) for x in pixel_mean], "num_clusters": int(k), "dim": int(dim)}


def load_authors_model(path, whiten: bool = True) -> PlaceModel:
    """The authors' network from a converted ``.mat`` (see the module docstring).

    Args:
        path: the file (``authors:`` prefix allowed).
        whiten: False stops at the K*D NetVLAD vector (dim-major, L2-normalised).
    Returns:
        a :class:`PlaceModel` in eval mode, nothing trainable by default
        (``train_from="none"``); ``model.config`` rebuilds it with
        :func:`~repro.model.build_model`.
    """
    path = authors_path(path)
    parts = read_authors_struct(path)
    k = parts["num_clusters"]
    assign = torch.from_numpy(np.ascontiguousarray(parts["assign"].T))  # [K, D]
    # alpha is only descriptive here (the weights are set directly): the mean |w_k|, which is
    # alpha at the authors' initialisation (w_k = alpha c_k / |c_k|).
    alpha = float(assign.norm(dim=1).mean()) or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "randomly initialised": the weights come from the file
        model = build_model("vgg16", "netvlad", weights=None, train_from="none", num_clusters=k, alpha=alpha,
                            assignment="fixed_bias", normalize_input=True,
                            whiten_dim=parts["whiten"][1].size if whiten and parts["whiten"] else None,
                            vlad_layout="dim_major", pixel_mean=parts["pixel_mean"])
    _copy_convs(model.base, parts["convs"])
    with torch.no_grad():
        model.pool.assign_weight.copy_(assign)
        model.pool.centroids.copy_(torch.from_numpy(np.ascontiguousarray(parts["centres"].T)))
        if model.whitening is not None:
            a, bias = parts["whiten"]
            model.whitening.projection.copy_(torch.from_numpy(np.ascontiguousarray(a.T)))
            model.whitening.offset.copy_(torch.from_numpy(bias))
            model.whitening.fitted.fill_(True)
    return model.eval()


def authors_base_weights(path):
    """(a function that copies the authors' 13 conv layers into a VGG-16 ``features`` cut at conv5_3,
    their average image's RGB values): for ``build_model(weights=PATH.mat)``."""
    parts = read_authors_struct(authors_path(path))

    return (lambda features: _copy_convs(features, parts["convs"])), parts["pixel_mean"]


@torch.no_grad()
def _copy_convs(features: nn.Module, convs: list) -> None:
    """The file's conv layers into ``features``' 13 convs, MatConvNet ``[S, S, IN, OUT]`` -> ``[OUT, IN, S, S]``."""
    modules = [m for m in features if isinstance(m, nn.Conv2d)]
    for module, (w, b) in zip(modules, convs, strict=True):
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))))
        module.bias.copy_(torch.from_numpy(b))


def write_authors_struct(path, num_clusters: int = 64, whiten_dim: int | None = 4096, seed: int = 0,
                         average_image_size: tuple[int, int] = (1, 1)) -> Path:
    """Write a random network in the converted authors' layout (a fixture; not their weights).

    The layers are MatConvNet's SimpleNN list as the released VGG-16 models
    have it: conv/relu/pool blocks up to conv5_3 (no ReLU after it), the
    input L2 normalisation, the NetVLAD layer (``[1, 1, D, K]`` assignment
    weights and negated centres), intra-normalisation, L2, the whitening
    1x1 conv ``[1, 1, K*D, OUT]`` and a final L2; ``meta.normalization.averageImage``
    of ``average_image_size`` pixels. Weights are drawn so that activations
    stay of order one through the 13 layers.
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    layers = []

    def layer(kind, name, *arrays):
        cell = np.empty((1, len(arrays)), dtype=object)
        for j, a in enumerate(arrays):
            cell[0, j] = np.asarray(a, dtype=np.float32)
        layers.append({"type": kind, "name": name, "weights": cell})

    cfg = torchvision_vgg16_cfg()
    c_in, block, idx = 3, 1, 1
    for j, item in enumerate(cfg):
        if item == "M":
            layer("pool", f"pool{block}")
            block, idx = block + 1, 1
            continue
        w = rng.standard_normal((3, 3, c_in, item)) * np.sqrt(2.0 / (9 * c_in))
        layer("conv", f"conv{block}_{idx}", w, rng.standard_normal(item) * 0.01)
        if j < len(cfg) - 1:
            layer("relu", f"relu{block}_{idx}")
        c_in, idx = item, idx + 1
    dim, k = c_in, int(num_clusters)
    centres = rng.standard_normal((dim, k))
    centres /= np.linalg.norm(centres, axis=0, keepdims=True)
    layer("custom", "preL2")
    layer("custom", "vlad:core", (10.0 * centres).reshape(1, 1, dim, k), (-centres).reshape(1, 1, dim, k))
    layer("custom", "vlad:intranorm")
    layer("custom", "vlad:L2")
    if whiten_dim:
        proj = rng.standard_normal((k * dim, int(whiten_dim))) / np.sqrt(k * dim)
        layer("conv", "WPCA", proj.reshape(1, 1, k * dim, int(whiten_dim)), rng.standard_normal(int(whiten_dim)) * 0.01)
        layer("custom", "L2")
    cells = np.empty((1, len(layers)), dtype=object)
    for j, entry in enumerate(layers):
        cells[0, j] = entry
    h, w = average_image_size
    avg = np.broadcast_to(np.array([122.68, 116.67, 104.01], dtype=np.float32), (h, w, 3)).copy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"net": {"layers": cells, "meta": {"normalization": {"averageImage": avg}}}},
                     do_compression=False)
    return path


