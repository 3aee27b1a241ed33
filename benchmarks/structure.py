"""Global-structure sensitivity: the odd-one-out test of DiST / DiSRT on frozen features.

Protocol (Wen, Li, Jing & Lee, arXiv 2310.07555, "DiST"; Li et al., arXiv 2506.00718, "DiSRT"): each trial
is a triplet of one original image and two versions whose global structure was disrupted while local
texture was kept. The backbone embeds all three; the trial is correct when the two disrupted versions are
the closest pair (the original is the odd one out). Chance is 1/3.

Definitions used here (the papers do not state all of them, see ``/work/shared/research/datasets-structure.md``):

* embedding: the model's pooled pre-logit features (``forward_head(forward_features(x), pre_logits=True)``
  for zoo/timm models, ``encode_image`` for open_clip), or with ``layer=i`` the global-average-pooled output
  of stage ``i`` (``feature_info[i]``; patch tokens only for ViT-like stages);
* distance: ``cosine`` (1 - cosine similarity, default) or ``euclidean``, computed in float64;
* ties: when several pairs share the smallest distance the trial earns ``1/m`` if the disrupted pair is among
  the ``m`` tied pairs (the expected score of breaking the tie at random); exact comparison, no tolerance;
* accuracy: mean credit over trials, with a seeded percentile bootstrap 95% interval over trials;
* Top-K activation sparsity (DiSRT; the lab's NeurIPS 2023 Top-K layer): after every stage, for each sample
  and channel keep the ``max(1, floor(k * positions))`` spatial positions of largest absolute activation
  and zero the rest; inference only, installed as forward hooks;
* shortcut controls: two local-only observers scored on the same trials, ``pixel_histogram`` (per-channel
  32-bin RGB histograms) and ``local_patches`` (a position-free bag of 7 px descriptors: histograms of oriented
  derivative-of-Gaussian and Laplacian responses, local binary patterns, colour-opponent values and
  gradients, at the images' own resolution). Each embeds an image as a unit-norm Hellinger vector and decides
  by euclidean distance. On a set that really isolates global structure both sit near chance; a report
  lists in ``shortcut_flags`` any control whose 95% interval lies above 1/3.

Random weights are refused (a random network's "structure sensitivity" means nothing); ``allow_random=True``
exists for tests and such results carry ``weights: random`` so they are never published. Zoo models tell by
``model.glocal_weights``; ``timm:NAME`` is random only with ``weights="random"``; ``open_clip:ARCH`` without a
tag is random. A bare module without ``glocal_weights`` is recorded as ``weights: unknown``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.benchmarks.progress import track

CHANCE = 1.0 / 3.0
DISTANCES = ("cosine", "euclidean")
PAIRS = ((1, 2), (0, 1), (0, 2))  # index 0 is the disrupted pair (a, b); the original is item 0
DEFAULT_RESAMPLES = 2000


class StructureError(ValueError):
    """Bad input to the structure-sensitivity evaluator (one line)."""


class RandomWeightsError(StructureError):
    """The backbone has random weights: its structure sensitivity is meaningless."""


# ----------------------------------------------------------------------------------------------------------
# Odd-one-out decision and statistics


def pairwise_distances(emb: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distances (T, 3) of each triplet's pairs in the order (a-b, orig-a, orig-b) from embeddings (T, 3, D)."""
    if distance not in DISTANCES:
        raise StructureError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")
    if emb.ndim != 3 or emb.shape[1] != 3:
        raise StructureError(f"triplet embeddings must have shape (trials, 3, dim), got {tuple(emb.shape)}")
    e = emb.detach().to(torch.float64).flatten(2)
    if distance == "cosine":
        e = F.normalize(e, dim=-1, eps=1e-12)
    out = []
    for i, j in PAIRS:
        if distance == "cosine":
            out.append(1.0 - (e[:, i] * e[:, j]).sum(-1))
        else:
            out.append((e[:, i] - e[:, j]).norm(dim=-1))
    return torch.stack(out, dim=1)


