"""VGGT (Visual Geometry Grounded Transformer, CVPR 2025): feed-forward cameras, depth, point maps and tracks.

The network is rebuilt here because VGGT is on no package registry. It is timm's building blocks
(``PatchEmbed``, ``Block``, ``Attention``, ``Mlp``, ``LayerScale``) arranged under the official module
names, so the official files (``facebook/VGGT-1B`` ``model.pt``) load strictly, key for key and in order:

* ``aggregator.patch_embed``: DINOv2 ViT-L/14 with 4 registers (timm blocks, official names);
* ``aggregator``: 24 frame blocks (attention within a frame) alternating with 24 global blocks (attention
  over all frames), 2D RoPE (base 100) after QK-norm, LayerScale 0.01; per frame the tokens are
  [camera, 4 registers, patches], and frame 0 gets its own camera/register tokens (the world frame);
* heads: camera (4 AdaLN-modulated refinement iterations, ``absT_quaR_FoV``), DPT depth and point map,
  CoTracker-style track head.

Outputs follow the official ``VGGT.forward``; :func:`pose_encoding_to_extri_intri` and
:func:`unproject_depth` turn them into OpenCV camera-from-world extrinsics, intrinsics and world points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention, Block

from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

PATCH = 14
N_REGISTERS = 4
SPECIAL = 1 + N_REGISTERS  # camera token + registers precede the patches of every frame
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGGTInputError(ValueError):
    """Input the VGGT family cannot run on (shape, frame count, sides not multiples of the patch)."""


# --------------------------------------------------------------------------------------------- configuration


ALL_HEADS = ("camera", "point", "depth", "track")  # the official order of the prediction heads


@dataclass(frozen=True)
class VGGTConfig:
    """Shapes of one VGGT build (the 1B defaults are the official class defaults)."""

    img_size: int = 518
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    encoder_depth: int = 24
    encoder_heads: int = 16
    camera_heads: int = 16
    camera_depth: int = 4
    dpt_features: int = 256
    dpt_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    track_features: int = 128
    track_hidden: int = 384
    track_heads: int = 8
    track_depth: int = 6
    track_virtual: int = 64
    track_levels: int = 7  # correlation pyramid levels; the feature map needs >= 2^(levels-1) pixels per side
    heads: tuple[str, ...] = ALL_HEADS

    @property
    def grid(self) -> int:
        return self.img_size // PATCH


TINY = VGGTConfig(img_size=56, embed_dim=32, depth=4, num_heads=2, encoder_depth=2, encoder_heads=2,
                  camera_heads=4, camera_depth=2, dpt_features=16, dpt_channels=(8, 16, 32, 32),
                  dpt_layers=(0, 1, 2, 3), track_features=16, track_hidden=32, track_heads=4, track_depth=2,
                  track_virtual=8, track_levels=2)


# --------------------------------------------------------------------------------------------- 2D RoPE


def rope_angles(dim: int, n_pos: int, device, dtype, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [n_pos, dim] for one axis: frequencies base^(-2j/dim), duplicated (rotate-half layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, device=device).float() / dim)
    angles = torch.outer(torch.arange(n_pos, device=device, dtype=torch.float32), inv_freq).to(dtype)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rope2d(x: torch.Tensor, pos: torch.Tensor, base: float = 100.0) -> torch.Tensor:
    """Rotate heads x [B, h, N, D] by 2D integer positions pos [B, N, 2] (row on the first D/2, column on the rest)."""
    half = x.shape[-1] // 2
    cos, sin = rope_angles(half, int(pos.max()) + 1, x.device, x.dtype, base)
    out = []
    for axis, part in enumerate(x.chunk(2, dim=-1)):
        c = F.embedding(pos[..., axis], cos)[:, None]
        s = F.embedding(pos[..., axis], sin)[:, None]
        out.append(part * c + _rotate_half(part) * s)
    return torch.cat(out, dim=-1)


def token_positions(n: int, rows: int, cols: int, device) -> torch.Tensor:
    """[n, SPECIAL + rows*cols, 2] positions: specials at (0, 0), patch (i, j) at (i + 1, j + 1)."""
    grid = torch.cartesian_prod(torch.arange(rows, device=device), torch.arange(cols, device=device)) + 1
    pos = torch.cat([torch.zeros(SPECIAL, 2, dtype=grid.dtype, device=device), grid])
    return pos[None].expand(n, -1, -1).clone()


# --------------------------------------------------------------------------------------------- blocks


class RopeAttention(Attention):
    """timm's attention with VGGT's 2D RoPE after QK-norm; keys/values may come from other states (``kv``)."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, kv: torch.Tensor | None = None,
                kv_pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:  # timm's Block passes these; VGGT never masks
            raise ValueError("VGGT attention takes no mask")
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        if kv is None:  # the official fused path, bit for bit
            q, k, v = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            kv_pos = pos
        else:  # queries from every token, keys/values from the given states: same weight rows, no new parameters
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:C], None if b is None else b[:C]).reshape(B, N, h, d).transpose(1, 2)
            k, v = F.linear(kv, w[C:], None if b is None else b[C:]).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if pos is not None:
            q, k = apply_rope2d(q, pos), apply_rope2d(k, kv_pos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))

    def glocal_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """Exact multiply-adds (projections + QK^T + AV): the FLOP counter sees no CPU flash-attention kernel."""
        x = inputs[0]
        kv = inputs[2] if len(inputs) > 2 and inputs[2] is not None else x
        B, N, C = x.shape
        M = kv.shape[1]
        return B * (N * C * C + M * C * 2 * C + 2 * N * M * C + N * C * C)


