"""Command line: ``python -m repro {evaluate,extract,make-city,calibrate-city,smoke,train} ...``.

User errors (:class:`repro.errors.ReproError`) print one clear message and
exit with status 2; nothing else is caught, so bugs keep their traceback.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from repro.errors import ConfigError, report_errors

DATASET_CHOICES = ("pitts30k", "pitts250k", "tokyo247", "tokyoTM", "synthetic", "vprbench")


def _weights(value: str):
    return None if value.lower() == "none" else value


def _workers(value: str):
    """--workers / --num-workers: an integer, or "auto" (repro.data.loader.resolve_workers)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {value!r}") from None


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    """How fast, not what: precision, channels-last layout, DataLoader workers (evaluate, extract)."""
    p.add_argument("--workers", type=_workers, default=0,
                   help="DataLoader worker processes decoding the images (default 0); 'auto': 0 on a CPU, on CUDA "
                        "the machine's cores less one")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bf16"),
                   help="the base network's convolutions: float32 (the reference), bf16 (autocast), auto (default: "
                        "bf16 on CUDA, float32 on a CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="convolutions in NHWC layout (speed only); default: on CUDA only")


def _apply_speed_args(model, args, device):
    """The model in the precision and memory layout asked for, on ``device``."""
    from repro.model.backbone import use_channels_last
    from repro.model.precision import resolve_precision

    model.set_precision(resolve_precision(args.precision, device))
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    use_channels_last(model.base, channels_last)
    return model.to(device)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="alexnet", choices=("alexnet", "vgg16"))
    p.add_argument("--weights", default="imagenet", type=_weights,
                   help="'imagenet' (torchvision; hub cache or download), 'none' (random init), a .pth PATH "
                        "(backbone state dict), or the authors' released network: a converted PATH.mat "
                        "(Pitts30K_struct.mat, TokyoTM_struct.mat) or authors:PATH (overrides the model options)")
    p.add_argument("--pooling", default="netvlad", choices=("netvlad", "fmax"))
    p.add_argument("--num-clusters", type=int, default=64, help="NetVLAD K (paper: 64)")
    p.add_argument("--alpha", type=float, default=None,
                   help="NetVLAD alpha; default: the paper's rule (ratio 100) from k-means on the database images")
    p.add_argument("--assignment", default="fixed_bias", choices=("paper", "fixed_bias"),
                   help="NetVLAD soft-assignment: fixed_bias (the authors' layerVLAD, used in all their "
                        "experiments; default) or paper (the paper's derivation, layerVLADv2)")
    p.add_argument("--fmax-size", type=int, nargs=2, default=(1, 1), metavar=("H", "W"),
                   help="f_max output grid (1 1 = the paper's f_max)")
    p.add_argument("--whiten-dim", type=int, default=None, help="PCA-whiten to this many dims (paper: 4096)")
    p.add_argument("--checkpoint", default=None, help="a model saved by repro (overrides the model options)")
    p.add_argument("--no-whiten", action="store_true",
                   help="with --weights PATH.mat or --checkpoint: stop before the model's PCA whitening (the "
                        "authors' networks: at the 32768-D NetVLAD vector, in their dim-major order)")


def _pretrained_model(args):
    """The model of ``--weights PATH.mat`` / ``authors:PATH`` or ``--checkpoint`` (None: built from the options).

    Loaded without running code from the file (scipy for .mat, weights_only for checkpoints)."""
    from repro.model import load_model
    from repro.model.authors import is_authors_weights, load_authors_model

    authors = is_authors_weights(args.weights)
    if authors and args.checkpoint:
        raise ConfigError("give either --checkpoint or the authors' model (--weights PATH.mat), not both")
    if authors:
        return load_authors_model(args.weights, whiten=not args.no_whiten)
    if args.checkpoint:
        model = load_model(args.checkpoint)
        if args.no_whiten:
            model.whitening = None
        return model
    if args.no_whiten:
        raise ConfigError("--no-whiten applies to a loaded model (--weights PATH.mat or --checkpoint); without one, "
                          "whitening is only applied when --whiten-dim is given")
    return None


