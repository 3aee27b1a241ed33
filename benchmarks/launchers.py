"""Launchers: where and how the cells of a run execute. The harness hands a launcher the planned cells and
a callback; the launcher runs each cell in isolation and hands back its record as the cell ends.

``local`` runs one cell after another, each in a fresh subprocess on this machine (timed cells never share
a device). Other launchers (a Ray cluster, a Slurm job array) plug in here with the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from glocal.benchmarks.cell import CellSpec

OnEvent = Callable[[int, str, list[str]], None]  # (cell index, kind, args) from the cell's progress lines
OnRecord = Callable[[int, dict[str, Any]], None]  # (cell index, record) as each cell ends


class Launcher(Protocol):
    """Runs cells and reports each record through ``on_record`` as soon as its cell ends."""

    name: str

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None: ...


class LocalLauncher:
    """One cell after another, each in a fresh interpreter on this machine."""

    name = "local"

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None:
        from glocal.benchmarks import runner

        runner.remove_stale_cell_dirs()
        for i, cell in enumerate(cells):
            forward = (lambda kind, args, i=i: on_event(i, kind, args)) if on_event else None
            on_record(i, runner.run_cell_subprocess(cell, forward))


LAUNCHERS: dict[str, Callable[..., Launcher]] = {"local": LocalLauncher}


def get_launcher(name: str, **options: Any) -> Launcher:
    """A launcher by name (``local``; others as registered)."""
    from glocal.benchmarks.runner import RunError

    if name not in LAUNCHERS:
        raise RunError(f"unknown launcher {name!r} (known: {', '.join(LAUNCHERS)})")
    return LAUNCHERS[name](**options)
