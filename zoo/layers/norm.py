"""LayerNorm over the channels of an NCHW map, under the attribute name an official checkpoint uses."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d


class ChannelLayerNorm(nn.Module):
    """timm's ``LayerNorm2d`` held as ``.<attr>`` (official keys: ``body`` in Restormer-style code, ``norm`` in
    SViT); the output is made contiguous NCHW again, so the convolutions after it run in their NCHW kernels
    instead of receiving channels-last strides (on CPU the difference is measurable)."""

    def __init__(self, dim: int, eps: float = 1e-5, attr: str = "body") -> None:
        super().__init__()
        self.attr = attr
        self.add_module(attr, LayerNorm2d(dim, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attr)(x).contiguous()
