"""The synthetic city written in the on-disk layouts of the real benchmarks.

:func:`make_layout_city` renders the synthetic city (the same city as
:func:`~repro.data.synthetic.make_synthetic_city` for the same preset and
seed) with the cameras, file names and formats of the datasets the NetVLAD
authors distribute, so that the real loaders read it unchanged::

    repro.data.datasets.load_split("pitts30k" | "tokyo247" | "tokyoTM", ROOT, split)

This rehearses the paper-scale pipeline on CPU with data shaped like
Pittsburgh and Tokyo. Layouts (one example file per kind)::

    pittsburgh (dataset_name pitts30k or pitts250k; splits train, val, test)
        ROOT/datasets/pitts30k_train.mat            dbStruct (one per split)
        ROOT/000/000829_pitch1_yaw1.jpg             database: 24 views per place
        ROOT/queries_real/004/004317_pitch2_yaw7.jpg
    tokyo247 (split test)
        ROOT/datasets/tokyo247.mat
        ROOT/03814/0381425_012_030.jpg              database: 12 cut-outs per panorama
        ROOT/247query_subset_v2/00001.jpg           queries: day, sunset, night per place
    tokyoTM (splits train, val)
        ROOT/datasets/tokyoTM_train.mat             dbStruct + dbTimeStamp, qTimeStamp
        ROOT/images/00042/200907_00042_030.jpg      database; the queries are some of these
    every layout
        ROOT/manifest.json                          written last
        ROOT/synthetic/{split}_queries.csv          per query (query order): condition, camera
        ROOT/synthetic/{split}_database.csv         per database image: place, camera, capture
        ROOT/synthetic/city_layout.npz              buildings and streets, for maps

Metadata the real datasets lack lives only under ``ROOT/synthetic/``
(:func:`~repro.data.synthetic.load_query_conditions` reads
``ROOT/synthetic``). Images are JPEG (PIL, fixed quality: deterministic), so
the same arguments and seed give byte-identical files. As with
``make_synthetic_city`` the dataset is written into a temporary sibling
folder and renamed into place, the manifest last; a second call with the same
arguments returns at once.

Geometry shared by all layouts (why: every split must be a meaningful
place-recognition problem). Database places of a split are at least
``MIN_PLACE_DISTANCE`` (40 m) apart on the streets of the split's region;
every query is 1.5 to 10 m from one place (Tokyo Time Machine: 1.5 to 10 m
from another capture of its place). So every query has an evaluation
positive (within 25 m), a potential training positive farther than 1 m (the
authors drop closer ones) and negatives (the other places, > 25 m away).
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from repro.data.dbstruct import DbStruct, save_dbstruct
from repro.errors import ConfigError, DatasetError
from repro.paths import repo_root

from . import generate as gen
from .conditions import assign_conditions, db_camera, db_light, query_camera_and_light
from .config import GENERATOR_VERSION, SPLITS, UTM_OFFSET, CityConfig, get_config
from .layout import City, build_city, street_segments
from .render import Camera, Light, render

__all__ = ["LAYOUTS", "default_layout_root", "make_layout_city"]

LAYOUTS = ("pittsburgh", "tokyo247", "tokyoTM")
# Bump when a layout's output changes for the same arguments and seed.
LAYOUT_VERSION = "1.0"

JPEG_QUALITY = 90
MIN_PLACE_DISTANCE = 40.0        # m between database places (> 25 m + query/capture offsets)
PLACE_CANDIDATE_STEP = 2.0       # m between candidate place centres along a street
QUERY_OFFSET = (1.5, 10.0)       # m from the query's database place
CAPTURE_OFFSET = (2.0, 6.0)      # m from the place centre (Tokyo Time Machine captures)
CAPTURE_SPREAD = (1.5, 10.0)     # m between two captures of one place
CAPTURE_LATERAL = 2.0            # m sideways at most (captures stay on the carriageway)
N_YAWS = 12                      # cut-outs per panorama (every real layout)
YAW_STEP = 360.0 / N_YAWS        # degrees
PITTS_TILTS = (4.0, 20.0)        # degrees up of pitch1 and pitch2
# Tokyo 24/7 query order (query i has condition i % 3): generator condition, Tokyo name.
TOKYO_CONDITIONS = (("day", "day"), ("dusk", "sunset"), ("night", "night"))
# Tokyo Time Machine capture times (yyyymm, as the real dbTimeStamp values).
TM_TIME_STAMPS = (200806.0, 200907.0, 201004.0, 201108.0, 201205.0, 201310.0, 201409.0, 201511.0)
TM_OCCLUDED_PROB = 0.3           # a capture with vehicles/pedestrians in front of the camera
TOKYO_UTM_OFFSET = (380000.0, 3946000.0)   # UTM zone 54S, central Tokyo
THRESHOLDS = {"posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}
_SEED_TAG = 0x1A70               # separates these random streams from generate.py's


@dataclass(frozen=True)
class _LayoutSpec:
    """Per-layout constants: splits (city regions), allowed dataset names
    (first: default), default counts, where queries live, UTM offset."""

    splits: tuple[str, ...]
    datasets: tuple[str, ...]
    places: int
    query_places: int | None      # None: one per database place
    views: int                    # default views per query place
    max_views: int
    q_root: str                   # query names in the .mat are relative to ROOT/q_root
    utm_offset: tuple[float, float]

    def mat(self, dataset: str, split: str) -> str:
        return f"datasets/{dataset}.mat" if self.splits == ("test",) else f"datasets/{dataset}_{split}.mat"


_SPECS = {
    "pittsburgh": _LayoutSpec(SPLITS, ("pitts30k", "pitts250k"), 10, 5, 2 * N_YAWS, 2 * N_YAWS,
                              "queries_real", UTM_OFFSET),
    "tokyo247": _LayoutSpec(("test",), ("tokyo247",), 10, 5, len(TOKYO_CONDITIONS), len(TOKYO_CONDITIONS),
                            "247query_subset_v2", TOKYO_UTM_OFFSET),
    "tokyoTM": _LayoutSpec(("train", "val"), ("tokyoTM",), 10, None, N_YAWS, N_YAWS, "", TOKYO_UTM_OFFSET),
}


@dataclass
class _Shot:
    """One image to render: file name (as in the .mat), camera, light,
    size (H, W) in pixels, render seed, and its fields for the CSV files."""

    fn: str
    cam: Camera
    light: Light
    size: tuple[int, int]
    seed: list[int]
    row: dict


@dataclass
class _SplitPlan:
    """Everything one split writes. ``q_shots`` are the images rendered for
    queries (none for Tokyo Time Machine, whose queries are database images:
    ``q_of_db`` gives their database rows)."""

    split: str
    mat: str                      # relative to ROOT
    q_root: str                   # query images under ROOT/q_root
    db_shots: list[_Shot]
    q_shots: list[_Shot]
    utm_offset: tuple[float, float]
    q_of_db: list[int] | None = None
    db_time_stamp: np.ndarray | None = None
    dbstruct: DbStruct | None = None
    db_rows: list[dict] | None = None
    q_rows: list[dict] | None = None


# ----------------------------------------------------------------------------
# arguments

def _count(value, what: str, lo: int, hi: int | None = None) -> int:
    """An integer count in lo..hi, else ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(f"{what} must be {rng}, got {value}")
    return value


