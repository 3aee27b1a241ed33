"""Progress: the ``@@glocal`` line protocol between a cell subprocess and its parent, and the rich bars.

This module owns both. A cell subprocess (``GLOCAL_CELL=1``) reports on stderr with lines
``@@glocal KIND ARG...``, written by :func:`emit_event` (or its shorthands :func:`emit_stage`,
:func:`emit_iter`, :func:`emit_progress`) and read back by :func:`parse_event`; the parent draws them with
:func:`apply_event` on a bar made by :func:`progress_bar`, the one factory of rich progress bars. Loops use
:func:`track`, which speaks the protocol inside a cell and draws a bar elsewhere. Only the standard library
is imported at module level (rich when a bar is drawn), so dataset worker processes can import it cheaply;
it lives at the package root because the harness, the datasets and the zoo all use it (dependencies flow
benchmarks -> zoo, datasets, never back).

Event kinds: ``stage NAME`` (a new measurement stage), ``iter N`` (N iterations done, total unknown),
``progress DONE TOTAL DESCRIPTION`` (TOTAL 0 when unknown; spaces in DESCRIPTION become ``_``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

PREFIX = "@@glocal"


def in_cell() -> bool:
    """True inside a cell subprocess, whose progress goes to the parent as ``@@glocal`` lines."""
    return os.environ.get("GLOCAL_CELL") == "1"


# ----------------------------------------------------------------------------------------------------------
# The line protocol


def format_event(kind: str, *args: Any) -> str:
    """The protocol line for one event: ``@@glocal KIND ARG...`` (arguments must not contain spaces)."""
    return " ".join([PREFIX, kind, *map(str, args)])


def emit_event(kind: str, *args: Any) -> None:
    """Send one event to the parent process (a protocol line on stderr, flushed at once); nothing outside a
    cell subprocess."""
    if in_cell():
        print(format_event(kind, *args), file=sys.stderr, flush=True)


def emit_stage(name: str) -> None:
    """A new stage of the cell's work begins (``build``, ``latency``, ``evaluate:set5``...; spaces become ``-``)."""
    emit_event("stage", name.replace(" ", "-"))


def emit_iter(done: int) -> None:
    """``done`` iterations of a loop whose length is not known in advance (the latency loop's stop rule)."""
    emit_event("iter", done)


def emit_progress(done: int, total: int | None, description: str) -> None:
    """``done`` of ``total`` items (None or 0: unknown) of the loop ``description``."""
    emit_event("progress", done, total or 0, description.replace(" ", "_"))


def parse_event(line: str) -> tuple[str, list[str]] | None:
    """``(kind, args)`` of a protocol line, or None for any other line (the subprocess's own output)."""
    parts = line.split()
    if len(parts) < 2 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2:]


# ----------------------------------------------------------------------------------------------------------
# Rich bars


def progress_bar(console: Any = None, disable: bool = False, *, transient: bool = True) -> Any:
    """The one rich progress bar of the project (description, bar, n/total, elapsed, remaining), drawn on
    stderr (or ``console``); a ``transient`` bar is removed when done (a generator's stays as a summary)."""
    from rich import progress as rp
    from rich.console import Console

    return rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                       rp.TimeElapsedColumn(), rp.TimeRemainingColumn(), console=console or Console(stderr=True),
                       transient=transient, disable=disable)


def apply_event(bar: Any, task: Any, label: str, kind: str, args: list[str]) -> bool:
    """Show a cell's event on its row ``task`` of ``bar`` (row text ``  LABEL: WHAT``); False for a kind that
    is not a progress event (``log`` lines and the like are the caller's)."""
    if kind == "stage":
        bar.update(task, description=f"  {label}: {args[0]}", total=None, completed=0)
    elif kind == "iter":
        bar.update(task, completed=int(args[0]))
    elif kind == "progress":
        bar.update(task, completed=int(args[0]), total=int(args[1]) or None,
                   description=f"  {label}: {args[2] if len(args) > 2 else ''}")
    else:
        return False
    return True


def track(items: Iterable[T], total: int | None = None, description: str = "working", enabled: bool = True, *,
          transient: bool = True) -> Iterator[T]:
    """Iterate with a progress bar (``total`` defaults to ``len(items)`` when it has one); inside a cell, send
    ``progress`` events instead (about a hundred per loop). ``transient`` as in :func:`progress_bar`."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled:
        yield from items
        return
    if in_cell():
        step = max(1, (total or 100) // 100)
        for i, item in enumerate(items, 1):
            yield item
            if i % step == 0 or i == total:
                emit_progress(i, total, description)
        return
    with progress_bar(transient=transient) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
