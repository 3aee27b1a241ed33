"""Compute cost: parameter counts and multiply-adds.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` at batch 1 (it counts 2 FLOPs per
multiply-add, so GMACs = FLOPs / 2 / 1e9). Modules whose work the counter cannot see (FlexAttention,
custom gathers) define ``glocal_macs(inputs, output) -> int``; for those, whatever the counter saw
inside the module is replaced by the formula.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

COUNTER = "torch.utils.flop_counter (GMACs = FLOPs/2)"


def count_params(model: nn.Module) -> int:
    """Number of parameters (frozen ones included, buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: torch.Tensor | tuple[Any, ...] | None = None, *,
               call: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Multiply-adds of one forward pass: ``model(*x)``, or ``call()`` for structured inputs (pass a batch of 1
    for per-image figures).

    Returns ``gmacs`` (total), ``counter_gmacs`` (what the dispatcher-level counter saw outside formula
    modules) and ``formula_gmacs`` (the part that came from ``glocal_macs`` hooks).
    """
    if call is None:
        args = x if isinstance(x, tuple) else (x,)

        def call() -> Any:
            return model(*args)

    counter = FlopCounterMode(display=False)
    formula: list[int] = []
    hidden: list[int] = []
    depth = [0]
    starts: list[int] = []
    handles = []

    def pre(mod: nn.Module, inputs: tuple) -> None:
        depth[0] += 1
        starts.append(counter.get_total_flops())

    def post(mod: nn.Module, inputs: tuple, output: Any) -> None:
        seen = counter.get_total_flops() - starts.pop()
        depth[0] -= 1
        if depth[0] == 0:  # nested formula modules: the outermost one accounts for everything inside
            hidden.append(seen)
            formula.append(int(mod.glocal_macs(inputs, output)))

    for m in model.modules():
        if callable(getattr(m, "glocal_macs", None)):
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    try:
        # SDPA's math backend: the counter has no formula for the CPU flash kernel (it would count attention as 0)
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
            call()
    finally:
        for h in handles:
            h.remove()
    total_flops = counter.get_total_flops()
    counter_macs = (total_flops - sum(hidden)) / 2
    formula_macs = float(sum(formula))
    return {
        "gmacs": (counter_macs + formula_macs) / 1e9,
        "counter_gmacs": counter_macs / 1e9,
        "formula_gmacs": formula_macs / 1e9,
        "counter": COUNTER,
    }
