"""Sharded dataset evaluation under ``torchrun``: each rank scores every ``world``-th sample, the per-sample
results are gathered, and rank 0 writes the one record, whose metrics equal a single-process run's.

``torchrun --nproc-per-node N -m glocal run --model M --dataset imagenet=PATH`` (and the same across nodes)
sets ``RANK``/``WORLD_SIZE``; the run then evaluates in-process on every rank (no timing pass: latency is a
single-device measurement). Evaluators take their samples through :meth:`Shard.indices` and hand their
per-sample rows to :meth:`Shard.gather`, which returns every rank's rows in sample order, so sums and means
are computed in the same order as without sharding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shard:
    """This process's part of an evaluation: rank ``rank`` of ``world`` (1 when not distributed)."""

    rank: int = 0
    world: int = 1

    def indices(self, n: int) -> range:
        """The samples of this rank: rank, rank + world, ... (no overlap, no loss, any n)."""
        return range(self.rank, n, self.world)

    def gather(self, rows: Sequence[tuple[int, Any]]) -> list[Any]:
        """Every rank's ``(sample index, row)`` pairs, merged and sorted by sample index (values only)."""
        merged = list(rows)
        if self.world > 1:
            parts: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(parts, merged)
            merged = [r for part in parts for r in part]
        merged.sort(key=lambda r: r[0])
        if len({i for i, _ in merged}) != len(merged):
            raise RuntimeError("sharded evaluation scored a sample twice")
        return [row for _, row in merged]


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment ((0, 1, 0) outside it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def current() -> Shard:
    """The shard of this process: from the initialised process group, else the whole set."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Shard()


def init(device: str) -> Shard:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) and return this rank's shard."""
    rank, world, _ = env_world()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return current()
