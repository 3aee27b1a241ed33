"""Microbenchmark: per-cell dispatch overhead of each launcher against ``local`` on a sweep of short cells, and
the wall time of untimed (evaluation-only) cells on 2 workers, side by side in one run.

``bench microbench launchers --cells 6 --launchers local,ray,slurm``. The cells are tiny (a 32 px GC ViT-XXT
with one timed iteration), so their wall time is mostly what every launcher pays: a fresh interpreter per
cell; the difference to ``local`` is the launcher's own cost. Ray's cluster start is reported apart.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

NAME = "launchers"


def _cells(n: int, measure: bool) -> list[Any]:
    from glocal.benchmarks.runner import RunRequest, plan

    rule = {"warmup_iters": 0, "warmup_s": 0.0, "min_iters": 1, "min_s": 0.0, "max_iters": 1, "max_s": 1.0}
    req = RunRequest(models=["gcvit_xxtiny"], resolutions=[32], batch_sizes=list(range(1, n + 1)), threads=1,
                     rule=rule, measure=measure, weights="random")
    return plan(req)[0]


def _wall(launcher: Any, cells: list[Any]) -> float:
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    launcher.run(cells, lambda i, r: records.append(r))
    wall = time.perf_counter() - t0
    bad = [r["error"] for r in records if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"a benchmark cell failed: {bad[0]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench microbench launchers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=6, help="short cells per launcher")
    ap.add_argument("--launchers", default="local,ray,slurm", help="comma list of local, ray, slurm")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from glocal.benchmarks.launchers import get_launcher

    names = [n.strip() for n in args.launchers.split(",") if n.strip()]
    timed, untimed = _cells(args.cells, True), _cells(args.cells, False)
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        row: dict[str, float] = {}
        if name == "ray":
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            row["cluster_start_s"] = time.perf_counter() - t0
        options = {"executor": "local", "folder": "/tmp/glocal-launcher-bench"} if name == "slurm" else {}
        try:
            launcher = get_launcher(name, **options)
            row["timed_s_per_cell"] = _wall(launcher, timed) / len(timed)
            row["untimed_wall_s"] = _wall(launcher, untimed)
        finally:
            if name == "ray":
                ray.shutdown()
        rows[name] = row
    base = rows.get("local")
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'launcher':<8} {'s/cell (timed)':>15} {'overhead vs local':>18} {'untimed wall s':>15} "
          f"{'vs local':>9} {'cluster start s':>16}")
    for name, row in rows.items():
        over = row["timed_s_per_cell"] - base["timed_s_per_cell"] if base else float("nan")
        ratio = row["untimed_wall_s"] / base["untimed_wall_s"] if base else float("nan")
        print(f"{name:<8} {row['timed_s_per_cell']:>15.2f} {over:>+18.2f} {row['untimed_wall_s']:>15.2f} "
              f"{ratio:>8.2f}x {row.get('cluster_start_s', 0):>16.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
