"""2-D (dilated) neighborhood attention with relative positional bias, with NATTEN's semantics and several backends.

Semantics (NATTEN <= 0.17, checked against its CPU kernels' index rules), per spatial axis of length L with
kernel k and dilation d:

* a position only sees positions with the same index mod d (its *dilation group*);
* inside its group (re-indexed by ``coord // d``, group length Lg) its k-wide window is centred on it but
  clamped into ``[0, Lg - k]``: border queries see a shifted window, never zero padding, so every query
  sees exactly k x k keys;
* the RPB offset along the axis is ``key group coord - query group coord + k - 1`` (in ``0 .. 2k-2``).

Layout of the functional entry point :func:`na2d`: ``q, k, v`` are ``[B, heads, H, W, head_dim]`` (NATTEN's
classic layout), ``q`` already scaled, ``rpb`` is ``[heads, 2k-1, 2k-1]``; every axis must be at least
``k * d`` long (the module pads smaller maps, as NATTEN <= 0.15's module does).

Backends (``backend=``):

* ``reference``: gathers every query's k x k neighbours explicitly. Slow and memory-hungry; the test oracle.
* ``blocked``: splits the map into its dilation groups (each is then plain NA with dilation 1), cuts each
  group into t x t query tiles (t = 4, or the whole group when it is at most 2k wide) and gives every tile
  the (t + k - 1)^2 key region its windows can reach; logits are batched matmuls plus an additive mask that
  carries the RPB and -inf outside each query's window. It does more multiply-adds than NA (about
  (t+k-1)^2/k^2 times) but as GEMMs on gathered, cache-sized chunks, which on CPU beats the gather reference,
  FlexAttention and dense masked attention (see ``python -m glocal.benchmarks.microbench.neighborhood_attention``).
  Supports attention dropout and autograd.
* ``flex``: ``torch.nn.attention.flex_attention`` with a sparse ``BlockMask`` built from the exact mask rule
  and the RPB added in ``score_mod``; tokens are permuted group-major so dilated layers stay block-sparse.
  ``torch.compile``'d when possible (the eager path materialises all scores); if compiling fails it warns
  once and runs eagerly (``GLOCAL_FLEX_COMPILE=0`` or :func:`set_flex_compile` choose eager up front). No
  attention dropout, no backward on CPU; under ``FlopCounterMode`` (which it cannot run in) ``blocked`` runs.
* ``natten``: the NATTEN package when importable (imported lazily). NATTEN 0.14-0.17 have unfused ops with
  RPB (``natten2dqkrpb``/``natten2dav`` or ``na2d_qk(rpb=)``/``na2d_av``); NATTEN >= 0.20 removed RPB, so it
  is used there only without RPB (``natten.na2d``, heads-last layout).
* ``auto``: chosen by measurement on the device present, once per call signature (device, dtype, shapes,
  kernel, dilation, RPB, dropout) and cached for the process: the candidates (:func:`auto_candidates`: on CUDA
  ``natten`` when it supports the call, ``flex`` when it runs compiled, and ``blocked``; on a CPU ``blocked``
  and, where its gather is small, ``reference``) each run once to warm up and three times timed, on the call's
  own tensors, and the fastest wins. Where measuring is impossible (inside ``torch.compile`` tracing, CUDA-graph
  capture or a FLOP count) or switched off (:func:`set_auto_measure`, ``GLOCAL_NA_AUTO=rule``), the rule of
  :func:`resolve_backend` applies: ``natten`` > ``flex`` on CUDA, ``blocked`` elsewhere.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import register_notrace_function, register_notrace_module

__all__ = [
    "BACKENDS", "NeighborhoodAttention2D", "NeighborhoodAttentionCore", "NeighborhoodAttentionError", "auto_backend",
    "auto_candidates", "axis_windows", "flex_compile_enabled", "na2d", "na2d_blocked", "na2d_macs", "na2d_script",
    "natten_available",
    "natten_supports", "pad_to_window", "resolve_backend", "rpb_for_call", "set_auto_measure", "set_flex_compile",
]

BACKENDS = ("auto", "reference", "blocked", "flex", "natten")
BLOCKED_CHUNK_BYTES = 2 << 20  # gathered keys+values per chunk of tiles on CPU (cache-sized)
DEFAULT_TILE = 4  # query tile side of the ``blocked`` backend on maps wider than 2k (see the microbenchmark)


class NeighborhoodAttentionError(ValueError):
    """Bad neighborhood-attention arguments or an unusable backend (one clear line)."""


# ----------------------------------------------------------------------------------------------------------
# The neighbourhood rule, per axis
# ----------------------------------------------------------------------------------------------------------

def _table_cache(maxsize: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``functools.lru_cache`` for index tables, built outside inference mode: a table first made under
    ``torch.inference_mode`` would otherwise be an inference tensor that autograd refuses to save later."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args: Any) -> Any:
            with torch.inference_mode(False):
                return fn(*args)

        return cached

    return deco


def check_kernel_dilation(kernel_size: int, dilation: int) -> None:
    """Reject kernel sizes NA cannot use (even, < 1) and dilations < 1."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise NeighborhoodAttentionError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise NeighborhoodAttentionError(f"dilation must be an int >= 1, got {dilation!r}")


