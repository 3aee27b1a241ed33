"""Top-k accuracy counted per batch, so evaluators can sum exact counts over a dataset."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices
    hit = top.eq(target.view(-1, 1))
    return {k: int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks}