def odd_one_out_credit(dist: torch.Tensor) -> torch.Tensor:
    """Per-trial credit from pair distances (T, 3) ordered (a-b, orig-a, orig-b): 1 when a-b is the unique
    closest pair, 1/m when it ties with m-1 others for the minimum, else 0."""
    low = dist.min(dim=1, keepdim=True).values
    tied = dist == low
    return tied[:, 0].to(torch.float64) / tied.sum(dim=1).to(torch.float64)


def bootstrap_ci(credits: Sequence[float] | np.ndarray | torch.Tensor, *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean credit (trials resampled with replacement, seeded)."""
    x = np.asarray(credits.cpu() if isinstance(credits, torch.Tensor) else credits, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise StructureError("bootstrap needs a non-empty 1-d sequence of trial credits")
    if resamples < 1:
        raise StructureError(f"bootstrap resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # chunks keep memory at 256 x n
        stop = min(resamples, start + 256)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(credits: torch.Tensor | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0) -> dict[str, Any]:
    """Accuracy, trial count, 95% bootstrap interval and chance for a vector of trial credits."""
    x = np.asarray(credits.cpu() if isinstance(credits, torch.Tensor) else credits, dtype=np.float64)
    lo, hi = bootstrap_ci(x, resamples=resamples, seed=seed)
    return {"accuracy": float(x.mean()), "n_trials": int(x.size), "ci95": [lo, hi], "chance": CHANCE}


# ----------------------------------------------------------------------------------------------------------
# Top-K activation sparsity


def n_keep(k: float, positions: int) -> int:
    """Positions kept per channel: ``max(1, floor(k * positions))`` (a tiny tolerance absorbs float error)."""
    return max(1, min(positions, int(math.floor(k * positions + 1e-9))))


def check_topk(k: float | None) -> float | None:
    """Validate a Top-K fraction (0 < k <= 1, e.g. 0.05 keeps 5% of positions) or None (off)."""
    if k is None:
        return None
    k = float(k)
    if not 0.0 < k <= 1.0:
        raise StructureError(f"topk must be a fraction in (0, 1] (0.05 keeps 5% of positions), got {k}")
    return k


def topk_sparsify(x: torch.Tensor, k: float, fmt: str, prefix_tokens: int = 0) -> torch.Tensor:
    """Keep the top-k fraction of spatial positions per sample and channel by |activation|, zero the rest.

    ``fmt`` is ``NCHW``, ``NHWC`` or ``NLC`` (tokens; the first ``prefix_tokens`` tokens, e.g. a class token,
    are passed through untouched)."""
    if fmt == "NLC":
        if prefix_tokens:
            return torch.cat([x[:, :prefix_tokens], topk_sparsify(x[:, prefix_tokens:], k, "NLC")], dim=1)
        flat = x.transpose(1, 2)  # (N, C, L)
    elif fmt == "NHWC":
        flat = x.flatten(1, 2).transpose(1, 2)
    elif fmt == "NCHW":
        flat = x.flatten(2)
    else:
        raise StructureError(f"unknown activation layout {fmt!r} (NCHW, NHWC or NLC)")
    keep = n_keep(k, flat.shape[-1])
    if keep >= flat.shape[-1]:
        return x
    idx = flat.abs().topk(keep, dim=-1).indices
    mask = torch.zeros_like(flat).scatter_(-1, idx, 1.0)
    out = flat * mask
    if fmt == "NLC":
        return out.transpose(1, 2)
    if fmt == "NHWC":
        return out.transpose(1, 2).reshape(x.shape)
    return out.reshape(x.shape)


def global_pool(x: torch.Tensor, fmt: str, prefix_tokens: int = 0) -> torch.Tensor:
    """Global average pool of a stage output to (N, C) (patch tokens only for NLC)."""
    if fmt == "NCHW":
        return x.mean(dim=(2, 3))
    if fmt == "NHWC":
        return x.mean(dim=(1, 2))
    if fmt == "NLC":
        return x[:, prefix_tokens:].mean(dim=1)
    raise StructureError(f"unknown activation layout {fmt!r} (NCHW, NHWC or NLC)")


# ----------------------------------------------------------------------------------------------------------
# Backbones: zoo models, timm names, open_clip image encoders


@dataclass
class Stage:
    """One hookable stage: its module path, module, channel count (if known) and layout hint."""

    name: str
    module: nn.Module
    num_chs: int | None = None
    fmt_hint: str = "NCHW"  # NCHW / NHWC for 4-d outputs; 3-d outputs are tokens
    prefix_tokens: int = 0
    grid_cells: int | None = None  # patch-grid size of a ViT: prefix tokens = tokens - grid cells

    def prefix(self, out: torch.Tensor) -> int:
        """Leading non-patch tokens (class token, registers) of a token output."""
        if out.ndim == 3 and self.grid_cells is not None:
            return max(0, out.shape[1] - self.grid_cells)
        return self.prefix_tokens

    def layout(self, out: torch.Tensor) -> str:
        """The layout of this stage's output tensor (channel count decides when it is unambiguous)."""
        if out.ndim == 3:
            return "NLC"
        if out.ndim != 4:
            raise StructureError(f"stage {self.name} outputs a {out.ndim}-d tensor; expected 3-d tokens or 4-d maps")
        c = self.num_chs
        if c is not None and out.shape[1] == c and out.shape[-1] != c:
            return "NCHW"
        if c is not None and out.shape[-1] == c and out.shape[1] != c:
            return "NHWC"
        return self.fmt_hint


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the requested stage is pooled."""


@dataclass
class Backbone:
    """A frozen image encoder with its own preprocessing: ``preprocess(PIL) -> tensor``, ``embed(x) -> (N, D)``."""

    model: nn.Module
    name: str
    kind: str  # zoo | timm | open_clip | module
    transform: Callable[[Any], torch.Tensor]
    weights: str  # pretrained | random | unknown
    weights_id: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: str | nn.Module | Backbone, *, weights: str | os.PathLike | None = None,
               image_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
               card: Any = None, variant: Any = None) -> Backbone:
        """Build from ``"timm:NAME"``, ``"open_clip:ARCH[/TAG]"``, a zoo name, or wrap an ``nn.Module``.

        ``weights``: ``None`` = the source's pretrained weights, ``"random"`` = random init, or a checkpoint path."""
        if isinstance(spec, Backbone):
            return spec
        if isinstance(spec, nn.Module):
            return cls.from_module(spec, card=card, variant=variant, image_size=image_size)
        if not isinstance(spec, str) or not spec.strip():
            raise StructureError(f"backbone must be a model name or an nn.Module, got {type(spec).__name__}")
        spec = spec.strip()
        if spec.startswith("timm:"):
            return cls._from_timm(spec[5:], weights, image_size, model_kwargs or {})
        if spec.startswith("open_clip:"):
            return cls._from_open_clip(spec[10:], weights, image_size, model_kwargs or {})
        return cls._from_zoo(spec, weights, image_size, model_kwargs or {})

    @classmethod
    def _from_zoo(cls, name: str, weights: Any, image_size: int | None, kwargs: dict[str, Any]) -> Backbone:
        from glocal import zoo

        try:
            card, variant = zoo.resolve(name)
        except zoo.UnknownModelError as e:
            raise StructureError(f"{e} (use timm:NAME for a timm model, open_clip:ARCH/TAG for open_clip)") from e
        if card.task != "classification":
            raise StructureError(f"{name} is a {card.task} model; structure sensitivity needs a classification "
                                 "backbone")
        model = zoo.create_model(name, weights=weights, **kwargs)
        return cls.from_module(model, card=card, variant=variant, image_size=image_size)

    @classmethod
    def _from_timm(cls, name: str, weights: Any, image_size: int | None, kwargs: dict[str, Any]) -> Backbone:
        import timm

        if not name:
            raise StructureError("timm backbone needs a model name: timm:NAME")
        if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
            raise StructureError(f"unknown timm model {name!r}")
        path = None if weights in (None, "random", "pretrained", "auto") else Path(weights)
        pretrained = weights in (None, "pretrained", "auto")
        try:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as e:  # hub unreachable, no pretrained tag, bad kwargs
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StructureError(f"cannot create timm:{name} (pretrained={pretrained}): {first}") from e
        weights_id = f"timm:{name}" if pretrained else None
        if path is not None:
            from glocal.zoo.weights import read_checkpoint

            try:
                model.load_state_dict(read_checkpoint(path), strict=True)
            except RuntimeError as e:
                raise StructureError(f"checkpoint {path} does not fit timm:{name}: {str(e).splitlines()[0]}") from e
            weights_id = str(path)
        model.eval()
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        cfg = _with_size(cfg, image_size)
        return cls(model=model, name=f"timm:{name}", kind="timm", transform=_timm_transform(cfg),
                   weights="random" if weights_id is None else "pretrained", weights_id=weights_id,
                   preprocessing=_jsonable(cfg))

    @classmethod
    def _from_open_clip(cls, spec: str, weights: Any, image_size: int | None, kwargs: dict[str, Any]) -> Backbone:
        import open_clip

        arch, tag = spec, None
        if not spec.startswith("hf-hub:") and "/" in spec:
            arch, _, tag = spec.partition("/")
        tag = None if (tag or "").lower() in ("", "none", "random") else tag
        if weights == "random":
            tag = None
        elif weights not in (None, "pretrained", "auto"):
            tag = str(weights)
        if not arch:
            raise StructureError("open_clip backbone needs an architecture: open_clip:ARCH/TAG")
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            raise StructureError(f"unknown open_clip architecture {arch!r}")
        extra = {"force_image_size": image_size} if image_size else {}
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, **extra, **kwargs)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StructureError(f"cannot create open_clip:{arch} (pretrained={tag}): {first}") from e
        model.eval()
        pretrained = tag is not None or arch.startswith("hf-hub:")
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        return cls(model=model, name=f"open_clip:{arch}" + (f"/{tag}" if tag else ""), kind="open_clip",
                   transform=preprocess, weights="pretrained" if pretrained else "random",
                   weights_id=(tag or arch) if pretrained else None, preprocessing=_jsonable(cfg))

    @classmethod
    def from_module(cls, model: nn.Module, *, card: Any = None, variant: Any = None,
                    image_size: int | None = None) -> Backbone:
        """Wrap a built module: a zoo model (``glocal_card``/``glocal_variant``/``glocal_weights``), a timm model,
        or an open_clip model (``encode_image``); a ``torch.compile`` wrapper is unwrapped (stage hooks need the
        original module tree)."""
        model = getattr(model, "_orig_mod", model)
        card = card if card is not None else getattr(model, "glocal_card", None)
        variant = variant if variant is not None else getattr(model, "glocal_variant", None)
        info = getattr(model, "glocal_weights", None)
        if info is not None:
            weights, weights_id = ("random" if info.is_random else "pretrained"), (None if info.is_random else info.id)
        else:
            weights, weights_id = "unknown", None
        model.eval()
        if hasattr(model, "encode_image") and hasattr(model, "visual"):
            import open_clip

            cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
            size = image_size or cfg.get("size") or model.visual.image_size
            transform = open_clip.image_transform(size, is_train=False, mean=cfg.get("mean"), std=cfg.get("std"),
                                                  resize_mode=cfg.get("resize_mode"),
                                                  interpolation=cfg.get("interpolation"))
            name = card.family if card is not None else type(model).__name__
            return cls(model=model, name=getattr(variant, "name", name), kind="open_clip", transform=transform,
                       weights=weights, weights_id=weights_id, preprocessing=_jsonable(cfg))
        if variant is not None:
            p = variant.preprocessing
            cfg = {"input_size": tuple(p.input_size), "mean": tuple(p.mean), "std": tuple(p.std),
                   "interpolation": p.interpolation, "crop_pct": p.crop_pct, "crop_mode": p.crop_mode}
            kind, name = "zoo", variant.name
        elif hasattr(model, "pretrained_cfg") or hasattr(model, "default_cfg"):
            from timm.data import resolve_data_config

            cfg = resolve_data_config({}, model=model)
            arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
            kind, name = "timm", f"timm:{arch}"
        else:
            raise StructureError(f"cannot tell the preprocessing of a bare {type(model).__name__}: pass a zoo model, "
                                 "a timm model, an open_clip model, or a Backbone")
        cfg = _with_size(cfg, image_size)
        return cls(model=model, name=name, kind=kind, transform=_timm_transform(cfg), weights=weights,
                   weights_id=weights_id, preprocessing=_jsonable(cfg))

    # --- features ---------------------------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image -> normalized (C, H, W) tensor with the model's own evaluation transform."""
        return self.transform(image.convert("RGB") if hasattr(image, "convert") else image)

    def stages(self) -> list[Stage]:
        """The stage modules Top-K and ``layer=i`` act on (``feature_info``, else found by name)."""
        return find_stages(self.model)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Final pooled (pre-logit) features of a preprocessed batch."""
        m = self.model
        if hasattr(m, "encode_image"):
            return m.encode_image(x)
        if hasattr(m, "forward_features") and hasattr(m, "forward_head"):
            return m.forward_head(m.forward_features(x), pre_logits=True)
        raise StructureError(f"{self.name} has neither forward_features/forward_head nor encode_image")

    @contextlib.contextmanager
    def hooked(self, *, topk: float | None = None, layer: int | str = "pooled") -> Iterator[dict[str, Any]]:
        """Install Top-K hooks on every stage and/or a capture hook on stage ``layer``; yields the capture box."""
        box: dict[str, Any] = {}
        handles = []
        stages = self.stages() if (topk is not None or layer != "pooled") else []
        if (topk is not None or layer != "pooled") and not stages:
            raise StructureError(f"{self.name}: no stage modules found (no feature_info, no stages/layers/blocks)")
        target = None
        if layer != "pooled":
            try:
                target = stages[int(layer)]
            except (IndexError, ValueError) as e:
                raise StructureError(f"layer {layer!r} out of range: {self.name} has {len(stages)} stages "
                                     f"({', '.join(s.name for s in stages)})") from e

        def make_hook(stage: Stage) -> Callable:
            def hook(mod: nn.Module, inputs: tuple, out: Any) -> Any:
                if not isinstance(out, torch.Tensor):
                    raise StructureError(f"stage {stage.name} returns {type(out).__name__}, not a tensor")
                fmt, prefix = stage.layout(out), stage.prefix(out)
                if topk is not None:
                    out = topk_sparsify(out, topk, fmt, prefix)
                if stage is target:
                    box["features"] = global_pool(out, fmt, prefix)
                    raise _Stop
                return out

            return hook

        try:
            for s in stages:
                if topk is not None or s is target:
                    handles.append(s.module.register_forward_hook(make_hook(s)))
            yield box
        finally:
            for h in handles:
                h.remove()

    @torch.inference_mode()
    def embed(self, x: torch.Tensor, *, layer: int | str = "pooled", topk: float | None = None) -> torch.Tensor:
        """Features (N, D) of a preprocessed batch: pooled pre-logits, or the pooled output of stage ``layer``."""
        topk = check_topk(topk)
        p = next(self.model.parameters(), None)
        if p is not None:
            x = x.to(device=p.device, dtype=p.dtype)
        with self.hooked(topk=topk, layer=layer) as box:
            try:
                feats = self.pooled(x)
            except _Stop:
                feats = box["features"]
        return feats.float().flatten(1)


def find_stages(model: nn.Module) -> list[Stage]:
    """Stages from timm-style ``feature_info`` (open_clip: its timm trunk, ResNet layers or ViT blocks), or by name."""
    fmt = _fmt_of(model)
    visual = getattr(model, "visual", None)
    if visual is not None and hasattr(model, "encode_image"):
        trunk = getattr(visual, "trunk", None)
        if trunk is not None and getattr(trunk, "feature_info", None):
            return [_stage(model, f"visual.trunk.{n}", c, _fmt_of(trunk), _prefix(trunk))
                    for n, c in _info(trunk.feature_info)]
        if all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
            return [_stage(model, f"visual.layer{i}", None, "NCHW") for i in range(1, 5)]
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is not None:
            if not getattr(visual.transformer, "batch_first", True):
                raise StructureError("open_clip transformer is not batch-first; stage hooks need (N, L, C) tokens")
            grid = getattr(visual, "grid_size", None)
            cells = int(grid[0]) * int(grid[1]) if grid is not None else None
            prefix = 1 if getattr(visual, "class_embedding", None) is not None else 0
            return [Stage(f"visual.transformer.resblocks.{i}", b, None, "NCHW", prefix, cells)
                    for i, b in enumerate(blocks)]
    info = getattr(model, "feature_info", None)
    if info:
        return [_stage(model, n, c, fmt, _prefix(model)) for n, c in _info(info)]
    found: list[Stage] = []
    for attr in ("stages", "layers", "blocks"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            found = [_stage(model, f"{attr}.{i}", None, fmt, _prefix(model)) for i in range(len(seq))]
            break
    if not found and all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        found = [_stage(model, f"layer{i}", None, fmt) for i in range(1, 5)]
    return found


def _stage(model: nn.Module, name: str, num_chs: int | None, fmt: str, prefix: int = 0) -> Stage:
    try:
        module = model.get_submodule(name)
    except AttributeError as e:
        raise StructureError(f"feature_info names module {name!r}, which {type(model).__name__} lacks") from e
    return Stage(name, module, num_chs, fmt, prefix)


def _info(info: Any) -> list[tuple[str, int | None]]:
    dicts = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    return [(d["module"], d.get("num_chs")) for d in dicts]


def _fmt_of(model: nn.Module) -> str:
    return "NHWC" if str(getattr(model, "output_fmt", "NCHW")).upper() == "NHWC" else "NCHW"


def _prefix(model: nn.Module) -> int:
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


def _with_size(cfg: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    cfg = dict(cfg)
    if image_size:
        cfg["input_size"] = (int(cfg["input_size"][0]), int(image_size), int(image_size))
    return cfg


def _timm_transform(cfg: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: cfg[k] for k in keys if k in cfg}, is_training=False)


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
            if isinstance(v, (int, float, str, tuple, list, type(None)))}


# ----------------------------------------------------------------------------------------------------------
# Local-only observers (shortcut controls)


def pixel_histogram_features(image: Any, bins: int = 32) -> np.ndarray:
    """Per-channel RGB histograms (``bins`` per channel, each normalised), square-rooted (Hellinger embedding)."""
    a = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    shift = 8 - int(round(math.log2(bins)))
    if 1 << (8 - shift) != bins:
        raise StructureError(f"pixel histogram bins must be a power of two up to 256, got {bins}")
    hist = [np.bincount(a[:, c] >> shift, minlength=bins) / a.shape[0] for c in range(3)]
    return np.sqrt(np.concatenate(hist) / 3.0)


_LOCAL_MAX_SIDE = 256
_LOG_EDGES = np.array([0.005, 0.01, 0.02, 0.04, 0.08, 0.16])


def _signed_log_hist(x: np.ndarray) -> np.ndarray:
    """Histogram of signed responses on fixed log-spaced magnitude bins (14 bins), normalised."""
    idx = np.searchsorted(_LOG_EDGES, np.abs(x).ravel())  # 0..6
    idx = np.where(x.ravel() < 0, 6 - idx, 7 + idx)
    return np.bincount(idx, minlength=14) / idx.size


def _lbp_riu2(img: np.ndarray, radius: int) -> np.ndarray:
    """Rotation-invariant uniform local binary pattern histogram (8 neighbours at ``radius``; 10 bins)."""
    h, w = img.shape
    r = radius
    c = img[r:h - r, r:w - r]
    offsets = ((-r, -r), (-r, 0), (-r, r), (0, r), (r, r), (r, 0), (r, -r), (0, -r))  # circular order
    bits = np.stack([img[r + dy:h - r + dy, r + dx:w - r + dx] >= c for dy, dx in offsets]).astype(np.int8)
    ones = bits.sum(0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(transitions <= 2, ones, 9)
    return np.bincount(code.ravel(), minlength=10) / code.size


_TAPS = np.arange(-3, 4, dtype=np.float64)
_G = np.exp(-_TAPS**2 / 2.0) / np.exp(-_TAPS**2 / 2.0).sum()  # Gaussian, sigma 1
_DG = -_TAPS * _G  # its first derivative
_DDG = (_TAPS**2 - 1.0) * _G  # its second derivative
_DDG = _DDG - _DDG.mean()


def _conv1d(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Correlate a 2-d array with a 7-tap kernel along ``axis`` (reflected borders)."""
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    return sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(len(k)))


