"""Any-size inputs for restoration models: pad to the model's multiple, run, crop back.

A zoo restoration model never silently returns a different size: its ``forward`` pads (reflect, on the
bottom/right like the official ``check_image_size`` helpers) and crops the output to ``scale`` times
the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an (N, C, H, W) tensor at the bottom/right so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original (H, W). Reflect padding falls back to replicate where the
    pad is not smaller than the side (reflect needs pad < size).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        m = mode if (mode != "reflect" or (ph < h and pw < w)) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=m)
    return x, (h, w)


def crop_to(y: torch.Tensor, size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Crop an output back to ``scale`` times the original (H, W)."""
    h, w = size
    return y[..., : h * scale, : w * scale]