def _add_fit_args(p: argparse.ArgumentParser, default_source: str) -> None:
    """What an off-the-shelf model fits (NetVLAD centroids and alpha, PCA whitening) and on which images."""
    p.add_argument("--init-from", default=None, metavar="DATASET:ROOT[:SPLIT]",
                   help="fit NetVLAD's centroids and alpha, and any whitening, on this dataset's database images "
                        f"(split default: train), e.g. tokyoTM:/data/tokyoTM for Tokyo 24/7. Default: {default_source}")
    p.add_argument("--init-images", type=int, default=500, help="images sampled for the NetVLAD k-means (authors: 500)")
    p.add_argument("--init-descriptors", type=int, default=50_000, help="descriptors for k-means (authors: 50000)")
    p.add_argument("--kmeans-iterations", type=int, default=100, help="k-means iterations (authors: 100)")
    p.add_argument("--whiten-fit-images", type=int, default=10_000,
                   help="training database images PCA whitening is fitted on (authors: 10000)")
    p.add_argument("--seed", type=int, default=0)


def _check_model_args(args) -> bool:
    """The model and fit options (cheap, before any data): returns whether the model comes from a file."""
    from repro.data.datasets import parse_dataset_spec
    from repro.model.authors import is_authors_weights
    from repro.model.place_model import check_model_options

    pretrained = bool(args.checkpoint) or is_authors_weights(args.weights)
    if not pretrained:
        check_model_options(args.backbone, args.pooling, args.alpha, tuple(args.fmax_size))
    _check_counts(args, FIT_COUNTS)
    if args.init_from:
        parse_dataset_spec(args.init_from, default_split="train", what="--init-from")
    return pretrained


def _built_and_fitted(args, model, fit_paths, fit_name: str, init: dict, device, init_netvlad: bool, whiten: bool):
    """The model from the options when none was loaded, its NetVLAD initialised and/or its whitening fitted
    on ``fit_paths`` (recorded in ``init``); returns the model."""
    import torch

    from repro.evaluate import fit_whitening, init_netvlad_from_images, whitening_images
    from repro.model import build_model

    if model is None:
        torch.manual_seed(args.seed)
        model = build_model(args.backbone, args.pooling, weights=args.weights,
                            num_clusters=args.num_clusters, alpha=100.0 if args.alpha is None else args.alpha,
                            assignment=args.assignment, fmax_output_size=tuple(args.fmax_size))
    model = _apply_speed_args(model, args, device)
    if init_netvlad:
        init["netvlad"] = init_netvlad_from_images(
            model, fit_paths, args.image_size, num_images=args.init_images,
            num_descriptors=args.init_descriptors, alpha=args.alpha, device=device, seed=args.seed,
            kmeans_iterations=args.kmeans_iterations)
        print(f"NetVLAD initialised from {init['netvlad']['num_descriptors']} descriptors of {fit_name}: "
              f"alpha={init['netvlad']['alpha']:.4g} (rule: {init['netvlad']['alpha_rule']:.4g})")
    if whiten:
        from repro.data.loader import resolve_workers

        model = fit_whitening(model, fit_paths, args.whiten_dim, args.image_size, args.batch_size, device,
                              resolve_workers(args.workers, device), args.whiten_fit_images, args.seed)
        init["whitening"] = {"dim": args.whiten_dim,
                             "num_images": len(whitening_images(fit_paths, args.whiten_fit_images, args.seed))}
    return model