def _oriented(x: np.ndarray) -> list[np.ndarray]:
    """Derivative-of-Gaussian responses at 0/45/90/135 degrees and a Laplacian-of-Gaussian (sigma 1)."""
    gy_smooth = _conv1d(x, _G, 0)
    gx_smooth = _conv1d(x, _G, 1)
    dx = _conv1d(gy_smooth, _DG, 1)
    dy = _conv1d(gx_smooth, _DG, 0)
    log = _conv1d(gy_smooth, _DDG, 1) + _conv1d(gx_smooth, _DDG, 0)
    return [dx, (dx + dy) / math.sqrt(2), dy, (dx - dy) / math.sqrt(2), log]


def local_patch_features(image: Any) -> np.ndarray:
    """Position-free bag of 7x7-pixel descriptors at the image's own resolution: histograms of oriented
    derivative and Laplacian responses, local binary patterns, colour-opponent values and gradients; each block
    normalised, square-rooted, concatenated. Its receptive field is 7 px (shorter sides above 256 px are
    first reduced to 256), so it sees texture but no arrangement beyond 7 px."""
    from PIL import Image

    im = image.convert("RGB")
    if min(im.size) > _LOCAL_MAX_SIDE:
        s = _LOCAL_MAX_SIDE / min(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)
    rgb = np.asarray(im, dtype=np.float64) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    rg = rgb[..., 0] - rgb[..., 1]
    by = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
    blocks = [_signed_log_hist(r) for r in _oriented(lum)] + [_lbp_riu2(lum, 1), _lbp_riu2(lum, 2)]
    for chroma in (rg, by):
        blocks.append(np.histogram(chroma, bins=16, range=(-1.0, 1.0))[0] / chroma.size)
        dx, _, dy, _, _ = _oriented(chroma)
        blocks.append(_signed_log_hist(np.hypot(dx, dy)))
    return np.concatenate([np.sqrt(b) for b in blocks]) / math.sqrt(len(blocks))


