"""Scale-DiT (arXiv 2510.16325): windowed attention with low-resolution anchors on diffusers' FLUX transformer.

Scale-DiT lets a FLUX transformer denoise 4K-8K images by replacing dense attention with local windows of
16x16 latent tokens plus clean low-resolution guidance tokens. The host stays diffusers'
``FluxTransformer2DModel`` (FLUX.1-dev, v1 code) or ``Flux2Transformer2DModel`` (FLUX.2-klein, v4 code),
unmodified; this file adds

* :class:`ScaleDiTLayout`: the token layout ``[text T | high-res N | low-res M]`` and the attention rules;
* :class:`ScaleDiTAttnProcessor`: a diffusers attention processor (installed with ``set_attn_processor``)
  that runs the rules as a FlexAttention ``BlockMask`` (efficient) or a boolean SDPA mask (reference, small
  sizes only: a dense N x N mask is refused above :data:`DENSE_MASK_LIMIT` tokens);
* one small patch (:func:`enable_token_modulation`) giving the blocks a per-token timestep embedding, so the
  low-res guidance tokens sit at t = 0 while the high-res tokens sit at t;
* :class:`ScaleDiTTransformer`, the registered model: the stock transformer plus the above;
  :class:`ScaleDiTFlux2Transformer` the same on FLUX.2 (:class:`ScaleDiTParallelAttnProcessor` for its fused
  single-stream attention; the t = 0 modulation as hooks on its model-level modulation modules);
* :func:`load_lora`, the official LoRA (686 tensors on FLUX.1-dev, 194 on FLUX.2-klein-9B) through diffusers'
  peft loading, applied per token group as the official forward does;
* :class:`ScaleDiTPipeline`, the two-stage pipeline on diffusers' FLUX pipeline components.

Token order is window-first (each window one contiguous span, windows in raster order) and the low-res
position ids are multiplied by the resolution factor (scaled anchors, NTK-scaled RoPE); both are done outside
the model by permuting hidden states and ids together, since FLUX reads positions only from the ids.

The official code has two mask builders that disagree; the inference (block-map) rules are the default and
the training (dense-builder) rules an option. ``q -> k`` reads "a query of group q may attend to key k":

======================  ==========================================  ==========================================
rule                    inference (``rules="inference"``, default)   training (``rules="training"``)
======================  ==========================================  ==========================================
text -> text, high-res  all                                          all
text -> low-res         no (``text_attend="all"``: yes)              no (``text_attend="all"``: yes)
high-res -> text        all                                          all
high-res -> high-res    sliding square, radius window/2 (17x17)      same or 4-neighbour window (Manhattan 1)
                                                                     of the grid shifted by one token
high-res -> low-res     co-located low-res window and its +-1        the 256-token low-res chunk of its group
                        neighbours in flattened window index         of consecutive windows (all if M <= 256)
low-res -> text         no                                           yes
low-res -> high-res     no                                           no
low-res -> low-res      square, radius low-res window/2 (5x5)        256-token diagonal blocks (all if
                                                                     M <= 256); the last block is empty, as
                                                                     in the official builder
======================  ==========================================  ==========================================

"256" above is the window area (window**2 tokens). Our rules are defined on token coordinates, so they do not
depend on the sequence order; the official dense builder computes its non-sliding window rule on raster
indices even when the tokens are permuted, which we do not copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MethodType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, register
from glocal.zoo.weights import CheckpointError

PATCH_PX = 16  # FLUX: 8x VAE downsampling, then 2x2 latent patches packed into one token
RULES = ("inference", "training")
TEXT_ATTEND = ("limited", "all")
ATTENTIONS = ("scaledit", "dense-sdpa", "dense-flex")
IMPLS = ("flex", "sdpa")
DENSE_MASK_LIMIT = 16_384  # tokens; above this a boolean L x L mask is refused (the BlockMask path has no limit)
BLOCK = 128  # FlexAttention block size (query and key)
_GROUP_PAD = 3  # group id of padding positions (never allowed)

FLUX1_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                 axes_dims_rope=(16, 56, 56))
FLUX_TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
                 axes_dims_rope=(4, 6, 6))
# FLUX.2-klein-9B (and klein-base-9B): the host of the official v4 code and of its LoRA (manifest host_config)
FLUX2_KLEIN_9B = dict(patch_size=1, in_channels=128, num_layers=8, num_single_layers=24, attention_head_dim=128,
                      num_attention_heads=32, joint_attention_dim=12288, mlp_ratio=3.0, guidance_embeds=False,
                      axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, timestep_guidance_channels=256, eps=1e-6)
FLUX2_TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, mlp_ratio=3.0, guidance_embeds=False,
                  axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, timestep_guidance_channels=32)

# LoRA targets of the official FLUX.1 config (peft matches the regex with re.fullmatch on module names).
LORA_TARGETS = (r"(.*x_embedder|.*(?<!single_)transformer_blocks\.[0-9]+\.norm1\.linear"
                r"|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_[qkv]"
                r"|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_out\.0"
                r"|.*(?<!single_)transformer_blocks\.[0-9]+\.ff\.net\.2"
                r"|.*single_transformer_blocks\.[0-9]+\.(norm\.linear|proj_mlp|proj_out|attn\.to_[qkv]))")
# LoRA targets of the official FLUX.2 config (train_flux2.yaml): the fused single-block projections, no AdaLN
LORA_TARGETS_FLUX2 = (r"(.*x_embedder|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_[qkv]"
                      r"|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_out\.0"
                      r"|.*(?<!single_)transformer_blocks\.[0-9]+\.ff\.linear_(in|out)"
                      r"|.*single_transformer_blocks\.[0-9]+\.attn\.(to_qkv_mlp_proj|to_out))")


class ScaleDiTError(ValueError):
    """Bad Scale-DiT input: a size off the window grid, an unknown rule set or attention mode (one line)."""


def _need_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("scaledit needs diffusers (and peft for its LoRA): pip install 'glocal[generation]'") from e
    return diffusers


# ------------------------------------------------------------------------------------------------ layout
def window_order(height: int, width: int, window: int) -> torch.Tensor:
    """Raster indices of a height x width grid in window-first order (windows raster, raster inside each)."""
    idx = torch.arange(height * width).view(height // window, window, width // window, window)
    return idx.permute(0, 2, 1, 3).reshape(-1)


def _band(n: int, r: int) -> int:
    """Ordered pairs (i, j) in range(n) with |i - j| <= r (closed form)."""
    return n * n if n <= r else n * (2 * r + 1) - r * (r + 1)


class _Gather:
    """The table columns at some positions, gathered when read: the token-level view :meth:`rules_on` reads."""

    def __init__(self, t: dict[str, torch.Tensor], idx: torch.Tensor) -> None:
        self.t, self.idx = t, idx

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.t[name][self.idx]


@dataclass(frozen=True, eq=False)
class _Tri:
    """A rule over every query-key pair of block pairs: ``some`` (it may hold for a pair; never misses one) and
    ``every`` (it surely holds for all pairs). ``&``, ``|`` and ``~`` keep both bounds sound; bools are constants."""

    some: torch.Tensor
    every: torch.Tensor

    def __and__(self, o: _Tri | bool) -> _Tri | bool:
        if isinstance(o, bool):
            return self if o else False
        return _Tri(self.some & o.some, self.every & o.every)

    def __or__(self, o: _Tri | bool) -> _Tri | bool:
        if isinstance(o, bool):
            return True if o else self
        return _Tri(self.some | o.some, self.every | o.every)

    def __invert__(self) -> _Tri:
        return _Tri(~self.every, ~self.some)

    __rand__, __ror__ = __and__, __or__


@dataclass(frozen=True, eq=False)
class _Range:
    """Integer intervals [lo, hi] (tensors) holding one table column of the tokens of blocks: interval arithmetic
    for the operations :meth:`ScaleDiTLayout.rules_on` uses, comparisons giving a :class:`_Tri`."""

    lo: torch.Tensor
    hi: torch.Tensor

    def view(self, *shape: int) -> _Range:
        return _Range(self.lo.view(*shape), self.hi.view(*shape))

    def __sub__(self, o: _Range) -> _Range:
        return _Range(self.lo - o.hi, self.hi - o.lo)

    def __add__(self, o: _Range) -> _Range:
        return _Range(self.lo + o.lo, self.hi + o.hi)

    def __floordiv__(self, c: int) -> _Range:  # c > 0: monotone
        return _Range(self.lo // c, self.hi // c)

    def abs(self) -> _Range:
        return _Range(torch.maximum(self.lo, -self.hi).clamp(min=0), torch.maximum(self.lo.abs(), self.hi.abs()))

    def __le__(self, c: int) -> _Tri:
        return _Tri(self.lo <= c, self.hi <= c)

    def __eq__(self, o: _Range | int) -> _Tri:  # type: ignore[override]
        lo, hi = (o.lo, o.hi) if isinstance(o, _Range) else (o, o)
        return _Tri((self.lo <= hi) & (lo <= self.hi), (self.lo == self.hi) & (lo == hi) & (self.lo == lo))

    def __ne__(self, o: _Range | int) -> _Tri:  # type: ignore[override]
        return ~(self == o)


@dataclass(frozen=True)
class _GroupBlocks:
    """One token group's blocks: ``run`` (the blocks holding its tokens, one run as groups are contiguous), each
    column's range over the group's tokens per block (``whole`` [blocks]), and the same per part (``parts``
    [blocks, P], ``real`` [blocks, P] telling the parts that exist): a block's tokens split at the widest hole of
    every column, so a part's columns have no holes (a shifted window that wraps round leaves one)."""

    run: slice
    whole: dict[str, _Range]
    parts: dict[str, _Range]
    real: torch.Tensor