def _check_counts(args, names) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.image_size is not None and min(args.image_size) < 1:
        raise ConfigError(f"--image-size must be two positive integers H W, got {args.image_size}")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="recall@N of a model on a dataset split")
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES)
    p.add_argument("--data-root", required=True, help="the dataset's root folder (layouts: repro/data/datasets.py)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    _add_model_args(p)
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize images; default: native size, one image at a time")
    p.add_argument("--ns", type=int, nargs="+", default=[1, 5, 10, 20], help="the N of recall@N")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_speed_args(p)
    _add_fit_args(p, default_source="the evaluated dataset's training split; a dataset without one falls back, "
                                     "with a warning, to the evaluated database itself (transductive)")
    p.add_argument("--check-images", choices=("exists", "decode"), default="exists",
                   help="before starting: only check every image exists (fast), or fully decode each")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from repro.data.datasets import load_split
    from repro.data.loader import resolve_workers
    from repro.evaluate import check_split_images, check_whitening_fit, evaluate_split, fit_split, resolve_device
    from repro.model.place_model import pooled_dim
    from repro.atomic import write_json
    from repro.evaluate import print_recall_table

    # Options first (cheap), then the data, then the model: every user error before any long work.
    _check_model_args(args)
    if args.json:
        _check_writable(Path(args.json))
    device = resolve_device(args.device)
    split = load_split(args.dataset, args.data_root, args.split)  # fails fast on a bad root or .mat
    model = _pretrained_model(args)  # its backbone decides the image checks
    backbone = model.config["backbone"] if model else args.backbone
    # images (headers, truncation, size) and the ground truth (a single place, no positives) before the model
    check_split_images(split, backbone, args.image_size, decode=args.check_images == "decode")
    init_netvlad = model is None and args.pooling == "netvlad"
    whiten = args.whiten_dim is not None and (model is None or model.whitening is None)
    if whiten:
        dim = model.pooled_dim if model else pooled_dim(args.backbone, args.pooling, args.num_clusters,
                                                        tuple(args.fmax_size))
        if args.whiten_dim > dim:
            raise ConfigError(f"--whiten-dim {args.whiten_dim} exceeds the descriptor's {dim} dimensions")
    source, init = (fit_split(args.dataset, args.data_root, split, args.init_from) if init_netvlad or whiten
                    else (None, {"from_checkpoint": args.checkpoint} if args.checkpoint
                          else {"from_weights": str(args.weights)}))  # nothing fitted here: all from the file
    if source is not None:
        if source is not split:
            check_split_images(source, backbone, args.image_size)
        if whiten:
            check_whitening_fit(args.whiten_dim, min(source.num_db, args.whiten_fit_images), source.name)
    model = _built_and_fitted(args, model, source.db_paths if source is not None else None,
                              f"{source.name} database images" if source is not None else "", init, device,
                              init_netvlad, whiten)
    workers = resolve_workers(args.workers, device)
    result = evaluate_split(model, split, args.image_size, ns=args.ns, batch_size=args.batch_size,
                            device=device, num_workers=workers)
    print_recall_table(split.name, model.config, result)
    if source is not None:
        fitted = " and ".join(k for k, v in (("centroids, alpha", init_netvlad), ("whitening", whiten)) if v)
        print(f"  {fitted} fitted on: {init['dataset']} {init['split']} database ({init['num_images']} images)"
              + (" -- the evaluated database itself (transductive)" if init["transductive"] else ""))
    if args.json:
        write_json(args.json, {
            "dataset": args.dataset, "split": args.split, "name": split.name, "config": model.config,
            "checkpoint": args.checkpoint, "weights": None if args.weights is None else str(args.weights),
            "init": init, "seed": args.seed,
            "recall": {str(n): v for n, v in result["recall"].items()},
            "num_queries": result["num_queries"], "num_without_positive": result["num_without_positive"],
            "dim": result["dim"], "seconds": result["seconds"],
        })
        print(f"wrote {args.json}")
    return 0


FIT_COUNTS = ("whiten_dim", "batch_size", "init_images", "init_descriptors", "kmeans_iterations", "whiten_fit_images")


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="descriptors of every image in a folder (or of a dataset's database or "
                                       "queries) as a float32 [N, D] .npy, with a names file beside it",
                       description="Descriptors of every image in --images DIR (recursively, sorted by path), or "
                                   "of a dataset split's database or query images, from the authors' released "
                                   "network (--weights PATH.mat), a repro checkpoint (--checkpoint), or an "
                                   "off-the-shelf model built from the options. Writes OUT.npy (float32 [N, D]), "
                                   "OUT.names.txt (row order) and OUT.json (the model and its inputs).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", default=None, metavar="DIR", help="a folder of images")
    source.add_argument("--dataset", default=None, choices=DATASET_CHOICES,
                        help="a dataset (with --data-root, --split and --set)")
    p.add_argument("--data-root", default=None, help="the dataset's root folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--set", default="database", choices=("database", "queries"), help="which images of the split")
    p.add_argument("--out", required=True, metavar="OUT.npy")
    _add_model_args(p)
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize every image; default: native size (images of equal size are batched together)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_speed_args(p)
    _add_fit_args(p, default_source="for --dataset, its training split; for --images, the folder's own images")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args) -> int:
    from repro.data.datasets import load_split, parse_dataset_spec
    from repro.data.images import check_images
    from repro.data.loader import resolve_workers
    from repro.evaluate import extract_descriptors, fit_split, resolve_device
    from repro.extract import check_output, folder_images, write_descriptors
    from repro.model.backbone import MIN_INPUT_SIZE

    # options, output folder, images, model: every user error before the extraction starts
    pretrained = _check_model_args(args)
    out = check_output(args.out)
    device = resolve_device(args.device)
    split = None
    if args.images:
        root = Path(args.images)
        paths = folder_images(root)
        names = [p.relative_to(root).as_posix() for p in paths]
        what = f"images in {root}"
    else:
        if not args.data_root:
            raise ConfigError("--dataset needs --data-root")
        split = load_split(args.dataset, args.data_root, args.split)
        paths = split.db_paths if args.set == "database" else split.q_paths
        data_root = Path(args.data_root).resolve()
        names = [Path(p).resolve().relative_to(data_root).as_posix() if Path(p).resolve().is_relative_to(data_root)
                 else str(p) for p in paths]
        what = f"{split.name} {args.set} images"
    model = _pretrained_model(args)
    backbone = model.config["backbone"] if model else args.backbone
    check_images(paths, min_size=None if args.image_size else MIN_INPUT_SIZE[backbone], what=what)
    init_netvlad = model is None and args.pooling == "netvlad"
    whiten = args.whiten_dim is not None and (model is None or model.whitening is None)
    init = {"from_checkpoint": args.checkpoint} if args.checkpoint else (
        {"from_weights": str(args.weights)} if pretrained else {})
    fit_paths = None
    if init_netvlad or whiten:
        if split is not None:  # as evaluate: the dataset's training split, or --init-from
            source, init = fit_split(args.dataset, args.data_root, split, args.init_from)
            fit_paths = source.db_paths
        elif args.init_from:
            ds, fit_root, sp = parse_dataset_spec(args.init_from, default_split="train", what="--init-from")
            fit_paths = load_split(ds, fit_root, sp).db_paths
            init = {"dataset": ds, "split": sp, "data_root": str(fit_root), "num_images": len(fit_paths),
                    "transductive": False}
        else:
            fit_paths = paths
            init = {"dataset": "folder", "split": None, "data_root": str(args.images), "num_images": len(paths),
                    "transductive": True}
            fitted = " and ".join(k for k, v in (("NetVLAD's centroids and alpha", init_netvlad),
                                                 ("the whitening", whiten)) if v)
            print(f"fitting {fitted} on the extracted images themselves (--init-from DATASET:ROOT fits them on "
                  "another dataset's training images)")
        if fit_paths is not paths:
            check_images(fit_paths, min_size=None if args.image_size else MIN_INPUT_SIZE[backbone],
                         what="images to fit on")
    fit_name = (f"the {len(paths)} extracted images" if init.get("transductive") and not split
                else f"{init.get('dataset')} {init.get('split')} database images")
    model = _built_and_fitted(args, model, fit_paths, fit_name, init, device, init_netvlad, whiten)
    workers = resolve_workers(args.workers, device)
    descriptors = extract_descriptors(model, paths, args.image_size, args.batch_size, device, workers,
                                      desc=f"extract ({len(paths)} images)")
    written = write_descriptors(out, descriptors, names, {
        "images": str(args.images) if args.images else None,
        "dataset": args.dataset, "data_root": args.data_root, "split": args.split if args.dataset else None,
        "set": args.set if args.dataset else None, "config": model.config, "checkpoint": args.checkpoint,
        "weights": None if args.weights is None else str(args.weights),
        "image_size": list(args.image_size) if args.image_size else None, "init": init,
    })
    print(f"wrote {descriptors.shape[0]} x {descriptors.shape[1]} descriptors: " + ", ".join(map(str, written)))
    return 0


