"""Frozen image embeddings for feature-space metrics: a model with its own evaluation preprocessing, pooled
pre-logit features or the pooled output of one stage, and optional Top-K activation sparsity.

:class:`Backbone` wraps a model built by the zoo (``glocal.zoo.create_model``, which also builds any timm model
as ``timm:NAME``), an open_clip image encoder (``open_clip:ARCH[/TAG]``, which the zoo does not register), or
a module handed over by the harness. Definitions:

* embedding: the model's pooled pre-logit features (``forward_head(forward_features(x), pre_logits=True)``
  for zoo/timm models, ``encode_image`` for open_clip), or with ``layer=i`` the global-average-pooled output
  of stage ``i`` (``feature_info[i]``; patch tokens only for ViT-like stages);
* Top-K activation sparsity (DiSRT, arXiv 2506.00718; the Top-K layer of Li et al., NeurIPS 2023,
  https://github.com/Crazy-Jack/nips2023_shape_vs_texture): after every stage, for each sample and channel keep
  the ``max(1, floor(k * positions))`` spatial positions of largest absolute activation and zero the rest;
  inference only, installed as forward hooks;
* weights: ``pretrained``, ``random`` or ``unknown``. Zoo models (and ``timm:NAME``) tell by
  ``model.glocal_weights``; ``open_clip:ARCH`` without a tag is random; a bare module without
  ``glocal_weights`` is ``unknown``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


class EmbeddingError(ValueError):
    """A backbone that cannot be built or embedded with as asked (one line)."""


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
        raise EmbeddingError(f"topk must be a fraction in (0, 1] (0.05 keeps 5% of positions), got {k}")
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
        raise EmbeddingError(f"unknown activation layout {fmt!r} (NCHW, NHWC or NLC)")
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
    raise EmbeddingError(f"unknown activation layout {fmt!r} (NCHW, NHWC or NLC)")


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
            raise EmbeddingError(f"stage {self.name} outputs a {out.ndim}-d tensor; expected 3-d tokens or 4-d maps")
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
        """Build from a zoo name or ``"timm:NAME"`` (both through the zoo), ``"open_clip:ARCH[/TAG]"``, or wrap an
        ``nn.Module``.

        ``weights``: ``None`` = the source's pretrained weights, ``"random"`` = random init, or a checkpoint path."""
        if isinstance(spec, Backbone):
            return spec
        if isinstance(spec, nn.Module):
            return cls.from_module(spec, card=card, variant=variant, image_size=image_size)
        if not isinstance(spec, str) or not spec.strip():
            raise EmbeddingError(f"backbone must be a model name or an nn.Module, got {type(spec).__name__}")
        spec = spec.strip()
        if spec.startswith("open_clip:"):
            return cls._from_open_clip(spec[10:], weights, image_size, model_kwargs or {})
        return cls._from_zoo(spec, weights, image_size, model_kwargs or {})

    @classmethod
    def _from_zoo(cls, name: str, weights: Any, image_size: int | None, kwargs: dict[str, Any]) -> Backbone:
        """A registered zoo model or ``timm:NAME``, built by ``glocal.zoo.create_model`` (weights resolved by the
        zoo: installed package, then timm's pretrained path; ``"random"``; or a checkpoint path)."""
        from glocal import zoo

        try:
            card, variant = zoo.resolve(name)
        except zoo.UnknownModelError as e:
            raise EmbeddingError(f"{e} (use timm:NAME for a timm model, open_clip:ARCH/TAG for open_clip)") from e
        if card.task != "classification":
            raise EmbeddingError(f"{name} is a {card.task} model; an image embedding needs a classification "
                                 "backbone")
        try:
            model = zoo.create_model(name, weights=weights, **kwargs)
        except zoo.CheckpointError as e:
            raise EmbeddingError(str(e)) from e
        return cls.from_module(model, card=card, variant=variant, image_size=image_size)

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
            raise EmbeddingError("open_clip backbone needs an architecture: open_clip:ARCH/TAG")
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            raise EmbeddingError(f"unknown open_clip architecture {arch!r}")
        extra = {"force_image_size": image_size} if image_size else {}
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, **extra, **kwargs)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EmbeddingError(f"cannot create open_clip:{arch} (pretrained={tag}): {first}") from e
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
            kind, name = ("timm" if variant.name.startswith("timm:") else "zoo"), variant.name
        elif hasattr(model, "pretrained_cfg") or hasattr(model, "default_cfg"):
            from timm.data import resolve_data_config

            cfg = resolve_data_config({}, model=model)
            arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
            kind, name = "timm", f"timm:{arch}"
        else:
            raise EmbeddingError(f"cannot tell the preprocessing of a bare {type(model).__name__}: pass a zoo model, "
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
        raise EmbeddingError(f"{self.name} has neither forward_features/forward_head nor encode_image")

    @contextlib.contextmanager
    def hooked(self, *, topk: float | None = None, layer: int | str = "pooled") -> Iterator[dict[str, Any]]:
        """Install Top-K hooks on every stage and/or a capture hook on stage ``layer``; yields the capture box."""
        box: dict[str, Any] = {}
        handles = []
        stages = self.stages() if (topk is not None or layer != "pooled") else []
        if (topk is not None or layer != "pooled") and not stages:
            raise EmbeddingError(f"{self.name}: no stage modules found (no feature_info, no stages/layers/blocks)")
        target = None
        if layer != "pooled":
            try:
                target = stages[int(layer)]
            except (IndexError, ValueError) as e:
                raise EmbeddingError(f"layer {layer!r} out of range: {self.name} has {len(stages)} stages "
                                     f"({', '.join(s.name for s in stages)})") from e

        def make_hook(stage: Stage) -> Callable:
            def hook(mod: nn.Module, inputs: tuple, out: Any) -> Any:
                if not isinstance(out, torch.Tensor):
                    raise EmbeddingError(f"stage {stage.name} returns {type(out).__name__}, not a tensor")
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
                raise EmbeddingError("open_clip transformer is not batch-first; stage hooks need (N, L, C) tokens")
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
        raise EmbeddingError(f"feature_info names module {name!r}, which {type(model).__name__} lacks") from e
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

