"""DehazeXL (CVPR 2025): global context fusion over tokenised tiles for dehazing large images.

A re-implementation of CastleChen339/DehazeXL @ ca7caeaf (``models/DehazeXL/decoders/decoder.py``) with the
official state-dict layout (a raw ``state_dict``; 363 entries incl. 11 persistent decoder buffers):

* ``encoder``: timm's Swin-V2-T (``swinv2_tiny_window16_256``, ``features_only``) on 256x256 tiles, run
  ``chunk_size`` tiles at a time; four stage maps per tile;
* ``bottleneck``: the last stage map of *all* tiles assembled into one token grid (H/32 x W/32 tokens),
  a linear projection plus fixed 2-D sin-cos positions, then LLaMA-style blocks (RMSNorm, exact
  multi-head attention through ``F.scaled_dot_product_attention``, gated GELU MLP);
* ``decoder``: per tile, four Swin-v1 stages (window 8; SDPA with the position bias and shift mask as
  ``attn_mask``) that concatenate the encoder skip of their scale
  and upsample with a 2x2 transposed conv, a last transposed conv and a 1x1 conv; global residual.

Differences from the official code, all on purpose: exact attention everywhere (the official code
switches to the randomised HyperAttention at >= 4096 tokens, i.e. inputs >= 2048^2, which makes outputs
vary from run to run and needs flash-attn for fp16); any input size (reflect-padded to the tile multiple,
rectangular tile grids get the same sin-cos embedding per axis, output cropped back), where the official
code takes square multiples of 256 only; skips kept in tile layout (no full-image copies) and an
optional ``recompute_skips`` mode that re-runs the encoder per chunk while decoding instead of holding
all skip maps, which bounds memory by the chunk size plus the global token grid. Outputs are the same
(up to float rounding) in every mode. No official weights exist (the authors lost them, issue #3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, RmsNormFp32, trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

from glocal.zoo.layers.inputs import InputError, check_image_batch
from glocal.zoo.layers.padding import crop_to, pad_to_multiple
from glocal.zoo.layers.windows import shifted_window_mask, window_attention_bias
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, register

__all__ = ["DehazeXL", "sincos_pos_embed_2d", "to_tiles", "from_tiles"]


# ---------------------------------------------------------------------------------------------- tiles


def to_tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(N, C, gh*t, gw*t) -> (N*gh*gw, C, t, t), tiles in row-major order per image."""
    n, c, h, w = x.shape
    gh, gw = h // tile, w // tile
    x = x.reshape(n, c, gh, tile, gw, tile).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * gh * gw, c, tile, tile)


