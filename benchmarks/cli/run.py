"""``bench run``: plan the cells of a request, run them through a launcher, store and print the records."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from glocal.benchmarks.cli import app, err, errors_as_one_line, fail, out, parse_list, parse_pairs
from glocal.benchmarks.results import can_create_in

MAX_BATCH, MAX_SIDE, MAX_FRAMES = 65_536, 65_536, 100_000  # beyond these a request is a typo, not a benchmark
STORE_HELP = "SQLite store (default: user data dir or $GLOCAL_STORE)"
STOP_RULE_LIMITS = {"warmup_iters": (0, 100_000), "warmup_s": (0, 3600.0), "min_iters": (1, 1_000_000),
                    "min_s": (0, 3600.0), "max_iters": (1, 10_000_000), "max_s": (0, 24 * 3600.0)}


def fmt(v: Any, digits: int = 2) -> str:
    """A number for a table cell ('-' when missing)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _method_label(r: dict[str, Any]) -> str:
    m = r["settings"].get("method")
    if not m:
        return "none"
    params = ",".join(f"{k}={v}" for k, v in sorted(m["params"].items()))
    return f"{m['name']}:{params}" if params else m["name"]


def _options_label(r: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((r["settings"].get("task_options") or {}).items())) or "-"


def _speedups(records: Sequence[dict[str, Any]], axis_keys: Sequence[str]) -> list[float | None]:
    """Each record's latency against the first record of its group (same precision, batch, resolution and
    swept options): the side-by-side ratio of ``--compare`` and ``--method`` runs (>1: faster)."""
    refs: dict[tuple, float] = {}
    out_: list[float | None] = []
    for r in records:
        st = r["settings"]
        opts = st.get("task_options") or {}
        key = (st["precision"], st["batch_size"], st["resolution"], tuple(str(opts.get(k)) for k in axis_keys))
        med = (r.get("latency") or {}).get("median")
        if key not in refs and med:
            refs[key] = med
        out_.append(refs[key] / med if med and key in refs else None)
    return out_


def render_records(records: list[dict[str, Any]], notes: list[str] | None = None,
                   axis_keys: Sequence[str] = ()) -> None:
    """A readable table of records (device and weights in the caption), then what was not measured and why."""
    devices = sorted({r["environment"]["device_name"] for r in records})
    weights = sorted({r["weights"]["id"] if r["weights"]["source"] != "random" else "random" for r in records})
    table = Table(title="glocal results", caption=f"device: {', '.join(devices)} | weights: {', '.join(weights)}",
                  header_style="bold")
    show_method = any(r["settings"].get("method") for r in records)
    show_options = any(r["settings"].get("task_options") for r in records)
    speedups = _speedups(records, axis_keys)
    show_speedup = sum(s is not None for s in speedups) > len({s for s in speedups if s == 1.0})
    show_workload = any(r.get("workload") for r in records)
    cols = ["model", *(["method"] if show_method else []), *(["options"] if show_options else []), "prec",
            "batch", "res", "status", "median ms", "p90 ms", "throughput", *(["x ref"] if show_speedup else []),
            "peak MiB", "params M", "GMACs", *(["workload"] if show_workload else []), "metrics"]
    for col in cols:
        left = col in ("model", "method", "options", "status", "workload", "metrics")
        table.add_column(col, justify="left" if left else "right")
    for r, speedup in zip(records, speedups, strict=True):
        row = _row(r, speedup, show_method, show_options, show_speedup)
        if show_workload:
            row.insert(-1, _workload_label(r))
        table.add_row(*row)
    out.print(table)
    lines = list(dict.fromkeys((notes or []) + [n for r in records for n in r.get("notes", [])]))
    if lines:
        out.print("[bold]Not measured / notes:[/]")
        for n in lines:
            out.print(f"  - {n}", highlight=False, markup=False)


WORKLOAD_SHOWN = 3  # the first few scalar workload entries (the rest are in the record)


def _workload_label(r: dict[str, Any]) -> str:
    """The first scalar entries of a record's workload (non-zero parameters, tokens, pair fraction ...)."""
    items = [(k, v) for k, v in (r.get("workload") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)][:WORKLOAD_SHOWN]
    return ", ".join(f"{k}={fmt(v, 3) if isinstance(v, float) else f'{v:,}'}" for k, v in items) or "-"


def _row(r: dict[str, Any], speedup: float | None, show_method: bool, show_options: bool,
         show_speedup: bool) -> list[str]:
    lat, mem, comp, st = r.get("latency") or {}, r.get("memory") or {}, r.get("compute") or {}, r["settings"]
    peak = mem.get("peak_allocated", mem.get("cpu_peak_rss"))
    metrics = [f"{k}={fmt(v)}" for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))]
    metrics += [f"{k}={fmt(v['accuracy'], 3)}" for k, v in (r.get("metrics") or {}).items()
                if isinstance(v, dict) and "accuracy" in v]
    thr = f"{fmt(lat.get('throughput'), 1)} {lat.get('throughput_unit', '')}" if lat else "-"
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"
    return [r["model"]["variant"], *([_method_label(r)] if show_method else []),
            *([_options_label(r)] if show_options else []), st["precision"], str(st["batch_size"]),
            str(st["resolution"]), status, fmt(lat.get("median")), fmt(lat.get("p90")), thr,
            *([f"{speedup:.2f}x" if speedup else "-"] if show_speedup else []), fmt(peak, 0),
            fmt(comp["params"] / 1e6 if comp.get("params") else None), fmt(comp.get("gmacs")),
            ", ".join(metrics) or "-"]


