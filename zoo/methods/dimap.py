"""DIMAP: data-independent module-aware pruning of hierarchical ViTs (He & Zhou, ICLR 2024, arXiv 2404.13648).

The weights of every block are split into three *modules*: QKV (all ``qkv`` weights), PRJ (all attention
``proj`` weights) and MLP (all ``fc1``/``fc2`` weights). Each weight gets a data-free score inside its own layer
(the Frobenius-distortion score, same formula as LAMP): with the layer's entries sorted by magnitude,

    score(w_j) = w_j^2 / sum_{i : i ranked at or above j} w_i^2,

so the largest weight of every layer scores 1. Each module is then pruned with *one* threshold over the pooled
scores of its layers, element-wise (unstructured). Patch embedding, patch merging, norms, biases, position
tables, convolutions outside the three modules and the classifier are never touched.

Budgets: ``ratio=r`` removes the fraction ``r`` of every module's weights (the paper does not say how a target
maps to modules; its parameter and FLOP reductions are nearly equal, which fits the same fraction per module).
The whole model then loses ``r`` x (prunable share of its parameters). ``ratios={"qkv": a, "proj": b, "mlp": c}``
sets each module's fraction instead. ``magnitude`` is the uniform baseline of the paper's Table 3: each prunable
layer loses the same fraction of its smallest-magnitude weights (``torch.nn.utils.prune.l1_unstructured``).

What the sparsity buys: storage (non-zero parameters) and *theoretical* FLOPs on non-zero weights (the UVC-style
count the paper reports). Zeros in a dense weight matrix do **not** make dense kernels faster or smaller: latency
and memory of a DIMAP model equal the dense model's. The ``2:4`` pattern (two of every four consecutive input
weights kept, by magnitude) runs on PyTorch's semi-structured sparse kernels, which exist only on CUDA GPUs of
compute capability 8.0 or newer; it is a different, coarser pattern than DIMAP's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from glocal.zoo.methods import Method, MethodError, Param, register_method

MODULES = ("qkv", "proj", "mlp")
PATTERNS = ("unstructured", "2:4")

# The one place that says which layers form each module, per family (regexes over ``named_modules`` names).
# Everything a rule does not name is auxiliary and never pruned.
MODULE_RULES: dict[str, dict[str, str]] = {
    "swin": {"qkv": r"layers\.\d+\.blocks\.\d+\.attn\.qkv", "proj": r"layers\.\d+\.blocks\.\d+\.attn\.proj",
             "mlp": r"layers\.\d+\.blocks\.\d+\.mlp\.fc[12]"},
    "gcvit": {"qkv": r"stages\.\d+\.blocks\.\d+\.attn\.qkv", "proj": r"stages\.\d+\.blocks\.\d+\.attn\.proj",
              "mlp": r"stages\.\d+\.blocks\.\d+\.mlp\.fc[12]"},
    "dinat": {"qkv": r"levels\.\d+\.blocks\.\d+\.attn\.qkv", "proj": r"levels\.\d+\.blocks\.\d+\.attn\.proj",
              "mlp": r"levels\.\d+\.blocks\.\d+\.mlp\.fc[12]"},
    # SViT's are 1x1 convolutions; the depthwise conv inside its MLP (mlp2.conv) is a position-mixing conv: aux.
    "svit": {"qkv": r"layers\.\d+\.blocks\.\d+\.attn\.stoken_refine\.qkv",
             "proj": r"layers\.\d+\.blocks\.\d+\.attn\.stoken_refine\.proj",
             "mlp": r"layers\.\d+\.blocks\.\d+\.mlp2\.fc[12]"},
}
# Model class -> family, so that timm-built models (``timm:swin_...``) are recognised as well as zoo cards.
CLASS_FAMILY = {"SwinTransformer": "swin", "GlobalContextVit": "gcvit", "DiNAT": "dinat", "SViT": "svit"}

Layer = tuple[str, nn.Module]


class PruningError(MethodError):
    """Bad pruning input (ratio out of range, a model with no module rule, an unsupported pattern)."""


def family_of(model: nn.Module) -> str:
    """The module-rule family of ``model``, from its class (or its zoo card); one clear error if none."""
    family = CLASS_FAMILY.get(type(model).__name__)
    card = getattr(model, "glocal_card", None)
    if family is None and card is not None and card.family in MODULE_RULES:
        family = card.family
    if family is None:
        name = card.family if card is not None else type(model).__name__
        raise PruningError(f"DIMAP has no module rule for {name!r}; rules exist for {', '.join(MODULE_RULES)} "
                           f"(hierarchical ViTs with qkv, proj and MLP linears)")
    return family


def module_groups(model: nn.Module) -> dict[str, list[Layer]]:
    """``{"qkv": [(name, layer), ...], "proj": [...], "mlp": [...]}`` for the model's family."""
    rules = MODULE_RULES[family_of(model)]
    groups: dict[str, list[Layer]] = {m: [] for m in MODULES}
    for name, layer in model.named_modules():
        for module, pattern in rules.items():
            if re.fullmatch(pattern, name) and isinstance(layer, nn.Linear | nn.Conv2d):
                groups[module].append((name, layer))
    empty = [m for m, layers in groups.items() if not layers]
    if empty:
        raise PruningError(f"the {family_of(model)} rule matches no layer for module(s) {', '.join(empty)} in "
                           f"{type(model).__name__}")
    return groups


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """DIMAP/LAMP score of every entry: w^2 over the sum of w^2 of the entries ranked at or above it.

    Computed in float64 (the pooled thresholds are ~1e-7); ties are ranked by position (stable sort).
    """
    sq = weight.detach().flatten().double().square()
    ranked, order = torch.sort(sq, stable=True)  # ascending: entry k is ranked below entries k+1, k+2, ...
    at_or_above = ranked.flip(0).cumsum(0).flip(0)
    ranked.div_(at_or_above).nan_to_num_(0.0)  # 0/0 only for zeros with nothing but zeros above them
    return torch.empty_like(sq).scatter_(0, order, ranked).view_as(weight)


