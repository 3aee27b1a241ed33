"""The ``bench`` command (also ``python -m glocal``).

bench run --model gcvit                       measure a model; records go to the store
bench list models|datasets|tasks|generators   what is registered
bench results ls|show|export                  read the store
bench datasets make NAME --from DIR --out DIR generate a dataset from your own images
bench leaderboard build|serve                 the static leaderboard site
bench microbench NAME                         kernel-level benchmarks (neighborhood attention, ...)

Every error is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="glocal: benchmark suite and model zoo for vision models mixing global and local context.")
list_app = typer.Typer(no_args_is_help=True, help="List registered models, datasets, tasks and generators.")
results_app = typer.Typer(no_args_is_help=True, help="Read the result store.")
datasets_app = typer.Typer(no_args_is_help=True, help="Generate and inspect datasets.")
app.add_typer(list_app, name="list")
app.add_typer(results_app, name="results")
app.add_typer(datasets_app, name="datasets")

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[BaseException], ...]:
    from glocal.benchmarks.results import StoreError
    from glocal.benchmarks.runner import RunError
    from glocal.benchmarks.tasks import TaskError
    from glocal.datasets.registry import DatasetError
    from glocal.zoo.registry import UnknownModelError
    from glocal.zoo.weights import CheckpointError

    return (UnknownModelError, RunError, TaskError, CheckpointError, DatasetError, StoreError)


def _split(values: list[str] | None, cast: type = str) -> list[Any] | None:
    """``--x 1,2 --x 3`` -> [1, 2, 3]."""
    if not values:
        return None
    items = [v.strip() for raw in values for v in raw.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        fail(f"expected {cast.__name__} values, got {', '.join(items)}")
    return None


# ---------------------------------------------------------------------------------------------- run


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def render_records(records: list[dict[str, Any]], notes: list[str] | None = None) -> None:
    """A readable table of records (device and weights in the caption), then what was not measured and why."""
    devices = sorted({r["environment"]["device_name"] for r in records})
    weights = sorted({r["weights"]["id"] if r["weights"]["source"] != "random" else "random" for r in records})
    table = Table(title="glocal results", caption=f"device: {', '.join(devices)} | weights: {', '.join(weights)}",
                  header_style="bold")
    for col in ("model", "prec", "batch", "res", "status", "median ms", "p90 ms", "throughput", "peak MiB",
                "params M", "GMACs", "metrics"):
        table.add_column(col, justify="left" if col in ("model", "status", "metrics") else "right")
    for r in records:
        lat, mem, comp, st = r.get("latency") or {}, r.get("memory") or {}, r.get("compute") or {}, r["settings"]
        peak = mem.get("peak_allocated", mem.get("cpu_peak_rss"))
        metrics = [f"{k}={_fmt(v)}" for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))]
        metrics += [f"{k}={_fmt(v['accuracy'], 3)}" for k, v in (r.get("metrics") or {}).items()
                    if isinstance(v, dict) and "accuracy" in v]
        thr = f"{_fmt(lat.get('throughput'), 1)} {lat.get('throughput_unit', '')}" if lat else "-"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"
        table.add_row(r["model"]["variant"], st["precision"], str(st["batch_size"]), str(st["resolution"]), status,
                      _fmt(lat.get("median")), _fmt(lat.get("p90")), thr, _fmt(peak, 0),
                      _fmt(comp["params"] / 1e6 if comp.get("params") else None), _fmt(comp.get("gmacs")),
                      ", ".join(metrics) or "-")
    out.print(table)
    lines = list(dict.fromkeys((notes or []) + [n for r in records for n in r.get("notes", [])]))
    if lines:
        out.print("[bold]Not measured / notes:[/]")
        for n in lines:
            out.print(f"  - {n}", highlight=False, markup=False)


@app.command()
def run(
    model: Annotated[list[str], typer.Option("--model", "-m", help="family or variant, repeatable")],
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N")] = "cpu",
    precision: Annotated[list[str], typer.Option(help="fp32, bf16, fp16 (comma list)")] = ["fp32"],  # noqa: B006
    batch_size: Annotated[list[str] | None, typer.Option(help="e.g. 1,64 (CPU default 1, CUDA 1,64)")] = None,
    resolution: Annotated[list[str] | None, typer.Option(help="e.g. 224,384,512 for a scaling curve")] = None,
    weights: Annotated[str | None, typer.Option(help="checkpoint PATH, 'random', or auto (default)")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="NAME=PATH, repeatable (imagenet=..., dist=...)")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last")] = False,
    compile: Annotated[str | None, typer.Option(help="torch.compile mode: default, reduce-overhead, ...")] = None,
    tf32: Annotated[bool, typer.Option("--tf32")] = False,
    cudnn_benchmark: Annotated[bool, typer.Option("--cudnn-benchmark")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    warmup_iters: Annotated[int | None, typer.Option()] = None,
    warmup_time: Annotated[float | None, typer.Option(help="seconds")] = None,
    min_iters: Annotated[int | None, typer.Option()] = None,
    min_time: Annotated[float | None, typer.Option(help="seconds")] = None,
    eval_batch_size: Annotated[int, typer.Option()] = 32,
    workers: Annotated[int, typer.Option(help="data-loading workers")] = 2,
    store: Annotated[Path | None, typer.Option(help="SQLite store (default: user data dir or $GLOCAL_STORE)")] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="do not write records")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the records to a JSON file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON")] = False,
) -> None:
    """Measure latency, throughput, memory and compute (and quality, given a dataset and pretrained weights)."""
    from glocal.benchmarks.runner import CPU_RULE, CUDA_RULE, RunRequest, plan

    errors = _known_errors()
    rule = None
    overrides = {"warmup_iters": warmup_iters, "warmup_s": warmup_time, "min_iters": min_iters, "min_s": min_time}
    if any(v is not None for v in overrides.values()):
        rule = dict(CUDA_RULE if device.startswith("cuda") else CPU_RULE)
        rule.update({k: v for k, v in overrides.items() if v is not None})
        if rule["max_iters"] < rule["min_iters"]:
            rule["max_iters"] = rule["min_iters"]
    req = RunRequest(
        models=model, device=device, precisions=_split(precision) or ["fp32"],
        batch_sizes=_split(batch_size, int), resolutions=_split(resolution, int), weights=weights,
        channels_last=channels_last, compile=compile, tf32=tf32, cudnn_benchmark=cudnn_benchmark, threads=threads,
        datasets=list(dataset or []), eval_batch_size=eval_batch_size, workers=workers, rule=rule,
    )
    try:
        from glocal.benchmarks.results import ResultStore

        target = None if no_store else ResultStore(store)
        cells, notes = plan(req)
        records = _run_cells(cells, quiet=as_json, sink=target.append if target is not None else None)
    except errors as e:
        fail(str(e))
        return
    if output:
        from glocal.benchmarks.results import write_atomic

        write_atomic(output, json.dumps(records, indent=1))
    if as_json:
        sys.stdout.write(json.dumps(records, indent=1) + "\n")
    else:
        render_records(records, notes)
        if target is not None:
            out.print(f"{len(records)} record(s) appended to {target.path}", highlight=False)
    if all(r["status"] != "ok" for r in records):
        raise typer.Exit(1)


def _run_cells(cells: list[Any], quiet: bool = False,
               sink: Callable[[list[dict[str, Any]]], Any] | None = None) -> list[dict[str, Any]]:
    """Run cells one by one in subprocesses, with a progress bar over cells and over each cell's work. Each
    record goes to ``sink`` (the store) as its cell ends, so an interrupted campaign keeps its finished cells."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from glocal.benchmarks.runner import run_cell_subprocess

    records: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet) as bar:
        overall = bar.add_task("cells", total=len(cells))
        for c in cells:
            label = f"{c.model} {c.device} {c.precision} bs{c.batch_size} {c.resolution or ''}".strip()
            inner = bar.add_task(f"  {label}: starting", total=None)

            def on_event(kind: str, args: list[str], inner: int = inner, label: str = label) -> None:
                if kind == "stage":
                    bar.update(inner, description=f"  {label}: {args[0]}", total=None, completed=0)
                elif kind == "iter":
                    bar.update(inner, completed=int(args[0]))
                elif kind == "progress":
                    bar.update(inner, completed=int(args[0]), total=int(args[1]) or None,
                               description=f"  {label}: {args[2] if len(args) > 2 else ''}")
                elif kind == "log" and args[0].startswith("WARNING"):
                    err.print(args[0], markup=False, highlight=False)

            records.append(run_cell_subprocess(c, on_event))
            if sink is not None:
                sink(records[-1:])
            bar.remove_task(inner)
            bar.advance(overall)
    return records


