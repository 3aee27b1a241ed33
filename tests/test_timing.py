"""The stop rule and the statistics, on a fake clock (no wall-clock thresholds)."""

import statistics

import numpy as np
import pytest

from glocal.benchmarks.timing import StopRule, measure, percentile, summarize


class FakeClock:
    """Each call of the measured function advances time by the next duration in a list."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = list(durations)
        self.calls = 0

    def now(self):
        return self.t

    def work(self):
        self.t += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_stops_when_both_count_and_duration_are_met():
    clock = FakeClock([0.1])  # 100 ms per call
    rule = StopRule(warmup_iters=2, warmup_s=0.0, min_iters=5, min_s=2.0)
    stats = measure(clock.work, batch=4, rule=rule, clock=clock.now, sync=lambda: None)
    assert stats.warmup_iters == 2
    assert stats.n == 20  # 2 s at 0.1 s/iter; the count minimum (5) was met long before
    assert stats.median == pytest.approx(100.0)
    assert stats.throughput == pytest.approx(40.0)  # 4 images / 0.1 s


def test_count_minimum_wins_when_iterations_are_slow():
    clock = FakeClock([1.0])
    rule = StopRule(warmup_iters=0, warmup_s=0.0, min_iters=7, min_s=0.5)
    stats = measure(clock.work, batch=1, rule=rule, clock=clock.now, sync=lambda: None)
    assert stats.n == 7 and clock.calls == 7


def test_warmup_by_time_and_max_cap():
    clock = FakeClock([0.25])
    rule = StopRule(warmup_iters=1, warmup_s=1.0, min_iters=3, min_s=100.0, max_iters=10, max_s=1000.0)
    stats = measure(clock.work, batch=1, rule=rule, clock=clock.now, sync=lambda: None)
    assert stats.warmup_iters == 4  # 1 s of warm-up at 0.25 s per call
    assert stats.n == 10  # capped by max_iters


def test_statistics_match_numpy_and_flag_dispersion():
    samples = [10.0, 11.0, 12.0, 30.0, 10.5, 11.5, 9.5, 50.0]
    stats = summarize(samples, batch=2, timer="perf_counter")
    assert stats.median == pytest.approx(float(np.median(samples)))
    assert stats.p90 == pytest.approx(float(np.percentile(samples, 90)))
    assert stats.p99 == pytest.approx(float(np.percentile(samples, 99)))
    q75, q25 = np.percentile(samples, [75, 25])
    assert stats.iqr == pytest.approx(q75 - q25)
    assert stats.mean == pytest.approx(statistics.fmean(samples))
    assert stats.samples == samples  # raw samples kept, in order
    assert stats.warnings and "IQR" in stats.warnings[0]
    quiet = summarize([10.0, 10.1, 9.9, 10.0], batch=1, timer="perf_counter")
    assert quiet.warnings == []


def test_percentile_edges_and_bad_rules():
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        StopRule(min_iters=0)
    with pytest.raises(ValueError):
        StopRule(min_iters=10, max_iters=5)
