"""Weights: read checkpoint files safely, unwrap training dicts, convert layouts, load strictly.

Resolution order for ``create_model(name, weights=...)`` with ``weights=None`` ("auto"):
an installed weights package (entry-point group ``glocal.weights``) -> the hub through timm's own
pretrained path (fails fast offline) -> random weights, announced loudly and recorded as ``random``.
An explicit ``weights=PATH`` always wins; ``weights="random"`` skips the search.

Files are read from safetensors, or with ``torch.load(weights_only=True)`` and an allow-list of exactly
the non-tensor types official training files carry (argparse Namespace): nothing else is unpickled.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from glocal.hashing import sha256_file

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "params_ema", "params", "net")
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model (one clear line)."""


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of the weights a model was built with."""

    source: str  # "package", "file", "hub", "random"
    id: str  # package name, file path, hub id, or "random"
    sha256: str | None = None
    layout: str | None = None

    @property
    def is_random(self) -> bool:
        return self.source == "random"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "sha256": self.sha256, "layout": self.layout}


RANDOM = WeightsInfo(source="random", id="random")


def read_checkpoint(path: str | os.PathLike, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a safetensors or PyTorch checkpoint into a flat state dict (wrappers and ``module.`` removed).

    timm's ``load_state_dict`` reads the file (safetensors, or ``torch.load(weights_only=True)``) under our
    allow-list and picks timm's wrapper keys; :func:`unwrap_state_dict` adds BasicSR's and nested ones.
    """
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj: Any = load_state_dict(str(path), use_ema=prefer_ema, device="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding disallowed objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from e
    return unwrap_state_dict(obj, prefer_ema=prefer_ema, origin=str(path))


def unwrap_state_dict(obj: Any, prefer_ema: bool = False, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a training checkpoint (``model``/``state_dict``/``model_ema``/``params``).

    Wrappers can nest (``{"model": {"state_dict": ...}}``) and BasicSR files use ``params``/``params_ema``,
    which timm's reader does not know; DDP/compile prefixes go through timm's ``clean_state_dict``.
    """
    from timm.models import clean_state_dict

    order = WRAPPER_KEYS if prefer_ema else tuple(k for k in WRAPPER_KEYS if "ema" not in k) + (
        "state_dict_ema", "model_ema", "params_ema")
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in order:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{origin} holds no state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin} holds no tensors")
    return clean_state_dict(tensors)


def check_keys_and_shapes(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                          origin: str = "checkpoint") -> None:
    """Raise one readable :class:`CheckpointError` on any missing/unexpected key or shape mismatch.

    Works on meta tensors too, so a request can be checked before any model is materialised.
    """
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise CheckpointError(f"{origin} does not match the model: " + "; ".join(parts))


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with one readable line on any key or shape mismatch."""
    check_keys_and_shapes(model.state_dict(), state_dict, origin)
    model.load_state_dict(state_dict, strict=True)


def installed_weight_packages() -> dict[str, Any]:
    """Weights packages installed with pip announce themselves in the entry-point group ``glocal.weights``.

    Each entry point is named after a variant and points to a callable returning the path of a
    safetensors file (or a mapping ``{"path": ..., "sha256": ..., "layout": ...}``).
    """
    from glocal.zoo.registry import normalize

    return {normalize(ep.name): ep for ep in entry_points(group="glocal.weights")}


def _from_package(variant_name: str) -> tuple[Path, dict] | None:
    from glocal.zoo.registry import normalize

    ep = installed_weight_packages().get(normalize(variant_name))
    if ep is None:
        return None
    found = ep.load()
    found = found() if callable(found) else found
    meta = dict(found) if isinstance(found, Mapping) else {"path": found}
    return Path(meta["path"]), meta


def _offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "GLOCAL_OFFLINE"))


def _reachable(host: str, timeout: float = 1.5) -> bool:
    """Fail fast offline: one TCP connect instead of a library's long retry loop."""
    if _offline():
        return False
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def timm_cached_file(timm_name: str) -> tuple[Path | None, str]:
    """Where timm's pretrained path would read ``timm_name`` from: (cached file or None, host to fetch from)."""
    from urllib.parse import urlparse

    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return None, "huggingface.co"
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(hit, str):
                return Path(hit), "huggingface.co"
        return None, "huggingface.co"
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        return (cached if cached.is_file() else None), urlparse(cfg.url).hostname or "github.com"
    return None, "huggingface.co"


def _from_timm(timm_name: str) -> dict[str, torch.Tensor]:
    """Load pretrained weights through timm's real code path (its cache, else a download)."""
    import timm

    return timm.create_model(timm_name, pretrained=True).state_dict()


def resolve_weights(card: Any, variant: Any, weights: str | os.PathLike | None) -> tuple[
        dict[str, torch.Tensor] | None, WeightsInfo, str]:
    """Find weights for a variant. Returns (state_dict or None for random, provenance, log message)."""
    if weights is not None and str(weights) == "random":
        return None, RANDOM, "random weights requested"
    if weights is not None and str(weights) not in ("auto", "pretrained"):
        path = Path(weights)
        sd = read_checkpoint(path)
        return sd, WeightsInfo("file", str(path), sha256_file(path)), f"weights from {path}"
    pkg = _from_package(variant.name)
    if pkg is not None:
        path, meta = pkg
        sd = read_checkpoint(path)
        sha = meta.get("sha256") or sha256_file(path)
        return sd, WeightsInfo("package", str(meta.get("name", path)), sha, meta.get("layout")), (
            f"weights from installed package ({path})")
    hub = [w for w in variant.weights if w.timm_name]
    if hub:
        name = hub[0].timm_name
        cached, host = timm_cached_file(name)
        if cached is not None or _reachable(host):
            try:
                sd = _from_timm(name)
                cached = cached or timm_cached_file(name)[0]
                sha = sha256_file(cached) if cached is not None else None
                return sd, WeightsInfo("hub", name, sha, "timm"), f"weights from timm's pretrained path ({name})"
            except Exception as e:  # noqa: BLE001 - any hub failure falls back to random, loudly
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        else:
            reason = f"offline: {host} not reachable and nothing cached"
    else:
        reason = "no installed weights package and no hub source"
    return None, RANDOM, (f"RANDOM WEIGHTS: no pretrained weights for {variant.name} ({reason}); "
                          "quality metrics will not be computed")


def to_native_layout(card: Any, state_dict: dict[str, torch.Tensor], layout: str | None = None,
                     origin: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """Detect a checkpoint's layout (when the family can) and convert it to the module's own layout."""
    try:
        if card.detect_layout is not None and layout in (None, "auto"):
            layout = card.detect_layout(state_dict)
        if card.convert_state_dict is not None and layout not in (None, "native", "timm"):
            state_dict = card.convert_state_dict(state_dict, layout)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{origin} does not match {card.family}: {e}") from e
    return state_dict, layout or "native"


def apply_weights(card: Any, variant: Any, model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                  info: WeightsInfo) -> WeightsInfo:
    """Convert a checkpoint from its layout to ours (if the family knows how), then load strictly."""
    state_dict, layout = to_native_layout(card, dict(state_dict), info.layout, origin=info.id)
    load_strict(model, state_dict, origin=info.id)
    return WeightsInfo(info.source, info.id, info.sha256, layout)


def warn_random(message: str) -> None:
    warnings.warn(message, stacklevel=3)
