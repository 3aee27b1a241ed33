"""Tiled inference for restoration models: run on overlapping tiles and blend back to exactly scale x size.

Large images (8K dehazing, big SR inputs) may not fit a model in one pass. :func:`tiled_forward` cuts the
input into ``tile`` x ``tile`` windows that overlap by at least ``overlap`` pixels (the last window on each
axis is aligned to the image end, so it may overlap more), runs ``fn`` on each, and blends the outputs.

Blending: at every seam between neighbouring tiles, each tile's outermost ``halo`` input pixels are
discarded (border artefacts of zero padding and truncated context live there); over the rest of the overlap
the tiles are mixed with linear ramps (``blend="ramp"``, weights summing to 1) or averaged
(``blend="mean"``). Image borders are never discarded. Consequences: a pixelwise model gives exactly its
full-image result; a model whose receptive field reaches at most ``halo`` input pixels from the output pixel
(a 3x3 conv: 1) also gives its full-image result when ``overlap >= 2 * halo``. Accumulation is in float64
(float32 on MPS), so for float32/half models the blend of identical values is bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from glocal.zoo.layers.padding import crop_to, pad_to_multiple


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of ``tile``-long windows covering ``size``, overlapping >= ``overlap`` (last end-aligned)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _axis_weights(starts: list[int], tile: int, scale: int, halo: int, blend: str,
                  dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Per-tile 1-D output weights along one axis (ramps or flat parts, zero in the halos at seams)."""
    n = tile * scale
    h = halo * scale
    out = []
    for i, s in enumerate(starts):
        w = torch.ones(n, dtype=dtype, device=device)
        pos = torch.arange(n, dtype=dtype, device=device)
        if i > 0:  # seam with the previous tile at the start of this one
            ov = (starts[i - 1] + tile - s) * scale
            width = ov - 2 * h
            if width > 0 and blend == "ramp":
                rise = ((pos - h + 0.5) / width).clamp(0, 1)
            else:
                rise = (pos >= h).to(dtype)
            w = w * torch.where(pos < h, torch.zeros_like(pos), rise)
        if i < len(starts) - 1:  # seam with the next tile at the end of this one
            ov = (s + tile - starts[i + 1]) * scale
            width = ov - 2 * h
            back = n - 1 - pos
            if width > 0 and blend == "ramp":
                fall = ((back - h + 0.5) / width).clamp(0, 1)
            else:
                fall = (back >= h).to(dtype)
            w = w * torch.where(back < h, torch.zeros_like(pos), fall)
        out.append(w)
    return out


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, tile: int, overlap: int,
                  scale: int = 1, multiple: int = 1, blend: str = "ramp",
                  halo: int | None = None) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles of the (N, C, H, W) ``x`` and blend into the (N, C', sH, sW) result.

    ``tile`` and ``overlap`` are in input pixels; ``scale`` is the model's output/input size ratio;
    ``multiple`` is a size every tile must be a multiple of (the image is reflect-padded to it and the output
    cropped back). ``halo`` input pixels at each side of a seam are discarded (default ``overlap // 4``).
    """
    if x.dim() != 4:
        raise ValueError(f"tiled_forward needs an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if blend not in ("ramp", "mean"):
        raise ValueError(f"blend must be 'ramp' or 'mean', got {blend!r}")
    if multiple < 1 or scale < 1:
        raise ValueError(f"scale and multiple must be >= 1, got scale={scale}, multiple={multiple}")
    if tile <= 0 or tile % multiple:
        raise ValueError(f"tile must be a positive multiple of {multiple}, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} for tile={tile}")
    halo = overlap // 4 if halo is None else halo
    if not 0 <= 2 * halo <= overlap:
        raise ValueError(f"halo must be in [0, overlap/2], got halo={halo} for overlap={overlap}")
    xp, (h, w) = pad_to_multiple(x, multiple)
    hp, wp = xp.shape[-2:]
    th, tw = min(tile, hp), min(tile, wp)
    if th == hp and tw == wp:
        y = fn(xp)
        _check(y, xp, scale)
        return crop_to(y, (h, w), scale)
    ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64
    wy = _axis_weights(ys, th, scale, halo, blend, acc_dtype, x.device)
    wx = _axis_weights(xs, tw, scale, halo, blend, acc_dtype, x.device)
    acc = None
    norm = torch.zeros(hp * scale, wp * scale, dtype=acc_dtype, device=x.device)
    out_dtype = x.dtype
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            part = fn(xp[..., y0:y0 + th, x0:x0 + tw])
            _check(part, xp[..., y0:y0 + th, x0:x0 + tw], scale)
            if acc is None:
                out_dtype = part.dtype
                acc = torch.zeros(part.shape[0], part.shape[1], hp * scale, wp * scale, dtype=acc_dtype,
                                  device=x.device)
            wt = wy[i][:, None] * wx[j][None, :]
            sl = (..., slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
            acc[sl] += part.to(acc_dtype) * wt
            norm[sl] += wt
    return crop_to((acc / norm).to(out_dtype), (h, w), scale)


def _check(y: torch.Tensor, x: torch.Tensor, scale: int) -> None:
    want = (x.shape[-2] * scale, x.shape[-1] * scale)
    if y.dim() != 4 or tuple(y.shape[-2:]) != want or y.shape[0] != x.shape[0]:
        raise ValueError(f"model returned {tuple(y.shape)} for a {tuple(x.shape)} tile; expected "
                         f"(N, C, {want[0]}, {want[1]}) at scale {scale}")
