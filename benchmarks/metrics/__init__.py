"""Quality metrics: top-k accuracy (classification), PSNR and SSIM (restoration)."""

from glocal.benchmarks.metrics.classification import topk_hits
from glocal.benchmarks.metrics.image_quality import psnr, ssim

__all__ = ["psnr", "ssim", "topk_hits"]
