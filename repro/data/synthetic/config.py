"""Configuration of the synthetic city: one frozen dataclass, three presets.

Every number that changes how hard the benchmark is (how many facade styles,
how strong fog and noise are, how far queries are from the database, which
conditions the queries show) is a named field here, so difficulty can be
calibrated with ``dataclasses.replace(PRESETS["default"], ...)`` and the
change is recorded in the dataset's ``manifest.json`` (a changed config gives
a different ``config_hash`` and the cached city is regenerated).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from repro.errors import ConfigError

# Bump when the generator's output changes for the same config and seed.
GENERATOR_VERSION = "1.0"

SPLITS = ("train", "val", "test")

# Query conditions, in the order used in tables and figures.
CONDITIONS = ("day", "dusk", "night", "fog", "occluded", "viewpoint")

# UTM-like offset (Pittsburgh is in UTM zone 17T near these values).
UTM_OFFSET = (585000.0, 4477000.0)


@dataclass(frozen=True)
class CityConfig:
    """All parameters of one synthetic city. Lengths in metres, angles in degrees."""

    name: str = "custom"

    # --- images
    height: int = 120                   # image rows
    width: int = 160                    # image columns
    supersample: int = 1                # render at k x resolution, then box-filter down

    # --- layout. The city is three rectangular regions side by side along x
    # (train, val, test), separated by gaps where no camera is placed.
    region_size: tuple[float, float] = (225.0, 225.0)
    split_gap: float = 60.0             # > 25 m so splits are geographically disjoint
    block_size: tuple[float, float] = (40.0, 85.0)    # street spacing range
    road_width: tuple[float, float] = (8.0, 14.0)     # carriageway width range
    sidewalk_width: float = 3.0
    building_width: tuple[float, float] = (6.0, 22.0)
    building_floors: tuple[int, int] = (2, 10)
    setback_prob: float = 0.2           # building front set back by up to 2.5 m
    alley_prob: float = 0.08            # a gap between neighbouring buildings
    park_prob: float = 0.07             # a block of trees instead of buildings

    # --- appearance (perceptual aliasing)
    n_styles: int = 16                  # facade style vocabulary, reused city-wide
    style_zipf: float = 0.8             # >0: some styles much more common than others
    facade_jitter: float = 0.10         # per-building colour jitter (std, 0..1 scale)
    sign_prob: float = 0.35             # shop-front buildings carry a coloured sign
    n_sign_colours: int = 6

    # --- database
    place_spacing: float = 8.0          # metres between database places along streets
    n_headings: int = 6                 # views per place, evenly spaced, random phase
    db_lateral: float = 1.5             # max lateral offset of a place from the road centre
    db_height: float = 2.5              # camera height (Street View is ~2.5 m)
    db_fov: float = 70.0                # horizontal field of view

    # --- queries
    queries_per_split: int = 400
    query_max_offset: float = 10.0      # max distance to the nearest database place
    query_min_offset: float = 1.0       # min distance (queries are never exactly at a place)
    query_lateral: float = 4.0          # max distance from the road centre ('viewpoint': sidewalks too)
    # query heading: < 0 uniformly random; >= 0 one of the nearest place's database
    # headings +- this many degrees (as Pittsburgh's queries, cut from panoramas too)
    query_heading_jitter: float = 10.0
    condition_mix: tuple[tuple[str, float], ...] = (
        ("day", 2.0), ("dusk", 1.0), ("night", 1.0),
        ("fog", 1.0), ("occluded", 1.0), ("viewpoint", 1.0),
    )
    # small camera change applied to every query (height m, tilt deg, fov deg)
    query_jitter: tuple[float, float, float] = (0.3, 2.0, 5.0)
    # the 'viewpoint' condition: camera height range, |tilt| max, fov range
    viewpoint_height: tuple[float, float] = (1.4, 4.0)
    viewpoint_tilt: float = 10.0
    viewpoint_fov: tuple[float, float] = (50.0, 95.0)
    # photometric strengths
    day_exposure: float = 0.15          # +- exposure change of 'day' queries
    day_clouds: float = 0.4             # max cloud cover of day-lit queries (database: none)
    dusk_brightness: tuple[float, float] = (0.45, 0.7)
    night_ambient: tuple[float, float] = (0.05, 0.12)
    # dusk and night queries are auto-exposed (as a camera would) to this mean
    # linear brightness; database images average ~0.32. 0 disables.
    dusk_exposure: tuple[float, float] = (0.22, 0.32)
    night_exposure: tuple[float, float] = (0.14, 0.26)
    night_lit_windows: tuple[float, float] = (0.25, 0.55)
    fog_visibility: tuple[float, float] = (20.0, 60.0)   # metres to ~63% fog
    fog_contrast: tuple[float, float] = (0.6, 0.85)      # global contrast factor in fog
    noise: tuple[float, float] = (0.015, 0.05)           # pixel noise std (0..1 scale)
    blur: tuple[float, float] = (0.5, 1.3)               # gaussian blur sigma, pixels
    occluders: tuple[int, int] = (2, 5)                  # vehicles + pedestrians per image

    # --- rendering
    max_range: float = 180.0            # ray length, metres
    workers: int = 0                    # 0: one per available core

    def validate(self) -> "CityConfig":
        def fail(msg):
            raise ConfigError(f"synthetic city config '{self.name}': {msg}")

        if self.height < 16 or self.width < 16:
            fail(f"image size {self.height}x{self.width} is too small (min 16x16)")
        if self.supersample < 1:
            fail("supersample must be >= 1")
        if self.split_gap <= 25.0:
            fail(f"split_gap={self.split_gap} must exceed 25 m so splits are disjoint")
        if self.n_styles < 1:
            fail("n_styles must be >= 1")
        if self.n_headings < 1:
            fail("n_headings must be >= 1")
        if self.queries_per_split < 1:
            fail("queries_per_split must be >= 1")
        if not 0 <= self.query_min_offset < self.query_max_offset <= 25.0:
            fail("need 0 <= query_min_offset < query_max_offset <= 25 (positives within 25 m)")
        unknown = [c for c, _ in self.condition_mix if c not in CONDITIONS]
        if unknown:
            fail(f"unknown condition(s) {unknown} in condition_mix; known: {list(CONDITIONS)}")
        if not any(w > 0 for _, w in self.condition_mix):
            fail("condition_mix needs at least one positive weight")
        if min(self.region_size) < 2 * self.block_size[0]:
            fail(f"region_size {self.region_size} is smaller than two blocks")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types

    def config_hash(self) -> str:
        """Hash of everything that changes the generated bytes (not name, workers)."""
        d = self.to_dict()
        d.pop("name", None)
        d.pop("workers", None)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PRESETS: dict[str, CityConfig] = {
    # For unit tests: a few seconds. ~100 database images and 30 queries per split.
    "tiny": CityConfig(
        name="tiny",
        region_size=(85.0, 85.0),
        block_size=(40.0, 50.0),
        place_spacing=10.0,
        n_headings=4,
        queries_per_split=30,
    ),
    # The main job: ~1.1k database images and 400 queries per split at 120x160.
    "default": CityConfig(name="default"),
    # Closer to Pittsburgh's proportions (~10k database images per split).
    "large": CityConfig(
        name="large",
        region_size=(560.0, 560.0),
        place_spacing=8.0,
        n_headings=8,
        queries_per_split=3000,
    ),
}


def get_config(preset: "str | CityConfig", **overrides) -> CityConfig:
    """A preset by name (or a CityConfig as is), with field overrides applied."""
    if isinstance(preset, CityConfig):
        cfg = preset
    else:
        if preset not in PRESETS:
            raise ConfigError(f"unknown synthetic city preset '{preset}'; choose one of {list(PRESETS)}")
        cfg = PRESETS[preset]
    if overrides:
        names = set(CityConfig.__dataclass_fields__)
        bad = [k for k in overrides if k not in names]
        if bad:
            raise ConfigError(f"unknown synthetic city option(s) {bad}")
        cfg = replace(cfg, **overrides)
    return cfg.validate()
