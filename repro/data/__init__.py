"""Datasets: dbStruct files, geographic ground truth, images, split loading."""
from repro.data.datasets import DATASETS, DatasetLayout, PlaceSplit, load_split
from repro.data.dbstruct import FIELDS, DbStruct, load_dbstruct, save_dbstruct
from repro.data.ground_truth import (
    eval_positives,
    non_negatives,
    panorama_ids,
    sample_negatives,
    train_positives,
)
from repro.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageListDataset,
    check_images,
    load_rgb8,
    to_rgb8,
    to_tensor,
)
from repro.data.vprbench import VPRBench, load_vprbench

__all__ = [
    "DATASETS", "DatasetLayout", "PlaceSplit", "load_split",
    "FIELDS", "DbStruct", "load_dbstruct", "save_dbstruct",
    "eval_positives", "train_positives", "non_negatives", "sample_negatives", "panorama_ids",
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageListDataset", "check_images", "load_rgb8", "to_rgb8", "to_tensor",
    "VPRBench", "load_vprbench",
]