class RopeBlock(Block):
    """timm's pre-norm block whose attention takes positions and optional key/value states.

    ``kv_fn(normed_x) -> (states, positions)`` builds the key/value states from the normalised input (FlashVGGT's
    descriptors); without it the block is VGGT's."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                kv_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        y = self.norm1(x)
        kv, kv_pos = kv_fn(y) if kv_fn is not None else (None, None)
        x = x + self.ls1(self.attn(y, pos, kv, kv_pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _rope_block(dim: int, heads: int) -> RopeBlock:
    return RopeBlock(dim, heads, mlp_ratio=4.0, qkv_bias=True, qk_norm=True, init_values=0.01,
                     norm_layer=nn.LayerNorm, attn_layer=RopeAttention)


# --------------------------------------------------------------------------------------------- DINOv2 encoder


class DinoV2Encoder(nn.Module):
    """DINOv2-reg ViT/14 under the official key names (timm ``PatchEmbed`` and ``Block``); returns patch tokens.

    Same network as timm's ``vit_large_patch14_reg4_dinov2``, whose ``pos_embed`` has no cls row and whose
    registers are ``reg_token``; :func:`convert_timm_dinov2` maps that layout here."""

    def __init__(self, img_size: int, dim: int, depth: int, heads: int, n_registers: int = N_REGISTERS):
        super().__init__()
        grid = img_size // PATCH
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, n_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # unused at inference
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=PATCH, in_chans=3, embed_dim=dim,
                                      strict_img_size=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, init_values=1.0, norm_layer=norm,
                                          attn_layer=RopeAttention) for _ in range(depth))  # no positions: plain
        self.norm = norm(dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """cls + grid position embedding resized bicubically (antialiased, float32) to rows x cols."""
        n = self.pos_embed.shape[1] - 1
        m = int(math.isqrt(n))
        if rows * cols == n and rows == cols:
            return self.pos_embed
        pe = self.pos_embed.float()
        grid = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pe[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(rows, cols).to(x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1 + self.register_tokens.shape[1]:]


def convert_timm_dinov2(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """timm ``vit_*_patch14_reg4_dinov2`` keys -> :class:`DinoV2Encoder` keys (cls position folded back out).

    timm adds the cls position to ``cls_token`` at conversion; an all-zero cls row reproduces it exactly."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "fc_norm.")):
            continue
        if key == "reg_token":
            key = "register_tokens"
        elif key == "pos_embed":
            value = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], dim=1)
        out[prefix + key] = value
    out.setdefault(prefix + "mask_token", torch.zeros(1, out[prefix + "cls_token"].shape[-1]))
    return out


# --------------------------------------------------------------------------------------------- aggregator


def _special_tokens(param: torch.Tensor, B: int, S: int, first: bool = True) -> torch.Tensor:
    """(1, 2, X, C) -> (B*S, X, C): index 0 for frame 0 (when this chunk starts the sequence), index 1 otherwise."""
    if first:
        tok = torch.cat([param[:, :1].expand(B, 1, *param.shape[2:]), param[:, 1:].expand(B, S - 1, *param.shape[2:])],
                        dim=1)
    else:
        tok = param[:, 1:].expand(B, S, *param.shape[2:])
    return tok.reshape(B * S, *param.shape[2:])


