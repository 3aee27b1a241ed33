"""FlashVGGT (arXiv 2512.01540): VGGT whose global attention reads compressed per-frame descriptors.

In the compressed global layers every query (all S*P tokens, full resolution) attends to keys/values made from

* the 5 special tokens of every frame (camera + registers), uncompressed;
* each frame's patch grid resampled by a factor r to floor(pH/r) x floor(pW/r);
* the full patch grids of the keyframes: frame 0, plus the frames nearest to k-means centres of the per-frame
  mean input tokens when S // ``keyframe_every`` >= 2 (frame 0 is kept twice if k-means picks it too).

The keys/values use the k and v rows of VGGT's fused ``qkv`` weight, so there are no new parameters and the
state dict is VGGT-1B's without ``point_head``/``track_head``. Two official behaviours exist; the defaults follow
the newest code (wzpscott/FlashVGGT @ fbb61f90), which differs from the paper and the initial release:

=================  =======================================  ==============================================
                   newest code (default)                     paper / initial release (``PAPER``)
compressed layers  global blocks 9..19 (inclusive)           all 24
other global       run as *frame* attention (same weights)   --
r                  3                                          4
resampling         nearest (a strided subset of the grid)    bilinear, align_corners=False, on the block's
                                                             normalised input
=================  =======================================  ==============================================

Nearest resampling commutes with the per-token K/V projection, QK-norm and RoPE, so building the descriptors
from the normalised block input (as here, for both modes) equals the newest code's subsetting of projected K/V.

``FlashVGGTStream`` processes frames in chunks; each compressed layer caches the chunk's descriptor states
(pre-projection, with their RoPE positions), keeping every p-th frame, and later chunks attend to the cache
plus their own descriptors; frame 0's full grid joins on the first chunk. The newest code caches the projected
post-RoPE K/V instead: the same numbers, twice the memory per cached token. The camera head runs once at the
end on all frames' camera tokens; the depth head per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.zoo.models.vggt import (
    PATCH,
    SPECIAL,
    TINY,
    VGGT,
    Aggregator,
    VGGTConfig,
    VGGTInputError,
    check_images,
    pose_encoding_to_extri_intri,
    unproject_depth,
)
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

FLASH_HEADS = ("camera", "depth")  # no point or track head: world points come from depth and cameras


@dataclass(frozen=True)
class FlashConfig:
    """The descriptor attention's settings (defaults: the newest official code and the FlashVGGT class)."""

    kv_downfactor: int = 3
    keyframe_every: int | None = 200  # None: no keyframes at all, not even frame 0
    compressed: tuple[int, int] | None = (9, 19)  # inclusive range of compressed global layers; None: all
    uncompressed_as_frame: bool = True  # the other global layers attend within each frame (newest code)
    downsample: str = "nearest"  # "nearest" (newest) or "bilinear" (paper, initial release)

    def is_compressed(self, layer: int) -> bool:
        return self.compressed is None or self.compressed[0] <= layer <= self.compressed[1]


PAPER = FlashConfig(kv_downfactor=4, keyframe_every=10, compressed=None, uncompressed_as_frame=False,
                    downsample="bilinear")


# --------------------------------------------------------------------------------------------- k-means keyframes


