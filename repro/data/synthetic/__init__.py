"""A synthetic, geo-tagged city for place recognition, in the Pittsburgh format.

The project's offline default benchmark (issue 3): streets lined with
buildings whose facades come from a small, reused style vocabulary
(perceptual aliasing); database images every few metres along the streets
from several headings; queries at other positions and headings under changed
conditions (day, dusk, night, fog, occluded, viewpoint). Train, val and test
lie in geographically disjoint parts of the city.

    from repro.data.synthetic import make_synthetic_city
    root = make_synthetic_city(None, preset="default", seed=0)   # cache/synthetic/default_seed0
    # root/{train,val,test}.mat, root/database/..., root/queries/...

The same city in the on-disk layout of a real dataset (Pittsburgh, Tokyo
24/7, Tokyo Time Machine), read unchanged by ``repro.data.datasets.load_split``:

    from repro.data.synthetic import make_layout_city
    root = make_layout_city("cache/synthetic/layouts/pitts30k", "pittsburgh", places=10)
    # root/datasets/pitts30k_{train,val,test}.mat, root/000/000829_pitch1_yaw1.jpg, root/queries_real/...

Command line: ``python -m repro.data.synthetic [ROOT] --preset default --seed 0``.
"""
from .config import CONDITIONS, GENERATOR_VERSION, PRESETS, SPLITS, UTM_OFFSET, CityConfig, get_config
from .generate import default_city_root, load_query_conditions, make_synthetic_city
from .layouts import LAYOUTS, default_layout_root, make_layout_city
from .cli import main
from .figures import plot_city_overview

__all__ = [
    "CONDITIONS", "GENERATOR_VERSION", "LAYOUTS", "PRESETS", "SPLITS", "UTM_OFFSET", "CityConfig", "get_config",
    "default_city_root", "default_layout_root", "load_query_conditions", "make_layout_city", "make_synthetic_city",
    "main", "plot_city_overview",
]
