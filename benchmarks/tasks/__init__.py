"""Task adapters: how the harness builds, feeds and describes a model of each task, and how datasets score it.

What a task *is* (title, input kind, primary metric, units) is specified once in :mod:`glocal.taskspec`; an
adapter here implements it for the harness, one file per task. A :class:`Task` builds the model for a cell,
makes its keyword inputs (``make_inputs``; the harness calls ``forward(model, inputs)``, by default
``model(**inputs)``), validates resolutions and task options (:class:`TaskOption`, e.g. ``frames`` or an
attention mode), describes the cell's workload for the record (token counts, attention FLOPs ...), expands
``--compare VALUE`` into extra cells, and names a default dataset. Dataset evaluators (``--dataset
NAME=PATH``) register with :func:`register_evaluator` for the tasks they apply to and return the record's
``metrics`` (for example ``top1``, ``psnr``, ``structure_sensitivity``). Every module in this package is
imported on first use, so a new task or evaluator is one new file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glocal.benchmarks.distributed import Shard
from glocal.taskspec import TASKS as TASK_SPECS
from glocal.taskspec import TaskSpec
from glocal.zoo.registry import import_submodules


class TaskError(ValueError):
    """Bad input for a task: a resolution it cannot take, an unknown or missing dataset (one line)."""


def positive_int(text: str) -> int:
    """A :class:`TaskOption` parser: a positive integer (``frames``, ``prompt`` ...)."""
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


@dataclass(frozen=True)
class TaskOption:
    """A task-specific setting (``--opt name=value``, or a sweep axis such as ``--frames``): how to parse it
    from text, its default (``None``: absent unless given), and a line of help."""

    parse: Callable[[str], Any]
    default: Any = None
    help: str = ""


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
    shard: Shard = field(default_factory=Shard)  # under torchrun: this rank's samples (see benchmarks.distributed)


class Task:
    """The harness adapter of one task of :data:`glocal.taskspec.TASKS` (``classification``, ``dehazing`` ...).

    The defaults fit single-image models: the input is one tensor of ``input_shape`` passed positionally.
    Tasks with structured inputs override :meth:`make_inputs` (and :meth:`forward` if the call differs).
    """

    name: str = ""
    options: dict[str, TaskOption] = {}

    @property
    def spec(self) -> TaskSpec:
        return TASK_SPECS[self.name]

    @property
    def throughput_unit(self) -> str:
        return self.spec.throughput_unit

    def applies_to(self, card: Any, variant: Any) -> bool:
        """Whether this task can run a model of this card (its own task; detection also takes backbones)."""
        return card.task == self.name

    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...] | None:
        """Per-sample input shape (C, H, W) of a single-tensor model at this resolution (None: structured)."""
        return None

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

    def check_options(self, card: Any, variant: Any, options: dict[str, Any]) -> dict[str, Any]:
        """Parse and validate task options (text from the command line, or values already parsed); fill in the
        defaults. Unknown names and bad values raise :class:`TaskError`."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise TaskError(f"task {self.name} has no option {', '.join(unknown)} (options: {known})")
        out: dict[str, Any] = {}
        for key, opt in self.options.items():
            if key in options:
                value = options[key]
                try:
                    out[key] = opt.parse(value) if isinstance(value, str) else value
                except (TypeError, ValueError) as e:
                    raise TaskError(f"bad value {value!r} for task option {key}: {e}") from None
            elif opt.default is not None:
                out[key] = opt.default
        return out

    def build_model(self, card: Any, variant: Any, cell: Any) -> torch.nn.Module:
        """The model a cell measures (weights resolved by the zoo; see ``glocal.zoo.create_model``)."""
        from glocal import zoo

        kwargs = {"img_size": cell.resolution} if variant.build_at_resolution else {}
        return zoo.create_model(variant.name, weights=cell.weights, quiet=True, **kwargs)

    def make_inputs(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any, batch: int,
                    device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
        """Keyword inputs of one forward pass (single-image tasks: ``{"x": images in [0, 1]}``)."""
        shape = self.input_shape(card, variant, cell.resolution)
        if shape is None:
            raise TaskError(f"task {self.name} has structured inputs but no make_inputs")
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((batch, *shape), generator=g).to(device=device, dtype=dtype)
        if cell.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"x": x}

    def forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        """One forward pass; single-tensor models take their input positionally."""
        if set(inputs) == {"x"}:
            return model(inputs["x"])
        return model(**inputs)

    def workload(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any) -> dict[str, Any] | None:
        """What the cell computes besides params and GMACs (record ``workload``): tokens, attention FLOPs ..."""
        return None

    def compare(self, card: Any, variant: Any, value: str,
                options: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``--compare VALUE``: the (model, task options) cells measured beside each cell of this model (whose
        checked task options are ``options``). By default VALUE names another registered model of the task."""
        from glocal import zoo

        other_card, other = zoo.resolve(value)
        if other_card.task != card.task:
            raise TaskError(f"cannot compare {variant.name} ({card.task}) with {other.name} ({other_card.task})")
        return [(other.name, {})]

    def output_pixels(self, card: Any, variant: Any, resolution: int) -> int | None:
        """Pixels of one output image (restoration tasks report latency and memory per output megapixel)."""
        return None

    def default_dataset(self, card: Any, variant: Any) -> DatasetSpec | None:
        """A dataset scored when the user names none (restoration has a small built-in set)."""
        return None


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
    # (card, variant, spec) -> the dataset the evaluator would score (indexable), or None; checks the options and
    # the folder's layout. Run before any cell, with the first item decoded (see check_dataset).
    open: Callable[[Any, Any, DatasetSpec], Any] | None = None


_TASKS: dict[str, Task] = {}
_EVALUATORS: dict[str, EvaluatorEntry] = {}
_LOADED = False


def register_task(task: Task) -> Task:
    """Register a task adapter; its name must be specified in :data:`glocal.taskspec.TASKS`."""
    if task.name not in TASK_SPECS:
        raise ValueError(f"task adapter {task.name!r} has no entry in glocal.taskspec.TASKS")
    _TASKS[task.name] = task
    return task


def register_evaluator(name: str, tasks: tuple[str, ...], *, needs_pretrained: bool = True, description: str = "",
                       open: Callable[[Any, Any, DatasetSpec], Any] | None = None) -> Callable[[Evaluator], Evaluator]:
    """Decorator: ``@register_evaluator("imagenet", ("classification",), open=open_fn)`` on
    ``fn(model, card, variant, spec, ctx)`` returning an :class:`EvalResult`. ``open(card, variant, spec)``
    validates the options and opens the dataset without a model, so bad input is refused before measuring."""

    def deco(fn: Evaluator) -> Evaluator:
        _EVALUATORS[name] = EvaluatorEntry(name, tasks, fn, needs_pretrained, description or (fn.__doc__ or "").strip(),
                                           open)
        return fn

    return deco


def check_dataset(entry: EvaluatorEntry, card: Any, variant: Any, spec: DatasetSpec) -> None:
    """Open a dataset as its evaluator would and decode its first item, before any cell runs: a missing or
    empty folder, a wrong layout, a bad option or an undecodable first image is one :class:`TaskError` line."""
    from glocal.datasets.registry import DatasetError

    if entry.open is None:
        return
    try:
        ds = entry.open(card, variant, spec)
        if ds is None:
            return
        if len(ds) == 0:
            raise TaskError(f"--dataset {spec.name}: no samples in {spec.path}")
        ds[0]
    except TaskError:
        raise
    except DatasetError as e:
        raise TaskError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - PIL and friends raise many kinds for a corrupt file
        raise TaskError(f"--dataset {spec.name}: cannot read the first item of {spec.path}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import_submodules(__name__, __path__)


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


def tasks() -> dict[str, Task]:
    """Every registered task adapter by name."""
    _load()
    return dict(_TASKS)


def evaluators() -> dict[str, EvaluatorEntry]:
    _load()
    return dict(_EVALUATORS)