def kmeans_centers(x: torch.Tensor, k: int, num_init: int = 8, max_iter: int = 100, tol: float = 1e-4,
                   seed: int = 123) -> torch.Tensor:
    """Batched Lloyd k-means as ``torch_kmeans.KMeans(n_clusters=k)`` runs it by default: x [B, n, d] -> [B, k, d].

    Random init from k distinct points per restart (one generator seeded ``seed``), assignment by
    ``F.pairwise_distance`` (its 1e-6 offset included), empty clusters collapse to zero, stop when every
    restart's mean centre shift is below ``tol``; the restart with the lowest inertia wins. (The official
    call passes ``random_state=42``, which that library ignores.)"""
    B, n, d = x.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)
    weights = torch.full((B * num_init, n), 1.0 / n, device=x.device, dtype=x.dtype)
    idx = torch.multinomial(weights, k, replacement=False, generator=gen)
    centers = x.gather(1, idx.view(B, -1, 1).expand(B, -1, d)).view(B, num_init, k, d)
    labels = torch.arange(k, device=x.device)

    def assign(c: torch.Tensor) -> torch.Tensor:  # [B, init, n]
        return F.pairwise_distance(x[:, None, :, None, :], c[:, :, None, :, :], p=2).argmin(-1)

    for _ in range(max_iter):
        old = centers
        onehot = (assign(centers)[..., None] == labels).permute(0, 1, 3, 2).to(x.dtype)  # [B, init, k, n]
        centers = torch.matmul(F.normalize(onehot, p=1.0, dim=-1), x[:, None])
        if (torch.linalg.vector_norm(centers - old, dim=-1).mean(-1) < tol).all():
            break
    lab = assign(centers)
    chosen = centers.gather(2, lab[..., None].expand(-1, -1, -1, d))
    inertia = (torch.linalg.vector_norm(x[:, None] - chosen, dim=-1) ** 2).sum(-1)
    best = inertia.argmin(-1)
    return centers[torch.arange(B, device=x.device), best]


@torch.no_grad()
def select_keyframes(tokens: torch.Tensor, B: int, S: int, keyframe_every: int | None) -> torch.Tensor | None:
    """[B, 1 + K] keyframes: frame 0, then per k-means centre (K = S // keyframe_every >= 2) the nearest frame.

    Frames are described by the mean of their input tokens (before any block). None without keyframes."""
    if keyframe_every is None:
        return None
    frames = tokens.reshape(B, S, -1, tokens.shape[-1]).mean(dim=2).float()  # fp32, as under the official autocast
    k = S // keyframe_every
    zero = torch.zeros(B, 1, dtype=torch.long, device=tokens.device)
    if k <= 1:
        return zero
    nearest = torch.cdist(frames, kmeans_centers(frames, k)).argmin(dim=1)
    return torch.cat([zero, nearest], dim=1)


# --------------------------------------------------------------------------------------------- descriptors


def reduced_grid(ph: int, pw: int, r: int) -> tuple[int, int]:
    """The descriptor grid (floor(pH/r), floor(pW/r)); an empty grid is an input error."""
    nh, nw = ph // r, pw // r
    if nh == 0 or nw == 0:
        raise VGGTInputError(f"a {ph}x{pw} patch grid cannot be reduced by r={r}: use a larger image or smaller r")
    return nh, nw


def _nearest_index(n_in: int, n_out: int, device) -> torch.Tensor:
    """The source rows ``F.interpolate(mode="nearest")`` reads (the official subsampling, exactly)."""
    src = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, n_in, 1)
    return F.interpolate(src, size=(n_out, 1), mode="nearest").view(-1).long()


