"""Input checks that work in eager mode, TorchScript and torch.fx tracing (as one opaque call).

A model's ``forward`` cannot test tensor shapes as Python control flow and stay fx-traceable, so the check
is a function registered with timm's ``register_notrace_function``: fx records it as a single call that runs
(and raises) on real tensors. It returns its input so the call stays in the traced graph.
"""

from __future__ import annotations

import torch
from timm.models import register_notrace_function

__all__ = ["check_image"]


@register_notrace_function
def check_image(x: torch.Tensor, in_chans: int, multiple: int, model: str, hint: str = "") -> torch.Tensor:
    """``x`` unchanged if it is a (B, in_chans, H, W) batch with H and W multiples of ``multiple``, else
    ValueError naming the model, the expected layout or sizes (with examples) and ``hint``."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{model} expects (B, {in_chans}, H, W) images, got shape {list(x.shape)}")
    H, W = x.shape[-2], x.shape[-1]
    if multiple > 1 and (H % multiple != 0 or W % multiple != 0):
        raise ValueError(f"{model} takes input sizes that are multiples of {multiple} (e.g. {multiple * 7}, "
                         f"{multiple * 8}, {multiple * 12}); got {H}x{W}{hint}")
    return x
