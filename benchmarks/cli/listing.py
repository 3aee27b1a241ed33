"""``bench list``: what is registered (models, tasks, methods, datasets, generators)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from glocal.benchmarks.cli import app, out

list_app = typer.Typer(no_args_is_help=True, help="List registered models, tasks, methods, datasets and generators.")
app.add_typer(list_app, name="list")


@list_app.command("models")
def list_models_cmd(
    task: Annotated[str | None, typer.Option(help="filter by task")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
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
def list_tasks_cmd(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Tasks (from the task specification) and whether the harness has an adapter for each."""
    from dataclasses import asdict

    from glocal.benchmarks.tasks import tasks
    from glocal.taskspec import TASKS

    adapters = tasks()
    if as_json:
        rows = [{**asdict(s), "adapter": s.name in adapters} for s in TASKS.values()]
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    table = Table(title="glocal tasks", header_style="bold")
    for col in ("name", "title", "input", "primary metric", "options"):
        table.add_column(col)
    for name, s in TASKS.items():
        direction = "higher" if s.higher_is_better else "lower"
        metric = f"{s.primary_label} ({direction} is better)" if s.primary_metric else "-"
        opts = ", ".join(adapters[name].options) if name in adapters else ("(evaluation view)" if not s.model_task
                                                                          else "(no adapter yet)")
        table.add_row(name, s.title, s.input_kind, metric, opts or "-")
    out.print(table)


@list_app.command("methods")
def list_methods_cmd(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Efficiency methods (bench run --method NAME[:key=value,...])."""
    from glocal.zoo.methods import methods

    ms = methods()
    if as_json:
        rows = {n: {"description": m.description, "params": {k: {"default": p.default, "help": p.help}
                                                            for k, p in m.params.items()}} for n, m in ms.items()}
        sys.stdout.write(json.dumps(rows, indent=1, default=str) + "\n")
        return
    table = Table(title="glocal methods", header_style="bold")
    for col in ("name", "description", "parameters"):
        table.add_column(col)
    for n, m in sorted(ms.items()):
        table.add_row(n, m.description.splitlines()[0] if m.description else "",
                      "; ".join(f"{k}={p.default}" + (f" ({p.help})" if p.help else "") for k, p in m.params.items()))
    out.print(table)


@list_app.command("datasets")
def list_datasets_cmd(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
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
    from glocal.benchmarks.cli.datasets import datasets_list

    datasets_list()