BASELINES: dict[str, Callable[[Any], np.ndarray]] = {
    "pixel_histogram": pixel_histogram_features,
    "local_patches": local_patch_features,
}


def score_observer(triplets: Sequence[Sequence[Any]] | Any, features: Callable[[Any], np.ndarray]) -> torch.Tensor:
    """Per-trial credits of a local-only observer (euclidean distance between its embeddings)."""
    emb = torch.from_numpy(np.stack([np.stack([features(im) for im in t]) for t in triplets]))
    return odd_one_out_credit(pairwise_distances(emb, "euclidean"))


# ----------------------------------------------------------------------------------------------------------
# Evaluation


class _Trials(torch.utils.data.Dataset):
    """Triplets -> (3, C, H, W) model inputs and the local-only observers' embeddings."""

    def __init__(self, triplets: Any, transform: Callable, baselines: Sequence[str], n: int) -> None:
        self.triplets, self.transform, self.baselines, self.n = triplets, transform, tuple(baselines), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = [im.convert("RGB") for im in self.triplets[i]]
        x = torch.stack([self.transform(im) for im in images])
        base = {b: torch.from_numpy(np.stack([BASELINES[b](im) for im in images])) for b in self.baselines}
        return x, base


def evaluate_structure(backbone: str | nn.Module | Backbone, dataset: Any, *, distance: str = "cosine",
                       layer: int | str = "pooled", topk: float | None = None, batch_size: int = 16,
                       device: str | torch.device | None = None, allow_random: bool = False, progress: bool = True,
                       weights: str | os.PathLike | None = None, image_size: int | None = None,
                       model_kwargs: dict[str, Any] | None = None, baselines: bool = True, workers: int = 0,
                       max_trials: int | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       return_trials: bool = False) -> dict[str, Any]:
    """Odd-one-out structure sensitivity of ``backbone`` on a triplet ``dataset`` (a path or a loaded set).

    Returns accuracy, n_trials, ci95, chance, the settings, the weights status, and the local-only baselines
    (``pixel_histogram``, ``local_patches``) scored on the same trials; ``shortcut_flags`` lists baselines
    whose 95% interval lies above chance. ``return_trials`` adds per-trial distances and credits."""
    from glocal.datasets.structure import TripletSet, load_triplets

    if distance not in DISTANCES:
        raise StructureError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")
    layer = _check_layer(layer)
    topk = check_topk(topk)
    if batch_size < 1:
        raise StructureError(f"batch_size must be positive, got {batch_size}")
    bb = Backbone.create(backbone, weights=weights, image_size=image_size, model_kwargs=model_kwargs)
    if bb.weights == "random" and not allow_random:
        raise RandomWeightsError(f"{bb.name} has random weights: structure sensitivity is only meaningful for "
                                 "trained weights (pass pretrained weights; allow_random=True is for tests)")
    data = dataset if isinstance(dataset, TripletSet) else load_triplets(dataset)
    n = len(data) if max_trials is None else min(len(data), int(max_trials))
    if n < 1:
        raise StructureError(f"no trials to score in {data.path}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bb.model.to(dev)
    names = tuple(BASELINES) if baselines else ()
    loader = torch.utils.data.DataLoader(_Trials(data, bb.preprocess, names, n), batch_size=batch_size,
                                         num_workers=workers, shuffle=False)
    dists: list[torch.Tensor] = []
    base_credits: dict[str, list[torch.Tensor]] = {b: [] for b in names}
    for x, base in track(loader, total=len(loader), description=f"{bb.name} on {data.name}", enabled=progress):
        b = x.shape[0]
        emb = bb.embed(x.flatten(0, 1).to(dev), layer=layer, topk=topk).view(b, 3, -1)
        dists.append(pairwise_distances(emb.cpu(), distance))
        for name in names:
            base_credits[name].append(odd_one_out_credit(pairwise_distances(base[name], "euclidean")))
    d = torch.cat(dists)
    credits = odd_one_out_credit(d)
    result: dict[str, Any] = summarize(credits, resamples=resamples, seed=seed)
    result.update({"distance": distance, "layer": layer, "topk": topk, "tie_rule": "1/m credit for m tied pairs",
                   "bootstrap": {"resamples": resamples, "seed": seed, "method": "percentile"},
                   "weights": bb.weights, "backbone": {"name": bb.name, "kind": bb.kind, "weights_id": bb.weights_id,
                                                       "preprocessing": bb.preprocessing},
                   "dataset": data.describe(n)})
    result["baselines"] = {name: summarize(torch.cat(c), resamples=resamples, seed=seed)
                           for name, c in base_credits.items()}
    result["shortcut_flags"] = [k for k, v in result["baselines"].items() if v["ci95"][0] > CHANCE + 1e-9]
    if return_trials:
        result["trials"] = [{"id": data.ids[i], "d_ab": float(d[i, 0]), "d_oa": float(d[i, 1]),
                             "d_ob": float(d[i, 2]), "credit": float(credits[i])} for i in range(n)]
    return result


def _check_layer(layer: int | str) -> int | str:
    if layer == "pooled":
        return layer
    try:
        return int(layer)
    except (TypeError, ValueError) as e:
        raise StructureError(f"layer must be 'pooled' or a stage index, got {layer!r}") from e