class Aggregator(nn.Module):
    """Alternating frame/global attention over the DINOv2 patch tokens of S frames.

    ``forward`` returns one entry per layer pair: concat(frame, global) outputs [B, S, P, 2C] for the layers
    in ``keep`` (the heads' inputs) and None elsewhere, as the official code after its memory fix does."""

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_embed = DinoV2Encoder(cfg.img_size, dim, cfg.encoder_depth, cfg.encoder_heads)
        self.frame_blocks = nn.ModuleList(_rope_block(dim, cfg.num_heads) for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(_rope_block(dim, cfg.num_heads) for _ in range(cfg.depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, N_REGISTERS, dim) * 1e-6)
        self.register_buffer("_resnet_mean", torch.tensor(_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.tensor(_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.keep = set(cfg.dpt_layers) | {cfg.depth - 1}
        self.patch_start_idx = SPECIAL

    def embed(self, images: torch.Tensor, first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, S, 3, H, W] in [0, 1] -> tokens [B*S, P, C] and positions [B*S, P, 2]."""
        B, S, _, H, W = images.shape
        x = ((images - self._resnet_mean) / self._resnet_std).reshape(B * S, 3, H, W)
        patches = self.patch_embed(x)
        tokens = torch.cat([_special_tokens(self.camera_token, B, S, first),
                            _special_tokens(self.register_token, B, S, first), patches], dim=1)
        return tokens, token_positions(B * S, H // PATCH, W // PATCH, images.device)

    def global_layer(self, i: int, tokens: torch.Tensor, pos: torch.Tensor, B: int, S: int, ctx: dict) -> torch.Tensor:
        """Global block i over all frames' tokens (B, S*P, C); FlashVGGT overrides this one method."""
        P, C = tokens.shape[-2:]
        out = self.global_blocks[i](tokens.reshape(B, S * P, C), pos=pos.reshape(B, S * P, 2))
        return out.reshape(B * S, P, C)

    def layer_context(self, tokens: torch.Tensor, B: int, S: int, H: int, W: int) -> dict:
        """Per-forward state shared by the global layers (FlashVGGT: keyframes, grid size)."""
        return {}

    def forward(self, images: torch.Tensor, first: bool = True, ctx: dict | None = None
                ) -> tuple[list[torch.Tensor | None], int]:
        B, S, _, H, W = images.shape
        tokens, pos = self.embed(images, first)
        P, C = tokens.shape[-2:]
        ctx = self.layer_context(tokens, B, S, H, W) if ctx is None else ctx
        outputs: list[torch.Tensor | None] = []
        for i in range(len(self.frame_blocks)):
            tokens = self.frame_blocks[i](tokens, pos=pos)
            frame_out = tokens
            tokens = self.global_layer(i, tokens, pos, B, S, ctx)
            keep = i in self.keep
            outputs.append(torch.cat([frame_out, tokens], dim=-1).reshape(B, S, P, 2 * C) if keep else None)
        return outputs, self.patch_start_idx


# --------------------------------------------------------------------------------------------- camera head


def activate_pose(raw: torch.Tensor) -> torch.Tensor:
    """absT_quaR_FoV activation: translation and quaternion linear, field of view ReLU."""
    return torch.cat([raw[..., :7], F.relu(raw[..., 7:])], dim=-1)


class CameraHead(nn.Module):
    """Iterative camera refinement on the last layer's camera tokens (4 iterations by default)."""

    def __init__(self, dim: int, depth: int = 4, heads: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, init_values=0.01,
                                           norm_layer=nn.LayerNorm, attn_layer=RopeAttention) for _ in range(depth)])
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, 9)

    def forward(self, tokens_list: Sequence[torch.Tensor | None], num_iterations: int = 4) -> list[torch.Tensor]:
        return self.refine(tokens_list[-1][:, :, 0], num_iterations)

    def refine(self, camera_tokens: torch.Tensor, num_iterations: int = 4) -> list[torch.Tensor]:
        """Camera tokens [B, S, 2C] -> activated encodings [B, S, 9] of every iteration."""
        tok = self.token_norm(camera_tokens)
        B, S, _ = tok.shape
        raw, out = None, []
        for _ in range(num_iterations):
            cond = self.empty_pose_tokens.expand(B, S, -1) if raw is None else raw.detach()
            if not torch.is_grad_enabled():  # a parameter view as a module input trips module hooks at inference
                cond = cond.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(cond)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tok) * (1 + scale) + shift) + tok
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw = delta if raw is None else raw + delta
            out.append(activate_pose(raw))
        return out


# --------------------------------------------------------------------------------------------- DPT heads


