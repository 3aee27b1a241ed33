"""Model cards and the registry: every zoo model is a :class:`ModelCard` with one :class:`Variant` per config.

A family (``gcvit``) resolves to its documented default variant; a variant (``gcvit_tiny``) to itself.
Names are matched case- and separator-insensitively (``GC-ViT``, ``gcvit_tiny``, ``GCViT Tiny``).
Third-party packages register cards through the entry-point group ``glocal.models``: each entry point
names a callable (or module) that registers its cards when loaded. ``GLOCAL_PLUGINS=mod1,mod2`` imports
local modules that register cards (handy for experiments, and it reaches the harness's subprocesses).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import torch.nn as nn

from glocal.taskspec import MODEL_TASKS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownModelError(KeyError):
    """An unknown model name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing, in timm ``pretrained_cfg`` terms."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    @classmethod
    def from_timm(cls, name: str) -> Preprocessing:
        """The eval preprocessing of timm's pretrained config for ``name`` (timm's defaults where it has none)."""
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            return cls()
        return cls(input_size=tuple(cfg.input_size), mean=tuple(cfg.mean), std=tuple(cfg.std),
                   interpolation=cfg.interpolation or "bicubic", crop_pct=cfg.crop_pct,
                   crop_mode=cfg.crop_mode or "center")


@dataclass(frozen=True)
class WeightSource:
    """Where official weights live. ``hf_hub_id`` goes through timm's hub loader; ``url`` is documentation
    (and a download for the weights-package tool), with the file's sha256 when known."""

    description: str
    url: str | None = None
    hf_hub_id: str | None = None
    timm_name: str | None = None  # load through timm's pretrained path (hub, cache) under this name
    filename: str | None = None
    sha256: str | None = None
    layout: str = "official"  # a key understood by the family's ``convert_state_dict``
    license: str | None = None  # the file's own licence when it differs from the card's (weights vs code)
    gated: bool = False  # terms must be accepted (and a token set) before download: packaging asks to accept


@dataclass(frozen=True)
class PaperMetric:
    """A number reported in the paper, kept apart from anything the harness measures."""

    dataset: str
    metric: str
    value: float
    note: str = ""


@dataclass(frozen=True)
class Variant:
    """One registered configuration of a family: how to build it and what the paper says about it."""

    name: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: tuple[WeightSource, ...] = ()
    paper_metrics: tuple[PaperMetric, ...] = ()
    params: int | None = None  # exact parameter count of the official model (checked by tests)
    scale: int | None = None  # super-resolution factor
    resolution_multiple: int = 1  # spatial sizes must be multiples of this (classification)
    resolutions: tuple[int, ...] = ()  # resolutions the harness sweeps by default (first = default)
    build_at_resolution: bool = False  # window sizes baked in: build with ``img_size=resolution``
    notes: str = ""

    def build(self, **overrides: Any) -> nn.Module:
        return self.builder(**{**self.kwargs, **overrides})