def _add_make_city(sub) -> None:
    """``make-city``: the same options as ``python -m repro.data.synthetic`` (one parser, in that package)."""
    from repro.data.synthetic.cli import build_parser, run

    p = sub.add_parser("make-city", help="generate the synthetic geo-tagged city (the embedded benchmark), in the "
                                         "project's layout or, with --layout, in Pittsburgh's / Tokyo's")
    build_parser(p)
    p.set_defaults(func=run)


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate-city", help="untrained baselines per query condition on the synthetic city")
    p.add_argument("--preset", default="default", choices=("tiny", "default", "large"))
    p.add_argument("--city-seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    p.add_argument("--out", default=None, help="CSV path (default results/calibration/...)")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from repro.data.synthetic.calibration import calibrate_city

    calibrate_city(args.preset, args.city_seed, args.split, args.seed, out=args.out)
    return 0


def _add_smoke(sub) -> None:
    p = sub.add_parser("smoke", help="short end-to-end check: tiny synthetic city, untrained model, recall@N")
    p.add_argument("--out", default="results/smoke_check.json")
    p.set_defaults(func=cmd_smoke)


def cmd_smoke(args) -> int:
    from repro.smoke import run_smoke

    run_smoke(args.out)
    return 0


def _add_train(sub) -> None:
    """``train``: one option per field of :class:`repro.train.TrainConfig` (same names, dashes)."""
    import dataclasses
    import typing

    from repro.train import TrainConfig

    p = sub.add_parser("train", help="weakly supervised training (NetVLAD / f_max), as in the authors' code",
                       description="Train a model. Every option is a field of repro.train.TrainConfig; unset "
                                   "options take the profile's value. Profile 'auto': synthetic_default (sized for "
                                   "5 minutes on 2 CPU cores) for --dataset synthetic, else the authors' settings.")
    p.add_argument("--profile", default="auto", choices=("auto", "synthetic_default", "paper", "authors"),
                   help="base settings: synthetic_default, paper (VGG-16, conv5_1 on, whitening 4096), "
                        "authors (TrainConfig defaults), auto (default)")
    choices = {"dataset": ("synthetic", "pitts30k", "pitts250k", "tokyoTM"), "backbone": ("alexnet", "vgg16"), "pooling": ("netvlad", "fmax"),
               "optimizer": ("sgd", "adam"), "assignment": ("paper", "fixed_bias"),
               "cache_dtype": ("auto", "float32", "float16"), "loss_normalization": ("violating", "none"),
               "precision": ("auto", "float32", "bf16"),
               "synthetic_preset": ("tiny", "default", "large")}
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = str(hints[f.name])
        # SUPPRESS: options not given stay absent, so an explicit "none" can set a field to None
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"(TrainConfig.{f.name}; default {f.default!r})")
        if hint == "<class 'bool'>":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if f.name == "num_workers":  # an integer or "auto"
            kw.update(type=_workers)
        elif "tuple" in hint and "str" in hint:  # --test-on DATASET:ROOT ...
            kw.update(nargs="+")
        elif "tuple" in hint:  # --image-size H W (or "none"), --fmax-output-size H W, --ns N...
            kw.update(nargs="+", type=_optional(int))
        elif "int" in hint and "float" not in hint:
            kw.update(type=_optional(int) if "None" in hint else int)
        elif "float" in hint:
            kw.update(type=_optional(float) if "None" in hint else float)
        elif f.name == "weights":
            kw.update(type=_weights)
        elif "None" in hint:
            kw.update(type=_optional(str))
        if f.name in choices:
            kw.update(choices=choices[f.name])
        p.add_argument(flag, **kw)
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="train with N processes on this machine, one per GPU: relaunches this command under "
                        "torchrun (python -m torch.distributed.run --standalone --nproc_per_node N -m repro train "
                        "...); the same as starting it with torchrun yourself")
    p.set_defaults(func=cmd_train)


