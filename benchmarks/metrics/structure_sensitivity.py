"""Global-structure sensitivity: the odd-one-out test of DiST / DiSRT on frozen features.

Protocol (Wen, Li, Jing & Lee, arXiv 2310.07555, "DiST"; Li et al., arXiv 2506.00718, "DiSRT"): each trial
is a triplet of one original image and two versions whose global structure was disrupted while local
texture was kept. The backbone embeds all three (:mod:`glocal.benchmarks.embeddings`); the trial is correct when
the two disrupted versions are the closest pair (the original is the odd one out). Chance is 1/3.

Definitions used here (the papers do not state all of them):

* embedding: pooled pre-logit features, or the pooled output of stage ``layer``, optionally with Top-K
  activation sparsity (:class:`~glocal.benchmarks.embeddings.Backbone`);
* distance: ``cosine`` (1 - cosine similarity, default) or ``euclidean``, computed in float64;
* ties: when several pairs share the smallest distance the trial earns ``1/m`` if the disrupted pair is among
  the ``m`` tied pairs (the expected score of breaking the tie at random); exact comparison, no tolerance;
* accuracy: mean credit over trials, with a seeded percentile bootstrap 95% interval over trials;
* shortcut controls: the local-only observers of :mod:`.texture_observers` (``pixel_histogram``,
  ``local_patches``) scored on the same trials by euclidean distance. On a set that really isolates global
  structure both sit near chance; a report lists in ``shortcut_flags`` any control whose 95% interval lies
  above 1/3.

Random weights are refused (a random network's "structure sensitivity" means nothing); ``allow_random=True``
exists for tests and such results carry ``weights: random`` so they are never published.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.benchmarks.distributed import Shard
from glocal.benchmarks.embeddings import Backbone, EmbeddingError, check_topk
from glocal.benchmarks.metrics.texture_observers import OBSERVERS
from glocal.progress import track

CHANCE = 1.0 / 3.0
DISTANCES = ("cosine", "euclidean")
PAIRS = ((1, 2), (0, 1), (0, 2))  # index 0 is the disrupted pair (a, b); the original is item 0
DEFAULT_RESAMPLES = 2000


class StructureError(ValueError):
    """Bad input to the structure-sensitivity evaluator (one line)."""


class RandomWeightsError(StructureError):
    """The backbone has random weights: its structure sensitivity is meaningless."""


# ----------------------------------------------------------------------------------------------------------
# Odd-one-out decision and statistics


def pairwise_distances(emb: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distances (T, 3) of each triplet's pairs in the order (a-b, orig-a, orig-b) from embeddings (T, 3, D)."""
    if distance not in DISTANCES:
        raise StructureError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")
    if emb.ndim != 3 or emb.shape[1] != 3:
        raise StructureError(f"triplet embeddings must have shape (trials, 3, dim), got {tuple(emb.shape)}")
    e = emb.detach().to(torch.float64).flatten(2)
    if distance == "cosine":
        e = F.normalize(e, dim=-1, eps=1e-12)
    out = []
    for i, j in PAIRS:
        if distance == "cosine":
            out.append(1.0 - (e[:, i] * e[:, j]).sum(-1))
        else:
            out.append((e[:, i] - e[:, j]).norm(dim=-1))
    return torch.stack(out, dim=1)


def odd_one_out_credit(dist: torch.Tensor) -> torch.Tensor:
    """Per-trial credit from pair distances (T, 3) ordered (a-b, orig-a, orig-b): 1 when a-b is the unique
    closest pair, 1/m when it ties with m-1 others for the minimum, else 0."""
    low = dist.min(dim=1, keepdim=True).values
    tied = dist == low
    return tied[:, 0].to(torch.float64) / tied.sum(dim=1).to(torch.float64)


