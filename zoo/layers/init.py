"""The weight init the official SViT, DiNAT and RGT code share, through timm's ViT init."""

from __future__ import annotations

import torch.nn as nn
from timm.models.vision_transformer import init_weights_vit_timm


def init_vit_linear(module: nn.Module) -> None:
    """timm's ViT init (truncated normal, std 0.02, zero bias) on Linear layers only: LayerNorms keep their
    unit init and convolutions PyTorch's default, so random models draw the official code's numbers."""
    if isinstance(module, nn.Linear):
        init_weights_vit_timm(module)