class ResidualConvUnit(nn.Module):
    """conv2(relu(conv1(relu(x)))) + relu(x): the official unit's in-place ReLU also rewrites its skip input."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    """RefineNet fusion: (skip unit) + residual unit, bilinear (align_corners) resize, 1x1 conv."""

    def __init__(self, ch: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(ch)
        self.resConfUnit2 = ResidualConvUnit(ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


def uv_position_embedding(h: int, w: int, channels: int, aspect: float, device) -> torch.Tensor:
    """The DPT heads' sinusoidal embedding [channels, h, w] of a UV grid spanning the image's aspect ratio."""
    diag = (aspect ** 2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, dtype=torch.float32, device=device)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, dtype=torch.float32, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    parts = []
    for coord in (uu.reshape(-1), vv.reshape(-1)):
        ang = coord.double()[:, None] * omega[None]
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, dim=-1).float().reshape(h, w, channels).permute(2, 0, 1)


class DPTHead(nn.Module):
    """DPT head over four aggregator layers: dense depth or points + confidence, or features (track head)."""

    def __init__(self, dim_in: int, output_dim: int = 4, activation: str = "inv_log", features: int = 256,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024), layers: Sequence[int] = (4, 11, 17, 23),
                 pos_embed: bool = True, feature_only: bool = False, down_ratio: int = 1):
        super().__init__()
        self.layers, self.activation, self.pos_embed = tuple(layers), activation, pos_embed
        self.feature_only, self.down_ratio = feature_only, down_ratio
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in out_channels)
        c = out_channels
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(c[0], c[0], 4, stride=4),
                                            nn.ConvTranspose2d(c[1], c[1], 2, stride=2), nn.Identity(),
                                            nn.Conv2d(c[3], c[3], 3, stride=2, padding=1)])
        self.scratch = nn.Module()
        for i, ch in enumerate(out_channels, 1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        for i in (1, 2, 3, 4):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features, has_residual=i != 4))
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
                                                      nn.Conv2d(32, output_dim, 1))

    def _add_pos(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        emb = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], W / H, x.device)
        return x + 0.1 * emb.to(x.dtype)[None]

    def forward(self, tokens_list: Sequence[torch.Tensor | None], images: torch.Tensor, patch_start_idx: int,
                frames_chunk_size: int = 8):
        """Runs ``frames_chunk_size`` frames at a time (as the official head does; no numerical effect)."""
        S = images.shape[1]
        outs = [self._frames(tokens_list, images, patch_start_idx, s, min(s + frames_chunk_size, S))
                for s in range(0, S, frames_chunk_size)]
        if self.feature_only:
            return torch.cat(outs, dim=1)
        return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

    def _frames(self, tokens_list, images, patch_start_idx: int, s0: int, s1: int):
        B, _, _, H, W = images.shape
        S, ph, pw = s1 - s0, H // PATCH, W // PATCH
        feats = []
        for j, layer in enumerate(self.layers):
            x = self.norm(tokens_list[layer][:, s0:s1, patch_start_idx:].reshape(B * S, ph * pw, -1))
            x = self.projects[j](x.permute(0, 2, 1).reshape(B * S, -1, ph, pw))
            if self.pos_embed:
                x = self._add_pos(x, H, W)
            feats.append(self.resize_layers[j](x))
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(feats, 1))
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.output_conv1(sc.refinenet1(out, l1))
        size = (int(ph * PATCH / self.down_ratio), int(pw * PATCH / self.down_ratio))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = self._add_pos(out, H, W)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])
        out = sc.output_conv2(out).permute(0, 2, 3, 1)
        xyz, conf = out[..., :-1], out[..., -1]
        pred = torch.exp(xyz) if self.activation == "exp" else torch.sign(xyz) * torch.expm1(xyz.abs())
        return pred.reshape(B, S, *pred.shape[1:]), (1 + conf.exp()).reshape(B, S, *conf.shape[1:])


# --------------------------------------------------------------------------------------------- track head


def sincos_grid_embedding(dim: int, h: int, w: int) -> torch.Tensor:
    """[1, dim, h, w] 2D sin-cos embedding (base 10000): first half from the column, second from the row."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        ang = coord.double()[:, None] * omega[None]
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, dim=-1).float().reshape(1, h, w, dim).permute(0, 3, 1, 2)


def flow_embedding(xy: torch.Tensor, C: int) -> torch.Tensor:
    """[..., 2] -> [..., 2C]: interleaved sin/cos of x then y at frequencies k * 1000 / C (k even)."""
    div = torch.arange(0, C, 2, device=xy.device, dtype=torch.float32) * (1000.0 / C)
    out = []
    for axis in (0, 1):
        ang = xy[..., axis:axis + 1] * div
        out.append(torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2))
    return torch.cat(out, dim=-1)