def bootstrap_ci(credits: Sequence[float] | np.ndarray | torch.Tensor, *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean credit (trials resampled with replacement, seeded)."""
    x = np.asarray(credits.cpu() if isinstance(credits, torch.Tensor) else credits, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise StructureError("bootstrap needs a non-empty 1-d sequence of trial credits")
    if resamples < 1:
        raise StructureError(f"bootstrap resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # chunks keep memory at 256 x n
        stop = min(resamples, start + 256)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(credits: torch.Tensor | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0) -> dict[str, Any]:
    """Accuracy, trial count, 95% bootstrap interval and chance for a vector of trial credits."""
    x = np.asarray(credits.cpu() if isinstance(credits, torch.Tensor) else credits, dtype=np.float64)
    lo, hi = bootstrap_ci(x, resamples=resamples, seed=seed)
    return {"accuracy": float(x.mean()), "n_trials": int(x.size), "ci95": [lo, hi], "chance": CHANCE}


def score_observer(triplets: Sequence[Sequence[Any]] | Any, features: Callable[[Any], np.ndarray]) -> torch.Tensor:
    """Per-trial credits of a local-only observer (euclidean distance between its embeddings)."""
    emb = torch.from_numpy(np.stack([np.stack([features(im) for im in t]) for t in triplets]))
    return odd_one_out_credit(pairwise_distances(emb, "euclidean"))


# ----------------------------------------------------------------------------------------------------------
# Evaluation


class _Trials(torch.utils.data.Dataset):
    """Triplets -> (3, C, H, W) model inputs and the local-only observers' embeddings."""

    def __init__(self, triplets: Any, transform: Callable, baselines: Sequence[str], n: int) -> None:
        self.triplets, self.transform, self.baselines, self.n = triplets, transform, tuple(baselines), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = [im.convert("RGB") for im in self.triplets[i]]
        x = torch.stack([self.transform(im) for im in images])
        base = {b: torch.from_numpy(np.stack([OBSERVERS[b](im) for im in images])) for b in self.baselines}
        return x, base


def _embedding_errors_as_structure_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The evaluator raises StructureError for every bad input, the backbone's included."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbeddingError as e:
            raise StructureError(str(e)) from e

    return wrapper


@_embedding_errors_as_structure_errors
def evaluate_structure(backbone: str | nn.Module | Backbone, dataset: Any, *, distance: str = "cosine",
                       layer: int | str = "pooled", topk: float | None = None, batch_size: int = 16,
                       device: str | torch.device | None = None, allow_random: bool = False, progress: bool = True,
                       weights: str | os.PathLike | None = None, image_size: int | None = None,
                       model_kwargs: dict[str, Any] | None = None, baselines: bool = True, workers: int = 0,
                       max_trials: int | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       return_trials: bool = False, shard: Shard | None = None) -> dict[str, Any]:
    """Odd-one-out structure sensitivity of ``backbone`` on a triplet ``dataset`` (a path or a loaded set).

    Returns accuracy, n_trials, ci95, chance, the settings, the weights status, and the local-only baselines
    (``pixel_histogram``, ``local_patches``) scored on the same trials; ``shortcut_flags`` lists baselines
    whose 95% interval lies above chance. ``return_trials`` adds per-trial distances and credits. Under torchrun
    (``shard``) each rank embeds its trials and the per-trial rows are gathered in trial order."""
    from glocal.datasets.triplets import TripletSet, load_triplets

    if distance not in DISTANCES:
        raise StructureError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")
    layer = _check_layer(layer)
    topk = check_topk(topk)
    if batch_size < 1:
        raise StructureError(f"batch_size must be positive, got {batch_size}")
    bb = Backbone.create(backbone, weights=weights, image_size=image_size, model_kwargs=model_kwargs)
    if bb.weights == "random" and not allow_random:
        raise RandomWeightsError(f"{bb.name} has random weights: structure sensitivity is only meaningful for "
                                 "trained weights (pass pretrained weights; allow_random=True is for tests)")
    data = dataset if isinstance(dataset, TripletSet) else load_triplets(dataset)
    n = len(data) if max_trials is None else min(len(data), int(max_trials))
    if n < 1:
        raise StructureError(f"no trials to score in {data.path}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bb.model.to(dev)
    names = tuple(OBSERVERS) if baselines else ()
    shard = shard or Shard()
    mine = shard.indices(n)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(_Trials(data, bb.preprocess, names, n), mine),
                                         batch_size=batch_size, num_workers=workers, shuffle=False)
    rows: list[tuple[int, tuple[torch.Tensor, dict[str, torch.Tensor]]]] = []
    order = iter(mine)
    for x, base in track(loader, total=len(loader), description=f"{bb.name} on {data.name}", enabled=progress):
        b = x.shape[0]
        emb = bb.embed(x.flatten(0, 1).to(dev), layer=layer, topk=topk).view(b, 3, -1)
        dist = pairwise_distances(emb.cpu(), distance)
        base_c = {name: odd_one_out_credit(pairwise_distances(base[name], "euclidean")) for name in names}
        rows.extend((next(order), (dist[j], {k: v[j] for k, v in base_c.items()})) for j in range(b))
    gathered = shard.gather(rows)
    d = torch.stack([r[0] for r in gathered])
    base_credits = {name: [torch.stack([r[1][name] for r in gathered])] for name in names}
    credits = odd_one_out_credit(d)
    result: dict[str, Any] = summarize(credits, resamples=resamples, seed=seed)
    result.update({"distance": distance, "layer": layer, "topk": topk, "tie_rule": "1/m credit for m tied pairs",
                   "bootstrap": {"resamples": resamples, "seed": seed, "method": "percentile"},
                   "weights": bb.weights, "backbone": {"name": bb.name, "kind": bb.kind, "weights_id": bb.weights_id,
                                                       "preprocessing": bb.preprocessing},
                   "dataset": data.describe(n)})
    result["baselines"] = {name: summarize(torch.cat(c), resamples=resamples, seed=seed)
                           for name, c in base_credits.items()}
    result["shortcut_flags"] = [k for k, v in result["baselines"].items() if v["ci95"][0] > CHANCE + 1e-9]
    if return_trials:
        result["trials"] = [{"id": data.ids[i], "d_ab": float(d[i, 0]), "d_oa": float(d[i, 1]),
                             "d_ob": float(d[i, 2]), "credit": float(credits[i])} for i in range(n)]
    return result


def _check_layer(layer: int | str) -> int | str:
    if layer == "pooled":
        return layer
    try:
        return int(layer)
    except (TypeError, ValueError) as e:
        raise StructureError(f"layer must be 'pooled' or a stage index, got {layer!r}") from e
