"""One error class for inputs a zoo model cannot take, and the input checks the models run.

``check_image`` works in eager mode, TorchScript and torch.fx tracing: a model's ``forward`` cannot test tensor
shapes as Python control flow and stay fx-traceable, so the check is a function registered with timm's
``register_notrace_function``; fx records it as a single call that runs (and raises) on real tensors, and it
returns its input so the call stays in the traced graph.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_notrace_function

__all__ = ["InputError", "check_image", "check_image_batch"]


class InputError(ValueError):
    """An input a zoo model cannot take (one line; a ValueError, so the CLI maps it like the others)."""


def check_image_batch(x: Any, channels: int, model: str) -> None:
    """Raise :class:`InputError` unless ``x`` is an (N, ``channels``, H, W) tensor (images in [0, 1])."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{model} expects an (N, {channels}, H, W) image tensor in [0, 1], got {shape}")


@register_notrace_function
def check_image(x: torch.Tensor, in_chans: int, multiple: int, model: str, hint: str = "") -> torch.Tensor:
    """``x`` unchanged if it is a (B, in_chans, H, W) batch with H and W multiples of ``multiple``, else
    :class:`InputError` naming the model, the expected layout or sizes (with examples) and ``hint``."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise InputError(f"{model} expects (B, {in_chans}, H, W) images, got shape {list(x.shape)}")
    H, W = x.shape[-2], x.shape[-1]
    if multiple > 1 and (H % multiple != 0 or W % multiple != 0):
        raise InputError(f"{model} takes input sizes that are multiples of {multiple} (e.g. {multiple * 7}, "
                         f"{multiple * 8}, {multiple * 12}); got {H}x{W}{hint}")
    return x
