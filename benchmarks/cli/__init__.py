"""The ``bench`` command (also ``python -m glocal``): one typer app, one error path.

bench run --model gcvit                       measure a model; records go to the store
bench sweep FILE.yaml [--resume]              a grid of cells on a launcher (local, Ray, Slurm)
bench list models|datasets|tasks|methods|generators   what is registered
bench results ls|show|export                  read the store
bench datasets make NAME --from DIR --out DIR generate a dataset from your own images
bench leaderboard build|serve                 the static leaderboard site
bench microbench NAME                         kernel-level benchmarks (neighborhood attention, ...)
bench weights package|index|fetch|list|verify pretrained weights as pip packages

Every subcommand lives in its own module here and uses typer with ``Annotated`` options. Every error is one
red line on stderr and exit code 2 (:func:`fail`, :func:`errors_as_one_line`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="glocal: benchmark suite and model zoo for vision models mixing global and local context.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

EXIT_ERROR = 2


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """One clear line on stderr and a non-zero exit."""
    from rich.markup import escape

    text = escape(" ".join(str(message).split()))  # one line, whatever the message held; [extra] is not markup
    err.print(f"[bold red]error:[/] {text}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def known_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that carry a message for the user (everything else is a bug and keeps its traceback)."""
    from glocal.benchmarks.results import StoreError
    from glocal.benchmarks.runner import RunError
    from glocal.benchmarks.tasks import TaskError
    from glocal.datasets.registry import DatasetError
    from glocal.record import RecordError
    from glocal.zoo.methods import MethodError
    from glocal.zoo.registry import UnknownModelError
    from glocal.zoo.weights import CheckpointError

    return (UnknownModelError, RunError, TaskError, CheckpointError, DatasetError, StoreError, MethodError,
            RecordError)


@contextmanager
def errors_as_one_line(*extra: type[BaseException]) -> Iterator[None]:
    """Turn the project's errors (and ``extra``) raised inside the block into :func:`fail`."""
    try:
        yield
    except (*known_errors(), *extra) as e:
        fail(str(e))


def parse_list(values: list[str] | None, what: str, cast: type = str, maximum: int = 1 << 20) -> list | None:
    """``--x 1,2 --x 3`` -> [1, 2, 3]. Items are stripped; an empty item is an error. ``int`` items must be
    plain positive ASCII integers (no signs, underscores or other digits) up to ``maximum``."""
    if not values:
        return None
    items = [v.strip() for raw in values for v in raw.split(",")]
    if any(not v for v in items):
        fail(f"{what}: empty value in {','.join(values)!r}")
    if cast is int:
        bad = [v for v in items if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= maximum]
        if bad:
            fail(f"{what}: expected positive integers up to {maximum}, got {', '.join(repr(b[:20]) for b in bad)}")
    try:
        return [cast(v) for v in items]
    except ValueError:
        fail(f"{what}: expected {cast.__name__} values, got {', '.join(items)}")
    return None


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``--opt key=value`` (repeatable) -> a dict; a missing ``=`` or a repeated key is an error."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"bad {what} {item!r}: expected key=value")
        if key.strip() in pairs:
            fail(f"{what} {key.strip()} is given twice")
        pairs[key.strip()] = value.strip()
    return pairs


def main() -> None:
    app()


# the subcommands register themselves on ``app``
from glocal.benchmarks.cli import (  # noqa: E402, F401
    datasets,
    leaderboard,
    listing,
    microbench,
    results,
    run,
    sweep,
    weights,
)
