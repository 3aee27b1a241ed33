"""glocal benchmarks/metrics."""