def _stop_rule(device: str, overrides: dict[str, float | int | None]) -> dict[str, Any] | None:
    """The timing stop rule: the device's default with the given overrides (finite, bounded, consistent)."""
    import math

    from glocal.benchmarks.runner import CPU_RULE, CUDA_RULE

    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return None
    for k, v in given.items():
        lo, hi = STOP_RULE_LIMITS[k]
        if not math.isfinite(v) or not lo <= v <= hi:
            flag = "--" + (k[:-2] + "_time" if k.endswith("_s") else k).replace("_", "-")
            fail(f"{flag} must be a finite number between {lo} and {hi:g}, got {v}")
    rule = dict(CUDA_RULE if device.startswith("cuda") else CPU_RULE)
    rule.update(given)
    rule["max_iters"] = max(rule["max_iters"], rule["min_iters"])
    rule["max_s"] = max(rule["max_s"], rule["min_s"])
    return rule


@app.command()  # long only in its option declarations: the body is a few lines (typer needs them in one place)
def run(
    model: Annotated[list[str], typer.Option("--model", "-m", help="family or variant, repeatable")],
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N")] = "cpu",
    precision: Annotated[list[str], typer.Option(help="fp32, bf16, fp16 (comma list)")] = ["fp32"],  # noqa: B006
    batch_size: Annotated[list[str] | None, typer.Option(help="e.g. 1,64 (CPU default 1, CUDA 1,64)")] = None,
    resolution: Annotated[list[str] | None, typer.Option(
        help="e.g. 224,384,512 for a scaling curve; videos: 480p,720p,1080p,4k")] = None,
    weights: Annotated[str | None, typer.Option(help="checkpoint PATH, 'random', or auto (default)")] = None,
    task: Annotated[str | None, typer.Option(help="run under another task than the model's (e.g. detection)")] = None,
    method: Annotated[list[str] | None, typer.Option(
        help="efficiency method NAME[:key=value,...] or none, repeatable: cells side by side")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="measure beside each cell: another model, or a task's alternative (e.g. dense)")] = None,
    frames: Annotated[list[str] | None, typer.Option(help="frame counts to sweep (video and multi-view tasks)")] = None,
    opt: Annotated[list[str] | None, typer.Option(help="task option key=value, repeatable (bench list tasks)")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="NAME=PATH, repeatable (imagenet=..., dist=...)")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels-last memory format")] = False,
    compile: Annotated[str | None, typer.Option(help="torch.compile mode: default, reduce-overhead, ...")] = None,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="replay a captured CUDA graph in the latency "
                                                                    "pass (static shapes; CUDA only)")] = False,
    tf32: Annotated[bool, typer.Option("--tf32", help="allow TF32 matmuls and convolutions (CUDA)")] = False,
    cudnn_benchmark: Annotated[bool, typer.Option("--cudnn-benchmark", help="cuDNN autotuning (CUDA)")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads", min=1, max=4096)] = None,
    warmup_iters: Annotated[int | None, typer.Option(help="warm-up iterations at least")] = None,
    warmup_time: Annotated[float | None, typer.Option(help="warm-up seconds at least")] = None,
    min_iters: Annotated[int | None, typer.Option(help="timed iterations at least")] = None,
    min_time: Annotated[float | None, typer.Option(help="timed seconds at least")] = None,
    max_iters: Annotated[int | None, typer.Option(help="timed iterations at most")] = None,
    max_time: Annotated[float | None, typer.Option(help="timed seconds at most (after min-iters)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per cell; a cell past it is recorded as timeout",
                                                  min=1, max=7 * 24 * 3600)] = None,
    eval_batch_size: Annotated[int, typer.Option(help="batch size of dataset evaluation", min=1)] = 32,
    workers: Annotated[int, typer.Option(help="data-loading workers", min=0, max=256)] = 2,
    store: Annotated[Path | None, typer.Option(help=STORE_HELP)] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="do not write records")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the records to a JSON file")] = None,
    eval_only: Annotated[bool, typer.Option(
        "--eval-only", help="score datasets only: no timing or memory pass (untimed cells may share a machine)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON")] = False,
) -> None:
    """Measure latency, throughput, memory and compute (and quality, given a dataset and pretrained weights)."""
    from glocal.benchmarks.results import ResultStore
    from glocal.benchmarks.runner import RunRequest, plan
    from glocal.benchmarks.tasks.generation import named_resolutions

    rule = _stop_rule(device, {"warmup_iters": warmup_iters, "warmup_s": warmup_time, "min_iters": min_iters,
                               "min_s": min_time, "max_iters": max_iters, "max_s": max_time})
    sweeps = {"frames": [str(f) for f in parse_list(frames, "--frames", int, MAX_FRAMES)]} if frames else {}
    req = RunRequest(
        models=model, device=device, precisions=parse_list(precision, "--precision") or ["fp32"],
        batch_sizes=parse_list(batch_size, "--batch-size", int, MAX_BATCH),
        resolutions=parse_list([named_resolutions(r) for r in resolution] if resolution else None, "--resolution",
                               int, MAX_SIDE),
        weights=weights, task=task, methods=list(method or []), task_options=parse_pairs(opt, "--opt"),
        sweeps=sweeps, compare=list(compare or []), channels_last=channels_last, compile=compile,
        cuda_graphs=cuda_graphs, tf32=tf32, cudnn_benchmark=cudnn_benchmark, threads=threads,
        datasets=list(dataset or []), eval_batch_size=eval_batch_size, workers=workers, rule=rule, timeout=timeout,
        measure=not eval_only,
    )
    from glocal.benchmarks.distributed import env_world

    if env_world()[1] > 1:
        run_sharded(req, None if no_store else ResultStore(store), as_json)
        return
    with errors_as_one_line():
        target = None if no_store else ResultStore(store)
        cells, notes = plan(req)
        if output is not None:
            check_output_path(output)
        if target is not None:
            target.check_writable()
        records = run_cells(cells, quiet=as_json, sink=target.append if target is not None else None)
    if output:
        from glocal.benchmarks.results import write_atomic

        with errors_as_one_line(OSError):
            write_atomic(output, json.dumps(records, indent=1, allow_nan=False))
    if as_json:
        sys.stdout.write(json.dumps(records, indent=1, allow_nan=False) + "\n")
    else:
        render_records(records, notes, axis_keys=sorted(sweeps))
        if target is not None:
            out.print(f"{len(records)} record(s) appended to {target.path}", highlight=False)
    if all(r["status"] != "ok" for r in records):
        raise typer.Exit(1)


