"""glocal benchmarks."""
