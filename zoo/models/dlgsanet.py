"""DLGSANet (ICCV 2023): lightweight dynamic local and global self-attention networks for super-resolution.

A pure-PyTorch re-implementation of NeonLeexiang/DLGSANet @ 0974b9ae (``basicsr/archs/dlgsanet_arch.py``,
``buildblock_type='sparseedge'``, ``upsampler='pixelshuffledirect'``), with the official state-dict layout
(BasicSR ``{"params": ...}`` files load strictly). Each hybrid block is

* MHDLSA: LayerNorm -> 1x1 -> *dynamic* depthwise 7x7 conv whose per-pixel kernel (shared by a group of
  ``idynamic_num_heads`` channels) is predicted by a small hyper-network -> 1x1; then LayerNorm -> GDFN;
* SparseGSA: LayerNorm -> Restormer-style channel ("transposed") attention with ReLU instead of softmax
  (the sparse selection) -> 1x1; then LayerNorm -> GDFN.

The official dynamic convolution is a cupy CUDA kernel; here it is a loop over the K*K kernel taps that
accumulates shifted inputs times per-pixel weights, in the kernel's summation order, on any device and
dtype, on contiguous NCHW maps (the shared ``ChannelLayerNorm`` hands them on so: channels-last strides
made the network about 1.8x slower on CPU). In eval mode the global attention runs on overlapping local
windows (TLC, 96/72/48 LR pixels at x2/x3/x4) stitched by averaging, as the official test code does;
unlike the official code any batch size works. Inputs are RGB in [0, 1]; the DIV2K mean shift happens
inside. Any size works without padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.zoo.layers.inputs import InputError, check_image_batch
from glocal.zoo.layers.norm import ChannelLayerNorm
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

__all__ = ["DLGSANet", "dynamic_depthwise_conv", "tlc_starts"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def dynamic_depthwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-pixel depthwise conv: ``out[n,c,h,w] = sum_ij weight[n,c//gc,i,j,h,w] * x[n,c,h+i-p,w+j-p]``.

    ``x`` is (N, C, H, W); ``weight`` is (N, G, K, K, H, W) with C divisible by G (each group of C/G
    channels shares a kernel); zero padding K//2, stride 1. Loops over the K*K taps so memory stays at
    a few feature maps (an unfold would hold K*K of them).
    """
    n, c, h, w = x.shape
    g, k = weight.shape[1], weight.shape[2]
    if weight.shape != (n, g, k, k, h, w) or c % g:
        raise InputError(f"dynamic conv weight {tuple(weight.shape)} does not fit input {tuple(x.shape)}")
    p = k // 2
    xp = F.pad(x, (p, p, p, p)).view(n, g, c // g, h + 2 * p, w + 2 * p)
    out = x.new_zeros(n, g, c // g, h, w)
    for i in range(k):
        for j in range(k):
            out += xp[..., i:i + h, j:j + w] * weight[:, :, i, j].unsqueeze(2)
    return out.view(n, c, h, w)


class DynamicDepthwiseConv(nn.Module):
    """Applies predicted per-pixel kernels (no parameters); reports its MACs, which the counter cannot see."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return dynamic_depthwise_conv(x, weight)

    def glocal_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        return output.numel() * self.kernel_size ** 2


class GDFN(nn.Module):
    """Restormer's gated depthwise-conv feed-forward network (no biases)."""

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class KernelHyperNet(nn.Module):
    """Predicts a K*K kernel per pixel and channel group, then applies it (official ``IDynamicDWConv``)."""

    def __init__(self, dim: int, kernel_size: int = 7, group_channels: int = 6, reduction: int = 4) -> None:
        super().__init__()
        if dim % group_channels:
            raise ValueError(f"dim {dim} is not divisible by idynamic_num_heads {group_channels}")
        self.kernel_size = kernel_size
        self.groups = dim // group_channels
        mid = dim // reduction
        self.conv1 = nn.Sequential(
            nn.Conv2d(dim, mid, 1),
            nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid),
        )
        self.conv2 = nn.Sequential(nn.Conv2d(mid, kernel_size ** 2 * self.groups, 1))
        self.apply_kernel = DynamicDepthwiseConv(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.kernel_size
        weight = self.conv2(self.conv1(x)).view(n, self.groups, k, k, h, w)
        return self.apply_kernel(x, weight)


class DynamicLocalAttention(nn.Module):
    """MHDLSA core: 1x1 -> dynamic depthwise conv -> 1x1 (official ``IDynamicDWConvBlock``)."""

    def __init__(self, dim: int, window_size: int = 7, heads: int = 6) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv = KernelHyperNet(dim, window_size, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv(self.conv0(x)))


def tlc_starts(size: int, kernel: int) -> list[int]:
    """Window starts along one axis for TLC: ceil(size/k) windows of k = min(size, kernel), evenly spread.

    Follows megvii TLC's ``grids`` (as used by DLGSANet): a step of ceil((size-k)/(n-1)), the last window
    flush with the border.
    """
    k = min(size, kernel)
    n = (size - 1) // k + 1
    step = k if n == 1 else math.ceil((size - k) / (n - 1) - 1e-8)
    starts: list[int] = []
    i = 0
    while True:
        if i + k >= size:
            starts.append(size - k)
            return starts
        starts.append(i)
        i += step


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class SparseChannelAttention(nn.Module):
    """SparseGSA: channel attention with L2-normalised q, k, a per-head temperature and ReLU (not softmax).

    In training (or with ``tlc_flag=False``) it attends over the whole map; in eval it runs on TLC windows
    of ``tlc_kernel`` pixels and averages the overlaps, like the official test path.
    """

    def __init__(self, dim: int, num_heads: int = 6, tlc_flag: bool = True, tlc_kernel: int = 48,
                 activation: str = "relu") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by restormer_num_heads {num_heads}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown SparseGSA activation {activation!r}; "
                             f"expected one of {sorted(_ACTIVATIONS)}")
        self.num_heads = num_heads
        self.tlc_flag = tlc_flag
        self.tlc_kernel = tlc_kernel
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)
        self.act = _ACTIVATIONS[activation]()

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Channel attention of (B, 3C, H, W) q|k|v maps -> (B, C, H, W)."""
        b, c3, h, w = qkv.shape
        q, k, v = qkv.reshape(b, 3, self.num_heads, c3 // (3 * self.num_heads), h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = self.act((q @ k.transpose(-2, -1)) * self.temperature)
        return (attn @ v).view(b, c3 // 3, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_dwconv(self.qkv(x))
        if self.training or not self.tlc_flag:
            return self.project_out(self.attend(qkv))
        return self.project_out(self.local_converter(qkv))

    def local_converter(self, qkv: torch.Tensor) -> torch.Tensor:
        """TLC: attention on overlapping windows, outputs summed into place and divided by the cover count."""
        b, c3, h, w = qkv.shape
        rows, cols = tlc_starts(h, self.tlc_kernel), tlc_starts(w, self.tlc_kernel)
        k1, k2 = min(h, self.tlc_kernel), min(w, self.tlc_kernel)
        parts = torch.stack([qkv[:, :, i:i + k1, j:j + k2] for i in rows for j in cols], dim=1)
        outs = self.attend(parts.flatten(0, 1)).view(b, len(rows) * len(cols), c3 // 3, k1, k2)
        out = qkv.new_zeros(b, c3 // 3, h, w)
        count = qkv.new_zeros(1, 1, h, w)
        idx = 0
        for i in rows:
            for j in cols:
                out[:, :, i:i + k1, j:j + k2] += outs[:, idx]
                count[:, :, i:i + k1, j:j + k2] += 1
                idx += 1
        return out / count


class DynamicLocalBlock(nn.Module):
    """MHDLSA + GDFN with pre-norm residuals (official ``IDynamicLayerBlock``; attribute names kept)."""

    def __init__(self, dim: int, window_size: int = 7, heads: int = 6, ffn_expansion: float = 2.0) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.IDynamicDWConv = DynamicLocalAttention(dim, window_size, heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.IDynamic_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.IDynamicDWConv(self.norm1(x))
        return x + self.IDynamic_ffn(self.norm2(x))


class SparseGlobalBlock(nn.Module):
    """SparseGSA + GDFN with pre-norm residuals (official ``SparseAttentionLayerBlock``)."""

    def __init__(self, dim: int, heads: int = 6, ffn_expansion: float = 2.0, tlc_flag: bool = True,
                 tlc_kernel: int = 48, activation: str = "relu") -> None:
        super().__init__()
        self.norm3 = ChannelLayerNorm(dim)
        self.restormer_attn = SparseChannelAttention(dim, heads, tlc_flag, tlc_kernel, activation)
        self.norm4 = ChannelLayerNorm(dim)
        self.restormer_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.restormer_attn(self.norm3(x))
        return x + self.restormer_ffn(self.norm4(x))


class ResidualGroup(nn.Module):
    """RHDTG: ``blocks`` pairs of (local, global) blocks, a 3x3 conv, and a group residual."""

    def __init__(self, dim: int, blocks: int, window_size: int, idynamic_num_heads: int,
                 idynamic_ffn_expansion_factor: float, restormer_num_heads: int,
                 restormer_ffn_expansion_factor: float, tlc_flag: bool, tlc_kernel: int,
                 activation: str) -> None:
        super().__init__()
        body: list[nn.Module] = []
        for _ in range(blocks):
            body.append(DynamicLocalBlock(dim, window_size, idynamic_num_heads,
                                          idynamic_ffn_expansion_factor))
            body.append(SparseGlobalBlock(dim, restormer_num_heads, restormer_ffn_expansion_factor, tlc_flag,
                                          tlc_kernel, activation))
        body.append(nn.Conv2d(dim, dim, 3, padding=1))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class PatchEmbed(nn.Module):
    """Shallow features: one 3x3 conv without bias (official ``OverlapPatchEmbed``)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class DLGSANet(nn.Module):
    """DLGSANet with the "sparseedge" blocks and a one-step pixel-shuffle upsampler (all official configs)."""

    def __init__(self, upscale: int = 4, in_chans: int = 3, dim: int = 48, groups: int = 4, blocks: int = 3,
                 window_size: int = 7, idynamic_num_heads: int = 6,
                 idynamic_ffn_expansion_factor: float = 2.0,
                 restormer_num_heads: int = 6, restormer_ffn_expansion_factor: float = 2.0,
                 tlc_flag: bool = True, tlc_kernel: int = 48, activation: str = "relu",
                 img_range: float = 1.0) -> None:
        super().__init__()
        if upscale < 1:
            raise ValueError(f"upscale must be a positive integer, got {upscale}")
        self.upscale = upscale
        self.in_chans = in_chans
        self.img_range = img_range
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        self.overlap_embed = nn.Sequential(PatchEmbed(in_chans, dim))
        groups_ = [ResidualGroup(dim, blocks, window_size, idynamic_num_heads, idynamic_ffn_expansion_factor,
                                 restormer_num_heads, restormer_ffn_expansion_factor, tlc_flag, tlc_kernel,
                                 activation) for _ in range(groups)]
        self.deep_feature_extraction = nn.Sequential(*groups_, nn.Conv2d(dim, dim, 3, padding=1))
        self.upsample = nn.Sequential(nn.Conv2d(dim, upscale ** 2 * in_chans, 3, padding=1),
                                      nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image in [0, 1] -> (N, C, scale*H, scale*W)."""
        check_image_batch(x, self.in_chans, "DLGSANet")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.overlap_embed(x)
        x = self.deep_feature_extraction(x) + x
        x = self.upsample(x)
        return x / self.img_range + mean


# ----------------------------------------------------------------------------------------------------------
# Registry. Sources: project page (docs/index.html in the official repo) for Large (params, FLOPs at a
# 1280x720 output, PSNR/SSIM on the Y channel); README "Lightweight models PSNR" for Tiny/Light, both the
# paper rows and the rows of the 2025 re-trained weights that are actually published.

_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")

# (scale) -> per-set (psnr, ssim) of DLGSANet (Large), project page tables.
_LARGE = {
    2: ((38.34, 0.9617), (34.25, 0.9231), (32.38, 0.9025), (33.41, 0.9393), (39.57, 0.9789)),
    3: ((34.95, 0.9310), (30.77, 0.8501), (29.38, 0.8121), (29.43, 0.8761), (34.76, 0.9517)),
    4: ((32.80, 0.9021), (28.95, 0.7907), (27.85, 0.7464), (27.17, 0.8175), (31.68, 0.9219)),
}
_LARGE_COST = {2: (4.73, 1097.0), 3: (4.74, 486.0), 4: (4.76, 274.0)}  # params (M), GMACs at 1280x720 out

# README tables: (size, scale) -> (paper rows, re-trained 2025 rows)
_LIGHTWEIGHT = {
    ("tiny", 2): (
        ((38.16, 0.9611), (33.92, 0.9202), (32.26, 0.9007), (32.82, 0.9343), (39.14, 0.9777)),
        ((38.1581, 0.9615), (33.8906, 0.9200), (32.2828, 0.9017), (32.8461, 0.9343), (39.1326, 0.9780))),
    ("tiny", 3): (
        ((34.63, 0.9288), (30.57, 0.8459), (29.21, 0.8083), (28.69, 0.8630), (34.10, 0.9480)),
        ((34.6197, 0.9293), (30.5370, 0.8469), (29.2335, 0.8100), (28.7829, 0.8645), (34.0463, 0.9477))),
    ("tiny", 4): (
        ((32.46, 0.8984), (28.79, 0.7861), (27.70, 0.7408), (26.55, 0.8002), (30.98, 0.9137)),
        ((32.4957, 0.8992), (28.7738, 0.7862), (27.7217, 0.7426), (26.5675, 0.8006), (30.9556, 0.9142))),
    ("light", 2): (
        ((38.20, 0.9612), (33.89, 0.9203), (32.30, 0.9012), (32.94, 0.9355), (39.29, 0.9780)),
        ((38.1577, 0.9615), (34.0453, 0.9216), (32.3058, 0.9020), (32.9323, 0.9354), (39.1995, 0.9780))),
    ("light", 3): (
        ((34.70, 0.9295), (30.58, 0.8465), (29.24, 0.8089), (28.83, 0.8653), (34.16, 0.9483)),
        ((34.6697, 0.9298), (30.5621, 0.8466), (29.2484, 0.8101), (28.8239, 0.8655), (34.1938, 0.9483))),
    ("light", 4): (
        ((32.54, 0.8993), (28.84, 0.7871), (27.73, 0.7415), (26.66, 0.8033), (31.13, 0.9161)),
        ((32.5333, 0.8998), (28.6401, 0.7864), (27.7299, 0.7434), (26.6702, 0.8036), (31.0196, 0.9154))),
}

# size -> (dim, groups, blocks); x3 Tiny's config file says 4 blocks in its name but sets 3.
_SIZES = {"tiny": (48, 3, 3), "light": (48, 4, 3), "large": (90, 6, 4)}
_TLC_KERNEL = {2: 96, 3: 72, 4: 48}
_PARAMS = {("tiny", 2): 565_710, ("tiny", 3): 572_205, ("tiny", 4): 581_298,
           ("light", 2): 745_188, ("light", 3): 751_683, ("light", 4): 760_776,
           ("large", 2): 4_733_724, ("large", 3): 4_745_889, ("large", 4): 4_762_920}

_EFFICIENT_URL = "https://drive.google.com/drive/folders/1jbh5hNP4AGhsMPabWG7yq1mIDa_FcriO"
_CLASSIC_X4_URL = "https://drive.google.com/drive/folders/1kqjoO7IEi7QmaOSEH37xKjRA_LcmL2eU"
_Y = "Y channel, BasicSR protocol (test configs crop 4 px)"


def _metrics(rows: tuple, note: str) -> tuple[PaperMetric, ...]:
    out: list[PaperMetric] = []
    for name, (p, s) in zip(_SETS, rows, strict=True):
        out += [PaperMetric(name, "psnr", p, note), PaperMetric(name, "ssim", s, note)]
    return tuple(out)


def _variant(size: str, scale: int) -> Variant:
    dim, groups, blocks = _SIZES[size]
    weights: tuple[WeightSource, ...] = ()
    notes = ""
    if size == "large":
        params_m, gmacs = _LARGE_COST[scale]
        metrics = _metrics(_LARGE[scale], f"paper (project page), {_Y}") + (
            PaperMetric("paper", "params_m", params_m, "project page"),
            PaperMetric("paper", "gmacs", gmacs, "project page FLOPs (multiply-adds) at a 1280x720 output"),
        )
        if scale == 4:
            weights = (WeightSource(
                description="official 'BI-Classic SR (x4)' BasicSR checkpoint (Google Drive / Baidu, "
                            "code IMAG); load 'params' as the official test config does",
                url=_CLASSIC_X4_URL, layout="official"),)
        else:
            notes = "no official weights (README: Large x2/x3 'To-Do')"
    else:
        paper, retrained = _LIGHTWEIGHT[(size, scale)]
        metrics = _metrics(paper, f"paper row of the README, {_Y}") + _metrics(
            retrained, f"2025 re-trained published weights (README), {_Y}")
        weights = (WeightSource(
            description="re-trained (2025) 'BI-Efficient SR' BasicSR checkpoint "
                        "(the paper's weights were lost)",
            url=_EFFICIENT_URL, layout="official"),)
        notes = "published weights are 2025 re-trains; their README numbers differ slightly from the paper"
    return Variant(
        name=f"dlgsanet_{size}_x{scale}", builder=DLGSANet,
        kwargs=dict(upscale=scale, dim=dim, groups=groups, blocks=blocks, tlc_kernel=_TLC_KERNEL[scale]),
        params=_PARAMS[(size, scale)], scale=scale, weights=weights, paper_metrics=metrics,
        preprocessing=Preprocessing(input_size=(3, 240 // scale, 240 // scale), mean=(0.0, 0.0, 0.0),
                                    std=(1.0, 1.0, 1.0), interpolation="bicubic", crop_pct=1.0),
        resolution_multiple=1, resolutions=(240, 720), notes=notes)  # output sides (the SR task divides by s)


register(ModelCard(
    family="dlgsanet", display_name="DLGSANet", task="super_resolution",
    paper_title="DLGSANet: Lightweight Dynamic Local and Global Self-Attention Networks for Image "
                "Super-Resolution",
    arxiv_id="2301.02031", official_repo="https://github.com/NeonLeexiang/DLGSANet",
    license="Apache-2.0 (LICENSE.txt; the README adds 'academic research use only')",
    default_variant="dlgsanet_light_x4",
    description="Dynamic depthwise-conv local attention (per-pixel kernels from a hyper-network) alternating "
                "with ReLU-sparse global channel attention; TLC windows at test time.",
    variants=tuple(_variant(size, scale) for size in ("tiny", "light", "large") for scale in (2, 3, 4)),
))
