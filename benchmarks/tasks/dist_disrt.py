"""``--dataset dist=PATH`` and ``--dataset disrt=PATH``: global-structure sensitivity of classification backbones.

Both wrap :func:`glocal.benchmarks.metrics.structure_sensitivity.evaluate_structure` (odd-one-out on frozen
pooled features, with local-only baselines) for the model the harness built, and add a ``structure_sensitivity``
metric to the record. ``PATH`` is a generated set (``bench datasets make dist-ps|disrt-style``) or an official
release in the layout documented in :mod:`glocal.datasets.triplets`. Dataset options (``DatasetSpec.options``):
``distance`` (cosine|euclidean), ``layer`` (pooled or a stage index), ``topk`` (fraction kept per channel, e.g.
0.05), ``max_trials``, ``seed`` (bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glocal.benchmarks.embeddings import Backbone, EmbeddingError
from glocal.benchmarks.metrics.structure_sensitivity import StructureError, evaluate_structure
from glocal.benchmarks.tasks import DatasetSpec, EvalContext, EvalResult, TaskError, register_evaluator
from glocal.datasets.registry import DatasetError
from glocal.datasets.triplets import load_triplets

_GENERATOR = {"dist": "dist-ps", "disrt": "disrt-style"}


def _options(spec: DatasetSpec) -> dict[str, Any]:
    """Typed evaluator options from the dataset spec's ``key=value`` strings."""
    known = {"distance", "layer", "topk", "max_trials", "seed"}
    unknown = sorted(set(spec.options) - known)
    if unknown:
        raise TaskError(f"--dataset {spec.name}: unknown option {unknown[0]!r} (options: {', '.join(sorted(known))})")
    o = spec.options
    try:
        return {"distance": o.get("distance", "cosine"), "layer": o.get("layer", "pooled"),
                "topk": float(o["topk"]) if o.get("topk") not in (None, "", "none") else None,
                "max_trials": int(o["max_trials"]) if o.get("max_trials") else None,
                "seed": int(o.get("seed", 0))}
    except ValueError as e:
        raise TaskError(f"--dataset {spec.name}: bad option value ({e})") from e


def run_structure(test: str, model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec,
                  ctx: EvalContext) -> EvalResult:
    """Score ``model`` on the ``test`` (dist/disrt) triplets at ``spec.path``."""
    if spec.path is None:
        raise TaskError(f"--dataset {test} needs a folder: --dataset {test}=PATH (make one with "
                        f"`bench datasets make {_GENERATOR[test]} --from IMAGES --out DIR`)")
    opts = _options(spec)
    try:
        data = load_triplets(spec.path, expect=test)
        backbone = Backbone.from_module(model, card=card, variant=variant, image_size=ctx.resolution)
        res = evaluate_structure(backbone, data, distance=opts["distance"], layer=opts["layer"], topk=opts["topk"],
                                 batch_size=ctx.batch_size, device=ctx.device, progress=ctx.progress,
                                 workers=ctx.workers, max_trials=opts["max_trials"], seed=opts["seed"],
                                 shard=ctx.shard)
    except (DatasetError, StructureError, EmbeddingError) as e:
        raise TaskError(str(e)) from e
    dataset = res.pop("dataset")
    res.pop("backbone")
    return EvalResult(metrics={"structure_sensitivity": res}, dataset=dataset)


def _open(test: str) -> Callable[[Any, Any, DatasetSpec], Any]:
    """The ``open`` hook: options checked and the triplet folder loaded (its layout validated)."""

    def open_triplets(card: Any, variant: Any, spec: DatasetSpec) -> Any:
        if spec.path is None:
            raise TaskError(f"--dataset {test} needs a folder: --dataset {test}=PATH")
        _options(spec)
        return load_triplets(spec.path, expect=test)

    return open_triplets


@register_evaluator("dist", ("classification",), open=_open("dist"),
                    description="DiST odd-one-out structure sensitivity (official layout or a dist-ps set), with "
                    "local-only baselines")
def dist(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
    """DiST-style global-structure sensitivity (odd-one-out on pooled features)."""
    return run_structure("dist", model, card, variant, spec, ctx)


@register_evaluator("disrt", ("classification",), open=_open("disrt"),
                    description="DiSRT odd-one-out spatial-relationship sensitivity (official layout or a disrt-style "
                    "set), with local-only baselines")
def disrt(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
    """DiSRT-style spatial-relationship sensitivity (odd-one-out on pooled features)."""
    return run_structure("disrt", model, card, variant, spec, ctx)
