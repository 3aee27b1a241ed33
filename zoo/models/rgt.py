"""RGT (ICLR 2024): Recursive Generalization Transformer for image super-resolution.

Residual groups of blocks that alternate two attentions, each followed by a spatial-gate MLP and joined by
hybrid adaptive integration (HAI: the block input is added back scaled by a learned per-channel ``gamma``):

- **L-SA** (even block index): CAT-style rectangle-window attention. The channels are split in two
  halves; one half attends inside 8x32 (rows x cols) windows, the other inside 32x8 windows, each with
  half the heads and a dynamic relative-position bias (a small MLP over the (dy, dx) table). Every other
  L-SA block (by group parity) shifts the windows by half a window and masks across the wrap-around
  regions. A depthwise 3x3 conv of V is added to the attention output.
- **RG-SA** (odd block index): recursive generalisation. A depthwise 4x4 stride-4 conv is applied T times
  to get a small representative map, then depthwise 3x3 + 1x1 conv to C/2 + LayerNorm + GELU; queries of
  all tokens (C -> C/2) cross-attend to keys (C/2) and values (C/2 -> C) of that map, with a depthwise 3x3
  positional conv added to V. In eval T = max(floor(log4(H/16)), floor(log4(W/16)), 2).

The state dict equals the official ``basicsr/archs/rgt_arch.py`` (zhengchen1999/RGT @ 01b4379d), including
the persistent buffers its checkpoints carry: ``rpe_biases`` and ``relative_position_index`` per window
branch, and ``attn_mask_0/1`` on shifted L-SA blocks, computed for the 64x64 training map. For other map
sizes the masks are computed at run time (as the official code does); the stored buffers stay untouched.

Input: RGB in [0, 1], any H, W. As in the official test path (``use_chop: False``) the network runs at the
input size: L-SA zero-pads q/k/v to a multiple of 32 internally and crops back. Only inputs the official
network rejects (a side < 16, or a short side below the 4**T the RG-SA recursion needs) are padded at the
bottom/right (reflect, replicate where reflect cannot reach) and the output is cropped to scale x input.
The DIV2K RGB mean is subtracted and added back inside (``img_range`` 1); the output is not clamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

from glocal.zoo.layers.init import init_vit_linear
from glocal.zoo.layers.inputs import InputError, check_image_batch
from glocal.zoo.layers.padding import crop_to, pad_bottom_right
from glocal.zoo.layers.windows import shifted_window_mask, window_attention_bias
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

__all__ = ["RGT", "rpe_bias_table", "shifted_window_masks", "recursion_steps", "min_input_size"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

# ----------------------------------------------------------------------------------------------------
# Pure helpers: windows, position tables, masks, recursion depth
# ----------------------------------------------------------------------------------------------------

def rpe_bias_table(h_sp: int, w_sp: int) -> torch.Tensor:
    """All (dy, dx) offsets inside an h_sp x w_sp window, dy-major: float32 [(2h_sp-1)(2w_sp-1), 2]."""
    dy = torch.arange(1 - h_sp, h_sp)
    dx = torch.arange(1 - w_sp, w_sp)
    grid = torch.stack(torch.meshgrid(dy, dx, indexing="ij"))
    return grid.flatten(1).transpose(0, 1).contiguous().float()


def shifted_window_masks(h: int, w: int, split_size: Sequence[int], shift_size: Sequence[int],
                         device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of both L-SA branches (official ``L_SA.calculate_mask``); h, w multiples of max(split_size).

    Branch 0 uses split_size[0] x split_size[1] windows shifted by shift_size; branch 1 the transposed ones.
    """
    s0, s1 = split_size
    t0, t1 = shift_size
    return (shifted_window_mask(h, w, (s0, s1), (t0, t1), device),
            shifted_window_mask(h, w, (s1, s0), (t1, t0), device))


