"""The glocal model zoo: registered model cards, faithful implementations and weights loading.

>>> from glocal import zoo
>>> zoo.list_models(task="classification")[:2]
>>> model = zoo.create_model("gcvit", weights="random")
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch.nn as nn

from glocal.zoo.layers.inputs import InputError
from glocal.zoo.registry import (
    ModelCard,
    PaperMetric,
    Preprocessing,
    UnknownModelError,
    Variant,
    WeightSource,
    cards,
    get_card,
    list_models,
    register,
    resolve,
)
from glocal.zoo.weights import CheckpointError, WeightsInfo, apply_weights, resolve_weights

__all__ = [
    "CheckpointError", "InputError", "ModelCard", "PaperMetric", "Preprocessing", "UnknownModelError", "Variant",
    "WeightSource", "WeightsInfo", "cards", "create_model", "get_card", "list_models", "register", "resolve",
]


def create_model(name: str, weights: str | os.PathLike | None = None, *, quiet: bool = False,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model in eval mode.

    ``weights``: ``None``/``"auto"`` searches installed weights packages then the hub and falls back to
    random weights (announced on stderr); ``"random"`` skips the search; a path loads that checkpoint
    strictly (converting known official layouts). The provenance is attached as ``model.glocal_weights``
    and the card/variant as ``model.glocal_card`` / ``model.glocal_variant``.
    """
    card, variant = resolve(name)
    model = variant.build(**kwargs)
    state_dict, info, message = resolve_weights(card, variant, weights)
    if state_dict is not None:
        info = apply_weights(card, variant, model, state_dict, info)
    elif not quiet and (weights is None or str(weights) in ("auto", "pretrained")):
        print(f"WARNING: {message}", file=sys.stderr)
    model.eval()
    model.glocal_weights = info  # type: ignore[attr-defined]
    model.glocal_weights_message = message  # type: ignore[attr-defined]
    model.glocal_card = card  # type: ignore[attr-defined]
    model.glocal_variant = variant  # type: ignore[attr-defined]
    return model


def _register_builtin() -> None:
    """Import the built-in model files so their timm names exist after ``import glocal.zoo``."""
    from glocal.zoo.registry import _load_all

    _load_all()


_register_builtin()
