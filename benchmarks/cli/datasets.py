"""``bench datasets``: list the generators and make a dataset from your own images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from glocal.benchmarks.cli import app, errors_as_one_line, fail, out, parse_pairs

datasets_app = typer.Typer(no_args_is_help=True, help="Generate and inspect datasets.")
app.add_typer(datasets_app, name="datasets")


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
    name: Annotated[str, typer.Argument(help="generator name (bench datasets list)")],
    src: Annotated[Path, typer.Option("--from", help="folder of your own source images")],
    dest: Annotated[Path, typer.Option("--out", help="output folder")],
    seed: Annotated[int, typer.Option(help="random seed", min=0)] = 0,
    workers: Annotated[int, typer.Option(help="parallel processes", min=1)] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume")] = True,
    opt: Annotated[list[str] | None, typer.Option(help="generator option key=value, repeatable")] = None,
) -> None:
    """Generate a dataset (resumable, parallel, seeded) from a folder of images."""
    from glocal.datasets import get_generator

    options = parse_pairs(opt, "--opt")
    with errors_as_one_line():
        gen = get_generator(name)
        unknown = set(options) - set(gen.options)
        if unknown:
            fail(f"{name} has no option {', '.join(sorted(unknown))} (options: {', '.join(gen.options) or 'none'})")
        summary = gen.fn(src, dest, seed=seed, workers=workers, resume=resume, progress=True, **options)
    out.print_json(json.dumps(summary, default=str))