def _axis_windows_tensor(length: int, kernel_size: int, dilation: int,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbourhood rule along one axis as tensor ops (TorchScript-compatible; no checks, no cache)."""
    i = torch.arange(length, device=device)
    group, gi = i % dilation, torch.div(i, dilation, rounding_mode="floor")
    group_len = torch.div(length - group + dilation - 1, dilation, rounding_mode="floor")
    start = torch.minimum((gi - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    steps = start[:, None] + torch.arange(kernel_size, device=device)  # window in group coordinates
    keys = steps * dilation + group[:, None]
    offsets = steps - gi[:, None] + kernel_size - 1
    return keys, offsets


@_table_cache(maxsize=512)
def _axis_windows_cpu(length: int, kernel_size: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _axis_windows_tensor(length, kernel_size, dilation, torch.device("cpu"))


def axis_windows(length: int, kernel_size: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour coordinates ``[L, k]`` and RPB offsets ``[L, k]`` of every position along one axis."""
    check_kernel_dilation(kernel_size, dilation)
    if length < kernel_size * dilation:
        raise NeighborhoodAttentionError(
            f"axis length {length} is smaller than kernel_size*dilation = {kernel_size * dilation}")
    return _axis_windows_cpu(length, kernel_size, dilation)


@_table_cache(maxsize=256)
def _axis_windows_on(length: int, kernel_size: int, dilation: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    keys, offsets = axis_windows(length, kernel_size, dilation)
    return keys.to(device), offsets.to(device)


@_table_cache(maxsize=256)
def _axis_membership(length: int, kernel_size: int, dilation: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense per-axis tables: ``member[i, j]`` (j is in i's window) and the RPB offset ``[L, L]`` (clamped)."""
    keys, offsets = axis_windows(length, kernel_size, dilation)
    member = torch.zeros(length, length, dtype=torch.bool)
    member.scatter_(1, keys, True)
    off = torch.zeros(length, length, dtype=torch.long)
    off.scatter_(1, keys, offsets)  # non-members keep 0, a valid index (score_mod also runs on masked entries)
    return member.to(device), off.to(device)


# ----------------------------------------------------------------------------------------------------------
# reference: explicit gather
# ----------------------------------------------------------------------------------------------------------

def _na2d_gather(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                 keys_h: torch.Tensor, off_h: torch.Tensor, keys_w: torch.Tensor, off_w: torch.Tensor,
                 dropout_p: float) -> torch.Tensor:
    """Gather each query's k x k neighbours (per-axis windows given), softmax(q.k + rpb), weighted sum of values."""
    rows, cols = keys_h[:, None, :, None], keys_w[None, :, None, :]
    k_nb = k[:, :, rows, cols]  # [B, heads, H, W, k, k, D]
    logits = torch.einsum("bnhwd,bnhwxyd->bnhwxy", [q, k_nb])
    if rpb is not None:
        logits = logits + rpb[:, off_h[:, None, :, None], off_w[None, :, None, :]].to(logits.dtype)
    attn = logits.flatten(-2).softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return torch.einsum("bnhwx,bnhwxd->bnhwd", [attn, v[:, :, rows, cols].flatten(4, 5)])


def _na2d_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                    kernel_size: int, dilation: int, dropout_p: float) -> torch.Tensor:
    """The gather oracle with cached per-axis windows."""
    dev = str(q.device)
    keys_h, off_h = _axis_windows_on(q.shape[2], kernel_size, dilation, dev)
    keys_w, off_w = _axis_windows_on(q.shape[3], kernel_size, dilation, dev)
    return _na2d_gather(q, k, v, rpb, keys_h, off_h, keys_w, off_w, dropout_p)


def na2d_script(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None, kernel_size: int,
                dilation: int, dropout_p: float) -> torch.Tensor:
    """The TorchScript path: the gather reference with the windows computed in the graph (maps at least
    kernel_size * dilation per side, as the module guarantees by padding)."""
    keys_h, off_h = _axis_windows_tensor(q.shape[2], kernel_size, dilation, q.device)
    keys_w, off_w = _axis_windows_tensor(q.shape[3], kernel_size, dilation, q.device)
    return _na2d_gather(q, k, v, rpb, keys_h, off_h, keys_w, off_w, dropout_p)


# ----------------------------------------------------------------------------------------------------------
# dilation groups (shared by blocked and the tests)
# ----------------------------------------------------------------------------------------------------------

def _group_classes(length: int, dilation: int) -> list[tuple[int, int, int]]:
    """Residue ranges with a common group length: ``(first residue, end residue, group length)``."""
    q, r = divmod(length, dilation)
    if r == 0:
        return [(0, dilation, q)]
    return [(0, r, q + 1), (r, dilation, q)]


def _run_per_dilation_group(fn: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            dilation: int) -> torch.Tensor:
    """Dilated NA = plain NA inside each dilation group; groups of equal shape are batched together."""
    if dilation == 1:
        return fn(q, k, v)
    B, nh, H, W, D = q.shape
    Dv = v.shape[-1]
    Hq, Wq = -(-H // dilation), -(-W // dilation)

    def grid(t: torch.Tensor) -> torch.Tensor:  # [B, nh, Hq, d, Wq, d, D], row = t * d + residue
        t = F.pad(t, (0, 0, 0, Wq * dilation - W, 0, Hq * dilation - H))
        return t.view(B, nh, Hq, dilation, Wq, dilation, t.shape[-1])

    qg, kg, vg = grid(q), grid(k), grid(v)
    out = q.new_zeros(B, nh, Hq, dilation, Wq, dilation, Dv)
    for h0, h1, lh in _group_classes(H, dilation):
        for w0, w1, lw in _group_classes(W, dilation):
            index = (slice(None), slice(None), slice(0, lh), slice(h0, h1), slice(0, lw), slice(w0, w1))
            subs = [t[index].permute(0, 3, 5, 1, 2, 4, 6).reshape(-1, nh, lh, lw, t.shape[-1]) for t in (qg, kg, vg)]
            o = fn(*subs)  # [B*gh*gw, nh, lh, lw, Dv]
            out[index] = o.view(B, h1 - h0, w1 - w0, nh, lh, lw, Dv).permute(0, 3, 4, 1, 5, 2, 6)
    return out.view(B, nh, Hq * dilation, Wq * dilation, Dv)[:, :, :H, :W]


# ----------------------------------------------------------------------------------------------------------
# blocked: query tiles x key regions through SDPA
# ----------------------------------------------------------------------------------------------------------

@_table_cache(maxsize=256)
def _tile_tables(length: int, kernel_size: int, tile: int) -> tuple[int, int, int, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """Dilation-1 NA along one axis cut into query tiles of ``t``: tile size, key-region size R, tile count,
    region rows ``[n, R]``, in-window flags ``[n, t, R]`` and clamped RPB offsets ``[n, t, R]``."""
    t = length if length <= 2 * kernel_size else min(tile, length)  # small maps: one tile (dense in the map)
    region = min(t + kernel_size - 1, length)
    n = -(-length // t)
    rows = (torch.arange(n)[:, None] * t + torch.arange(t)).clamp(max=length - 1)  # padded rows reuse the last
    starts = (rows - kernel_size // 2).clamp(min=0, max=length - kernel_size)  # window start of every query
    region_start = starts[:, 0].clamp(max=length - region)
    key_rows = region_start[:, None] + torch.arange(region)  # [n, R]
    rel = key_rows[:, None, :] - starts[:, :, None]  # [n, t, R]
    inwin = (rel >= 0) & (rel < kernel_size)
    offsets = (key_rows[:, None, :] - rows[:, :, None] + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    return t, region, n, key_rows, inwin, offsets


@_table_cache(maxsize=256)
def _blocked_plan(H: int, W: int, kernel_size: int, tile: int, device: str) -> dict[str, Any]:
    """Index tables of the blocked backend for one map, all into the flattened H*W tokens: the tiles' queries
    (padded tiles repeat border tokens), their key regions, where each token's output sits among the tile
    outputs, and for every (tile, query, key) its flat RPB index or the sentinel ``(2k-1)^2`` (a -inf slot)."""
    th, rh, nth, krow_h, in_h, off_h = _tile_tables(H, kernel_size, tile)
    tw, rw, ntw, krow_w, in_w, off_w = _tile_tables(W, kernel_size, tile)
    side = 2 * kernel_size - 1
    qrow_h = (torch.arange(nth)[:, None] * th + torch.arange(th)).clamp(max=H - 1)  # [nth, th]
    qrow_w = (torch.arange(ntw)[:, None] * tw + torch.arange(tw)).clamp(max=W - 1)
    queries = qrow_h[:, None, :, None] * W + qrow_w[None, :, None, :]  # [nth, ntw, th, tw]
    keys = krow_h[:, None, :, None] * W + krow_w[None, :, None, :]  # [nth, ntw, rh, rw]
    i, j = torch.arange(H)[:, None], torch.arange(W)[None, :]
    slots = (((i // th) * ntw + j // tw) * th + i % th) * tw + j % tw  # [H, W] -> position among tile outputs
    allowed = in_h[:, None, :, None, :, None] & in_w[None, :, None, :, None, :]  # [nth, ntw, th, tw, rh, rw]
    flat = off_h[:, None, :, None, :, None] * side + off_w[None, :, None, :, None, :]
    flat = torch.where(allowed, flat, side * side)
    mask = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    n_tiles = nth * ntw
    return {"q": th * tw, "r": rh * rw, "tiles": n_tiles, "queries": queries.reshape(-1).to(device),
            "keys": keys.reshape(-1).to(device), "slots": slots.reshape(-1).to(device),
            "flat": flat.reshape(-1).to(device), "mask": mask.view(n_tiles, th * tw, rh * rw).to(device)}


def _na2d_blocked_d1(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                     kernel_size: int, dropout_p: float, tile: int) -> torch.Tensor:
    """Dilation-1 NA: every query tile attends to its key region with the window rule as an additive mask.
    Tiles run in chunks whose gathered keys/values stay cache-sized (memory traffic dominates on CPU)."""
    B, nh, H, W, D = q.shape
    Dv = v.shape[-1]
    p = _blocked_plan(H, W, kernel_size, tile, str(q.device))
    nq, nr, nt = p["q"], p["r"], p["tiles"]
    qf, kf, vf = q.reshape(B * nh, H * W, D), k.reshape(B * nh, H * W, D), v.reshape(B * nh, H * W, Dv)
    if rpb is not None:
        table = torch.cat([rpb.flatten(1).to(q.dtype), rpb.new_full((nh, 1), float("-inf")).to(q.dtype)], 1)
        bias = table.index_select(1, p["flat"]).view(nh, nt, nq, nr)
    else:
        bias = p["mask"].to(q.dtype).expand(nh, nt, nq, nr)
    per_tile = B * nh * nr * (D + Dv) * q.element_size()
    step = nt if q.device.type != "cpu" else max(1, min(nt, BLOCKED_CHUNK_BYTES // per_tile))
    out = q.new_empty(B, nh, nt, nq, Dv)
    for t0 in range(0, nt, step):
        t1 = min(nt, t0 + step)
        n = t1 - t0
        qt = qf.index_select(1, p["queries"][t0 * nq:t1 * nq]).view(B, nh, n, nq, D)
        kt = kf.index_select(1, p["keys"][t0 * nr:t1 * nr]).view(B, nh, n, nr, D)
        vt = vf.index_select(1, p["keys"][t0 * nr:t1 * nr]).view(B, nh, n, nr, Dv)
        attn = torch.matmul(qt, kt.transpose(-1, -2)).add_(bias[:, t0:t1]).softmax(-1)
        if dropout_p > 0:
            attn = F.dropout(attn, dropout_p)
        out[:, :, t0:t1] = torch.matmul(attn, vt)
    return out.view(B * nh, nt * nq, Dv).index_select(1, p["slots"]).view(B, nh, H, W, Dv)


def na2d_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None, kernel_size: int,
                 dilation: int, dropout_p: float = 0.0, tile: int = DEFAULT_TILE) -> torch.Tensor:
    """Dilated NA as dilation-1 NA per dilation group, each computed tile by tile (query tile x key region)."""
    return _run_per_dilation_group(
        lambda a, b, c: _na2d_blocked_d1(a, b, c, rpb, kernel_size, dropout_p, tile), q, k, v, dilation)


# ----------------------------------------------------------------------------------------------------------
# flex: FlexAttention with a sparse BlockMask and an RPB score_mod
# ----------------------------------------------------------------------------------------------------------

_FLEX: dict[str, Any] = {"compile": os.environ.get("GLOCAL_FLEX_COMPILE", "1") not in ("0", "false", "False"),
                         "compiled_fn": None, "failed": None}
FLEX_BLOCK = 128
FLEX_RECOMPILE_LIMIT = 64  # compiled FlexAttention graphs kept per process (one per shape and map layout)
EAGER_FLEX_MAX_BYTES = 4 << 30  # the eager path materialises every score; refuse beyond this


def set_flex_compile(enabled: bool) -> None:
    """Use ``torch.compile(flex_attention)`` (default) or the eager, unfused FlexAttention path."""
    _FLEX["compile"] = bool(enabled)


def flex_compile_enabled() -> bool:
    """True when the flex backend will run compiled (enabled and compiling has not failed)."""
    return bool(_FLEX["compile"]) and _FLEX["failed"] is None


def _group_major_order(H: int, W: int, dilation: int) -> torch.Tensor:
    """Flat indices ordered by dilation group, then row-major inside the group (a permutation of H*W)."""
    i = torch.arange(H)[:, None].expand(H, W)
    j = torch.arange(W)[None, :].expand(H, W)
    key = (((i % dilation) * dilation + j % dilation) * H + i // dilation) * W + j // dilation
    return torch.argsort(key.flatten())


@_table_cache(maxsize=64)
def _flex_layout(H: int, W: int, kernel_size: int, dilation: int, device: str) -> dict[str, Any]:
    """Token permutation, per-axis tables and the BlockMask for one (H, W, k, d) on one device."""
    from glocal.zoo.layers.block_mask import block_mask_from_flags

    n = H * W
    perm = _group_major_order(H, W, dilation)
    rows, cols = perm // W, perm % W  # original coordinates of every permuted position
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    keys_h, _ = axis_windows(H, kernel_size, dilation)
    keys_w, _ = axis_windows(W, kernel_size, dilation)
    # every query's k*k keys, as permuted positions -> which KV blocks each Q block touches, and how often
    nb = inverse[(keys_h[rows][:, :, None] * W + keys_w[cols][:, None, :]).flatten(1)]  # [n, k*k]
    nq = -(-n // FLEX_BLOCK)
    qblock = (torch.arange(n) // FLEX_BLOCK)[:, None].expand_as(nb)
    pair = (qblock * nq + nb // FLEX_BLOCK).flatten()
    counts = torch.bincount(pair, minlength=nq * nq).view(nq, nq)
    sizes = torch.full((nq,), FLEX_BLOCK)
    sizes[-1] = n - FLEX_BLOCK * (nq - 1)
    full = counts == sizes[:, None] * sizes[None, :]
    if n % FLEX_BLOCK:  # never call a block that overhangs the sequence end "full": let mask_mod see it
        full[-1, :] = False
        full[:, -1] = False
    partial = (counts > 0) & ~full

    member_h, off_h = _axis_membership(H, kernel_size, dilation, device)
    member_w, off_w = _axis_membership(W, kernel_size, dilation, device)
    rows_d, cols_d = rows.to(device), cols.to(device)

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001 - FlexAttention's index tensors
        return member_h[rows_d[q_idx], rows_d[kv_idx]] & member_w[cols_d[q_idx], cols_d[kv_idx]]

    block_mask = block_mask_from_flags(partial, full, FLEX_BLOCK, mask_mod, n, device)
    return {"perm": perm.to(device), "rows": rows_d, "cols": cols_d, "off_h": off_h, "off_w": off_w,
            "block_mask": block_mask}


def _check_eager_flex_fits(q: torch.Tensor) -> None:
    """The eager FlexAttention path materialises all [B, heads, N, N] scores: refuse sizes that cannot fit."""
    B, nh, n = q.shape[0], q.shape[1], q.shape[2]
    need = 2 * B * nh * n * n * max(4, q.element_size())  # scores and probabilities
    if need > EAGER_FLEX_MAX_BYTES:
        raise NeighborhoodAttentionError(
            f"eager (uncompiled) FlexAttention would materialise {need / 2**30:.1f} GiB of scores for {n} tokens; "
            "use backend='blocked' or a working torch.compile")


def _flex_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Compiled FlexAttention when enabled and working, else the eager path (warned about once)."""
    from torch.nn.attention.flex_attention import flex_attention

    if flex_compile_enabled():
        if _FLEX["compiled_fn"] is None:
            # static shapes: on CPU the dynamic-shape recompile fails in C++ codegen (torch 2.15); each (shape,
            # map layout) compiles once, so allow more recompiles than dynamo's default 8 (a model has ~4 shapes
            # per resolution and batch size)
            _FLEX["compiled_fn"] = torch.compile(flex_attention, dynamic=False)
        try:
            dynamo_config = importlib.import_module("torch._dynamo.config")
            key = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
            with dynamo_config.patch(**{key: max(FLEX_RECOMPILE_LIMIT, getattr(dynamo_config, key))}):
                return _FLEX["compiled_fn"](q, k, v, **kwargs)
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported platform, ...: degrade, loudly
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            _FLEX["failed"] = reason
            warnings.warn(f"torch.compile(flex_attention) failed ({reason}); neighborhood attention uses the "
                          "eager, unfused FlexAttention path (slow)", RuntimeWarning, stacklevel=4)
    _check_eager_flex_fits(q)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, **kwargs)


def _na2d_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
               kernel_size: int, dilation: int, dropout_p: float) -> torch.Tensor:
    """FlexAttention over group-major permuted tokens: BlockMask from the rule, RPB in score_mod."""
    if dropout_p > 0:
        raise NeighborhoodAttentionError("the flex backend has no attention dropout; use backend='blocked'")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, rpb)):
        raise NeighborhoodAttentionError("FlexAttention has no backward on CPU; use backend='blocked' to train on CPU")
    B, nh, H, W, D = q.shape
    lay = _flex_layout(H, W, kernel_size, dilation, str(q.device))
    perm = lay["perm"]

    def tokens(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2, 3)[:, :, perm]

    score_mod = None
    if rpb is not None:
        rows, cols, off_h, off_w = lay["rows"], lay["cols"], lay["off_h"], lay["off_w"]
        bias = rpb.to(q.dtype)

        def score_mod(score, b, h, q_idx, kv_idx):  # noqa: ANN001 - FlexAttention's index tensors
            return score + bias[h, off_h[rows[q_idx], rows[kv_idx]], off_w[cols[q_idx], cols[kv_idx]]]

    out = _flex_call(tokens(q), tokens(k), tokens(v), score_mod=score_mod, block_mask=lay["block_mask"], scale=1.0)
    result = torch.empty_like(out)
    result[:, :, perm] = out
    return result.view(B, nh, H, W, v.shape[-1])


# ----------------------------------------------------------------------------------------------------------
# natten: the NATTEN package (lazy import)
# ----------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _natten_api() -> dict[str, Any] | None:
    """What the installed NATTEN offers: ``{"module", "version", "rpb_ops"}``, or None when not importable."""
    try:
        import natten  # noqa: PLC0415 - optional heavy dependency
        from natten import functional as nf
    except Exception:  # noqa: BLE001 - absent or broken install: the backend is unavailable
        return None
    if hasattr(nf, "natten2dqkrpb") and hasattr(nf, "natten2dav"):  # 0.14 - 0.17.4
        rpb_ops = "natten2dqkrpb"
    elif hasattr(nf, "na2d_qk") and "rpb" in inspect.signature(nf.na2d_qk).parameters:  # 0.17.5
        rpb_ops = "na2d_qk"
    else:  # >= 0.20: fused ops only, no relative positional bias
        rpb_ops = None
    return {"module": natten, "functional": nf, "version": getattr(natten, "__version__", "?"), "rpb_ops": rpb_ops}


def natten_available() -> bool:
    """True when the NATTEN package is importable."""
    return _natten_api() is not None


def natten_supports(with_rpb: bool = True) -> bool:
    """True when the installed NATTEN can run this call (NATTEN >= 0.20 has no relative positional bias)."""
    api = _natten_api()
    if api is None:
        return False
    return api["rpb_ops"] is not None or (not with_rpb and hasattr(api["module"], "na2d"))


def _na2d_natten(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                 kernel_size: int, dilation: int, dropout_p: float) -> torch.Tensor:
    """NATTEN's ops: unfused QK(+RPB) / softmax / AV where they exist, else the fused ``natten.na2d`` (no RPB)."""
    api = _natten_api()
    if api is None:
        raise NeighborhoodAttentionError("backend 'natten' needs the natten package (pip install natten)")
    nf = api["functional"]
    if api["rpb_ops"] == "natten2dqkrpb":  # [B, heads, H, W, D] in, [B, heads, H, W, k*k] attention
        attn = nf.natten2dqkrpb(q, k, rpb, kernel_size, dilation)
    elif api["rpb_ops"] == "na2d_qk":
        attn = nf.na2d_qk(q, k, kernel_size, dilation, rpb=rpb)
    else:
        if rpb is not None:
            raise NeighborhoodAttentionError(
                f"natten {api['version']} has no relative positional bias (removed in 0.20); use 'flex' or 'blocked'")
        if dropout_p > 0:
            raise NeighborhoodAttentionError("fused natten has no attention dropout; use backend='blocked'")
        heads_last = [t.permute(0, 2, 3, 1, 4) for t in (q, k, v)]
        out = api["module"].na2d(*heads_last, kernel_size=kernel_size, dilation=dilation, scale=1.0)
        return out.permute(0, 3, 1, 2, 4)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    if api["rpb_ops"] == "natten2dqkrpb":
        return nf.natten2dav(attn, v, kernel_size, dilation)
    return nf.na2d_av(attn, v, kernel_size, dilation)


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------

_IMPLS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": _na2d_reference, "blocked": na2d_blocked, "flex": _na2d_flex, "natten": _na2d_natten}


def resolve_backend(backend: str, device: torch.device | str, with_rpb: bool = True) -> str:
    """The concrete backend ``backend`` means on ``device`` (``auto``: natten > flex on CUDA, blocked elsewhere)."""
    if backend not in BACKENDS:
        raise NeighborhoodAttentionError(
            f"unknown neighborhood-attention backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    if torch.device(device).type == "cuda":
        return "natten" if natten_supports(with_rpb) else "flex"
    return "blocked"


_AUTO: dict[str, Any] = {"measure": os.environ.get("GLOCAL_NA_AUTO", "measure") != "rule", "choices": {}}
AUTO_REPEATS = 3  # timed calls per candidate (after one warm-up call); the median decides
REFERENCE_AUTO_MAX_BYTES = 64 << 20  # the gather reference is a CPU candidate only below this gathered size


def set_auto_measure(enabled: bool) -> None:
    """Let ``auto`` measure the candidates (default) or apply :func:`resolve_backend`'s rule; clears the cache."""
    _AUTO["measure"] = bool(enabled)
    _AUTO["choices"].clear()


def auto_candidates(q: torch.Tensor, v: torch.Tensor, kernel_size: int, with_rpb: bool,
                    dropout_p: float = 0.0) -> tuple[str, ...]:
    """The backends ``auto`` measures for a call: on CUDA natten (when it supports the call), compiled flex
    (not with dropout) and blocked; elsewhere blocked, plus the gather reference when its gather is small."""
    if q.device.type == "cuda":
        names = ["natten"] if natten_supports(with_rpb) and not (dropout_p > 0 and not _rpb_natten()) else []
        if flex_compile_enabled() and dropout_p == 0:
            names.append("flex")
        return (*names, "blocked")
    gathered = q.shape[0] * q.shape[1] * q.shape[2] * q.shape[3] * kernel_size ** 2 * (q.shape[-1] + v.shape[-1])
    small = gathered * q.element_size() <= REFERENCE_AUTO_MAX_BYTES
    return ("blocked", "reference") if small else ("blocked",)


def _rpb_natten() -> bool:
    api = _natten_api()
    return api is not None and api["rpb_ops"] is not None


def _time_backend(name: str, args: tuple) -> float:
    """Median seconds of ``AUTO_REPEATS`` calls of backend ``name`` after one warm-up call (device-synchronised)."""
    import time

    q = args[0]
    sync = torch.cuda.synchronize if q.device.type == "cuda" else (lambda: None)
    _IMPLS[name](*args)
    times = []
    for _ in range(AUTO_REPEATS):
        sync()
        t0 = time.perf_counter()
        _IMPLS[name](*args)
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _cannot_measure(q: torch.Tensor) -> bool:
    """Inside torch.compile tracing, CUDA-graph capture or a dispatch mode (FLOP counting) nothing is timed."""
    if torch.compiler.is_compiling() or _counting():
        return True
    return q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def auto_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None, kernel_size: int,
                 dilation: int, dropout_p: float = 0.0) -> str:
    """The backend ``auto`` runs for this call: the measured fastest candidate (cached per call signature), or
    :func:`resolve_backend`'s rule where measuring is switched off or impossible."""
    key = (str(q.device), q.dtype, tuple(q.shape), v.shape[-1], kernel_size, dilation, rpb is not None,
           dropout_p > 0)
    choice = _AUTO["choices"].get(key)
    if choice is not None:
        return choice
    if not _AUTO["measure"] or _cannot_measure(q):
        name = resolve_backend("auto", q.device, rpb is not None)
        return "blocked" if name == "flex" and dropout_p > 0 else name  # flex has no attention dropout
    candidates = auto_candidates(q, v, kernel_size, rpb is not None, dropout_p)
    times: dict[str, float] = {}
    with torch.no_grad():
        args = (q.detach(), k.detach(), v.detach(), None if rpb is None else rpb.detach(), kernel_size, dilation, 0.0)
        for name in candidates if len(candidates) > 1 else ():
            try:
                times[name] = _time_backend(name, args)
            except (RuntimeError, NeighborhoodAttentionError):  # e.g. out of memory, or an unsupported call
                continue
    choice = min(times, key=times.__getitem__) if times else candidates[-1]
    _AUTO["choices"][key] = choice
    return choice


def _counting() -> bool:
    """True inside a Python dispatch mode (e.g. FlopCounterMode), which FlexAttention cannot run under."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        return bool(_get_current_dispatch_mode_stack())
    except Exception:  # noqa: BLE001 - private API moved: assume not counting
        return False


def na2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None = None, kernel_size: int = 7,
         dilation: int = 1, backend: str = "auto", dropout_p: float = 0.0) -> torch.Tensor:
    """2-D neighborhood attention on ``[B, heads, H, W, D]`` tensors (``q`` pre-scaled), NATTEN semantics."""
    check_kernel_dilation(kernel_size, dilation)
    if q.dim() != 5 or k.shape != q.shape or v.dim() != 5 or v.shape[:4] != q.shape[:4]:
        raise NeighborhoodAttentionError(
            f"q, k, v must be [B, heads, H, W, D] with matching shapes, got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}")
    H, W = q.shape[2], q.shape[3]
    if min(H, W) < kernel_size * dilation:
        raise NeighborhoodAttentionError(
            f"feature map {H}x{W} is smaller than kernel_size*dilation = {kernel_size * dilation} "
            "(NeighborhoodAttention2D pads such maps; the functional op does not)")
    if rpb is not None and tuple(rpb.shape) != (q.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1):
        raise NeighborhoodAttentionError(
            f"rpb must be [heads, 2k-1, 2k-1] = {[q.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1]}, "
            f"got {list(rpb.shape)}")
    if backend == "auto":
        name = auto_backend(q, k, v, rpb, kernel_size, dilation, dropout_p)
    else:
        name = resolve_backend(backend, q.device, rpb is not None)
    if name in ("flex", "natten") and _counting():
        name = "blocked"  # FlexAttention (also inside NATTEN >= 0.20) cannot run under FlopCounterMode; the
        # MAC count comes from na2d_macs either way
    return _IMPLS[name](q, k, v, rpb, kernel_size, dilation, dropout_p)


def na2d_macs(q_shape: tuple[int, ...] | torch.Size, kernel_size: int, v_dim: int | None = None) -> int:
    """Multiply-adds of NA: every query does k^2 * head_dim for QK and k^2 * v_dim for AV."""
    B, nh, H, W, D = q_shape
    return int(B * nh * H * W * kernel_size * kernel_size * (D + (D if v_dim is None else v_dim)))


# ----------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------

@register_notrace_module
class NeighborhoodAttentionCore(nn.Module):
    """The parameter-free NA core (q, k, v, rpb -> out); its own module so MAC counting uses the formula, and
    a leaf for torch.fx (its backend choice is Python control flow). TorchScript runs the gather reference."""

    def __init__(self, kernel_size: int, dilation: int = 1, attn_drop: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        check_kernel_dilation(kernel_size, dilation)
        resolve_backend(backend, "cpu")  # validate the name now
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.attn_drop = attn_drop
        self.backend = backend
        self.last_backend: str | None = None

    def backend_for(self, device: torch.device | str, with_rpb: bool = True) -> str:
        """The backend this core runs with on ``device``."""
        name = resolve_backend(self.backend, device, with_rpb)
        if self.training and self.attn_drop > 0 and name == "flex":
            return "blocked"  # flex has no attention dropout
        return name

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None) -> torch.Tensor:
        p = self.attn_drop if self.training else 0.0
        if torch.jit.is_scripting():
            return na2d_script(q, k, v, rpb, self.kernel_size, self.dilation, p)
        return self._dispatch(q, k, v, rpb, p)

    @torch.jit.unused
    def _dispatch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                  dropout_p: float) -> torch.Tensor:
        if self.backend == "auto":
            name = auto_backend(q, k, v, rpb, self.kernel_size, self.dilation, dropout_p)
        else:
            name = self.backend_for(q.device, rpb is not None)
        self.last_backend = name
        return na2d(q, k, v, rpb, self.kernel_size, self.dilation, backend=name, dropout_p=dropout_p)

    def glocal_macs(self, inputs: tuple, output: Any) -> int:
        q, _, v = inputs[:3]
        return na2d_macs(tuple(q.shape), self.kernel_size, v.shape[-1])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}, backend={self.backend!r}"


@register_notrace_function
def pad_to_window(x: torch.Tensor, dim: int, window: int) -> torch.Tensor:
    """Check a channels-last ``[B, H, W, dim]`` map and zero-pad it at the bottom/right to at least ``window``
    per side (NATTEN <= 0.15; padded tokens act as keys). One opaque call under torch.fx."""
    if x.dim() != 4 or x.shape[-1] != dim:
        raise NeighborhoodAttentionError(f"expected channels-last input [B, H, W, {dim}], got {list(x.shape)}")
    pad_h, pad_w = max(0, window - x.shape[1]), max(0, window - x.shape[2])
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


@register_notrace_function
def rpb_for_call(rpb: torch.Tensor | None) -> torch.Tensor | None:
    """The RPB as the core receives it: detached when autograd is off (FlopCounterMode's module tracker fails on
    Parameter inputs without autograd). Decided at run time, also in a torch.fx graph."""
    if rpb is not None and not torch.is_grad_enabled():
        return rpb.detach()
    return rpb


class NeighborhoodAttention2D(nn.Module):
    """NATTEN's 2-D NA module (channels-last ``[B, H, W, C]``): qkv, NA with RPB, proj; NATTEN <= 0.15 padding."""

    __jit_unused_properties__ = ["backend"]

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 rel_pos_bias: bool = True, backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if dim % num_heads:
            raise NeighborhoodAttentionError(f"dim {dim} is not divisible by num_heads {num_heads}")
        check_kernel_dilation(kernel_size, dilation)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.window_size = kernel_size * dilation
        if rel_pos_bias:  # registered first, like NATTEN, so it leads the state dict
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1, **dd))
            trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.core = NeighborhoodAttentionCore(kernel_size, dilation, attn_drop, backend)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def backend(self) -> str:
        return self.core.backend

    @torch.jit.unused
    def backend_for(self, device: torch.device | str) -> str:
        return self.core.backend_for(device, self.rpb is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad_to_window(x, self.dim, self.window_size)  # maps smaller than k*d: cropped back below
        B, H, W, C = padded.shape
        qkv = self.qkv(padded).reshape(B, H, W, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.unbind(0)
        out = self.core(q * self.scale, k, v, rpb_for_call(self.rpb))  # [B, heads, H, W, head_dim]
        out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :x.shape[1], :x.shape[2]]
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, rel_pos_bias={self.rpb is not None}")
