"""Street-level perspective views of a :class:`layout.City`, in numpy.

A column ray-caster: each image column casts one horizontal ray against the
axis-aligned building footprints near the camera (slab test, all columns and
buildings at once); the hit building, face and position along the face give
every pixel of that column its facade texture coordinates (u along the face,
z up), and rows below the horizon that are not wall are ground, looked up in
the city's ground map. A pinhole camera with height, heading, tilt (shift of
the horizon) and field of view. Lighting conditions (day, dusk, night, fog)
and occluders (vehicles, pedestrians) are applied per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from .layout import (G_CROSSWALK, G_GRASS, G_MARKING, G_ROAD, G_SIDEWALK,
                     GROUND_RES, City)

_M32 = 0xFFFFFFFF


def hash01(*arrays, seed: int = 0) -> np.ndarray:
    """Deterministic per-element hash of integer arrays -> floats in [0, 1)."""
    h = np.int64(seed * 0x27D4EB2F + 0x165667B1) & _M32
    for k, a in zip((0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F), arrays):
        h = (h + (np.asarray(a, dtype=np.int64) & _M32) * k) & _M32
        h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _M32
    h = h ^ (h >> 12)
    h = (h * 0x297A2D39) & _M32
    h = h ^ (h >> 15)
    return h.astype(np.float64) / 4294967296.0


@dataclass
class Camera:
    x: float
    y: float
    heading: float      # degrees, 0 = east (+x), counter-clockwise
    height: float = 2.5
    fov: float = 70.0   # horizontal, degrees
    tilt: float = 0.0   # degrees, up positive


@dataclass
class Light:
    """Illumination and atmosphere of one image."""

    kind: str = "day"                  # day, dusk or night
    sun_az: float = 0.0                # radians
    sun_el: float = 0.7                # radians
    sun: float = 0.55                  # direct light strength
    ambient: float = 0.55
    tint: tuple = (1.0, 1.0, 1.0)
    sky_top: tuple = (0.35, 0.55, 0.85)
    sky_horizon: tuple = (0.75, 0.82, 0.92)
    exposure: float = 1.0
    lit_frac: float = 0.0              # fraction of windows lit (emissive)
    lit_gain: float = 0.0
    lamps: float = 0.0                 # street-lamp strength (night)
    haze_vis: float = 500.0            # distance haze, metres
    haze_col: tuple = (0.75, 0.8, 0.88)
    fog_vis: float = 0.0               # >0: fog, metres
    fog_col: tuple = (0.72, 0.73, 0.75)
    contrast: float = 1.0
    noise: float = 0.004
    blur: float = 0.0
    clouds: float = 0.0
    cloud_seed: int = 0
    occluders: int = 0                 # number of vehicles/pedestrians to draw
    auto_exposure: float = 0.0         # >0: scale to this mean (linear) brightness, as a camera would
    extra: dict = field(default_factory=dict)


def render(city: City, cam: Camera, light: Light, rng: np.random.Generator,
           height: int | None = None, width: int | None = None,
           supersample: int | None = None) -> tuple[np.ndarray, dict]:
    """Render one view. Returns (uint8 [H,W,3] image, stats dict)."""
    cfg = city.cfg
    H = height or cfg.height
    W = width or cfg.width
    k = supersample or cfg.supersample
    Hs, Ws = H * k, W * k
    f = (Ws / 2) / np.tan(np.radians(cam.fov) / 2)
    cy = Hs / 2 + f * np.tan(np.radians(cam.tilt))   # horizon row
    psi = np.radians(cam.heading)
    fwd = np.array([np.cos(psi), np.sin(psi)])
    right = np.array([np.sin(psi), -np.cos(psi)])
    xcam = (np.arange(Ws) + 0.5 - Ws / 2) / f                 # [W]
    dx = fwd[0] + xcam * right[0]
    dy = fwd[1] + xcam * right[1]
    ycam = (cy - (np.arange(Hs) + 0.5)) / f                   # [H] up positive

    # ---- ray-cast columns against nearby building boxes (t = depth along optical axis)
    R = cfg.max_range
    cxb = 0.5 * (city.bx0 + city.bx1) - cam.x
    cyb = 0.5 * (city.by0 + city.by1) - cam.y
    rad = 0.5 * np.hypot(city.bx1 - city.bx0, city.by1 - city.by0)
    dist = np.hypot(cxb, cyb)
    near = (dist - rad < R) & (cxb * fwd[0] + cyb * fwd[1] + rad > 0)
    # inside the horizontal field of view (bearing within fov/2 + angular radius)
    bearing = np.abs(np.mod(np.arctan2(cyb, cxb) - psi + np.pi, 2 * np.pi) - np.pi)
    half_fov = np.arctan((Ws / 2) / f)
    near &= (dist <= rad) | (bearing <= half_fov + np.arcsin(np.minimum(1.0, rad / np.maximum(dist, 1e-9))) + 0.01)
    idx = np.nonzero(near)[0]
    t_hit = np.full(Ws, np.inf)
    b_hit = np.full(Ws, -1, dtype=np.int64)
    face = np.zeros(Ws, dtype=np.int64)
    if len(idx):
        with np.errstate(divide="ignore", invalid="ignore"):
            idx_ = 1.0 / np.where(np.abs(dx) < 1e-12, 1e-12, dx)
            idy_ = 1.0 / np.where(np.abs(dy) < 1e-12, 1e-12, dy)
            tx0 = (city.bx0[idx][None, :] - cam.x) * idx_[:, None]
            tx1 = (city.bx1[idx][None, :] - cam.x) * idx_[:, None]
            ty0 = (city.by0[idx][None, :] - cam.y) * idy_[:, None]
            ty1 = (city.by1[idx][None, :] - cam.y) * idy_[:, None]
        txn = np.minimum(tx0, tx1)
        tyn = np.minimum(ty0, ty1)
        tnear = np.maximum(txn, tyn)
        tfar = np.minimum(np.maximum(tx0, tx1), np.maximum(ty0, ty1))
        ok = (tnear <= tfar) & (tnear > 1e-3)
        tnear = np.where(ok, tnear, np.inf)
        j = np.argmin(tnear, axis=1)
        cols = np.arange(Ws)
        t_hit = tnear[cols, j]
        hitmask = np.isfinite(t_hit) & (t_hit < R)
        t_hit = np.where(hitmask, t_hit, np.inf)
        b_hit = np.where(hitmask, idx[j], -1)
        xface = txn[cols, j] >= tyn[cols, j]
        # faces: 0 at x0 (normal -x), 1 at x1 (+x), 2 at y0 (-y), 3 at y1 (+y)
        face = np.where(xface, np.where(dx > 0, 0, 1), np.where(dy > 0, 2, 3))
    hit = b_hit >= 0
    bb = np.where(hit, b_hit, 0)
    hx = cam.x + np.where(hit, t_hit, 0) * dx
    hy = cam.y + np.where(hit, t_hit, 0) * dy
    x0, x1, y0, y1 = city.bx0[bb], city.bx1[bb], city.by0[bb], city.by1[bb]
    u = np.select([face == 0, face == 1, face == 2], [y1 - hy, hy - y0, hx - x0], x1 - hx)
    fw = np.where(face <= 1, y1 - y0, x1 - x0)
    u = np.clip(u, 0, fw)
    top = city.bh[bb].copy()
    trees = hit & (city.bkind[bb] == 1)
    if trees.any():
        ph = (city.bhash[bb] % 1000) / 159.0
        top = np.where(trees, top - 1.5 + 1.3 * np.sin(u * 0.9 + ph) + 0.8 * np.sin(u * 2.3 + 2 * ph), top)

    # ---- per-pixel classification
    tcol = np.where(hit, t_hit, np.inf)
    z = cam.height + ycam[:, None] * np.where(hit, t_hit, 0.0)[None, :]   # [H,W]
    wall = hit[None, :] & (z >= 0) & (z <= top[None, :])
    groundm = (ycam[:, None] < 0) & ~wall
    sky = ~wall & ~groundm
    img = np.zeros((Hs, Ws, 3))
    depth = np.full((Hs, Ws), np.inf)

    # sun/shade factor per face
    normals = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)
    sun_dir = np.array([np.cos(light.sun_az), np.sin(light.sun_az)])
    face_light = light.ambient + light.sun * np.cos(light.sun_el) * np.maximum(0, normals @ sun_dir)
    tint = np.asarray(light.tint)

    # walls
    wr, wc = np.nonzero(wall)
    if len(wr):
        col, emis = _shade_facade(city, bb[wc], face[wc], u[wc].astype(np.float32), z[wr, wc].astype(np.float32),
                                  fw[wc].astype(np.float32), light)
        lf = face_light[face[wc]][:, None]
        if light.lamps > 0:  # street lamps light the lower facade
            lf = lf + light.lamps * 0.5 * np.exp(-z[wr, wc] / 3.0)[:, None] * np.array([1.0, 0.8, 0.55])
        img[wr, wc] = col * lf * tint + emis
        depth[wr, wc] = tcol[wc]

    # ground
    gr, gc = np.nonzero(groundm)
    if len(gr):
        tg = cam.height / (-ycam[gr])
        gx = cam.x + tg * dx[gc]
        gy = cam.y + tg * dy[gc]
        img[gr, gc] = _shade_ground(city, gx, gy, tg, light, tint, sun_dir)
        depth[gr, gc] = tg

    # sky
    sr, sc = np.nonzero(sky)
    if len(sr):
        e = np.clip(ycam[sr] * 2.2, 0, 1)[:, None]
        scol = np.asarray(light.sky_horizon) * (1 - e) + np.asarray(light.sky_top) * e
        if light.clouds > 0:
            az = psi - np.arctan(xcam[sc])
            el = ycam[sr]
            c = (np.sin(az * 5 + light.cloud_seed) + np.sin(az * 11.3 + 2.1 * light.cloud_seed)
                 + np.sin(el * 14 + az * 3 + light.cloud_seed * 0.7))
            c = np.clip(c / 3 + 0.2, 0, 1)[:, None] * light.clouds
            scol = scol * (1 - c) + c * np.asarray(light.sky_horizon) * 1.1
        img[sr, sc] = scol

    # distance haze (all conditions) and fog
    fin = np.isfinite(depth)
    a = np.where(fin, 1.0 - np.exp(-np.where(fin, depth, 0) / light.haze_vis), 0.0)
    img = img * (1 - a[..., None]) + a[..., None] * np.asarray(light.haze_col)

    stats = {"occluded_frac": 0.0, "n_occluders": 0}
    if light.occluders > 0:
        stats = _draw_occluders(img, depth, cam, f, cy, light, rng, tcol, face_light)
    if light.fog_vis > 0:
        a = 1.0 - np.exp(-depth / light.fog_vis)          # inf depth -> 1
        img = img * (1 - a[..., None]) + a[..., None] * np.asarray(light.fog_col)

    if k > 1:
        img = img.reshape(H, k, W, k, 3).mean(axis=(1, 3))
    if light.auto_exposure > 0:
        img = img * (light.auto_exposure / max(float(img.mean()), 1e-3))
    img = img * light.exposure
    if light.contrast != 1.0:
        m = img.mean()
        img = m + (img - m) * light.contrast
    if light.blur > 0:
        img = gaussian_filter(img, sigma=(light.blur, light.blur, 0), mode="nearest")
    if light.noise > 0:
        img = img + rng.normal(0, light.noise, img.shape)
    # display gamma (scene values are linear-ish), then quantise
    img = np.clip(img, 0, 1) ** (1 / 1.4)
    return (img * 255 + 0.5).astype(np.uint8), stats


def _shade_facade(city: City, b, face, u, z, fw, light: Light):
    """Albedo and emission of facade points (arrays of the same length)."""
    st = city.styles
    s = city.bstyle[b]
    n = len(b)
    bh = city.bh[b]
    col = st.wall[s] + city.bjit[b]
    # --- material texture
    mat = st.material[s]
    ms = st.mat_scale[s]
    con = st.mat_contrast[s]
    v = np.zeros(n)
    m = mat == 1   # brick
    if m.any():
        row = np.floor(z[m] / ms[m])
        bu = (u[m] + (row % 2) * ms[m]) / (2.2 * ms[m])
        mortar = (np.mod(z[m] / ms[m], 1) < 0.14) | (np.mod(bu, 1) < 0.07)
        v[m] = np.where(mortar, 0.9, (hash01(row, np.floor(bu), b[m]) - 0.5) * 0.8)
    m = mat == 2   # panels
    if m.any():
        jn = (np.mod(u[m] / ms[m], 1) < 0.04) | (np.mod(z[m] / ms[m], 1) < 0.04)
        v[m] = np.where(jn, -1.0, (hash01(np.floor(u[m] / ms[m]), np.floor(z[m] / ms[m]), b[m]) - 0.5) * 0.4)
    m = mat == 3   # siding
    if m.any():
        v[m] = np.where(np.mod(z[m] / ms[m], 1) < 0.18, -1.0, 0.15)
    m = (mat == 0) | (mat == 4)   # plain render: weathering blotches
    if m.any():
        v[m] = (hash01(np.floor(u[m] / ms[m]), np.floor(z[m] / ms[m]), b[m]) - 0.5) * 0.6
    col = col * (1 + con[:, None] * v[:, None])

    # --- storeys, bays and windows
    fh = st.floor_h[s]
    fl = np.floor(z / fh)
    fz = z - fl * fh
    nb = np.maximum(1, np.round(fw / st.bay_w[s]))
    bw = fw / nb
    bay = np.minimum(np.floor(u / bw), nb - 1)
    bu = u - bay * bw
    cornice_top = bh - st.cornice_h[s]
    half_w = 0.5 * st.win_w[s] * bw
    wy0 = st.sill[s] * fh
    wy1 = wy0 + st.win_h[s] * fh
    ft = st.frame_t[s]
    upper = (fl >= 1) & (z < cornice_top - 0.2)
    glass_wall = st.material[s] == 4
    in_win = np.abs(bu - bw / 2) < half_w
    in_win &= (fz > wy0) & (fz < wy1)
    in_frame = (np.abs(bu - bw / 2) < half_w + ft) & (fz > wy0 - ft) & (fz < wy1 + ft) & ~in_win
    gf = st.ground[s]
    ground_floor = fl == 0
    # shop fronts: big glass on the ground floor
    shop = ground_floor & (gf == 1) & (np.abs(bu - bw / 2) < 0.42 * bw) & (fz > 0.35) & (fz < fh - 0.9)
    win = (upper & (in_win | glass_wall)) | shop | (ground_floor & (gf != 1) & in_win & (fz > 0.8))
    frame = upper & in_frame & ~glass_wall
    if glass_wall.any():  # curtain wall mullions
        mull = glass_wall & upper & ((np.mod(u, bw / 2) < 0.1) | (fz < 0.25))
        frame |= mull
        win &= ~mull
    # stone base
    base = ground_floor & (gf == 2) & ~win
    col = np.where(base[:, None], st.base[s] * (1 + 0.5 * con[:, None] * v[:, None]), col)
    # string course
    band = (st.band[s] == 1) & (fl >= 1) & (fz < 0.18) & (z < cornice_top)
    col = np.where(band[:, None], st.band_col[s], col)
    # windows: glass tone varies per window (blinds), brighter near the top (sky reflection)
    wid = hash01(b, fl, bay, face)
    wcol = st.win[s] * (0.7 + 0.6 * wid[:, None]) * (0.8 + 0.4 * np.clip((fz - wy0) / (wy1 - wy0 + 1e-6), 0, 1))[:, None]
    col = np.where(win[:, None], wcol, col)
    col = np.where(frame[:, None], st.frame[s], col)
    # door: one per face, in a hashed bay
    door_bay = np.floor(hash01(b, face, seed=7) * nb)
    door = ground_floor & (bay == door_bay) & (np.abs(bu - bw / 2) < 0.65) & (fz < 2.3)
    col = np.where(door[:, None], st.door[s], col)
    # shop sign: a coloured band with dark 'lettering' above the ground floor
    sign_idx = city.bsign[b]
    sign = (sign_idx >= 0) & ground_floor & (fz > fh - 0.8) & (fz < fh - 0.12) & (u > 0.4) & (u < fw - 0.4)
    if sign.any():
        sc = city.sign_palette[np.maximum(sign_idx, 0)]
        letters = (hash01(np.floor(u * 2.5), b, seed=3) < 0.55) & (np.abs(fz - (fh - 0.46)) < 0.18) & (np.mod(u * 2.5, 1) < 0.75)
        scol = np.where(letters[:, None], 1.0 - sc * 0.85, sc)
        col = np.where(sign[:, None], scol, col)
    # cornice with a shadow line below
    corn = z > cornice_top
    col = np.where(corn[:, None], st.cornice[s], col)
    col = np.where(((z > cornice_top - 0.18) & ~corn)[:, None], col * 0.55, col)
    # parks: tree canopy / trunks
    trees = city.bkind[b] == 1
    if trees.any():
        tz, tu, tb = z[trees], u[trees], b[trees]
        leaf = 0.5 * hash01(np.floor(tu / 0.6), np.floor(tz / 0.6), tb) + 0.5 * hash01(np.floor(tu / 1.9), np.floor(tz / 1.9), tb, seed=5)
        green = np.stack([0.12 + 0.12 * leaf, 0.28 + 0.22 * leaf, 0.08 + 0.08 * leaf], 1)
        trunk_zone = tz < 2.6
        trunk = trunk_zone & (np.mod(tu + (city.bhash[tb] % 7), 6.0) < 0.45)
        under = np.where(trunk[:, None], np.array([0.22, 0.15, 0.09]), np.array([0.10, 0.14, 0.08]) * (0.7 + 0.6 * leaf[:, None]))
        col[trees] = np.where(trunk_zone[:, None], under, green)
        win &= ~trees
    col = np.clip(col, 0, 1)

    emis = np.zeros((n, 3))
    if light.lit_frac > 0:
        lit = win & (hash01(b, fl, bay, face, seed=11) < light.lit_frac)
        warm = hash01(b, fl, bay, seed=13)
        lcol = np.where((warm < 0.7)[:, None], np.array([1.0, 0.78, 0.45]), np.array([0.75, 0.85, 1.0]))
        emis = np.where(lit[:, None], lcol * light.lit_gain * (0.6 + 0.4 * wid[:, None]), 0.0)
        col = np.where(lit[:, None], col * 0.2, col)
    return col, emis


def _shade_ground(city: City, gx, gy, tg, light: Light, tint, sun_dir):
    ox, oy = city.ground_origin
    ix = np.clip(((gx - ox) / GROUND_RES).astype(np.int64), 0, city.ground.shape[1] - 1)
    iy = np.clip(((gy - oy) / GROUND_RES).astype(np.int64), 0, city.ground.shape[0] - 1)
    g = city.ground[iy, ix]
    alb = np.empty((len(g), 3))
    alb[:] = (0.42, 0.41, 0.40)                     # paving
    alb[g == G_ROAD] = (0.22, 0.22, 0.23)
    alb[g == G_SIDEWALK] = (0.55, 0.54, 0.52)
    alb[g == G_MARKING] = (0.85, 0.80, 0.55)
    alb[g == G_CROSSWALK] = (0.85, 0.85, 0.85)
    alb[g == G_GRASS] = (0.20, 0.38, 0.14)
    # grain (paving slabs on sidewalks)
    grain = hash01(np.floor(gx / 0.5), np.floor(gy / 0.5), seed=17) - 0.5
    slab = (g == G_SIDEWALK) & ((np.mod(gx, 1.5) < 0.06) | (np.mod(gy, 1.5) < 0.06))
    alb = alb * (1 + 0.12 * grain[:, None]) * np.where(slab, 0.8, 1.0)[:, None]
    lf = light.ambient + light.sun * np.sin(light.sun_el)
    col = alb * lf * tint
    if light.lamps > 0:   # pools of light from a grid of street lamps
        lx = np.mod(gx, 22.0) - 11.0
        ly = np.mod(gy, 22.0) - 11.0
        pool = np.exp(-(lx ** 2 + ly ** 2) / 30.0)
        col = col + alb * light.lamps * pool[:, None] * np.array([1.0, 0.8, 0.5])
    return col


_VEHICLES = {  # width (m) seen from the side/back, height, probability
    "car": (4.3, 1.5, 0.45),
    "car_back": (1.8, 1.5, 0.15),
    "van": (5.2, 2.2, 0.12),
    "bus": (11.0, 3.1, 0.06),
    "person": (0.55, 1.75, 0.22),
}
_BODY = np.array([[0.7, 0.1, 0.1], [0.1, 0.2, 0.6], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1],
                  [0.5, 0.5, 0.55], [0.9, 0.75, 0.1], [0.15, 0.4, 0.2]])


def _draw_occluders(img, depth, cam: Camera, f, cy, light: Light, rng, tcol, face_light):
    """Vehicles and pedestrians standing on the ground in front of the camera.
    Drawn in place with a depth test. Returns coverage statistics."""
    Hs, Ws, _ = img.shape
    names = list(_VEHICLES)
    p = np.array([_VEHICLES[k][2] for k in names])
    p /= p.sum()
    covered = np.zeros((Hs, Ws), bool)
    lf = light.ambient + 0.6 * light.sun
    items = []
    for _ in range(light.occluders):
        kind = names[rng.choice(len(names), p=p)]
        c = rng.uniform(0, Ws)
        wall_d = tcol[int(c)]
        dmax = min(14.0, 0.85 * wall_d) if np.isfinite(wall_d) else 14.0
        if dmax < 2.5:
            continue
        items.append((rng.uniform(2.5, dmax), c, kind, rng.integers(len(_BODY)), rng.uniform(0.85, 1.15)))
    for d, c, kind, ci, scale in sorted(items, key=lambda it: -it[0]):
        w, h, _ = _VEHICLES[kind]
        w, h = w * scale, h * scale
        bottom = cy + f * cam.height / d
        pw, ph = f * w / d, f * h / d
        c0, c1 = int(max(0, c - pw / 2)), int(min(Ws, c + pw / 2))
        r0, r1 = int(max(0, bottom - ph)), int(min(Hs, bottom))
        if c1 <= c0 or r1 <= r0:
            continue
        rr = (np.arange(r0, r1) + 0.5 - (bottom - ph)) / ph      # 0 top .. 1 bottom
        cc = (np.arange(c0, c1) + 0.5 - (c - pw / 2)) / pw       # 0 left .. 1 right
        R, C = np.meshgrid(rr, cc, indexing="ij")
        body = _BODY[ci]
        if kind == "person":
            head = (R < 0.14) & (np.abs(C - 0.5) < 0.22)
            torso = (R >= 0.14) & (R < 0.55) & (np.abs(C - 0.5) < 0.5)
            legs = (R >= 0.55) & ((np.abs(C - 0.3) < 0.14) | (np.abs(C - 0.7) < 0.14))
            mask = head | torso | legs
            colr = np.where(head[..., None], np.array([0.75, 0.55, 0.42]),
                            np.where(torso[..., None], body, np.array([0.12, 0.12, 0.18])))
        else:
            cabin_top = 0.0 if kind in ("van", "bus") else 0.05
            cabin = (R < 0.45) & (R >= cabin_top) & (np.abs(C - 0.5) < (0.48 if kind in ("van", "bus") else 0.33))
            glass = cabin & (R > cabin_top + 0.08) & (np.abs(C - 0.5) < (0.45 if kind in ("van", "bus") else 0.29))
            lower = (R >= 0.45) & (R < 0.88)
            wheel_c = (0.18, 0.82) if kind != "car_back" else (0.15, 0.85)
            wheels = (R >= 0.7) & (np.minimum(np.abs(C - wheel_c[0]), np.abs(C - wheel_c[1])) < 0.08 + 0.04 * (kind == "car_back"))
            mask = cabin | lower | wheels
            colr = np.where(wheels[..., None], np.array([0.05, 0.05, 0.05]),
                            np.where(glass[..., None], np.array([0.15, 0.2, 0.25]), body))
        sub_d = depth[r0:r1, c0:c1]
        m = mask & (d < sub_d)
        reg = img[r0:r1, c0:c1]
        reg[m] = (colr * lf * np.asarray(light.tint))[m] if colr.ndim == 3 else colr * lf
        sub_d[m] = d
        covered[r0:r1, c0:c1] |= m
    return {"occluded_frac": float(covered.mean()), "n_occluders": len(items)}