def bilinear_sample(fmap: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample fmap [N, C, H, W] at pixel coordinates (x, y) [N, ..., 2] (align_corners=True)."""
    h, w = fmap.shape[-2:]
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=coords.device, dtype=fmap.dtype)
    return F.grid_sample(fmap, coords.to(fmap.dtype) * scale - 1, align_corners=True, padding_mode=padding_mode)


def sample_points(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """fmap [B, C, H, W], points [B, N, 2] -> [B, N, C]."""
    return bilinear_sample(fmap, xy[:, :, None]).squeeze(-1).permute(0, 2, 1)


class AttnBlock(nn.Module):
    """CoTracker block as VGGT ships it: the residual is added to the normalised input."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x)[0]  # the weights path, as the official call (bit-equal)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block (normalised queries and context; residual on the normalised queries)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm_context, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context)[0]
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Time attention per track and space attention through virtual tracks (CoTracker2's EfficientUpdateFormer)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, heads: int, depth: int, n_virtual: int):
        super().__init__()
        self.virual_tracks = nn.Parameter(torch.randn(1, n_virtual, 1, hidden))  # official spelling
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, out_dim)
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, heads) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, heads) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, T, in_dim] -> [B, N, T, out_dim]."""
        init = self.input_transform(self.input_norm(x))
        B, n_pts, T, _ = init.shape
        nv = self.virual_tracks.shape[1]
        tokens = torch.cat([init, self.virual_tracks.repeat(B, 1, T, 1)], dim=1)
        N = tokens.shape[1]
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        for i, block in enumerate(self.time_blocks):
            tokens = block(tokens.reshape(B * N, T, -1)).reshape(B, N, T, -1)
            if i % every == 0:
                j = i // every
                space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, -1)
                points, virtual = space[:, :N - nv], space[:, N - nv:]
                virtual = self.space_virtual2point_blocks[j](virtual, points)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual)
                tokens = torch.cat([points, virtual], dim=1).reshape(B, T, N, -1).permute(0, 2, 1, 3)
        return self.flow_head(self.output_norm(tokens[:, :n_pts] + init))


def correlation_pyramid(fmaps: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[B, S, C, H, W] -> levels average-pooled by 2 each."""
    out = [fmaps]
    for _ in range(levels - 1):
        B, S, C, H, W = out[-1].shape
        out.append(F.avg_pool2d(out[-1].reshape(B * S, C, H, W), 2, stride=2).reshape(B, S, C, H // 2, W // 2))
    return out


def sample_correlation(pyramid: list[torch.Tensor], feats: torch.Tensor, coords: torch.Tensor, radius: int
                       ) -> torch.Tensor:
    """Correlation of track features [B, S, N, C] with each level, sampled in a (2r+1)^2 window at coords."""
    B, S, N, C = feats.shape
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=coords.device, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)  # (dy, dx) pairs used as (x, y)
    out = []
    for i, fm in enumerate(pyramid):
        H, W = fm.shape[-2:]
        corr = torch.matmul(feats, fm.reshape(B, S, C, H * W)) / math.sqrt(C)
        window = coords.reshape(B * S * N, 1, 1, 2) / 2 ** i + delta.reshape(1, 2 * radius + 1, 2 * radius + 1, 2)
        sampled = bilinear_sample(corr.reshape(B * S * N, 1, H, W), window, padding_mode="zeros")
        out.append(sampled.reshape(B, S, N, -1))
    return torch.cat(out, dim=-1)


class Tracker(nn.Module):
    """VGGT's BaseTrackerPredictor: iterative track refinement from correlation features."""

    def __init__(self, latent: int = 128, hidden: int = 384, heads: int = 8, depth: int = 6, n_virtual: int = 64,
                 stride: int = 2, corr_levels: int = 7, corr_radius: int = 4, max_scale: int = 518):
        super().__init__()
        self.latent, self.stride, self.levels, self.radius = latent, stride, corr_levels, corr_radius
        self.max_scale = max_scale
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden, latent)
        self.transformer_dim = 3 * latent + 4
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateFormer(self.transformer_dim, hidden, latent + 2, heads, depth, n_virtual)
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4):
        """Query points [B, N, 2] (pixels of frame 0), feature maps [B, S, C, h, w] -> tracks, visibility, conf."""
        B, N, _ = query_points.shape
        _, S, C, h, w = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        coords = (query_points / self.stride).reshape(B, 1, N, 2).repeat(1, S, 1, 1)
        start = coords[:, 0].clone()
        feats = sample_points(fmaps[:, 0], coords[:, 0]).unsqueeze(1).repeat(1, S, 1, 1)
        pyramid = correlation_pyramid(fmaps, self.levels)
        pos = sincos_grid_embedding(self.transformer_dim, h, w).to(query_points.device)
        ref = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:2].expand(-1, S - 1, -1)], dim=1)
        preds = []
        for _ in range(iters):
            coords = coords.detach()
            corr = self.corr_mlp(sample_correlation(pyramid, feats, coords, self.radius).permute(0, 2, 1, 3)
                                 .reshape(B * N, S, -1))
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            flow_emb = torch.cat([flow_embedding(flows, self.latent // 2), flows / self.max_scale,
                                  flows / self.max_scale], dim=-1)
            feats_ = feats.permute(0, 2, 1, 3).reshape(B * N, S, self.latent)
            x = torch.cat([flow_emb, corr, feats_], dim=-1)
            x = x + sample_points(pos.expand(B, -1, -1, -1), coords[:, 0]).reshape(B * N, 1, -1)
            x = x + ref.to(x.dtype)
            delta = self.updateformer(x.reshape(B, N, S, -1)).reshape(B * N * S, -1)
            feats_ = self.ffeat_updater(self.ffeat_norm(delta[:, 2:])) + feats_.reshape(B * N * S, -1)
            feats = feats_.reshape(B, N, S, self.latent).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(B, N, S, 2).permute(0, 2, 1, 3)
            coords[:, 0] = start
            preds.append(coords * self.stride)
        flat = feats.reshape(B * S * N, self.latent)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(B, S, N))
        conf = torch.sigmoid(self.conf_predictor(flat).reshape(B, S, N))
        return preds, vis, conf


