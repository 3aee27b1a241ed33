"""UltraGen (AAAI 2026): hierarchical three-branch self-attention for high-resolution video, on diffusers' Wan2.1.

The host is diffusers' ``WanTransformer3DModel`` (Wan2.1-T2V-1.3B shape: width 1536, 30 layers, 12 heads x 128).
Each block's self-attention (``attn1``) gets an :class:`UltraGenAttnProcessor` through ``set_attn_processor``;
cross-attention keeps ``WanAttnProcessor``. The processor is an ``nn.Module`` that owns the branch parameters
(LoRAs, gate MLPs, depthwise convolutions), so they live in the model's state dict under
``blocks.<i>.attn1.processor.*``. Layer ``i`` runs three branches with the base Q/K/V/O weights:

* local: ``K_i x K_i`` windows per frame plane (``K_i = 4 + i % 2``: the window count per side), each window
  spanning all ``T'`` frames, RoPE in window-local coordinates;
* global: a 4x4/stride-4 depthwise conv per frame (average pooling at init), attention over all compressed
  tokens with ``LoRA_g`` on Q/K/V, bilinear upsampling and a depthwise 3x3x3 Conv3d;
* hierarchical: a 2x2/stride-2 depthwise conv, ``(2 + i % 2)^2`` windows with ``LoRA_h``, resize back and a
  depthwise 3x3x3 Conv3d;

fused per channel by timestep gates ``alpha = sigmoid(MLP(sincos_256(t)))``: ``mix = a_h*local + (1-a_h)*hier``,
``out = a_g*mix + (1-a_g)*global``, then the output projection. The token grid ``(T', H', W')`` and the timestep
reach the processors through a forward pre-hook on the model (:class:`UltraGenContext`); diffusers is not patched.

Released-code choices (sjtuplayer/UltraGen @ 4f9ec33f, ``diffsynth/models/wan_video_dit.py``) are options with the
released behaviour as default and the paper's as the alternative:

=============== ================================================= ===============================================
option          released code (default)                           paper (alternative)
=============== ================================================= ===============================================
dense_layers    ``released``: blocks 0, 1, 2, 27, 28, 29 keep      ``none``: every block runs the three branches
                full attention (absolute indices, no branch
                parameters)
global_key      ``query``: the global branch's key is              ``key``: ``to_k(x) + LoRA_k(x)``
                ``to_q(x) + LoRA_k(x)``
gate_side       ``local``: the gates weight the local side          ``global``: the gates weight the hierarchical
                (as above)                                         and global side (``(1-a)`` on the local side)
indivisible     ``resize``: a side not divisible by the window     ``split``: windows of near-equal size (sides
                count is resized (bilinear, antialiased) to the    differ by at most 1), no resampling
                nearest multiple and back
=============== ================================================= ===============================================

Also different from the released code, without an option: the hierarchical branch takes any batch (the code
hard-codes batch 1; batch 1 gives the same function). The official checkpoint ``ultragen_1080p.ckpt`` (DiffSynth
``WanModel`` key names plus the branch parameters, 1,881 keys) converts to this layout with
:func:`convert_official` and loads strictly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.zoo.registry import ModelCard, PaperMetric, Variant, WeightSource, register

__all__ = [
    "UltraGenAttnProcessor", "UltraGenContext", "UltraGenOptions", "UltraGenOptionError", "VideoShapeError",
    "build_ultragen", "install_ultragen", "convert_official", "to_official", "wan_latent_grid", "layer_geometry",
    "attention_pairs", "eq12_attention_flops", "exact_attention_flops", "pair_fraction", "VIDEO_SIZES",
    "UltraGenVideo", "video_size", "step_flops", "convert_to_native", "UltraGenPipeline", "UltraGenPipelineError",
]

RELEASED_DENSE_LAYERS = (0, 1, 2, 27, 28, 29)
GATE_FREQ_DIM = 256  # sinusoidal width of the gate MLPs' input (hard-coded in the released code)
WAN_VAE_STRIDE = (4, 8, 8)  # Wan VAE: 4x temporal, 8x spatial
WAN_PATCH = (1, 2, 2)
# Video sizes (height, width) by name; 1080P and 4K as UltraGen generates them (1088 and 2176 rows: multiples of 16).
VIDEO_SIZES: dict[str, tuple[int, int]] = {
    "480p": (480, 832), "720p": (720, 1280), "1080p": (1088, 1920), "4k": (2176, 3840),
}
_BY_HEIGHT = {480: VIDEO_SIZES["480p"], 720: VIDEO_SIZES["720p"], 1080: VIDEO_SIZES["1080p"],
              1088: VIDEO_SIZES["1080p"], 2160: VIDEO_SIZES["4k"], 2176: VIDEO_SIZES["4k"]}
ATTENTIONS = ("ultragen", "dense-sdpa")  # the generation task's modes: this model's own first


class UltraGenOptionError(ValueError):
    """An unknown UltraGen option or value (one line)."""


class VideoShapeError(ValueError):
    """A video size or frame count the Wan VAE and patching cannot map to a token grid (one line)."""


class UltraGenPipelineError(ValueError):
    """A Wan pipeline folder that is missing or does not fit this model (one line)."""


def _diffusers() -> Any:
    """diffusers, imported lazily with one clear line when missing."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("ultragen needs diffusers: pip install 'glocal[generation]' (diffusers>=0.35)") from e
    return diffusers


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class UltraGenOptions:
    """Released-code choices (defaults) and their paper alternatives; see the module docstring's table."""

    attention: str = "ultragen"  # "ultragen" | "dense" (plain Wan, the baseline)
    dense_layers: str = "released"  # "released" | "none" | comma-separated block indices
    global_key: str = "query"  # "query" (released) | "key" (paper)
    gate_side: str = "local"  # "local" (released) | "global" (paper)
    indivisible: str = "resize"  # "resize" (released) | "split" (paper)

    def dense_set(self, num_layers: int) -> frozenset[int]:
        """Block indices that keep full attention."""
        if self.attention == "dense":
            return frozenset(range(num_layers))
        if self.dense_layers == "released":
            return frozenset(i for i in RELEASED_DENSE_LAYERS if i < num_layers)
        if self.dense_layers == "none":
            return frozenset()
        return frozenset(int(i) for i in self.dense_layers.split(","))


