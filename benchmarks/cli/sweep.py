"""``bench sweep FILE``: a grid of cells from a YAML/TOML file, run by a launcher (local, Ray, Slurm)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from glocal.benchmarks.cli import app, err, errors_as_one_line, out
from glocal.benchmarks.cli.run import STORE_HELP, render_records, run_cells


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="sweep file (.yaml, .yml or .toml); see glocal.benchmarks.sweep")],
    resume: Annotated[bool, typer.Option("--resume", help="skip cells the store already holds (same settings, "
                                                          "same code version)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and list the cells, run nothing")] = False,
    store: Annotated[Path | None, typer.Option(help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON")] = False,
) -> None:
    """Run a sweep: the same cells `bench run` would make from the same settings, on the file's launcher."""
    from glocal.benchmarks.environment import glocal_version
    from glocal.benchmarks.launchers import get_launcher
    from glocal.benchmarks.results import ResultStore
    from glocal.benchmarks.sweep import already_done, parse_sweep, plan_sweep, read_sweep_file, run_with_retries

    with errors_as_one_line():
        spec = parse_sweep(read_sweep_file(file))
        cells, notes = plan_sweep(spec, dry_run=dry_run)
        launcher = get_launcher(spec.launcher, **spec.launcher_options)
        target = ResultStore(store)
        target.check_writable()
        if resume:
            skip = already_done(cells, target.records(), glocal_version())
            if any(skip):
                err.print(f"resume: {sum(skip)} of {len(cells)} cell(s) already in {target.path}", highlight=False)
            cells = [c for c, s in zip(cells, skip, strict=True) if not s]
        if dry_run:
            for c in cells:
                out.print(c.command, highlight=False, markup=False)
            return
        records = run_with_retries(
            cells, spec.retries, lambda rec: target.append([rec]),
            lambda subset, keep: run_cells(subset, quiet=as_json, sink=keep, launcher=launcher))
    if as_json:
        sys.stdout.write(json.dumps(records, indent=1, allow_nan=False) + "\n")
    elif records:
        render_records(records, notes)
        out.print(f"{len(records)} record(s) appended to {target.path}", highlight=False)
    else:
        out.print("nothing to run", highlight=False)
