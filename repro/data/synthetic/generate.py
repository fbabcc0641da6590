"""Generate a synthetic city on disk in the Pittsburgh layout.

ROOT/
    manifest.json               written last: preset, seed, version, counts, timings
    train.mat val.mat test.mat  dbStruct per split (repro.data.dbstruct format)
    train_queries.csv ...       per-query condition and camera parameters
    train_database.csv ...      per-database-image place and heading
    city_layout.npz             building footprints and streets (for maps)
    database/{split}/pPPPPP_yawKK.png   (dbImageFns are relative to ROOT/database)
    queries/{split}/qQQQQQ.png          (qImageFns are relative to ROOT/queries)

The city is generated into a temporary sibling folder and renamed to ROOT
only when complete (manifest last), so an interrupted run is never taken for
a finished one. A second call with the same preset, seed, config and
generator version returns at once.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from repro.data.dbstruct import DbStruct, save_dbstruct
from repro.errors import DatasetError

from .conditions import assign_conditions, db_camera, db_light, query_camera_and_light
from .config import GENERATOR_VERSION, SPLITS, UTM_OFFSET, CityConfig, get_config
from .layout import City, build_city, make_places, sample_query_positions
from repro.paths import repo_root

QUERY_COLUMNS = [
    "query_index", "image", "condition", "easting", "northing", "heading_deg", "height_m",
    "tilt_deg", "fov_deg", "nearest_db_m", "exposure", "fog_visibility_m", "contrast",
    "noise_sigma", "blur_sigma", "lit_windows", "n_occluders", "occluded_frac",
]
DB_COLUMNS = ["db_index", "image", "place", "easting", "northing", "heading_deg"]
PNG_COMPRESS = 1




def default_city_root(preset: str = "default", seed: int = 0) -> Path:
    """``<repo>/cache/synthetic/{preset}_seed{seed}`` (cache/ is git-ignored)."""
    return repo_root() / "cache" / "synthetic" / f"{preset}_seed{seed}"


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, man: dict | None, cfg: CityConfig, seed: int) -> bool:
    if not man or not man.get("complete"):
        return False
    if (man.get("generator_version") != GENERATOR_VERSION or man.get("seed") != seed
            or man.get("config_hash") != cfg.config_hash()):
        return False
    return all((root / f"{s}.mat").is_file() and (root / f"{s}_queries.csv").is_file() for s in SPLITS)


# ----------------------------------------------------------------------------
# workers

_CITY: City | None = None
_CITY_KEY = None


def _init_worker(cfg: CityConfig, seed: int):
    global _CITY, _CITY_KEY
    key = (cfg.config_hash(), seed)
    if _CITY is None or _CITY_KEY != key:
        _CITY, _CITY_KEY = build_city(cfg, seed), key


def _render_task(task):
    from .render import render
    kind, idx, path, cam, light, rseed = task
    img, stats = render(_CITY, cam, light, np.random.default_rng(rseed))
    Image.fromarray(img).save(path, format="PNG", compress_level=PNG_COMPRESS)
    return kind, idx, stats


def _cache_city(city: City, cfg: CityConfig, seed: int) -> None:
    """Hand an already built city to :func:`_init_worker` (this process and
    forked workers then skip rebuilding it)."""
    global _CITY, _CITY_KEY
    _CITY, _CITY_KEY = city, (cfg.config_hash(), seed)


def _run_tasks(tasks, cfg, seed, workers, log, task_fn=None):
    """Render ``tasks`` with ``task_fn`` (default :func:`_render_task`), in
    ``workers`` processes; returns {(kind, idx): render stats}. ``task_fn``
    must be a module-level function (pickled to the workers) returning
    ``(kind, idx, stats)`` and reading the city from ``_CITY``."""
    task_fn = task_fn or _render_task
    results = {}
    n = len(tasks)
    t0 = time.perf_counter()
    step = max(1, n // 10)

    def note(i):
        if log and (i + 1) % step == 0:
            log(f"  rendered {i + 1}/{n} images ({time.perf_counter() - t0:.1f} s)")

    if workers <= 1 or n < 64:
        _init_worker(cfg, seed)
        for i, t in enumerate(tasks):
            kind, idx, stats = task_fn(t)
            results[(kind, idx)] = stats
            note(i)
        return results
    import multiprocessing as mp
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    chunk = max(4, n // (workers * 16))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, seed)) as pool:
        for i, (kind, idx, stats) in enumerate(pool.imap_unordered(task_fn, tasks, chunksize=chunk)):
            results[(kind, idx)] = stats
            note(i)
    return results


def _n_workers(cfg: CityConfig, workers: int | None) -> int:
    if workers is None or workers <= 0:
        workers = cfg.workers
    if workers <= 0:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:
            workers = os.cpu_count() or 1
    return max(1, workers)


# ----------------------------------------------------------------------------

def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.10g}"
    return str(v)


def save_city_layout(path: Path, city: City, utm_offset=UTM_OFFSET) -> None:
    """Building footprints, streets and split regions of ``city`` (for maps),
    with the UTM offset that turns its local metres into the .mat positions."""
    np.savez(path, bx0=city.bx0, bx1=city.bx1, by0=city.by0, by1=city.by1,
             bh=city.bh, bstyle=city.bstyle, bkind=city.bkind, vstreets=city.vstreets,
             hstreets=city.hstreets, extent=np.array(city.extent), utm_offset=np.array(utm_offset),
             regions=np.array([city.regions[s] for s in SPLITS]))


def _generate(out: Path, cfg: CityConfig, seed: int, workers: int, log) -> dict:
    timings = {}
    t0 = time.perf_counter()
    city = build_city(cfg, seed)
    timings["layout_s"] = time.perf_counter() - t0

    # ---- plan every image (all random choices here, deterministically)
    t1 = time.perf_counter()
    tasks, plans = [], {}
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 1, si])
        places = make_places(city, split, rng)
        if len(places) == 0:
            raise DatasetError(f"synthetic city: no streets in the {split} region; enlarge region_size")
        (out / "database" / split).mkdir(parents=True, exist_ok=True)
        (out / "queries" / split).mkdir(parents=True, exist_ok=True)
        db_rows, db_utm, db_fns = [], [], []
        step = 360.0 / cfg.n_headings
        phases = []
        for pi, (x, y) in enumerate(places):
            phase = float(rng.uniform(0, step))
            phases.append(phase)
            for k in range(cfg.n_headings):
                heading = (phase + k * step) % 360.0
                fn = f"{split}/p{pi:05d}_yaw{k:02d}.png"
                di = len(db_fns)
                db_fns.append(fn)
                db_utm.append((x + UTM_OFFSET[0], y + UTM_OFFSET[1]))
                db_rows.append([di, fn, pi, x + UTM_OFFSET[0], y + UTM_OFFSET[1], heading])
                light = db_light(cfg, city.sun_az, np.random.default_rng([seed, 4, si, di]))
                tasks.append(("db" + split, di, str(out / "database" / fn), db_camera(cfg, x, y, heading),
                              light, [seed, 5, si, di]))
        conds = assign_conditions(cfg, cfg.queries_per_split, rng)
        qpos, qdist = sample_query_positions(city, split, places, conds, rng)
        q_rows, q_fns = [], []
        for qi, ((x, y), cond) in enumerate(zip(qpos, conds)):
            qrng = np.random.default_rng([seed, 6, si, qi])
            if cfg.query_heading_jitter < 0:      # any direction
                heading = float(qrng.uniform(0, 360))
            else:                                 # near one of the nearest place's database headings
                pn = int(np.argmin(((places - (x, y)) ** 2).sum(1)))
                heading = float((phases[pn] + step * qrng.integers(cfg.n_headings)
                                 + qrng.uniform(-1, 1) * cfg.query_heading_jitter) % 360.0)
            cam, light = query_camera_and_light(cfg, cond, float(x), float(y), heading, city.sun_az, qrng)
            fn = f"{split}/q{qi:05d}.png"
            q_fns.append(fn)
            q_rows.append({
                "query_index": qi, "image": fn, "condition": cond,
                "easting": x + UTM_OFFSET[0], "northing": y + UTM_OFFSET[1], "heading_deg": heading,
                "height_m": cam.height, "tilt_deg": cam.tilt, "fov_deg": cam.fov, "nearest_db_m": qdist[qi],
                "exposure": light.exposure, "fog_visibility_m": light.fog_vis, "contrast": light.contrast,
                "noise_sigma": light.noise, "blur_sigma": light.blur, "lit_windows": light.lit_frac,
            })
            tasks.append(("q" + split, qi, str(out / "queries" / fn), cam, light, [seed, 7, si, qi]))
        utm_q = qpos + np.array(UTM_OFFSET)
        utm_db = np.array(db_utm)
        # every query must have a database image within 25 m
        d2 = ((utm_q[:, None, :] - utm_db[None, :, :]) ** 2).sum(-1).min(1)
        assert np.all(d2 <= 625.0), f"{split}: a query without a database image within 25 m"
        plans[split] = dict(places=places, db_rows=db_rows, db_fns=db_fns, utm_db=utm_db,
                            q_rows=q_rows, q_fns=q_fns, utm_q=utm_q,
                            within10=float(np.mean(d2 <= 100.0)))
    timings["plan_s"] = time.perf_counter() - t1
    if log:
        log(f"synthetic city '{cfg.name}' seed {seed}: {len(tasks)} images, {workers} worker(s)")

    # ---- render
    t2 = time.perf_counter()
    stats = _run_tasks(tasks, cfg, seed, workers, log)
    timings["render_s"] = time.perf_counter() - t2
    timings["ms_per_image"] = 1000 * timings["render_s"] / max(1, len(tasks)) * workers

    # ---- metadata
    counts = {}
    for si, split in enumerate(SPLITS):
        p = plans[split]
        db = DbStruct(which_set=split, db_image_fns=p["db_fns"], utm_db=p["utm_db"],
                      q_image_fns=p["q_fns"], utm_q=p["utm_q"], num_images=len(p["db_fns"]),
                      num_queries=len(p["q_fns"]), pos_dist_thr=25.0, pos_dist_sq_thr=625.0,
                      non_triv_pos_dist_sq_thr=100.0)
        save_dbstruct(out / f"{split}.mat", db)
        for row in p["q_rows"]:
            st = stats[("q" + split, row["query_index"])]
            row["n_occluders"] = st["n_occluders"]
            row["occluded_frac"] = st["occluded_frac"]
        with open(out / f"{split}_queries.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(QUERY_COLUMNS)
            for row in p["q_rows"]:
                w.writerow([_fmt(row[c]) for c in QUERY_COLUMNS])
        with open(out / f"{split}_database.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(DB_COLUMNS)
            for row in p["db_rows"]:
                w.writerow([_fmt(v) for v in row])
        conds = {}
        for row in p["q_rows"]:
            conds[row["condition"]] = conds.get(row["condition"], 0) + 1
        counts[split] = {"places": len(p["places"]), "database": len(p["db_fns"]),
                         "queries": len(p["q_fns"]), "queries_with_db_within_10m": p["within10"],
                         "conditions": conds}
    save_city_layout(out / "city_layout.npz", city)
    timings["total_s"] = time.perf_counter() - t0
    return {"counts": counts, "timings": timings, "n_buildings": int(city.n_buildings)}


def make_synthetic_city(root: str | os.PathLike | None = None, preset: str | CityConfig = "default",
                        seed: int = 0, force: bool = False, workers: int | None = None,
                        verbose: bool = False, **overrides) -> Path:
    """Generate (or reuse) a synthetic city at ``root``; returns the root path.

    Args:
        root: output folder; None -> :func:`default_city_root` (preset, seed).
        preset: 'tiny', 'default', 'large', or a :class:`CityConfig`.
        seed: the same seed gives byte-identical images and .mat files.
        force: regenerate even when a complete city with this config exists.
        workers: render processes (default: one per available core).
        verbose: print progress.
        overrides: CityConfig fields to change (difficulty knobs), e.g. n_styles=6.
    """
    cfg = get_config(preset, **overrides)
    seed = int(seed)
    root = Path(root) if root is not None else default_city_root(cfg.name, seed)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else None
    man = _read_manifest(root)
    if not force and _is_complete(root, man, cfg, seed):
        if log:
            log(f"reusing synthetic city at {root}")
        return root
    _refuse_foreign(root, man)

    def write(tmp: Path) -> dict:
        nw = _n_workers(cfg, workers)
        info = _generate(tmp, cfg, seed, nw, log)
        manifest = {
            "generator": "repro.data.synthetic", "generator_version": GENERATOR_VERSION,
            "preset": cfg.name, "seed": seed, "config_hash": cfg.config_hash(), "config": cfg.to_dict(),
            "image_size_hw": [cfg.height, cfg.width], "utm_offset": list(UTM_OFFSET),
            "thresholds": {"posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0},
            "workers": nw, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info, "complete": True,
        }
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=2)
        return manifest

    manifest = _write_atomically(root, write, lambda: _is_complete(root, _read_manifest(root), cfg, seed))
    if log:
        t = manifest["timings"]
        log(f"wrote {root} in {t['total_s']:.1f} s ({t['ms_per_image']:.1f} ms/image/worker)")
    return root


def _refuse_foreign(root: Path, man: dict | None) -> None:
    """DatasetError unless ``root`` is absent, an empty folder, or holds a
    synthetic-city manifest (ours to overwrite)."""
    if root.exists():
        if not root.is_dir():
            raise DatasetError(f"{root}: exists and is not a folder; cannot write a synthetic city there")
        if man is None and any(root.iterdir()):
            raise DatasetError(f"{root}: folder exists, is not empty and has no synthetic-city manifest.json; "
                               "refusing to overwrite it (choose another folder or empty it)")


def _write_atomically(root: Path, write, is_complete):
    """``write(tmp)`` into a fresh temporary sibling of ``root`` (it writes the
    manifest last), then swap it in for ``root``; returns what ``write``
    returns. An interruption or error removes the temporary folder and leaves
    ``root`` as it was. ``is_complete()`` tells whether a concurrent run that
    renamed its own folder into place first left a complete dataset (kept)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        result = write(tmp)
        # swap in: old (if any) aside, new into place, old removed
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # someone else finished first; keep theirs if it is complete
            if is_complete():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def load_query_conditions(root: str | os.PathLike, split: str):
    """Per-query conditions and camera parameters of one split, as a pandas
    DataFrame in query order (row i is query i of ``{split}.mat``)."""
    import pandas as pd

    path = Path(root) / f"{split}_queries.csv"
    if not path.is_file():
        raise DatasetError(f"query conditions file not found: {path} (is {root} a synthetic city?)")
    df = pd.read_csv(path)
    missing = [c for c in ("query_index", "image", "condition") if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}")
    if not (df["query_index"].to_numpy() == np.arange(len(df))).all():
        raise DatasetError(f"{path}: query_index must be 0..{len(df) - 1} in order")
    return df
