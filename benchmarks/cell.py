"""One measurement cell, run in a fresh process: ``python -m glocal.benchmarks.cell SPEC.json OUT.json``.

The cell builds the model, measures memory (its own pass), latency, compute, the reduced-precision
error against fp32, scores datasets when the weights are pretrained, and writes one record to OUT
atomically. A crash or an out-of-memory here cannot touch the other cells or their memory peaks.
Progress goes to stderr as ``@@glocal`` lines (:mod:`glocal.progress`) that the parent draws.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from glocal.progress import emit_iter, emit_stage

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class CellSpec:
    """Everything that defines a measurement cell (and its record's settings)."""

    model: str
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 1
    resolution: int | None = None
    weights: str | None = None
    task: str | None = None  # a task other than the card's own (e.g. detection on a classification backbone)
    method: dict[str, Any] | None = None  # {name, params} from glocal.zoo.methods.parse_method; None: baseline
    task_options: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False
    compile: str | None = None
    cuda_graphs: bool = False  # capture the forward once and replay it in the latency pass (static shapes)
    tf32: bool = False
    cudnn_benchmark: bool = False
    threads: int | None = None
    rule: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    eval_batch_size: int = 32
    workers: int = 2
    measure: bool = True
    timeout: float | None = None  # seconds; a cell past it is recorded as ``timeout``
    run_id: str | None = None
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text or \
        "can't allocate memory" in text or "cannot allocate memory" in text


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    out, ref = out.float(), ref.float()
    return {"reference": "fp32", "max_abs_error": float((out - ref).abs().max()),
            "rel_error": float((out - ref).norm() / ref.norm().clamp_min(1e-12))}


def _first_tensor(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)):
        return _first_tensor(y[0])
    if isinstance(y, dict) or hasattr(y, "values"):
        return _first_tensor(next(iter(y.values())))
    raise TypeError(f"model output of type {type(y).__name__} holds no tensor")