# --------------------------------------------------------------------------------------------- list


@list_app.command("models")
def list_models_cmd(
    task: Annotated[str | None, typer.Option(help="filter by task")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Registered model families and variants (default variant marked *)."""
    from glocal import zoo

    cards = [c for c in zoo.cards() if task is None or c.task == task]
    if as_json:
        sys.stdout.write(json.dumps([c.to_dict() for c in cards], indent=1) + "\n")
        return
    table = Table(title="glocal models", header_style="bold")
    for col in ("family", "name", "task", "variants", "params (M)", "paper", "license"):
        table.add_column(col)
    for c in cards:
        names = " ".join(v.name + ("*" if v.name == c.default_variant else "") for v in c.variants)
        params = ", ".join(f"{v.params / 1e6:.1f}" for v in c.variants if v.params)
        table.add_row(c.family, c.display_name, c.task, names, params or "-", f"arXiv:{c.arxiv_id}", c.license)
    out.print(table)


@list_app.command("tasks")
def list_tasks_cmd() -> None:
    """Harness tasks."""
    from glocal.benchmarks.tasks import _TASKS, _load

    _load()
    for name, t in sorted(_TASKS.items()):
        out.print(f"{name}  ({type(t).__name__})", highlight=False)


@list_app.command("datasets")
def list_datasets_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Datasets the harness can score (--dataset NAME=PATH)."""
    from glocal.benchmarks.tasks import evaluators

    evs = evaluators()
    if as_json:
        sys.stdout.write(json.dumps({n: {"tasks": e.tasks, "description": e.description} for n, e in evs.items()},
                                    indent=1) + "\n")
        return
    table = Table(title="glocal datasets", header_style="bold")
    for col in ("name", "tasks", "description"):
        table.add_column(col)
    for n, e in sorted(evs.items()):
        table.add_row(n, ", ".join(e.tasks), e.description.splitlines()[0] if e.description else "")
    out.print(table)


@list_app.command("generators")
def list_generators_cmd() -> None:
    """Dataset generators (bench datasets make NAME)."""
    datasets_list()


# ------------------------------------------------------------------------------------------ results


@results_app.command("ls")
def results_ls(
    model: Annotated[str | None, typer.Option(help="family or variant")] = None,
    task: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(help="show the last N")] = 50,
    store: Annotated[Path | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List records in the store (newest last)."""
    from glocal.benchmarks.results import ResultStore, flatten

    try:
        recs = ResultStore(store).records(model=model, task=task, status=status)[-limit:]
    except _known_errors() as e:
        fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps([flatten(r) for r in recs], indent=1) + "\n")
        return
    table = Table(title=f"{len(recs)} record(s)", header_style="bold")
    cols = ("id", "timestamp", "model", "device", "precision", "batch", "resolution", "status", "latency_ms", "gmacs")
    for col in cols:
        table.add_column(col)
    for r in recs:
        row = flatten(r)
        table.add_row(row["id"][:8], row["timestamp"], row["model"], row["device"][:24], row["precision"],
                      str(row["batch"]), str(row["resolution"]), row["status"], _fmt(row["latency_ms"]),
                      _fmt(row["gmacs"]))
    out.print(table)


@results_app.command("show")
def results_show(record_id: str, store: Annotated[Path | None, typer.Option()] = None) -> None:
    """One record as JSON (an id prefix is enough)."""
    from glocal.benchmarks.results import ResultStore

    try:
        rec = ResultStore(store).get(record_id)
    except _known_errors() as e:
        fail(str(e))
        return
    sys.stdout.write(json.dumps(rec, indent=1) + "\n")


@results_app.command("export")
def results_export(
    fmt: Annotated[str, typer.Option("--format", help="json, jsonl or csv")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--out", "-o", help="file (default stdout)")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    task: Annotated[str | None, typer.Option()] = None,
    store: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Export records (JSON/JSONL keep everything; CSV is flattened)."""
    from glocal.benchmarks.results import ResultStore, export, write_atomic

    try:
        text = export(ResultStore(store).records(model=model, task=task), fmt)
    except ValueError as e:
        fail(str(e))
        return
    except _known_errors() as e:
        fail(str(e))
        return
    if output:
        write_atomic(output, text)
    else:
        sys.stdout.write(text)


# ----------------------------------------------------------------------------------------- datasets


@datasets_app.command("list")
def datasets_list() -> None:
    """Dataset generators and their options."""
    from glocal.datasets import generators

    table = Table(title="dataset generators", header_style="bold")
    for col in ("name", "description", "options"):
        table.add_column(col)
    for name, g in sorted(generators().items()):
        table.add_row(name, g.description, "; ".join(f"{k}: {v}" for k, v in g.options.items()))
    out.print(table)


@datasets_app.command("make")
def datasets_make(
    name: str,
    src: Annotated[Path, typer.Option("--from", help="folder of your own source images")],
    dest: Annotated[Path, typer.Option("--out", help="output folder")],
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(help="parallel processes")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume")] = True,
    opt: Annotated[list[str] | None, typer.Option(help="generator option key=value, repeatable")] = None,
) -> None:
    """Generate a dataset (resumable, parallel, seeded) from a folder of images."""
    from glocal.datasets import get_generator

    options: dict[str, str] = {}
    for o in opt or []:
        key, sep, value = o.partition("=")
        if not sep:
            fail(f"bad --opt {o!r}: expected key=value")
        options[key.strip()] = value.strip()
    try:
        gen = get_generator(name)
        unknown = set(options) - set(gen.options)
        if unknown:
            fail(f"{name} has no option {', '.join(sorted(unknown))} (options: {', '.join(gen.options) or 'none'})")
        summary = gen.fn(src, dest, seed=seed, workers=workers, resume=resume, progress=True, **options)
    except _known_errors() as e:
        fail(str(e))
        return
    out.print_json(json.dumps(summary, default=str))


# -------------------------------------------------------------------------------------- microbench


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def microbench(ctx: typer.Context, name: str) -> None:
    """Kernel-level benchmarks: `na` (neighborhood attention backends vs dense), `dehazexl-memory`, `timer-check`
    (the harness's CUDA timer against triton's do_bench)."""
    import importlib

    modules = {"na": "neighborhood_attention", "neighborhood-attention": "neighborhood_attention",
               "dehazexl-memory": "dehazexl_memory", "timer-check": "timer_check"}
    if name not in modules:
        fail(f"unknown microbenchmark {name!r} (known: {', '.join(sorted(modules))})")
    mod = importlib.import_module(f"glocal.benchmarks.microbench.{modules[name]}")
    raise typer.Exit(mod.main(list(ctx.args)) or 0)


def _mount_optional() -> None:
    """Sub-apps that live in their own modules."""
    try:
        from glocal.benchmarks.cli_leaderboard import app as leaderboard_app
    except ImportError:
        return
    app.add_typer(leaderboard_app, name="leaderboard", help="Build and preview the static leaderboard site.")


_mount_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
