"""PSNR/SSIM against scikit-image (an independent implementation) and exact analytic values."""

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from glocal.benchmarks.metrics import psnr, ssim
from glocal.benchmarks.metrics.image_quality import ImageMetricError, psnr_per_image, rgb_to_y, ssim_per_image


def _pair(seed: int, shape=(2, 3, 40, 48)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + 0.08 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis=None) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=channel_axis)


def test_psnr_rgb_matches_skimage():
    x, y = _pair(0)
    ref = np.mean([peak_signal_noise_ratio(_hwc(x[i]), _hwc(y[i]), data_range=1.0) for i in range(2)])
    assert psnr(y, x) == pytest.approx(ref, abs=1e-10)


def test_ssim_rgb_matches_skimage():
    # skimage filters with reflect padding and then drops the 5-px band of the map that padding touched,
    # which is exactly the valid-region SSIM
    x, y = _pair(1)
    ref = np.mean([_sk_ssim(_hwc(x[i]), _hwc(y[i]), 1.0, channel_axis=2) for i in range(2)])
    assert ssim(y, x) == pytest.approx(ref, abs=1e-10)


def test_y_channel_matches_skimage_ycbcr():
    x, _ = _pair(2, (1, 3, 16, 16))
    ref = rgb2ycbcr(_hwc(x[0]))[..., 0]
    np.testing.assert_allclose(rgb_to_y(x)[0, 0].numpy(), ref, atol=1e-9)
    assert float(rgb_to_y(torch.ones(1, 3, 1, 1))) == pytest.approx(235.0)
    assert float(rgb_to_y(torch.zeros(1, 3, 1, 1))) == pytest.approx(16.0)


def test_y_channel_with_crop_matches_skimage():
    x, y = _pair(3, (1, 3, 40, 44))
    crop = 4
    yx = rgb2ycbcr(_hwc(x[0]))[..., 0][crop:-crop, crop:-crop]
    yy = rgb2ycbcr(_hwc(y[0]))[..., 0][crop:-crop, crop:-crop]
    assert psnr(y, x, crop_border=crop, y_channel=True) == pytest.approx(
        peak_signal_noise_ratio(yx, yy, data_range=255), abs=1e-10)
    assert ssim(y, x, crop_border=crop, y_channel=True) == pytest.approx(_sk_ssim(yx, yy, 255.0), abs=1e-10)


def test_y_channel_scales_by_data_range():
    x, y = _pair(4, (1, 3, 24, 24))
    a = psnr(x, y, y_channel=True), ssim(x, y, y_channel=True)
    kw = dict(data_range=255, y_channel=True)
    b = psnr(x * 255, y * 255, **kw), ssim(x * 255, y * 255, **kw)
    assert a == pytest.approx(b, abs=1e-9)


def test_exact_values():
    x, _ = _pair(5, (3, 20, 20))
    assert psnr(x, x) == math.inf and ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # a constant offset d gives MSE = d^2, so PSNR = 20 log10(range / d)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-9)
    assert psnr(x * 255 + 5, x * 255, data_range=255) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    # Y of a constant RGB offset d is (65.481 + 128.553 + 24.966) d = 219 d on the 0-255 scale
    assert psnr(x + 0.01, x, y_channel=True) == pytest.approx(20 * math.log10(255 / 2.19), abs=1e-9)


def test_batch_mean_and_per_image():
    x, y = _pair(6)
    assert psnr(x, y) == pytest.approx(sum(psnr_per_image(x, y)) / 2)
    assert ssim(x, y) == pytest.approx(np.mean([ssim(x[i], y[i]) for i in range(2)]))
    assert len(ssim_per_image(x, y)) == 2
    assert psnr(x.float(), y.float()) == pytest.approx(psnr(x, y), abs=1e-4)


@pytest.mark.parametrize("a, b, kw, match", [
    ((3, 16, 16), (3, 16, 17), {}, "shapes differ"),
    ((16, 16), (16, 16), {}, "expected"),
    ((1, 3, 16, 16), (1, 3, 16, 16), {"crop_border": 3}, "smaller than the 11-px"),
    ((1, 1, 16, 16), (1, 1, 16, 16), {"y_channel": True}, "3-channel"),
    ((1, 3, 16, 16), (1, 3, 16, 16), {"data_range": 0}, "data_range"),
])
def test_bad_inputs(a, b, kw, match):
    with pytest.raises(ImageMetricError, match=match):
        ssim(torch.rand(a), torch.rand(b), **kw)
    assert issubclass(ImageMetricError, ValueError)
