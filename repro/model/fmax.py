"""f_max: max pooling of the conv map (the paper's baseline, Sec. 3 and Fig. 5).

The paper's f_max max-pools each channel over the whole map (a 1x1 output
grid) and L2-normalises. A larger adaptive grid (2x2, 3x3, ...) keeps some
spatial layout; this is the "f_max output size" experiment of the report.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ConfigError


def check_output_size(output_size) -> tuple[int, int]:
    """Normalise an int or (h, w) to a pair of positive ints, else ConfigError."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    try:
        h, w = (int(v) for v in output_size)
    except (TypeError, ValueError):
        raise ConfigError(f"f_max output size must be an int or (h, w), got {output_size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"f_max output size must be at least 1x1, got {h}x{w}")
    return h, w


class FMaxPool(nn.Module):
    """Adaptive max pooling to an h x w grid, flatten, L2-normalise.

    ``[B, D, H, W]`` -> ``[B, D*h*w]``, flattened channel-major (index
    d*h*w + i*w + j). H and W must be at least h and w.
    """

    def __init__(self, dim: int, output_size=(1, 1)):
        super().__init__()
        self.dim = int(dim)
        self.output_size = check_output_size(output_size)

    @property
    def output_dim(self) -> int:
        return self.dim * self.output_size[0] * self.output_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.output_size
        if x.shape[-2] < h or x.shape[-1] < w:
            raise ConfigError(f"conv map {x.shape[-2]}x{x.shape[-1]} is smaller than the f_max grid {h}x{w}; "
                              "use larger images or a smaller output size")
        return F.normalize(F.adaptive_max_pool2d(x, (h, w)).flatten(1), dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, output_size={self.output_size}"