def _resolve(layout, preset, seed, places, query_places, views, captures, image_size, dataset_name,
             overrides, db_views=None) -> tuple[dict, CityConfig]:
    """Validate the arguments (ConfigError) and fill in the layout's defaults.
    Returns the normalised request (JSON types; what the manifest records
    and reuse compares) and the city config."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic dataset layout {layout!r}; choose one of {list(LAYOUTS)}")
    spec = _SPECS[layout]
    name = spec.datasets[0] if dataset_name is None else dataset_name
    if name not in spec.datasets:
        raise ConfigError(f"layout {layout!r} writes dataset {' or '.join(map(repr, spec.datasets))}, "
                          f"not {dataset_name!r}")
    places = _count(spec.places if places is None else places, "places (database places per split)", 2)
    if query_places is None:
        query_places = spec.query_places or places
    query_places = _count(query_places, "query_places", 1, places if layout == "tokyoTM" else None)
    full = 2 * N_YAWS if layout == "pittsburgh" else N_YAWS
    db_views = _count(full if db_views is None else db_views, "views_per_place",
                      full if layout == "tokyo247" else 1, full)  # Tokyo 24/7's loader needs 12 per panorama
    views = _count(spec.views if views is None else views, "views_per_query_place",
                   spec.max_views if layout == "tokyo247" else 1, db_views if layout == "tokyoTM" else spec.max_views)
    if layout == "tokyoTM":
        captures = _count(3 if captures is None else captures, "captures (capture times per place)",
                          2, len(TM_TIME_STAMPS))
    elif captures is not None:
        raise ConfigError(f"captures applies to the tokyoTM layout only (layout {layout!r})")
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size must be (height, width) in pixels, got {image_size!r}") from None
    clash = sorted({"height", "width"} & set(overrides))
    if clash:
        raise ConfigError(f"give the image size as image_size=(height, width), not {clash}")
    cfg = get_config(preset, height=h, width=w, **overrides)
    req = {
        "layout": layout, "dataset_name": name, "seed": int(seed),
        "places": places, "views_per_place": db_views, "query_places": query_places, "views_per_query_place": views,
        "captures": captures, "image_size_hw": [h, w],
        "generator_version": GENERATOR_VERSION, "layout_version": LAYOUT_VERSION,
        "config_hash": cfg.config_hash(),
    }
    return json.loads(json.dumps(req)), cfg


# ----------------------------------------------------------------------------
# geometry (local metres; x east, y north)

def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(_seed(seed, *stream))


def _seed(seed: int, *stream: int) -> list[int]:
    """Seed of one random stream: (seed, layout index, split index, kind, item)."""
    return [seed, _SEED_TAG, *(int(s) for s in stream)]


def _street_points(city: City, split: str, rng: np.random.Generator) -> np.ndarray:
    """Candidate place centres every PLACE_CANDIDATE_STEP m along the split's
    streets: [n, 6] rows (x, y, ux, uy, half_width, lateral) = position (m),
    unit street direction, carriageway half width (m) and the signed offset
    from the street's centre line (m, to the left of (ux, uy))."""
    cfg = city.cfg
    rows = []
    for x0, y0, x1, y1, hw in street_segments(city, split):
        length = float(np.hypot(x1 - x0, y1 - y0))
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        s = np.arange(rng.uniform(0, PLACE_CANDIDATE_STEP), length, PLACE_CANDIDATE_STEP)
        lat = rng.uniform(-1, 1, len(s)) * min(cfg.db_lateral, hw - 0.5)
        one = np.ones_like(s)
        rows.append(np.stack([x0 + ux * s - uy * lat, y0 + uy * s + ux * lat, ux * one, uy * one, hw * one, lat], 1))
    return np.concatenate(rows) if rows else np.empty((0, 6))


