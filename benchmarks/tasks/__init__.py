"""glocal benchmarks/tasks."""