_CHOICES = {"attention": ("ultragen", "dense"), "global_key": ("query", "key"), "gate_side": ("local", "global"),
            "indivisible": ("resize", "split")}


def parse_options(**options: Any) -> UltraGenOptions:
    """Validate option names and values; anything unknown raises :class:`UltraGenOptionError`."""
    known = [f.name for f in fields(UltraGenOptions)]
    for name, value in options.items():
        if name not in known:
            raise UltraGenOptionError(f"unknown UltraGen option {name!r} (known: {', '.join(known)})")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise UltraGenOptionError(f"UltraGen option {name}={value!r}: expected one of {', '.join(_CHOICES[name])}")
    dense = options.get("dense_layers", "released")
    if isinstance(dense, (tuple, list)):
        dense = ",".join(str(int(i)) for i in dense)
    if dense not in ("released", "none") and not re.fullmatch(r"\d+(,\d+)*", str(dense)):
        raise UltraGenOptionError(f"UltraGen option dense_layers={dense!r}: expected released, none or indices "
                                  "like 0,1,29")
    return UltraGenOptions(**{**options, "dense_layers": str(dense)})


# --------------------------------------------------------------------------------------------- geometry


def wan_latent_grid(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Token grid (T', H', W') of a video through the Wan VAE (4x temporal, 8x spatial) and 1x2x2 patches."""
    if frames < 1 or (frames - 1) % WAN_VAE_STRIDE[0]:
        raise VideoShapeError(f"{frames} frames cannot be mapped by the Wan VAE (4x temporal stride): frame counts "
                              "must be 4k+1, e.g. 81 or 29")
    step = WAN_VAE_STRIDE[1] * WAN_PATCH[1]
    if height < step or width < step or height % step or width % step:
        raise VideoShapeError(f"video size {height}x{width} cannot be mapped to Wan tokens: height and width must be "
                              f"positive multiples of {step} (VAE 8x, patch 2x2)")
    return (frames - 1) // WAN_VAE_STRIDE[0] + 1, height // step, width // step


def video_size(side: int) -> tuple[int, int]:
    """Frame (height, width) of a cell's resolution: 480, 720, 1080 and 2160 (480p ... 4k) are Wan's and UltraGen's
    16:9 sizes (1080 -> 1088 x 1920, 2160 -> 2176 x 3840); any other multiple of 16 is a square frame."""
    if side in _BY_HEIGHT:
        return _BY_HEIGHT[side]
    if side < 16 or side % 16:
        raise VideoShapeError(f"resolution {side}: give 480, 720, 1080, 2160 (480p ... 4k) or a square side that is a "
                              "multiple of 16")
    return side, side


def nearest_multiple(n: int, k: int) -> int:
    """The multiple of ``k`` nearest to ``n`` (ties go down), as the released code resizes; refuses 0."""
    lower = n // k * k
    out = lower if n - lower <= lower + k - n else lower + k
    if out == 0:
        raise VideoShapeError(f"a grid side of {n} tokens is too small for {k} windows per side")
    return out


def window_sides(n: int, k: int, indivisible: str) -> tuple[int, tuple[int, ...]]:
    """(side the branch works at, the ``k`` window sides along it) for ``k`` windows over ``n`` tokens."""
    if indivisible == "resize" or n % k == 0:
        m = nearest_multiple(n, k)
        return m, (m // k,) * k
    if n < k:
        raise VideoShapeError(f"a grid side of {n} tokens is too small for {k} windows per side")
    return n, tuple(n // k + (1 if j < n % k else 0) for j in range(k))


@dataclass(frozen=True)
class LayerGeometry:
    """What one layer's branches attend over: window sides of the local and hierarchical branches, global grid."""

    dense: bool
    local_rows: tuple[int, ...] = ()
    local_cols: tuple[int, ...] = ()
    global_grid: tuple[int, int] = (0, 0)
    hier_rows: tuple[int, ...] = ()
    hier_cols: tuple[int, ...] = ()


def layer_geometry(grid: tuple[int, int, int], index: int, options: UltraGenOptions, num_layers: int,
                   global_stride: int = 4, hier_stride: int = 2) -> LayerGeometry:
    """The attention geometry of block ``index`` (windows K = 4 + i % 2 and 2 + i % 2 per side)."""
    if index in options.dense_set(num_layers):
        return LayerGeometry(dense=True)
    _, h, w = grid
    k, kh = 4 + index % 2, 2 + index % 2
    return LayerGeometry(
        dense=False, local_rows=window_sides(h, k, options.indivisible)[1],
        local_cols=window_sides(w, k, options.indivisible)[1],
        global_grid=(h // global_stride, w // global_stride),
        hier_rows=window_sides(h // hier_stride, kh, options.indivisible)[1],
        hier_cols=window_sides(w // hier_stride, kh, options.indivisible)[1])


def attention_pairs(grid: tuple[int, int, int], geometry: LayerGeometry) -> int:
    """Query-key pairs one layer computes (all branches; compressed tokens count as tokens)."""
    t, h, w = grid
    if geometry.dense:
        return (t * h * w) ** 2
    local = sum((t * a * b) ** 2 for a in geometry.local_rows for b in geometry.local_cols)
    hier = sum((t * a * b) ** 2 for a in geometry.hier_rows for b in geometry.hier_cols)
    return local + hier + (t * geometry.global_grid[0] * geometry.global_grid[1]) ** 2


def exact_attention_flops(grid: tuple[int, int, int], dim: int, num_layers: int, options: UltraGenOptions) -> int:
    """Attention matmul FLOPs of one forward (QK^T and PV: 4 * width per pair), from the actual geometry."""
    return sum(4 * dim * attention_pairs(grid, layer_geometry(grid, i, options, num_layers)) for i in range(num_layers))


def eq12_attention_flops(tokens: int, dim: int, num_layers: int, dense_layers: Iterable[int], k: int = 4) -> float:
    """Paper eq. 12: ``4 d N^2 (5/(4K^2) + 1/K^4)`` per three-branch layer, ``4 d N^2`` per dense layer."""
    dense = len([i for i in set(dense_layers) if 0 <= i < num_layers])
    full = 4.0 * dim * tokens**2
    return dense * full + (num_layers - dense) * full * (5 / (4 * k**2) + 1 / k**4)


def step_flops(config: Mapping[str, Any], tokens: int, text_tokens: int, attention_flops: float) -> float:
    """FLOPs of one Wan forward: projections and FFN (2 per MAC), the given self-attention matmul FLOPs, and the
    cross-attention to the text tokens (the small embedding and output layers are left out)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    per_layer = 2 * tokens * (6 * d * d + 2 * d * config["ffn_dim"]) + 2 * text_tokens * 2 * d * d
    return config["num_layers"] * (per_layer + 4 * d * tokens * text_tokens) + attention_flops


def pair_fraction(grid: tuple[int, int, int], num_layers: int, options: UltraGenOptions) -> float:
    """Attention pairs computed over all layers as a fraction of dense attention's ``num_layers * N^2``."""
    n = grid[0] * grid[1] * grid[2]
    pairs = sum(attention_pairs(grid, layer_geometry(grid, i, options, num_layers)) for i in range(num_layers))
    return pairs / (num_layers * n * n)


# --------------------------------------------------------------------------------------------- modules


class UltraGenContext:
    """Grid and timestep of the current forward, set by a model forward pre-hook (this object is the hook).

    Being the hook itself keeps processors and hook consistent under ``copy.deepcopy``.
    """

    def __init__(self, patch_size: tuple[int, int, int]) -> None:
        self.patch_size = tuple(patch_size)
        self.grid: tuple[int, int, int] | None = None
        self.timestep: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if hidden is None or hidden.ndim != 5 or timestep is None:
            raise ValueError("UltraGen needs hidden_states (B, C, F, H, W) and a timestep")
        sizes = hidden.shape[2:]
        if any(s % p for s, p in zip(sizes, self.patch_size, strict=True)):
            raise VideoShapeError(f"latent {tuple(sizes)} is not divisible by the patch size {self.patch_size}")
        timestep = torch.as_tensor(timestep, device=hidden.device)
        if timestep.ndim > 1:
            raise ValueError("UltraGen takes one timestep per sample (shape (B,)), not per token")
        self.grid = tuple(s // p for s, p in zip(sizes, self.patch_size, strict=True))
        self.timestep = timestep.reshape(-1).expand(hidden.shape[0]) if timestep.numel() == 1 else timestep


class BranchLoRA(nn.Module):
    """Low-rank update added to a base projection in one branch: ``lora_B(lora_A(x))`` (both with biases)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.lora_A = nn.Linear(dim, rank)
        self.lora_B = nn.Linear(rank, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(x))


class TimestepGate(nn.Module):
    """Per-channel gate ``sigmoid(Linear(SiLU(TimestepEmbedding(sincos_256(t)))))`` in (0, 1)."""

    def __init__(self, dim: int, freq_dim: int = GATE_FREQ_DIM) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding

        self.freq_dim = freq_dim
        self.embedder = TimestepEmbedding(freq_dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        from diffusers.models.embeddings import get_timestep_embedding

        freqs = get_timestep_embedding(timestep, self.freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.sigmoid(self.proj(F.silu(self.embedder(freqs.to(self.proj.weight.dtype)))))


def _depthwise2d(dim: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(dim, dim, kernel_size=stride, stride=stride, groups=dim)


def _depthwise3d(dim: int) -> nn.Conv3d:
    return nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of the planes of (B, T, h, w, C), as torchvision's ``Resize`` on tensors."""
    b, t, h, w, c = x.shape
    if (h, w) == tuple(size):
        return x
    planes = x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
    out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(b, t, c, *size).permute(0, 1, 3, 4, 2)


def _runs(sides: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Group window sides into runs of equal size: (start, count, side)."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for s in sides:
        if runs and runs[-1][2] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, s)
        else:
            runs.append((start, 1, s))
        start += s
    return runs


class UltraGenAttnProcessor(nn.Module):
    """Three-branch UltraGen self-attention for one Wan block (a diffusers attention processor and a module).

    ``local_windows`` / ``hier_windows`` default to ``4 + i % 2`` / ``2 + i % 2`` for block ``i``. The parameters
    follow the released code's order: global LoRAs (q, k, v), hierarchical LoRAs, the global gate (local mix vs
    global), the hierarchical gate (local vs hierarchical), then the global and hierarchical convolutions.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, dim: int, layer_index: int, context: UltraGenContext, *, lora_rank: int = 64,
                 local_windows: int | None = None, hier_windows: int | None = None, global_stride: int = 4,
                 hier_stride: int = 2, options: UltraGenOptions | None = None) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.local_windows = 4 + layer_index % 2 if local_windows is None else local_windows
        self.hier_windows = 2 + layer_index % 2 if hier_windows is None else hier_windows
        self.options = options or UltraGenOptions()
        self.global_q_lora, self.global_k_lora, self.global_v_lora = (BranchLoRA(dim, lora_rank) for _ in range(3))
        self.hier_q_lora, self.hier_k_lora, self.hier_v_lora = (BranchLoRA(dim, lora_rank) for _ in range(3))
        self.gate_global = TimestepGate(dim)
        self.gate_hier = TimestepGate(dim)
        self.global_down = _depthwise2d(dim, global_stride)
        self.global_refine = _depthwise3d(dim)
        self.hier_down = _depthwise2d(dim, hier_stride)
        self.hier_refine = _depthwise3d(dim)
        self.context = context
        self.reset_branch_parameters()

    @torch.no_grad()
    def reset_branch_parameters(self) -> None:
        """Compression convs start as average pooling and refinement convs as 3x3x3 box filters (the released
        initialisation), LoRAs as zero updates, gates at 0.5."""
        for conv in (self.global_down, self.global_refine, self.hier_down, self.hier_refine):
            conv.weight.fill_(1.0 / math.prod(conv.weight.shape[1:]))
            conv.bias.zero_()
        for lora in (self.global_q_lora, self.global_k_lora, self.global_v_lora, self.hier_q_lora, self.hier_k_lora,
                     self.hier_v_lora):
            nn.init.zeros_(lora.lora_B.weight)
            nn.init.zeros_(lora.lora_B.bias)
        for gate in (self.gate_global, self.gate_hier):
            nn.init.zeros_(gate.proj.weight)
            nn.init.zeros_(gate.proj.bias)

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def project(attn: nn.Module, x: torch.Tensor, loras: tuple[nn.Module, ...] | None = None,
                key_from_query: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Base Q/K/V (plus a branch's LoRAs), with Wan's RMS norms over all heads on Q and K."""
        q, v = attn.to_q(x), attn.to_v(x)
        k = (attn.to_q if key_from_query else attn.to_k)(x)
        if loras is not None:
            q, k, v = q + loras[0](x), k + loras[1](x), v + loras[2](x)
        return attn.norm_q(q), attn.norm_k(k), v

    def window_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: int, cols: int, heads: int,
                         rope: tuple[torch.Tensor, torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        """Attention inside ``rows x cols`` equal windows of (B, T, h, w, C) maps, each over all T frames, with
        RoPE in window-local coordinates (the full grid's table cut to the window)."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb

        b, t, h, w, c = q.shape
        hs, ws = h // rows, w // cols

        def part(z: torch.Tensor) -> torch.Tensor:
            z = z.reshape(b, t, rows, hs, cols, ws, c).permute(0, 2, 4, 1, 3, 5, 6)
            return z.reshape(b * rows * cols, t * hs * ws, heads, c // heads)

        big_t, big_h, big_w = grid
        table = tuple(f.reshape(big_t, big_h, big_w, -1)[:t, :hs, :ws].reshape(t * hs * ws, -1) for f in rope)
        qw, kw = apply_rotary_emb(part(q), table, sequence_dim=1), apply_rotary_emb(part(k), table, sequence_dim=1)
        out = dispatch_attention_fn(qw, kw, part(v), backend=self._attention_backend).type_as(q)
        out = out.reshape(b, rows, cols, t, hs, ws, c).permute(0, 3, 1, 4, 2, 5, 6)
        return out.reshape(b, t, h, w, c)

    def windows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: tuple[int, ...],
                cols: tuple[int, ...], heads: int, rope: tuple[torch.Tensor, torch.Tensor],
                grid: tuple[int, int, int]) -> torch.Tensor:
        """Window attention for windows of the given sides (equal sides batched together; at most 4 groups)."""
        out = []
        for r0, nr, rs in _runs(rows):
            row = []
            for c0, nc, cs in _runs(cols):
                cut = (slice(None), slice(None), slice(r0, r0 + nr * rs), slice(c0, c0 + nc * cs))
                row.append(self.window_attention(q[cut], k[cut], v[cut], nr, nc, heads, rope, grid))
            out.append(torch.cat(row, dim=3) if len(row) > 1 else row[0])
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]

    def _sides(self, n: int, k: int) -> tuple[int, tuple[int, ...]]:
        return window_sides(n, k, self.options.indivisible)

    # ------------------------------------------------------------------ branches (x: (B, T, H, W, C))

    def local_branch(self, attn: nn.Module, x: torch.Tensor, rope: tuple, grid: tuple[int, int, int]) -> torch.Tensor:
        """Attention inside K x K windows of the full-resolution plane (resized to a multiple of K and back)."""
        _, _, h, w, _ = x.shape
        (hr, rows), (wr, cols) = self._sides(h, self.local_windows), self._sides(w, self.local_windows)
        q, k, v = self.project(attn, _resize(x, (hr, wr)))
        return _resize(self.windows(q, k, v, rows, cols, attn.heads, rope, grid), (h, w))

    def _planes(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """A depthwise Conv2d on every frame plane: (B, T, H, W, C) -> (B, T, h', w', C)."""
        b, t, h, w, c = x.shape
        z = conv(x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w))
        return z.reshape(b, t, c, *z.shape[-2:]).permute(0, 1, 3, 4, 2)

    @staticmethod
    def _refine(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
        """The depthwise 3x3x3 Conv3d on (B, T, H, W, C)."""
        return conv(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)

    def global_branch(self, attn: nn.Module, x: torch.Tensor, rope: tuple, grid: tuple[int, int, int]) -> torch.Tensor:
        """Full attention over the 4x-compressed planes (LoRA_g), bilinear upsampling, 3x3x3 refinement."""
        _, _, h, w, _ = x.shape
        z = self._planes(x, self.global_down)
        loras = (self.global_q_lora, self.global_k_lora, self.global_v_lora)
        q, k, v = self.project(attn, z, loras, key_from_query=self.options.global_key == "query")
        out = self.window_attention(q, k, v, 1, 1, attn.heads, rope, grid)
        return self._refine(_resize(out, (h, w)), self.global_refine)

    def hier_branch(self, attn: nn.Module, x: torch.Tensor, rope: tuple, grid: tuple[int, int, int]) -> torch.Tensor:
        """Window attention on the 2x-compressed planes (LoRA_h), resized back to the grid, 3x3x3 refinement."""
        _, _, h, w, _ = x.shape
        z = self._planes(x, self.hier_down)
        (hr, rows), (wr, cols) = self._sides(z.shape[2], self.hier_windows), self._sides(z.shape[3], self.hier_windows)
        q, k, v = self.project(attn, _resize(z, (hr, wr)), (self.hier_q_lora, self.hier_k_lora, self.hier_v_lora))
        out = self.windows(q, k, v, rows, cols, attn.heads, rope, grid)
        return self._refine(_resize(out, (h, w)), self.hier_refine)

    def gates(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_global, alpha_hier), each (B, 1, C)."""
        return self.gate_global(timestep).unsqueeze(1), self.gate_hier(timestep).unsqueeze(1)

    def fuse(self, local: torch.Tensor, hier: torch.Tensor, glob: torch.Tensor, alpha_global: torch.Tensor,
             alpha_hier: torch.Tensor) -> torch.Tensor:
        """Gate fusion: the gates weight the local side (released) or the hierarchical/global side (paper)."""
        if self.options.gate_side == "global":
            alpha_global, alpha_hier = 1 - alpha_global, 1 - alpha_hier
        mix = alpha_hier * local + (1 - alpha_hier) * hier
        return alpha_global * mix + (1 - alpha_global) * glob

    def forward(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, rotary_emb: tuple | None = None) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or rotary_emb is None:
            raise ValueError("UltraGenAttnProcessor is a self-attention processor: it takes RoPE and no context/mask")
        grid, timestep = self.context.grid, self.context.timestep
        if grid is None or timestep is None:
            raise RuntimeError("UltraGen's grid and timestep are unset: run the model forward (its pre-hook sets them)")
        b, n, c = hidden_states.shape
        if n != math.prod(grid):
            raise VideoShapeError(f"{n} tokens do not form the {grid} grid")
        x = hidden_states.reshape(b, *grid, c)
        local = self.local_branch(attn, x, rotary_emb, grid).reshape(b, n, c)
        glob = self.global_branch(attn, x, rotary_emb, grid).reshape(b, n, c)
        hier = self.hier_branch(attn, x, rotary_emb, grid).reshape(b, n, c)
        out = self.fuse(local, hier, glob, *self.gates(timestep.to(hidden_states.device))).type_as(hidden_states)
        return attn.to_out[1](attn.to_out[0](out))


# --------------------------------------------------------------------------------------------- the model


def install_ultragen(model: nn.Module, options: UltraGenOptions | None = None, lora_rank: int = 64) -> nn.Module:
    """Put an :class:`UltraGenAttnProcessor` on every non-dense block's ``attn1`` of a diffusers Wan transformer,
    and the pre-hook that hands the processors the token grid and the timestep. Returns the model."""
    options = options or UltraGenOptions()
    num_layers = len(model.blocks)
    dense = options.dense_set(num_layers)
    context = UltraGenContext(tuple(model.config.patch_size))
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    processors = dict(model.attn_processors)
    for i in range(num_layers):
        if i not in dense:
            processors[f"blocks.{i}.attn1.processor"] = UltraGenAttnProcessor(
                dim, i, context, lora_rank=lora_rank, options=options).to(model.patch_embedding.weight.device)
    model.set_attn_processor(processors)
    model.register_forward_pre_hook(context, with_kwargs=True)
    model.ultragen_options = options  # type: ignore[attr-defined]
    return model


def build_ultragen(*, num_layers: int, num_attention_heads: int, attention_head_dim: int, ffn_dim: int,
                   text_dim: int = 4096, freq_dim: int = 256, in_channels: int = 16, out_channels: int = 16,
                   lora_rank: int = 64, rope_max_seq_len: int = 1024, **options: Any) -> nn.Module:
    """diffusers' ``WanTransformer3DModel`` (Wan2.1 block settings) with UltraGen installed, or plain
    (``attention="dense"``, the baseline). Unknown options raise :class:`UltraGenOptionError`."""
    opts = parse_options(**options)
    wan = _diffusers().WanTransformer3DModel(
        patch_size=WAN_PATCH, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
        in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn_dim,
        num_layers=num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        rope_max_seq_len=rope_max_seq_len)
    if opts.attention == "ultragen":
        install_ultragen(wan, opts, lora_rank)
    wan.ultragen_options = opts  # type: ignore[attr-defined]
    return wan


class UltraGenVideo(nn.Module):
    """diffusers' ``WanTransformer3DModel`` with UltraGen installed (as ``.transformer``, unmodified) behind the
    generation task's interface: :meth:`configure` picks the attention (``ultragen`` or Wan's own ``dense-sdpa``
    processor, same weights) and the video size, :meth:`make_inputs` builds one denoising step's inputs,
    :meth:`generation_workload` reports tokens, pair fraction and FLOPs from the formulas; ``forward`` is one step.
    """

    attentions = ATTENTIONS  # read by the generation task before anything is built
    check_side = staticmethod(video_size)  # the generation task refuses sizes and frame counts up front

    @staticmethod
    def check_frames(frames: int) -> None:
        wan_latent_grid(frames, 16, 16)

    def __init__(self, text_tokens: int = 512, **kwargs: Any) -> None:
        super().__init__()
        self.transformer = build_ultragen(**kwargs)
        if self.transformer.ultragen_options.attention != "ultragen":
            raise UltraGenOptionError("UltraGenVideo switches attention with configure(); build it with UltraGen")
        self.text_tokens = text_tokens
        self._ultragen = dict(self.transformer.attn_processors)  # to switch back from dense
        self.setting: dict[str, Any] = {}

    @property
    def config(self) -> Any:
        return self.transformer.config

    def configure(self, side: int, attention: str = "ultragen", frames: int = 1, device: Any = None,
                  text: int | None = None) -> tuple[int, int, int]:
        """Install ``attention`` for ``frames`` frames at the resolution ``side`` (see :func:`video_size`); returns
        the token grid. ``dense-sdpa`` is Wan's own processor on every block (the baseline)."""
        if attention not in ATTENTIONS:
            raise UltraGenOptionError(f"unknown attention {attention!r}; expected one of {', '.join(ATTENTIONS)}")
        height, width = video_size(side)
        grid = wan_latent_grid(frames, height, width)
        if attention == "ultragen":
            self.transformer.set_attn_processor(dict(self._ultragen))
        else:
            from diffusers.models.transformers.transformer_wan import WanAttnProcessor

            self.transformer.set_attn_processor(WanAttnProcessor())
        self.setting = dict(attention=attention, frames=frames, size=(height, width), grid=grid,
                            text=self.text_tokens if text is None else text)
        return grid

    def _configured(self) -> dict[str, Any]:
        if not self.setting:
            raise UltraGenOptionError("call configure(side, attention=..., frames=...) first")
        return self.setting

    def make_inputs(self, batch: int = 1, device: Any = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                    timestep: float = 700.0) -> dict[str, torch.Tensor]:
        """Random inputs of one step at the configured size: latents (B, 16, T', 2H', 2W'), umT5-width text
        tokens, and the timestep (0..1000, as the Wan scheduler feeds it)."""
        s, c = self._configured(), self.config
        (t, h, w), g = s["grid"], torch.Generator().manual_seed(seed)
        latents = torch.randn(batch, c.in_channels, t * c.patch_size[0], h * c.patch_size[1], w * c.patch_size[2],
                              generator=g)
        text = torch.randn(batch, s["text"], c.text_dim, generator=g)
        return dict(hidden_states=latents.to(device=device, dtype=dtype), timestep=torch.full((batch,), timestep,
                    device=device), encoder_hidden_states=text.to(device=device, dtype=dtype))

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """One denoising step: the flow prediction, shaped like ``hidden_states``."""
        return self.transformer(hidden_states, timestep, encoder_hidden_states, return_dict=False)[0]

    def generation_workload(self) -> dict[str, Any]:
        """Tokens, the fraction of dense attention's query-key pairs computed, attention GMACs (exact geometry and
        the paper's eq. 12, dense layers counted) and the step's GMACs, all from formulas."""
        s, c = self._configured(), dict(self.config)
        grid, opts, layers = s["grid"], self.transformer.ultragen_options, c["num_layers"]
        n, d = math.prod(grid), c["num_attention_heads"] * c["attention_head_dim"]
        dense = s["attention"] != "ultragen"
        exact = 4.0 * d * n * n * layers if dense else exact_attention_flops(grid, d, layers, opts)
        eq12 = exact if dense else eq12_attention_flops(n, d, layers, opts.dense_set(layers))
        return {"attention": s["attention"], "frames": s["frames"], "video": "{}x{}".format(*s["size"]),
                "latent_grid": list(grid), "tokens": {"video": n, "text": s["text"], "total": n},
                "pair_fraction": 1.0 if dense else pair_fraction(grid, layers, opts),
                "attention_gmacs": exact / 2e9, "attention_gmacs_eq12": eq12 / 2e9,
                "step_gmacs": step_flops(c, n, s["text"], exact) / 2e9, "macs_source": "formula"}

    @property
    def frames(self) -> int:
        """The configured frame count (the generation task's video evaluator reads it)."""
        return self._configured()["frames"]

    def make_pipeline(self, path: str | Path, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16, **settings: Any) -> UltraGenPipeline:
        """Text to video on a local diffusers Wan2.1-T2V-1.3B folder (see :func:`make_wan_pipeline`): a callable
        ``(prompt, side, seed, frames, steps=30) -> (T, 3, H, W)`` video in [0, 1]."""
        return make_wan_pipeline(self, path, device, dtype, **settings)

    def glocal_backends(self) -> dict[str, str]:
        """Recorded with results: which processor ran the self-attention."""
        attention = self.setting.get("attention", "")
        impl = "UltraGenAttnProcessor (diffusers dispatch_attention_fn)" if attention == "ultragen" else (
            "WanAttnProcessor (diffusers dispatch_attention_fn)")
        return {"attention": attention, "impl": impl, "options": str(self.transformer.ultragen_options)}


# --------------------------------------------------------------------------------------------- pipeline

# Sampling settings of the released inference script (sjtuplayer/UltraGen inference.py and DiffSynth's Wan pipeline).
RELEASED_STEPS, RELEASED_GUIDANCE, RELEASED_SHIFT = 30, 5.0, 5.0
RELEASED_NEGATIVE = ("Aerial view, overexposed, low quality, deformation, bad composition, bad hands, bad teeth, "
                     "bad eyes, bad limbs, distortion, blurring, text, subtitles")


class UltraGenPipeline:
    """Text to video with diffusers' ``WanPipeline`` (its VAE, umT5, tokenizer and scheduler) on an
    :class:`UltraGenVideo`'s transformer: each call configures the model's current attention for the size and
    frame count, then runs the pipeline's own sampling loop with a seeded CPU generator."""

    def __init__(self, pipe: Any, model: UltraGenVideo) -> None:
        self.pipe, self.model = pipe, model

    @torch.no_grad()
    def __call__(self, prompt: str, side: int, seed: int = 0, frames: int = 81, steps: int = RELEASED_STEPS,
                 guidance: float = RELEASED_GUIDANCE, negative_prompt: str = RELEASED_NEGATIVE) -> torch.Tensor:
        """The video (T, 3, H, W) in [0, 1], float on the CPU; ``side`` as :func:`video_size` reads it."""
        height, width = video_size(side)
        self.model.configure(side, attention=self.model.setting.get("attention", "ultragen"), frames=frames)
        video = self.pipe(prompt=prompt, negative_prompt=negative_prompt, height=height, width=width,
                          num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed), output_type="pt", return_dict=False)[0]
        return video[0].float().clamp(0, 1).cpu()


def _check_wan_folder(path: Path) -> None:
    """One line for a folder that is not a diffusers ``WanPipeline`` (before diffusers reads it)."""
    index = path / "model_index.json"
    if not index.is_file():
        raise UltraGenPipelineError(f"Wan pipeline folder not found: {path} (a diffusers Wan2.1-T2V-1.3B folder "
                                    "with model_index.json, vae, text_encoder, tokenizer and scheduler)")
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        name = None
    if name != "WanPipeline":
        raise UltraGenPipelineError(f"{index} describes {name or 'no pipeline'}, not a WanPipeline")


def make_wan_pipeline(model: UltraGenVideo, path: str | Path, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16, flow_shift: float | None = RELEASED_SHIFT,
                      tiled: bool = True) -> UltraGenPipeline:
    """:class:`UltraGenPipeline` from a local diffusers Wan folder (nothing downloaded): the model's transformer
    replaces the folder's, the VAE stays in float32 (tiled decoding, as released), the text encoder takes
    ``dtype``; ``flow_shift`` replaces the scheduler's (5, as the released DiffSynth sampler; None keeps it)."""
    path = Path(path).expanduser()
    _check_wan_folder(path)
    try:
        pipe = _diffusers().WanPipeline.from_pretrained(str(path), transformer=model.transformer, local_files_only=True,
                                           dtype={"vae": torch.float32, "default": dtype})
    except (OSError, ValueError) as e:
        raise UltraGenPipelineError(f"cannot load the Wan pipeline in {path}: {str(e).strip().splitlines()[0]}") \
            from None
    c = model.config
    if pipe.text_encoder.config.d_model != c.text_dim or pipe.vae.config.z_dim != c.in_channels:
        raise UltraGenPipelineError(
            f"the Wan pipeline in {path} does not fit {model.__class__.__name__}: text width "
            f"{pipe.text_encoder.config.d_model} and latent channels {pipe.vae.config.z_dim}, the transformer takes "
            f"{c.text_dim} and {c.in_channels}")
    if flow_shift is not None and "flow_shift" in pipe.scheduler.config:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=flow_shift)
    if tiled:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return UltraGenPipeline(pipe.to(device), model)


# --------------------------------------------------------------------------------------------- checkpoints

# DiffSynth-Studio WanModel names (as in ultragen_1080p.ckpt) -> diffusers WanTransformer3DModel names.
_TOP = {
    "text_embedding.0.": "condition_embedder.text_embedder.linear_1.",
    "text_embedding.2.": "condition_embedder.text_embedder.linear_2.",
    "time_embedding.0.": "condition_embedder.time_embedder.linear_1.",
    "time_embedding.2.": "condition_embedder.time_embedder.linear_2.",
    "time_projection.1.": "condition_embedder.time_proj.",
    "head.head.": "proj_out.",
    "head.modulation": "scale_shift_table",
    "patch_embedding.": "patch_embedding.",
}
_ATTN = {"q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "o.": "to_out.0.", "norm_q.": "norm_q.", "norm_k.": "norm_k."}
_BRANCH = {
    "q_lora_1.": "global_q_lora.", "k_lora_1.": "global_k_lora.", "v_lora_1.": "global_v_lora.",
    "q_lora_2.": "hier_q_lora.", "k_lora_2.": "hier_k_lora.", "v_lora_2.": "hier_v_lora.",
    "alpha_time_embedding.0.": "gate_global.embedder.linear_1.",
    "alpha_time_embedding.2.": "gate_global.embedder.linear_2.",
    "alpha_time_projection.1.": "gate_global.proj.",
    "alpha_time_embedding2.0.": "gate_hier.embedder.linear_1.",
    "alpha_time_embedding2.2.": "gate_hier.embedder.linear_2.",
    "alpha_time_projection2.1.": "gate_hier.proj.",
    "downsample_conv.": "global_down.", "upsample_conv.": "global_refine.",
    "downsample_conv_hierachcal.": "hier_down.", "upsample_conv_hierachcal.": "hier_refine.",
}
_BLOCK = {"modulation": "scale_shift_table", "norm3.": "norm2.", "ffn.0.": "ffn.net.0.proj.", "ffn.2.": "ffn.net.2."}


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return None


def official_to_diffusers_key(key: str) -> str:
    """One official (DiffSynth) key -> its diffusers/processor name; an unknown key raises ``KeyError``."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m is None:
        new = _rename(key, _TOP)
    else:
        block, rest = m.groups()
        new = None
        for prefix, target in (("self_attn.", "attn1."), ("cross_attn.", "attn2.")):
            if rest.startswith(prefix):
                sub = rest[len(prefix):]
                base = _rename(sub, _ATTN)
                branch = _rename(sub, _BRANCH) if prefix == "self_attn." else None
                new = target + base if base else (target + "processor." + branch if branch else None)
        new = new or _rename(rest, _BLOCK)
        new = f"blocks.{block}.{new}" if new else None
    if new is None:
        raise KeyError(f"unexpected key {key!r} in the official UltraGen layout")
    return new


def convert_official(state_dict: Mapping[str, torch.Tensor], layout: str = "diffsynth") -> dict[str, torch.Tensor]:
    """The released ``ultragen_1080p.ckpt`` layout (DiffSynth ``WanModel`` names) -> this module's names.

    Key names only; the strict load that follows checks every key and shape against the model."""
    if layout != "diffsynth":
        raise ValueError(f"unknown UltraGen checkpoint layout {layout!r} (known: diffsynth)")
    return {official_to_diffusers_key(k): v for k, v in state_dict.items()}


def to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_official` (diffusers names, with or without :class:`UltraGenVideo`'s
    ``transformer.`` prefix -> the released layout), e.g. to export."""
    return {_official_name(k.removeprefix("transformer.")): v for k, v in state_dict.items()}


def _official_name(key: str) -> str:
    """One diffusers/processor key -> its official (DiffSynth) name."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m is None:
        new = _rename(key, {v: k for k, v in _TOP.items()})
    else:
        block, rest = m.groups()
        new = None
        for prefix, target in (("attn1.processor.", "self_attn."), ("attn1.", "self_attn."), ("attn2.", "cross_attn.")):
            if new is None and rest.startswith(prefix):
                table = _BRANCH if prefix == "attn1.processor." else _ATTN
                sub = _rename(rest[len(prefix):], {v: k for k, v in table.items()})
                new = target + sub if sub else None
        new = new or _rename(rest, {v: k for k, v in _BLOCK.items()})
        new = f"blocks.{block}.{new}" if new else None
    if new is None:
        raise KeyError(f"key {key!r} has no name in the official UltraGen layout")
    return new


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``diffsynth`` for the released checkpoint's names, ``diffusers`` for a bare Wan/UltraGen state dict (no
    ``transformer.`` prefix), else ``native`` (:class:`UltraGenVideo`'s own)."""
    if any(k.startswith(("head.head.", "blocks.0.self_attn.")) for k in state_dict):
        return "diffsynth"
    return "native" if all(k.startswith("transformer.") for k in state_dict) else "diffusers"


def convert_to_native(state_dict: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The card's converter: the released layout or a bare diffusers state dict -> :class:`UltraGenVideo`'s keys."""
    if layout == "diffsynth":
        state_dict = convert_official(state_dict)
    elif layout != "diffusers":
        raise ValueError(f"unknown UltraGen checkpoint layout {layout!r} (known: diffsynth, diffusers)")
    return {f"transformer.{k}": v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------- registration

WAN21_1_3B = dict(num_layers=30, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, text_dim=4096,
                  freq_dim=256, in_channels=16, out_channels=16, lora_rank=64)
# Tiny Wan for CPU tests: 5 blocks, so blocks 0-2 stay dense (released) and blocks 3 (K=5) and 4 (K=4) are UltraGen.
WAN_TINY = dict(num_layers=5, num_attention_heads=2, attention_head_dim=16, ffn_dim=48, text_dim=40, freq_dim=256,
                in_channels=16, out_channels=16, lora_rank=4)

_PAPER = (
    PaperMetric("1080P, 81 frames", "speedup_vs_wan", 2.69,
                "paper Table 2: 13 min vs 35 min per video for native Wan2.1-1.3B (end to end, 4xH20)"),
    PaperMetric("4K", "speedup_vs_wan", 4.78,
                "paper Table 2: 1 h 50 min vs 8 h 46 min; the 4K model was trained on 29 frames"),
    PaperMetric("1080P", "hd_fvd", 214.12, "paper Table 1 (native Wan: 821.54)"),
    PaperMetric("4K", "hd_fvd", 424.61, "paper Table 1 (native Wan: 1272.08)"),
    PaperMetric("1080P", "clip_score", 0.2654, "paper Table 1, CLIP-L cosine"),
    PaperMetric("1080P", "temporal_consistency", 0.9827, "paper Table 1"),
)

register(ModelCard(
    family="ultragen", display_name="UltraGen (Wan2.1)", task="generation",
    paper_title="UltraGen: High-Resolution Video Generation with Hierarchical Attention",
    arxiv_id="2510.18775", official_repo="https://github.com/sjtuplayer/UltraGen", license="Apache-2.0",
    default_variant="ultragen_tiny",
    description="Wan2.1-T2V-1.3B whose self-attention runs three branches (local K x K windows, 4x-compressed "
                "global, 2x-compressed windows) fused by timestep gates; diffusers WanTransformer3DModel host.",
    convert_state_dict=convert_to_native, detect_layout=detect_layout,
    variants=(
        Variant(name="ultragen_tiny", builder=UltraGenVideo, kwargs=WAN_TINY, resolution_multiple=8,
                resolutions=(256,),
                notes="Tiny random Wan (width 32, 5 blocks) for CPU tests and the harness; no weights."),
        Variant(name="ultragen_1080p", builder=UltraGenVideo, kwargs=WAN21_1_3B, params=1_696_002_112,
                resolution_multiple=8, resolutions=(480, 720, 1080),
                paper_metrics=_PAPER,
                weights=(WeightSource(description="ultragen_1080p.ckpt: DiffSynth-Studio WanModel layout with "
                                                  "UltraGen's branch parameters (1,881 keys)",
                                      url="https://huggingface.co/JTUplayer/Ultragen",
                                      filename="ultragen_1080p.ckpt", layout="diffsynth"),),
                notes="Wan2.1-T2V-1.3B shape (width 1536, 30 blocks, 12 heads x 128); blocks 0-2 and 27-29 dense "
                      "as released. Needs the base Wan2.1 VAE and umT5 for videos."),
    ),
))