def _spread_places(city: City, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` place centres on the split's streets, pairwise at least
    MIN_PLACE_DISTANCE apart: [n, 6] rows of :func:`_street_points`, in random
    order. Greedy over all candidates in random order, so the number that fit
    is known; ConfigError (saying how many fit) when fewer than ``n`` do."""
    pts = _street_points(city, split, rng)
    kept = np.empty((len(pts), 2))
    idx = []
    for i in rng.permutation(len(pts)):
        if not idx or ((kept[:len(idx)] - pts[i, :2]) ** 2).sum(1).min() >= MIN_PLACE_DISTANCE ** 2:
            kept[len(idx)] = pts[i, :2]
            idx.append(i)
    if len(idx) < n:
        cfg = city.cfg
        rw, rh = cfg.region_size
        grow = 1.1 * np.sqrt(n / max(len(idx), 1))
        raise ConfigError(
            f"the {split} region of synthetic city '{cfg.name}' ({rw:g} x {rh:g} m) has room for only {len(idx)} "
            f"places at least {MIN_PLACE_DISTANCE:g} m apart on its streets, but places={n} was asked: ask for at most "
            f"{len(idx)}, or enlarge the city, e.g. region_size=({rw * grow:.0f}, {rh * grow:.0f})")
    return pts[idx[:n]]


def _cycled_targets(rng: np.random.Generator, n_places: int, n: int) -> np.ndarray:
    """The database place each of ``n`` query places is near: every place
    once (random order) before any place twice."""
    reps = -(-n // n_places)
    return np.concatenate([rng.permutation(n_places) for _ in range(reps)])[:n]


def _query_position(city: City, place: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """A query camera position [2] (m) on the street of ``place`` (a row of
    :func:`_street_points`), QUERY_OFFSET m from it; within query_lateral of
    the centre line, 'viewpoint' queries anywhere across road and sidewalks
    (as :func:`layout.sample_query_positions`)."""
    cfg = city.cfg
    x, y, ux, uy, hw, lat_c = place
    lat_max = hw + cfg.sidewalk_width - 0.8
    if condition != "viewpoint":
        lat_max = min(lat_max, cfg.query_lateral)
    for _ in range(1000):
        d = rng.uniform(*QUERY_OFFSET)
        dl = rng.uniform(-lat_max, lat_max) - lat_c       # sideways from the place
        if abs(dl) > d:
            continue
        s = np.sqrt(d * d - dl * dl) * (1.0 if rng.random() < 0.5 else -1.0)   # along the street
        return np.array([x + ux * s - uy * dl, y + uy * s + ux * dl])
    raise DatasetError(f"could not place a query {QUERY_OFFSET} m from a database place (lateral {lat_max:.1f} m)")


def _capture_positions(place: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions [n, 2] (m) of ``n`` captures of one place: each CAPTURE_OFFSET
    m from the centre, mostly along the street (at most CAPTURE_LATERAL m
    sideways, on the carriageway), pairwise CAPTURE_SPREAD apart, so every
    capture has captures of other times within 10 m, none at its own spot."""
    x, y, ux, uy, hw, lat_c = place
    lo, hi = max(-CAPTURE_LATERAL, -(hw - 0.5) - lat_c), min(CAPTURE_LATERAL, (hw - 0.5) - lat_c)
    for _ in range(100):          # restarts, should a greedy draw paint itself into a corner
        out = []
        for _ in range(500):
            d = rng.uniform(*CAPTURE_OFFSET)
            dl = rng.uniform(lo, hi)
            p = np.array([np.sqrt(d * d - dl * dl) * (1.0 if rng.random() < 0.5 else -1.0), dl])
            if all(CAPTURE_SPREAD[0] <= np.hypot(*(p - q)) <= CAPTURE_SPREAD[1] for q in out):
                out.append(p)
                if len(out) == n:
                    sl = np.array(out)       # (along, sideways) -> x, y
                    return np.stack([x + ux * sl[:, 0] - uy * sl[:, 1], y + uy * sl[:, 0] + ux * sl[:, 1]], 1)
    raise DatasetError(f"could not place {n} captures {CAPTURE_OFFSET} m around a place")


def _query_heading(cfg: CityConfig, place_phase: float, rng: np.random.Generator) -> float:
    """Heading (degrees) of a query's first view: one of its place's database
    headings +- query_heading_jitter, as in generate.py (< 0: any direction)."""
    if cfg.query_heading_jitter < 0:
        return float(rng.uniform(0, 360))
    return float((place_phase + YAW_STEP * rng.integers(N_YAWS)
                  + rng.uniform(-1, 1) * cfg.query_heading_jitter) % 360.0)


def _transposed_fov(fov: float, size: tuple[int, int]) -> float:
    """Horizontal field of view (degrees) of the same camera turned to the
    transposed image size (H, W) -> (W, H): the focal length stays."""
    h, w = size
    return float(np.degrees(2 * np.arctan(np.tan(np.radians(fov) / 2) * h / w)))


def _distinct_ids(rng: np.random.Generator, counts: list[int], space: int, digits: int) -> list[np.ndarray]:
    """Distinct random ids for several groups (one per split, so file names
    never collide across splits): one sorted int array per count, drawn from
    0..space-1 (widened for large counts, up to ``digits`` digits)."""
    total = sum(counts)
    space = min(max(space, 4 * total), 10 ** digits)
    if total > space:
        raise ConfigError(f"{total} places do not fit in {digits}-digit ids")
    ids = rng.choice(space, total, replace=False)
    return [np.sort(g) for g in np.split(ids, np.cumsum(counts)[:-1])]


# ----------------------------------------------------------------------------
# per-layout plans: every random choice is made here, before rendering

def _camera_row(cam: Camera, light: Light, size: tuple[int, int]) -> dict:
    """Camera and light parameters of one image, for the CSV files."""
    return {"heading_deg": cam.heading, "height_m": cam.height, "tilt_deg": cam.tilt, "fov_deg": cam.fov,
            "image_height": size[0], "image_width": size[1], "exposure": light.exposure,
            "fog_visibility_m": light.fog_vis, "contrast": light.contrast, "noise_sigma": light.noise,
            "blur_sigma": light.blur, "lit_windows": light.lit_frac}


def _kept_views(n: int, full: int, per_pitch: int) -> list[tuple[int, int]]:
    """(pitch, yaw), 1-based, of ``n`` of a place's ``full`` views, evenly
    spread in the real order (pitch1 yaw1..12, pitch2 yaw1..12): all of them
    by default; fewer only to shrink a rehearsal (the names keep the real
    numbering, e.g. yaw1, yaw4, yaw7, yaw10 of each pitch for 8 of 24)."""
    keep = np.unique(np.floor(np.arange(n) * full / n).astype(int))
    return [(int(v) // per_pitch + 1, int(v) % per_pitch + 1) for v in keep]


def _pitts_name(pid: int, pitch: int, yaw: int) -> str:
    return f"{pid // 1000:03d}/{pid:06d}_pitch{pitch}_yaw{yaw}.jpg"


def _plan_pittsburgh(city: City, req: dict, seed: int) -> list[_SplitPlan]:
    """Pittsburgh: per split, ``places`` places of 24 views (pitch1 yaw1..12,
    pitch2 yaw1..12) and ``query_places`` query places of
    ``views_per_query_place`` distinct (pitch, yaw) views, each query place
    captured once under one query condition."""
    cfg, spec, li = city.cfg, _SPECS["pittsburgh"], 0
    P, Q, V = req["places"], req["query_places"], req["views_per_query_place"]
    size = tuple(req["image_size_hw"])
    id_rng = _rng(seed, li, 99)
    db_ids = _distinct_ids(id_rng, [P] * len(spec.splits), 10_000, 6)
    q_ids = _distinct_ids(id_rng, [Q] * len(spec.splits), 10_000, 6)
    plans = []
    for si, split in enumerate(spec.splits):
        rng = _rng(seed, li, si, 0)
        places = _spread_places(city, split, P, rng)
        phases = rng.uniform(0, 360, P)     # heading of yaw1 (the car's direction)
        db_shots = []
        for p, pid in enumerate(db_ids[si]):
            x, y = places[p, :2]
            light = db_light(cfg, city.sun_az, _rng(seed, li, si, 1, p))   # one capture per panorama
            for pitch, yaw in _kept_views(req["views_per_place"], 2 * N_YAWS, N_YAWS):
                cam = replace(db_camera(cfg, x, y, (phases[p] + YAW_STEP * (yaw - 1)) % 360.0),
                              tilt=PITTS_TILTS[pitch - 1])
                db_shots.append(_Shot(_pitts_name(pid, pitch, yaw), cam, light, size,
                                      _seed(seed, li, si, 2, len(db_shots)),
                                      {"place_id": int(pid), "pitch": pitch, "yaw": yaw}))
        conds = assign_conditions(cfg, Q, rng)
        targets = _cycled_targets(rng, P, Q)
        q_shots = []
        for q, qid in enumerate(q_ids[si]):
            qrng = _rng(seed, li, si, 3, q)
            t = targets[q]
            x, y = _query_position(city, places[t], conds[q], qrng)
            heading0 = _query_heading(cfg, phases[t], qrng)
            cam0, light = query_camera_and_light(cfg, conds[q], float(x), float(y), heading0, city.sun_az, qrng)
            for v in np.sort(qrng.choice(2 * N_YAWS, V, replace=False)):
                pitch, yaw = int(v) // N_YAWS + 1, int(v) % N_YAWS + 1
                # the query's own camera jitter (tilt, height, fov) on top of the pitch
                cam = replace(cam0, heading=(heading0 + YAW_STEP * (yaw - 1)) % 360.0,
                              tilt=PITTS_TILTS[pitch - 1] + cam0.tilt)
                q_shots.append(_Shot(_pitts_name(qid, pitch, yaw), cam, light, size,
                                     _seed(seed, li, si, 4, len(q_shots)),
                                     {"condition": conds[q], "place_id": int(qid), "pitch": pitch, "yaw": yaw,
                                      "near_db_place_id": int(db_ids[si][t])}))
        plans.append(_SplitPlan(split, spec.mat(req["dataset_name"], split), spec.q_root, db_shots, q_shots,
                                spec.utm_offset))
    return plans


def _plan_tokyo247(city: City, req: dict, seed: int) -> list[_SplitPlan]:
    """Tokyo 24/7 (test): ``places`` panoramas of 12 cut-outs (yaw 0..330),
    ``query_places`` query positions with 3 queries each (day, sunset,
    night); query i is ``image_size`` for even i, else its transpose."""
    cfg, spec, li = city.cfg, _SPECS["tokyo247"], 1
    P, Q = req["places"], req["query_places"]
    size = tuple(req["image_size_hw"])
    split, si = "test", 0
    ids = _distinct_ids(_rng(seed, li, 99), [P], 10_000_000, 7)[0]
    rng = _rng(seed, li, si, 0)
    places = _spread_places(city, split, P, rng)
    phases = rng.uniform(0, 360, P)
    db_shots = []
    for p, pid in enumerate(ids):
        x, y = places[p, :2]
        light = db_light(cfg, city.sun_az, _rng(seed, li, si, 1, p))
        for k in range(N_YAWS):
            yaw = int(round(k * YAW_STEP))
            cam = db_camera(cfg, x, y, (phases[p] + yaw) % 360.0)
            db_shots.append(_Shot(f"{pid // 100:05d}/{pid:07d}_012_{yaw:03d}.jpg", cam, light, size,
                                  _seed(seed, li, si, 2, len(db_shots)), {"place_id": int(pid), "yaw": yaw}))
    targets = _cycled_targets(rng, P, Q)
    q_shots = []
    for q in range(Q):
        qrng = _rng(seed, li, si, 3, q)
        t = targets[q]
        x, y = _query_position(city, places[t], "day", qrng)
        heading = _query_heading(cfg, phases[t], qrng)
        for cond, tokyo_name in TOKYO_CONDITIONS:
            i = len(q_shots)
            cam, light = query_camera_and_light(cfg, cond, float(x), float(y), heading, city.sun_az, qrng)
            qsize = size if i % 2 == 0 else (size[1], size[0])    # real queries come in several sizes
            if qsize != size:
                cam.fov = _transposed_fov(cam.fov, size)
            q_shots.append(_Shot(f"{i + 1:05d}.jpg", cam, light, qsize, _seed(seed, li, si, 4, i),
                                 {"condition": cond, "tokyo_condition": tokyo_name, "query_place": q,
                                  "near_db_place_id": int(ids[t])}))
    return [_SplitPlan(split, spec.mat(req["dataset_name"], split), spec.q_root, db_shots, q_shots,
                       spec.utm_offset)]


def _plan_tokyo_tm(city: City, req: dict, seed: int) -> list[_SplitPlan]:
    """Tokyo Time Machine (train, val): ``places`` places, each captured at
    ``captures`` distinct times (a panorama of 12 cut-outs per capture, 2-6 m
    from the place centre, its own daytime light). Queries: ``query_places``
    distinct places, each with ``views_per_query_place`` distinct cut-outs of
    one of its captures (chosen at random); they are database images."""
    cfg, spec, li = city.cfg, _SPECS["tokyoTM"], 2
    P, Q, V, C = req["places"], req["query_places"], req["views_per_query_place"], req["captures"]
    size = tuple(req["image_size_hw"])
    ids = _distinct_ids(_rng(seed, li, 99), [P] * len(spec.splits), 100_000, 5)
    plans = []
    for si, split in enumerate(spec.splits):
        rng = _rng(seed, li, si, 0)
        places = _spread_places(city, split, P, rng)
        db_shots, stamps_db, first = [], [], []     # first[p][c]: row of capture c's first cut-out
        for p, pid in enumerate(ids[si]):
            prng = _rng(seed, li, si, 1, p)
            stamps = np.sort(prng.choice(TM_TIME_STAMPS, C, replace=False))
            pos = _capture_positions(places[p], C, prng)
            first.append([])
            for c, ts in enumerate(stamps):
                # each capture its own daytime sun, exposure and clouds (the query 'day' light),
                # some with occluders; only the light is used: the camera is the database camera
                cond = "occluded" if prng.random() < TM_OCCLUDED_PROB else "day"
                _, light = query_camera_and_light(cfg, cond, 0.0, 0.0, 0.0, city.sun_az, prng)
                phase = float(prng.uniform(0, 360))
                first[p].append(len(db_shots))
                for _, k1 in _kept_views(req["views_per_place"], N_YAWS, N_YAWS):
                    yaw = int(round((k1 - 1) * YAW_STEP))
                    cam = db_camera(cfg, float(pos[c, 0]), float(pos[c, 1]), (phase + yaw) % 360.0)
                    db_shots.append(_Shot(f"images/{pid:05d}/{int(ts)}_{pid:05d}_{yaw:03d}.jpg", cam, light, size,
                                          _seed(seed, li, si, 2, len(db_shots)),
                                          {"condition": cond, "place_id": int(pid), "capture": c,
                                           "time_stamp": float(ts), "yaw": yaw}))
                    stamps_db.append(float(ts))
        q_of_db = []
        for p in np.sort(rng.choice(P, Q, replace=False)):
            qrng = _rng(seed, li, si, 3, p)
            c = int(qrng.integers(C))
            q_of_db += [first[p][c] + int(k) for k in np.sort(qrng.choice(req["views_per_place"], V, replace=False))]
        plans.append(_SplitPlan(split, spec.mat(req["dataset_name"], split), spec.q_root, db_shots, [],
                                spec.utm_offset, q_of_db=q_of_db, db_time_stamp=np.array(stamps_db)))
    return plans


_PLANNERS = {"pittsburgh": _plan_pittsburgh, "tokyo247": _plan_tokyo247, "tokyoTM": _plan_tokyo_tm}


def _finish_plan(plan: _SplitPlan) -> None:
    """The split's dbStruct and CSV rows from its shots; checks the
    geometry every layout promises (module docstring)."""
    off = np.array(plan.utm_offset)
    utm_db = np.array([(s.cam.x, s.cam.y) for s in plan.db_shots]) + off
    db_fns = [s.fn for s in plan.db_shots]
    plan.db_rows = [{"db_index": i, "image": s.fn, **s.row, "easting": u[0], "northing": u[1],
                     **_camera_row(s.cam, s.light, s.size), "_key": ((plan.split, "db"), i)}
                    for i, (s, u) in enumerate(zip(plan.db_shots, utm_db))]
    if plan.q_of_db is None:
        utm_q = np.array([(s.cam.x, s.cam.y) for s in plan.q_shots]) + off
        q_fns = [s.fn for s in plan.q_shots]
        q_rows = [{"query_index": i, "image": s.fn, **s.row, "easting": u[0], "northing": u[1],
                   **_camera_row(s.cam, s.light, s.size), "_key": ((plan.split, "q"), i)}
                  for i, (s, u) in enumerate(zip(plan.q_shots, utm_q))]
        q_time = None
    else:
        utm_q = utm_db[plan.q_of_db]
        q_fns = [db_fns[j] for j in plan.q_of_db]
        q_rows = [{"query_index": i, "db_index": j, **{k: v for k, v in plan.db_rows[j].items() if k != "db_index"}}
                  for i, j in enumerate(plan.q_of_db)]
        q_time = plan.db_time_stamp[plan.q_of_db]
    # distances by tree (a [Q, N] matrix would not fit for paper-sized splits)
    tree = cKDTree(utm_db)
    nearest, _ = tree.query(utm_q)
    n_within25 = np.array([len(c) for c in tree.query_ball_point(utm_q, 25.0)])
    bad = []
    for i, (row, cand) in enumerate(zip(q_rows, tree.query_ball_point(utm_q, 10.0))):
        cand = np.asarray(cand, dtype=np.int64)
        d = np.sqrt(((utm_db[cand] - utm_q[i]) ** 2).sum(1))
        ok = d > 1.0          # the authors' potential positives: 1 m < d <= 10 m ...
        if q_time is not None:  # ... of another capture time (Time Machine)
            ok &= plan.db_time_stamp[cand] != q_time[i]
        row["nearest_db_m"] = float(nearest[i])
        row["nearest_positive_m"] = float(d[ok].min()) if ok.any() else float("inf")
        if not (ok.any() and 0 < n_within25[i] < len(utm_db)):
            bad.append(i)
    if bad:   # a bug, never the user's input: the planners guarantee this geometry
        raise DatasetError(f"{plan.split}: queries {bad[:5]} lack a database image within 25 m, a negative "
                           "beyond 25 m or a potential training positive 1-10 m away")
    plan.q_rows = q_rows
    plan.dbstruct = DbStruct(
        which_set=plan.split, db_image_fns=db_fns, utm_db=utm_db, q_image_fns=q_fns, utm_q=utm_q,
        num_images=len(db_fns), num_queries=len(q_fns), pos_dist_thr=THRESHOLDS["posDistThr"],
        pos_dist_sq_thr=THRESHOLDS["posDistSqThr"], non_triv_pos_dist_sq_thr=THRESHOLDS["nonTrivPosDistSqThr"],
        db_time_stamp=plan.db_time_stamp, q_time_stamp=q_time,
    ).validate(source=plan.mat)


# ----------------------------------------------------------------------------
# rendering and writing

def _render_jpeg(task):
    """Worker: render one image (city from ``generate._CITY``), save as JPEG."""
    kind, idx, path, cam, light, rseed, (h, w) = task
    img, stats = render(gen._CITY, cam, light, np.random.default_rng(rseed), height=h, width=w)
    Image.fromarray(img).save(path, format="JPEG", quality=JPEG_QUALITY)
    return kind, idx, stats


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = [c for c in rows[0] if not c.startswith("_")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow([gen._fmt(row[c]) for c in cols])


def _write(out: Path, city: City, cfg: CityConfig, seed: int, plans: list[_SplitPlan], workers: int,
           log) -> tuple[dict, float, int]:
    """Render every image of ``plans`` into ``out`` and write the .mat and
    CSV files. Returns (per-split counts, render seconds, image count)."""
    tasks = []
    for plan in plans:
        for i, s in enumerate(plan.db_shots):
            tasks.append(((plan.split, "db"), i, str(out / s.fn), s.cam, s.light, s.seed, s.size))
        for i, s in enumerate(plan.q_shots):
            tasks.append(((plan.split, "q"), i, str(out / plan.q_root / s.fn), s.cam, s.light, s.seed, s.size))
    for d in sorted({os.path.dirname(t[2]) for t in tasks}):
        os.makedirs(d, exist_ok=True)
    gen._cache_city(city, cfg, seed)      # forked workers inherit it instead of rebuilding
    t0 = time.perf_counter()
    stats = gen._run_tasks(tasks, cfg, seed, workers, log, task_fn=_render_jpeg)
    render_s = time.perf_counter() - t0

    (out / "synthetic").mkdir(exist_ok=True)
    counts = {}
    for plan in plans:
        save_dbstruct(out / plan.mat, plan.dbstruct)
        for row in plan.db_rows + plan.q_rows:
            st = stats[row["_key"]]
            row["n_occluders"], row["occluded_frac"] = st["n_occluders"], st["occluded_frac"]
        _write_csv(out / "synthetic" / f"{plan.split}_database.csv", plan.db_rows)
        _write_csv(out / "synthetic" / f"{plan.split}_queries.csv", plan.q_rows)
        conds = {}
        for row in plan.q_rows:
            conds[row["condition"]] = conds.get(row["condition"], 0) + 1
        c = {"mat": plan.mat, "places": len({r["place_id"] for r in plan.db_rows}),
             "database": plan.dbstruct.num_images, "queries": plan.dbstruct.num_queries,
             "query_images_rendered": len(plan.q_shots), "conditions": conds}
        if plan.db_time_stamp is not None:
            c["time_stamps"] = sorted({float(t) for t in plan.db_time_stamp})
        counts[plan.split] = c
    gen.save_city_layout(out / "synthetic" / "city_layout.npz", city, plans[0].utm_offset)
    return counts, render_s, len(tasks)


def _is_layout_complete(root: Path, man: dict | None, req: dict) -> bool:
    if not man or not man.get("complete") or man.get("request") != req:
        return False
    return all((root / c["mat"]).is_file() and (root / "synthetic" / f"{s}_queries.csv").is_file()
               for s, c in man.get("counts", {}).items()) and bool(man.get("counts"))


def default_layout_root(layout: str, preset: str = "default", seed: int = 0, dataset_name: str | None = None) -> Path:
    """``<repo>/cache/synthetic/layouts/{dataset}_{preset}_seed{seed}`` (git-ignored)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic dataset layout {layout!r}; choose one of {list(LAYOUTS)}")
    name = dataset_name or _SPECS[layout].datasets[0]
    return repo_root() / "cache" / "synthetic" / "layouts" / f"{name}_{preset}_seed{seed}"


def make_layout_city(root: str | os.PathLike | None, layout: str, preset: str | CityConfig = "default",
                     seed: int = 0, *, places: int | None = None, query_places: int | None = None,
                     views_per_query_place: int | None = None, captures: int | None = None,
                     views_per_place: int | None = None,
                     image_size: tuple[int, int] = (480, 640), dataset_name: str | None = None,
                     force: bool = False, workers: int | None = None, verbose: bool = False,
                     **overrides) -> Path:
    """Generate (or reuse) the synthetic city at ``root`` in a real dataset's layout.

    ``repro.data.datasets.load_split(dataset_name, root, split)`` then reads
    every split (file layout and geometry: module docstring).

    Args:
        root: output folder; None -> :func:`default_layout_root`.
        layout: 'pittsburgh' (splits train/val/test), 'tokyo247' (test) or
            'tokyoTM' (train/val); see :data:`LAYOUTS`.
        preset: city preset ('tiny', 'default', 'large') or a CityConfig;
            the city's regions bound how many places fit (ConfigError says).
        seed: the same arguments and seed give byte-identical .mat and image
            files.
        places: database places per split (>= 2; default 10). pittsburgh: 24
            images each (2 pitches x 12 yaws); tokyo247: panoramas of 12
            cut-outs; tokyoTM: places of ``captures`` panoramas of 12 cut-outs.
        query_places: query places per split. pittsburgh: query panoramas
            (default 5), each giving ``views_per_query_place`` images;
            tokyo247: query positions (default 5), each giving 3 images (day,
            sunset, night); tokyoTM: database places whose images serve as
            queries (default and at most ``places``).
        views_per_query_place: images per query place. pittsburgh: distinct
            (pitch, yaw) views, 1..24 (default 24, as the real queries);
            tokyo247: 3 (the only value); tokyoTM: distinct cut-outs of one
            randomly chosen capture, 1..12 (default 12).
        captures: tokyoTM only: capture times per place, 2..8 (default 3).
        views_per_place: database views per place (pittsburgh: of its 24,
            default all; tokyoTM: cut-outs per capture, of 12, default all;
            tokyo247: 12 only, which its loader checks), evenly spread, with
            the real names (:func:`_kept_views`): fewer only to shrink a
            rehearsal on a CPU.
        image_size: (height, width) in pixels of every image (default
            Pittsburgh's 480 x 640); Tokyo 24/7 queries alternate between it
            and its transpose.
        dataset_name: pittsburgh: 'pitts30k' (default) or 'pitts250k' (names
            the .mat files); other layouts: their own name only.
        force: regenerate even when a complete dataset with these arguments exists.
        workers: render processes (default: one per available core).
        verbose: print progress to stderr.
        overrides: CityConfig fields to change (not height/width: use
            image_size), e.g. region_size=(560.0, 560.0) for more places.

    Returns:
        ``root`` as a Path.

    Raises:
        ConfigError: bad arguments (unknown layout, places < 2, more places
            than the region fits at 40 m spacing, ...), before anything is written.
        DatasetError: ``root`` is a non-empty folder without a manifest.
    """
    req, cfg = _resolve(layout, preset, seed, places, query_places, views_per_query_place, captures,
                        image_size, dataset_name, overrides, views_per_place)
    seed = int(seed)
    root = Path(root) if root is not None else default_layout_root(layout, cfg.name, seed, req["dataset_name"])
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else None
    man = gen._read_manifest(root)
    if not force and _is_layout_complete(root, man, req):
        if log:
            log(f"reusing synthetic {req['dataset_name']} at {root}")
        return root
    gen._refuse_foreign(root, man)

    # plan first (ConfigError for a too small city before any folder exists)
    t0 = time.perf_counter()
    city = build_city(cfg, seed)
    timings = {"layout_s": time.perf_counter() - t0}
    plans = _PLANNERS[layout](city, req, seed)
    for plan in plans:
        _finish_plan(plan)
    timings["plan_s"] = time.perf_counter() - t0 - timings["layout_s"]
    nw = gen._n_workers(cfg, workers)

    def write(tmp: Path) -> dict:
        if log:
            n = sum(len(p.db_shots) + len(p.q_shots) for p in plans)
            log(f"synthetic {req['dataset_name']} ({layout} layout), seed {seed}: {n} images, {nw} worker(s)")
        counts, render_s, n_images = _write(tmp, city, cfg, seed, plans, nw, log)
        timings.update(render_s=render_s, ms_per_image=1000 * render_s / max(1, n_images) * nw,
                       total_s=time.perf_counter() - t0)
        manifest = {
            "generator": "repro.data.synthetic.layouts", "generator_version": GENERATOR_VERSION,
            "layout_version": LAYOUT_VERSION, "layout": layout, "dataset_name": req["dataset_name"],
            "synthetic": True, "preset": cfg.name, "seed": seed, "config_hash": cfg.config_hash(),
            "config": cfg.to_dict(), "request": req, "image_size_hw": req["image_size_hw"],
            "utm_offset": list(plans[0].utm_offset), "thresholds": THRESHOLDS,
            "min_place_distance_m": MIN_PLACE_DISTANCE, "query_offset_m": list(QUERY_OFFSET),
            "jpeg_quality": JPEG_QUALITY, "images": n_images, "counts": counts, "timings": timings,
            "workers": nw, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": True,
        }
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=2)
        return manifest

    manifest = gen._write_atomically(root, write, lambda: _is_layout_complete(root, gen._read_manifest(root), req))
    if log:
        t = manifest["timings"]
        log(f"wrote {root} ({manifest['images']} images) in {t['total_s']:.1f} s "
            f"({t['ms_per_image']:.1f} ms/image/worker)")
    return root
