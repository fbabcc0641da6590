"""Base networks cut at the last convolution, before its ReLU (paper Sec. 4).

AlexNet ends at conv5 (256 channels), VGG-16 at conv5_3 (512 channels). The
ReLU after the cut is dropped, as in the paper: NetVLAD and f_max then see
signed responses.

Weights:
    "imagenet"  torchvision's ImageNet weights, from the torch hub cache or
                downloaded; without network the error says where to put the
                file.
    PATH        a ``.pth`` state dict: a whole torchvision model
                (``features.*`` and ``classifier.*``), or only ``features.*``.
    None        random initialisation (a warning: results are then not
                comparable with the paper).

``train_from`` names the first trainable conv layer; everything before it is
frozen. "authors" is the authors' depth for the backbone
(:data:`AUTHORS_TRAIN_FROM`: their ``backPropToLayer``, VGG-16 from conv5_1
as in their demo.m, AlexNet from conv2 as in the same file).
"last" (``build_model``'s default; training is not its business) trains
only the last conv layer, as the earlier CS4240 reproduction did. "all"
trains every layer, "none" freezes the whole base.

torchvision's AlexNet is not the authors' AlexNet (MatConvNet's CaffeNet,
``netID='caffe'``): 64/192/384/256/256 channels instead of 96/256/384/384/256,
no local response normalisation, and its ImageNet weights are torchvision's.
AlexNet numbers here are therefore not directly comparable with the paper's
"(A)" curves; VGG-16 has the same layers in both (the weights still differ:
MatConvNet's vd16 vs torchvision's).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from repro.errors import ConfigError, WeightsError

def _vgg16_features() -> nn.Sequential:
    # Only the conv part: building all of torchvision's vgg16 spends seconds
    # initialising 120M classifier weights that are thrown away. Same layers
    # and indices as torchvision.models.vgg16().features (a test checks).
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=False)
    for m in features.modules():  # torchvision.models.VGG's own initialisation of its convs
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return features


def _alexnet_features() -> nn.Sequential:
    return torchvision.models.alexnet(weights=None).features


# name -> (features constructor, weights enum name, channels of the cut,
#          conv layer names in order, index of the last conv in .features)
BACKBONES = {
    "alexnet": (_alexnet_features, "AlexNet_Weights", 256,
                ["conv1", "conv2", "conv3", "conv4", "conv5"], 10),
    "vgg16": (_vgg16_features, "VGG16_Weights", 512,
              ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
               "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"], 28),
}


# The authors' backPropToLayer (README_more.md, demo.m): the first trained conv.
AUTHORS_TRAIN_FROM = {"alexnet": "conv2", "vgg16": "conv5_1"}

# Smallest square input (pixels) that still gives a 1x1 conv map; measured
# by tests/test_model.py. Receptive fields are far larger: use real sizes.
MIN_INPUT_SIZE = {"alexnet": 31, "vgg16": 16}


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return name


def backbone_channels(name: str) -> int:
    """D, the channels of the cut conv map."""
    return BACKBONES[check_backbone(name)][2]


def _imagenet_state_dict(name: str) -> dict:
    enum = getattr(torchvision.models, BACKBONES[name][1]).IMAGENET1K_V1
    filename = os.path.basename(enum.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        return enum.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # URLError, socket errors, HTTP errors, partial files
        raise WeightsError(
            f"ImageNet weights for {name} are not in the torch hub cache and could not be downloaded "
            f"({type(exc).__name__}: {exc}).\n"
            f"  Either download {enum.url}\n"
            f"  on a machine with internet and copy it to {cached}\n"
            f"  (or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{filename} exists),\n"
            f"  or pass the file's path as the weights (--weights PATH), or use weights=None\n"
            f"  (random initialisation; results are then not comparable with the paper)."
        ) from None


def _load_weights_file(path: Path, name: str) -> dict:
    from repro.safe_load import load_torch_file

    state = load_torch_file(path, "weights file (a PyTorch state dict)")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor)")
    return state


def _fit_features(features: nn.Sequential, state: dict, name: str, source: str) -> None:
    """Load the ``features.*`` entries of ``state`` into the cut ``features``."""
    own = features.state_dict()
    given = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not given:  # a features-only dict without the prefix
        given = dict(state)
    missing = [k for k in own if k not in given]
    bad_shape = [f"{k}: file {list(given[k].shape)} vs {name} {list(own[k].shape)}"
                 for k in own if k in given and given[k].shape != own[k].shape]
    if missing or bad_shape:
        detail = "; ".join(bad_shape[:3]) if bad_shape else f"missing {missing[:4]}"
        raise WeightsError(f"{source} does not hold {name} weights ({detail}). "
                           f"Pass a torchvision {name} state dict, or choose the matching --backbone.")
    features.load_state_dict({k: given[k] for k in own})


def build_backbone(name: str = "alexnet", weights="imagenet", train_from: str = "last") -> nn.Sequential:
    """The base network as an ``nn.Sequential``: images ``[B, 3, H, W]`` ->
    conv map ``[B, D, H', W']`` (D = 256 for AlexNet, 512 for VGG-16)."""
    constructor, _, _, conv_names, last = BACKBONES[check_backbone(name)]
    trainable = _first_trainable_index(name, train_from)  # validate before any loading
    features = constructor()[: last + 1]  # up to the last conv, no ReLU
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        warnings.warn(f"{name} is randomly initialised (weights=None): results are not comparable "
                      "with the paper, which starts from ImageNet weights.", stacklevel=2)
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        _fit_features(features, _imagenet_state_dict(name), name, "torchvision's ImageNet checkpoint")
    else:
        path = Path(weights)
        _fit_features(features, _load_weights_file(path, name), name, str(path))
    conv_indices = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert len(conv_indices) == len(conv_names)
    first = conv_indices[trainable] if trainable < len(conv_indices) else len(features)
    for i, module in enumerate(features):
        for p in module.parameters():
            p.requires_grad = i >= first
    return features


def check_train_from(name: str, train_from: str) -> str:
    """ConfigError unless ``train_from`` names a layer of backbone ``name`` (cheap; before any work)."""
    _first_trainable_index(check_backbone(name), train_from)
    return train_from


def _first_trainable_index(name: str, train_from: str) -> int:
    """Position (in conv order) of the first trainable conv layer."""
    conv_names = BACKBONES[name][3]
    if train_from == "authors":
        train_from = AUTHORS_TRAIN_FROM[name]
    if train_from == "last":
        return len(conv_names) - 1
    if train_from == "all":
        return 0
    if train_from == "none":
        return len(conv_names)
    if train_from not in conv_names:
        raise ConfigError(f"train_from={train_from!r} is not a layer of {name}; "
                          f"choose 'authors', 'last', 'all', 'none' or one of {conv_names}")
    return conv_names.index(train_from)


class MatConvNetInput(nn.Module):
    """ImageNet-normalised images -> the authors' (MatConvNet) input convention.

    This project's image pipeline gives ``(x/255 - IMAGENET_MEAN) / IMAGENET_STD``;
    the authors' networks take RGB in 0..255 minus their average image, with
    no division by a standard deviation. The exact per-channel affine map
    between the two, ``y = 255 * (x * std + mean) - pixel_mean``, put in front
    of a base, lets the authors' weights see what they were trained on while
    every loader, cache and evaluation of the project stays unchanged.

    Args:
        pixel_mean: the 3 RGB values (0..255) of the network's average image.
    """

    def __init__(self, pixel_mean):
        super().__init__()
        from repro.data.images import IMAGENET_MEAN, IMAGENET_STD

        mean = torch.tensor([float(v) for v in pixel_mean], dtype=torch.float32)
        if mean.shape != (3,):
            raise ConfigError(f"pixel_mean must be 3 RGB values, got {list(pixel_mean)}")
        self.register_buffer("scale", 255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (255.0 * torch.tensor(IMAGENET_MEAN) - mean).view(1, 3, 1, 1),
                             persistent=False)
        self.pixel_mean = mean.tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in the module's precision (model.double() runs the whole network in float64)
        return torch.addcmul(self.shift, x.to(self.shift.dtype), self.scale)

    def extra_repr(self) -> str:
        return "pixel_mean=[" + ", ".join(f"{v:.3f}" for v in self.pixel_mean) + "]"


def _to_channels_last(module, args):
    return (args[0].contiguous(memory_format=torch.channels_last),)


def _to_contiguous(module, args, output):
    return output.contiguous()


def use_channels_last(base: nn.Module, enabled: bool = True) -> nn.Module:
    """Run ``base``'s convolutions in channels-last memory layout (NHWC).

    Speed only: the same function up to float rounding (oneDNN and cuDNN
    pick other kernels: about 1.5x faster for VGG-16 at 480x640 on this
    project's 2-core CPU, and the layout tensor cores want on a GPU). The
    weights are converted in place; forward hooks convert the input and
    hand the pooling layer an ordinary contiguous map. Nothing of it is
    saved in checkpoints. ``enabled=False`` is a no-op, so the float32
    contiguous path stays the reference (the default report's runs).
    """
    if not enabled or getattr(base, "_channels_last", False):
        return base
    base.to(memory_format=torch.channels_last)
    base.register_forward_pre_hook(_to_channels_last)
    base.register_forward_hook(_to_contiguous)
    base._channels_last = True
    return base
