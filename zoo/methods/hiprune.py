"""HiPrune: training-free visual token pruning from the vision encoder's own attention (arXiv 2508.00553).

A budget of ``keep`` visual tokens per image is filled with

1. **anchors**: the top ``round(keep * alpha / 5)`` tokens by the attention they receive at a middle
   "object" layer (layer 9 of LLaVA-1.5's 24-layer CLIP-L, 16 of Qwen2.5-VL's 32-layer ViT);
2. **buffers**: the four grid neighbours (index +-1, +-width) of every anchor;
3. **registers**: the top remaining tokens by the attention they receive at a deep layer (the layer whose
   output LLaVA feeds the language model; Qwen2.5-VL's last layer).

The kept indices are sorted, so the language model sees them in raster order. Everything here follows the
official code (Danielement321/HiPrune, ``llava_arch.py`` and ``qwen2_5_vl_HiPrune.py``); two quirks of it are
kept as the default and can be switched off: ``wrap`` (the +-1 buffers wrap across row ends and indices
outside the grid are clamped, not dropped) and ``registers="official"`` (already chosen tokens are demoted by
subtracting 1 from their deep score, which excludes them only when scores are below 1: true for LLaVA's mean
over queries, not for Qwen's sum over queries, where an anchor can be picked again and fewer than ``keep``
tokens survive).

Scores are reduced while the encoder runs: only the object and the deep layer are tapped, and each tap sums
softmax(q k^T) over heads and query rows in row chunks, so no layer's full attention map is kept (the
encoder itself keeps its SDPA/flash attention). :func:`received_attention` is that reduction;
:class:`ClipScorer`, :class:`QwenVisionScorer`, :class:`TimmViTScorer` and :class:`OpenClipScorer` tap the
encoders; :class:`HiPruneVLM` wraps a LLaVA or Qwen2.5-VL model so its language model sees only the kept tokens.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

DEFAULT_ALPHA = 0.1
LLAVA_OBJECT_LAYER = 9  # 1-indexed, CLIP ViT-L/14-336 (24 layers)
QWEN_OBJECT_LAYER = 16  # 1-indexed, Qwen2.5-VL ViT (32 layers)
_ATTN_IMPL = "glocal_hiprune_scores"


class HiPruneError(ValueError):
    """A HiPrune request that cannot be met (budget, scores, encoder or host)."""


# --------------------------------------------------------------------------------------------- selection
def anchor_count(keep: int, alpha: float = DEFAULT_ALPHA) -> int:
    """Number of anchors for a budget: ``round(keep * alpha / 5)`` (Python's round, as the official code)."""
    return round(keep * alpha / 5)


def buffer_tokens(anchors: torch.Tensor, grid_width: int, num_tokens: int, wrap: bool = True) -> torch.Tensor:
    """Anchors and their 4-neighbours on a raster grid, de-duplicated (unsorted).

    ``wrap=True`` is the official behaviour: +-1 crosses row ends and indices are clamped into ``[0, N-1]``
    (so an anchor in the first row also keeps token 0). ``wrap=False`` keeps true grid neighbours only.
    """
    if wrap:
        cand = torch.cat([anchors, anchors - 1, anchors + 1, anchors - grid_width, anchors + grid_width])
        return torch.unique(cand.clamp(0, num_tokens - 1))
    col = anchors % grid_width
    cand = [anchors, anchors[col > 0] - 1, anchors[col < grid_width - 1] + 1,
            anchors[anchors >= grid_width] - grid_width, anchors[anchors + grid_width < num_tokens] + grid_width]
    return torch.unique(torch.cat(cand))


def select_tokens(object_scores: torch.Tensor, deep_scores: torch.Tensor, keep: int, grid_width: int, *,
                  alpha: float = DEFAULT_ALPHA, wrap: bool = True, registers: str = "official") -> torch.Tensor:
    """Indices (sorted, int64) of the tokens HiPrune keeps for one image from its per-token scores.

    ``object_scores`` / ``deep_scores``: 1-D scores of the ``N`` patch tokens in raster order (no CLS).
    ``registers``: ``"official"`` demotes chosen tokens by 1 before the deep top-k (see the module
    docstring); ``"exclusive"`` removes them, so exactly ``keep`` tokens survive.
    """
    if object_scores.ndim != 1 or object_scores.shape != deep_scores.shape:
        raise HiPruneError(f"scores must be two 1-D tensors of the same length, got {tuple(object_scores.shape)} "
                           f"and {tuple(deep_scores.shape)}")
    n = object_scores.numel()
    if grid_width < 1 or n % grid_width:
        raise HiPruneError(f"{n} tokens do not form a grid of width {grid_width}")
    if not 1 <= keep <= n:
        raise HiPruneError(f"keep={keep} is outside 1..{n} (the image has {n} visual tokens)")
    if registers not in ("official", "exclusive"):
        raise HiPruneError(f"registers must be 'official' or 'exclusive', not {registers!r}")
    n_anchor = anchor_count(keep, alpha)
    anchors = torch.topk(object_scores, k=n_anchor).indices
    chosen = buffer_tokens(anchors, grid_width, n, wrap)
    n_register = keep - chosen.numel()
    if n_register < 0:
        raise HiPruneError(f"keep={keep} is too small for {n_anchor} anchors and their buffers ({chosen.numel()} "
                           f"tokens at alpha={alpha}); raise keep or lower alpha")
    taken = torch.zeros(n, dtype=torch.bool, device=deep_scores.device)
    taken[chosen] = True
    if registers == "official":
        deep = deep_scores - taken.to(deep_scores.dtype)
    else:
        deep = deep_scores.masked_fill(taken, float("-inf"))
    extra = torch.topk(deep, k=n_register).indices
    return torch.unique(torch.cat([chosen, extra]))  # sorted ascending, duplicates (official quirk) merged


def split_budget(keep: int, crops: int) -> int:
    """Per-crop budget of a multi-crop image (LLaVA-NeXT anyres): ``int(keep / crops)`` as the official code."""
    if crops < 1:
        raise HiPruneError(f"an image needs at least one crop, got {crops}")
    return int(keep / crops)


def select_crops(object_scores: torch.Tensor, deep_scores: torch.Tensor, keep: int, grid_width: int,
                 **kwargs: Any) -> list[torch.Tensor]:
    """Kept indices per crop of one image, ``(C, N)`` scores in, the budget split equally over the C crops."""
    per_crop = split_budget(keep, object_scores.shape[0])
    pairs = zip(object_scores, deep_scores, strict=True)
    return [select_tokens(o, d, per_crop, grid_width, **kwargs) for o, d in pairs]


def keep_count(keep: int | None, ratio: float | None, num_tokens: int) -> int:
    """A budget given as a token count or as a ratio of the image's tokens (Qwen: ``round(N * ratio)``)."""
    if (keep is None) == (ratio is None):
        raise HiPruneError("give exactly one of keep (tokens per image) and ratio (fraction of tokens)")
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise HiPruneError(f"ratio={ratio} is outside (0, 1]")
        return max(1, round(num_tokens * ratio))
    return int(keep)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- streamed reduction
def received_attention(query: torch.Tensor, key: torch.Tensor, scaling: float,
                       mask: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """Attention each key receives, summed over heads and query rows: ``(B, Nk)`` in float32.

    ``query``: ``(B, H, Nq, D)``, ``key``: ``(B, H, Nk, D)``. The softmax is taken ``chunk`` query rows at a time,
    so memory is ``B*H*chunk*Nk`` instead of the full ``B*H*Nq*Nk`` map.
    """
    total = query.new_zeros(query.shape[0], key.shape[2], dtype=torch.float32)
    keys_t = key.transpose(-1, -2)
    for start in range(0, query.shape[2], chunk):
        logits = torch.matmul(query[:, :, start:start + chunk], keys_t) * scaling
        if mask is not None:
            logits = logits + mask[..., start:start + chunk, :]
        total += torch.softmax(logits, dim=-1, dtype=torch.float32).sum(dim=(1, 2))
    return total


# ---------------------------------------------------------------------------------------------- encoders
class TokenScorer(ABC):
    """Taps a vision encoder's object and deep layers; after each forward :meth:`take` returns their scores.

    Layers: ``object_layer`` is 1-indexed (the official ``HIPRUNE_OBJECT_LAYER``), ``deep_layer`` a Python index
    into the list of layers (LLaVA: ``-2``, Qwen: ``-1``).
    """

    def __init__(self, layers: Sequence[nn.Module], object_layer: int, deep_layer: int) -> None:
        depth = len(layers)
        if not 1 <= object_layer <= depth:
            raise HiPruneError(f"object_layer={object_layer} is outside 1..{depth} (the encoder has {depth} layers)")
        if not -depth <= deep_layer < depth:
            raise HiPruneError(f"deep_layer={deep_layer} is outside -{depth}..{depth - 1}")
        self.object_index = object_layer - 1
        self.deep_index = deep_layer % depth
        self._sums: dict[int, list[torch.Tensor]] = {self.object_index: [], self.deep_index: []}
        self._handles: list[Any] = []  # hook handles, or (module, original config) for transformers taps

    def add(self, index: int, sums: torch.Tensor) -> None:
        self._sums[index].append(sums)

    def clear(self) -> None:
        """Drop what earlier forwards recorded (e.g. a call that bypassed the wrapper)."""
        for sums in self._sums.values():
            sums.clear()

    def _collected(self, index: int) -> list[torch.Tensor]:
        if not self._sums[index]:
            raise HiPruneError("no attention scores were recorded: run the encoder between install and take")
        out, self._sums[index] = self._sums[index], []
        return out

    def take(self, **context: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(object_scores, deep_scores)``, each ``(B, N)`` over patch tokens in raster order; clears the taps."""
        return (self.finish(self._collected(self.object_index), **context),
                self.finish(self._collected(self.deep_index), **context))

    @abstractmethod
    def finish(self, sums: list[torch.Tensor], **context: Any) -> torch.Tensor:
        """Reduce the recorded per-chunk sums to ``(B, N)`` scores over patch tokens in raster order."""

    def remove(self) -> None:
        """Undo the taps: the encoder computes exactly as before."""
        for h in self._handles:
            if isinstance(h, tuple):
                module, config = h
                module.config = config
                del module._glocal_hiprune_tap
            else:
                h.remove()
        self._handles.clear()


def _scoring_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """A transformers attention function: record the received-attention sums, then run the layer's own kernel."""
    scorer, index, base = module._glocal_hiprune_tap
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    with torch.no_grad():
        scorer.add(index, received_attention(query, key, scale, attention_mask))
    return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def _tap_hf_attention(scorer: TokenScorer, modules: dict[int, nn.Module], eager: Callable) -> None:
    """Route the chosen layers' attention through :func:`_scoring_attention` (a private config copy per layer)."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _ATTN_IMPL not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(_ATTN_IMPL, _scoring_attention)
    for index, module in modules.items():
        if hasattr(module, "_glocal_hiprune_tap"):
            raise HiPruneError("this encoder is already tapped by HiPrune")
        base_name = module.config._attn_implementation or "eager"
        base = ALL_ATTENTION_FUNCTIONS.get_interface(base_name, eager)
        config = copy.copy(module.config)
        config._attn_implementation_internal = _ATTN_IMPL
        scorer._handles.append((module, module.config))
        module.config = config
        module._glocal_hiprune_tap = (scorer, index, base)


class ClipScorer(TokenScorer):
    """transformers' CLIP vision tower (``CLIPVisionModel`` or its ``vision_model``): mean over heads and all
    query rows (CLS included), the CLS column dropped, as in the official LLaVA code."""

    def __init__(self, vision: nn.Module, object_layer: int = LLAVA_OBJECT_LAYER, deep_layer: int = -2) -> None:
        vision = getattr(vision, "vision_model", vision)
        layers = vision.encoder.layers
        super().__init__(layers, object_layer, deep_layer)
        from transformers.models.clip import modeling_clip

        _tap_hf_attention(self, {i: layers[i].self_attn for i in {self.object_index, self.deep_index}},
                          modeling_clip.eager_attention_forward)
        cfg = vision.config
        self.heads = cfg.num_attention_heads
        self.grid = (cfg.image_size // cfg.patch_size, cfg.image_size // cfg.patch_size)

    def finish(self, sums: list[torch.Tensor], **context: Any) -> torch.Tensor:
        total = torch.cat(sums)  # one call per forward: (B, 1 + N)
        return (total / (self.heads * total.shape[1]))[:, 1:]


class QwenVisionScorer(TokenScorer):
    """Qwen2.5-VL's vision tower: mean over heads, sum over query rows (per attention window), averaged over
    each 2x2 merge group and put back from window order into raster order, as ``qwen2_5_vl_HiPrune.py``."""

    def __init__(self, visual: nn.Module, object_layer: int = QWEN_OBJECT_LAYER, deep_layer: int = -1) -> None:
        super().__init__(visual.blocks, object_layer, deep_layer)
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

        _tap_hf_attention(self, {i: visual.blocks[i].attn for i in {self.object_index, self.deep_index}},
                          modeling_qwen2_5_vl.eager_attention_forward)
        self.visual = visual
        self.heads = visual.config.num_heads
        self.unit = visual.spatial_merge_size ** 2

    def finish(self, sums: list[torch.Tensor], *, grid_thw: torch.Tensor, **context: Any) -> list[torch.Tensor]:
        """Per image ``(t*h*w/4,)`` scores of the merged tokens (a list: images differ in size)."""
        per_patch = torch.cat(sums, dim=1)[0] / self.heads  # chunks arrive in window order
        merged = per_patch.view(-1, self.unit).mean(dim=-1)
        from transformers.vision_utils import get_vision_window_index

        v = self.visual
        window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=v.spatial_merge_size,
                                                  window_size=v.window_size, patch_size=v.patch_size, kwargs={})
        raster = merged[torch.argsort(window_index.to(merged.device))]
        sizes = (grid_thw.prod(-1) // self.unit).tolist()
        return list(torch.split(raster, sizes))


class TimmViTScorer(TokenScorer):
    """A timm ViT (``VisionTransformer``-style ``blocks[i].attn`` with ``qkv``): q and k of the two tapped layers
    are recomputed from the block's input in a pre-hook, so the model keeps its fused attention."""

    def __init__(self, model: nn.Module, object_layer: int | None = None, deep_layer: int = -1) -> None:
        blocks = model.blocks
        super().__init__(blocks, object_layer or max(1, round(len(blocks) * 9 / 24)), deep_layer)
        self.prefix = getattr(model, "num_prefix_tokens", 1)
        self.grid = tuple(model.patch_embed.grid_size)
        for i in {self.object_index, self.deep_index}:
            self._handles.append(blocks[i].attn.register_forward_pre_hook(self._hook(i), with_kwargs=True))

    def _hook(self, index: int) -> Callable:
        def hook(attn: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0]
            b, n, _ = x.shape
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
            with torch.no_grad():
                self.add(index, received_attention(q, k, attn.scale, mask) / (attn.num_heads * n))
        return hook

    def finish(self, sums: list[torch.Tensor], **context: Any) -> torch.Tensor:
        return torch.cat(sums)[:, self.prefix:]


class OpenClipScorer(TokenScorer):
    """An open_clip ``VisionTransformer`` (``model.visual``): its ``nn.MultiheadAttention`` runs with
    ``need_weights=False``, so q and k are recomputed from ``in_proj_weight`` in a pre-hook."""

    def __init__(self, visual: nn.Module, object_layer: int | None = None, deep_layer: int = -1) -> None:
        visual = getattr(visual, "visual", visual)
        blocks = visual.transformer.resblocks
        super().__init__(blocks, object_layer or max(1, round(len(blocks) * 9 / 24)), deep_layer)
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.prefix = 1 if getattr(visual, "class_embedding", None) is not None else 0
        self.grid = tuple(visual.grid_size)
        for i in {self.object_index, self.deep_index}:
            attn = blocks[i].attn
            if not isinstance(attn, nn.MultiheadAttention):
                raise HiPruneError(f"open_clip block {i} uses {type(attn).__name__}, not nn.MultiheadAttention")
            self._handles.append(attn.register_forward_pre_hook(self._hook(i), with_kwargs=True))

    def _hook(self, index: int) -> Callable:
        def hook(attn: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
            x = args[0] if self.batch_first else args[0].transpose(0, 1)
            b, n, d = x.shape
            heads = attn.num_heads
            w, bias = attn.in_proj_weight, attn.in_proj_bias
            q = nn.functional.linear(x, w[:d], None if bias is None else bias[:d])
            k = nn.functional.linear(x, w[d:2 * d], None if bias is None else bias[d:2 * d])
            q, k = (t.view(b, n, heads, d // heads).transpose(1, 2) for t in (q, k))
            mask = kwargs.get("attn_mask")
            with torch.no_grad():
                self.add(index, received_attention(q, k, (d // heads) ** -0.5, mask) / (heads * n))
        return hook

    def finish(self, sums: list[torch.Tensor], **context: Any) -> torch.Tensor:
        return torch.cat(sums)[:, self.prefix:]


def kept_tokens(scorer: TokenScorer, keep: int, **kwargs: Any) -> list[torch.Tensor]:
    """After a forward of a tapped ViT (CLIP, timm, open_clip): HiPrune's kept patch indices per image.

    >>> scorer = TimmViTScorer(vit); vit(images); kept = kept_tokens(scorer, keep=64)
    """
    object_scores, deep_scores = scorer.take()
    width = scorer.grid[1]
    return [select_tokens(o, d, keep, width, **kwargs) for o, d in zip(object_scores, deep_scores, strict=True)]


def scorer_for(model: nn.Module, object_layer: int | None = None) -> TokenScorer:
    """The right scorer for a LLaVA / Qwen2.5-VL host (transformers) or a bare timm / open_clip ViT."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "llava":
        deep = model.config.vision_feature_layer
        if not isinstance(deep, int):
            raise HiPruneError("HiPrune needs one vision feature layer; this LLaVA concatenates several")
        return ClipScorer(model.model.vision_tower, object_layer or LLAVA_OBJECT_LAYER, deep)
    if model_type == "qwen2_5_vl":
        return QwenVisionScorer(model.model.visual, object_layer or QWEN_OBJECT_LAYER, -1)
    if model_type == "clip_vision_model":
        return ClipScorer(model, object_layer or LLAVA_OBJECT_LAYER)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return TimmViTScorer(model, object_layer)
    if hasattr(getattr(model, "visual", model), "transformer"):
        return OpenClipScorer(model, object_layer)
    raise HiPruneError(f"HiPrune has no encoder adapter for {type(model).__name__}")


def grid_side(num_tokens: int) -> int:
    """Width of a square token grid; HiPrune's +-width buffers need one."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise HiPruneError(f"{num_tokens} visual tokens are not a square grid")
    return side


# ------------------------------------------------------------------------------------------ VLM wrapper
def host_module(model: nn.Module) -> Any:
    """The zoo host file (``prefill_inputs``) for a transformers VLM: LLaVA or Qwen2.5-VL."""
    from glocal.zoo.models._vlm import VisualTokenError, host_for

    try:
        return host_for(model)
    except VisualTokenError:
        raise HiPruneError(f"HiPrune applies to LLaVA and Qwen2.5-VL hosts, not {type(model).__name__}") from None


class HiPruneVLM(nn.Module):
    """A LLaVA / Qwen2.5-VL model whose language model sees only the visual tokens HiPrune keeps.

    Call it like the model (``input_ids`` with one placeholder per visual token, ``pixel_values``, ...): the
    vision tower runs in full (its object and deep layers tapped), the kept tokens are spliced in and the rest
    of the image placeholders dropped, then the wrapped model runs on ``inputs_embeds``. Decoding afterwards
    goes to ``self.model`` with the returned cache. Budget: ``keep`` tokens per image or ``ratio`` of them.
    """

    def __init__(self, model: nn.Module, keep: int | None = None, ratio: float | None = None,
                 alpha: float = DEFAULT_ALPHA, wrap: bool = True, registers: str = "official",
                 object_layer: int | None = None) -> None:
        super().__init__()
        if (keep is None) == (ratio is None):
            raise HiPruneError("give exactly one of keep (tokens per image) and ratio (fraction of tokens)")
        host_module(model)  # fails early for a model that is not a LLaVA / Qwen2.5-VL host
        self.model = model
        self.keep, self.ratio, self.alpha, self.wrap, self.registers = keep, ratio, alpha, wrap, registers
        self.scorer = scorer_for(model, object_layer)
        self.last_kept: list[torch.Tensor] = []

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def decoder_model(self) -> nn.Module:
        """The model that decoding steps (one new token, the prefill's cache) go to: the wrapped one."""
        return self.model

    def select(self, grids: Sequence[tuple[int, int]], context: dict[str, Any]) -> list[torch.Tensor]:
        """Kept indices per image from the scores the taps recorded during this forward."""
        object_scores, deep_scores = self.scorer.take(**context)
        kept = []
        for obj, deep, (h, w) in zip(object_scores, deep_scores, grids, strict=True):
            if obj.numel() != h * w:
                raise HiPruneError(f"{obj.numel()} scores for a {h}x{w} token grid")
            budget = keep_count(self.keep, self.ratio, obj.numel())
            kept.append(select_tokens(obj, deep, budget, w, alpha=self.alpha, wrap=self.wrap,
                                      registers=self.registers))
        self.last_kept = kept
        return kept

    def prefill_inputs(self, **inputs: Any) -> dict[str, torch.Tensor]:
        """The wrapped model's keyword inputs for a prefill on the kept visual tokens."""
        self.scorer.clear()
        return host_module(self.model).prefill_inputs(self.model, select=self.select, **inputs)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None, mm_token_type_ids: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        inputs = self.prefill_inputs(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                     image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids)
        return self.model(**inputs, **kwargs)

    def remove(self) -> nn.Module:
        """Take the taps off and return the unpruned model."""
        self.scorer.remove()
        return self.model

    def describe(self) -> dict[str, Any]:
        """Measured descriptors of the last forward: visual tokens kept per image."""
        return {"visual_tokens_kept": [int(k.numel()) for k in self.last_kept],
                "keep": self.keep, "ratio": self.ratio, "alpha": self.alpha, "wrap": self.wrap,
                "object_layer": self.scorer.object_index + 1, "deep_layer": self.scorer.deep_index + 1}


# ------------------------------------------------------------------------------------------- registration
PAPER_BUDGETS = {"llava": {"keep": 192}, "qwen2_5_vl": {"ratio": 0.334}}  # the paper's one-third setting


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return low in ("true", "1", "yes")


def _apply(model: nn.Module, card: Any, variant: Any, params: dict[str, Any]) -> nn.Module:
    budget = {k: params[k] for k in ("keep", "ratio") if params.get(k) is not None}
    if not budget:
        budget = PAPER_BUDGETS.get(getattr(model.config, "model_type", ""), {"keep": 192})
    return HiPruneVLM(model, alpha=params.get("alpha", DEFAULT_ALPHA), wrap=params.get("wrap", True),
                      registers=params.get("registers", "official"), object_layer=params.get("object_layer"),
                      **budget)


def _describe(model: nn.Module) -> dict[str, Any]:
    return model.describe() if isinstance(model, HiPruneVLM) else {}


def _register() -> None:
    from glocal.zoo.methods import Method, Param, register_method

    register_method(Method(
        name="hiprune",
        description="training-free visual token pruning of a VLM from its vision encoder's attention: anchors at "
                    "an object layer, their 4 neighbours, registers at a deep layer (arXiv 2508.00553)",
        params={
            "keep": Param(int, None, lambda k: None if k >= 1 else "must be at least 1",
                          "visual tokens kept per image (LLaVA-1.5: 192 / 128 / 64 of 576; default 192)"),
            "ratio": Param(float, None, lambda r: None if 0 < r <= 1 else "must be in (0, 1]",
                           "fraction of each image's tokens kept (Qwen2.5-VL: 0.334 / 0.223 / 0.112; default 0.334)"),
            "alpha": Param(float, DEFAULT_ALPHA, lambda a: None if 0 <= a <= 1 else "must be in [0, 1]",
                           "anchors = round(keep * alpha / 5)"),
            "wrap": Param(_parse_bool, True, None, "official +-1 buffers that wrap across row ends (false: grid)"),
            "registers": Param(str, "official", lambda r: None if r in ("official", "exclusive") else
                               "must be official or exclusive", "official: demote chosen tokens by 1; exclusive"),
            "object_layer": Param(int, None, lambda n: None if n >= 1 else "must be at least 1",
                                  "1-indexed object layer (LLaVA 9, Qwen 16)"),
        },
        applies_to=lambda card, variant: card.task == "vlm",
        apply=_apply,
        describe=_describe,
    ))


_register()
