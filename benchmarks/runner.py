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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glocal.benchmarks.cell import PRECISIONS, CellSpec
from glocal.progress import parse_event

CPU_RULE = {"warmup_iters": 2, "warmup_s": 0.5, "min_iters": 10, "min_s": 2.0, "max_iters": 10_000, "max_s": 60.0}
CUDA_RULE = {"warmup_iters": 10, "warmup_s": 2.0, "min_iters": 50, "min_s": 5.0, "max_iters": 100_000, "max_s": 120.0}


class RunError(ValueError):
    """A request that cannot run (one line, non-zero exit, nothing written)."""


@dataclass
class RunRequest:
    """What ``bench run`` (or a sweep file) asks for; expands into the cross product of cells."""

    models: list[str]
    device: str = "cpu"
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batch_sizes: list[int] | None = None
    resolutions: list[int] | None = None
    weights: str | None = None
    task: str | None = None  # run the models under another task than their card's (e.g. detection)
    methods: list[str] = field(default_factory=list)  # --method texts; empty: no method axis
    task_options: dict[str, str] = field(default_factory=dict)  # --opt key=value (fixed)
    sweeps: dict[str, list[str]] = field(default_factory=dict)  # task options swept (--frames 8,32)
    compare: list[str] = field(default_factory=list)  # --compare VALUE: cells measured beside each cell
    channels_last: bool = False
    compile: str | None = None
    cuda_graphs: bool = False
    tf32: bool = False
    cudnn_benchmark: bool = False
    threads: int | None = None
    datasets: list[str] = field(default_factory=list)
    eval_batch_size: int = 32
    workers: int = 2
    rule: dict[str, Any] | None = None
    measure: bool = True
    timeout: float | None = None


def check_device(device: str, here: bool = True) -> torch.device:
    """The device a request names; ``here``: the cells run on this machine, so it must have that device (a sweep
    listed with ``--dry-run`` or sent to Ray/Slurm runs elsewhere: only the name is checked)."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise RunError(f"unknown device {device!r} (use cpu, cuda, cuda:N)") from e
    if dev.type == "cuda":
        if not here:
            return dev
        if not torch.cuda.is_available():
            raise RunError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RunError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type != "cpu":
        raise RunError(f"unsupported device {device!r} (use cpu, cuda, cuda:N)")
    elif dev.index not in (None, 0):
        raise RunError(f"device {device!r} does not exist (the CPU is 'cpu')")
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
    expected = model.state_dict()
    check_keys_and_shapes(expected, sd, origin=str(weights))  # the cell does the real strict load
    check_tensor_values(expected, sd, origin=str(weights))


def _is_model_folder(weights: str) -> bool:
    """A Hugging Face model folder (``config.json`` inside); any other folder is refused in one line."""
    path = Path(weights).expanduser()
    if not path.is_dir():
        return False
    if not (path / "config.json").is_file():
        raise RunError(f"--weights {path} is a folder without config.json: checkpoints are files; folders are "
                       "Hugging Face model folders")
    return True


def check_tensor_values(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], origin: str) -> None:
    """Garbage weights are refused, not scored: a floating-point tensor of the model must come as floating point
    (not int64 or bool), and every floating-point value must be finite."""
    from glocal.zoo.weights import CheckpointError

    for key, ref in expected.items():
        t = sd[key]
        if ref.is_floating_point() and not t.is_floating_point():
            raise CheckpointError(f"{origin}: {key} is {str(t.dtype).removeprefix('torch.')}; the model expects "
                                  "floating point")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{origin}: {key} holds NaN or infinite values")


def _check_methods(req: RunRequest) -> list[dict[str, Any] | None]:
    """Parse every ``--method`` (``none`` is the baseline); no ``--method`` means the baseline alone."""
    from glocal.zoo.methods import MethodError, parse_method

    try:
        parsed = [parse_method(m) for m in req.methods] or [None]
    except MethodError as e:
        raise RunError(str(e)) from None
    seen: list[Any] = []
    for m in parsed:
        if m in seen:
            raise RunError(f"--method {m['name'] if m else 'none'} is given twice with the same parameters")
        seen.append(m)
    return parsed


def _model_cells(name: str, req: RunRequest, methods: list[dict[str, Any] | None],
                 notes: list[str]) -> list[tuple[str, dict[str, Any] | None, dict[str, Any], list[str]]]:
    """(model, method, task options, datasets) groups for one ``--model``, its ``--compare`` partners included;
    everything is validated here, before any cell runs."""
    from glocal import zoo
    from glocal.benchmarks.tasks import TaskError, get_task

    card, variant = zoo.resolve(name)
    task = get_task(req.task or card.task)
    if not task.applies_to(card, variant):
        raise RunError(f"{variant.name} ({card.task}) cannot run as a {task.name} task")
    sweep_keys = sorted(req.sweeps)
    groups = []
    for values in itertools.product(*(req.sweeps[k] for k in sweep_keys)):
        given = {**req.task_options, **dict(zip(sweep_keys, values, strict=True))}
        options = task.check_options(card, variant, given)
        partners = [(variant.name, options)]
        for value in req.compare:
            for other, extra in task.compare(card, variant, value, options):
                o_card, o_variant = zoo.resolve(other)
                partners.append((o_variant.name, task.check_options(o_card, o_variant, {**given, **extra})))
        for model, opts in partners:
            for method in methods:
                if method is not None:
                    _check_method_applies(model, method)
                groups.append((model, method, opts, _datasets(model, req, task, notes)))
    if not groups:
        raise TaskError("nothing to run")
    return groups


def _check_method_applies(model: str, method: dict[str, Any]) -> None:
    from glocal import zoo
    from glocal.zoo.methods import get_method

    card, variant = zoo.resolve(model)
    if not get_method(method["name"]).applies_to(card, variant):
        raise RunError(f"method {method['name']} does not apply to {variant.name}")


def _datasets(model: str, req: RunRequest, task: Any, notes: list[str]) -> list[str]:
    """The datasets a model's first cell scores: the request's (checked), else the task's default."""
    from glocal import zoo
    from glocal.benchmarks.tasks import DatasetSpec, check_dataset, get_evaluator

    card, variant = zoo.resolve(model)
    for ds in (DatasetSpec.parse(d) for d in req.datasets):
        entry = get_evaluator(ds, task.name)
        if ds.path is not None and not ds.path.exists():
            raise RunError(f"dataset folder not found: {ds.path}")
        check_dataset(entry, card, variant, ds)
    if req.datasets:
        return list(req.datasets)
    default = task.default_dataset(card, variant)
    if default is not None:
        return [default.name + (f"={default.path}" if default.path else "")]
    notes.append(f"{variant.name}: accuracy not measured (no dataset; pass --dataset NAME=PATH)")
    return []


