"""Plan measurement cells, validate the whole request up front, run each cell in a fresh subprocess.

Validation happens before anything runs: an unknown model, a bad resolution, an unknown device, a
missing dataset folder or an unreadable / mismatched checkpoint stops the run with one line and
nothing is written. Cells then run one at a time (never two timed cells on one device), each in its
own process, so a crash or an OOM is recorded for that cell and the others go on.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glocal.benchmarks.cell import PRECISIONS, CellSpec

CPU_RULE = {"warmup_iters": 2, "warmup_s": 0.5, "min_iters": 10, "min_s": 2.0, "max_iters": 10_000, "max_s": 60.0}
CUDA_RULE = {"warmup_iters": 10, "warmup_s": 2.0, "min_iters": 50, "min_s": 5.0, "max_iters": 100_000, "max_s": 120.0}


class RunError(ValueError):
    """A request that cannot run (one line, non-zero exit, nothing written)."""


@dataclass
class RunRequest:
    """What ``bench run`` was asked for; expands into the cross product of cells."""

    models: list[str]
    device: str = "cpu"
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batch_sizes: list[int] | None = None
    resolutions: list[int] | None = None
    weights: str | None = None
    channels_last: bool = False
    compile: str | None = None
    tf32: bool = False
    cudnn_benchmark: bool = False
    threads: int | None = None
    datasets: list[str] = field(default_factory=list)
    eval_batch_size: int = 32
    workers: int = 2
    rule: dict[str, Any] | None = None
    measure: bool = True


def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise RunError(f"unknown device {device!r} (use cpu, cuda, cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RunError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type != "cpu":
        raise RunError(f"unsupported device {device!r} (use cpu, cuda, cuda:N)")
    return dev


def check_weights(variant_name: str, weights: str, resolution: int) -> None:
    """Read the checkpoint and compare it with a meta-device model: keys, shapes, known layouts."""
    from glocal import zoo
    from glocal.zoo.weights import check_keys_and_shapes, read_checkpoint, to_native_layout

    card, variant = zoo.resolve(variant_name)
    sd = read_checkpoint(weights)
    kwargs = {"img_size": resolution} if variant.build_at_resolution else {}
    with torch.device("meta"):
        model = variant.build(**kwargs)
    sd, _ = to_native_layout(card, sd, origin=str(weights))
    check_keys_and_shapes(model.state_dict(), sd, origin=str(weights))  # the cell does the real strict load


def plan(req: RunRequest) -> tuple[list[CellSpec], list[str]]:
    """Validate the request and expand it into cells; also return notes on what is not measured."""
    from glocal import zoo
    from glocal.benchmarks.tasks import DatasetSpec, get_evaluator, get_task
    from glocal.zoo.weights import CheckpointError

    dev = check_device(req.device)
    for p in req.precisions:
        if p not in PRECISIONS:
            raise RunError(f"unknown precision {p!r} (fp32, bf16, fp16)")
    if req.batch_sizes is not None and any(b < 1 for b in req.batch_sizes):
        raise RunError("batch sizes must be positive")
    notes: list[str] = []
    batches = req.batch_sizes or ([1] if dev.type == "cpu" else [1, 64])
    if req.batch_sizes is None and dev.type == "cpu":
        notes.append("batch 64 not measured: the CPU default is batch 1 (pass --batch-size 1,64)")
    if "fp32" not in req.precisions:
        notes.append("fp32 not measured: reduced precisions are still checked against an fp32 reference")
    rule = dict(req.rule or (CUDA_RULE if dev.type == "cuda" else CPU_RULE))
    specs = [DatasetSpec.parse(d) for d in req.datasets]
    cells: list[CellSpec] = []
    run_id = str(uuid.uuid4())
    for name in req.models:
        card, variant = zoo.resolve(name)
        task = get_task(card.task)
        resolutions = req.resolutions or [task.default_resolution(card, variant)]
        for r in resolutions:
            task.check_resolution(card, variant, r)
        for ds in specs:
            get_evaluator(ds, card.task)
            if ds.path is not None and not ds.path.exists():
                raise RunError(f"dataset folder not found: {ds.path}")
        datasets = list(req.datasets)
        if not datasets:
            default = task.default_dataset(card, variant)
            if default is not None:
                datasets = [default.name + (f"={default.path}" if default.path else "")]
            else:
                notes.append(f"{variant.name}: accuracy not measured (no dataset; pass --dataset NAME=PATH)")
        if req.weights not in (None, "random", "auto", "pretrained"):
            try:
                check_weights(variant.name, req.weights, resolutions[0])
            except CheckpointError as e:
                raise RunError(str(e)) from e
        for precision, batch, res in itertools.product(req.precisions, batches, resolutions):
            first = batch == batches[0] and res == resolutions[0]
            cells.append(CellSpec(
                model=variant.name, device=req.device, precision=precision, batch_size=batch, resolution=res,
                weights=req.weights, channels_last=req.channels_last, compile=req.compile, tf32=req.tf32,
                cudnn_benchmark=req.cudnn_benchmark, threads=req.threads, rule=rule,
                datasets=datasets if first else [], eval_batch_size=req.eval_batch_size, workers=req.workers,
                measure=req.measure, run_id=run_id,
            ))
    for c in cells:
        c.command = reproduce_command(c)
    if dev.type == "cpu":
        notes.append("GPU memory (allocated/reserved/NVML) not measured on CPU: peak RSS instead")
    if not req.compile:
        notes.append("torch.compile not measured (pass --compile)")
    return cells, notes


def reproduce_command(c: CellSpec) -> str:
    """The ``bench run`` line that measures exactly this cell."""
    parts = ["bench", "run", "--model", c.model, "--device", c.device, "--precision", c.precision,
             "--batch-size", str(c.batch_size)]
    if c.resolution:
        parts += ["--resolution", str(c.resolution)]
    if c.weights and c.weights not in ("auto", "pretrained"):
        parts += ["--weights", c.weights]
    if c.channels_last:
        parts.append("--channels-last")
    if c.compile:
        parts += ["--compile", c.compile]
    if c.tf32:
        parts.append("--tf32")
    if c.cudnn_benchmark:
        parts.append("--cudnn-benchmark")
    for d in c.datasets:
        parts += ["--dataset", d]
    return shlex.join(parts)


def run_cell_subprocess(spec: CellSpec, on_event: Callable[[str, list[str]], None] | None = None,
                        timeout: float | None = None) -> dict[str, Any]:
    """Run one cell in a fresh interpreter; a crash becomes an ``error`` (or ``oom``) record."""
    with tempfile.TemporaryDirectory(prefix="glocal-cell-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "record.json"
        spec_path.write_text(spec.to_json())
        env = {**os.environ, "GLOCAL_CELL": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "glocal.benchmarks.cell", str(spec_path), str(out_path)],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        tail: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            if line.startswith("@@glocal "):
                kind, *args = line.split()[1:]
                if on_event:
                    on_event(kind, args)
            elif line.strip():
                tail = (tail + [line])[-20:]
                if on_event:
                    on_event("log", [line])
        code = proc.wait(timeout=timeout)
        if code == 0 and out_path.exists():
            return json.loads(out_path.read_text())
        return crash_record(spec, code, tail)


def crash_record(spec: CellSpec, code: int, tail: Sequence[str]) -> dict[str, Any]:
    """The record of a cell whose process died before writing its own."""
    from glocal import zoo
    from glocal.benchmarks.environment import environment
    from glocal.benchmarks.results import new_record

    card, variant = zoo.resolve(spec.model)
    killed = code < 0 and -code == signal.SIGKILL
    status = "oom" if killed else "error"
    last = next((line for line in reversed(tail) if line.strip()), "")
    why = "killed by SIGKILL (likely out of memory)" if killed else f"process exited with code {code}"
    return new_record(
        run_id=spec.run_id, command=spec.command, task=card.task, status=status,
        error=f"{why}{': ' + last if last else ''}",
        model={"family": card.family, "variant": variant.name, "display_name": card.display_name, "task": card.task},
        weights={"source": "random" if spec.weights in (None, "random") else "file",
                 "id": spec.weights or "random", "sha256": None, "layout": None},
        dataset=None,
        settings={"device": spec.device, "precision": spec.precision, "batch_size": spec.batch_size,
                  "resolution": spec.resolution or 0, "channels_last": spec.channels_last,
                  "compile": spec.compile, "tf32": spec.tf32, "cudnn_benchmark": spec.cudnn_benchmark,
                  "stop_rule": spec.rule},
        environment=environment(torch.device(spec.device)),
        latency=None, memory=None, compute=None, notes=list(tail[-3:]),
    )

