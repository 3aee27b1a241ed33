"""Progress bars that work both in the terminal and inside a cell subprocess.

Inside a cell (``GLOCAL_CELL=1``) progress is sent to the parent as ``@@glocal progress`` lines, which
the parent draws as one bar; elsewhere a rich progress bar is drawn on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def in_cell() -> bool:
    return os.environ.get("GLOCAL_CELL") == "1"


def progress_bar(console: Any = None, disable: bool = False) -> Any:
    """The one rich progress bar of the project (description, bar, n/total, elapsed, remaining), drawn on
    stderr and removed when done."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console or Console(stderr=True), transient=True, disable=disable)


def track(items: Iterable[T], total: int | None = None, description: str = "working",
          enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled:
        yield from items
        return
    if in_cell():
        desc = description.replace(" ", "_")
        step = max(1, (total or 100) // 100)
        for i, item in enumerate(items, 1):
            yield item
            if i % step == 0 or i == total:
                print("@@glocal progress", i, total or 0, desc, file=sys.stderr, flush=True)
        return
    with progress_bar() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