def recursion_steps(h: int, w: int, training: bool = False) -> int:
    """RG-SA recursion depth T, with the official float expression (training: log4 of H/4; eval: of H/16, >= 2)."""
    if training:
        return max(int(math.log(h // 4, 4)), int(math.log(w // 4, 4)))
    return max(int(math.log(h // 16, 4)), int(math.log(w // 16, 4)), 2)


def min_input_size(h: int, w: int, training: bool = False) -> tuple[int, int]:
    """Smallest (H', W') >= (h, w) the official network runs at: sides >= 16 (4 in training) and >= 4**T."""
    floor = 4 if training else 16
    h, w = max(h, floor), max(w, floor)
    side = 4 ** recursion_steps(h, w, training)
    return max(h, side), max(w, side)


def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W) as a channels-last view (the official ``rearrange``; same conv kernels)."""
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------
# Modules (official names and registration order)
# ----------------------------------------------------------------------------------------------------

class Gate(nn.Module):
    """Spatial gate: the first half of the channels times a depthwise conv of the LayerNormed second half."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        b, n, c = x2.shape
        x2 = self.conv(self.norm(x2).transpose(1, 2).contiguous().view(b, c, h, w)).flatten(2).transpose(1, 2)
        return x1 * x2


class MLP(nn.Module):
    """Linear -> GELU -> spatial gate (halves the width) -> Linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.sg = Gate(hidden_features // 2)
        self.fc2 = nn.Linear(hidden_features // 2, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.sg(x, h, w))
        return self.drop(self.fc2(x))


class DynamicPosBias(nn.Module):
    """Relative-position bias from an MLP over (dy, dx) (CrossFormer), non-residual as RGT builds it."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def forward(self, biases: torch.Tensor) -> torch.Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class WindowAttention(nn.Module):
    """Multi-head attention inside rectangle windows; ``idx`` 0: split[0] x split[1], 1: transposed."""

    def __init__(self, dim: int, idx: int, split_size: Sequence[int] = (8, 8), num_heads: int = 6,
                 attn_drop: float = 0.0, qk_scale: float | None = None) -> None:
        super().__init__()
        if idx not in (0, 1):
            raise ValueError(f"window branch index must be 0 or 1, got {idx}")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.h_sp, self.w_sp = (split_size[0], split_size[1]) if idx == 0 else (split_size[1], split_size[0])
        # DynamicPosBias gets dim // 4 and divides by 4 again: pos_dim = dim // 16 (official).
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.register_buffer("rpe_biases", rpe_bias_table(self.h_sp, self.w_sp))
        self.register_buffer("relative_position_index", get_relative_position_index(self.h_sp, self.w_sp))
        self.attn_drop = nn.Dropout(attn_drop)

    def _to_windows(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, H*W, C) -> (B*nW, heads, N, C/heads)."""
        b, _, c = t.shape
        t = window_partition(t.reshape(b, h, w, c), (self.h_sp, self.w_sp))
        return t.reshape(-1, self.h_sp * self.w_sp, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) bias of every token pair in a window."""
        n = self.h_sp * self.w_sp
        pos = self.pos(self.rpe_biases)
        return pos[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, qkv: torch.Tensor, h: int, w: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """qkv (3, B, H*W, C) -> (B, H, W, C); ``mask`` (nW, N, N) for shifted windows."""
        b, length, c = qkv[0].shape
        if length != h * w:
            raise InputError(f"token count {length} does not match the map size {h}x{w}")
        q, k, v = (self._to_windows(t, h, w) for t in (qkv[0], qkv[1], qkv[2]))
        attn_mask = window_attention_bias(self.position_bias(), mask, q.shape[0], q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(-1, self.h_sp * self.w_sp, c)
        return window_reverse(x, (self.h_sp, self.w_sp), h, w)


def is_shifted(rs_id: int, idx: int) -> bool:
    """Whether L-SA block ``idx`` of residual group ``rs_id`` shifts its windows (official rule)."""
    return (rs_id % 2 == 0 and idx > 0 and (idx - 2) % 4 == 0) or (rs_id % 2 != 0 and idx % 4 == 0)


class L_SA(nn.Module):  # noqa: N801 - official class name
    """Local self-attention in two rectangle-window branches (+ depthwise conv of V), optionally shifted."""

    def __init__(self, dim: int, num_heads: int, split_size: Sequence[int] = (2, 4), shift_size: Sequence[int] = (1, 2),
                 qkv_bias: bool = False, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 idx: int = 0, reso: int = 64, rs_id: int = 0) -> None:
        super().__init__()
        if not (0 <= shift_size[0] < split_size[0] and 0 <= shift_size[1] < split_size[1]):
            raise ValueError(f"shift_size {tuple(shift_size)} must lie in [0, split_size {tuple(split_size)})")
        self.split_size = tuple(split_size)
        self.shift_size = tuple(shift_size)
        self.patches_resolution = reso
        self.shifted = is_shifted(rs_id, idx)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.attns = nn.ModuleList([
            WindowAttention(dim // 2, idx=i, split_size=split_size, num_heads=num_heads // 2,
                            attn_drop=attn_drop, qk_scale=qk_scale)
            for i in range(2)])
        if self.shifted:
            m0, m1 = shifted_window_masks(reso, reso, self.split_size, self.shift_size)
            self.register_buffer("attn_mask_0", m0)
            self.register_buffer("attn_mask_1", m1)
        else:
            self.register_buffer("attn_mask_0", None)
            self.register_buffer("attn_mask_1", None)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def _masks(self, h: int, w: int, device: torch.device,
               cache: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored masks at the build resolution, otherwise computed for (h, w) (shared through ``cache``)."""
        if h == self.patches_resolution and w == self.patches_resolution:
            return self.attn_mask_0, self.attn_mask_1
        key = (h, w, self.split_size, self.shift_size)
        if cache is not None and key in cache:
            return cache[key]
        masks = shifted_window_masks(h, w, self.split_size, self.shift_size, device)
        if cache is not None:
            cache[key] = masks
        return masks

    def forward(self, x: torch.Tensor, h: int, w: int, mask_cache: dict | None = None) -> torch.Tensor:
        b, length, c = x.shape
        qkv = self.qkv(x).reshape(b, -1, 3, c).permute(2, 0, 1, 3)  # 3, B, L, C
        v = qkv[2].transpose(-2, -1).contiguous().view(b, c, h, w)
        # zero-pad q, k, v at the bottom/right to a multiple of the longest window side
        m = max(self.split_size)
        pad_b, pad_r = (m - h % m) % m, (m - w % m) % m
        hp, wp = h + pad_b, w + pad_r
        qkv = pad_bottom_right(qkv.reshape(3 * b, h, w, c).permute(0, 3, 1, 2), pad_b, pad_r, mode="constant")
        qkv = qkv.reshape(3, b, c, -1).transpose(-2, -1)  # 3, B, Hp*Wp, C
        half = c // 2
        if self.shifted:
            qkv = qkv.view(3, b, hp, wp, c)
            s0, s1 = self.shift_size
            qkv_0 = torch.roll(qkv[..., :half], shifts=(-s0, -s1), dims=(2, 3)).reshape(3, b, hp * wp, half)
            qkv_1 = torch.roll(qkv[..., half:], shifts=(-s1, -s0), dims=(2, 3)).reshape(3, b, hp * wp, half)
            mask_0, mask_1 = self._masks(hp, wp, x.device, mask_cache)
            x1 = torch.roll(self.attns[0](qkv_0, hp, wp, mask=mask_0), shifts=(s0, s1), dims=(1, 2))
            x2 = torch.roll(self.attns[1](qkv_1, hp, wp, mask=mask_1), shifts=(s1, s0), dims=(1, 2))
        else:
            x1 = self.attns[0](qkv[..., :half], hp, wp)
            x2 = self.attns[1](qkv[..., half:], hp, wp)
        x1 = x1[:, :h, :w, :].reshape(b, length, half)
        x2 = x2[:, :h, :w, :].reshape(b, length, half)
        lcm = self.get_v(v).permute(0, 2, 3, 1).reshape(b, length, c)
        return self.proj_drop(self.proj(torch.cat([x1, x2], dim=2) + lcm))


class RG_SA(nn.Module):  # noqa: N801 - official class name
    """Recursive-generalisation self-attention: all tokens cross-attend to a recursively pooled map."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, c_ratio: float = 0.5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.cr = int(dim * c_ratio)  # reduced channel width of q and k
        self.scale = qk_scale or (dim // num_heads * c_ratio) ** -0.5
        self.reduction1 = nn.Conv2d(dim, dim, kernel_size=4, stride=4, groups=dim)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.conv = nn.Conv2d(dim, self.cr, kernel_size=1, stride=1)
        self.norm_act = nn.Sequential(nn.LayerNorm(self.cr), nn.GELU())
        self.q = nn.Linear(dim, self.cr, bias=qkv_bias)
        self.k = nn.Linear(self.cr, self.cr, bias=qkv_bias)
        self.v = nn.Linear(self.cr, dim, bias=qkv_bias)
        self.cpe = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        steps = recursion_steps(h, w, self.training)
        rh, rw = h // 4 ** steps, w // 4 ** steps
        if rh < 1 or rw < 1:
            raise InputError(f"RG-SA needs sides >= {4 ** steps} for a {h}x{w} map (recursion depth {steps})")
        r = x.transpose(1, 2).reshape(b, c, h, w)
        for _ in range(steps):  # the same stride-4 depthwise conv, applied T times
            r = self.reduction1(r)
        r = self.norm_act(self.conv(self.dwconv(r)).flatten(2).transpose(1, 2))  # B, N', C'
        q = self.q(x).reshape(b, n, heads, self.cr // heads).permute(0, 2, 1, 3)
        k = self.k(r).reshape(b, -1, heads, self.cr // heads).permute(0, 2, 1, 3)
        v = self.v(r)  # B, N', C  (channel = head * C/heads + d)
        v = v + self.cpe(v.transpose(1, 2).reshape(b, c, rh, rw)).flatten(2).transpose(1, 2)
        v = v.reshape(b, -1, heads, c // heads).permute(0, 2, 1, 3)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale,  # value heads are twice as wide as q/k's
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """x + attn(norm1 x), + mlp(norm2 .), then HAI: + gamma * block input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 idx: int = 0, rs_id: int = 0, split_size: Sequence[int] = (2, 4), shift_size: Sequence[int] = (1, 2),
                 reso: int = 64, c_ratio: float = 0.5, layerscale_value: float = 1e-4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if idx % 2 == 0:
            self.attn: nn.Module = L_SA(dim, num_heads=num_heads, split_size=split_size, shift_size=shift_size,
                                        qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                        idx=idx, reso=reso, rs_id=rs_id)
        else:
            self.attn = RG_SA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                              attn_drop=attn_drop, proj_drop=drop, c_ratio=c_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim)
        self.norm2 = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(layerscale_value * torch.ones(dim))

    def forward(self, x: torch.Tensor, h: int, w: int, mask_cache: dict | None = None) -> torch.Tensor:
        res = x
        if isinstance(self.attn, L_SA):
            a = self.attn(self.norm1(x), h, w, mask_cache)
        else:
            a = self.attn(self.norm1(x), h, w)
        x = x + self.drop_path(a)
        x = x + self.drop_path(self.mlp(self.norm2(x), h, w))
        return x + res * self.gamma


class ResidualGroup(nn.Module):
    """``depth`` blocks (L-SA at even, RG-SA at odd indices), a 3x3 conv, and a residual."""

    def __init__(self, dim: int, reso: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_paths: Sequence[float] = (), depth: int = 2, rs_id: int = 0,
                 split_size: Sequence[int] = (8, 8), c_ratio: float = 0.5) -> None:
        super().__init__()
        shift = (split_size[0] // 2, split_size[1] // 2)
        self.blocks = nn.ModuleList([
            Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                  drop=drop, attn_drop=attn_drop, drop_path=drop_paths[i], idx=i, rs_id=rs_id,
                  split_size=split_size, shift_size=shift, reso=reso, c_ratio=c_ratio)
            for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, h: int, w: int, mask_cache: dict | None = None) -> torch.Tensor:
        res = x
        for blk in self.blocks:
            x = blk(x, h, w, mask_cache)
        x = self.conv(tokens_to_map(x, h, w)).permute(0, 2, 3, 1).reshape(res.shape)
        return res + x


class Upsample(nn.Sequential):
    """Conv + PixelShuffle: two x2 stages for x4 (``upsample.0``, ``upsample.2``), one stage for x2 / x3."""

    def __init__(self, scale: int, num_feat: int) -> None:
        m: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"RGT supports scales 2^n and 3, got {scale}")
        super().__init__(*m)


class _ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); keeps the official ``before_RG.1`` index of the LayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class RGT(nn.Module):
    """Recursive Generalization Transformer (official ``RGT`` constructor arguments and state dict)."""

    def __init__(self, img_size: int = 64, in_chans: int = 3, embed_dim: int = 180,
                 depth: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (2, 2, 2, 2),
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 upscale: int = 2, img_range: float = 1.0, split_size: Sequence[int] = (8, 8),
                 c_ratio: float = 0.5) -> None:
        super().__init__()
        num_feat = 64
        self.img_range = img_range
        self.upscale = upscale
        self.in_chans = in_chans
        # a plain attribute, not a buffer: the official checkpoints do not carry it
        self.mean = (torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3
                     else torch.zeros(1, 1, 1, 1))
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.num_features = self.embed_dim = embed_dim
        self.before_RG = nn.Sequential(_ToTokens(), nn.LayerNorm(embed_dim))
        dpr = torch.linspace(0, drop_path_rate, sum(depth)).tolist()
        self.layers = nn.ModuleList([
            ResidualGroup(dim=embed_dim, reso=img_size, num_heads=num_heads[i], mlp_ratio=mlp_ratio,
                          qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                          drop_paths=dpr[sum(depth[:i]):sum(depth[:i + 1])], depth=depth[i], rs_id=i,
                          split_size=split_size, c_ratio=c_ratio)
            for i in range(len(depth))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.apply(init_vit_linear)  # the official init

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.before_RG(x)
        cache: dict = {}  # run-time shift masks, shared by the shifted blocks of this forward
        for layer in self.layers:
            x = layer(x, h, w, cache)
        return tokens_to_map(self.norm(x), h, w)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """The official forward (mean shift, body, upsampler); needs H, W >= :func:`min_input_size`."""
        mean = self.mean.to(x)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LR RGB in [0, 1], any size -> SR RGB of ``upscale`` times the size."""
        check_image_batch(x, self.in_chans, "RGT")
        h, w = x.shape[-2:]
        hp, wp = min_input_size(h, w, self.training)
        x = pad_bottom_right(x, hp - h, wp - w)
        return crop_to(self.forward_body(x), (h, w), self.upscale)


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
# Paper Table 2 (= README figs/T1.png), no self-ensemble; PSNR/SSIM on Y, crop = scale.
_TABLE2: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("rgt_s", 2): ((38.56, 0.9627), (34.77, 0.9270), (32.59, 0.9050), (34.32, 0.9457), (40.18, 0.9805)),
    ("rgt", 2): ((38.59, 0.9628), (34.83, 0.9272), (32.62, 0.9050), (34.47, 0.9467), (40.34, 0.9808)),
    ("rgt_s", 3): ((35.11, 0.9328), (31.05, 0.8548), (29.53, 0.8164), (30.18, 0.8884), (35.39, 0.9548)),
    ("rgt", 3): ((35.15, 0.9329), (31.13, 0.8550), (29.55, 0.8165), (30.28, 0.8899), (35.55, 0.9553)),
    ("rgt_s", 4): ((32.98, 0.9047), (29.18, 0.7966), (27.98, 0.7509), (27.89, 0.8347), (32.38, 0.9281)),
    ("rgt", 4): ((33.12, 0.9060), (29.23, 0.7972), (28.00, 0.7513), (27.98, 0.8369), (32.50, 0.9291)),
}
# README "Models" table: params (M) and FLOPs (G, multiply-adds) for a 3x512x512 output, x4 only.
_README_COST = {"rgt_s": (10.20, 193.08), "rgt": (13.37, 251.07)}
_DEPTH = {"rgt_s": 6, "rgt": 8}
_PARAMS = {("rgt_s", 2): 10_051_055, ("rgt_s", 3): 10_235_695, ("rgt_s", 4): 10_198_767,
           ("rgt", 2): 13_217_831, ("rgt", 3): 13_402_471, ("rgt", 4): 13_365_543}
_DRIVE = {"rgt_s": "https://drive.google.com/drive/folders/1j46WHs1Gvyif1SsZXKy1Y1IrQH0gfIQ1",
          "rgt": "https://drive.google.com/drive/folders/1zxrr31Kp2D_N9a-OUAPaJEn_yTaSXTfZ"}
_Y = "paper Table 2 / README, Y channel (BT.601), crop = scale, no self-ensemble"


def _variant(size: str, scale: int) -> Variant:
    """One RGT configuration (official options/test/test_RGT{,_S}_x{scale}.yml)."""
    metrics = [m for name, (p, s) in zip(_SETS, _TABLE2[(size, scale)], strict=True)
               for m in (PaperMetric(name, "psnr", p, _Y), PaperMetric(name, "ssim", s, _Y))]
    if scale == 4:
        params_m, gmacs = _README_COST[size]
        metrics += [PaperMetric("paper", "params_m", params_m, "README Models table"),
                    PaperMetric("paper", "gmacs", gmacs, "README 'FLOPs' (multiply-adds) for a 3x512x512 output")]
    folder = "RGT-S" if size == "rgt_s" else "RGT"
    file = f"RGT_S_x{scale}.pth" if size == "rgt_s" else f"RGT_x{scale}.pth"
    lr = {2: 256, 3: 170, 4: 128}[scale]  # about a 512x512 output, the README's FLOPs setting
    return Variant(
        name=f"{size}_x{scale}",
        builder=RGT,
        kwargs=dict(upscale=scale, in_chans=3, img_size=64, img_range=1.0, depth=(6,) * _DEPTH[size],
                    embed_dim=180, num_heads=(6,) * _DEPTH[size], mlp_ratio=2.0, split_size=(8, 32), c_ratio=0.5),
        preprocessing=Preprocessing(input_size=(3, lr, lr), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                    interpolation="bicubic", crop_pct=1.0),
        weights=(WeightSource(
            description=f"official {folder} x{scale} BasicSR checkpoint ('params'), Google Drive / Baidu; "
                        f"experiments/pretrained_models/{folder}/{file}",
            url=_DRIVE[size], filename=file, layout="official"),),
        paper_metrics=tuple(metrics),
        params=_PARAMS[(size, scale)],
        scale=scale,
        resolution_multiple=1,
        resolutions=(lr * scale,),  # the harness's SR resolution is the output side
        notes="Runs at the input size like the official test path (L-SA pads to 32 internally); inputs with a "
              "side < 16 or a short side below 4**T are padded and cropped back.",
    )


CARD = register(ModelCard(
    family="rgt",
    display_name="RGT",
    task="super_resolution",
    paper_title="Recursive Generalization Transformer for Image Super-Resolution",
    arxiv_id="2303.06373",
    official_repo="https://github.com/zhengchen1999/RGT",
    license="Apache-2.0",
    default_variant="rgt_x4",  # the README's featured setting (x4 table) and its default test model (RGT)
    aliases=("recursive_generalization_transformer",),
    description="Alternates rectangle-window local attention with recursive-generalisation attention, where all "
                "tokens cross-attend to a recursively pooled summary of the whole image.",
    variants=tuple(_variant(size, scale) for size in ("rgt_s", "rgt") for scale in (2, 3, 4)),
))
