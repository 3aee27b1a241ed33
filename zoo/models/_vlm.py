"""Shared plumbing of the vision-language hosts (``llava.py``, ``qwen_vl.py``), all on transformers' own classes.

Two things every host needs: splicing the (possibly pruned) visual features into the text embeddings, so the
language model sees exactly the kept visual tokens; and loading real weights from a local Hugging Face folder
strictly (or failing fast, in one line, for a hub name while offline).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from glocal.zoo.weights import CheckpointError, _reachable

# select(grids, context) -> kept indices per image; grids are (height, width) of each image's token grid
Selector = Callable[[Sequence[tuple[int, int]], dict[str, Any]], list[torch.Tensor]]


class VisualTokenError(ValueError):
    """Image placeholders and visual features (or kept indices) that do not fit together."""


def splice_visual_tokens(embeds: torch.Tensor, image_mask: torch.Tensor, features: Sequence[torch.Tensor],
                         kept: Sequence[torch.Tensor] | None = None, attention_mask: torch.Tensor | None = None,
                         position_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Put the images' features into their placeholder positions, then drop the positions of pruned tokens.

    ``embeds``: ``(B, L, D)`` text embeddings; ``image_mask``: ``(B, L)`` placeholders, one per visual token, the
    images in order; ``kept``: sorted indices per image (``None`` keeps all). ``attention_mask`` ``(B, L)`` and
    ``position_ids`` ``(..., B, L)`` are sliced the same way. Every sample must keep the same number of tokens.
    """
    flat = torch.cat(list(features)).to(embeds.device, embeds.dtype)
    if int(image_mask.sum()) != flat.shape[0]:
        raise VisualTokenError(f"{int(image_mask.sum())} image placeholder tokens but {flat.shape[0]} visual features")
    embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), flat)
    out: dict[str, torch.Tensor] = {"inputs_embeds": embeds}
    if attention_mask is not None:
        out["attention_mask"] = attention_mask
    if position_ids is not None:
        out["position_ids"] = position_ids
    if kept is None:
        return out
    if len(kept) != len(features):
        raise VisualTokenError(f"kept indices for {len(kept)} images but {len(features)} images")
    keep = ~image_mask
    slots = image_mask.reshape(-1).nonzero().squeeze(1)
    start = 0
    for feats, idx in zip(features, kept, strict=True):
        n = feats.shape[0]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise VisualTokenError(f"kept indices outside 0..{n - 1}")
        keep.view(-1)[slots[start:start + n][idx.to(slots.device)]] = True
        start += n
    lengths = keep.sum(dim=1)
    if bool((lengths != lengths[0]).any()):
        raise VisualTokenError(f"samples keep different numbers of tokens {lengths.tolist()}; run them one by one")
    b, length = keep.shape[0], int(lengths[0])
    out["inputs_embeds"] = embeds[keep].view(b, length, -1)
    if attention_mask is not None:
        out["attention_mask"] = attention_mask[keep].view(b, length)
    if position_ids is not None:
        out["position_ids"] = position_ids[..., keep].view(*position_ids.shape[:-2], b, length)
    return out


def host_for(model: nn.Module) -> Any:
    """The zoo host file of a transformers VLM (``prefill_inputs``, ``dummy_inputs``): LLaVA or Qwen2.5-VL."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "llava":
        from glocal.zoo.models import llava

        return llava
    if model_type == "qwen2_5_vl":
        from glocal.zoo.models import qwen_vl

        return qwen_vl
    raise VisualTokenError(f"{type(model).__name__} is not a LLaVA or Qwen2.5-VL host")


def _is_hub_name(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def load_pretrained(model_cls: type[nn.Module], model_type: str, source: str | os.PathLike,
                    dtype: torch.dtype | None = None) -> nn.Module:
    """``model_cls.from_pretrained`` on a local folder (or a hub name when online), strict: every checkpoint key
    must be used and every model key filled, else one :class:`CheckpointError` line."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a Hugging Face model folder (no config.json)")
        text = str(path)
    elif _is_hub_name(text):
        if not _reachable("huggingface.co"):
            raise CheckpointError(f"offline: cannot fetch {text} from the Hugging Face hub; download it elsewhere "
                                  f"and pass the local folder with --weights PATH")
    else:
        raise CheckpointError(f"weights not found: {text} (expected a Hugging Face model folder)")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(text, local_files_only=path.is_dir())
    if config.model_type != model_type:
        raise CheckpointError(f"{text} holds a {config.model_type!r} model, not {model_type!r}")
    model, info = model_cls.from_pretrained(text, dtype=dtype, output_loading_info=True,
                                            local_files_only=path.is_dir())
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        parts = [f"{len(v)} {k.replace('_', ' ')} (e.g. {', '.join(map(str, list(v)[:3]))})"
                 for k, v in problems.items()]
        raise CheckpointError(f"{text} does not match the model: " + "; ".join(parts))
    return model.eval()


def need_transformers(family: str) -> None:
    """One line naming the extra to install when transformers is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{family} needs transformers: pip install 'glocal[vlm]' (or transformers)") from e
