"""Launchers: where and how the cells of a run execute. The harness hands a launcher the planned cells and
callbacks; the launcher runs each cell in isolation and hands back its record as the cell ends.

* ``local``: one cell after another, each in a fresh subprocess on this machine (today's ``bench run``).
* ``ray``: each cell a Ray task that reserves one GPU (CUDA cells) or all CPUs of a node (timed CPU cells; a
  declared number with ``num_cpus``), and still runs the cell in a fresh subprocess; untimed cells reserve one
  CPU and may share a node. Connects to a cluster by ``address`` or starts a local one.
* ``slurm``: each cell an element of a submitit job array (partition, time, GPUs from the sweep file);
  ``executor: local`` runs the same jobs with submitit's local executor (tests, laptops).

Records come back through the launcher's own result channel (Ray object refs, submitit result pickles in its
folder), never through a shared SQLite file; the driver writes them to its store. A cell whose task or job is
lost (node died, pre-emption, a crash of the wrapper) comes back as an ``error`` record naming why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

from glocal.benchmarks.cell import CellSpec

OnEvent = Callable[[int, str, list[str]], None]  # (cell index, kind, args) from the cell's progress lines
OnRecord = Callable[[int, dict[str, Any]], None]  # (cell index, record) as each cell ends


class Launcher(Protocol):
    """Runs cells and reports each record through ``on_record`` as soon as its cell ends."""

    name: str

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None: ...


def run_cell_json(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (given as a plain dict, so any launcher can ship it) in a fresh subprocess; its record."""
    from glocal.benchmarks import runner

    return runner.run_cell_subprocess(CellSpec(**spec))


def lost_record(cell: CellSpec, why: str) -> dict[str, Any]:
    """The record of a cell whose task or job never returned one (an ``error`` naming why)."""
    from glocal.benchmarks.runner import crash_record

    return crash_record(cell, 1, [], why=f"lost by the launcher: {why}")


class LocalLauncher:
    """One cell after another, each in a fresh interpreter on this machine."""

    name = "local"

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None:
        from glocal.benchmarks import runner

        runner.remove_stale_cell_dirs()
        for i, cell in enumerate(cells):
            forward = (lambda kind, args, i=i: on_event(i, kind, args)) if on_event else None
            on_record(i, runner.run_cell_subprocess(cell, forward))


def _require(module: str, extra: str) -> Any:
    """Import an optional engine, or one line naming the extra to install."""
    import importlib

    from glocal.benchmarks.runner import RunError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RunError(f"the {extra} launcher needs {module}: pip install 'glocal[{extra}]'") from None


class RayLauncher:
    """Cells as Ray tasks: GPU cells reserve a GPU, timed CPU cells a whole node's CPUs, untimed cells one CPU."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, local_cpus: int | None = None):
        self.address, self.num_cpus, self.local_cpus = address, num_cpus, local_cpus

    def _resources(self, cell: CellSpec, node_cpus: int) -> dict[str, Any]:
        if cell.device.startswith("cuda"):
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": (self.num_cpus or node_cpus) if cell.measure else 1}

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None:
        ray = _require("ray", "ray")
        started = not ray.is_initialized()
        if started:
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.local_cpus or os.cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        try:
            node_cpus = int(min(n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"]))
            task = ray.remote(max_retries=0)(run_cell_json)
            pending = {task.options(**self._resources(c, node_cpus)).remote(asdict(c)): i for i, c in enumerate(cells)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    record = ray.get(done[0])
                except Exception as e:  # noqa: BLE001 - a lost worker or node is the cell's error, not the sweep's
                    record = lost_record(cells[i], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                on_record(i, record)
        finally:
            if started:
                ray.shutdown()


class SlurmLauncher:
    """Cells as a submitit job array on Slurm (``executor="local"``: submitit's local executor)."""

    name = "slurm"

    def __init__(self, folder: str = "glocal-slurm", executor: str = "slurm", partition: str | None = None,
                 time_min: int = 60, gpus_per_node: int = 0, cpus_per_task: int | None = None,
                 array_parallelism: int | None = None, poll_s: float = 0.5):
        self.folder, self.executor, self.poll_s = folder, executor, poll_s
        self.params: dict[str, Any] = {"timeout_min": time_min}
        if partition:
            self.params["slurm_partition"] = partition
        if gpus_per_node:
            self.params["gpus_per_node"] = gpus_per_node
        if cpus_per_task:
            self.params["cpus_per_task"] = cpus_per_task
        if array_parallelism:
            self.params["slurm_array_parallelism"] = array_parallelism

    def run(self, cells: Sequence[CellSpec], on_record: OnRecord, on_event: OnEvent | None = None) -> None:
        submitit = _require("submitit", "slurm")
        ex = submitit.AutoExecutor(folder=self.folder, cluster="local" if self.executor == "local" else None)
        params = dict(self.params)
        if self.executor == "local":  # the local executor knows only the generic parameters
            params = {k: v for k, v in params.items() if k in ("timeout_min", "gpus_per_node", "cpus_per_task")}
        ex.update_parameters(name="glocal-cell", **params)
        # one machine: timed cells must not share its CPUs, so the local executor runs them one at a time
        serial = self.executor == "local" and any(c.measure for c in cells)
        groups = [[i] for i in range(len(cells))] if serial else [list(range(len(cells)))]
        for group in groups:
            jobs = ex.map_array(run_cell_json, [asdict(cells[i]) for i in group])
            self._collect(dict(zip(jobs, group, strict=True)), cells, on_record)

    def _collect(self, pending: dict[Any, int], cells: Sequence[CellSpec], on_record: OnRecord) -> None:
        while pending:
            for job in [j for j in pending if j.done()]:
                i = pending.pop(job)
                try:
                    record = job.result()
                except Exception as e:  # noqa: BLE001 - a failed or pre-empted job is the cell's error
                    record = lost_record(cells[i], f"{type(e).__name__}: {str(e).strip().splitlines()[-1:]}")
                on_record(i, record)
            if pending:
                time.sleep(self.poll_s)


LAUNCHERS: dict[str, Callable[..., Launcher]] = {"local": LocalLauncher, "ray": RayLauncher, "slurm": SlurmLauncher}


def get_launcher(name: str, **options: Any) -> Launcher:
    """A launcher by name with its options (from a sweep file's ``launcher`` section)."""
    import inspect

    from glocal.benchmarks.runner import RunError

    if name not in LAUNCHERS:
        raise RunError(f"unknown launcher {name!r} (known: {', '.join(LAUNCHERS)})")
    accepted = set(inspect.signature(LAUNCHERS[name]).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise RunError(f"launcher {name} has no option {unknown[0]!r} (options: {known})")
    return LAUNCHERS[name](**options)