def from_tiles(x: torch.Tensor, n: int, gh: int, gw: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: (N*gh*gw, C, t, t) -> (N, C, gh*t, gw*t)."""
    _, c, th, tw = x.shape
    x = x.reshape(n, gh, gw, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, gh * th, gw * tw)


# ---------------------------------------------------------------------------------------------- encoder


class SwinEncoder(nn.Module):
    """timm Swin-V2 feature extractor under ``.model`` (keys ``encoder.model.layers_i``); NCHW maps out."""

    def __init__(self, name: str = "swinv2_tiny_window16_256", img_size: int = 256, **kwargs: Any) -> None:
        super().__init__()
        self.model = timm.create_model(name, pretrained=False, features_only=True, img_size=img_size, **kwargs)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.permute(0, 3, 1, 2) for f in self.model(x)]


# ---------------------------------------------------------------------------------------------- bottleneck


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (grid_h*grid_w, dim), row-major; first half encodes x, second half y.

    timm's table (interleaved sin/cos per axis, y first) with its halves swapped: for a square grid this is
    the MAE ``get_2d_sincos_pos_embed`` the official bottleneck uses (float32).
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs a width divisible by 4, got {dim}")
    table = build_sincos2d_pos_embed([grid_h, grid_w], dim, interleave_sin_cos=True)
    return table.roll(dim // 2, dims=1)


class GlobalAttention(nn.Module):
    """Exact multi-head self-attention over every token of the image (SDPA picks a memory-lean kernel)."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"bottleneck width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class GatedMLP(nn.Module):
    """LLaMA-style MLP: down(GELU(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class GlobalBlock(nn.Module):
    """Pre-norm transformer block of the bottleneck (official ``LLMLayer``)."""

    def __init__(self, dim: int, hidden: int, num_heads: int) -> None:
        super().__init__()
        self.attn = GlobalAttention(dim, num_heads)
        self.input_layernorm = RmsNormFp32(dim, eps=1e-5)  # LLaMA: fp32 norm
        self.post_attention_layernorm = RmsNormFp32(dim, eps=1e-5)
        self.mlp = GatedMLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class GlobalBottleneck(nn.Module):
    """Tokens of the whole image: projection + sin-cos positions + global blocks (official ``LLMBottleneck``)."""

    def __init__(self, in_dim: int, hidden_size: int = 768, num_heads: int = 8, n_layers: int = 2,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input_proj = nn.Linear(in_dim, hidden_size)
        self.layers = nn.Sequential(*[GlobalBlock(hidden_size, hidden_size * mlp_ratio, num_heads)
                                      for _ in range(n_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) map of the whole image -> (N, hidden, h, w)."""
        n, _, h, w = x.shape
        tokens = self.input_proj(x.flatten(2).transpose(1, 2))
        tokens = tokens + sincos_pos_embed_2d(self.hidden_size, h, w).to(tokens)
        tokens = self.layers(tokens)
        return tokens.transpose(1, 2).reshape(n, self.hidden_size, h, w)


# ---------------------------------------------------------------------------------------------- decoder


class WindowAttention(nn.Module):
    """Swin-v1 window attention with a learned relative-position bias (persistent int64 index)."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", get_relative_position_index(window_size, window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn_mask = window_attention_bias(bias.permute(2, 0, 1), mask, b, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class WindowBlock(nn.Module):
    """Swin-v1 block on a fixed (size x size) token map; windows no smaller than the map are not shifted."""

    def __init__(self, dim: int, size: int, num_heads: int, window_size: int = 8, shift: int = 0,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if size <= window_size:
            window_size, shift = size, 0
        self.size, self.window_size, self.shift = size, window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(size, size, (window_size, window_size), (shift, shift)) if shift else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        s, ws = self.size, self.window_size
        h = self.norm1(x).view(b, s, s, c)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(h, (ws, ws)).view(-1, ws * ws, c)
        h = window_reverse(self.attn(windows, self.attn_mask), (ws, ws), s, s)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(h.reshape(b, length, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvExpand(nn.Module):
    """2x upsampling of a token map with a 2x2 stride-2 transposed conv, channels / 4 (``PatchExpandConv``)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.expand = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = self.expand(x.transpose(1, 2).reshape(b, c, self.size, self.size))
        return x.flatten(2).transpose(1, 2)


class DecoderStage(nn.Module):
    """Swin blocks (alternately shifted) then a 2x upsampling (official ``LayerUp``)."""

    def __init__(self, dim: int, size: int, depth: int, num_heads: int, window_size: int,
                 drop_path: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            WindowBlock(dim, size, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                        drop_path=drop_path[i]) for i in range(depth)])
        self.upsample = ConvExpand(size, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.upsample(x)


class SwinDecoder(nn.Module):
    """Per-tile U-Net-like decoder: each stage concatenates the encoder skip of its scale (deepest first)."""

    def __init__(self, tile: int = 256, in_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 8,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        stages = len(depths)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        base = tile // 4  # token side of the first encoder stage (stride 4)
        self.layers_up = nn.ModuleList()
        for i in range(stages):
            level = stages - 1 - i  # encoder stage this decoder stage mirrors
            self.layers_up.append(DecoderStage(
                dim=in_dim * 2 ** (stages - i), size=base // 2 ** level, depth=depths[level],
                num_heads=num_heads[level], window_size=window_size,
                drop_path=dpr[sum(depths[:level]):sum(depths[:level + 1])]))
        self.up_x2 = ConvExpand(2 * base, in_dim // 2)
        self.output = nn.Conv2d(in_dim // 8, 3, 1, bias=False)
        self.tile = tile

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Bottleneck tiles (B, C, h, w) and encoder skips (shallow first, NCHW) -> (B, 3, tile, tile)."""
        tokens = x.flatten(2).transpose(1, 2)
        for i, stage in enumerate(self.layers_up):
            skip = skips[len(self.layers_up) - 1 - i].flatten(2).transpose(1, 2)
            tokens = stage(torch.cat([tokens, skip], dim=-1))
        tokens = self.up_x2(tokens)
        b, _, c = tokens.shape
        return self.output(tokens.transpose(1, 2).reshape(b, c, self.tile, self.tile))


# ---------------------------------------------------------------------------------------------- model


class DehazeXL(nn.Module):
    """Tile encoder -> global bottleneck over all tile tokens -> tile decoder, plus the input (residual).

    ``chunk_size`` tiles go through the encoder and the decoder at a time (16 in the official code);
    ``recompute_skips`` trades one more encoder pass for not holding every tile's skip maps.
    """

    def __init__(self, encoder: str = "swinv2_tiny_window16_256", tile: int = 256,
                 encoder_kwargs: dict[str, Any] | None = None, bottleneck_layers: int = 2,
                 bottleneck_heads: int = 8, mlp_ratio: int = 4, decoder_depths: Sequence[int] = (2, 2, 2, 2),
                 decoder_heads: Sequence[int] = (3, 6, 12, 24), decoder_window: int = 8,
                 chunk_size: int = 16, recompute_skips: bool = False) -> None:
        super().__init__()
        self.tile = tile
        self.encoder = SwinEncoder(encoder, img_size=tile, **(encoder_kwargs or {}))
        chans, red = self.encoder.channels, self.encoder.reductions
        if len(chans) != len(decoder_depths) or red[0] != 4 or any(c != chans[0] * 2 ** i for i, c in enumerate(chans)):
            raise ValueError(f"DehazeXL needs a 4-stage encoder at strides 4..32 with doubling widths, got {chans}")
        self.bottleneck = GlobalBottleneck(chans[-1], chans[-1], bottleneck_heads, bottleneck_layers, mlp_ratio)
        self.decoder = SwinDecoder(tile, chans[0], decoder_depths, decoder_heads, decoder_window)
        self.chunk_size = chunk_size
        self.recompute_skips = recompute_skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) hazy image in [0, 1] -> dehazed image of the same size (not clamped)."""
        check_image_batch(x, 3, "DehazeXL")
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be at least 1, got {self.chunk_size}")
        padded, size = pad_to_multiple(x, self.tile)
        return crop_to(self.restore(padded), size)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Dehaze an input whose sides are multiples of the tile size.

        Tiles are cut from ``x`` and written back into the output per chunk, so besides the input and the
        output only the chunk, the global token grid and (unless ``recompute_skips``) the skip maps are held.
        """
        n, _, h, w = x.shape
        t = self.tile
        gh, gw = h // t, w // t
        spans = [(i, min(i + self.chunk_size, n * gh * gw)) for i in range(0, n * gh * gw, self.chunk_size)]

        def cut(a: int, b: int) -> torch.Tensor:  # tiles a..b-1 of the row-major (image, row, column) order
            return torch.stack([x[i // (gh * gw), :, (i // gw % gh) * t:(i // gw % gh + 1) * t,
                                  (i % gw) * t:(i % gw + 1) * t] for i in range(a, b)])

        skips: list[list[torch.Tensor]] = []
        deepest: list[torch.Tensor] = []
        for a, b in spans:
            feats = self.encoder(cut(a, b))
            deepest.append(feats[-1])
            if not self.recompute_skips:
                skips.append(feats[:-1])
        context = to_tiles(self.bottleneck(from_tiles(torch.cat(deepest), n, gh, gw)), deepest[0].shape[-1])
        out = x.clone()  # the global residual
        for c, (a, b) in enumerate(spans):
            fm = self.encoder(cut(a, b))[:-1] if self.recompute_skips else skips[c]
            y = self.decoder(context[a:b], [*fm, deepest[c]])
            if not self.recompute_skips:
                skips[c] = []  # free this chunk's skips as soon as it is decoded
            for k, i in enumerate(range(a, b)):
                r, col = i // gw % gh, i % gw
                out[i // (gh * gw), :, r * t:(r + 1) * t, col * t:(col + 1) * t] += y[k]
        return out

    def glocal_backends(self) -> dict[str, str]:
        """Recorded with results: exact global attention and the tiling schedule."""
        return {"global_attention": "exact, F.scaled_dot_product_attention",
                "tiling": f"{self.tile}px tiles, chunk_size={self.chunk_size}, recompute_skips={self.recompute_skips}"}


# ---------------------------------------------------------------------------------------------- registry
# Paper numbers: CVPR 2025 paper (arXiv 2504.09621) Table 2 (8KDehaze, 4KID, O-HAZE: PSNR / SSIM / seconds per
# image, GPU not stated) and the memory claim of Sec. 4 / Fig. 1 (10240x10240 in fp16 with about 21 GB, the
# figure label reads 20.04 GB). Parameter count measured from the official module (manifest).

_PAPER = (
    PaperMetric("8KDehaze", "psnr", 32.35, "paper Table 2"),
    PaperMetric("8KDehaze", "ssim", 0.9863, "paper Table 2"),
    PaperMetric("8KDehaze", "seconds_per_image", 4.617, "paper Table 2, GPU not stated"),
    PaperMetric("4KID", "psnr", 26.62, "paper Table 2"),
    PaperMetric("4KID", "ssim", 0.9073, "paper Table 2"),
    PaperMetric("4KID", "seconds_per_image", 0.59, "paper Table 2, GPU not stated"),
    PaperMetric("O-HAZE", "psnr", 21.49, "paper Table 2"),
    PaperMetric("O-HAZE", "ssim", 0.7348, "paper Table 2"),
    PaperMetric("O-HAZE", "seconds_per_image", 0.86, "paper Table 2, GPU not stated"),
    PaperMetric("10240x10240 input", "gpu_memory_gb", 20.04,
                "paper Fig. 1 label (text: about 21 GB), FP16 inference on a single GPU"),
)

register(ModelCard(
    family="dehazexl", display_name="DehazeXL", task="dehazing",
    paper_title="Tokenize Image Patches: Global Context Fusion for Effective Haze Removal in Large Images",
    arxiv_id="2504.09621", official_repo="https://github.com/CastleChen339/DehazeXL",
    license="none stated in the official repository (all rights reserved by default)",
    default_variant="dehazexl_swinv2_tiny",
    description="256-px tiles encoded by Swin-V2-T, a global transformer over every tile's tokens, and a "
                "Swin decoder per tile; built for 8K-and-larger images. No official weights exist.",
    variants=(Variant(
        name="dehazexl_swinv2_tiny", builder=DehazeXL, kwargs={}, params=125_484_996, weights=(),
        paper_metrics=_PAPER,
        preprocessing=Preprocessing(input_size=(3, 1024, 1024), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                    interpolation="bicubic", crop_pct=1.0),
        resolution_multiple=1, resolutions=(1024, 2048, 4096),
        notes="No official checkpoint: the authors lost the trained weights (issue #3); the DAM repository's "
              "pre-release test weight has a different decoder and does not load strictly. Random weights "
              "only, for cost (latency/memory) studies; quality columns can only show paper numbers."),),
))
