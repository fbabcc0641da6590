"""Peak memory of the NetVLAD initialisation's descriptor sampling at 480x640 (issue 12 note).

``repro.model.sample_local_descriptors`` extracts 16 images a batch by
default; with VGG-16 at Pittsburgh's 480x640 on the CPU that batch's
activations dominate the process's peak. One fresh process per batch size
(peak RSS only grows), on the rehearsal's Pittsburgh-layout JPEGs::

    python -m benchmarks.init_memory          # batches of 16 and of 4, about a minute
"""
from __future__ import annotations

import resource
import subprocess
import sys


def peak_mib(batch_size: int) -> tuple[float, float]:
    """(peak RSS before, after) the sampling, MiB, in this process."""
    import warnings

    import torch

    from repro.evaluate import image_dataset
    from repro.model import build_model, sample_local_descriptors
    from repro.report.costs import _rehearsal_images

    warnings.simplefilter("ignore")
    model = build_model("vgg16", "netvlad", weights=None, num_clusters=64)
    paths = _rehearsal_images()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        sample_local_descriptors(model.base, image_dataset(paths), num_images=16, num_descriptors=2000,
                                 batch_size=batch_size)
    return before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    if len(sys.argv) > 1:  # the child: one batch size
        before, after = peak_mib(int(sys.argv[1]))
        print(f"batch {sys.argv[1]}: peak RSS {after:,.0f} MiB (before the sampling {before:,.0f} MiB)")
        return
    for bs in (16, 4):
        subprocess.run([sys.executable, "-m", "benchmarks.init_memory", str(bs)], check=True)


if __name__ == "__main__":
    main()
