"""glocal leaderboard: a static site built from result records (v1 schema) and model-card dicts.

It reads plain dicts only (never the harness or the zoo); ``glocal.benchmarks.cli.leaderboard`` gathers
the records (``leaderboard/results/`` and user stores) and the cards, and calls :func:`build_site`.

>>> from glocal.leaderboard import build_site, read_results_dir
>>> build_site(read_results_dir("leaderboard/results"), cards=[], out="site")
"""

from glocal.leaderboard.charts import pareto_front
from glocal.leaderboard.data import (
    RecordError,
    latest_per_cell,
    parse_records,
    read_record_file,
    read_results_dir,
    validate_record,
)
from glocal.leaderboard.site import BuildSummary, SiteError, build_site, make_server

__all__ = [
    "BuildSummary",
    "RecordError",
    "SiteError",
    "build_site",
    "latest_per_cell",
    "make_server",
    "pareto_front",
    "parse_records",
    "read_record_file",
    "read_results_dir",
    "validate_record",
]
