"""SViT (Vision Transformer with Super Token Sampling, CVPR 2023), a reimplementation of the official STViT.

Super token attention (STA) gives early, high-resolution stages global context at low cost: pixels are
softly associated with the 3x3 neighbourhood of a coarse super-token grid (sparse association), super
tokens are re-estimated as affinity-weighted pixel means, multi-head self-attention mixes all super
tokens, and the affinities map the result back to the pixels. Stages 3-4 use super-token size 1, i.e.
plain global attention. Module and parameter names follow hhb072/STViT (``models/stvit.py`` at
c9ed9a4), so the official ``model`` state dicts load strictly, including the frozen identity kernels
``attn.unfold.weights`` / ``attn.fold.weights`` that the official files carry.

Input sizes: the official code zero-pads stage maps up to whole super tokens, which makes results
depend on the padding. By default the model accepts only sizes that need no padding (multiples of 32
for the released configs) and says so; ``allow_padding=True`` enables the official padding path.
"""

# No ``from __future__ import annotations`` here: torch.fx copies string annotations into the traced code as
# names that TorchScript cannot resolve (timm's fx + TorchScript check).
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SelectAdaptivePool2d, to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, register_notrace_function
from timm.models._features import feature_take_indices

from glocal.zoo.layers.init import init_vit_linear
from glocal.zoo.layers.inputs import check_image
from glocal.zoo.layers.norm import ChannelLayerNorm
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

__all__ = ["SViT", "SuperTokenAttention", "SViTBlock", "CONFIGS"]


