"""Top-k accuracy counted per batch, so evaluators can sum exact counts over a dataset."""

from __future__ import annotations

import torch


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """Per sample, whether its target is among the top-k logits, for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[-1])
    hit = logits.topk(maxk, dim=-1).indices.eq(target.view(-1, 1))
    return {k: hit[:, : min(k, maxk)].any(dim=1) for k in ks}
