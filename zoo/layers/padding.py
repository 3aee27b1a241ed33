"""Any-size inputs for restoration models: pad to the model's multiple, run, crop back.

A zoo restoration model never silently returns a different size: its ``forward`` pads (reflect, on the
bottom/right like the official ``check_image_size`` helpers) and crops the output to ``scale`` times
the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_bottom_right(x: torch.Tensor, ph: int, pw: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the last two dims by ``ph`` rows at the bottom and ``pw`` columns at the right.

    Reflect padding falls back to replicate where the pad is not smaller than the side (reflect needs
    pad < size), as the official helpers do for tiny inputs.
    """
    if not (ph or pw):
        return x
    if mode == "reflect" and not (ph < x.shape[-2] and pw < x.shape[-1]):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an (..., H, W) tensor at the bottom/right so H and W are multiples of ``multiple`` and >= ``min_size``.

    Returns the padded tensor and the original (H, W) (see :func:`pad_bottom_right` for the modes).
    """
    h, w = x.shape[-2:]
    ph = max(min_size, h + (-h) % multiple) - h
    pw = max(min_size, w + (-w) % multiple) - w
    return pad_bottom_right(x, ph, pw, mode), (h, w)


def crop_to(y: torch.Tensor, size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Crop an output back to ``scale`` times the original (H, W)."""
    h, w = size
    return y[..., : h * scale, : w * scale]
