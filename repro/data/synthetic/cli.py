"""``python -m repro.data.synthetic [ROOT] --preset default --seed 0``."""
from __future__ import annotations

import argparse
import json

from repro.errors import report_errors

from .config import PRESETS


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
    return p


def run(args) -> int:
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