class ResDWConv(nn.Module):
    """x + depthwise 3x3 conv(x): the conditional position encoding and the FFN's local mixing."""

    def __init__(self, dim: int, kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ConvFFN(nn.Module):
    """1x1 conv -> GELU -> residual depthwise 3x3 -> 1x1 conv (channels first)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.act1 = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)
        self.drop = nn.Dropout(drop)
        self.conv = ResDWConv(hidden, 3, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act1(self.fc1(x)))
        return self.drop(self.fc2(self.conv(x)))


class ConvAttention(nn.Module):
    """Global multi-head self-attention over a (B, C, H, W) map with 1x1-conv q/k/v and projection.

    The qkv channels are head-major (``[heads, 3 * head_dim]``, split into q, k, v inside each head),
    as in the official code.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=qkv_bias, **dd)
        self.attn_drop = attn_drop
        self.proj = nn.Conv2d(dim, dim, 1, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(x).reshape(B, self.num_heads, 3 * C // self.num_heads, H * W).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)  # (B, heads, N, head_dim) each
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                           scale=self.scale)
        x = x.transpose(-1, -2).reshape(B, C, H, W)
        return self.proj_drop(self.proj(x))


def _identity_kernels(kernel_size: int = 3, device=None, dtype=None) -> torch.Tensor:
    """The official frozen one-hot kernels: output channel j picks position j of the k x k window."""
    k2 = kernel_size * kernel_size
    return torch.eye(k2, device=device, dtype=dtype).reshape(k2, 1, kernel_size, kernel_size)


class NeighbourUnfold(nn.Module):
    """(B, C, h, w) -> (B, C*9, h*w): each cell's 3x3 neighbours (zeros outside), via the stored kernels.

    The kernels are constants: a persistent buffer keeps the official state-dict key (``weights``) without
    being a parameter that never gets a gradient."""

    def __init__(self, kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.register_buffer("weights", _identity_kernels(kernel_size, device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = F.conv2d(x.reshape(b * c, 1, h, w), self.weights, padding=self.kernel_size // 2)
        return x.reshape(b, c * self.kernel_size * self.kernel_size, h * w)


class NeighbourFold(nn.Module):
    """(N, 9, h, w) -> (N, 1, h, w): scatter-add each cell's 9 neighbour slots back onto the grid."""

    def __init__(self, kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.register_buffer("weights", _identity_kernels(kernel_size, device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weights, padding=self.kernel_size // 2)


@register_notrace_function
def pad_to_super_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) map at the bottom/right to whole h x w super tokens (official padding).
    One opaque call under torch.fx (public name: fx only wraps functions whose name has no leading _)."""
    pad_b, pad_r = (-x.shape[-2]) % h, (-x.shape[-1]) % w
    if pad_b != 0 or pad_r != 0:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    return x


class SuperTokenAttention(nn.Module):
    """STA: sparse pixel/super-token association, attention among super tokens, upsampling to pixels.

    With super-token size 1 it is plain global attention over all tokens (the official "direct" path).
    """

    __constants__ = ["uses_super_tokens"]

    def __init__(self, dim: int, stoken_size: int | tuple[int, int], n_iter: int = 1, num_heads: int = 8,
                 qkv_bias: bool = False, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, got {n_iter}")
        dd = dict(device=device, dtype=dtype)
        self.n_iter = n_iter
        self.stoken_size = to_2tuple(stoken_size)
        self.uses_super_tokens = self.stoken_size[0] > 1 or self.stoken_size[1] > 1
        self.scale = dim**-0.5  # the affinity uses all channels, not the head dim
        self.unfold = NeighbourUnfold(3, **dd)
        self.fold = NeighbourFold(3, **dd)
        self.stoken_refine = ConvAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                           attn_drop=attn_drop, proj_drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_super_tokens:
            return self._stoken_forward(x)
        return self.stoken_refine(x)

    def _candidates(self, stokens: torch.Tensor) -> torch.Tensor:
        """(B, C, hh, ww) super tokens -> (B, hh*ww, C, 9): the 3x3 neighbourhood of every cell."""
        B, C, hh, ww = stokens.shape
        return self.unfold(stokens).transpose(1, 2).reshape(B, hh * ww, C, 9)

    def _aggregate(self, pixels: torch.Tensor, affinity: torch.Tensor, hh: int, ww: int) -> torch.Tensor:
        """Affinity-weighted pixel sums per super token, (B, M, P, C) x (B, M, P, 9) -> (B, C, hh, ww)."""
        B, C = pixels.shape[0], pixels.shape[3]
        sums = pixels.transpose(-1, -2) @ affinity  # (B, hh*ww, C, 9)
        sums = sums.permute(0, 2, 3, 1).reshape(B * C, 9, hh, ww)
        return self.fold(sums).reshape(B, C, hh, ww)

    def _stoken_forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H0, W0 = x.shape
        h, w = self.stoken_size
        x = pad_to_super_tokens(x, h, w)
        H, W = x.shape[-2], x.shape[-1]
        hh, ww = H // h, W // w

        stokens = F.adaptive_avg_pool2d(x, (hh, ww))  # initial super tokens: cell means
        pixels = x.reshape(B, C, hh, h, ww, w).permute(0, 2, 4, 3, 5, 1).reshape(B, hh * ww, h * w, C)

        # The association is not differentiated (official: under no_grad); detached inputs do the same and
        # also hold in a torch.fx graph, which does not record grad-mode context managers.
        fixed = pixels.detach()
        stokens = stokens.detach()
        affinity = (fixed @ self._candidates(stokens) * self.scale).softmax(-1)  # (B, hh*ww, h*w, 9)
        affinity_sum = self.fold(affinity.sum(2).transpose(1, 2).reshape(B, 9, hh, ww))
        for _ in range(self.n_iter - 1):
            stokens = self._aggregate(fixed, affinity, hh, ww) / (affinity_sum + 1e-12)
            affinity = (fixed @ self._candidates(stokens) * self.scale).softmax(-1)
            affinity_sum = self.fold(affinity.sum(2).transpose(1, 2).reshape(B, 9, hh, ww))

        stokens = self._aggregate(pixels, affinity, hh, ww) / (affinity_sum + 1e-12)
        stokens = self.stoken_refine(stokens)

        out = self._candidates(stokens) @ affinity.transpose(-1, -2)  # (B, hh*ww, C, h*w)
        out = out.reshape(B, hh, ww, C, h, w).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)
        return out[:, :, :H0, :W0]


class SViTBlock(nn.Module):
    """Conv position encoding, then pre-norm STA (LayerNorm) and ConvFFN (BatchNorm), optional layer scale."""

    __constants__ = ["layerscale"]

    def __init__(self, dim: int, stoken_size: int | tuple[int, int], n_iter: int = 1, num_heads: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = False, qk_scale: float | None = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, layerscale: bool = False,
                 init_values: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.layerscale = layerscale
        self.pos_embed = ResDWConv(dim, 3, **dd)
        self.norm1 = ChannelLayerNorm(dim, eps=1e-6, attr="norm", **dd)
        self.attn = SuperTokenAttention(dim, stoken_size=stoken_size, n_iter=n_iter, num_heads=num_heads,
                                        qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                        proj_drop=drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, **dd)
        self.mlp2 = ConvFFN(dim, int(dim * mlp_ratio), drop=drop, **dd)
        if layerscale:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(1, dim, 1, 1, **dd))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(1, dim, 1, 1, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(x)
        if self.layerscale:
            x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
            return x + self.drop_path(self.gamma_2 * self.mlp2(self.norm2(x)))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp2(self.norm2(x)))


class ConvDownsample(nn.Module):
    """3x3 stride-2 conv + BatchNorm between stages."""

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, 2, 1, **dd), nn.BatchNorm2d(out_chs, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvStem(nn.Module):
    """Stride-4 stem: four 3x3 convs, each followed by GELU then BatchNorm (official order)."""

    def __init__(self, in_chans: int, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        half = dim // 2
        layers: list[nn.Module] = []
        for cin, cout, stride in ((in_chans, half, 2), (half, half, 1), (half, dim, 2), (dim, dim, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, **dd), nn.GELU(), nn.BatchNorm2d(cout, **dd)]
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SViTStage(nn.Module):
    """Blocks at one resolution, then (except in the last stage) the downsample to the next one."""

    def __init__(self, dim: int, out_dim: int | None, drop_path: list[float], device=None, dtype=None,
                 **block_kwargs: Any) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False  # one block per drop-path rate
        self.blocks = nn.ModuleList([SViTBlock(dim, drop_path=dp, **block_kwargs, **dd) for dp in drop_path])
        self.downsample = ConvDownsample(dim, out_dim, **dd) if out_dim is not None else nn.Identity()

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's blocks (its feature map, before the downsample)."""
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class SViT(nn.Module):
    """The hierarchical super-token vision transformer with the 1x1-conv/BN/Swish head (official STViT)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: tuple[int, ...] = (64, 128, 320, 512), depths: tuple[int, ...] = (3, 5, 9, 3),
                 num_heads: tuple[int, ...] = (1, 2, 5, 8), n_iter: tuple[int, ...] = (1, 1, 1, 1),
                 stoken_size: tuple[int, ...] = (8, 4, 1, 1), projection: int = 1024, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layerscale: tuple[bool, ...] = (False, False, False, False), init_values: float = 1e-6,
                 allow_padding: bool = False, global_pool: str = "avg", device=None, dtype=None) -> None:
        super().__init__()
        n = len(depths)
        if any(len(v) != n for v in (embed_dim, num_heads, n_iter, stoken_size, layerscale)):
            raise ValueError("embed_dim, depths, num_heads, n_iter, stoken_size and layerscale need one "
                             "entry per stage")
        dd = dict(device=device, dtype=dtype)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = tuple(embed_dim)
        self.num_features = self.head_hidden_size = projection
        self.allow_padding = allow_padding
        self.size_multiple = _size_multiple(stoken_size)

        self.patch_embed = ConvStem(in_chans, embed_dim[0], **dd)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay
        self.layers = nn.ModuleList()
        for i in range(n):
            self.layers.append(SViTStage(
                embed_dim[i], embed_dim[i + 1] if i < n - 1 else None,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], stoken_size=stoken_size[i],
                n_iter=n_iter[i], num_heads=num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, layerscale=layerscale[i],
                init_values=init_values, **dd))
        # The official head: 1x1 projection + BN + Swish, pooling, linear classifier.
        self.proj = nn.Conv2d(embed_dim[-1], projection, 1, **dd)
        self.norm = nn.BatchNorm2d(projection, **dd)
        self.swish = nn.SiLU()
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head = nn.Linear(projection, num_classes, **dd) if num_classes > 0 else nn.Identity()
        # Stage features: the last block of each stage (each ``layers.i`` ends with the downsample).
        self.feature_info = [
            dict(num_chs=embed_dim[i], reduction=4 * 2**i, module=f"layers.{i}.blocks.{depths[i] - 1}")
            for i in range(n)]
        self.apply(init_vit_linear)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New linear classifier (on the model's device and dtype); ``global_pool=''`` keeps the spatial map."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        ref = self.patch_embed.proj[0].weight
        self.head = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` if this model can take it, else ValueError (rank, channels, or sizes needing padding)."""
        multiple = 1 if self.allow_padding else self.size_multiple
        return check_image(x, self.in_chans, multiple, "SViT", " so every stage map splits into whole super "
                           "tokens (allow_padding=True runs the official zero-padding path)")

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage maps (after each stage's blocks, NCHW) and, unless ``intermediates_only``, the final features.

        ``norm`` is accepted for timm's interface; SViT has no norm that applies to stage maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"SViT intermediates are NCHW, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        x = self.pos_drop(self.patch_embed(self.check_input(x)))
        stages = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[:max_index + 1]
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if i in take_indices:
                intermediates.append(x)
            x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self.forward_head_features(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last index taken (and its downsample); with ``prune_norm`` also the
        1x1 projection + BN; with ``prune_head`` the classifier. Returns the absolute indices."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.proj, self.norm, self.swish = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """The official 1x1 projection + BN + Swish on the last stage map."""
        return self.swish(self.norm(self.proj(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and the 1x1 projection + BN + Swish: a (B, 1024, H/32, W/32) map."""
        x = self.pos_drop(self.patch_embed(self.check_input(x)))
        for layer in self.layers:
            x = layer(x)
        return self.forward_head_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _size_multiple(stoken_size: tuple[int, ...]) -> int:
    """Smallest input multiple for which every stage map (stride 4 * 2^i) splits into whole super tokens."""
    m = 4 * 2 ** (len(stoken_size) - 1)
    for i, s in enumerate(stoken_size):
        for side in to_2tuple(s):
            m = math.lcm(m, 4 * 2**i * side)
    return m


# Official factories (models/stvit.py): stoken sizes [8, 4, 1, 1], one association iteration, 1024-d
# projection, qkv bias; layer scale (init 1e-6) in stages 3-4 of B and L. drop_path_rate is the README's
# training value (it has no effect in eval mode).
CONFIGS: dict[str, dict[str, Any]] = {
    "svit_small": dict(embed_dim=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
                       layerscale=(False, False, False, False), init_values=1e-5, drop_path_rate=0.1),
    "svit_base": dict(embed_dim=(96, 192, 384, 512), depths=(4, 6, 14, 6), num_heads=(2, 3, 6, 8),
                      layerscale=(False, False, True, True), init_values=1e-6, drop_path_rate=0.4),
    "svit_large": dict(embed_dim=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(2, 3, 7, 10),
                       layerscale=(False, False, True, True), init_values=1e-6, drop_path_rate=0.6),
}
for _cfg in CONFIGS.values():
    _cfg.update(n_iter=(1, 1, 1, 1), stoken_size=(8, 4, 1, 1), projection=1024, mlp_ratio=4.0, qkv_bias=True)


def _timm_cfg() -> dict[str, Any]:
    """timm pretrained_cfg: DeiT-style eval transform at 224 (resize 256, centre crop, bicubic)."""
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="patch_embed.proj.0", classifier="head", license="mit",
                paper_ids="arXiv:2211.11167", origin_url="https://github.com/hhb072/STViT")


default_cfgs = generate_default_cfgs({name: _timm_cfg() for name in CONFIGS})


def _create_timm(name: str, pretrained: bool = False, **kwargs: Any) -> SViT:
    """timm entry point: the official config, overridable by keyword; no hub weights exist."""
    if pretrained:
        raise ValueError(f"{name} has no timm/hub weights; download the official file (Google Drive) and "
                         f"load it with glocal.zoo.create_model({name!r}, weights=PATH)")
    return build_model_with_cfg(SViT, name, pretrained=False, **{**CONFIGS[name], **kwargs},
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"))


@register_model
def svit_small(pretrained: bool = False, **kwargs: Any) -> SViT:
    """SViT-S: 25M params, 4.4 GMACs, 83.6% top-1 (official README)."""
    return _create_timm("svit_small", pretrained, **kwargs)


@register_model
def svit_base(pretrained: bool = False, **kwargs: Any) -> SViT:
    """SViT-B: 52M params, 9.9 GMACs, 84.8% top-1 (official README)."""
    return _create_timm("svit_base", pretrained, **kwargs)


@register_model
def svit_large(pretrained: bool = False, **kwargs: Any) -> SViT:
    """SViT-L: 95M params, 15.6 GMACs, 85.3% top-1 (official README)."""
    return _create_timm("svit_large", pretrained, **kwargs)


_DRIVE = "https://drive.google.com/drive/folders/1uaT5OarQd9iPrnFufHocHpM3zhyTcetB"


def _variant(name: str, size: str, params: int, top1: float, gmacs: float, top1_384: float,
             gmacs_384: float) -> Variant:
    """A registry variant; the numbers are the official README's Results table (same as the paper's)."""
    return Variant(
        name=name,
        builder=SViT,
        kwargs=dict(CONFIGS[name]),
        preprocessing=Preprocessing.from_timm(name),  # one definition: the timm pretrained cfg registered above
        weights=(
            WeightSource(description="official ImageNet-1K checkpoint, 224 (DeiT training dict; Google Drive "
                                     "folder, file named in the README)", url=_DRIVE,
                         filename=f"stvit-{size}-224.pth", layout="official"),
            WeightSource(description="official ImageNet-1K checkpoint fine-tuned at 384 (evaluate at 384, "
                                     "crop_pct 1.0)", url=_DRIVE, filename=f"stvit-{size}-384.pth",
                         layout="official"),
        ),
        paper_metrics=(
            PaperMetric("ImageNet-1K", "top1", top1, "224x224, official README Results table"),
            PaperMetric("ImageNet-1K", "gmacs", gmacs, "224x224, README 'FLOPs' (multiply-adds)"),
            PaperMetric("ImageNet-1K", "top1", top1_384, "384x384, fine-tuned stvit-*-384.pth checkpoint"),
            PaperMetric("ImageNet-1K", "gmacs", gmacs_384, "384x384, README 'FLOPs' (multiply-adds)"),
        ),
        params=params,  # nn.Parameters; the fold/unfold kernels are buffers (as in the authors' count)
        resolution_multiple=32,
        resolutions=(224, 384),
        notes="Official eval transform: resize 256 + centre crop 224 (crop_pct 0.875); at 384 resize 384 + "
              "crop 384 (crop_pct 1.0). Sizes that are not multiples of 32 need allow_padding=True.",
    )


CARD = register(ModelCard(
    family="svit",
    display_name="SViT",
    task="classification",
    paper_title="Vision Transformer with Super Token Sampling",
    arxiv_id="2211.11167",
    official_repo="https://github.com/hhb072/STViT",
    license="MIT",  # per the header of models/stvit.py; the repository has no LICENSE file
    default_variant="svit_small",
    aliases=("stvit", "super_token_vit", "super_token_vision_transformer"),
    description="Super token attention: pixels are softly assigned to a coarse grid of super tokens, which "
                "attend to each other globally and are mapped back, giving early stages global context.",
    variants=(
        _variant("svit_small", "small", 25_495_624, 83.6, 4.4, 85.0, 14.1),
        _variant("svit_base", "base", 51_691_288, 84.8, 9.9, 86.0, 32.5),
        _variant("svit_large", "large", 94_971_096, 85.3, 15.6, 86.4, 49.7),
    ),
))