def _optional(cast):
    def parse(value: str):
        return None if value.lower() == "none" else cast(value)
    parse.__name__ = cast.__name__
    return parse


def train_config_from_args(args):
    """The TrainConfig of parsed ``train`` arguments: the profile's settings, then every option given."""
    import dataclasses

    from repro.train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    for k in ("image_size", "fmax_output_size", "ns"):
        if given.get(k) is not None:
            given[k] = None if None in given[k] else tuple(given[k])
    if "test_on" in given:
        given["test_on"] = tuple(given["test_on"])
    profile = args.profile
    if profile == "auto":
        profile = "synthetic_default" if given.get("dataset", "synthetic") == "synthetic" else "authors"
    if profile == "synthetic_default":
        return TrainConfig.synthetic_default(**given)
    if profile == "paper":
        return TrainConfig.paper(**given)
    return TrainConfig(**given)


def cmd_train(args) -> int:
    import os

    from repro.train import train

    config = train_config_from_args(args)
    _check_train_config(config)
    if args.nproc_per_node is not None and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.nproc_per_node, args.argv)
    result = train(config)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    if result.test is not None:
        print(f"test recall@N (best epoch {result.best_epoch}): "
              + ", ".join(f"R@{n} {v:.1f}" for n, v in result.test["recall"].items()))
    print(f"wrote {result.record_path}")
    return 0


