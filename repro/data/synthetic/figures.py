"""Overview figures of a generated synthetic city (matplotlib, Agg backend).

- ``synthetic_city_examples.png/.pdf``: top row, one database image and the
  same pose (2 m away) rendered under every query condition; below, for each
  condition a real test query beside its best-matching database image.
- ``synthetic_city_map.png/.pdf``: building footprints, database places and
  queries, coloured by split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from repro.errors import DatasetError

from .config import CONDITIONS, SPLITS, UTM_OFFSET, CityConfig

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def _config_from_manifest(man: dict) -> CityConfig:
    d = dict(man["config"])
    fields = CityConfig.__dataclass_fields__
    for k, v in d.items():
        if isinstance(v, list):
            d[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return CityConfig(**{k: v for k, v in d.items() if k in fields})


def _angle_diff(a, b):
    d = np.abs(np.mod(a - b, 360.0))
    return np.minimum(d, 360.0 - d)


def plot_city_overview(root: str | os.PathLike, out_dir: str | os.PathLike = "figures",
                       split: str = "test") -> list[Path]:
    """Write the examples and map figures for the city at ``root``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.collections import PolyCollection
    from PIL import Image

    from .conditions import db_camera, db_light, query_camera_and_light
    from .generate import load_query_conditions
    from .layout import build_city
    from .render import render

    root = Path(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    man_path = root / "manifest.json"
    if not man_path.is_file():
        raise DatasetError(f"{root}: no manifest.json; not a generated synthetic city")
    man = json.loads(man_path.read_text())
    written = []

    # ------------------------------------------------------------ examples
    qdf = load_query_conditions(root, split)
    ddf = pd.read_csv(root / f"{split}_database.csv")
    dpos = ddf[["easting", "northing"]].to_numpy()
    dhead = ddf["heading_deg"].to_numpy()
    conds = [c for c in CONDITIONS if (qdf["condition"] == c).any()]

    cfg = _config_from_manifest(man)
    city = build_city(cfg, int(man["seed"]))
    # a database image looking at a facade, and the same pose under each condition
    qpos = qdf[["easting", "northing"]].to_numpy()
    d_all = np.sqrt(((qpos[:, None] - dpos[None]) ** 2).sum(-1))
    score = d_all / 5.0 + _angle_diff(qdf["heading_deg"].to_numpy()[:, None], dhead[None]) / 10.0
    q_best = int(np.argmin(score.min(1)))
    di0 = int(np.argmin(score[q_best]))
    x0, y0 = dpos[di0] - np.array(UTM_OFFSET)
    h0 = float(dhead[di0])
    rng = np.random.default_rng(12345)
    showcase = [("database", render(city, db_camera(cfg, x0, y0, h0), db_light(cfg, city.sun_az, rng), rng)[0])]
    dx, dy = 2.0 * np.cos(np.radians(h0 + 90)), 2.0 * np.sin(np.radians(h0 + 90))
    for c in conds:
        cam, light = query_camera_and_light(cfg, c, x0 + dx, y0 + dy, h0 + 8.0, city.sun_az, rng)
        showcase.append((c, render(city, cam, light, rng)[0]))

    # dataset pairs: per condition, the query best matched by a database image
    pairs = []
    for c in conds:
        qi = np.nonzero(qdf["condition"].to_numpy() == c)[0]
        s = score[qi]
        k = int(np.argmin(s.min(1)))
        q, d = int(qi[k]), int(np.argmin(s[k]))
        pairs.append((c, q, d, float(d_all[q, d]), float(_angle_diff(qdf["heading_deg"][q], dhead[d]))))

    ncol = max(len(showcase), len(pairs))
    fig, axes = plt.subplots(3, ncol, figsize=(2.1 * ncol, 2.0 * 3 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (name, img) in enumerate(showcase):
        axes[0, j].imshow(img)
        axes[0, j].set_title(name if j else "database (reference)", fontsize=9)
    axes[0, 0].text(-0.08, 0.5, "same pose,\nrendered", transform=axes[0, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=8)
    for j, (c, q, d, dist, dh) in enumerate(pairs):
        axes[1, j].imshow(Image.open(root / "queries" / qdf["image"][q]))
        axes[1, j].set_title(f"{c} query #{q}", fontsize=9)
        axes[2, j].imshow(Image.open(root / "database" / ddf["image"][d]))
        axes[2, j].set_title(f"db match: {dist:.1f} m, {dh:.0f}°", fontsize=8)
    axes[1, 0].text(-0.08, 0.5, f"{split} queries", transform=axes[1, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=8)
    axes[2, 0].text(-0.08, 0.5, "nearest db view", transform=axes[2, 0].transAxes,
                    rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(f"Synthetic city ({man['preset']}, seed {man['seed']}): database view and query conditions",
                 fontsize=10)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        p = out_dir / f"synthetic_city_examples.{ext}"
        fig.savefig(p, dpi=150)
        written.append(p)
    plt.close(fig)

    # ------------------------------------------------------------ map
    lay = np.load(root / "city_layout.npz")
    ox, oy = UTM_OFFSET
    fig, ax = plt.subplots(figsize=(12, 5.2))
    polys = [[(a + ox, c + oy), (b + ox, c + oy), (b + ox, d + oy), (a + ox, d + oy)]
             for a, b, c, d in zip(lay["bx0"], lay["bx1"], lay["by0"], lay["by1"])]
    colours = np.where(lay["bkind"][:, None] == 1, np.array([[0.6, 0.8, 0.6]]), np.array([[0.8, 0.8, 0.8]]))
    ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors="none"))
    for s in SPLITS:
        ddf_s = pd.read_csv(root / f"{s}_database.csv")
        qdf_s = load_query_conditions(root, s)
        col = SPLIT_COLOURS[s]
        ax.scatter(ddf_s["easting"], ddf_s["northing"], s=3, c=col, marker="o", linewidths=0,
                   label=f"{s} database ({len(ddf_s)} images)")
        ax.scatter(qdf_s["easting"], qdf_s["northing"], s=6, c=col, marker="x", linewidths=0.6, alpha=0.7,
                   label=f"{s} queries ({len(qdf_s)})")
    for (rx0, rx1, ry0, ry1), s in zip(lay["regions"], SPLITS):
        ax.add_patch(matplotlib.patches.Rectangle((rx0 + ox, ry0 + oy), rx1 - rx0, ry1 - ry0, fill=False,
                                                  ec=SPLIT_COLOURS[s], lw=1, ls="--"))
    ex = lay["extent"]
    ax.set_xlim(ex[0] + ox, ex[1] + ox)
    ax.set_ylim(ex[2] + oy, ex[3] + oy)
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel("easting (m, UTM-like)")
    ax.set_ylabel("northing (m)")
    ax.set_title(f"Synthetic city map ({man['preset']}, seed {man['seed']}): splits are "
                 f"{cfg.split_gap:.0f} m apart; grey buildings, green parks")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, markerscale=3)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        p = out_dir / f"synthetic_city_map.{ext}"
        fig.savefig(p, dpi=150)
        written.append(p)
    plt.close(fig)
    return written
