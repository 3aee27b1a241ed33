"""Swin's shifted-window attention mask for any (rectangular) window and shift; timm computes it only inside
``SwinTransformerBlock.get_attn_mask``. Window partition/reverse and the relative-position index come from
``timm.models.swin_transformer`` directly."""

from __future__ import annotations

import torch
from timm.models.swin_transformer import window_partition

SHIFT_MASK_VALUE = -100.0  # Swin's value for token pairs that straddle a shift boundary


def shifted_window_mask(h: int, w: int, window: tuple[int, int], shift: tuple[int, int],
                        device: torch.device | None = None) -> torch.Tensor:
    """(nW, N, N) float32 mask of an h x w map rolled by ``-shift``: 0 within a region, -100 across (Swin).

    h and w must be multiples of the window sides (rows, cols); shifts lie in [0, window).
    """
    labels = torch.zeros(1, h, w, 1, device=device)
    cnt = 0
    for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            labels[:, hs, ws, :] = cnt
            cnt += 1
    regions = window_partition(labels, window).reshape(-1, window[0] * window[1])
    diff = regions.unsqueeze(1) - regions.unsqueeze(2)
    return diff.masked_fill(diff != 0, SHIFT_MASK_VALUE).masked_fill(diff == 0, 0.0)


def window_attention_bias(bias: torch.Tensor, mask: torch.Tensor | None, windows: int,
                          dtype: torch.dtype) -> torch.Tensor:
    """Additive ``attn_mask`` for ``F.scaled_dot_product_attention`` over (windows, heads, N, N) logits.

    ``bias``: (heads, N, N) relative-position bias shared by every window; ``mask``: (nW, N, N) shift mask of
    one image (``windows`` is a multiple of nW, images in order) or None. Materialised per image only when
    a batch holds several images, as timm's Swin does.
    """
    if mask is None:
        return bias.unsqueeze(0).to(dtype)
    nw = mask.shape[0]
    both = (bias.unsqueeze(0) + mask.unsqueeze(1)).to(dtype)  # nW, heads, N, N
    return both.unsqueeze(0).expand(windows // nw, -1, -1, -1, -1).reshape(-1, *both.shape[1:])