def train_arguments(config) -> list[str]:
    """The ``python -m repro train`` arguments that give ``config`` (a TrainConfig): ``--profile
    authors`` (the class defaults) and one option per field that differs from them."""
    import dataclasses

    from repro.train import TrainConfig

    def word(v):
        return "none" if v is None else str(v)

    args = ["train", "--profile", "authors"]
    for f in dataclasses.fields(TrainConfig):
        value, default = getattr(config, f.name), f.default
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, (tuple, list)):
            args += [flag, *map(word, value)] if value else []
        else:
            args += [flag, word(value)]
    return args


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """This ``train`` command again under torchrun with ``nproc`` processes (checked first, here)."""
    import sys

    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {nproc}")
    rest, skip = [], False
    for a in argv:  # the command without --nproc-per-node
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            rest.append(a)
    command = ["--standalone", f"--nproc_per_node={nproc}", "-m", "repro", *rest]
    print("torchrun " + " ".join(command), file=sys.stderr, flush=True)
    try:
        torchrun(command)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # torchrun's ChildFailedError: a rank failed, its error is printed above
        print(f"error: a rank of the torchrun job failed ({type(exc).__name__}); its message and torchrun's "
              "summary are above", file=sys.stderr)
        return 1
    return 0


def _check_writable(path: Path) -> None:
    """ConfigError unless a file can be written beside ``path`` (before any long work)."""
    from repro.atomic import check_writable

    check_writable(path.parent if str(path.parent) else Path("."), what=f"results ({path.name})")


def _check_train_config(config) -> None:
    """What ``train`` would only find out late: model options (an alpha of 0
    is checked after k-means otherwise) and unwritable output folders."""
    from repro.atomic import check_writable
    from repro.model.place_model import check_model_options

    config.validate()
    check_model_options(config.backbone, config.pooling, config.alpha, config.fmax_output_size)
    out_dir, record = config.paths()
    check_writable(out_dir, what="checkpoints (out_dir)")
    check_writable(record.parent, what=f"the training record ({record.name})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(sub)
    _add_extract(sub)
    _add_make_city(sub)
    _add_calibrate(sub)
    _add_smoke(sub)
    _add_train(sub)
    return parser


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return report_errors(args.func, args)