class TrackHead(nn.Module):
    """DPT feature extractor (half resolution, no position embedding) + tracker."""

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        self.feature_extractor = DPTHead(2 * cfg.embed_dim, features=cfg.track_features, out_channels=cfg.dpt_channels,
                                         layers=cfg.dpt_layers, pos_embed=False, feature_only=True, down_ratio=2)
        self.tracker = Tracker(cfg.track_features, cfg.track_hidden, cfg.track_heads, cfg.track_depth,
                               cfg.track_virtual, corr_levels=cfg.track_levels)

    def forward(self, tokens_list, images, patch_start_idx: int, query_points: torch.Tensor, iters: int = 4):
        fmaps = self.feature_extractor(tokens_list, images, patch_start_idx)
        return self.tracker(query_points, fmaps, iters)


# --------------------------------------------------------------------------------------------- model


def check_images(images: torch.Tensor) -> torch.Tensor:
    """[S, 3, H, W] or [B, S, 3, H, W] in [0, 1] -> 5-D; one clear error for anything the model cannot take."""
    if not isinstance(images, torch.Tensor):
        raise VGGTInputError("VGGT takes a tensor [S, 3, H, W] or [B, S, 3, H, W]; stack equal-sized frames first "
                             "(see glocal.zoo.models.vggt.stack_frames)")
    if images.ndim == 4:
        images = images.unsqueeze(0)
    if images.ndim != 5 or images.shape[2] != 3:
        raise VGGTInputError(f"VGGT takes images [S, 3, H, W] or [B, S, 3, H, W], got shape {tuple(images.shape)}")
    B, S, _, H, W = images.shape
    if S == 0 or B == 0:
        raise VGGTInputError("VGGT needs at least one frame, got zero")
    if H % PATCH or W % PATCH or H == 0 or W == 0:
        raise VGGTInputError(f"VGGT needs image sides that are multiples of {PATCH}, got {H}x{W}")
    return images


def stack_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """Frames [3, H, W] of one size -> [S, 3, H, W]; different sizes or no frames raise one clear error."""
    if len(frames) == 0:
        raise VGGTInputError("VGGT needs at least one frame, got zero")
    sizes = sorted({tuple(f.shape) for f in frames})
    if len(sizes) > 1:
        raise VGGTInputError(f"VGGT frames must share one size; got {len(sizes)} sizes {sizes[:3]} "
                             "(resize them with preprocess_frames)")
    return torch.stack(list(frames))