def frame_descriptors(y: torch.Tensor, pos: torch.Tensor, ph: int, pw: int, r: int, mode: str = "nearest"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: 5 specials + the grid resampled by r. y [B, S, P, C], pos [B, S, P, 2] -> [B, S, 5+n, C], [.., 2].

    Key positions are always the nearest-subsampled grid positions (both official versions)."""
    B, S, P, C = y.shape
    nh, nw = reduced_grid(ph, pw, r)
    rows, cols = _nearest_index(ph, nh, y.device), _nearest_index(pw, nw, y.device)
    grid = y[:, :, SPECIAL:].reshape(B, S, ph, pw, C)
    if mode == "nearest":
        small = grid[:, :, rows][:, :, :, cols]
    elif mode == "bilinear":
        flat = grid.reshape(B * S, ph, pw, C).permute(0, 3, 1, 2).float()
        small = F.interpolate(flat, size=(nh, nw), mode="bilinear", align_corners=False).to(y.dtype)
        small = small.permute(0, 2, 3, 1).reshape(B, S, nh, nw, C)
    else:
        raise ValueError(f"unknown FlashVGGT downsample mode {mode!r} (nearest or bilinear)")
    small_pos = pos[:, :, SPECIAL:].reshape(B, S, ph, pw, 2)[:, :, rows][:, :, :, cols]
    states = torch.cat([y[:, :, :SPECIAL], small.reshape(B, S, nh * nw, C)], dim=2)
    return states, torch.cat([pos[:, :, :SPECIAL], small_pos.reshape(B, S, nh * nw, 2)], dim=2)


def keyframe_tokens(y: torch.Tensor, pos: torch.Tensor, keyframes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full patch grids (no specials) of the keyframes [B, K]: y [B, S, P, C] -> [B, K*(P-5), C] and positions."""
    b = torch.arange(y.shape[0], device=y.device)[:, None]
    return (y[b, keyframes, SPECIAL:].flatten(1, 2), pos[b, keyframes, SPECIAL:].flatten(1, 2))


def global_kv_count(S: int, ph: int, pw: int, r: int, n_keyframes: int) -> int:
    """Keys per compressed global layer: S * (5 + floor(pH/r) * floor(pW/r)) + |keyframes| * pH * pW."""
    return S * (SPECIAL + (ph // r) * (pw // r)) + n_keyframes * ph * pw


def n_keyframes(S: int, keyframe_every: int | None) -> int:
    """|keyframes| the selection returns: 0 without keyframes, else 1 + K when K = S // every >= 2, else 1."""
    if keyframe_every is None:
        return 0
    k = S // keyframe_every
    return 1 + k if k >= 2 else 1


# --------------------------------------------------------------------------------------------- aggregator


class FlashAggregator(Aggregator):
    """VGGT's aggregator with descriptor attention in the compressed global layers (no new parameters)."""

    def __init__(self, cfg: VGGTConfig, flash: FlashConfig):
        super().__init__(cfg)
        self.flash = flash

    def layer_context(self, tokens: torch.Tensor, B: int, S: int, H: int, W: int) -> dict:
        keyframes = select_keyframes(tokens, B, S, self.flash.keyframe_every)
        return {"grid": (H // PATCH, W // PATCH), "keyframes": keyframes}

    def global_layer(self, i: int, tokens: torch.Tensor, pos: torch.Tensor, B: int, S: int, ctx: dict) -> torch.Tensor:
        fl = self.flash
        if not fl.is_compressed(i):
            if fl.uncompressed_as_frame:
                return self.global_blocks[i](tokens, pos=pos)
            return super().global_layer(i, tokens, pos, B, S, ctx)
        P, C = tokens.shape[-2:]
        ph, pw = ctx["grid"]
        pos_bs = pos.reshape(B, S, P, 2)

        def kv_fn(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = y.reshape(B, S, P, C)
            states, spos = frame_descriptors(y, pos_bs, ph, pw, fl.kv_downfactor, fl.downsample)
            return self.assemble_kv(i, y, pos_bs, states, spos, ctx)

        out = self.global_blocks[i](tokens.reshape(B, S * P, C), pos=pos.reshape(B, S * P, 2), kv_fn=kv_fn)
        return out.reshape(B * S, P, C)

    def assemble_kv(self, i: int, y: torch.Tensor, pos: torch.Tensor, states: torch.Tensor, spos: torch.Tensor,
                    ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Key/value states of layer i: keyframe grids first, then every frame's descriptors in frame order."""
        B = y.shape[0]
        kv, kv_pos = states.reshape(B, -1, y.shape[-1]), spos.reshape(B, -1, 2)
        if ctx["keyframes"] is not None:
            ref, ref_pos = keyframe_tokens(y, pos, ctx["keyframes"])
            kv, kv_pos = torch.cat([ref, kv], dim=1), torch.cat([ref_pos, kv_pos], dim=1)
        ctx.setdefault("kv_counts", {})[i] = kv.shape[1]
        return kv, kv_pos


class StreamAggregator(FlashAggregator):
    """Chunk-recursive aggregator: compressed layers attend to a per-layer cache of earlier chunks' descriptors."""

    def layer_context(self, tokens: torch.Tensor, B: int, S: int, H: int, W: int) -> dict:
        raise RuntimeError("the streaming aggregator runs inside FlashVGGTStream.forward, which passes its context")

    def assemble_kv(self, i, y, pos, states, spos, ctx):
        B, C = y.shape[0], y.shape[-1]
        p = ctx["drop"]
        kv, kv_pos = states[:, ::p].reshape(B, -1, C), spos[:, ::p].reshape(B, -1, 2)
        if ctx["first"]:  # frame 0's full grid anchors the world frame
            kv = torch.cat([y[:, 0, SPECIAL:], kv], dim=1)
            kv_pos = torch.cat([pos[:, 0, SPECIAL:], kv_pos], dim=1)
        cache = ctx["cache"]
        if i in cache:
            kv, kv_pos = torch.cat([cache[i][0], kv], dim=1), torch.cat([cache[i][1], kv_pos], dim=1)
        cache[i] = (kv, kv_pos)
        ctx.setdefault("kv_counts", {})[i] = kv.shape[1]
        return kv, kv_pos


# --------------------------------------------------------------------------------------------- models


class FlashVGGT(VGGT):
    """FlashVGGT: camera and depth heads; world points by unprojecting depth with the predicted cameras."""

    def __init__(self, cfg: VGGTConfig = VGGTConfig(heads=FLASH_HEADS), flash: FlashConfig = FlashConfig(),
                 aggregator_cls: type[FlashAggregator] = FlashAggregator):
        super().__init__(cfg, aggregator=aggregator_cls(cfg, flash))
        self.flash = flash

    def keep_heads(self, heads: Sequence[str]) -> FlashVGGT:
        """FlashVGGT needs both of its heads (world points come from depth and cameras)."""
        if set(heads) != set(FLASH_HEADS):
            raise ValueError(f"FlashVGGT runs heads {'+'.join(FLASH_HEADS)} only, not {'+'.join(heads) or 'none'}")
        return self

    def add_points(self, predictions: dict, hw: tuple[int, int]) -> dict:
        extrinsics, intrinsics = pose_encoding_to_extri_intri(predictions["pose_enc"], hw)
        predictions["world_points"] = unproject_depth(predictions["depth"], extrinsics, intrinsics)
        predictions["world_points_conf"] = predictions["depth_conf"]
        return predictions

    def forward(self, images: torch.Tensor, return_points: bool = True) -> dict:
        images = check_images(images)
        tokens_list, _ = self.aggregator(images)
        predictions = self.heads(tokens_list, images, {})
        if not self.training:
            predictions["images"] = images
        return self.add_points(predictions, images.shape[-2:]) if return_points else predictions


class FlashVGGTStream(FlashVGGT):
    """Streaming FlashVGGT: chunks of frames, per-layer descriptor caches, camera head once at the end."""

    def __init__(self, cfg: VGGTConfig = VGGTConfig(heads=FLASH_HEADS), flash: FlashConfig = FlashConfig(),
                 chunk_size: int = 12, memory_drop_rate: int = 1):
        super().__init__(cfg, flash, aggregator_cls=StreamAggregator)
        self.chunk_size, self.memory_drop_rate = chunk_size, memory_drop_rate

    def forward(self, images: torch.Tensor, chunk_size: int | None = None, memory_drop_rate: int | None = None,
                return_points: bool = False) -> dict:
        images = check_images(images)
        chunk = chunk_size or self.chunk_size
        drop = memory_drop_rate or self.memory_drop_rate
        if chunk < 1 or drop < 1:
            raise VGGTInputError(f"chunk_size and memory_drop_rate must be >= 1, got {chunk} and {drop}")
        H, W = images.shape[-2:]
        cache: dict = {}
        cams, depth, conf = [], [], []
        for s0 in range(0, images.shape[1], chunk):
            part = images[:, s0:s0 + chunk]
            ctx = {"grid": (H // PATCH, W // PATCH), "keyframes": None, "first": s0 == 0, "cache": cache,
                   "drop": drop}
            tokens_list, start = self.aggregator(part, first=s0 == 0, ctx=ctx)
            cams.append(tokens_list[-1][:, :, 0])
            with torch.autocast(images.device.type, enabled=False):
                d, c = self.depth_head(self.head_inputs(tokens_list), part, start)
            depth.append(d)
            conf.append(c)
            del tokens_list
        with torch.autocast(images.device.type, enabled=False):
            pose_list = self.camera_head.refine(torch.cat(cams, dim=1).to(self.aggregator.camera_token.dtype))
        predictions = {"pose_enc": pose_list[-1], "pose_enc_list": pose_list, "depth": torch.cat(depth, dim=1),
                       "depth_conf": torch.cat(conf, dim=1)}
        if not self.training:
            predictions["images"] = images
        self.cache_tokens = {i: kv.shape[1] for i, (kv, _) in cache.items()}
        return self.add_points(predictions, (H, W)) if return_points else predictions


# --------------------------------------------------------------------------------------------- cost formulas


def stream_kv_counts(S: int, ph: int, pw: int, r: int, chunk: int, drop: int = 1) -> list[int]:
    """Keys of a compressed layer at each chunk of the stream: frame 0's grid + every retained frame so far."""
    per_frame = SPECIAL + (ph // r) * (pw // r)
    counts, kv = [], ph * pw
    for s0 in range(0, S, chunk):
        kv += -(-min(chunk, S - s0) // drop) * per_frame  # frames s0, s0 + p, ... of the chunk
        counts.append(kv)
    return counts


def attention_macs(S: int, H: int, W: int, cfg: VGGTConfig = VGGTConfig(), flash: FlashConfig | None = None,
                   n_kf: int | None = None, chunk: int | None = None, drop: int = 1) -> dict[str, float]:
    """Multiply-accumulates of the aggregator's attention products (QK^T and AV: 2 * d * queries * keys per layer).

    ``flash`` None is VGGT (every global layer dense over S*P tokens); ``chunk`` makes it the streaming model
    (the queries of each chunk against that chunk's cache). Returns frame, global and total MACs and the
    key/value count of one compressed (or dense) global layer (streaming: at the last chunk)."""
    ph, pw = H // PATCH, W // PATCH
    P, d, L = SPECIAL + ph * pw, cfg.embed_dim, cfg.depth
    frame = L * 2 * d * S * P * P
    if flash is None:
        kv = S * P
        glob = L * 2 * d * (S * P) * kv
    else:
        n_comp = sum(flash.is_compressed(i) for i in range(L))
        if chunk:
            counts = stream_kv_counts(S, ph, pw, flash.kv_downfactor, chunk, drop)
            kv = counts[-1]
            per_layer = sum(2 * d * min(chunk, S - c * chunk) * P * n for c, n in enumerate(counts))
        else:
            kf = n_keyframes(S, flash.keyframe_every) if n_kf is None else n_kf
            kv = global_kv_count(S, ph, pw, flash.kv_downfactor, kf)
            per_layer = 2 * d * (S * P) * kv
        other = 2 * d * S * P * P if flash.uncompressed_as_frame or chunk else 2 * d * (S * P) ** 2
        glob = n_comp * per_layer + (L - n_comp) * other
    return {"frame_macs": float(frame), "global_macs": float(glob), "attention_macs": float(frame + glob),
            "global_kv": int(kv), "tokens": int(S * P)}


# --------------------------------------------------------------------------------------------- registration


_DROP = ("point_head.", "track_head.")


def convert_state_dict(state_dict: dict[str, torch.Tensor], layout: str = "official") -> dict[str, torch.Tensor]:
    """``official`` FlashVGGT files load as they are; a ``vggt`` (VGGT-1B) file loses its point and track heads."""
    if layout == "vggt":
        return {k: v for k, v in state_dict.items() if not k.startswith(_DROP)}
    if layout != "official":
        raise ValueError(f"unknown FlashVGGT checkpoint layout {layout!r} (official or vggt)")
    return state_dict


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """``vggt`` when the file carries VGGT's point/track heads, else ``official``."""
    if not any(k.startswith("aggregator.") for k in state_dict):
        raise ValueError("not a VGGT/FlashVGGT checkpoint: no aggregator.* keys")
    return "vggt" if any(k.startswith(_DROP) for k in state_dict) else "official"


FLASH_TINY = FlashConfig(kv_downfactor=2, keyframe_every=4, compressed=(1, 2))


def build_flashvggt(config: str = "1b", stream: bool = False, flash: FlashConfig | None = None,
                    heads: tuple[str, ...] = FLASH_HEADS, **overrides) -> nn.Module:
    """``config`` "1b" or "tiny"; ``flash`` replaces the descriptor settings; ``overrides`` the VGGT config."""
    base = {"1b": VGGTConfig(), "tiny": TINY}[config]
    cfg = replace(base, heads=heads, **overrides)
    flash = flash or {"1b": FlashConfig(), "tiny": FLASH_TINY}[config]
    return (FlashVGGTStream(cfg, flash) if stream else FlashVGGT(cfg, flash)).eval()


PAPER_METRICS = (
    PaperMetric("runtime", "seconds_1000_frames", 35.3, "paper, H800 (VGGT: 377.6 s, 9.3 %)"),
    PaperMetric("runtime", "vggt_seconds_1000_frames", 377.6, "paper, VGGT on the same H800"),
    PaperMetric("runtime", "seconds_100_frames", 1.54, "paper dense-reconstruction table, H800 (VGGT 4.93 s)"),
    PaperMetric("RealEstate10K", "auc30", 85.30, "paper, 10 frames (VGGT 85.32)"),
    PaperMetric("CO3Dv2", "auc30", 86.88, "paper, 10 frames (VGGT 88.59)"),
)
_PREP = Preprocessing(input_size=(3, 392, 518), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0)


def _variant(name: str, config: str, stream: bool, filename: str | None, notes: str,
             metrics: Sequence[PaperMetric] = ()) -> Variant:
    weights = (WeightSource(description=f"ZipW/FlashVGGT {filename} (state dict, possibly under 'model')",
                            hf_hub_id="ZipW/FlashVGGT", filename=filename),) if filename else ()
    side = 518 if config == "1b" else 56
    return Variant(name=name, builder=build_flashvggt,
                   kwargs={"config": config, "stream": stream, "heads": FLASH_HEADS},
                   preprocessing=replace(_PREP, input_size=(3, 392, 518) if config == "1b" else (3, 56, 56)),
                   weights=weights, paper_metrics=tuple(metrics),
                   params=1_157_941_492 if config == "1b" else None, resolution_multiple=PATCH,
                   resolutions=(side,), notes=notes)


CARD = register(ModelCard(
    family="flashvggt",
    display_name="FlashVGGT",
    task="multiview",
    paper_title="FlashVGGT: Efficient and Scalable Visual Geometry Transformers with Compressed Descriptor "
                "Attention",
    arxiv_id="2512.01540",
    official_repo="https://github.com/wzpscott/FlashVGGT",
    license="code: no licence file (VGGT-derived files keep Meta's headers); weights reportedly CC-BY-NC-4.0",
    default_variant="flashvggt",
    description="VGGT whose global layers attend to per-frame special tokens, an r-times reduced patch grid and "
                "full-resolution keyframes; chunked streaming with a descriptor cache.",
    variants=(
        _variant("flashvggt", "1b", False, "flashvggt.pt", "Newest official settings: r=3 nearest, layers 9-19 "
                 "compressed, others per frame, keyframe_every=200.", PAPER_METRICS),
        _variant("flashvggt_stream", "1b", True, "flashvggt_stream.pt", "Chunks of 12 frames, p=1 (keep every "
                 "frame's descriptors); camera head once at the end."),
        _variant("flashvggt_tiny", "tiny", False, None, "Random-weight tiny shapes for CPU tests (r=2, layers 1-2)."),
        _variant("flashvggt_stream_tiny", "tiny", True, None, "Tiny streaming model for CPU tests."),
    ),
    convert_state_dict=convert_state_dict,
    detect_layout=detect_layout,
))
