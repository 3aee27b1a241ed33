"""One measurement cell, run in a fresh process: ``python -m glocal.benchmarks.cell SPEC.json OUT.json``.

The cell builds the model, measures memory (its own pass), latency, compute, the reduced-precision
error against fp32, scores datasets when the weights are pretrained, and writes one record to OUT
atomically. A crash or an out-of-memory here cannot touch the other cells or their memory peaks.
Progress goes to stderr as ``@@glocal`` lines that the parent turns into progress bars.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

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
    channels_last: bool = False
    compile: str | None = None
    tf32: bool = False
    cudnn_benchmark: bool = False
    threads: int | None = None
    rule: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    eval_batch_size: int = 32
    workers: int = 2
    measure: bool = True
    run_id: str | None = None
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def emit(kind: str, *parts: Any) -> None:
    """A progress line for the parent process."""
    print("@@glocal", kind, *parts, file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    out, ref = out.float(), ref.float()
    return {"reference": "fp32", "max_abs_error": float((out - ref).abs().max()),
            "rel_error": float((out - ref).norm() / ref.norm().clamp_min(1e-12))}


def _first_tensor(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)):
        return _first_tensor(y[0])
    if isinstance(y, dict):
        return _first_tensor(next(iter(y.values())))
    raise TypeError(f"model output of type {type(y).__name__} holds no tensor")


def run_cell(spec: CellSpec) -> dict[str, Any]:
    """Measure one cell and return its record (status ok, oom or error)."""
    from glocal import zoo
    from glocal.benchmarks import compute, memory, timing
    from glocal.benchmarks.environment import environment
    from glocal.benchmarks.results import new_record
    from glocal.benchmarks.tasks import DatasetSpec, EvalContext, get_evaluator, get_task

    device = torch.device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec.tf32
        torch.backends.cudnn.allow_tf32 = spec.tf32
        torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    dtype = PRECISIONS[spec.precision]
    card, variant = zoo.resolve(spec.model)
    task = get_task(card.task)
    res = spec.resolution or task.default_resolution(card, variant)
    input_shape = task.input_shape(card, variant, res)
    record = new_record(
        run_id=spec.run_id, command=spec.command, task=card.task,
        model={"family": card.family, "variant": variant.name, "display_name": card.display_name, "task": card.task},
        weights={"source": "random", "id": "random", "sha256": None, "layout": None},
        dataset=None,
        settings={"device": spec.device, "precision": spec.precision, "batch_size": spec.batch_size,
                  "resolution": res, "input_shape": [spec.batch_size, *input_shape],
                  "channels_last": spec.channels_last, "compile": spec.compile, "tf32": spec.tf32,
                  "cudnn_benchmark": spec.cudnn_benchmark, "threads": torch.get_num_threads(),
                  "weights_cast": "pure" if spec.precision != "fp32" else None,
                  "stop_rule": spec.rule, "backends": {}},
        environment=environment(device), latency=None, memory=None, compute=None, precision_check=None,
        compile_time_s=None, notes=list(spec.notes),
    )
    notes: list[str] = record["notes"]
    stage = "build"
    try:
        if device.type == "cuda":
            others = memory.foreign_gpu_processes(device)
            if others:
                msg = f"other processes hold the GPU (pids {', '.join(map(str, others))}): timings may be disturbed"
                notes.append(msg)
                print(f"WARNING: {msg}", file=sys.stderr)
        emit("stage", "build")
        build_kwargs = {"img_size": res} if variant.build_at_resolution else {}
        model = zoo.create_model(variant.name, weights=spec.weights, quiet=True, **build_kwargs)
        info = model.glocal_weights
        record["weights"] = info.to_dict()
        if info.is_random:
            notes.append("random weights: quality metrics are not computed")
            if spec.weights != "random":  # found none: say so loudly (the parent shows WARNING lines)
                print(f"WARNING: {model.glocal_weights_message}", file=sys.stderr, flush=True)
        if callable(getattr(model, "glocal_backends", None)):
            record["settings"]["backends"] = dict(model.glocal_backends())
        params = compute.count_params(model)

        stage = "compute"
        emit("stage", "compute")
        x1 = task.make_input(card, variant, 1, res, torch.device("cpu"), torch.float32)
        macs = compute.count_macs(model, x1)
        record["compute"] = {"params": params, **macs}
        pixels = task.output_pixels(card, variant, res)
        if pixels:
            record["compute"]["gmacs_per_megapixel"] = macs["gmacs"] / (pixels / 1e6)

        reference_model = copy.deepcopy(model) if spec.precision != "fp32" and spec.measure else None
        stage = "load"
        model = model.to(device=device, dtype=dtype)
        if spec.channels_last:
            model = model.to(memory_format=torch.channels_last)
        weights_bytes = memory.tensor_bytes(model)
        x = task.make_input(card, variant, spec.batch_size, res, device, dtype)
        if spec.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        runner = model
        if spec.compile:
            stage = "compile"
            emit("stage", "compile")
            runner = torch.compile(model, mode=None if spec.compile == "default" else spec.compile)
            t0 = time.perf_counter()
            with torch.inference_mode():
                runner(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record["compile_time_s"] = time.perf_counter() - t0

        def forward() -> Any:
            with torch.inference_mode():
                return runner(x)

        if spec.measure:
            stage = "memory"
            emit("stage", "memory")
            forward()  # first call: lazy init, allocator growth, cuDNN autotune
            record["memory"] = memory.measure_memory(forward, device, weights_bytes)
            if pixels:
                peak = record["memory"].get("peak_allocated") or record["memory"].get("cpu_peak_rss")
                record["memory"]["peak_per_megapixel"] = peak / (spec.batch_size * pixels / 1e6)

            stage = "latency"
            emit("stage", "latency")
            rule = timing.StopRule(**spec.rule)
            stats = timing.measure(forward, batch=spec.batch_size, rule=rule, device=device,
                                   on_iter=lambda n: emit("iter", n), unit=task.throughput_unit)
            record["latency"] = stats.to_dict()
            if pixels:
                record["latency"]["ms_per_megapixel"] = stats.median / (spec.batch_size * pixels / 1e6)
            notes.extend(stats.warnings)

            if reference_model is not None:
                stage = "precision check"
                emit("stage", "precision-check")
                with torch.inference_mode():
                    out = _first_tensor(forward())
                    ref = _first_tensor(reference_model.to(device)(x.float()))
                record["precision_check"] = _rel_error(out, ref)
                del reference_model

        if spec.datasets:
            for text in spec.datasets:
                ds = DatasetSpec.parse(text)
                entry = get_evaluator(ds, card.task)
                if entry.needs_pretrained and info.is_random:
                    notes.append(f"{ds.name}: not scored, random weights never produce quality metrics")
                    record["dataset"] = {"name": ds.name, "path": str(ds.path) if ds.path else None,
                                         "num_samples": None}
                    continue
                stage = f"evaluate {ds.name}"
                emit("stage", f"evaluate:{ds.name}")
                ctx = EvalContext(device=device, dtype=dtype, batch_size=spec.eval_batch_size, progress=True,
                                  workers=spec.workers, resolution=res, channels_last=spec.channels_last)
                result = entry.fn(runner, card, variant, ds, ctx)
                record["metrics"].update(result.metrics)
                record["dataset"] = result.dataset
    except Exception as e:  # noqa: BLE001 - every failure becomes a record with one line
        record["status"] = "oom" if _is_oom(e) else "error"
        record["error"] = f"{stage}: {_one_line(e)}"
        if record["status"] == "error":
            notes.append(traceback.format_exc(limit=3).strip().splitlines()[-1])
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = CellSpec(**json.loads(spec_path.read_text()))
    record = run_cell(spec)
    from glocal.benchmarks.results import write_atomic

    write_atomic(out_path, json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