def plan(req: RunRequest, here: bool = True) -> tuple[list[CellSpec], list[str]]:
    """Validate the request and expand it into cells; also return notes on what is not measured. ``here``: the
    cells run on this machine (see :func:`check_device`)."""
    from glocal import zoo
    from glocal.benchmarks.tasks import get_task
    from glocal.zoo.weights import CheckpointError

    dev = check_device(req.device, here)
    if req.cuda_graphs and dev.type != "cuda":
        raise RunError("--cuda-graphs needs a CUDA device (--device cuda)")
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
    methods = _check_methods(req)
    cells: list[CellSpec] = []
    run_id = str(uuid.uuid4())
    for name in req.models:
        for model, method, options, datasets in _model_cells(name, req, methods, notes):
            card, variant = zoo.resolve(model)
            task = get_task(req.task or card.task)
            resolutions = req.resolutions or [task.default_resolution(card, variant)]
            for r in resolutions:
                task.check_resolution(card, variant, r)
            if req.weights not in (None, "random", "auto", "pretrained") and _is_model_folder(req.weights):
                pass  # a Hugging Face model folder (VLM hosts): its host loads it strictly in the cell
            elif req.weights not in (None, "random", "auto", "pretrained"):
                try:
                    for r in dict.fromkeys(resolutions):  # a checkpoint must fit at every requested size
                        check_weights(variant.name, req.weights, r)
                except CheckpointError as e:
                    raise RunError(str(e)) from e
            for precision, batch, res in itertools.product(req.precisions, batches, resolutions):
                first = batch == batches[0] and res == resolutions[0]
                cells.append(CellSpec(
                    model=variant.name, device=req.device, precision=precision, batch_size=batch,
                    resolution=res, weights=req.weights, task=req.task, method=method, task_options=options,
                    channels_last=req.channels_last, compile=req.compile, cuda_graphs=req.cuda_graphs, tf32=req.tf32,
                    cudnn_benchmark=req.cudnn_benchmark, threads=req.threads, rule=rule,
                    datasets=datasets if first else [], eval_batch_size=req.eval_batch_size, workers=req.workers,
                    measure=req.measure, timeout=req.timeout, run_id=run_id,
                ))
    for c in cells:
        c.command = reproduce_command(c)
    if dev.type == "cpu":
        notes.append("GPU memory (allocated/reserved/NVML) not measured on CPU: peak RSS instead")
    if not req.compile:
        notes.append("torch.compile not measured (pass --compile)")
    return cells, notes


RULE_FLAGS = {"warmup_iters": "--warmup-iters", "warmup_s": "--warmup-time", "min_iters": "--min-iters",
              "min_s": "--min-time", "max_iters": "--max-iters", "max_s": "--max-time"}


