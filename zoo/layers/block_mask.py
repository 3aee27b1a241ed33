"""FlexAttention ``BlockMask`` from block flags: the one place that turns "which (query block, key block) pairs are
partly / fully allowed" into FlexAttention's per-row block lists (neighborhood attention, Scale-DiT)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def kv_block_lists(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [q blocks, kv blocks] -> FlexAttention's (count per row, kv indices listed first) as [1, 1, ...]."""
    order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True)
    return flags.sum(-1).to(torch.int32)[None, None], order.to(torch.int32)[None, None]


def block_mask_from_flags(partial: torch.Tensor, full: torch.Tensor, block: int, mask_mod: Callable[..., Any],
                          length: int, device: torch.device | str | None = None) -> Any:
    """A ``BlockMask`` over a sequence of ``length`` tokens: ``mask_mod`` decides inside the ``partial`` blocks,
    ``full`` blocks are computed without it, all other blocks are skipped."""
    from torch.nn.attention.flex_attention import BlockMask

    (kv_num, kv_idx), (full_num, full_idx) = (
        tuple(x.to(device) if device is not None else x for x in kv_block_lists(f)) for f in (partial, full))
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(length, length))
