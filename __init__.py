"""glocal: a benchmark suite and model zoo for vision models that mix global and local context.

The repository root is this package: ``glocal.zoo`` (models, registry, weights), ``glocal.benchmarks``
(harness, tasks, metrics, results, CLI), ``glocal.datasets`` (loaders and generators) and
``glocal.leaderboard`` (static site builder and published results).
"""

__version__ = "0.1.0"
