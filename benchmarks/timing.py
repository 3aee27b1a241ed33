"""Latency measurement: warm-up by count and time, then time until both a minimum count and a minimum
duration are met (optimum-benchmark's rule), robust statistics, raw samples kept.

On CUDA each iteration is bracketed by CUDA events (device time) and also timed as synchronized wall
time; on CPU by ``time.perf_counter``. Clock and synchronisation are injectable so the stop rule and
the statistics are tested on a fake clock.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

IQR_WARN = 0.10  # torch.utils.benchmark warns above 10% IQR/median


@dataclass(frozen=True)
class StopRule:
    """Warm up for ``warmup_iters`` and ``warmup_s``; time until ``min_iters`` and ``min_s`` are both met,
    never beyond ``max_iters`` or ``max_s`` (whichever comes first, once the minimum count is reached)."""

    warmup_iters: int = 3
    warmup_s: float = 0.5
    min_iters: int = 10
    min_s: float = 2.0
    max_iters: int = 10_000
    max_s: float = 120.0

    def __post_init__(self) -> None:
        if self.min_iters < 1 or self.warmup_iters < 0 or self.min_s < 0 or self.warmup_s < 0:
            raise ValueError("stop rule: counts and durations must be non-negative and min_iters >= 1")
        if self.max_iters < self.min_iters:
            raise ValueError("stop rule: max_iters must be >= min_iters")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatencyStats:
    """Statistics of per-iteration latencies in milliseconds."""

    timer: str
    n: int
    median: float
    mean: float
    p90: float
    p99: float
    min: float
    iqr: float
    iqr_over_median: float
    wall_median: float | None
    throughput: float | None
    throughput_unit: str
    samples: list[float] = field(default_factory=list)
    wall_samples: list[float] = field(default_factory=list)
    warmup_iters: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, keep_samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["unit"] = "ms"
        if not keep_samples:
            d.pop("samples")
            d.pop("wall_samples")
        return d


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list, ``q`` in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: list[float], batch: int, timer: str, wall_ms: list[float] | None = None,
              unit: str = "img/s") -> LatencyStats:
    """Median, mean, p90, p99, IQR (and IQR/median with a warning above 10%), throughput = batch / median."""
    s = sorted(samples_ms)
    med = statistics.median(s)
    iqr = percentile(s, 75) - percentile(s, 25)
    ratio = iqr / med if med > 0 else 0.0
    warnings = []
    if ratio > IQR_WARN:
        warnings.append(f"IQR is {ratio:.0%} of the median (> {IQR_WARN:.0%}): the system may be noisy")
    return LatencyStats(
        timer=timer, n=len(s), median=med, mean=statistics.fmean(s), p90=percentile(s, 90),
        p99=percentile(s, 99), min=s[0], iqr=iqr, iqr_over_median=ratio,
        wall_median=statistics.median(wall_ms) if wall_ms else None,
        throughput=batch / (med / 1000.0) if med > 0 else None, throughput_unit=unit,
        samples=list(samples_ms), wall_samples=list(wall_ms or []), warnings=warnings,
    )


def measure(fn: Callable[[], Any], *, batch: int, rule: StopRule, device: torch.device | str = "cpu",
            clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None,
            on_iter: Callable[[int], None] | None = None, unit: str = "img/s") -> LatencyStats:
    """Warm up, then time ``fn`` under the stop rule. CUDA devices use events per iteration."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if sync is None:
        sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    start = clock()
    done = 0
    while done < rule.warmup_iters or clock() - start < rule.warmup_s:
        fn()
        sync()
        done += 1
        if done >= rule.max_iters:
            break

    wall: list[float] = []
    events: list[tuple[Any, Any]] = []
    t_begin = clock()
    while True:
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = clock()
        if cuda:
            e0.record()
        fn()
        if cuda:
            e1.record()
            events.append((e0, e1))
        sync()
        t1 = clock()
        wall.append((t1 - t0) * 1000.0)
        if on_iter is not None:
            on_iter(len(wall))
        elapsed = t1 - t_begin
        n = len(wall)
        if n >= rule.min_iters and (elapsed >= rule.min_s or n >= rule.max_iters or elapsed >= rule.max_s):
            break
    if cuda:
        device_ms = [a.elapsed_time(b) for a, b in events]
        stats = summarize(device_ms, batch, "cuda_event", wall, unit)
    else:
        stats = summarize(wall, batch, "perf_counter", None, unit)
    stats.warmup_iters = done
    return stats