def preprocess_frames(frames: Sequence[torch.Tensor], width: int = 518) -> torch.Tensor:
    """The official "crop" preprocessing on tensors [3, h, w] in [0, 1]: width -> ``width``, height to the
    nearest multiple of 14 (ties to even), centre-crop taller frames to ``width`` rows.

    torch's antialiased bicubic stands in for PIL's, so pixels differ slightly from the official loader."""
    if width % PATCH:
        raise VGGTInputError(f"target width {width} is not a multiple of {PATCH}")
    out = []
    for f in frames:
        h, w = f.shape[-2:]
        nh = round(h * width / w / PATCH) * PATCH
        if nh == 0:
            raise VGGTInputError(f"a {h}x{w} frame resizes to zero rows at width {width}")
        x = F.interpolate(f[None].float(), size=(nh, width), mode="bicubic", antialias=True, align_corners=False)[0]
        if nh > width:
            top = (nh - width) // 2
            x = x[:, top:top + width]
        out.append(x.clamp(0, 1))
    return stack_frames(out)


class VGGT(nn.Module):
    """VGGT: aggregator + camera, depth, point and track heads (the official output dict)."""

    def __init__(self, cfg: VGGTConfig = VGGTConfig(), aggregator: Aggregator | None = None):
        super().__init__()
        self.cfg = cfg
        dim2 = 2 * cfg.embed_dim
        self.aggregator = aggregator if aggregator is not None else Aggregator(cfg)
        dpt = partial(DPTHead, dim2, features=cfg.dpt_features, out_channels=cfg.dpt_channels, layers=cfg.dpt_layers)
        self.camera_head = CameraHead(dim2, cfg.camera_depth, cfg.camera_heads) if "camera" in cfg.heads else None
        self.point_head = dpt(output_dim=4, activation="inv_log") if "point" in cfg.heads else None
        self.depth_head = dpt(output_dim=2, activation="exp") if "depth" in cfg.heads else None
        self.track_head = TrackHead(cfg) if "track" in cfg.heads else None

    def keep_heads(self, heads: Sequence[str]) -> VGGT:
        """Drop every head not in ``heads`` (in place, after loading weights), so that models with different head
        sets can be timed on the same work; asking for a head the model lacks raises ValueError."""
        missing = [h for h in heads if h not in self.cfg.heads]
        if missing or not heads:
            raise ValueError(f"{type(self).__name__} has heads {'+'.join(self.cfg.heads)}; cannot keep "
                             f"{'+'.join(heads) or 'none'}")
        for name in self.cfg.heads:
            if name not in heads:
                setattr(self, f"{name}_head", None)
        self.cfg = replace(self.cfg, heads=tuple(h for h in self.cfg.heads if h in heads))
        return self

    def head_inputs(self, tokens_list: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """Layer outputs in the heads' precision (float32 unless the whole model was cast)."""
        dtype = self.aggregator.camera_token.dtype
        return [t.to(dtype) if t is not None else None for t in tokens_list]

    def heads(self, tokens_list, images: torch.Tensor, predictions: dict) -> dict:
        """Camera, depth and point heads in float32 (autocast off), as the official model runs them."""
        with torch.autocast(images.device.type, enabled=False):
            tokens_list = self.head_inputs(tokens_list)
            if self.camera_head is not None:
                pose_list = self.camera_head(tokens_list)
                predictions["pose_enc"], predictions["pose_enc_list"] = pose_list[-1], pose_list
            if self.depth_head is not None:
                predictions["depth"], predictions["depth_conf"] = self.depth_head(tokens_list, images, SPECIAL)
            if self.point_head is not None:
                predictions["world_points"], predictions["world_points_conf"] = self.point_head(
                    tokens_list, images, SPECIAL)
        return predictions

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None) -> dict:
        images = check_images(images)
        if query_points is not None and query_points.ndim == 2:
            query_points = query_points.unsqueeze(0)
        tokens_list, start = self.aggregator(images)
        predictions = self.heads(tokens_list, images, {})
        if self.track_head is not None and query_points is not None:
            tracks, vis, conf = self.track_head(tokens_list, images, start, query_points)
            predictions.update(track=tracks[-1], vis=vis, conf=conf)
        if not self.training:
            predictions["images"] = images
        return predictions


# --------------------------------------------------------------------------------------------- geometry helpers


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (x, y, z, w), not necessarily unit -> rotation matrices [..., 3, 3]."""
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack((1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                     two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                     two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)), -1)
    return m.reshape(q.shape[:-1] + (3, 3))


def mat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices -> unit quaternions (x, y, z, w) with w >= 0 (numerically stable branch choice)."""
    m = R.reshape(R.shape[:-2] + (9,)).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    q_abs = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = torch.where(q_abs > 0, q_abs.clamp(min=0).sqrt(), torch.zeros_like(q_abs))
    cand = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1)], -2)
    cand = cand / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)[..., [1, 2, 3, 0]]
    return torch.where(q[..., 3:4] < 0, -q, q)


