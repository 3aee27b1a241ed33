"""One error class for inputs a zoo model cannot take, and the image-batch check every restoration model runs."""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """An input a zoo model cannot take (one line; a ValueError, so the CLI maps it like the others)."""


def check_image_batch(x: Any, channels: int, model: str) -> None:
    """Raise :class:`InputError` unless ``x`` is an (N, ``channels``, H, W) tensor (images in [0, 1])."""
    import torch

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{model} expects an (N, {channels}, H, W) image tensor in [0, 1], got {shape}")
