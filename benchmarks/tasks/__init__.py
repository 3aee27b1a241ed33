"""Task adapters: what input a model of a task takes, which resolutions it allows, and how datasets score it.

A :class:`Task` describes the model's input for the latency/memory passes (``input_shape``), validates
resolutions, and names a default dataset. Dataset evaluators (``--dataset NAME=PATH``) register with
:func:`register_evaluator` for the tasks they apply to; they return a dict of metrics that goes into the
record's ``metrics`` (for example ``top1``, ``psnr``, ``structure_sensitivity``).
Every module in this package is imported on first use, so a new task or evaluator is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class TaskError(ValueError):
    """Bad input for a task: a resolution it cannot take, an unknown or missing dataset (one line)."""


@dataclass(frozen=True)
class DatasetSpec:
    """``--dataset NAME[=PATH]``: a dataset name, an optional path, and free options (``key=value``)."""

    name: str
    path: Path | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """``NAME[=PATH][,key=value ...]``, e.g. ``8kdehaze=/data/8k,level=2,size=1024`` or ``builtin-sr,limit=2``."""
        head, *extras = text.split(",")
        name, _, path = head.partition("=")
        name = name.strip().lower()
        if not name:
            raise TaskError(f"bad --dataset {text!r}: expected NAME, NAME=PATH or NAME=PATH,key=value")
        options: dict[str, str] = {}
        for item in extras:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise TaskError(f"bad --dataset option {item!r} in {text!r}: expected key=value")
            options[key.strip()] = value.strip()
        return cls(name=name, path=Path(path).expanduser() if path else None, options=options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path) if self.path else None, **self.options}


@dataclass
class EvalContext:
    """Where and how an evaluator runs the model."""

    device: torch.device
    dtype: torch.dtype = torch.float32
    batch_size: int = 32
    progress: bool = True
    workers: int = 2
    resolution: int | None = None
    channels_last: bool = False


class Task(ABC):
    """One task of the zoo (``classification``, ``dehazing``, ``super_resolution``, ...)."""

    name: str = ""
    throughput_unit: str = "img/s"

    @abstractmethod
    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...]:
        """Per-sample input shape (C, H, W) of the model at this resolution."""

    def default_resolution(self, card: Any, variant: Any) -> int:
        if variant.resolutions:
            return variant.resolutions[0]
        return int(variant.preprocessing.input_size[-1])

    def check_resolution(self, card: Any, variant: Any, resolution: int) -> None:
        """Raise :class:`TaskError` naming the allowed sizes when ``resolution`` cannot be run."""
        m = variant.resolution_multiple
        if resolution <= 0 or resolution % m:
            raise TaskError(f"{variant.name} cannot run at {resolution}: sizes must be positive multiples of {m} "
                            f"(e.g. {', '.join(str(m * k) for k in _nearby(resolution, m))})")

    def output_pixels(self, card: Any, variant: Any, resolution: int) -> int | None:
        """Pixels of one output image (restoration tasks report latency and memory per output megapixel)."""
        return None

    def default_dataset(self, card: Any, variant: Any) -> DatasetSpec | None:
        """A dataset scored when the user names none (restoration has a small built-in set)."""
        return None

    def make_input(self, card: Any, variant: Any, batch: int, resolution: int, device: torch.device,
                   dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((batch, *self.input_shape(card, variant, resolution)), generator=g)
        return x.to(device=device, dtype=dtype)


def _nearby(resolution: int, m: int) -> list[int]:
    k = max(1, round(resolution / m))
    return sorted({max(1, k - 1), k, k + 1})


@dataclass
class EvalResult:
    """What an evaluator returns: metrics for the record, and what was scored (name, path, num_samples,
    ``builtin`` when generated at run time, anything else that identifies the data)."""

    metrics: dict[str, Any]
    dataset: dict[str, Any]


Evaluator = Callable[[torch.nn.Module, Any, Any, DatasetSpec, EvalContext], EvalResult]


@dataclass(frozen=True)
class EvaluatorEntry:
    name: str
    tasks: tuple[str, ...]
    fn: Evaluator
    needs_pretrained: bool = True  # random weights never produce accuracy
    description: str = ""


_TASKS: dict[str, Task] = {}
_EVALUATORS: dict[str, EvaluatorEntry] = {}
_LOADED = False


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def register_evaluator(name: str, tasks: tuple[str, ...], *, needs_pretrained: bool = True,
                       description: str = "") -> Callable[[Evaluator], Evaluator]:
    """Decorator: ``@register_evaluator("imagenet", ("classification",))`` on ``fn(model, card, variant, spec, ctx)``
    returning an :class:`EvalResult`."""

    def deco(fn: Evaluator) -> Evaluator:
        _EVALUATORS[name] = EvaluatorEntry(name, tasks, fn, needs_pretrained, description or (fn.__doc__ or "").strip())
        return fn

    return deco


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")


def get_task(name: str) -> Task:
    _load()
    if name not in _TASKS:
        raise TaskError(f"no harness task {name!r} (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


def get_evaluator(spec: DatasetSpec, task: str) -> EvaluatorEntry:
    _load()
    entry = _EVALUATORS.get(spec.name)
    if entry is None:
        raise TaskError(f"unknown dataset {spec.name!r} (known: {', '.join(sorted(_EVALUATORS))})")
    if task not in entry.tasks:
        raise TaskError(f"dataset {spec.name!r} does not apply to {task} models (it scores {', '.join(entry.tasks)})")
    return entry


def evaluators() -> dict[str, EvaluatorEntry]:
    _load()
    return dict(_EVALUATORS)