def check_ratio(value: Any, what: str = "ratio") -> float:
    """A pruning fraction in [0, 1); anything else is refused in one line."""
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise PruningError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= r < 1.0:
        raise PruningError(f"{what} must be in [0, 1) (the fraction of weights removed), got {value!r}")
    return r


def module_ratios(ratio: float | None = None, ratios: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-module fractions: a global ``ratio`` applies to every module; ``ratios`` overrides per module."""
    if ratio is None and not ratios:
        raise PruningError("give a global ratio or per-module ratios (qkv, proj, mlp)")
    unknown = set(ratios or {}) - set(MODULES)
    if unknown:
        raise PruningError(f"unknown module(s) {', '.join(sorted(unknown))}; modules are {', '.join(MODULES)}")
    base = check_ratio(ratio) if ratio is not None else 0.0
    return {m: check_ratio((ratios or {}).get(m, base), f"ratio of module {m}") for m in MODULES}


def module_scores(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Every module layer's DIMAP scores (the costly sort), to reuse across ratios of the same weights."""
    return {m: [lamp_scores(layer.weight) for _, layer in layers] for m, layers in module_groups(model).items()}


def _mask_group(layers: list[Layer], amount: float, scores: list[torch.Tensor] | None = None) -> float:
    """Prune the fraction ``amount`` of the pooled weights of ``layers`` with one threshold on their DIMAP
    scores, through ``torch.nn.utils.prune`` (mask, then ``prune.remove`` to make the zeros permanent).

    Exactly ``round(amount * n)`` weights go: those scoring below the threshold, then as many of the entries
    scoring exactly the threshold as the count needs (earliest first). Returns the threshold (0.0 if none).
    """
    k = round(amount * sum(layer.weight.numel() for _, layer in layers))
    if k == 0:
        return 0.0
    scores = scores if scores is not None else [lamp_scores(layer.weight) for _, layer in layers]
    pooled = torch.cat([s.flatten() for s in scores])
    threshold = pooled.kthvalue(k).values
    prune_flat = pooled < threshold
    ties = torch.nonzero(pooled == threshold).flatten()
    prune_flat[ties[: k - int(prune_flat.sum())]] = True
    start = 0
    for (_, layer), s in zip(layers, scores, strict=True):
        mask = ~prune_flat[start:start + s.numel()].view_as(s)
        start += s.numel()
        _masked(layer, lambda mod, m=mask: prune.custom_from_mask(mod, "weight", m.to(mod.weight.dtype)))
    return float(threshold)


def _masked(layer: nn.Module, make_mask: Callable[[nn.Module], Any]) -> None:
    """Apply a ``torch.nn.utils.prune`` mask and make it permanent, keeping the parameter order: ``prune``
    re-registers ``weight`` after ``bias``, which would change the state dict's key order (checkpoints are
    compared key by key, in order)."""
    order = list(layer._parameters)
    make_mask(layer)
    prune.remove(layer, "weight")
    layer._parameters = type(layer._parameters)((k, layer._parameters[k]) for k in order)


def _refuse_2to4_here(model: nn.Module) -> None:
    """The 2:4 pattern only where PyTorch's semi-structured kernels run: CUDA, compute capability >= 8.0."""
    device = next(model.parameters()).device
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        raise PruningError(f"the 2:4 pattern needs a CUDA GPU with compute capability 8.0+ for PyTorch's "
                           f"semi-structured sparse kernels (model is on {device}); use pattern=unstructured")


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest-magnitude entries of every four consecutive input weights (a 0/1 mask)."""
    w = weight.detach().reshape(weight.shape[0], -1)
    if w.shape[1] % 4:
        raise PruningError(f"2:4 needs the input width to be a multiple of 4, got {w.shape[1]}")
    quads = w.abs().reshape(w.shape[0], -1, 4)
    keep = torch.zeros_like(quads, dtype=torch.bool).scatter_(-1, quads.topk(2, dim=-1).indices, True)
    return keep.reshape(weight.shape).to(weight.dtype)


def dimap(model: nn.Module, ratio: float | None = None, ratios: Mapping[str, float] | None = None,
          pattern: str = "unstructured", scores: Mapping[str, list[torch.Tensor]] | None = None) -> dict[str, Any]:
    """Prune ``model`` in place the DIMAP way and return what was done (per-module fraction and threshold).

    Unstructured zeros do not speed up dense kernels; see the module docstring. ``pattern="2:4"`` instead
    keeps 2 of every 4 weights in each module layer (ratio fixed at 0.5) and swaps them to semi-structured
    sparse tensors; it is refused off CUDA. ``scores``: ``module_scores`` of these same weights, when pruning
    copies of one model at several ratios.
    """
    if pattern not in PATTERNS:
        raise PruningError(f"unknown sparsity pattern {pattern!r}; choose {' or '.join(PATTERNS)}")
    groups = module_groups(model)
    if pattern == "2:4":
        _refuse_2to4_here(model)
        return to_semi_structured(groups)
    fractions = module_ratios(ratio, ratios)
    thresholds = {m: _mask_group(groups[m], fractions[m], scores[m] if scores else None) for m in MODULES}
    return {"method": "dimap", "pattern": pattern, "ratios": fractions, "thresholds": thresholds}


def magnitude(model: nn.Module, ratio: float) -> dict[str, Any]:
    """Uniform magnitude pruning (the paper's Table 3 baseline): every module layer loses ``ratio`` of its
    smallest-|w| weights; the same layers as DIMAP, so the two differ only in how the budget is spread."""
    r = check_ratio(ratio)
    for layers in module_groups(model).values():
        for _, layer in layers:
            if r > 0:
                _masked(layer, lambda mod: prune.l1_unstructured(mod, "weight", amount=r))
    return {"method": "magnitude", "pattern": "unstructured", "ratios": dict.fromkeys(MODULES, r)}


def to_semi_structured(groups: Mapping[str, list[Layer]]) -> dict[str, Any]:
    """Mask every module linear to 2:4 by magnitude and swap its weight for a semi-structured sparse tensor."""
    from torch.sparse import to_sparse_semi_structured

    swapped = 0
    for layers in groups.values():
        for _, layer in layers:
            if not isinstance(layer, nn.Linear):
                raise PruningError("the 2:4 pattern applies to linear layers only (this family uses convolutions)")
            dense = layer.weight.detach() * mask_2to4(layer.weight)
            layer.weight = nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
            swapped += 1
    return {"method": "dimap", "pattern": "2:4", "ratios": dict.fromkeys(MODULES, 0.5),
            "semi_structured_layers": swapped}


def layer_macs(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, int]:
    """Dense multiply-adds of every module layer in one forward on ``model(*args, **kwargs)``, each counted by
    ``torch.utils.flop_counter`` around that layer alone (so models whose attention the counter cannot see,
    e.g. FlexAttention, still work); FLOPs / 2 = MACs."""
    macs: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def count(layer: nn.Module, inputs: tuple, output: Any) -> None:
            counter = FlopCounterMode(display=False)
            with counter:
                _replay(layer, inputs[0])
            macs[name] = macs.get(name, 0) + counter.get_total_flops() // 2
        return count

    for layers in module_groups(model).values():
        for name, layer in layers:
            handles.append(layer.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return macs


def _replay(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's own product again, with a dense view of its weight (semi-structured weights included)."""
    weight = layer.weight.detach().to_dense()
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return layer._conv_forward(x, weight, None)


def sparsity_report(model: nn.Module, macs: Mapping[str, int] | None = None,
                    dense_gmacs: float | None = None) -> dict[str, Any]:
    """Measured zeros per module, non-zero parameters and (with ``layer_macs``) non-zero GMACs.

    Non-zero parameters = all parameters minus the exact zeros in module weights (auxiliary parts count in
    full, as the paper's storage figure does). Non-zero GMACs = dense GMACs minus, for every module layer, its
    dense MACs times its fraction of zero weights: each weight of a linear or 1x1 conv takes part in the same
    number of products, so this is the UVC-style count on non-zero weights.
    """
    total = sum(p.numel() for p in model.parameters())
    modules: dict[str, dict[str, Any]] = {}
    zeros_all, removed = 0, 0.0
    for module, layers in module_groups(model).items():
        weights = zeros = 0
        for name, layer in layers:
            w = layer.weight.detach().to_dense()
            n, z = w.numel(), int((w == 0).sum())
            weights, zeros = weights + n, zeros + z
            if macs is not None:
                removed += macs[name] * z / n
        modules[module] = {"weights": weights, "zeros": zeros, "sparsity": zeros / weights}
        zeros_all += zeros
    prunable = sum(m["weights"] for m in modules.values())
    out: dict[str, Any] = {
        "family": family_of(model), "params": total, "prunable_params": prunable, "prunable_share": prunable / total,
        "nonzero_params": total - zeros_all, "param_reduction": zeros_all / total, "modules": modules,
        "note": "unstructured zeros: storage and theoretical FLOPs only; dense kernels run at dense speed",
    }
    if macs is not None:
        out["module_gmacs"] = sum(macs.values()) / 1e9
        out["removed_gmacs"] = removed / 1e9
        if dense_gmacs is not None:
            out["dense_gmacs"] = dense_gmacs
            out["nonzero_gmacs"] = dense_gmacs - removed / 1e9
            out["gmacs_reduction"] = removed / 1e9 / dense_gmacs
    return out


# ---- registration with the harness (``bench run --method dimap:ratio=0.35 --method none``) -------------------

def _check_fraction(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else "must be in [0, 1) (the fraction of weights removed)"


def _check_pattern(value: str) -> str | None:
    if value == "2:4":  # semi-structured tensors must be made on the GPU, in the precision they run in
        return ("the harness applies methods before moving the model to its device and precision; measure 2:4 "
                "with `bench microbench dimap --pattern 2:4 --device cuda --dtype bf16`")
    return None if value in PATTERNS else f"must be one of {', '.join(PATTERNS)}"


def _applies_to(card: Any, variant: Any) -> bool:
    """Classification models of a family with a module rule, or whose class has one (built on the meta device,
    which allocates nothing: ``timm:swin_...`` and plugin cards built on these classes)."""
    if card.task != "classification":
        return False
    if card.family in MODULE_RULES:
        return True
    try:
        with torch.device("meta"):
            model = variant.build()
    except Exception:  # a builder that cannot run on meta: say no rather than guess
        return False
    return type(model).__name__ in CLASS_FAMILY


def _remember_first_input(model: nn.Module) -> None:
    """Keep the inputs of the model's next call (the harness's batch-1 compute pass), once, so that ``describe``
    can count each module layer's MACs at the cell's resolution without knowing how the cell was built."""
    def capture(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        mod.glocal_pruning["example"] = (args, kwargs)
        handle.remove()
    handle = model.register_forward_pre_hook(capture, with_kwargs=True)


def _release_freed_memory() -> None:
    """Hand the pruning step's freed score buffers back to the OS (glibc keeps them otherwise), so that the
    harness's CPU RSS readings measure the pruned model rather than the pruning (a no-op off glibc)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _apply_dimap(model: nn.Module, card: Any, variant: Any, params: dict[str, Any]) -> nn.Module:
    per_module = {m: params[m] for m in MODULES if params.get(m) is not None}
    model.glocal_pruning = dimap(model, params.get("ratio"), per_module or None, params.get("pattern", PATTERNS[0]))
    _release_freed_memory()
    _remember_first_input(model)
    return model


def _apply_magnitude(model: nn.Module, card: Any, variant: Any, params: dict[str, Any]) -> nn.Module:
    model.glocal_pruning = magnitude(model, params["ratio"])
    _release_freed_memory()
    _remember_first_input(model)
    return model


def describe(model: nn.Module) -> dict[str, Any]:
    """The record's ``workload``: measured sparsity per module, non-zero parameters and, once the model has
    run, each module's dense and non-zero GMACs (the record's ``compute.gmacs`` stays the dense count)."""
    info = dict(getattr(model, "glocal_pruning", {}))
    example = info.pop("example", None)
    macs = None
    if example is not None:
        args, kwargs = example
        macs = layer_macs(model, *args, **kwargs)
    report = sparsity_report(model, macs)
    report.pop("note")
    out = {**{k: v for k, v in info.items() if k != "method"}, **report}
    if macs is not None:
        out["nonzero_module_gmacs"] = out["module_gmacs"] - out["removed_gmacs"]
    out["speedup_note"] = ("unstructured zeros: compute.gmacs counts the dense kernels that actually run; non-zero "
                           "GMACs (the paper's UVC count) = compute.gmacs - removed_gmacs, a saving dense kernels "
                           "do not turn into latency or memory")
    return out


_SPARSITY = ("Unstructured zeros save storage and theoretical FLOPs only: dense kernels run at dense speed and "
             "memory.")
_RATIO_HELP = "fraction of each module's weights removed, in [0, 1)"

register_method(Method(
    name="dimap",
    description="DIMAP (ICLR 2024): data-free, module-aware unstructured pruning of hierarchical ViTs; one "
                "LAMP-style score threshold per module (QKV, PRJ, MLP), same fraction per module. " + _SPARSITY,
    params={"ratio": Param(float, 0.5, _check_fraction, _RATIO_HELP),
            **{m: Param(float, None, _check_fraction, f"fraction of the {m} module (overrides ratio)")
               for m in MODULES},
            "pattern": Param(str, "unstructured", _check_pattern, "unstructured (2:4: bench microbench dimap)")},
    applies_to=_applies_to,
    apply=_apply_dimap,
    describe=describe,
))
register_method(Method(
    name="magnitude",
    description="Uniform magnitude pruning (DIMAP's Table 3 baseline): every QKV/PRJ/MLP layer loses the same "
                "fraction of its smallest weights (torch.nn.utils.prune.l1_unstructured). " + _SPARSITY,
    params={"ratio": Param(float, 0.5, _check_fraction, "fraction of each layer's weights removed, in [0, 1)")},
    applies_to=_applies_to,
    apply=_apply_magnitude,
    describe=describe,
))