def _ranges(vals: dict[str, torch.Tensor], member: torch.Tensor, index: torch.Tensor, n: int) -> dict[str, _Range]:
    """Per column, [min, max] over the member tokens of each of ``n`` cells (``index``: a token's cell)."""
    idx = index[member]
    out = {}
    for name, v in vals.items():
        lo = v.new_full((n,), torch.iinfo(v.dtype).max).scatter_reduce(0, idx, v[member], "amin")
        hi = v.new_full((n,), torch.iinfo(v.dtype).min).scatter_reduce(0, idx, v[member], "amax")
        out[name] = _Range(lo, hi)
    return out


def _group_blocks(t: dict[str, torch.Tensor], block: int) -> dict[int, _GroupBlocks]:
    """:class:`_GroupBlocks` of the text, high-res and low-res tokens: O(L log block) work."""
    groups = t["group"].view(-1, block)
    out = {}
    for g in range(_GROUP_PAD):
        rows = (groups == g).any(1).nonzero().flatten()
        if not rows.numel():
            continue
        run = slice(int(rows[0]), int(rows[-1]) + 1)
        mine = groups[run] == g
        nblk = mine.shape[0]
        vals = {name: col.view(-1, block)[run] for name, col in t.items() if name != "group"}
        blocks = torch.arange(nblk, device=mine.device)[:, None].expand(nblk, block)
        key = torch.zeros_like(blocks)
        for bit, v in enumerate(vals.values()):  # split at the widest hole (gap > 1) between sorted member values
            ordered = v.masked_fill(~mine, torch.iinfo(v.dtype).max).sort(1).values
            gaps = ordered.diff(dim=1).masked_fill(torch.arange(block - 1, device=v.device) >= mine.sum(1, True) - 1, 0)
            widest, at = gaps.max(1)
            cut = torch.where(widest > 1, ordered.gather(1, at[:, None] + 1)[:, 0], torch.iinfo(v.dtype).max)
            key |= (v >= cut[:, None]).long() << bit
        cells = 1 << len(vals)
        real = torch.zeros(nblk * cells, dtype=torch.bool, device=mine.device)
        real[(blocks * cells + key)[mine]] = True
        parts = _ranges(vals, mine, blocks * cells + key, nblk * cells)
        real = real.view(nblk, cells)
        keep = torch.argsort((~real).to(torch.int8), dim=1, stable=True)[:, : int(real.sum(1).max())]
        parts = {n: _Range(r.lo.view(nblk, cells).gather(1, keep), r.hi.view(nblk, cells).gather(1, keep))
                 for n, r in parts.items()}
        whole = _ranges(vals, mine, blocks, nblk)
        out[g] = _GroupBlocks(run, whole, parts, real.gather(1, keep))
    return out