def pose_encoding_to_extri_intri(pose_enc: torch.Tensor, image_hw: tuple[int, int]
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """absT_quaR_FoV [..., 9] -> camera-from-world extrinsics [..., 3, 4] (OpenCV) and intrinsics [..., 3, 3]."""
    H, W = image_hw
    R = quat_to_mat(pose_enc[..., 3:7])
    extrinsics = torch.cat([R, pose_enc[..., :3, None]], dim=-1)
    K = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0] = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    K[..., 1, 1] = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2, H / 2, 1.0
    return extrinsics, K


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
                                 ) -> torch.Tensor:
    """Inverse of :func:`pose_encoding_to_extri_intri` (quaternion sign fixed to w >= 0)."""
    H, W = image_hw
    fov_h = 2 * torch.atan((H / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], mat_to_quat(extrinsics[..., :3, :3]), fov_h[..., None],
                      fov_w[..., None]], dim=-1)


def unproject_depth(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Depth [..., H, W(, 1)] with camera-from-world [..., 3, 4] and K [..., 3, 3] -> world points [..., H, W, 3]."""
    if depth.shape[-1] == 1 and depth.ndim >= 3:
        depth = depth[..., 0]
    H, W = depth.shape[-2:]
    v, u = torch.meshgrid(torch.arange(H, dtype=depth.dtype, device=depth.device),
                          torch.arange(W, dtype=depth.dtype, device=depth.device), indexing="ij")
    K = intrinsics[..., None, None, :, :]
    x = (u - K[..., 0, 2]) * depth / K[..., 0, 0]
    y = (v - K[..., 1, 2]) * depth / K[..., 1, 1]
    cam = torch.stack([x, y, depth], dim=-1)
    R, t = extrinsics[..., None, None, :3, :3], extrinsics[..., None, None, :3, 3]
    return torch.matmul((cam - t).unsqueeze(-2), R).squeeze(-2)  # R^T (p - t), as row vectors


# --------------------------------------------------------------------------------------------- registration


def build_vggt(config: str = "1b", **overrides) -> VGGT:
    """``config`` "1b" (official shapes) or "tiny" (CPU tests); ``overrides`` replace config fields."""
    base = {"1b": VGGTConfig(), "tiny": TINY}[config]
    return VGGT(replace(base, **overrides)).eval()


PAPER_RUNTIME = (
    PaperMetric("runtime", "seconds_10_frames", 0.14, "official README, aggregator only, H100, FlashAttention-3"),
    PaperMetric("runtime", "seconds_200_frames", 8.75, "official README, aggregator only, H100, FlashAttention-3"),
    PaperMetric("runtime", "memory_gb_200_frames", 40.63, "official README, H100"),
    PaperMetric("RealEstate10K", "auc30", 85.3, "feed-forward, 10 frames (FlashVGGT paper table: 85.32)"),
    PaperMetric("CO3Dv2", "auc30", 88.2, "feed-forward (FlashVGGT paper table: 88.59)"),
)

_PREP = Preprocessing(input_size=(3, 392, 518), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bicubic",
                      crop_pct=1.0, crop_mode="center")

CARD = register(ModelCard(
    family="vggt",
    display_name="VGGT",
    task="multiview",
    paper_title="VGGT: Visual Geometry Grounded Transformer",
    arxiv_id="2503.11651",
    official_repo="https://github.com/facebookresearch/vggt",
    license="VGGT License v1 (code); facebook/VGGT-1B weights non-commercial",
    default_variant="vggt_1b",
    description="Alternating frame and global attention over the DINOv2 tokens of all frames; cameras, depth, "
                "point maps and tracks in one forward pass.",
    variants=(
        Variant(name="vggt_1b", builder=build_vggt, kwargs={"config": "1b", "heads": ALL_HEADS}, preprocessing=_PREP,
                weights=(WeightSource(description="facebook/VGGT-1B (flat state dict, strict)",
                                      hf_hub_id="facebook/VGGT-1B", filename="model.pt"),),
                paper_metrics=PAPER_RUNTIME, params=1_256_537_516, resolution_multiple=PATCH, resolutions=(518,),
                notes="Input [S, 3, H, W] in [0, 1]; the official preprocessing makes the width 518."),
        Variant(name="vggt_tiny", builder=build_vggt, kwargs={"config": "tiny", "heads": ALL_HEADS},
                preprocessing=replace(_PREP, input_size=(3, 56, 56)), resolution_multiple=PATCH, resolutions=(56,),
                notes="Random-weight tiny shapes for CPU tests."),
    ),
))

