"""City layout: a street grid, building footprints, facade styles, a ground map.

Coordinates are local metres (x east, y north); UTM-like positions are these
plus :data:`config.UTM_OFFSET`. The city is three regions side by side along x
(train, val, test) separated by ``split_gap`` metres in which no camera is
placed; the buildings continue through the gaps, so every view is of a full
city, while positions of different splits are always more than 25 m apart.

Facade styles come from a small vocabulary (``n_styles``) reused all over the
city, with a Zipf-like frequency, so distant buildings look alike (perceptual
aliasing). A place is distinguished by the sequence of widths, heights,
styles, setbacks, signs and doors along its street, not by a unique texture.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SPLITS, CityConfig

GROUND_RES = 0.25  # metres per ground-map cell

# ground-map cell types
G_PAVING, G_ROAD, G_SIDEWALK, G_MARKING, G_CROSSWALK, G_GRASS = range(6)

# Realistic facade base colours (linear-ish RGB, 0..1): brick, sandstone,
# concrete, white render, brown, ochre, blue-grey, dark stone, pale green, pink.
_WALL_PALETTE = np.array([
    [0.55, 0.27, 0.20], [0.78, 0.68, 0.50], [0.60, 0.60, 0.58], [0.86, 0.85, 0.80],
    [0.42, 0.32, 0.25], [0.80, 0.62, 0.32], [0.47, 0.53, 0.60], [0.30, 0.29, 0.28],
    [0.62, 0.72, 0.60], [0.80, 0.60, 0.58],
])
_SIGN_PALETTE = np.array([
    [0.80, 0.10, 0.10], [0.10, 0.35, 0.75], [0.95, 0.80, 0.10], [0.10, 0.55, 0.25],
    [0.95, 0.95, 0.95], [0.55, 0.15, 0.55], [0.95, 0.50, 0.05], [0.05, 0.05, 0.05],
])


@dataclass
class Styles:
    """Facade style vocabulary; every field is an array indexed by style id."""

    wall: np.ndarray        # [S,3] base colour
    material: np.ndarray    # [S] 0 plain, 1 brick, 2 panels, 3 siding, 4 glass curtain
    mat_scale: np.ndarray   # [S] metres (brick course / panel size / siding pitch)
    mat_contrast: np.ndarray
    floor_h: np.ndarray     # [S] metres per storey
    floors_mean: np.ndarray  # [S] typical number of floors
    bay_w: np.ndarray       # [S] window bay width, metres
    win_w: np.ndarray       # [S] window width as fraction of the bay
    win_h: np.ndarray       # [S] window height as fraction of the storey
    sill: np.ndarray        # [S] sill height as fraction of the storey
    win: np.ndarray         # [S,3] window glass colour
    frame: np.ndarray       # [S,3] window frame colour
    frame_t: np.ndarray     # [S] frame thickness, metres
    ground: np.ndarray      # [S] 0 like upper floors, 1 shop front, 2 stone base
    base: np.ndarray        # [S,3] ground-floor base colour
    band: np.ndarray        # [S] 1 if a string course between floors
    band_col: np.ndarray    # [S,3]
    cornice_h: np.ndarray   # [S]
    cornice: np.ndarray     # [S,3]
    door: np.ndarray        # [S,3]


@dataclass
class City:
    cfg: CityConfig
    seed: int
    # streets: centre-line coordinate, carriageway half width
    vstreets: np.ndarray     # [nv,2] (x, half_width) streets running north-south
    hstreets: np.ndarray     # [nh,2] (y, half_width) streets running east-west
    extent: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    regions: dict            # split -> (x0, x1, y0, y1)
    # buildings
    bx0: np.ndarray
    bx1: np.ndarray
    by0: np.ndarray
    by1: np.ndarray
    bh: np.ndarray           # height, metres
    bstyle: np.ndarray       # style id
    bkind: np.ndarray        # 0 building, 1 trees (park)
    bjit: np.ndarray         # [B,3] colour jitter
    bsign: np.ndarray        # sign colour index or -1
    bhash: np.ndarray        # int64 per-building random id
    styles: Styles
    sign_palette: np.ndarray
    sun_az: float            # database sun azimuth, radians
    ground: np.ndarray       # [ny,nx] uint8 ground-map types
    ground_origin: tuple[float, float]

    @property
    def n_buildings(self) -> int:
        return len(self.bx0)


def _make_styles(rng: np.random.Generator, n: int) -> Styles:
    wall_idx = rng.permutation(np.resize(np.arange(len(_WALL_PALETTE)), max(n, len(_WALL_PALETTE))))[:n]
    wall = np.clip(_WALL_PALETTE[wall_idx] + rng.normal(0, 0.04, (n, 3)), 0.05, 0.95)
    material = rng.integers(0, 5, n)
    material = np.where((material == 4) & (rng.random(n) < 0.5), 2, material)  # glass rarer
    mat_scale = np.select([material == 1, material == 2, material == 3],
                          [rng.uniform(0.22, 0.4, n), rng.uniform(1.2, 2.6, n), rng.uniform(0.3, 0.7, n)],
                          rng.uniform(1.5, 3.0, n))
    tone = rng.uniform(0.08, 0.35, n)
    win = np.stack([tone * rng.uniform(0.7, 1.0, n), tone * rng.uniform(0.8, 1.1, n), tone * rng.uniform(1.0, 1.5, n)], 1)
    light_frame = rng.random(n) < 0.5
    frame = np.where(light_frame[:, None], rng.uniform(0.75, 0.95, (n, 1)) * np.ones(3), rng.uniform(0.05, 0.25, (n, 1)) * np.ones(3))
    base = np.clip(_WALL_PALETTE[rng.integers(0, len(_WALL_PALETTE), n)] * rng.uniform(0.6, 1.0, (n, 1)), 0, 1)
    band_col = np.clip(wall * rng.uniform(0.6, 1.4, (n, 1)), 0, 1)
    cornice = np.clip(np.where(rng.random((n, 1)) < 0.5, wall * 0.6, np.array([0.85, 0.84, 0.8])), 0, 1)
    door = np.clip(np.array([0.35, 0.2, 0.1]) * rng.uniform(0.4, 1.4, (n, 1)), 0, 1)
    st = Styles(
        wall=wall, material=material, mat_scale=mat_scale,
        mat_contrast=rng.uniform(0.06, 0.22, n),
        floor_h=rng.uniform(2.9, 4.0, n), floors_mean=rng.uniform(2.5, 9.0, n),
        bay_w=rng.uniform(2.2, 4.5, n), win_w=rng.uniform(0.3, 0.7, n),
        win_h=rng.uniform(0.35, 0.62, n), sill=rng.uniform(0.22, 0.35, n),
        win=win, frame=frame, frame_t=rng.uniform(0.06, 0.2, n),
        ground=rng.choice(3, n, p=[0.4, 0.4, 0.2]), base=base,
        band=(rng.random(n) < 0.5).astype(np.int64), band_col=band_col,
        cornice_h=rng.uniform(0.3, 1.1, n), cornice=cornice, door=door,
    )
    for k, v in vars(st).items():   # float32 shading is faster and plenty precise
        if v.dtype == np.float64:
            setattr(st, k, v.astype(np.float32))
    return st


def _street_lines(rng, lo, hi, cfg):
    """Centre lines from lo to hi with spacing in cfg.block_size; [n,2] (pos, half width)."""
    out = []
    p = lo + rng.uniform(0, cfg.block_size[0])
    while p < hi:
        out.append((p, rng.uniform(*cfg.road_width) / 2))
        p += rng.uniform(*cfg.block_size)
    return np.array(out)


def build_city(cfg: CityConfig, seed: int) -> City:
    """The deterministic layout of a city for ``cfg`` and ``seed``."""
    rng = np.random.default_rng([seed, 0x0C17])
    rw, rh = cfg.region_size
    margin = cfg.block_size[1] + 40.0
    width = 3 * rw + 2 * cfg.split_gap
    extent = (-margin, width + margin, -margin, rh + margin)
    regions = {s: (i * (rw + cfg.split_gap), i * (rw + cfg.split_gap) + rw, 0.0, rh) for i, s in enumerate(SPLITS)}
    vst = _street_lines(rng, extent[0], extent[1], cfg)
    hst = _street_lines(rng, extent[2], extent[3], cfg)
    styles = _make_styles(rng, cfg.n_styles)
    # style frequencies: Zipf-like, so a few styles dominate (aliasing)
    freq = 1.0 / np.arange(1, cfg.n_styles + 1) ** cfg.style_zipf
    freq /= freq.sum()

    sw = cfg.sidewalk_width
    B = {k: [] for k in ("x0", "x1", "y0", "y1", "h", "style", "kind")}

    def add(x0, x1, y0, y1, h, style, kind):
        B["x0"].append(x0); B["x1"].append(x1); B["y0"].append(y0); B["y1"].append(y1)
        B["h"].append(h); B["style"].append(style); B["kind"].append(kind)

    parks = []
    # blocks between consecutive streets, plus the outer blocks to the extent
    xs = [(extent[0], 0.0)] + [tuple(v) for v in vst] + [(extent[1], 0.0)]
    ys = [(extent[2], 0.0)] + [tuple(v) for v in hst] + [(extent[3], 0.0)]
    for i in range(len(xs) - 1):
        bx0, bx1 = xs[i][0] + xs[i][1] + sw, xs[i + 1][0] - xs[i + 1][1] - sw
        if i == 0:
            bx0 = extent[0]
        if i == len(xs) - 2:
            bx1 = extent[1]
        for j in range(len(ys) - 1):
            by0, by1 = ys[j][0] + ys[j][1] + sw, ys[j + 1][0] - ys[j + 1][1] - sw
            if j == 0:
                by0 = extent[2]
            if j == len(ys) - 2:
                by1 = extent[3]
            if bx1 - bx0 < 6 or by1 - by0 < 6:
                continue
            if rng.random() < cfg.park_prob:
                add(bx0 + 1.0, bx1 - 1.0, by0 + 1.0, by1 - 1.0, rng.uniform(7.0, 13.0), 0, 1)
                parks.append((bx0, bx1, by0, by1))
                continue
            _fill_block(rng, cfg, styles, freq, (bx0, bx1, by0, by1), add)

    bx0 = np.array(B["x0"]); bx1 = np.array(B["x1"]); by0 = np.array(B["y0"]); by1 = np.array(B["y1"])
    n = len(bx0)
    bjit = rng.normal(0, cfg.facade_jitter, (n, 3))
    has_sign = rng.random(n) < cfg.sign_prob
    sign_col = rng.integers(0, min(cfg.n_sign_colours, len(_SIGN_PALETTE)), n)
    bsign = np.where(has_sign, sign_col, -1)
    bhash = rng.integers(0, 2**31 - 1, n)
    sun_az = float(rng.uniform(0, 2 * np.pi))

    ground, origin = _ground_map(cfg, extent, vst, hst, parks)
    return City(cfg=cfg, seed=seed, vstreets=vst, hstreets=hst, extent=extent, regions=regions,
                bx0=bx0, bx1=bx1, by0=by0, by1=by1, bh=np.array(B["h"]),
                bstyle=np.array(B["style"], dtype=np.int64), bkind=np.array(B["kind"], dtype=np.int64),
                bjit=bjit, bsign=bsign, bhash=bhash, styles=styles, sign_palette=_SIGN_PALETTE,
                sun_az=sun_az, ground=ground, ground_origin=origin)


def _fill_block(rng, cfg, styles, freq, rect, add):
    """Split a block into one or two rows of buildings along its long side."""
    x0, x1, y0, y1 = rect
    along_x = (x1 - x0) >= (y1 - y0)
    L0, L1 = (x0, x1) if along_x else (y0, y1)      # along the row
    D0, D1 = (y0, y1) if along_x else (x0, x1)      # across (depth)
    depth = D1 - D0
    if depth >= 16.0:
        mid = D0 + depth * rng.uniform(0.4, 0.6)
        rows = [(D0, mid, -1), (mid, D1, +1)]       # -1: faces the low street, +1: the high one
    else:
        rows = [(D0, D1, 0)]
    for r0, r1, facing in rows:
        p = L0
        while p < L1 - 0.5:
            w = rng.uniform(*cfg.building_width)
            q = min(p + w, L1)
            if L1 - q < cfg.building_width[0]:
                q = L1
            s = rng.choice(len(freq), p=freq)
            floors = int(np.clip(round(styles.floors_mean[s] + rng.normal(0, 1.2)), *cfg.building_floors))
            h = floors * styles.floor_h[s] + styles.cornice_h[s]
            a0, a1 = r0, r1
            if rng.random() < cfg.setback_prob:
                sb = rng.uniform(0.8, 2.5)
                if facing <= 0:
                    a0 = min(a0 + sb, a1 - 4)
                if facing >= 0:
                    a1 = max(a1 - sb, a0 + 4)
            if along_x:
                add(p, q, a0, a1, h, s, 0)
            else:
                add(a0, a1, p, q, h, s, 0)
            p = q
            if rng.random() < cfg.alley_prob:
                p += rng.uniform(2.5, 4.0)


def _ground_map(cfg, extent, vst, hst, parks):
    xmin, xmax, ymin, ymax = extent
    nx = int(np.ceil((xmax - xmin) / GROUND_RES))
    ny = int(np.ceil((ymax - ymin) / GROUND_RES))
    g = np.full((ny, nx), G_PAVING, dtype=np.uint8)
    xc = xmin + (np.arange(nx) + 0.5) * GROUND_RES
    yc = ymin + (np.arange(ny) + 0.5) * GROUND_RES
    sw = cfg.sidewalk_width
    # sidewalks then roads
    for x, hw in vst:
        g[:, np.abs(xc - x) < hw + sw] = G_SIDEWALK
    for y, hw in hst:
        g[np.abs(yc - y) < hw + sw, :] = G_SIDEWALK
    for x, hw in vst:
        g[:, np.abs(xc - x) < hw] = G_ROAD
    for y, hw in hst:
        g[np.abs(yc - y) < hw, :] = G_ROAD
    # in intersections, no markings; near them, crosswalks
    in_x = np.zeros(nx, bool)
    for x, hw in vst:
        in_x |= np.abs(xc - x) < hw + sw
    in_y = np.zeros(ny, bool)
    for y, hw in hst:
        in_y |= np.abs(yc - y) < hw + sw
    dash_x = (np.mod(xc, 6.0) < 3.0)
    dash_y = (np.mod(yc, 6.0) < 3.0)
    for y, hw in hst:                       # east-west streets: dashed centre line
        rows = np.abs(yc - y) < 0.12
        cols = dash_x & ~in_x
        g[np.ix_(rows, cols)] = G_MARKING
    for x, hw in vst:
        cols = np.abs(xc - x) < 0.12
        rows = dash_y & ~in_y
        g[np.ix_(rows, cols)] = G_MARKING
    # crosswalk stripes on each road just outside each intersection
    stripe_x = np.mod(xc, 1.0) < 0.5
    stripe_y = np.mod(yc, 1.0) < 0.5
    for x, hwx in vst:
        for y, hwy in hst:
            # crossing the east-west road, on both sides of the north-south one
            for side in (-1, 1):
                c0 = x + side * (hwx + sw + 0.5)
                c1 = x + side * (hwx + sw + 3.5)
                cols = (xc > min(c0, c1)) & (xc < max(c0, c1))
                rows = (np.abs(yc - y) < hwy) & stripe_y
                g[np.ix_(rows, cols)] = G_CROSSWALK
                r0 = y + side * (hwy + sw + 0.5)
                r1 = y + side * (hwy + sw + 3.5)
                rows = (yc > min(r0, r1)) & (yc < max(r0, r1))
                cols = (np.abs(xc - x) < hwx) & stripe_x
                g[np.ix_(rows, cols)] = G_CROSSWALK
    for bx0, bx1, by0, by1 in parks:
        g[np.ix_((yc > by0) & (yc < by1), (xc > bx0) & (xc < bx1))] = G_GRASS
    return g, (xmin, ymin)


# ----------------------------------------------------------------------------
# places and query positions

def street_segments(city: City, split: str):
    """Street centre-line segments inside a split's region:
    list of (x0, y0, x1, y1, half_width)."""
    rx0, rx1, ry0, ry1 = city.regions[split]
    segs = []
    for x, hw in city.vstreets:
        if rx0 <= x <= rx1:
            segs.append((x, ry0, x, ry1, hw))
    for y, hw in city.hstreets:
        if ry0 <= y <= ry1:
            segs.append((rx0, y, rx1, y, hw))
    return segs


def make_places(city: City, split: str, rng: np.random.Generator) -> np.ndarray:
    """Database places along every street of the split: [P,2] local metres."""
    cfg = city.cfg
    pts = []
    for x0, y0, x1, y1, hw in street_segments(city, split):
        length = np.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        s = rng.uniform(0, cfg.place_spacing)
        while s <= length:
            lat = rng.uniform(-1, 1) * min(cfg.db_lateral, hw - 0.5)
            pts.append((x0 + ux * s - uy * lat, y0 + uy * s + ux * lat))
            s += cfg.place_spacing
    # drop near-duplicates at intersections
    keep = []
    for p in pts:
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= (0.5 * cfg.place_spacing) ** 2 for q in keep[-400:]):
            keep.append(p)
    return np.array(keep, dtype=np.float64).reshape(-1, 2)


def sample_query_positions(city: City, split: str, places: np.ndarray, conditions: list[str],
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One query position per entry of ``conditions``, on the streets of the
    split, each with its nearest database place between query_min_offset and
    query_max_offset. Queries stay within ``query_lateral`` metres of the road
    centre, except 'viewpoint' queries, which may be anywhere across the road
    and sidewalks (a pedestrian's view). Returns positions [n,2] and the
    distance to the nearest place [n]."""
    cfg = city.cfg
    segs = street_segments(city, split)
    lengths = np.array([np.hypot(s[2] - s[0], s[3] - s[1]) for s in segs])
    prob = lengths / lengths.sum()
    n = len(conditions)
    out, dists = [], []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise RuntimeError(f"could not place {n} queries in split {split}; check query offsets")
        x0, y0, x1, y1, hw = segs[rng.choice(len(segs), p=prob)]
        length = np.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        s = rng.uniform(0, length)
        lat_max = hw + cfg.sidewalk_width - 0.8
        if conditions[len(out)] != "viewpoint":
            lat_max = min(lat_max, cfg.query_lateral)
        lat = rng.uniform(-1, 1) * lat_max
        p = np.array([x0 + ux * s - uy * lat, y0 + uy * s + ux * lat])
        d = np.sqrt(((places - p) ** 2).sum(1)).min()
        if cfg.query_min_offset <= d <= cfg.query_max_offset:
            out.append(p)
            dists.append(d)
    return np.array(out), np.array(dists)
