"""Local-only observers: texture descriptors that see no arrangement beyond a few pixels.

They are the shortcut controls of the structure-sensitivity metric (:mod:`.structure_sensitivity`): scored on
the same triplets as a model, they should sit near chance on a set that really isolates global structure.

* ``pixel_histogram``: per-channel 32-bin RGB histograms;
* ``local_patches``: a position-free bag of 7 px descriptors: histograms of oriented derivative-of-Gaussian and
  Laplacian responses, rotation-invariant uniform local binary patterns (Ojala, Pietikainen & Maenpaa, TPAMI
  2002), colour-opponent values and gradients, at the image's own resolution.

Each embeds an image as a unit-norm Hellinger vector (square roots of normalised histograms), to be compared by
euclidean distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def pixel_histogram_features(image: Any, bins: int = 32) -> np.ndarray:
    """Per-channel RGB histograms (``bins`` per channel, each normalised), square-rooted (Hellinger embedding)."""
    a = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    shift = 8 - int(round(math.log2(bins)))
    if 1 << (8 - shift) != bins:
        raise ValueError(f"pixel histogram bins must be a power of two up to 256, got {bins}")
    hist = [np.bincount(a[:, c] >> shift, minlength=bins) / a.shape[0] for c in range(3)]
    return np.sqrt(np.concatenate(hist) / 3.0)


_LOCAL_MAX_SIDE = 256
_LOG_EDGES = np.array([0.005, 0.01, 0.02, 0.04, 0.08, 0.16])


def _signed_log_hist(x: np.ndarray) -> np.ndarray:
    """Histogram of signed responses on fixed log-spaced magnitude bins (14 bins), normalised."""
    idx = np.searchsorted(_LOG_EDGES, np.abs(x).ravel())  # 0..6
    idx = np.where(x.ravel() < 0, 6 - idx, 7 + idx)
    return np.bincount(idx, minlength=14) / idx.size


def _lbp_riu2(img: np.ndarray, radius: int) -> np.ndarray:
    """Rotation-invariant uniform local binary pattern histogram (8 neighbours at ``radius``; 10 bins)."""
    h, w = img.shape
    r = radius
    c = img[r:h - r, r:w - r]
    offsets = ((-r, -r), (-r, 0), (-r, r), (0, r), (r, r), (r, 0), (r, -r), (0, -r))  # circular order
    bits = np.stack([img[r + dy:h - r + dy, r + dx:w - r + dx] >= c for dy, dx in offsets]).astype(np.int8)
    ones = bits.sum(0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(transitions <= 2, ones, 9)
    return np.bincount(code.ravel(), minlength=10) / code.size


_TAPS = np.arange(-3, 4, dtype=np.float64)
_G = np.exp(-_TAPS**2 / 2.0) / np.exp(-_TAPS**2 / 2.0).sum()  # Gaussian, sigma 1
_DG = -_TAPS * _G  # its first derivative
_DDG = (_TAPS**2 - 1.0) * _G  # its second derivative
_DDG = _DDG - _DDG.mean()


def _conv1d(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Correlate a 2-d array with a 7-tap kernel along ``axis`` (reflected borders)."""
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    return sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(len(k)))


def _oriented(x: np.ndarray) -> list[np.ndarray]:
    """Derivative-of-Gaussian responses at 0/45/90/135 degrees and a Laplacian-of-Gaussian (sigma 1)."""
    gy_smooth = _conv1d(x, _G, 0)
    gx_smooth = _conv1d(x, _G, 1)
    dx = _conv1d(gy_smooth, _DG, 1)
    dy = _conv1d(gx_smooth, _DG, 0)
    log = _conv1d(gy_smooth, _DDG, 1) + _conv1d(gx_smooth, _DDG, 0)
    return [dx, (dx + dy) / math.sqrt(2), dy, (dx - dy) / math.sqrt(2), log]


def local_patch_features(image: Any) -> np.ndarray:
    """Position-free bag of 7x7-pixel descriptors at the image's own resolution: histograms of oriented
    derivative and Laplacian responses, local binary patterns, colour-opponent values and gradients; each block
    normalised, square-rooted, concatenated. Its receptive field is 7 px (shorter sides above 256 px are
    first reduced to 256), so it sees texture but no arrangement beyond 7 px."""
    from PIL import Image

    im = image.convert("RGB")
    if min(im.size) > _LOCAL_MAX_SIDE:
        s = _LOCAL_MAX_SIDE / min(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)
    rgb = np.asarray(im, dtype=np.float64) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    rg = rgb[..., 0] - rgb[..., 1]
    by = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
    blocks = [_signed_log_hist(r) for r in _oriented(lum)] + [_lbp_riu2(lum, 1), _lbp_riu2(lum, 2)]
    for chroma in (rg, by):
        blocks.append(np.histogram(chroma, bins=16, range=(-1.0, 1.0))[0] / chroma.size)
        dx, _, dy, _, _ = _oriented(chroma)
        blocks.append(_signed_log_hist(np.hypot(dx, dy)))
    return np.concatenate([np.sqrt(b) for b in blocks]) / math.sqrt(len(blocks))


OBSERVERS: dict[str, Callable[[Any], np.ndarray]] = {
    "pixel_histogram": pixel_histogram_features,
    "local_patches": local_patch_features,
}

