"""MATLAB-compatible bicubic ``imresize`` in torch, as used to make the "BI" LR images of SR benchmarks.

MATLAB's ``imresize(img, scale, 'bicubic')`` semantics, reproduced here:

* cubic convolution kernel with a = -0.5 (Keys), support 4;
* when shrinking (scale < 1) with antialiasing (MATLAB's default), the kernel is stretched to
  ``h(x) = scale * cubic(scale * x)`` and its width becomes ``4 / scale``;
* output pixel i (1-based) maps to input coordinate ``u = i / scale + 0.5 * (1 - 1 / scale)``; it takes the
  ``ceil(width) + 2`` input pixels starting at ``floor(u - width / 2)``, weights normalised to sum 1;
* out-of-range indices are mirrored symmetrically (``[1..n, n..1]`` repeated);
* the output size is ``ceil(scale * size)``; the dimension with the smaller scale is resized first (rows
  first on ties).

The resize is a pair of dense (out x in) weight matrices applied with matmuls in float64, so it is exact to
MATLAB's double arithmetic up to rounding. MATLAB rounds uint8 results half away from zero; use
:func:`quantize_uint8` for that step.
"""

from __future__ import annotations

import math

import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  device: torch.device | None = None) -> torch.Tensor:
    """The (out_len, in_len) float64 matrix of MATLAB's bicubic ``contributions`` for one dimension."""
    width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic(scale * t)  # noqa: E731
        width = width / scale
    else:
        kernel = cubic
    x = torch.arange(1, out_len + 1, dtype=torch.float64, device=device)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64, device=device)[None, :]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    # symmetric mirroring: 1-based index k maps through the period [1..n, n..1]
    period = 2 * in_len
    k = torch.remainder(idx.long() - 1, period)
    k = torch.where(k < in_len, k, period - 1 - k)
    m = torch.zeros(out_len, in_len, dtype=torch.float64, device=device)
    m.scatter_add_(1, k, w)
    return m


def _out_size(size: int, scale: float) -> int:
    return max(1, math.ceil(size * scale - 1e-9))


def imresize(x: torch.Tensor, scale: float | None = None, *, size: tuple[int, int] | None = None,
             antialias: bool = True) -> torch.Tensor:
    """Resize the last two dims of a float tensor like MATLAB ``imresize(x, scale, 'bicubic')``.

    Give ``scale`` (one factor for both dims, e.g. ``1/4``) or ``size`` = (H, W); with ``size`` the scale of
    each dim is out/in as in MATLAB. The result has ``x``'s dtype and is not clamped or rounded.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"imresize needs a floating-point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"imresize needs at least 2 dims (..., H, W), got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError("imresize takes exactly one of scale and size")
    h, w = x.shape[-2:]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out = (_out_size(h, scale), _out_size(w, scale))
    else:
        out = (int(size[0]), int(size[1]))
        if min(out) <= 0:
            raise ValueError(f"imresize size must be positive, got {size}")
        scales = (out[0] / h, out[1] / w)
    dtype = x.dtype
    y = x.to(torch.float32 if x.device.type == "mps" else torch.float64)
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for dim in order:
        in_len = y.shape[-2 + dim]
        m = resize_matrix(in_len, out[dim], scales[dim], antialias, device=y.device).to(y.dtype)
        y = torch.matmul(m, y) if dim == 0 else torch.matmul(y, m.T)
    return y.to(dtype)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] floats to the nearest of the 256 uint8 levels (half away from zero, as MATLAB)."""
    return torch.floor(x.clamp(0, 1) * 255 + 0.5) / 255