@dataclass(frozen=True)
class ScaleDiTLayout:
    """The token layout ``[text | high-res | low-res]`` of one attention call and the rules that connect it.

    ``height``/``width`` count high-res tokens; the low-res grid is ``factor`` times smaller and its windows
    ``window // factor`` tokens wide, so both grids have the same windows. ``lowres=False`` drops the guidance
    tokens (the dense baseline's layout).
    """

    text: int
    height: int
    width: int
    window: int = 16
    factor: int = 4
    rules: str = "inference"
    text_attend: str = "limited"
    lowres: bool = True

    def __post_init__(self) -> None:
        if self.rules not in RULES:
            raise ScaleDiTError(f"unknown Scale-DiT rules {self.rules!r}; expected one of {', '.join(RULES)}")
        if self.text_attend not in TEXT_ATTEND:
            raise ScaleDiTError(f"unknown text_attend {self.text_attend!r}; expected one of {', '.join(TEXT_ATTEND)}")
        if self.window % self.factor:
            raise ScaleDiTError(f"window {self.window} is not a multiple of the low-res factor {self.factor}")
        for side in (self.height, self.width):
            if side <= 0 or side % self.window:
                raise ScaleDiTError(f"a token grid of {self.height}x{self.width} is not a multiple of the "
                                    f"{self.window}-token window")

    @classmethod
    def for_image(cls, side_px: int, text: int, window: int = 16, factor: int = 4, **kw: Any) -> ScaleDiTLayout:
        """The layout of a square image of ``side_px`` pixels (FLUX: one token per 16 x 16 pixels)."""
        unit = PATCH_PX * window
        if side_px <= 0 or side_px % unit:
            near = max(unit, round(side_px / unit) * unit)
            raise ScaleDiTError(f"image side {side_px} px is not a multiple of the {window}-token window "
                                f"({unit} px); try {near}")
        n = side_px // PATCH_PX
        return cls(text=text, height=n, width=n, window=window, factor=factor, **kw)

    @property
    def n_hi(self) -> int:
        return self.height * self.width

    @property
    def lo_height(self) -> int:
        return self.height // self.factor

    @property
    def lo_width(self) -> int:
        return self.width // self.factor

    @property
    def n_lo(self) -> int:
        return self.lo_height * self.lo_width if self.lowres else 0

    @property
    def lo_window(self) -> int:
        return self.window // self.factor

    @property
    def total(self) -> int:
        return self.text + self.n_hi + self.n_lo

    @property
    def windows(self) -> int:
        return (self.height // self.window) * (self.width // self.window)

    # ------------------------------------------------------------------- ids and permutations (outside the model)
    def hi_order(self) -> torch.Tensor:
        return window_order(self.height, self.width, self.window)

    def lo_order(self) -> torch.Tensor:
        return window_order(self.lo_height, self.lo_width, self.lo_window)

    def image_ids(self, axes: int = 3) -> torch.Tensor:
        """FLUX ``img_ids`` [N + M, axes] in sequence order: high-res (window-first), then low-res ids x factor.
        FLUX.1 ids are (0, y, x); FLUX.2 ids are (0, y, x, 0) (``axes=4``: time, height, width, layer)."""
        def grid(h: int, w: int, scale: int) -> torch.Tensor:
            ids = torch.zeros(h * w, axes)
            ids[:, 1] = torch.arange(h).repeat_interleave(w) * scale
            ids[:, 2] = torch.arange(w).repeat(h) * scale
            return ids

        hi = grid(self.height, self.width, 1)[self.hi_order()]
        if not self.lowres:
            return hi
        return torch.cat([hi, grid(self.lo_height, self.lo_width, self.factor)[self.lo_order()]])

    def pack(self, hi: torch.Tensor, lo: torch.Tensor | None = None) -> torch.Tensor:
        """Raster-ordered packed latents [B, N, C] (+ low-res [B, M, C]) -> the model's sequence order."""
        x = hi[:, self.hi_order().to(hi.device)]
        if self.lowres:
            if lo is None:
                raise ScaleDiTError("this layout has low-res guidance tokens: pass the low-res latents")
            x = torch.cat([x, lo[:, self.lo_order().to(lo.device)]], dim=1)
        return x

    def unpack(self, out: torch.Tensor) -> torch.Tensor:
        """The model's output [B, N (+ M), C] -> high-res tokens in raster order [B, N, C]."""
        inv = torch.argsort(self.hi_order()).to(out.device)
        return out[:, : self.n_hi][:, inv]

    # ------------------------------------------------------------------------------------------ the rules
    def tables(self, device: torch.device | str = "cpu", pad_to: int = 1) -> dict[str, torch.Tensor]:
        """Per sequence position: group (0 text, 1 high-res, 2 low-res, 3 padding), grid y/x, window index,
        position inside the group, and the training rules' shifted window coordinates; padded to ``pad_to``."""
        n_pad = -self.total % pad_to
        parts = {"group": [], "y": [], "x": [], "win": [], "seq": [], "sy": [], "sx": []}

        def add(group: int, h: int, w: int, win: int, order: torch.Tensor | None, n: int) -> None:
            r = order if order is not None else torch.zeros(n, dtype=torch.long)
            y, x = (r // w, r % w) if order is not None else (r, r)
            parts["group"].append(torch.full((n,), group))
            parts["y"].append(y)
            parts["x"].append(x)
            parts["win"].append((y // win) * (max(w, 1) // win) + x // win if order is not None else r)
            parts["seq"].append(torch.arange(n))
            parts["sy"].append(((y + 1) % h) // win if order is not None else r)
            parts["sx"].append(((x + 1) % w) // win if order is not None else r)

        add(0, 1, 1, 1, None, self.text)
        add(1, self.height, self.width, self.window, self.hi_order(), self.n_hi)
        if self.lowres:
            add(2, self.lo_height, self.lo_width, self.lo_window, self.lo_order(), self.n_lo)
        add(_GROUP_PAD, 1, 1, 1, None, n_pad)
        return {k: torch.cat(v).to(device=device, dtype=torch.int32) for k, v in parts.items()}

    def allowed(self, t: dict[str, torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Whether query positions ``q`` may attend to key positions ``k`` (broadcastable index tensors)."""
        return self.rules_on(_Gather(t, q), _Gather(t, k))

    def rules_on(self, q: Any, k: Any) -> Any:
        """The rules, read from the query and key columns ``q[name]``, ``k[name]`` (names of :meth:`tables`).

        The one definition of the rules: on gathered tensors it is the token-level mask (:meth:`allowed`); on
        per-block value ranges (:class:`_Range`, groups as ints) it bounds a block pair (:meth:`block_structure`).
        """
        gq, gk = q["group"], k["group"]
        text_q, hi_q, lo_q = gq == 0, gq == 1, gq == 2
        keys_of_text = (gk < 2) if self.text_attend == "limited" else (gk < _GROUP_PAD)
        ok = text_q & keys_of_text
        hi_hi = hi_q & (gk == 1)
        hi_lo = hi_q & (gk == 2)
        lo_lo = lo_q & (gk == 2)
        if self.rules == "inference":
            r, rl = self.window // 2, self.lo_window // 2
            dy, dx = (q["y"] - k["y"]).abs(), (q["x"] - k["x"]).abs()
            near, near_lo = (dy <= r) & (dx <= r), (dy <= rl) & (dx <= rl)
            ok = ok | (hi_q & (gk == 0)) | (hi_hi & near) | (hi_lo & ((q["win"] - k["win"]).abs() <= 1))
            return ok | (lo_lo & near_lo)
        area = self.window * self.window
        shifted = (q["sy"] - k["sy"]).abs() + (q["sx"] - k["sx"]).abs() <= 1
        ok = ok | ((gq < _GROUP_PAD) & (gk == 0)) | (hi_hi & shifted)
        if self.n_lo <= area:
            return ok | hi_lo | lo_lo
        group_windows = math.ceil(self.windows / math.ceil(self.n_lo / area))
        ok = ok | (hi_lo & (q["win"] // group_windows == k["seq"] // area))
        last = (self.n_lo - 1) // area
        same = q["seq"] // area == k["seq"] // area
        return ok | (lo_lo & same & (q["seq"] // area != last))

    def mask_rows(self, chunk: int = BLOCK, device: torch.device | str = "cpu",
                  pad_to: int = 1) -> Iterator[tuple[int, torch.Tensor]]:
        """The mask ``chunk`` query rows at a time: (first row, bool [rows, L padded]); memory O(chunk * L)."""
        t = self.tables(device, pad_to)
        n = t["group"].numel()
        keys = torch.arange(n, device=device)[None, :]
        for q0 in range(0, n, chunk):
            q = torch.arange(q0, min(q0 + chunk, n), device=device)[:, None]
            yield q0, self.allowed(t, q, keys)

    def dense_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The boolean [L, L] mask, for the SDPA reference at small sizes; refused above DENSE_MASK_LIMIT."""
        if self.total > DENSE_MASK_LIMIT:
            raise ScaleDiTError(f"a dense {self.total}x{self.total} mask is refused above {DENSE_MASK_LIMIT} "
                                "tokens; use impl='flex' (BlockMask)")
        return torch.cat([rows for _, rows in self.mask_rows(1024, device)])

    def count_pairs(self, device: torch.device | str = "cpu") -> int:
        """Allowed query-key pairs, counted from the rules (chunked, never a dense mask)."""
        return sum(int(rows.sum()) for _, rows in self.mask_rows(1024, device))

    def pair_formula(self) -> int:
        """Allowed query-key pairs in closed form (the attention FLOPs formula's pair count)."""
        T, N, M, nw, area = self.text, self.n_hi, self.n_lo, self.windows, self.window ** 2
        text = T * (T + N + (M if self.text_attend == "all" else 0))
        if self.rules == "inference":
            r, rl = self.window // 2, self.lo_window // 2
            hi_hi = _band(self.height, r) * _band(self.width, r)
            hi_lo = area * self.lo_window ** 2 * (3 * nw - 2) if M else 0
            lo_lo = _band(self.lo_height, rl) * _band(self.lo_width, rl) if M else 0
            return text + N * T + hi_hi + hi_lo + lo_lo
        wh, ww = self.height // self.window, self.width // self.window
        hi_hi = area * area * (nw + 2 * (wh * (ww - 1) + (wh - 1) * ww))
        if M <= area:
            return text + (N + M) * T + hi_hi + N * M + M * M
        chunks = math.ceil(M / area)
        group = math.ceil(nw / chunks)
        hi_lo = sum(area * max(0, min((i + 1) * group, nw) - i * group) * min(area, M - i * area)
                    for i in range(chunks))
        return text + (N + M) * T + hi_hi + hi_lo + (chunks - 1) * area * area

    def dense_pairs(self) -> int:
        """Pairs of dense attention over ``[text | high-res]`` at the same size (the baseline)."""
        return (self.text + self.n_hi) ** 2

    def block_structure(self, device: torch.device | str = "cpu", block: int = BLOCK,
                        exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(partial, full) over [query block, key block] of the padded sequence, from per-block value ranges of
        the tables fed through the rules (:meth:`rules_on`): O(blocks^2) work and memory, never a token pair.

        ``partial | full`` covers every block holding an allowed pair and ``full`` holds only blocks whose pairs are
        all allowed (padding never is). Pairs the whole-block ranges leave open are re-decided on the blocks' parts
        (:class:`_GroupBlocks`); the result is exact where every part is a grid rectangle (blocks aligned with the
        windows, as on FLUX), else a few blocks too many are partial, never a wrong one. ``exact=True`` reduces the
        token mask instead: O(L^2), the reference.
        """
        if exact:
            return self._block_structure_exact(device, block)
        t = self.tables(device, pad_to=block)
        nb = t["group"].numel() // block
        some = torch.zeros(nb, nb, dtype=torch.bool, device=device)
        every = torch.ones_like(some)
        groups = _group_blocks(t, block)
        for gq, q in groups.items():
            for gk, k in groups.items():
                rule = self.rules_on({"group": gq, **{n: v.view(-1, 1) for n, v in q.whole.items()}},
                                     {"group": gk, **{n: v.view(1, -1) for n, v in k.whole.items()}})
                if isinstance(rule, _Tri):
                    rule = self._refine(rule, gq, q, gk, k)
                some[q.run, k.run] |= rule.some if isinstance(rule, _Tri) else rule
                every[q.run, k.run] &= rule.every if isinstance(rule, _Tri) else rule
        pad = (t["group"].view(nb, block) == _GROUP_PAD).any(1)
        full = every & some & ~pad[:, None] & ~pad[None, :]
        return some & ~full, full

    def _refine(self, rule: _Tri, gq: int, q: _GroupBlocks, gk: int, k: _GroupBlocks, cells: int = 1 << 20) -> _Tri:
        """Re-decide the block pairs that whole-block ranges leave open (some, not every) part against part:
        a pair of blocks may hold an allowed pair if a pair of their parts may, and is full if every pair of parts
        is. Work: open pairs x parts^2 (parts are 1-4 per block on window-aligned layouts)."""
        shape = (q.real.shape[0], k.real.shape[0])
        some, every = rule.some.expand(shape).clone(), rule.every.expand(shape).clone()
        open_q, open_k = (some & ~every).nonzero(as_tuple=True)
        chunk = max(1, cells // (q.real.shape[1] * k.real.shape[1]))  # part pairs per step: memory O(cells)
        for c in range(0, open_q.numel(), chunk):
            a, b = open_q[c:c + chunk], open_k[c:c + chunk]
            part = self.rules_on({"group": gq, **{n: _Range(r.lo[a, :, None], r.hi[a, :, None])
                                                  for n, r in q.parts.items()}},
                                 {"group": gk, **{n: _Range(r.lo[b, None, :], r.hi[b, None, :])
                                                  for n, r in k.parts.items()}})
            real = q.real[a, :, None] & k.real[b, None, :]
            some[a, b] = (part.some & real).flatten(1).any(1)
            every[a, b] = (part.every | ~real).flatten(1).all(1)
        return _Tri(some, every)

    def _block_structure_exact(self, device: torch.device | str, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(partial, full) reduced from the token mask in row chunks: exact, O(L^2) (the reference for tests)."""
        nb = -(-self.total // block)
        full = torch.zeros(nb, nb, dtype=torch.bool, device=device)
        partial = torch.zeros_like(full)
        rows_per_chunk = block * max(1, (1 << 22) // (block * nb * block))
        for q0, rows in self.mask_rows(rows_per_chunk, device, pad_to=block):
            b = rows.view(-1, block, nb, block)
            any_, all_ = b.any(dim=(1, 3)), b.all(dim=(1, 3))
            i = q0 // block
            full[i:i + b.shape[0]] = all_
            partial[i:i + b.shape[0]] = any_ & ~all_
        return partial, full

    def block_mask(self, device: torch.device | str = "cpu", block: int = BLOCK, exact: bool = False) -> Any:
        """A FlexAttention ``BlockMask`` of the rules: :meth:`block_structure`, the exact rules as mask_mod."""
        from glocal.zoo.layers.block_mask import block_mask_from_flags

        t = self.tables(device, pad_to=block)
        partial, full = self.block_structure(device, block, exact)
        layout = self

        def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            return layout.allowed(t, q_idx, kv_idx)

        return block_mask_from_flags(partial, full, block, mask_mod, self.total)


def attention_macs(layout: ScaleDiTLayout, heads: int, head_dim: int, layers: int, dense: bool = False) -> int:
    """Attention matmul MACs of one forward: pairs x head_dim x 2 (QK^T and PV) x heads x layers."""
    pairs = layout.dense_pairs() if dense else layout.pair_formula()
    return pairs * head_dim * 2 * heads * layers


def step_macs(config: dict[str, Any], tokens: int, text: int, attn_macs: int, block_d2: float = 12) -> int:
    """MACs of one transformer forward: the linear layers of every block (``block_d2`` d^2 per token in both block
    kinds: 12 on FLUX.1, 4 + 3 x mlp_ratio = 13 on FLUX.2's SwiGLU blocks), the embedders and the output
    projection, plus the attention matmuls (formula; AdaLN and norms omitted)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    blocks = config["num_layers"] + config["num_single_layers"]
    image = tokens - text
    io = image * config["in_channels"] * d * 2 + text * config["joint_attention_dim"] * d
    return int(tokens * block_d2 * d * d * blocks) + io + attn_macs


# ------------------------------------------------------------------------------------------ the processor
@lru_cache(maxsize=1)
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _rows_linear(layer: nn.Module, x: torch.Tensor, lora: bool) -> torch.Tensor:
    """``layer(x)``, with a peft LoRA layer's adapter switched off unless ``lora`` (its base layer alone)."""
    if not lora and hasattr(layer, "base_layer"):
        return layer.base_layer(x)
    return layer(x)


def _grouped_linear(layer: nn.Module, x: torch.Tensor, lowres: int, lora: Any = None) -> torch.Tensor:
    """The official per-group LoRA: adapter active only on the last ``lowres`` rows (the guidance tokens).
    ``lora`` is the adapter-on call (default ``layer``); a layer gated by :func:`gate_lora_rows` gates itself."""
    if not lowres or not hasattr(layer, "base_layer") or (lora is None and hasattr(layer, "_scaledit_groups")):
        return (lora or layer)(x)
    return torch.cat([layer.base_layer(x[:, :-lowres]), (lora or layer)(x[:, -lowres:])], dim=1)


def _gated_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A peft LoRA layer's forward with the adapter on the guidance rows only (see :func:`gate_lora_rows`)."""
    def lora(rows: torch.Tensor) -> torch.Tensor:
        return type(self).forward(self, rows, *args, **kwargs)  # the class's (peft's) forward, adapter on

    return _grouped_linear(self, x, self._scaledit_groups.lowres, lora)


def gate_lora_rows(layer: nn.Module, groups: TokenGroups) -> None:
    """Make a peft LoRA layer apply its adapter to the guidance rows only (the last ``groups.lowres`` rows of its
    input), wherever the stock block calls it; the other rows get the base layer. Instance-level and idempotent;
    a bound method and an attribute, so ``copy.deepcopy`` of the model gates the copy by the copy's groups."""
    layer._scaledit_groups = groups
    layer.forward = MethodType(_gated_forward, layer)


@dataclass
class TokenGroups:
    """Per-forward state shared by the processor, the patched blocks or modulation hooks and the gated LoRA layers:
    ``lowres`` guidance tokens (the last image tokens), their t = 0 embedding, and the text / high-res counts."""

    lowres: int = 0
    lowres_temb: torch.Tensor | None = None
    text: int = 0
    high_res: int = 0


class ScaleDiTAttnProcessor:
    """Scale-DiT attention for diffusers' ``FluxAttention`` (FLUX.1, double- and single-stream blocks alike) and
    ``Flux2Attention`` (FLUX.2 double-stream blocks; :class:`ScaleDiTParallelAttnProcessor` serves its single-stream
    ``Flux2ParallelSelfAttention`` with this processor's mask).

    Every block kind sees ``[text | image]``, so one mask serves all. ``impl="flex"`` passes a ``BlockMask``
    through diffusers' ``flex`` backend (``compile=True`` calls a compiled ``flex_attention`` directly, which
    is what skips the masked blocks on CPU and GPU); ``impl="sdpa"`` passes the boolean mask to native SDPA
    (reference). Without a layout it is dense attention through the chosen implementation.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, layout: ScaleDiTLayout | None = None, impl: str = "flex", compile: bool = False,
                 groups: TokenGroups | None = None) -> None:
        if impl not in IMPLS:
            raise ScaleDiTError(f"unknown attention implementation {impl!r}; expected one of {', '.join(IMPLS)}")
        self.impl, self.compile, self.layout, self.mask, self._masks = impl, compile, None, None, None
        self.groups = groups if groups is not None else TokenGroups()
        if layout is not None:
            self.set_layout(layout)

    def set_layout(self, layout: ScaleDiTLayout | None, device: torch.device | str = "cpu") -> None:
        """Use ``layout`` from now on; its mask is built once per device (here on ``device``)."""
        self.layout, self._masks = layout, {}
        self.mask = self._mask_on(torch.device(device))

    def _mask_on(self, device: torch.device) -> Any:
        if self.layout is None:
            return None
        key = str(device)
        if key not in self._masks:
            self._masks[key] = (self.layout.block_mask(device) if self.impl == "flex"
                                else self.layout.dense_mask(device)[None, None])
        return self._masks[key]

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if self.layout is not None and query.shape[1] != self.layout.total:
            raise ScaleDiTError(f"the attention call has {query.shape[1]} tokens but the Scale-DiT layout has "
                                f"{self.layout.total}; call configure() for this size")
        if self.impl == "flex" and _get_current_dispatch_mode() is not None:
            # flex_attention cannot run under a dispatch mode (FLOP counters): exact masked SDPA by row chunks
            # does, at any size; the model's MACs come from the formula (glocal_macs) anyway
            return self._rows_reference(query, key, value)
        mask = self._mask_on(query.device) if self.layout is not None else self.mask
        if self.impl == "flex" and self.compile:
            q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
            return _compiled_flex()(q, k, v, block_mask=mask).permute(0, 2, 1, 3)
        backend = "flex" if self.impl == "flex" else "native"
        return dispatch_attention_fn(query, key, value, attn_mask=mask, backend=backend,
                                     parallel_config=self._parallel_config)

    def _rows_reference(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Masked SDPA 1,024 query rows at a time (memory O(rows x L), never an L x L mask); dense without layout."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if self.layout is None:
            return dispatch_attention_fn(query, key, value, attn_mask=self.mask, backend="native")
        out = [dispatch_attention_fn(query[:, q0:q0 + rows.shape[0]], key, value, attn_mask=rows[None, None],
                                     backend="native") for q0, rows in self.layout.mask_rows(1024, query.device)]
        return torch.cat(out, dim=1)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> Any:
        if type(attn).__name__ == "Flux2Attention":  # by name: FLUX.1 use needs no FLUX.2-capable diffusers
            from diffusers.models.transformers.transformer_flux2 import _get_qkv_projections as projections
        else:
            from diffusers.models.transformers.transformer_flux import _get_qkv_projections as projections
        query, key, value, e_query, e_key, e_value = projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if attn.added_kv_proj_dim is not None:
            e_query, e_key, e_value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (e_query, e_key, e_value))
            query = torch.cat([attn.norm_added_q(e_query), query], dim=1)
            key = torch.cat([attn.norm_added_k(e_key), key], dim=1)
            value = torch.cat([e_value, value], dim=1)
        hidden_states = self.attend_rotary(query, key, value, image_rotary_emb)
        if encoder_hidden_states is None:
            return hidden_states
        text = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states[:, :text], hidden_states[:, text:]
        hidden_states = attn.to_out[1](_grouped_linear(attn.to_out[0], hidden_states.contiguous(), self.groups.lowres))
        return hidden_states, attn.to_add_out(encoder_hidden_states.contiguous())

    def attend_rotary(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """RoPE on [B, L, H, D] queries and keys, then the masked attention; returns [B, L, H * D]."""
        from diffusers.models.embeddings import apply_rotary_emb

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        return self._attend(query, key, value).flatten(2, 3).to(query.dtype)


class ScaleDiTParallelAttnProcessor:
    """Scale-DiT attention for FLUX.2's single-stream ``Flux2ParallelSelfAttention`` (fused QKV + MLP-in projection
    ``to_qkv_mlp_proj``, fused output ``to_out``); the attention itself is ``base``'s (one mask for the model).
    A separate class because diffusers calls this attention's processor as ``(attn, x, attention_mask, rope)``."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, base: ScaleDiTAttnProcessor) -> None:
        self.base = base

    def __call__(self, attn: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        projected = attn.to_qkv_mlp_proj(hidden_states)
        qkv, mlp = projected.split([3 * attn.inner_dim, projected.shape[-1] - 3 * attn.inner_dim], dim=-1)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in qkv.chunk(3, dim=-1))
        query, key = attn.norm_q(query), attn.norm_k(key)
        hidden_states = self.base.attend_rotary(query, key, value, image_rotary_emb)
        return attn.to_out(torch.cat([hidden_states, attn.mlp_act_fn(mlp)], dim=-1))


def set_processors(transformer: nn.Module, processor: ScaleDiTAttnProcessor | None) -> None:
    """Install ``processor`` on every attention of a FLUX.1 or FLUX.2 transformer (FLUX.2's parallel single-stream
    attentions get a :class:`ScaleDiTParallelAttnProcessor` sharing it); ``None`` restores diffusers' defaults."""
    parallel = ScaleDiTParallelAttnProcessor(processor) if processor is not None else None
    for module in transformer.modules():
        if hasattr(module, "set_processor") and hasattr(module, "_default_processor_cls"):
            if processor is None:
                module.set_processor(module._default_processor_cls())
            else:
                module.set_processor(parallel if hasattr(module, "to_qkv_mlp_proj") else processor)


# --------------------------------------------------------------------------- per-token timestep modulation
# The one patch: FLUX's AdaLN modulation is per sample; Scale-DiT's guidance tokens (the last ``lowres`` image
# tokens) are modulated at t = 0 while the rest uses t. With no guidance tokens the stock forward runs.
def _modulation(norm: nn.Module, groups: TokenGroups, temb: torch.Tensor, parts: int) -> tuple[list, list]:
    """AdaLN parameters for the main tokens (LoRA off) and the guidance tokens (LoRA on), ``parts`` chunks each."""
    main = _rows_linear(norm.linear, norm.silu(temb), lora=False).chunk(parts, dim=1)
    guide = norm.linear(norm.silu(groups.lowres_temb)).chunk(parts, dim=1)
    return list(main), list(guide)


def _per_group(x: torch.Tensor, m: int, main: torch.Tensor, guide: torch.Tensor, op: str) -> torch.Tensor:
    """Apply a per-sample parameter to the main rows and another to the last ``m`` rows: scale, shift or gate."""
    def one(part: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return part * (1 + p[:, None]) if op == "scale" else part + p[:, None] if op == "shift" else part * p[:, None]

    return torch.cat([one(x[:, :-m], main), one(x[:, -m:], guide)], dim=1)


def _stock_without_guidance(fn: Any) -> Any:
    """A block forward (stock signature) that runs ``fn`` with guidance tokens and the stock forward without."""
    def forward(self: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                temb: torch.Tensor, image_rotary_emb: Any = None,
                joint_attention_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._scaledit_groups.lowres:
            return self._scaledit_stock_forward(hidden_states, encoder_hidden_states, temb, image_rotary_emb,
                                                joint_attention_kwargs)
        return fn(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs or {})

    forward.__doc__ = fn.__doc__
    return forward


@_stock_without_guidance
def _double_forward(self: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                    temb: torch.Tensor, image_rotary_emb: Any, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """``FluxTransformerBlock.forward`` with per-group AdaLN and per-group LoRA (image stream only)."""
    g, m = self._scaledit_groups, self._scaledit_groups.lowres
    a, b = _modulation(self.norm1, g, temb, 6)  # shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
    x = self.norm1.norm(hidden_states)
    x = _per_group(_per_group(x, m, a[1], b[1], "scale"), m, a[0], b[0], "shift")
    ctx, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(encoder_hidden_states, emb=temb)
    attn_out, ctx_out = self.attn(hidden_states=x, encoder_hidden_states=ctx, image_rotary_emb=image_rotary_emb,
                                  **kwargs)
    hidden_states = hidden_states + _per_group(attn_out, m, a[2], b[2], "gate")
    x = self.norm2(hidden_states)
    x = _per_group(_per_group(x, m, a[4], b[4], "scale"), m, a[3], b[3], "shift")
    for layer in self.ff.net[:2]:
        x = layer(x)
    x = _grouped_linear(self.ff.net[2], x, m)
    for layer in self.ff.net[3:]:
        x = layer(x)
    hidden_states = hidden_states + _per_group(x, m, a[5], b[5], "gate")
    encoder_hidden_states = encoder_hidden_states + c_gate_msa.unsqueeze(1) * ctx_out
    ctx = self.norm2_context(encoder_hidden_states) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
    encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * self.ff_context(ctx)
    if encoder_hidden_states.dtype == torch.float16:
        encoder_hidden_states = encoder_hidden_states.clip(-65504, 65504)
    return encoder_hidden_states, hidden_states


@_stock_without_guidance
def _single_forward(self: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                    temb: torch.Tensor, image_rotary_emb: Any, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """``FluxSingleTransformerBlock.forward`` with per-group AdaLN and per-group LoRA."""
    g, m = self._scaledit_groups, self._scaledit_groups.lowres
    text = encoder_hidden_states.shape[1]
    residual = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    a, b = _modulation(self.norm, g, temb, 3)  # shift, scale, gate
    x = _per_group(_per_group(self.norm.norm(residual), m, a[1], b[1], "scale"), m, a[0], b[0], "shift")
    mlp = self.act_mlp(_grouped_linear(self.proj_mlp, x, m))
    attn_out = self.attn(hidden_states=x, image_rotary_emb=image_rotary_emb, **kwargs)
    out = _grouped_linear(self.proj_out, torch.cat([attn_out, mlp], dim=2), m)
    hidden_states = residual + _per_group(out, m, a[2], b[2], "gate")
    if hidden_states.dtype == torch.float16:
        hidden_states = hidden_states.clip(-65504, 65504)
    return hidden_states[:, :text], hidden_states[:, text:]


def enable_token_modulation(transformer: nn.Module, groups: TokenGroups) -> None:
    """Give every block of a stock FLUX transformer the per-group forward above (instance-level, reversible)."""
    for blocks, fn in ((transformer.transformer_blocks, _double_forward),
                       (transformer.single_transformer_blocks, _single_forward)):
        for block in blocks:
            if not hasattr(block, "_scaledit_stock_forward"):
                block._scaledit_stock_forward = block.forward
            block._scaledit_groups = groups
            block.forward = MethodType(fn, block)


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class _Config:
    attention: str = "dense-sdpa"
    layout: ScaleDiTLayout | None = None
    options: dict[str, Any] = field(default_factory=dict)


class ScaleDiTTransformer(nn.Module):
    """diffusers' ``FluxTransformer2DModel`` (unmodified, as ``.transformer``) with Scale-DiT attention.

    :meth:`configure` picks the attention (``scaledit``, ``dense-sdpa``, ``dense-flex``) and the image side;
    :meth:`make_inputs` builds a step's keyword inputs in the model's token order; ``forward`` is one
    denoising step. The LoRA, when loaded, is active only with guidance tokens (as in the official code).
    """

    attentions = ATTENTIONS  # the first is this model's own attention (the generation task's default)
    id_axes = 3  # FLUX.1 position ids: (0, y, x)
    dense_processors = "FluxAttnProcessor"
    block_d2 = 12  # linear MACs per token and block, in units of d^2 (see step_macs)

    def __init__(self, config: dict[str, Any], window: int = 16, factor: int = 4, ntk_factor: float = 10.0,
                 text_tokens: int = 512, **overrides: Any) -> None:
        super().__init__()
        self.transformer = self._host({**config, **overrides})
        self.window, self.factor, self.ntk_factor, self.text_tokens = window, factor, ntk_factor, text_tokens
        self.base_theta = self.transformer.pos_embed.theta
        self.groups = TokenGroups()
        self.state = _Config()
        self.lora_loaded = False
        self._enable_token_modulation()

    def _host(self, config: dict[str, Any]) -> nn.Module:
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(**config)

    def _enable_token_modulation(self) -> None:
        enable_token_modulation(self.transformer, self.groups)

    def guidance_only_layers(self) -> list[nn.Module]:
        """LoRA layers gated to the guidance rows by :func:`gate_lora_rows` (FLUX.1: the x_embedder; the blocks'
        other guidance-only targets are gated inside the patched forwards and the processor)."""
        return [self.transformer.x_embedder]

    @property
    def config(self) -> Any:
        return self.transformer.config

    def layout(self, side_px: int, text: int | None = None, **kw: Any) -> ScaleDiTLayout:
        return ScaleDiTLayout.for_image(side_px, self.text_tokens if text is None else text, self.window,
                                        self.factor, **kw)

    def configure(self, side_px: int, attention: str = "scaledit", impl: str = "flex", rules: str = "inference",
                  text_attend: str = "limited", compile_flex: bool = False, text: int | None = None,
                  device: torch.device | str | None = None, frames: int = 1) -> ScaleDiTLayout:
        """Install the processor of ``attention`` for square images of ``side_px``; returns the token layout.
        ``compile_flex`` calls a compiled ``flex_attention`` (eager flex materialises the scores on CPU)."""
        if frames != 1:
            raise ScaleDiTError(f"scaledit generates images: frames must be 1, got {frames}")
        if attention not in ATTENTIONS:
            raise ScaleDiTError(f"unknown attention mode {attention!r}; expected one of {', '.join(ATTENTIONS)}")
        scaledit = attention == "scaledit"
        layout = self.layout(side_px, text, rules=rules, text_attend=text_attend, lowres=scaledit)
        device = device or next(self.parameters()).device
        if attention == "dense-sdpa":
            set_processors(self.transformer, None)
        else:
            impl = "flex" if attention == "dense-flex" else impl
            proc = ScaleDiTAttnProcessor(None, impl, compile_flex, self.groups)
            proc.set_layout(layout if scaledit else None, device)
            set_processors(self.transformer, proc)
        self.transformer.pos_embed.theta = self.base_theta * (self.ntk_factor if scaledit else 1.0)
        self.state = _Config(attention, layout, dict(impl=impl, rules=rules, compile=compile_flex))
        return layout

    def generation_workload(self) -> dict[str, Any]:
        """Tokens by group, the fraction of query-key pairs computed, and attention and step GMACs (formula)."""
        layout, c = self.state.layout, dict(self.config)
        if layout is None:
            raise ScaleDiTError("call configure(side_px, attention=...) first")
        dense = self.state.attention != "scaledit"
        blocks = c["num_layers"] + c["num_single_layers"]
        attn = attention_macs(layout, c["num_attention_heads"], c["attention_head_dim"], blocks, dense=dense)
        pairs = layout.dense_pairs() if dense else layout.pair_formula()
        return {"attention": self.state.attention, "rules": None if dense else layout.rules,
                "tokens": {"text": layout.text, "high_res": layout.n_hi, "low_res": layout.n_lo,
                           "total": layout.total},
                "pair_fraction": pairs / layout.total ** 2, "attention_gmacs": attn / 1e9,
                "step_gmacs": step_macs(c, layout.total, layout.text, attn, self.block_d2) / 1e9,
                "macs_source": "formula"}

    def glocal_macs(self, inputs: tuple, output: Any) -> int:
        """MACs of one step from the formula (the dispatcher counter would count masked flex blocks as dense)."""
        return int(self.generation_workload()["step_gmacs"] * 1e9 * output.shape[0])

    def make_pipeline(self, path: str | Path, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16) -> ScaleDiTPipeline:
        """The two-stage pipeline on a local diffusers FLUX.1-dev folder's VAE, text encoders and scheduler
        (this model's transformer replaces the folder's; nothing is downloaded)."""
        from diffusers import FluxPipeline

        if not Path(path).is_dir():
            raise ScaleDiTError(f"FLUX pipeline folder not found: {path}")
        pipe = FluxPipeline.from_pretrained(str(path), transformer=self.transformer, torch_dtype=dtype,
                                            local_files_only=True).to(device)
        return ScaleDiTPipeline(pipe, self)

    def make_inputs(self, batch: int = 1, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    timestep: float = 0.5, guidance: float = 3.5, seed: int = 0) -> dict[str, Any]:
        """Random keyword inputs of one denoising step at the configured size (latents, text, t, ids)."""
        layout = self.state.layout
        if layout is None:
            raise ScaleDiTError("call configure(side_px, attention=...) before make_inputs")
        g = torch.Generator().manual_seed(seed)
        c = self.config
        latents = torch.randn(batch, layout.n_hi + layout.n_lo, c.in_channels, generator=g)
        text = torch.randn(batch, layout.text, c.joint_attention_dim, generator=g)
        put = dict(device=device, dtype=dtype)
        out = dict(hidden_states=latents.to(**put), encoder_hidden_states=text.to(**put),
                   **{k: v.to(**put) for k, v in self._extra_inputs(batch, g).items()},
                   timestep=torch.full((batch,), timestep, **put),
                   img_ids=layout.image_ids(self.id_axes).to(**put), txt_ids=self.text_ids(layout.text).to(**put))
        if c.guidance_embeds:
            out["guidance"] = torch.full((batch,), guidance, **put)
        return out

    def _extra_inputs(self, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Host-specific random inputs (FLUX.1: the pooled CLIP projection)."""
        return {"pooled_projections": torch.randn(batch, self.config.pooled_projection_dim, generator=g)}

    def text_ids(self, n: int) -> torch.Tensor:
        """The text tokens' position ids (FLUX.1: zeros [n, 3])."""
        return torch.zeros(n, self.id_axes)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor, img_ids: torch.Tensor,
                txt_ids: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """One step; returns the velocity of every image token in sequence order [B, N (+ M), C]."""
        def embed(t: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            return self.transformer.time_text_embed(*((t,) if g is None else (t, g)), pooled_projections)

        return self._step(embed, hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                          pooled_projections=pooled_projections, timestep=timestep, img_ids=img_ids,
                          txt_ids=txt_ids, guidance=guidance)

    def _step(self, embed: Any, **inputs: Any) -> torch.Tensor:
        """Run the host on ``inputs`` with the token groups set: the guidance tokens' timestep embedding is
        ``embed(t = 0, guidance x 1000)``; the LoRA is off without guidance tokens."""
        layout, x = self.state.layout, inputs["hidden_states"]
        m = layout.n_lo if layout is not None else 0
        lowres_temb = None
        if m:
            guidance = inputs.get("guidance")
            lowres_temb = embed(torch.zeros_like(inputs["timestep"]).to(x.dtype),
                                None if guidance is None else guidance.to(x.dtype) * 1000)
        g = self.groups
        g.lowres, g.lowres_temb = m, lowres_temb
        g.text, g.high_res = inputs["encoder_hidden_states"].shape[1], x.shape[1] - m
        try:
            with self._lora_off(not m):
                return self.transformer(**inputs, return_dict=False)[0]
        finally:
            g.lowres, g.lowres_temb = 0, None

    @contextmanager
    def _lora_off(self, off: bool) -> Iterator[None]:
        if not (off and self.lora_loaded):
            yield
            return
        self.transformer.disable_lora()
        try:
            yield
        finally:
            self.transformer.enable_lora()

    def glocal_backends(self) -> dict[str, str]:
        """Recorded with results: the attention and its implementation."""
        s = self.state
        impl = (f"{self.dense_processors} (native SDPA)" if s.attention == "dense-sdpa"
                else f"ScaleDiTAttnProcessor ({s.options.get('impl')}, compile={s.options.get('compile')})")
        return {"attention": s.attention, "impl": impl, "rules": s.options.get("rules", "")}


# ------------------------------------------------------------------------------------------- the FLUX.2 host
def _per_token_modulation(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a model-level FLUX.2 ``Flux2Modulation``: its per-sample output [B, k * D] becomes per-token
    [B, L, k * D] with the guidance rows (the last ``groups.lowres``) modulated at t = 0. The rows before them are
    the high-res tokens (double-stream image modulation) or text + high-res (``joint``: single-stream). State is
    read from the module (``_scaledit_groups``, ``_scaledit_joint``), so a deep copy follows its own groups."""
    groups = module._scaledit_groups
    m = groups.lowres
    if not m:
        return output
    main = groups.high_res + (groups.text if module._scaledit_joint else 0)
    guide = module.forward(groups.lowres_temb)  # .forward: the hook does not fire again
    b = output.shape[0]
    return torch.cat([output[:, None].expand(b, main, -1), guide[:, None].expand(b, m, -1)], dim=1)


class ScaleDiTFlux2Transformer(ScaleDiTTransformer):
    """diffusers' ``Flux2Transformer2DModel`` (FLUX.2-klein, unmodified, as ``.transformer``) with Scale-DiT, as
    the official v4 code runs it.

    Differences from the FLUX.1 host: FLUX.2 computes its AdaLN modulation once per forward (shared by all blocks),
    so the guidance tokens' t = 0 modulation is two forward hooks on the modulation modules instead of block
    patches (the blocks broadcast a per-token modulation as they do a per-sample one); every LoRA target, q/k/v
    included, acts on the guidance tokens only; inputs have 4-axis ids and no pooled projection.
    """

    id_axes = 4  # (time, y, x, layer)
    dense_processors = "Flux2AttnProcessor + Flux2ParallelSelfAttnProcessor"

    @property
    def block_d2(self) -> float:
        return 4 + 3 * self.config.mlp_ratio  # q, k, v, out; SwiGLU in (2 x ratio) and out (ratio)

    def _host(self, config: dict[str, Any]) -> nn.Module:
        try:
            from diffusers import Flux2Transformer2DModel
        except ImportError as e:  # pragma: no cover - only with a diffusers release before FLUX.2
            raise ImportError("scaledit's FLUX.2 host needs a diffusers release with Flux2Transformer2DModel "
                              "(tested with 0.42): pip install -U diffusers") from e
        return Flux2Transformer2DModel(**config)

    def _enable_token_modulation(self) -> None:
        tr = self.transformer
        for module, joint in ((tr.double_stream_modulation_img, False), (tr.single_stream_modulation, True)):
            module._scaledit_groups, module._scaledit_joint = self.groups, joint
            module.register_forward_hook(_per_token_modulation)

    def guidance_only_layers(self) -> list[nn.Module]:
        """Every LoRA layer: the v4 forward runs the base weights for text and high-res rows everywhere."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer)]

    def _extra_inputs(self, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {}

    def text_ids(self, n: int) -> torch.Tensor:
        """FLUX.2 text ids (0, 0, 0, l): the token index on the last axis, as diffusers' Flux2KleinPipeline."""
        ids = torch.zeros(n, 4)
        ids[:, 3] = torch.arange(n)
        return ids

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor,
                img_ids: torch.Tensor, txt_ids: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """One step; returns the velocity of every image token in sequence order [B, N (+ M), C]."""
        return self._step(self.transformer.time_guidance_embed, hidden_states=hidden_states,
                          encoder_hidden_states=encoder_hidden_states, timestep=timestep, img_ids=img_ids,
                          txt_ids=txt_ids, guidance=guidance)

    def make_pipeline(self, path: str | Path, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16) -> ScaleDiTPipeline:
        raise ScaleDiTError("the two-stage Scale-DiT pipeline is wired to FLUX.1's FluxPipeline only; "
                            "FLUX.2-klein (Flux2KleinPipeline) has no pipeline here")


# ------------------------------------------------------------------------------------------------ the LoRA
def lora_layout(transformer: nn.Module, rank: int = 16, prefix: str = "transformer.") -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official LoRA file for this host (``lora_A`` [r, in], ``lora_B`` [out, r]); the
    target regex is the official config's for the host class (FLUX.1 or FLUX.2)."""
    import re

    flux2 = type(transformer).__name__ == "Flux2Transformer2DModel"
    pattern = re.compile(LORA_TARGETS_FLUX2 if flux2 else LORA_TARGETS)
    out: dict[str, tuple[int, ...]] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and pattern.fullmatch(name):
            out[f"{prefix}{name}.lora_A.weight"] = (rank, module.in_features)
            out[f"{prefix}{name}.lora_B.weight"] = (module.out_features, rank)
    return dict(sorted(out.items()))


def load_lora(model: ScaleDiTTransformer, source: str | Path | dict[str, torch.Tensor],
              adapter_name: str = "scaledit") -> None:
    """Load the official Scale-DiT LoRA strictly (every key used, none missing) through diffusers' peft loading.

    The file is ``pytorch_lora_weights.safetensors`` as written by ``FluxPipeline.save_lora_weights`` (FLUX.1) or
    ``Flux2KleinPipeline.save_lora_weights`` (FLUX.2); rank comes from the tensors, alpha = rank (no metadata),
    so the scale is 1 as in the official run. Afterwards the guidance-only targets act on the guidance rows only.
    """
    from peft.utils import get_peft_model_state_dict

    if isinstance(source, dict):
        state_dict = dict(source)
    else:
        from safetensors.torch import load_file

        state_dict = load_file(str(source))
    keys = [k for k in state_dict if k.endswith("lora_A.weight")]
    if not keys:
        raise CheckpointError("not a Scale-DiT LoRA: no '*.lora_A.weight' tensors")
    rank = state_dict[keys[0]].shape[0]
    expected = lora_layout(model.transformer, rank)
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shape = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise CheckpointError(f"LoRA does not match this host: {len(missing)} missing (e.g. {missing[:1]}), "
                              f"{len(extra)} unexpected (e.g. {extra[:1]}), {len(shape)} of another shape "
                              f"(e.g. {shape[:1]})")
    model.transformer.load_lora_adapter(state_dict, prefix="transformer", adapter_name=adapter_name)
    loaded = get_peft_model_state_dict(model.transformer, adapter_name=adapter_name)
    if {f"transformer.{k}" for k in loaded} != set(expected):
        raise CheckpointError("diffusers/peft did not use every LoRA tensor (adapter key set differs)")
    for layer in model.guidance_only_layers():
        gate_lora_rows(layer, model.groups)
    model.lora_loaded = True


# ---------------------------------------------------------------------------------------------- registry
_HOSTS = {"flux1_dev": (ScaleDiTTransformer, FLUX1_DEV), "tiny": (ScaleDiTTransformer, FLUX_TINY),
          "flux2_klein_9b": (ScaleDiTFlux2Transformer, FLUX2_KLEIN_9B),
          "flux2_tiny": (ScaleDiTFlux2Transformer, FLUX2_TINY)}


def _build(config: str = "flux1_dev", **kwargs: Any) -> ScaleDiTTransformer:
    _need_diffusers()
    cls, host = _HOSTS[config]
    return cls(host, **kwargs)


_build.attentions = ATTENTIONS  # read by the generation task before anything is built


def _detect_layout(state_dict: dict) -> str:
    """``diffusers``: a FluxTransformer2DModel state dict (keys without our ``transformer.`` prefix)."""
    return "official" if all(k.startswith("transformer.") for k in state_dict) else "diffusers"


def _convert(state_dict: dict, layout: str) -> dict:
    if layout == "diffusers":
        return {f"transformer.{k}": v for k, v in state_dict.items()}
    return state_dict


# Paper numbers. Efficiency: the v4 repository README bar chart (FLUX.1-dev-based methods, 4096 x 4096, GPU not
# stated) and its 1K-8K scaling figure (vs FLUX with FlashAttention-2). Quality: the v1-era README table at
# 4096 x 4096 (prompt set and FID reference set unpublished, so not reproducible here).
_PAPER = (
    PaperMetric("4096x4096 (reported)", "seconds_per_step", 7.81, "Scale-DiT, v4 README bar chart, GPU not stated"),
    PaperMetric("4096x4096 (reported)", "seconds_per_step_dense", 17.89, "dense FLUX.1-dev, same chart (2.29x)"),
    PaperMetric("4096x4096 (reported)", "seconds_per_image", 152.21, "Scale-DiT, both stages, same chart"),
    PaperMetric("4096x4096 (reported)", "seconds_per_image_dense", 536.79, "dense FLUX.1-dev, same chart"),
    PaperMetric("4096x4096 (reported)", "peak_memory_gb", 39.71, "Scale-DiT, same chart"),
    PaperMetric("4096x4096 (reported)", "peak_memory_gb_dense", 47.83, "dense FLUX.1-dev, same chart"),
    PaperMetric("8192x8192 (reported)", "speedup_per_step", 6.93, "vs FLUX + FlashAttention-2, v4 scaling figure"),
    PaperMetric("8192x8192 (reported)", "speedup_per_image", 10.77, "vs FLUX + FlashAttention-2, v4 scaling figure"),
    PaperMetric("8192x8192 (reported)", "attention_flops_reduction_per_layer", 130.4, "v4 scaling figure"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "fid", 67.03, "v1 README table"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "fid_patch", 61.78, "v1 README table"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "is", 17.21, "v1 README table"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "is_patch", 13.31, "v1 README table"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "clip_score", 0.3231, "v1 README table, raw cosine"),
    PaperMetric("4096x4096 (reported, prompt set unpublished)", "clip_iqa", 0.4505, "v1 README table"),
)

_PREP_1024, _PREP_256 = (Preprocessing(input_size=(3, side, side), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                       crop_pct=1.0) for side in (1024, 256))

register(ModelCard(
    family="scaledit", display_name="Scale-DiT", task="generation",
    paper_title="Scale-DiT: Ultra-High-Resolution Image Generation with Hierarchical Local Attention "
                "(later renamed UltraGen / UltraImageGen)",
    arxiv_id="2510.16325", official_repo="https://github.com/PeterYYZhang/Scale-DiT",
    license="code MIT; FLUX.1-dev base weights under the FLUX.1 [dev] non-commercial licence",
    aliases=("scale-dit", "2510.16325"),
    description="FLUX.1-dev (diffusers FluxTransformer2DModel, unmodified) with 16x16-token windows, clean "
                "low-res guidance tokens at t=0 with x4-scaled RoPE anchors and text tokens as global hubs, run "
                "as a FlexAttention BlockMask; a dense low-res pass first, then the sparse high-res pass.",
    convert_state_dict=_convert, detect_layout=_detect_layout, default_variant="scaledit_tiny",
    variants=(
        Variant(name="scaledit_flux1_dev", builder=_build,
                kwargs=dict(config="flux1_dev", window=16, factor=4, ntk_factor=10.0, text_tokens=512),
                params=11_901_408_320, paper_metrics=_PAPER, resolution_multiple=PATCH_PX * 16,
                resolutions=(1024, 2048, 4096, 8192),
                preprocessing=_PREP_1024,
                notes="Host: FLUX.1-dev shape (19 double + 38 single blocks, 24 heads x 128). Base weights: load "
                      "a diffusers FLUX.1-dev transformer file (weights=PATH); the official rank-16 LoRA "
                      "(checkpoints/full_lora/pytorch_lora_weights.safetensors, Google Drive / HF dataset "
                      "yuyao-zhang/Scale-DiT) loads with glocal.zoo.models.scaledit.load_lora. FlexAttention "
                      "replaces the authors' SpargeAttn/SageAttention2 kernel (not on PyPI): timings differ."),
        Variant(name="scaledit_tiny", builder=_build,
                kwargs=dict(config="tiny", window=4, factor=2, ntk_factor=10.0, text_tokens=8),
                resolution_multiple=PATCH_PX * 4, resolutions=(256, 512),
                preprocessing=_PREP_256,
                notes="A tiny FLUX (1 double + 1 single block, 2 heads x 16, 4-token windows, low-res factor 2) "
                      "for CPU tests; random weights only."),
        Variant(name="scaledit_flux2_klein_9b", builder=_build,
                kwargs=dict(config="flux2_klein_9b", window=16, factor=4, ntk_factor=1.0, text_tokens=512),
                params=9_078_581_248, resolution_multiple=PATCH_PX * 16, resolutions=(1024, 2048, 4096, 8192),
                preprocessing=_PREP_1024,
                notes="Host: FLUX.2-klein-9B shape (diffusers Flux2Transformer2DModel: 8 double + 24 single blocks, "
                      "32 heads x 128), as the official v4 code (inference_flux2.yaml: 4096 px, 1024 px guidance, "
                      "256 px windows, ntk_factor 1, theta 2000). Base weights: a diffusers FLUX.2-klein-9B "
                      "transformer file (weights=PATH, FLUX non-commercial licence); the official rank-16 LoRA "
                      "(194 tensors, Google Drive) loads with load_lora. No paper figures for this host are "
                      "attached; the two-stage pipeline is FLUX.1-only."),
        Variant(name="scaledit_flux2_tiny", builder=_build,
                kwargs=dict(config="flux2_tiny", window=4, factor=2, ntk_factor=1.0, text_tokens=8),
                resolution_multiple=PATCH_PX * 4, resolutions=(256, 512),
                preprocessing=_PREP_256,
                notes="A tiny FLUX.2 (1 double + 1 single block, 2 heads x 16, 4-token windows, low-res factor 2) "
                      "for CPU tests; random weights only."),
    ),
))


# ------------------------------------------------------------------------------------------------ pipeline
class ScaleDiTPipeline:
    """The two-stage Scale-DiT pipeline on a diffusers ``FluxPipeline``'s components (VAE, text encoders,
    tokenizers, scheduler) and a :class:`ScaleDiTTransformer` sharing its transformer.

    1. dense low-res pass at ``side / factor`` (the stock FLUX pipeline, LoRA off);
    2. bicubic upsampling of the low-res latent to the high-res latent grid;
    3. re-noising to the first high-res timestep (SDEdit-like, ``renoise=True``) or pure noise;
    4. the high-res pass with the Scale-DiT processor, the clean low-res latent appended as guidance tokens;
    5. VAE decode.
    """

    def __init__(self, pipe: Any, model: ScaleDiTTransformer) -> None:
        if pipe.transformer is not model.transformer:
            raise ScaleDiTError("the FluxPipeline must hold the ScaleDiTTransformer's own .transformer")
        self.pipe, self.model = pipe, model

    def _latents_to_image(self, packed: torch.Tensor, side: int, output_type: str) -> Any:
        p = self.pipe
        x = p._unpack_latents(packed, side, side, p.vae_scale_factor)
        x = x / p.vae.config.scaling_factor + p.vae.config.shift_factor
        return p.image_processor.postprocess(p.vae.decode(x, return_dict=False)[0], output_type=output_type)

    def _upsample(self, packed: torch.Tensor, low: int, side: int) -> torch.Tensor:
        p = self.pipe
        x = p._unpack_latents(packed, low, low, p.vae_scale_factor)
        n = 2 * (side // (p.vae_scale_factor * 2))
        x = F.interpolate(x.float(), size=(n, n), mode="bicubic", align_corners=False).to(packed.dtype)
        return p._pack_latents(x, x.shape[0], x.shape[1], n, n)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], side: int, steps_low: int = 28, steps_high: int = 18,
                 guidance_low: float = 3.5, guidance_high: float = 4.5, time_shift: float = 10.0,
                 renoise: bool = True, seed: int = 0, impl: str = "flex", rules: str = "inference",
                 output_type: str = "pil") -> Any:
        from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps

        p, model = self.pipe, self.model
        layout = model.layout(side)  # validates the side before any work
        low = side // model.factor
        device = p._execution_device
        text, pooled, _ = p.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                          max_sequence_length=p.tokenizer_2.model_max_length)
        g = torch.Generator(device="cpu").manual_seed(seed)
        model.configure(low, "dense-sdpa", text=text.shape[1])
        with model._lora_off(True):
            lowres = p(prompt_embeds=text, pooled_prompt_embeds=pooled, height=low, width=low,
                       num_inference_steps=steps_low, guidance_scale=guidance_low, generator=g,
                       output_type="latent", max_sequence_length=text.shape[1]).images
        up = self._upsample(lowres, low, side)
        layout = model.configure(side, "scaledit", impl=impl, rules=rules, text=text.shape[1], device=device)
        sigmas = torch.linspace(1.0, 1.0 / steps_high, steps_high).numpy()
        extra = {"mu": math.log(time_shift)} if p.scheduler.config.get("use_dynamic_shifting") else {}
        timesteps, _ = retrieve_timesteps(p.scheduler, steps_high, device, sigmas=sigmas, **extra)
        noise = torch.randn(up.shape, generator=g).to(device=device, dtype=up.dtype)
        s0 = float(p.scheduler.sigmas[0])
        x = (1 - s0) * up + s0 * noise if renoise else noise
        ids, batch = layout.image_ids().to(device), x.shape[0]
        guidance = torch.full((batch,), guidance_high, device=device) if model.config.guidance_embeds else None
        for t in timesteps:
            v = model(hidden_states=layout.pack(x, lowres), encoder_hidden_states=text, pooled_projections=pooled,
                      timestep=(t / 1000).expand(batch).to(x.dtype), img_ids=ids,
                      txt_ids=torch.zeros(text.shape[1], 3, device=device), guidance=guidance)
            x = p.scheduler.step(layout.unpack(v), t, x, return_dict=False)[0]
        return self._latents_to_image(x, side, output_type)