def _to_float(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs with floating tensors cast to fp32 (the reference pass of the precision check)."""
    return {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}


@dataclass
class Cell:
    """A cell being measured: its spec, what it resolved to, and the record being filled in stage by stage."""

    spec: CellSpec
    card: Any
    variant: Any
    task: Any
    device: torch.device
    dtype: torch.dtype
    record: dict[str, Any]
    stage: str = "setup"
    weights_bytes: int = 0  # the placed model's tensors (the memory pass reports it)

    @property
    def notes(self) -> list[str]:
        return self.record["notes"]

    def enter(self, stage: str) -> None:
        self.stage = stage
        emit_stage(stage)


def resolve_cell(spec: CellSpec) -> tuple[Any, Any, Any, int]:
    """(card, variant, task adapter, resolution) of a cell: the one place a spec's defaults are resolved."""
    from glocal import zoo
    from glocal.benchmarks.tasks import get_task

    card, variant = zoo.resolve(spec.model)
    task = get_task(spec.task or card.task)
    return card, variant, task, spec.resolution or task.default_resolution(card, variant)


def setup(spec: CellSpec) -> Cell:
    """Resolve the cell, set the process-wide switches (threads, TF32, cuDNN), and start its record."""
    from glocal.benchmarks.environment import environment
    from glocal.record import cell_record, cell_settings

    device = torch.device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec.tf32
        torch.backends.cudnn.allow_tf32 = spec.tf32
        torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    card, variant, task, res = resolve_cell(spec)
    spec.resolution = res
    shape = task.input_shape(card, variant, res)
    settings = cell_settings(spec, res, [spec.batch_size, *shape] if shape else None, torch.get_num_threads())
    record = cell_record(spec, card, variant, task.name, settings, environment(device))
    return Cell(spec, card, variant, task, device, PRECISIONS[spec.precision], record)


def build(cell: Cell) -> torch.nn.Module:
    """Build the model (weights resolved by the zoo), apply the efficiency method, note random weights."""
    from glocal.benchmarks import memory
    from glocal.zoo.methods import apply_method

    spec = cell.spec
    if cell.device.type == "cuda":
        others = memory.foreign_gpu_processes(cell.device)
        if others:
            msg = f"other processes hold the GPU (pids {', '.join(map(str, others))}): timings may be disturbed"
            cell.notes.append(msg)
            print(f"WARNING: {msg}", file=sys.stderr)
    cell.enter("build")
    model = cell.task.build_model(cell.card, cell.variant, spec)
    info = model.glocal_weights
    cell.record["weights"] = info.to_dict()
    if info.is_random:
        cell.notes.append("random weights: quality metrics are not computed")
        if spec.weights != "random":  # found none: say so loudly (the parent shows WARNING lines)
            print(f"WARNING: {model.glocal_weights_message}", file=sys.stderr, flush=True)
    if spec.method is not None:
        cell.enter("method")
        model = apply_method(model, cell.card, cell.variant, spec.method)
        model.glocal_weights = info
    record_backends(cell, model)
    return model


def record_backends(cell: Cell, model: torch.nn.Module) -> None:
    """``settings.backends``: the kernels the model reports (after the passes: what ``auto`` chose by measuring)."""
    if callable(getattr(model, "glocal_backends", None)):
        cell.record["settings"]["backends"] = dict(model.glocal_backends())


def measure_compute(cell: Cell, model: torch.nn.Module) -> None:
    """Parameters, GMACs at batch 1 (and per output megapixel), and the task's and method's workload. Counted on the
    cell's device, after placing: a 12B-parameter transformer is not run on the CPU just to count."""
    from glocal.benchmarks import compute
    from glocal.zoo.methods import describe_method

    cell.enter("compute")
    c, spec = cell.task, cell.spec
    inputs = c.make_inputs(model, cell.card, cell.variant, spec, 1, cell.device, cell.dtype)
    macs = compute.count_macs(model, call=lambda: c.forward(model, inputs))
    cell.record["compute"] = {"params": compute.count_params(model), **macs}
    pixels = c.output_pixels(cell.card, cell.variant, spec.resolution)
    if pixels:
        cell.record["compute"]["gmacs_per_megapixel"] = macs["gmacs"] / (pixels / 1e6)
    workload = {**(c.workload(model, cell.card, cell.variant, spec) or {}), **describe_method(model, spec.method)}
    cell.record["workload"] = workload or None


def place(cell: Cell, model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Move the model to the device and precision (and memory format), and make the batch's inputs."""
    from glocal.benchmarks import memory

    cell.enter("load")
    spec = cell.spec
    model = model.to(device=cell.device, dtype=cell.dtype)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    cell.weights_bytes = memory.tensor_bytes(model)
    inputs = cell.task.make_inputs(model, cell.card, cell.variant, spec, spec.batch_size, cell.device, cell.dtype)
    return model, inputs


def compile_model(cell: Cell, model: torch.nn.Module,
                  inputs: dict[str, Any]) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """The module and forward the passes run: eager, or ``torch.compile``d (first call timed as compile time)."""
    runner = model
    if cell.spec.compile:
        cell.enter("compile")
        runner = torch.compile(model, mode=None if cell.spec.compile == "default" else cell.spec.compile)
        before = _cache_entries()
        t0 = time.perf_counter()
        with torch.inference_mode():
            cell.task.forward(runner, inputs)
        if cell.device.type == "cuda":
            torch.cuda.synchronize(cell.device)
        cell.record["compile_time_s"] = time.perf_counter() - t0
        cell.record["compile_cache"] = {"dir": _cache_dir(), "warm": _cache_entries() == before and before > 0}

    def forward() -> Any:
        with torch.inference_mode():
            return cell.task.forward(runner, inputs)

    if cell.spec.cuda_graphs:
        cell.enter("cuda graph capture")
        return runner, cuda_graph_replay(forward, cell.device)
    return runner, forward


def cuda_graph_replay(forward: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """Capture ``forward`` (fixed inputs, static shapes) in a CUDA graph after warm-up on a side stream, and return
    a replay that launches the whole forward at once: batch-1 latency without Python and launch overhead."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = forward()

    def replay() -> Any:
        graph.replay()
        return out

    return replay


def _cache_dir() -> str:
    """Inductor's compile cache (``TORCHINDUCTOR_CACHE_DIR``; keep it between runs for warm compiles)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return cache_dir()


def _cache_entries() -> int:
    import os

    return sum(len(files) for _, _, files in os.walk(_cache_dir()))


def measure_passes(cell: Cell, forward: Callable[[], Any]) -> None:
    """The memory pass, then the latency pass (per output megapixel where the task has one)."""
    from glocal.benchmarks import memory, timing

    spec, rec = cell.spec, cell.record
    pixels = cell.task.output_pixels(cell.card, cell.variant, spec.resolution)
    cell.enter("memory")
    forward()  # first call: lazy init, allocator growth, cuDNN autotune
    rec["memory"] = memory.measure_memory(forward, cell.device, cell.weights_bytes)
    if pixels:
        peak = rec["memory"].get("peak_allocated") or rec["memory"].get("cpu_peak_rss")
        rec["memory"]["peak_per_megapixel"] = peak / (spec.batch_size * pixels / 1e6)
    cell.enter("latency")
    stats, attempts = timed_with_retries(cell, forward)
    rec["latency"] = {**stats.to_dict(), "attempts": attempts, "noisy": stats.iqr_over_median > timing.IQR_WARN}
    if pixels:
        rec["latency"]["ms_per_megapixel"] = stats.median / (spec.batch_size * pixels / 1e6)
    cell.notes.extend(stats.warnings)


NOISE_RETRIES = 2  # extra latency passes for a cell whose spread stays above timing.IQR_WARN


def timed_with_retries(cell: Cell, forward: Callable[[], Any]) -> tuple[Any, int]:
    """The latency pass, repeated up to :data:`NOISE_RETRIES` times while IQR/median exceeds 10 %; the pass with the
    smallest spread is kept (and the record says how many were run, and whether it stayed noisy)."""
    from glocal.benchmarks import timing

    best, attempts = None, 0
    while attempts <= NOISE_RETRIES:
        stats = timing.measure(forward, batch=cell.spec.batch_size, rule=timing.StopRule(**cell.spec.rule),
                               device=cell.device, on_iter=emit_iter, unit=cell.task.throughput_unit)
        attempts += 1
        if best is None or stats.iqr_over_median < best.iqr_over_median:
            best = stats
        if best.iqr_over_median <= timing.IQR_WARN:
            break
    return best, attempts


def check_precision(cell: Cell, forward: Callable[[], Any], reference: torch.nn.Module,
                    inputs: dict[str, Any]) -> None:
    """A reduced-precision forward against the fp32 model on the same inputs (relative error recorded)."""
    cell.enter("precision check")
    with torch.inference_mode():
        out = _first_tensor(forward())
        ref = _first_tensor(cell.task.forward(reference.to(cell.device), _to_float(inputs)))
    cell.record["precision_check"] = _rel_error(out, ref)


def evaluate(cell: Cell, runner: torch.nn.Module) -> None:
    """Score each dataset of the cell (never with random weights when the evaluator needs pretrained ones)."""
    from glocal.benchmarks import distributed
    from glocal.benchmarks.tasks import DatasetSpec, EvalContext, get_evaluator

    spec, rec = cell.spec, cell.record
    shard = distributed.current()
    for text in spec.datasets:
        ds = DatasetSpec.parse(text)
        entry = get_evaluator(ds, cell.task.name)
        if entry.needs_pretrained and rec["weights"]["source"] == "random":
            cell.notes.append(f"{ds.name}: not scored, random weights never produce quality metrics")
            rec["dataset"] = {"name": ds.name, "path": str(ds.path) if ds.path else None, "num_samples": None}
            continue
        cell.enter(f"evaluate {ds.name}")
        ctx = EvalContext(device=cell.device, dtype=cell.dtype, batch_size=spec.eval_batch_size,
                          progress=shard.rank == 0, workers=spec.workers, resolution=spec.resolution,
                          channels_last=spec.channels_last, shard=shard)
        result = entry.fn(runner, cell.card, cell.variant, ds, ctx)
        rec["metrics"].update(result.metrics)
        rec["dataset"] = result.dataset
        if shard.world > 1:
            cell.notes.append(f"{ds.name}: sharded over {shard.world} processes (torchrun), per-sample results "
                              "gathered in sample order")


def run_cell(spec: CellSpec) -> dict[str, Any]:
    """Measure one cell and return its record (status ok, oom or error): build, compute, memory, latency,
    precision check, evaluation, each a function above."""
    cell = setup(spec)
    try:
        model = build(cell)
        reference = copy.deepcopy(model) if spec.precision != "fp32" and spec.measure else None
        model, inputs = place(cell, model)
        measure_compute(cell, model)
        runner, forward = compile_model(cell, model, inputs)
        if spec.measure:
            measure_passes(cell, forward)
            record_backends(cell, model)
            if reference is not None:
                check_precision(cell, forward, reference, inputs)
                del reference
        if spec.datasets:
            evaluate(cell, runner)
    except Exception as e:  # noqa: BLE001 - every failure becomes a record with one line
        cell.record["status"] = "oom" if _is_oom(e) else "error"
        cell.record["error"] = f"{cell.stage}: {_one_line(e)}"
        if cell.record["status"] == "error":
            cell.notes.append(traceback.format_exc(limit=3).strip().splitlines()[-1])
    return cell.record


def _exit_with_parent(workdir: Path) -> None:
    """End this cell (and remove its work folder) as soon as the process that started it is gone: a killed
    ``bench run`` leaves no measuring process and no temp folder behind."""
    import os
    import shutil
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != parent:
                shutil.rmtree(workdir, ignore_errors=True)
                os._exit(3)

    threading.Thread(target=watch, name="glocal-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    _exit_with_parent(spec_path.parent)
    spec = CellSpec(**json.loads(spec_path.read_text()))
    record = run_cell(spec)
    from glocal.benchmarks.results import write_atomic

    write_atomic(out_path, json.dumps(record, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