def _method_text(method: dict[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(method["params"].items()))
    return f"{method['name']}:{params}" if params else method["name"]


def reproduce_command(c: CellSpec) -> str:
    """The ``bench run`` line that measures exactly this cell: every setting that changes a measurement."""
    parts = ["bench", "run", "--model", c.model, "--device", c.device, "--precision", c.precision,
             "--batch-size", str(c.batch_size)]
    if c.resolution:
        parts += ["--resolution", str(c.resolution)]
    if c.weights and c.weights not in ("auto", "pretrained"):
        parts += ["--weights", c.weights]
    if c.task:
        parts += ["--task", c.task]
    if c.method is not None:
        parts += ["--method", _method_text(c.method)]
    for key, value in sorted(c.task_options.items()):
        parts += ["--opt", f"{key}={value}"]
    switches = {"--channels-last": c.channels_last, "--tf32": c.tf32, "--cudnn-benchmark": c.cudnn_benchmark,
                "--cuda-graphs": c.cuda_graphs}
    parts += [flag for flag, on in switches.items() if on]
    if c.compile:
        parts += ["--compile", c.compile]
    if c.threads:
        parts += ["--threads", str(c.threads)]
    for key, flag in RULE_FLAGS.items():
        if key in c.rule:
            parts += [flag, f"{c.rule[key]:g}" if isinstance(c.rule[key], float) else str(c.rule[key])]
    if c.timeout:
        parts += ["--timeout", f"{c.timeout:g}"]
    if not c.measure:
        parts.append("--eval-only")
    for d in c.datasets:
        parts += ["--dataset", d]
    return shlex.join(parts)


CELL_DIR_PREFIX = "glocal-cell-"


def remove_stale_cell_dirs(root: Path | None = None) -> int:
    """Remove the work folders of cells whose ``bench`` process died (killed with -9, say): the measurement
    they may hold was never stored and cannot be trusted to belong to a finished run. Returns how many."""
    removed = 0
    for d in Path(root or tempfile.gettempdir()).glob(f"{CELL_DIR_PREFIX}*-*"):
        pid = d.name[len(CELL_DIR_PREFIX):].split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_cell_subprocess(spec: CellSpec, on_event: Callable[[str, list[str]], None] | None = None) -> dict[str, Any]:
    """Run one cell in a fresh interpreter; a crash becomes an ``error`` (or ``oom``) record, a cell past its
    ``timeout`` is killed and recorded as ``timeout``."""
    with tempfile.TemporaryDirectory(prefix=f"{CELL_DIR_PREFIX}{os.getpid()}-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "record.json"
        spec_path.write_text(spec.to_json())
        env = {**os.environ, "GLOCAL_CELL": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "glocal.benchmarks.cell", str(spec_path), str(out_path)],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(spec.timeout, expire) if spec.timeout else None
        oom_kills = _oom_kills()
        if timer is not None:
            timer.start()
        try:
            tail = _read_events(proc, on_event)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:  # interrupted: the cell must not outlive its parent
                proc.kill()
                proc.wait()
        if code == 0 and out_path.exists():
            return json.loads(out_path.read_text())
        after = _oom_kills()
        oom_killed = None if oom_kills is None or after is None else after > oom_kills
        return crash_record(spec, code, tail, timed_out=expired.is_set(), oom_killed=oom_killed)


def _read_events(proc: subprocess.Popen, on_event: Callable[[str, list[str]], None] | None) -> list[str]:
    """Turn a cell's ``@@glocal`` stderr lines into events; return the last 20 other lines."""
    tail: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip("\n")
        event = parse_event(line)
        if event is not None:
            if on_event:
                on_event(*event)
        elif line.strip():
            tail = (tail + [line])[-20:]
            if on_event:
                on_event("log", [line])
    return tail


def _oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended in this cgroup (None where unknown)."""
    try:
        text = Path("/sys/fs/cgroup/memory.events").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def crash_record(spec: CellSpec, code: int, tail: Sequence[str], timed_out: bool = False,
                 oom_killed: bool | None = None, why: str | None = None) -> dict[str, Any]:
    """The record of a cell whose process died before writing its own (same settings as a finished one). A
    SIGKILL is ``oom`` only when the kernel counted an out-of-memory kill meanwhile; otherwise it is an error."""
    from glocal.benchmarks.cell import resolve_cell
    from glocal.benchmarks.environment import environment
    from glocal.record import cell_record, cell_settings

    card, variant, task, res = resolve_cell(spec)
    shape = task.input_shape(card, variant, res)
    killed = code < 0 and -code == signal.SIGKILL
    last = next((line for line in reversed(tail) if line.strip()), "")
    if why is not None:
        status = "error"
    elif timed_out:
        status, why = "timeout", f"past its time limit of {spec.timeout:g} s"
    elif killed and oom_killed:
        status, why = "oom", "killed by the kernel's out-of-memory killer"
    elif killed:
        status, why = "error", ("killed by SIGKILL" + (" (possibly the out-of-memory killer)" if oom_killed is None
                                                       else " (not by the out-of-memory killer)"))
    else:
        status, why = "error", f"process exited with code {code}"
    settings = cell_settings(spec, res, [spec.batch_size, *shape] if shape else None, spec.threads or 0)
    if not spec.threads:
        settings.pop("threads")
    record = cell_record(spec, card, variant, task.name, settings, environment(torch.device(spec.device)),
                         status=status, error=f"{why}{': ' + last if last and status == 'error' else ''}")
    record["notes"] = list(tail[-3:])
    return record
