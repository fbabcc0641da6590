"""The whole descriptor network: base -> pooling (-> PCA whitening)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from repro.errors import ConfigError
from repro.model.backbone import MatConvNetInput, backbone_channels, build_backbone, check_backbone
from repro.model.fmax import FMaxPool, check_output_size
from repro.model.netvlad import NetVLAD, check_alpha
from repro.model.precision import base_autocast, check_precision
from repro.model.whitening import PCAWhitening

POOLINGS = ("netvlad", "fmax")


class PlaceModel(nn.Module):
    """Images ``[B, 3, H, W]`` (ImageNet-normalised) -> unit descriptors ``[B, dim]``.

    Attributes:
        base: conv layers up to the last conv (no final ReLU); for the
            authors' networks preceded by :class:`MatConvNetInput`.
        pool: :class:`NetVLAD` or :class:`FMaxPool`.
        whitening: optional :class:`PCAWhitening`, fitted on database
            descriptors before use (see ``repro.evaluate``).
        config: the keyword arguments of :func:`build_model`, stored in
            checkpoints so a model can be rebuilt.
        precision: "float32" (default) or "bf16": the base's convolutions
            under autocast, pooling and whitening in float32 on its output
            (:mod:`repro.model.precision`; set by :meth:`set_precision`, not
            stored in checkpoints).
    """

    def __init__(self, base: nn.Module, pool: nn.Module, whitening: PCAWhitening | None = None,
                 config: dict | None = None):
        super().__init__()
        self.base, self.pool, self.whitening = base, pool, whitening
        self.config = dict(config or {})
        self.precision = "float32"

    def set_precision(self, precision: str) -> "PlaceModel":
        """float32 or bf16 (resolve "auto" first: :func:`repro.model.precision.resolve_precision`)."""
        if check_precision(precision) == "auto":
            raise ConfigError("set_precision: resolve 'auto' for the device first (resolve_precision)")
        self.precision = precision
        return self

    @property
    def pooled_dim(self) -> int:
        """Dimension before whitening (K*D for NetVLAD, D*h*w for f_max)."""
        return self.pool.output_dim

    @property
    def descriptor_dim(self) -> int:
        """Dimension of what :meth:`forward` returns."""
        return self.whitening.out_dim if self.whitening is not None else self.pooled_dim

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors before whitening, ``[B, pooled_dim]``."""
        if self.precision == "float32":
            return self.pool(self.base(images))
        with base_autocast(self.precision, images.device.type):
            maps = self.base(images)
        # pooling outside autocast, on float32 maps: NetVLAD's sums and its custom backward stay float32
        return self.pool(maps.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        desc = self.pooled(images)
        return self.whitening(desc) if self.whitening is not None else desc


def check_model_options(backbone: str, pooling: str, alpha=None, fmax_output_size=(1, 1)) -> tuple[int, int]:
    """ConfigError naming the option unless the backbone and pooling are known,
    ``alpha`` (None: set later by the paper's rule) is positive and finite and
    the f_max grid is at least 1x1. Cheap: call it before any long work.
    Returns the f_max grid as (h, w)."""
    check_backbone(backbone)
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if alpha is not None:
        check_alpha(alpha)
    return check_output_size(fmax_output_size)


def pooled_dim(backbone: str, pooling: str, num_clusters: int = 64, fmax_output_size=(1, 1)) -> int:
    """The descriptor size before whitening, from the options alone (no model
    built): K*D for NetVLAD, D*h*w for f_max (D: the base's channels)."""
    grid = check_model_options(backbone, pooling, None, fmax_output_size)
    d = backbone_channels(backbone)
    return int(num_clusters) * d if pooling == "netvlad" else d * grid[0] * grid[1]


def build_model(backbone: str = "alexnet", pooling: str = "netvlad", weights="imagenet",
                train_from: str = "last", num_clusters: int = 64, alpha: float = 100.0,
                assignment: str = "paper", normalize_input: bool = True,
                fmax_output_size=(1, 1), whiten_dim: int | None = None, vlad_layout: str = "cluster_major",
                pixel_mean=None) -> PlaceModel:
    """Compose base + pooling (+ whitening); ``model.descriptor_dim`` tells its size.

    Args:
        backbone: "alexnet" (conv5, D=256) or "vgg16" (conv5_3, D=512).
        pooling: "netvlad" or "fmax".
        weights: "imagenet", a path to a ``.pth`` state dict, the authors'
            converted ``.mat`` (``authors:PATH`` or ``PATH.mat``: their VGG-16
            base and its input convention; the pooling stays this model's),
            or None.
        train_from: first trainable conv layer ("last", "all", "none" or a name).
        num_clusters, alpha, assignment, normalize_input: NetVLAD options;
            alpha is a placeholder until the layer is initialised from data
            (``repro.model.init_netvlad``).
        fmax_output_size: f_max grid, (1, 1) is the paper's f_max.
        whiten_dim: PCA-whitened output size (paper: 4096), None for none.
        vlad_layout: NetVLAD's flattening, ``"cluster_major"`` (ours) or
            ``"dim_major"`` (the authors' MATLAB order; their whitening expects it).
        pixel_mean: None (torchvision's input: ImageNet mean/std), or 3 RGB
            values: the base takes RGB in 0..255 minus them (the authors'
            MatConvNet networks; :class:`MatConvNetInput`).
    """
    # Validate every option before the (possibly slow) weight loading.
    fmax_output_size = check_model_options(backbone, pooling, alpha if pooling == "netvlad" else None,
                                           fmax_output_size)
    config = dict(backbone=backbone, pooling=pooling, train_from=train_from, num_clusters=int(num_clusters),
                  alpha=float(alpha), assignment=assignment, normalize_input=bool(normalize_input),
                  fmax_output_size=list(fmax_output_size), whiten_dim=whiten_dim)
    # recorded only when not the default, so records of our own models keep their keys
    if vlad_layout != "cluster_major":
        config["vlad_layout"] = vlad_layout
    if pixel_mean is not None:
        config["pixel_mean"] = [float(v) for v in pixel_mean]
    dim = backbone_channels(backbone)
    if pooling == "netvlad":
        pool = NetVLAD(num_clusters, dim, alpha=alpha, assignment=assignment, normalize_input=normalize_input,
                       layout=vlad_layout)
    else:
        pool = FMaxPool(dim, fmax_output_size)
    whitening = PCAWhitening(pool.output_dim, whiten_dim) if whiten_dim else None
    from repro.model.authors import authors_base_weights, is_authors_weights  # (authors.py builds on this module)

    authors_base = None
    if is_authors_weights(weights):
        # the authors' released network's VGG-16 base (their conv weights and input convention);
        # the pooling is this model's own, fitted as usual

        if backbone != "vgg16":
            raise ConfigError(f"weights {weights}: the authors' released networks are VGG-16; use backbone='vgg16'")
        authors_base, pixel_mean = authors_base_weights(weights)
        config["pixel_mean"] = [float(v) for v in pixel_mean]
        weights = None
    with warnings.catch_warnings():
        if authors_base is not None:  # not random: the weights are copied in below
            warnings.simplefilter("ignore")
        base = build_backbone(backbone, weights=weights, train_from=train_from)
    if authors_base is not None:
        authors_base(base)
    if pixel_mean is not None:
        base = nn.Sequential(MatConvNetInput(pixel_mean), *base)
    return PlaceModel(base, pool, whitening, config)