@dataclass(frozen=True)
class ModelCard:
    """A model family: paper, code, license, task, variants (the first listed default unless named)."""

    family: str
    display_name: str
    task: str
    paper_title: str
    arxiv_id: str
    official_repo: str
    license: str
    variants: tuple[Variant, ...]
    default_variant: str = ""
    aliases: tuple[str, ...] = ()
    description: str = ""
    convert_state_dict: Callable[[dict, str], dict] | None = None  # (state_dict, layout) -> our layout
    detect_layout: Callable[[dict], str] | None = None

    def __post_init__(self) -> None:
        if self.task not in MODEL_TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {MODEL_TASKS}")
        if not self.variants:
            raise ValueError(f"model card {self.family!r} has no variants")
        if not self.default_variant:
            object.__setattr__(self, "default_variant", self.variants[0].name)
        if self.default_variant not in {v.name for v in self.variants}:
            raise ValueError(f"default variant {self.default_variant!r} is not a variant of {self.family!r}")

    def variant(self, name: str | None = None) -> Variant:
        name = name or self.default_variant
        for v in self.variants:
            if v.name == name:
                return v
        raise UnknownModelError(f"{self.family} has no variant {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly card (builders dropped), used by ``bench list models --json`` and the site."""
        d = {k: v for k, v in asdict(self).items() if k not in ("variants", "convert_state_dict", "detect_layout")}
        d["variants"] = []
        for v in self.variants:
            vd = {k: val for k, val in asdict(v).items() if k != "builder"}
            d["variants"].append(vd)
        return d


_CARDS: dict[str, ModelCard] = {}
_INDEX: dict[str, tuple[str, str | None]] = {}  # normalized name -> (family, variant or None)
_DYNAMIC: dict[str, ModelCard] = {}  # timm:NAME cards made on demand, not listed
_LOADED = False


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*")
_TIMM_NAME = re.compile(r"timm:[A-Za-z0-9][A-Za-z0-9_.-]*")


def normalize(name: str) -> str:
    """Case- and separator-insensitive key: ``GC-ViT_Tiny`` -> ``gcvittiny`` (only ``-``, ``_`` and spaces are
    separators; any other character is not part of a model name)."""
    return re.sub(r"[ _-]", "", name.lower())


def check_name(name: str) -> str:
    """A model name as typed: ASCII letters, digits and ``-``/``_``/space separators (``timm:NAME`` may also hold
    the dots of timm's pretrained tags). Anything else (emoji, control or bidi characters, path separators,
    dots between letters) is refused with one line, never silently stripped."""
    if not (_NAME.fullmatch(name) or _TIMM_NAME.fullmatch(name)) or len(name) > 200:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise UnknownModelError(f"invalid model name {ascii(shown)}: use letters, digits, '-', '_' or spaces "
                                "(`bench list models` shows all)")
    return name


def register(card: ModelCard) -> ModelCard:
    """Add a card to the registry (idempotent for the same family object, an error for a clash)."""
    keys: dict[str, tuple[str, str | None]] = {normalize(card.family): (card.family, None)}
    for alias in card.aliases:
        keys[normalize(alias)] = (card.family, None)
    for v in card.variants:
        keys[normalize(v.name)] = (card.family, v.name)
    for k in keys:
        prev = _INDEX.get(k)
        if prev is not None and prev[0] != card.family:
            raise ValueError(f"name {k!r} of {card.family!r} is already registered by {prev[0]!r}")
    _CARDS[card.family] = card
    _INDEX.update(keys)
    return card


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every public module of a package (``register``-style files: a model, task or method per file)."""
    import pkgutil

    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            import_module(f"{package}.{info.name}")


def _load_all() -> None:
    """Import the built-in model files and entry-point plugins once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import_module("glocal.zoo.models")
    for ep in entry_points(group="glocal.models"):
        obj = ep.load()
        if callable(obj):
            obj()
    for name in filter(None, (n.strip() for n in os.environ.get("GLOCAL_PLUGINS", "").split(","))):
        import_module(name)  # local plugin modules (registering on import), e.g. for experiments


def cards() -> list[ModelCard]:
    _load_all()
    return sorted(_CARDS.values(), key=lambda c: (c.task, c.family))


def get_card(family: str) -> ModelCard:
    return resolve(family)[0]


def _timm_card(name: str) -> ModelCard:
    """A card made on the fly for ``timm:NAME`` (any timm classification model, e.g. as a baseline)."""
    import timm

    arch = name.split(":", 1)[1]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown timm model {arch!r}{hint}")
    cfg = timm.models.get_pretrained_cfg(arch)
    pp = Preprocessing.from_timm(arch)
    variant = Variant(name=f"timm:{arch}", builder=_timm_builder, kwargs={"arch": arch}, preprocessing=pp,
                      weights=(WeightSource(description="timm pretrained weights", timm_name=arch, layout="timm"),))
    return ModelCard(family=f"timm:{arch}", display_name=arch, task="classification", paper_title="(timm model)",
                     arxiv_id="-", official_repo="https://github.com/huggingface/pytorch-image-models",
                     license=(cfg.license if cfg is not None and cfg.license else "see timm"), variants=(variant,))


def _timm_builder(arch: str, **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(arch, pretrained=False, **kwargs)


def resolve(name: str) -> tuple[ModelCard, Variant]:
    """Resolve a family or variant name to (card, variant); unknown names raise with suggestions.

    ``timm:NAME`` resolves any timm model through a card made on the fly.
    """
    _load_all()
    check_name(name)
    if name.startswith("timm:"):
        if name not in _DYNAMIC:
            _DYNAMIC[name] = _timm_card(name)
        card = _DYNAMIC[name]
        return card, card.variants[0]
    key = normalize(name)
    hit = _INDEX.get(key)
    if hit is None:
        close = difflib.get_close_matches(key, list(_INDEX), n=3, cutoff=0.5)
        pretty = [_pretty(k) for k in close]
        hint = f"; did you mean {', '.join(pretty)}?" if pretty else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (`bench list models` shows all)")
    card = _CARDS[hit[0]]
    return card, card.variant(hit[1])


def _pretty(key: str) -> str:
    family, variant = _INDEX[key]
    return variant or family


def list_models(task: str | None = None, family: str | None = None) -> list[str]:
    """Variant names, optionally filtered by task or family."""
    out: list[str] = []
    for c in cards():
        if (task and c.task != task) or (family and normalize(c.family) != normalize(family)):
            continue
        out.extend(v.name for v in c.variants)
    return out


def iter_variants(names: Iterable[str] | None = None) -> Iterable[tuple[ModelCard, Variant]]:
    if names is None:
        for c in cards():
            for v in c.variants:
                yield c, v
    else:
        for n in names:
            yield resolve(n)
