"""Memory in its own pass: CUDA peak allocated/reserved after resetting the peaks, NVML process memory
(polled) where available; on CPU the process peak RSS (polled, and the kernel's lifetime maximum).
Values in MiB.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable
from typing import Any

import psutil
import torch
import torch.nn as nn

MiB = float(1 << 20)


def tensor_bytes(model: nn.Module) -> int:
    """Weights-only footprint: bytes of parameters and buffers."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


class _Poller:
    """Polls a reading in a background thread and keeps its maximum (NVML and RSS peaks are not exact)."""

    def __init__(self, read: Callable[[], int | None], interval: float = 0.005) -> None:
        self.read, self.interval, self.peak = read, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            if value is not None:
                self.peak = max(self.peak, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> _Poller:
        value = self.read()
        self.peak = value or 0
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        value = self.read()
        if value is not None:
            self.peak = max(self.peak, value)


def _nvml_process_reader(device: torch.device) -> Callable[[], int | None] | None:
    """A reader of this process's memory on the GPU through NVML, or None when NVML is unavailable."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - no NVML in this container / MIG: report None
        return None
    pid = os.getpid()

    def read() -> int | None:
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
        except Exception:  # noqa: BLE001
            return None
        return None

    return read


def foreign_gpu_processes(device: torch.device) -> list[int]:
    """PIDs of other processes holding the GPU (device isolation check); empty when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001
        return []
    mine = {os.getpid(), os.getppid()}
    return [p.pid for p in procs if p.pid not in mine]


def _rss() -> int:
    return psutil.Process().memory_info().rss


def lifetime_peak_rss() -> int:
    """The kernel's record of this process's peak RSS, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_memory(fn: Callable[[], Any], device: torch.device, weights_bytes: int) -> dict[str, Any]:
    """Run ``fn`` once (after warm-up calls by the caller) and report its memory peaks in MiB."""
    out: dict[str, Any] = {"unit": "MiB", "weights": weights_bytes / MiB}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        reader = _nvml_process_reader(device)
        if reader is not None:
            with _Poller(reader) as poll:
                fn()
                torch.cuda.synchronize(device)
            out["nvml_process_peak"] = poll.peak / MiB if poll.peak else None
        else:
            fn()
            torch.cuda.synchronize(device)
            out["nvml_process_peak"] = None
        out["peak_allocated"] = torch.cuda.max_memory_allocated(device) / MiB
        out["peak_reserved"] = torch.cuda.max_memory_reserved(device) / MiB
    else:
        before = _rss()
        with _Poller(_rss) as poll:
            fn()
        out["cpu_rss_before"] = before / MiB
        out["cpu_peak_rss"] = max(poll.peak, before) / MiB
        out["cpu_lifetime_peak_rss"] = lifetime_peak_rss() / MiB
    return out
