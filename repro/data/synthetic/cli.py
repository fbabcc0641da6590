"""``python -m repro.data.synthetic [ROOT] --preset default --seed 0 [--layout pittsburgh --places 10 ...]``."""
from __future__ import annotations

import argparse
import json

from repro.errors import ConfigError, report_errors

from .config import PRESETS
from .layouts import LAYOUTS


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="python -m repro.data.synthetic",
        description="Generate the synthetic city benchmark (Pittsburgh dbStruct layout).")
    p.add_argument("root", nargs="?", default=None,
                   help="output folder (default: cache/synthetic/{preset}_seed{seed} in the repository)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="size preset (default: default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching city exists")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--figures", metavar="DIR", default=None,
                   help="also write the overview figures (examples, map) to DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    g = p.add_argument_group("real dataset layouts", "write the city as a real dataset is laid out on disk "
                             "(read by repro.data.datasets.load_split; see repro.data.synthetic.layouts)")
    g.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="pittsburgh (pitts30k/pitts250k), tokyo247 or tokyoTM (default: the project's own layout)")
    g.add_argument("--dataset-name", default=None, help="pittsburgh: pitts30k (default) or pitts250k")
    g.add_argument("--places", type=int, default=None, help="database places per split (default 10)")
    g.add_argument("--query-places", type=int, default=None, help="query places per split")
    g.add_argument("--views", type=int, default=None, help="images per query place")
    g.add_argument("--views-per-place", type=int, default=None,
                   help="database views per place (pittsburgh: of 24, tokyoTM: cut-outs of 12; default all)")
    g.add_argument("--captures", type=int, default=None, help="tokyoTM: capture times per place (default 3)")
    g.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                   help="image height and width in pixels (default 480 640)")
    return p


def run_layout(args) -> int:
    from .layouts import make_layout_city

    root = make_layout_city(args.root, args.layout, preset=args.preset, seed=args.seed,
                            places=args.places, query_places=args.query_places,
                            views_per_query_place=args.views, captures=args.captures,
                            views_per_place=args.views_per_place,
                            image_size=tuple(args.image_size), dataset_name=args.dataset_name,
                            force=args.force, workers=args.workers, verbose=not args.quiet)
    man = json.loads((root / "manifest.json").read_text())
    print(root)
    for split, c in man["counts"].items():
        print(f"  {split}: {c['database']} database images ({c['places']} places), {c['queries']} queries "
              f"({c['mat']})")
    return 0


def run(args) -> int:
    if args.layout is not None:
        if args.figures:
            raise ConfigError("--figures draws the project's own layout; leave it out with --layout")
        return run_layout(args)
    from .figures import plot_city_overview
    from .generate import make_synthetic_city

    root = make_synthetic_city(args.root, preset=args.preset, seed=args.seed, force=args.force,
                               workers=args.workers, verbose=not args.quiet)
    man = json.loads((root / "manifest.json").read_text())
    print(root)
    for split, c in man["counts"].items():
        print(f"  {split}: {c['database']} database images ({c['places']} places), {c['queries']} queries")
    if args.figures:
        for f in plot_city_overview(root, args.figures):
            print(f"  figure: {f}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(run, args)
