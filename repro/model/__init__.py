"""The descriptor network: base (AlexNet/VGG-16) -> NetVLAD or f_max (-> PCA whitening)."""
from repro.model.backbone import BACKBONES, backbone_channels, build_backbone
from repro.model.checkpoint import load_model, save_model
from repro.model.fmax import FMaxPool
from repro.model.init import fit_centroids, init_netvlad, sample_local_descriptors
from repro.model.netvlad import NetVLAD, alpha_from_ratio
from repro.model.place_model import POOLINGS, PlaceModel, build_model
from repro.model.whitening import PCAWhitening, crop_descriptors

__all__ = [
    "BACKBONES", "POOLINGS", "FMaxPool", "NetVLAD", "PCAWhitening", "PlaceModel",
    "alpha_from_ratio", "backbone_channels", "build_backbone", "build_model", "crop_descriptors",
    "fit_centroids", "init_netvlad", "load_model", "sample_local_descriptors", "save_model",
]
