"""``bench results``: read the result store (list, show one record, export)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from glocal.benchmarks.cli import app, errors_as_one_line, out
from glocal.benchmarks.cli.run import STORE_HELP, check_output_path, fmt

results_app = typer.Typer(no_args_is_help=True, help="Read the result store.")
app.add_typer(results_app, name="results")


@results_app.command("ls")
def results_ls(
    model: Annotated[str | None, typer.Option(help="family or variant")] = None,
    task: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(help="show the last N", min=1)] = 50,
    store: Annotated[Path | None, typer.Option(help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List records in the store (newest last)."""
    from glocal.benchmarks.results import ResultStore, flatten

    with errors_as_one_line():
        recs = ResultStore(store).records(model=model, task=task, status=status)[-limit:]
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
                      str(row["batch"]), str(row["resolution"]), row["status"], fmt(row["latency_ms"]),
                      fmt(row["gmacs"]))
    out.print(table)


@results_app.command("show")
def results_show(record_id: str, store: Annotated[Path | None, typer.Option(help=STORE_HELP)] = None) -> None:
    """One record as JSON (an id prefix is enough)."""
    from glocal.benchmarks.results import ResultStore

    with errors_as_one_line():
        rec = ResultStore(store).get(record_id)
    sys.stdout.write(json.dumps(rec, indent=1) + "\n")


@results_app.command("export")
def results_export(
    fmt: Annotated[str, typer.Option("--format", help="json, jsonl or csv")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--out", "-o", help="file (default stdout)")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    task: Annotated[str | None, typer.Option()] = None,
    store: Annotated[Path | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Export records (JSON/JSONL keep everything; CSV is flattened)."""
    from glocal.benchmarks.results import ResultStore, export, write_atomic

    with errors_as_one_line(ValueError):
        text = export(ResultStore(store).records(model=model, task=task), fmt)
    if output:
        with errors_as_one_line(OSError):
            check_output_path(output, "--out")
            write_atomic(output, text)
    else:
        sys.stdout.write(text)
