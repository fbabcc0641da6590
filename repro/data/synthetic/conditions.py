"""Capture conditions: database (day, fixed sun) and the query conditions.

- ``day``: same time of day class as the database but another sun direction,
  exposure and clouds; small camera change (every query has one).
- ``dusk``: low warm light, darker, some windows lit, orange sky.
- ``night``: almost no ambient light, lit windows and street lamps, sensor noise.
- ``fog``: distance fog (visibility ``fog_visibility``), contrast loss, noise, blur.
- ``occluded``: vehicles and pedestrians in front of the camera.
- ``viewpoint``: a larger change of camera height, tilt and field of view.
"""
from __future__ import annotations

import numpy as np

from .config import CityConfig
from .render import Camera, Light


def db_light(cfg: CityConfig, sun_az: float, rng: np.random.Generator) -> Light:
    return Light(kind="day", sun_az=sun_az, exposure=float(rng.uniform(0.97, 1.03)), clouds=0.0)


def db_camera(cfg: CityConfig, x: float, y: float, heading: float) -> Camera:
    return Camera(x=x, y=y, heading=heading, height=cfg.db_height, fov=cfg.db_fov, tilt=0.0)


def _day(cfg, rng, city_sun):
    return Light(kind="day", sun_az=float(rng.uniform(0, 2 * np.pi)), sun_el=float(rng.uniform(0.4, 1.1)),
                 exposure=float(1 + rng.uniform(-1, 1) * cfg.day_exposure),
                 clouds=float(rng.uniform(0, cfg.day_clouds)), cloud_seed=int(rng.integers(1000)),
                 noise=float(rng.uniform(0.003, 0.01)))


def query_camera_and_light(cfg: CityConfig, condition: str, x: float, y: float, heading: float,
                           city_sun: float, rng: np.random.Generator) -> tuple[Camera, Light]:
    jh, jt, jf = cfg.query_jitter
    cam = Camera(x=x, y=y, heading=heading,
                 height=float(cfg.db_height + rng.uniform(-jh, jh)),
                 fov=float(cfg.db_fov + rng.uniform(-jf, jf)),
                 tilt=float(rng.uniform(-jt, jt)))
    lo_n, hi_n = cfg.noise
    lo_b, hi_b = cfg.blur
    if condition == "day":
        light = _day(cfg, rng, city_sun)
    elif condition == "dusk":
        br = float(rng.uniform(*cfg.dusk_brightness))
        light = Light(kind="dusk", sun_az=float(rng.uniform(0, 2 * np.pi)), sun_el=0.15,
                      sun=0.35 * br, ambient=0.45 * br, tint=(1.0, 0.78, 0.55),
                      sky_top=(0.25, 0.22, 0.45), sky_horizon=(0.95, 0.55, 0.3),
                      haze_col=(0.6, 0.45, 0.4), haze_vis=300.0,
                      lit_frac=float(rng.uniform(0.1, 0.3)), lit_gain=0.5, lamps=0.15,
                      auto_exposure=float(rng.uniform(*cfg.dusk_exposure)),
                      noise=float(rng.uniform(lo_n, 0.5 * (lo_n + hi_n))))
    elif condition == "night":
        amb = float(rng.uniform(*cfg.night_ambient))
        light = Light(kind="night", sun=0.0, ambient=amb, tint=(0.75, 0.85, 1.25),
                      sky_top=(0.01, 0.01, 0.04), sky_horizon=(0.06, 0.05, 0.09),
                      haze_col=(0.05, 0.05, 0.08), haze_vis=150.0,
                      lit_frac=float(rng.uniform(*cfg.night_lit_windows)), lit_gain=0.95, lamps=0.9,
                      auto_exposure=float(rng.uniform(*cfg.night_exposure)),
                      noise=float(rng.uniform(0.5 * (lo_n + hi_n), hi_n)),
                      blur=float(rng.uniform(0, lo_b)))
    elif condition == "fog":
        base = _day(cfg, rng, city_sun)
        g = float(rng.uniform(0.6, 0.8))
        base.fog_vis = float(rng.uniform(*cfg.fog_visibility))
        base.fog_col = (g, g + 0.01, g + 0.03)
        base.sun = 0.25
        base.ambient = 0.7
        base.clouds = 0.0
        base.contrast = float(rng.uniform(*cfg.fog_contrast))
        base.noise = float(rng.uniform(lo_n, hi_n))
        base.blur = float(rng.uniform(lo_b, hi_b))
        light = base
    elif condition == "occluded":
        light = _day(cfg, rng, city_sun)
        light.occluders = int(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1))
    elif condition == "viewpoint":
        light = _day(cfg, rng, city_sun)
        cam.height = float(rng.uniform(*cfg.viewpoint_height))
        cam.tilt = float(rng.uniform(-cfg.viewpoint_tilt, cfg.viewpoint_tilt))
        cam.fov = float(rng.uniform(*cfg.viewpoint_fov))
    else:  # validated in config
        raise ValueError(condition)
    return cam, light


def assign_conditions(cfg: CityConfig, n: int, rng: np.random.Generator) -> list[str]:
    """Balanced assignment: counts proportional to the weights (largest
    remainder), in a random order."""
    names = [c for c, w in cfg.condition_mix if w > 0]
    w = np.array([w for _, w in cfg.condition_mix if w > 0], dtype=np.float64)
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(int)
    rem = n - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:rem]] += 1
    out = [c for c, k in zip(names, counts) for _ in range(k)]
    return [out[i] for i in rng.permutation(n)]
