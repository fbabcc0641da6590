"""Every training setting as a named field of one dataclass.

Defaults are the authors' (their released MATLAB ``trainWeakly.m``, whose
option names are given in brackets) unless a comment says otherwise. Two
named profiles bundle the changes for a setting:

* :meth:`TrainConfig.synthetic_default` - the offline benchmark, sized so a
  run on the synthetic default city fits in 5 minutes on 2 CPU cores;
* :meth:`TrainConfig.paper` - the paper's Pittsburgh/Tokyo run (needs the
  images and a GPU).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from repro.errors import ConfigError
from repro.model.init import FAISS_DEFAULT_KMEANS

OPTIMIZERS = ("sgd", "adam")
LOSS_NORMALIZATIONS = ("violating", "none")
# The learning rate. The paper (Sec. 4, "Implementation details") says only:
# "the learning rate [is] 0.001 or 0.0001 depending on the experiment".
# trainWeakly.m's default is 1e-4 ('learningRate', 0.0001). The authors'
# demo.m (Relja/netvlad at 652dbe7, lines 129-139, "Pittsburgh examples")
# sets it per dataset: `if doPitts250k, lr= 0.0001; else lr= 0.001; end`
# ("% Pittsburgh 30k"), and lr= 0.0001 for Tokyo Time Machine (line 66).
# That split is the default here; TrainConfig.lr overrides it.
SLOW_LR_DATASETS = ("pitts250k", "tokyoTM")


@dataclass
class TrainConfig:
    # --- data
    dataset: str = "synthetic"
    data_root: str | None = None            # None (synthetic only): the generated default city
    synthetic_preset: str = "default"       # which synthetic city when data_root is None
    city_seed: int = 0                      # its generator seed
    image_size: tuple[int, int] | None = None   # (H, W) resize; None = native size (authors)
    test_split: str | None = "test"         # None: no final test (tokyoTM has no test split)

    # --- model (repro.model.build_model)
    backbone: str = "alexnet"
    weights: str | None = "imagenet"        # None: random init (not comparable with the paper)
    pooling: str = "netvlad"
    num_clusters: int = 64                  # K
    train_from: str = "authors"             # first trainable conv [backPropToLayer]; "authors": VGG-16
                                            # from conv5_1, AlexNet from conv2 (their demo.m)
    alpha: float | None = None              # None: the paper's rule from k-means (ratio 100)
    assignment: str = "fixed_bias"          # the authors' layerVLAD, used in all their experiments
                                            # (README_more.md); "paper": the paper's derivation (layerVLADv2)
    fmax_output_size: tuple[int, int] = (1, 1)
    init_images: int = 500                  # k-means on descriptors of 500 training db images
    init_descriptors: int = 50_000          # ... 50k of them (getClusters.m: 100 per image)
    kmeans_iterations: int = 100            # getClusters.m: yael_kmeans(..., 'niter', 100)
    kmeans_points_per_centroid: int | None = None   # None: cluster all init_descriptors (authors);
                                            # faiss's own default subsamples to 256 per centroid
    whiten_dim: int | None = None           # PCA whitening fitted after training (paper: 4096)
    whiten_fit_images: int = 10_000         # training db images the whitening is fitted on

    # --- training tuples and hard-negative mining
    pos_radius: float | None = None         # None: the dbStruct's sqrt(nonTrivPosDistSqThr) = 10 m
    pos_min_dist: float = 1.0               # potential positives need d > this (metres): dbBase.m's
                                            # nontrivialPosQ keeps dSq > 1; 0 keeps them all
    neg_radius: float | None = None         # None: the dbStruct's posDistThr = 25 m
    margin: float = 0.1                     # m, on squared distances [margin]
    num_random_negatives: int = 1000        # [nNegChoice]
    num_cached_negatives: int = 10          # hardest remembered per query for its next visit [nNegCache]
    num_hard_negatives: int = 10            # violating negatives kept per tuple [nNegCap]
    exclude_very_hard: bool = False         # ignore negatives closer than the positive ("semi-hard"
                                            # only); authors' option, false in all their runs [excludeVeryHard]
    num_positives: int = 1                  # authors: 1, the closest in the cache; >1 lets the loss
                                            # take the min over the k closest in current descriptors
    cache_refresh: int = 1000               # queries between descriptor-cache refreshes [compFeatsFrequency]
    cache_dtype: str = "auto"               # "float32", "float16" or "auto" (float16 above cache_fp16_gb)
    cache_fp16_gb: float = 1.0              # float32 estimate above which "auto" stores float16
    cache_memmap_gb: float = 4.0            # estimate above which the cache lives in a file (memmap)

    # --- optimisation
    optimizer: str = "sgd"                  # "sgd" (authors) or "adam" (the CS4240 reproduction)
    lr: float | None = None                 # None: demo.m's 1e-3 for pitts30k (and the synthetic city),
                                            # 1e-4 for pitts250k/tokyoTM [learningRate]; see SLOW_LR_DATASETS
    momentum: float = 0.9                   # SGD only [momentum]
    weight_decay: float = 1e-3              # [weightDecay]
    batch_size: int = 4                     # tuples per update [batchSize]
    lr_step: int = 5                        # epochs between lr changes [lrDownFreq]
    lr_gamma: float = 0.5                   # lr factor at each change [1/lrDownFactor]
    epochs: int = 30                        # [nEpoch]
    queries_per_epoch: int | None = None    # None: every training query each epoch (authors)
    loss_normalization: str = "violating"   # "violating": divide by the batch's violating triplets
                                            # (authors); "none": plain sum over tuples

    # --- validation and test
    val_queries: int = 1000                 # fixed random subset of val queries [nTestSample]
    select_n: int = 5                       # best epoch by val recall@select_n (authors: 5)
    ns: tuple[int, ...] = (1, 5, 10, 20)
    eval_untrained: bool = True             # also test the initialised, untrained model (epoch 0)
    test_on: tuple[str, ...] = ()           # more test sets, "DATASET:ROOT[:SPLIT]" each, e.g. Tokyo 24/7
                                            # for a TokyoTM run ("tokyo247:/data/tokyo247"), tested like the
                                            # test split (untrained, best epoch, whitened)

    # --- run
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 32
    num_workers: int | str = 0              # DataLoader worker processes for every image stream; "auto": 0 on a
                                            # CPU, on CUDA the process's share of the cores less one (the paper
                                            # profile); speed only: results are identical (tested)
    precision: str = "auto"                 # the base network's convolutions: "float32" (the reference), "bf16"
                                            # (autocast; pooling, loss and optimiser stay float32) or "auto": bf16
                                            # on CUDA, float32 on a CPU (repro.model.precision)
    tf32: bool = False                      # TF32 for CUDA float32 matmuls/convolutions (off: float32 means float32)
    dist_timeout_s: float = 1800.0          # torchrun: how long a collective waits for a silent rank before the
                                            # job stops with an error (a rank that dies stops the job at once)
    image_memory_gb: float = 2.0            # decoded images kept in RAM for the run (not the authors'; speed
                                            # only: results are identical); 0 = decode at every use
    deterministic: bool = True              # torch.use_deterministic_algorithms (warn_only)
    channels_last: bool = False             # convolutions in NHWC layout: speed only (~1.5x for VGG-16 on the
                                            # CPU here; what GPUs want), results equal up to float rounding
    run_name: str | None = None             # None: "{dataset}[_{preset}]_{backbone}_{pooling}_seed{seed}"
    out_dir: str | None = None              # checkpoints; None: <repo>/cache/train/<run_name>
    record_path: str | None = None          # None: <repo>/results/train/<run_name>.json
    resume: bool = False                    # continue from out_dir/last.pt if it exists
    progress: bool = True                   # a progress bar per epoch (plain text when not a TTY)
    verbose: bool = True                    # one log line per epoch, and setup messages

    # ------------------------------------------------------------------
    @classmethod
    def synthetic_default(cls, **overrides) -> "TrainConfig":
        """The offline benchmark run: randomly initialised AlexNet + NetVLAD on
        the synthetic default city, sized for <= 5 minutes on 2 CPU cores.

        Changes from the authors' settings (measured, see the README):
        * for time: K = 16 clusters, 96x128 images, 10 epochs (of all 400
          training queries), val on 200 queries, k-means on 20k descriptors of
          300 images. The cache is refreshed every 1000 queries as the
          authors', i.e. here at each epoch start; the lr halves after epoch 5
          (the authors' lr_step). 10 epochs, not 4: validation recall still
          rose at epoch 4 (test R@1 +3 points after 4 epochs, +8.5 to +10
          after 10, seeds 0 and 1; README).
        * for the random base (there are no ImageNet weights offline):
          every conv layer trains (train_from="all"), lr 1e-4 (1e-3 made
          val recall swing between 10 and 24% R@1; Adam at 1e-4 fell to
          6%; 6-epoch trials, seed 0), and negatives
          closer than the positive are left out (``exclude_very_hard``, an
          option of the authors' code that they left off). With the authors'
          hardest negatives from a random start the loss falls by shrinking
          all distances (mean pairwise d^2 of val database descriptors 1.93
          untrained -> 0.07 after 4 epochs, loss -> 10 x margin) and test
          recall does not improve; with exclude_very_hard: 1.38, and it does.
        * kept from before the paper path was aligned with the authors' code
          (so the committed report stays as it was measured): the paper's
          NetVLAD parameterisation (``assignment="paper"``, the authors use
          "fixed_bias") and faiss's k-means defaults (25 iterations on at
          most 256 descriptors per centroid, the authors 100 iterations on
          all); the README gives the measured effect of the latter.
        """
        base = dict(
            dataset="synthetic", weights=None, backbone="alexnet", pooling="netvlad",
            num_clusters=16, image_size=(96, 128), train_from="all", init_images=300, init_descriptors=20_000,
            epochs=10, queries_per_epoch=None, lr=1e-4, lr_step=5, exclude_very_hard=True, val_queries=200,
            assignment="paper", **FAISS_DEFAULT_KMEANS,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper(cls, dataset: str = "pitts30k", data_root: str | None = None, **overrides) -> "TrainConfig":
        """The paper's VGG-16 + NetVLAD run (authors' settings; needs the images and a GPU).

        Every default of the class is the authors' (the fixed-bias layer, K =
        64, their trainable depth per backbone, 1 m < d <= 10 m positives,
        100 k-means iterations on all 50k descriptors, ...); this adds VGG-16
        from ImageNet weights and PCA whitening to 4096-D of NetVLAD
        (f_max stays unwhitened: the authors whiten to smaller dimensions
        for other methods, the paper's f_max curves are not whitened), and
        convolutions in channels-last layout, and DataLoader workers chosen
        from the machine's cores on CUDA (speed only; bf16 on CUDA is every
        profile's default, ``precision="auto"``).
        """
        pooling = overrides.get("pooling", "netvlad")
        from repro.data.datasets import DATASETS

        base = dict(dataset=dataset, data_root=data_root, backbone="vgg16", weights="imagenet",
                    whiten_dim=4096 if pooling == "netvlad" else None, channels_last=True, num_workers="auto",
                    # Tokyo Time Machine has no test split: it is tested on Tokyo 24/7 (test_on)
                    test_split="test" if "test" in DATASETS.get(dataset, DATASETS["pitts30k"]).splits else None)
        base.update(overrides)
        return cls(**base)

    # ------------------------------------------------------------------
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-4 if self.dataset in SLOW_LR_DATASETS else 1e-3

    def resolved_run_name(self) -> str:
        if self.run_name:
            return self.run_name
        if self.dataset == "synthetic":
            data = f"synthetic_{Path(self.data_root).name if self.data_root else self.synthetic_preset}"
        else:
            data = self.dataset
        return f"{data}_{self.backbone}_{self.pooling}_seed{self.seed}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        for k in ("image_size", "fmax_output_size", "ns", "test_on"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the option unless every value is usable."""
        def fail(msg):
            raise ConfigError(f"training option {msg}")

        from repro.data.datasets import DATASETS

        if self.dataset not in DATASETS or self.dataset == "vprbench":
            fail(f"dataset={self.dataset!r}: choose one of {[d for d in DATASETS if d != 'vprbench']} "
                 "(training needs GPS positions)")
        if self.dataset != "synthetic" and not self.data_root:
            fail(f"data_root is required for dataset={self.dataset!r} (the folder holding its images and .mat files)")
        from repro.model.place_model import check_model_options

        check_model_options(self.backbone, self.pooling, self.alpha, self.fmax_output_size)
        if self.optimizer not in OPTIMIZERS:
            fail(f"optimizer={self.optimizer!r}: choose one of {OPTIMIZERS}")
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            fail(f"loss_normalization={self.loss_normalization!r}: choose one of {LOSS_NORMALIZATIONS}")
        if self.cache_dtype not in ("auto", "float32", "float16"):
            fail(f"cache_dtype={self.cache_dtype!r}: choose 'auto', 'float32' or 'float16'")
        positive_ints = ("num_clusters", "kmeans_iterations", "num_random_negatives", "num_hard_negatives", "num_positives",
                         "cache_refresh", "batch_size", "lr_step", "epochs", "val_queries", "select_n",
                         "eval_batch_size", "init_images", "init_descriptors", "whiten_fit_images")
        for name in positive_ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                fail(f"{name}={v!r}: must be an integer >= 1")
        from repro.data.loader import check_workers
        from repro.model.precision import check_precision

        try:
            check_workers(self.num_workers)
            check_precision(self.precision)
        except ConfigError as exc:
            fail(str(exc))
        if not (isinstance(self.dist_timeout_s, (int, float)) and self.dist_timeout_s > 0):
            fail(f"dist_timeout_s={self.dist_timeout_s!r}: must be a number of seconds > 0")
        for name in ("num_cached_negatives", "seed", "city_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                fail(f"{name}={v!r}: must be an integer >= 0")
        if self.queries_per_epoch is not None and (not isinstance(self.queries_per_epoch, int)
                                                   or self.queries_per_epoch < 1):
            fail(f"queries_per_epoch={self.queries_per_epoch!r}: must be None or an integer >= 1")
        lr = self.resolved_lr()
        if not (math.isfinite(lr) and lr > 0):
            fail(f"lr={self.lr!r}: must be a positive number")
        for name in ("momentum", "weight_decay", "margin", "image_memory_gb"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                fail(f"{name}={v!r}: must be a finite number >= 0")
        if not 0 < self.lr_gamma <= 1:
            fail(f"lr_gamma={self.lr_gamma!r}: must be in (0, 1]")
        if self.select_n not in self.ns:
            fail(f"select_n={self.select_n} must be one of ns={list(self.ns)}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            fail(f"image_size={self.image_size!r}: must be None or (H, W)")
        if self.whiten_dim is not None and self.whiten_dim < 1:
            fail(f"whiten_dim={self.whiten_dim!r}: must be None or >= 1")
        for name in ("pos_radius", "neg_radius"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                fail(f"{name}={v!r}: must be None or > 0 metres")
        if not (isinstance(self.pos_min_dist, (int, float)) and 0 <= self.pos_min_dist < (self.pos_radius or 10.0)):
            fail(f"pos_min_dist={self.pos_min_dist!r}: must be >= 0 and below the positive radius (metres)")
        if self.kmeans_points_per_centroid is not None and (
                isinstance(self.kmeans_points_per_centroid, bool) or not isinstance(self.kmeans_points_per_centroid, int)
                or self.kmeans_points_per_centroid < 1):
            fail(f"kmeans_points_per_centroid={self.kmeans_points_per_centroid!r}: must be None (all) or >= 1")
        from repro.model.backbone import check_train_from

        try:
            check_train_from(self.backbone, self.train_from)
        except ConfigError as exc:
            fail(str(exc))
        if self.whiten_dim is not None:
            from repro.model.place_model import pooled_dim

            dim = pooled_dim(self.backbone, self.pooling, self.num_clusters, self.fmax_output_size)
            if self.whiten_dim > dim:
                fail(f"whiten_dim={self.whiten_dim} exceeds the {self.pooling} descriptor's {dim} dimensions "
                     f"({self.backbone}); PCA can only reduce it. Use whiten_dim=None or at most {dim}")
        for spec in self.test_on:
            parse_test_set(spec)
        return self

    def paths(self) -> tuple[Path, Path]:
        """(checkpoint folder, record file), defaults resolved against the repository root."""
        from repro.paths import repo_root

        name = self.resolved_run_name()
        out = Path(self.out_dir) if self.out_dir else repo_root() / "cache" / "train" / name
        record = Path(self.record_path) if self.record_path else repo_root() / "results" / "train" / f"{name}.json"
        return out, record


# Fields that may change when resuming (they do not change the computation,
# or only in rounding: device, precision, TF32, channels-last).
RESUMABLE_CHANGES = frozenset({"resume", "epochs", "device", "progress", "verbose", "num_workers", "image_memory_gb",
                               "record_path", "out_dir", "data_root", "channels_last", "precision", "tf32",
                               "dist_timeout_s"})
# Each field's default, as ``to_dict`` gives it (tuples as lists): what a checkpoint or record written
# before the field existed ran with.
FIELD_DEFAULTS = TrainConfig().to_dict()


def changed_fields(saved: dict, now: dict) -> list[str]:
    """The fields of ``now`` (a ``to_dict``, or its JSON) whose value ``saved`` does not have; a field
    ``saved`` lacks (written before it existed) counts as its default."""
    return sorted(k for k in now if saved.get(k, FIELD_DEFAULTS.get(k)) != now[k])



def parse_test_set(spec: str) -> tuple[str, str, str]:
    """A ``test_on`` entry, ``"DATASET:ROOT[:SPLIT]"`` (split default "test") -> (dataset, root, split)."""
    from repro.data.datasets import parse_dataset_spec

    return parse_dataset_spec(spec, default_split="test", what="test set")
