"""PSNR and SSIM in the two conventions restoration papers use.

* Dehazing (DEA-Net, DehazeXL): RGB floats in [0, 1], ``data_range=1``, no border crop.
* Super-resolution (BasicSR / MATLAB convention used by RGT, DLGSANet): the Y channel of ITU-R BT.601
  studio-swing YCbCr (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], so Y lies in
  [16, 235] on the 0-255 scale, unrounded, as MATLAB's ``rgb2ycbcr``), ``crop_border`` = scale, peak 255.

SSIM follows Wang et al. (2004) as BasicSR and scikit-image compute it: an 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, filtered statistics over the *valid* region only (no padding, so a
5-pixel band of the map is dropped on every side), mean over the map and the channels. Everything is
computed in float64 (float32 on devices without float64). Both functions take torch tensors shaped
(N, C, H, W) or (C, H, W) and return the mean over the batch as a Python float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 studio swing, for RGB in [0, 1]; Y offset 16 on 0-255
Y_OFFSET = 16.0


class ImageMetricError(ValueError):
    """Images a metric cannot compare (bad rank, mismatched shapes, too small after the border crop)."""


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _prepare(x: torch.Tensor, y: torch.Tensor, data_range: float, crop_border: int, y_channel: bool,
             min_side: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validate, batch, convert to Y if asked, crop the border; returns (x, y, effective data range)."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ImageMetricError(f"expected torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ImageMetricError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() not in (3, 4):
        raise ImageMetricError(f"expected (N, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}")
    if data_range <= 0:
        raise ImageMetricError(f"data_range must be positive, got {data_range}")
    if crop_border < 0:
        raise ImageMetricError(f"crop_border must be >= 0, got {crop_border}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    dt = _work_dtype(x.device)
    x, y = x.to(dt), y.to(dt)
    if y_channel:
        if x.shape[1] != 3:
            raise ImageMetricError(f"y_channel needs 3-channel RGB images, got {x.shape[1]} channels")
        x, y = rgb_to_y(x / data_range), rgb_to_y(y / data_range)
        data_range = 255.0
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    h, w = x.shape[-2:]
    if h < min_side or w < min_side:
        raise ImageMetricError(f"images of {tuple(y.shape[-2:])} after a {crop_border}-px border crop are "
                               f"smaller than the {min_side}-px minimum")
    return x, y, float(data_range)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-swing Y on the 0-255 scale (MATLAB ``rgb2ycbcr``) of (N, 3, H, W) RGB in [0, 1]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b


def psnr_per_image(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop_border: int = 0,
                   y_channel: bool = False) -> list[float]:
    """PSNR of each image of a batch (``inf`` for identical images); see :func:`psnr`."""
    x, y, dr = _prepare(x, y, data_range, crop_border, y_channel, 1)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return [math.inf if m == 0 else 10.0 * math.log10(dr * dr / m) for m in mse.tolist()]


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop_border: int = 0,
         y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB, mean over the batch.

    ``data_range`` is the peak value of the inputs (1.0 for [0, 1] floats). With ``y_channel=True`` the
    inputs are first scaled to [0, 1] by ``data_range``, converted to BT.601 Y on the 0-255 scale and
    compared with a peak of 255 (BasicSR/MATLAB). ``crop_border`` pixels are shaved from every side first.
    """
    vals = psnr_per_image(x, y, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    return sum(vals) / len(vals)


def _gaussian_1d(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = SSIM_WINDOW // 2
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Valid-region Gaussian filtering of each channel (separable: rows then columns)."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop_border: int = 0,
                   y_channel: bool = False) -> list[float]:
    """SSIM of each image of a batch; see :func:`ssim`."""
    x, y, dr = _prepare(x, y, data_range, crop_border, y_channel, SSIM_WINDOW)
    g = _gaussian_1d(x.device, x.dtype)
    c1, c2 = (SSIM_K1 * dr) ** 2, (SSIM_K2 * dr) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x * mu_x
    syy = _filter(y * y, g) - mu_y * mu_y
    sxy = _filter(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(dim=1).tolist()


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop_border: int = 0,
         y_channel: bool = False) -> float:
    """Structural similarity (Gaussian 11x11, sigma 1.5, valid region), mean over channels and the batch.

    ``data_range`` sets the stabilising constants (K1 * range)^2 and (K2 * range)^2. With ``y_channel=True``
    the inputs are scaled to [0, 1] by ``data_range``, converted to BT.601 Y on the 0-255 scale and compared
    with a range of 255, as BasicSR/MATLAB do. ``crop_border`` pixels are shaved from every side first; the
    cropped images must be at least 11 pixels on each side.
    """
    vals = ssim_per_image(x, y, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    return sum(vals) / len(vals)