def run_sharded(req: Any, target: Any, as_json: bool) -> None:
    """Under torchrun: every rank evaluates its share of each dataset in-process (no timing pass); rank 0 stores
    and prints the records, whose metrics equal one process's."""
    from glocal.benchmarks import distributed
    from glocal.benchmarks.cell import run_cell
    from glocal.benchmarks.runner import RunError, plan

    rank, world, local_rank = distributed.env_world()
    with errors_as_one_line():
        if not req.datasets:
            raise RunError(f"torchrun with {world} processes shards dataset evaluation: pass --dataset NAME=PATH")
        req.measure = False
        if req.device == "cuda":
            req.device = f"cuda:{local_rank}"
        cells, notes = plan(req)
        if target is not None and rank == 0:
            target.check_writable()
        distributed.init(req.device)
        records = []
        for cell in cells:
            record = run_cell(cell)
            if rank == 0 and target is not None:
                target.append([record])
            records.append(record)
    if rank != 0:
        return
    if as_json:
        sys.stdout.write(json.dumps(records, indent=1, allow_nan=False) + "\n")
    else:
        render_records(records, notes)


def check_output_path(path: Path, flag: str = "--output") -> None:
    """Refuse an output file that cannot be written (a folder, a missing or unwritable folder) before any work."""
    from glocal.benchmarks.runner import RunError

    if path.is_dir():
        raise RunError(f"{flag} {path} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RunError(f"{flag} {path}: folder {parent} does not exist")
    if not can_create_in(parent):
        raise RunError(f"{flag} {path}: cannot write in {parent}")


def run_cells(cells: list[Any], quiet: bool = False, sink: Any = None, launcher: Any = None) -> list[dict[str, Any]]:
    """Run cells through a launcher (default: local, one fresh subprocess after another), with a progress bar over
    cells and over each cell's work. Each record goes to ``sink`` (the store) as its cell ends, so an interrupted
    campaign keeps its finished cells."""
    from glocal.benchmarks.launchers import LocalLauncher
    from glocal.progress import apply_event, progress_bar

    launcher = launcher or LocalLauncher()
    records: dict[int, dict[str, Any]] = {}
    with progress_bar(console=err, disable=quiet) as bar:
        overall = bar.add_task("cells", total=len(cells))
        inner: dict[int, Any] = {}

        def label(i: int) -> str:
            c = cells[i]
            return f"{c.model} {c.device} {c.precision} bs{c.batch_size} {c.resolution or ''}".strip()

        def on_event(i: int, kind: str, args: list[str]) -> None:
            if i not in inner:
                inner[i] = bar.add_task(f"  {label(i)}: starting", total=None)
            if not apply_event(bar, inner[i], label(i), kind, args) and kind == "log" and args[0].startswith("WARNING"):
                err.print(args[0], markup=False, highlight=False)

        def on_record(i: int, record: dict[str, Any]) -> None:
            records[i] = record
            if sink is not None:
                sink([record])
            if i in inner:
                bar.remove_task(inner.pop(i))
            bar.advance(overall)

        launcher.run(cells, on_record, on_event)
    return [records[i] for i in sorted(records)]
