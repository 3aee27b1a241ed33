"""Kernel-level microbenchmarks (``bench microbench NAME`` or ``python -m glocal.benchmarks.microbench.NAME``).

They print figures; they are not tests. Each module has ``main(argv=None) -> int``.
"""
