"""Microbenchmark: the harness's latency timer against ``triton.testing.do_bench`` on one model cell.

    python -m glocal.benchmarks.microbench.timer_check --model gcvit_tiny --batch 64 --resolution 224 \
        --precision bf16 [--rounds 3] [--json]

Builds the cell as ``bench run`` does (random weights, pure-precision cast, ``torch.inference_mode``) and, in
one process, alternates the two timers ``--rounds`` times: the harness's :func:`glocal.benchmarks.timing.measure`
(CUDA events around each forward, median) and Triton's ``do_bench`` (median, which flushes the L2 cache
between calls). It prints both medians per round and the ratio of their medians over rounds. A ratio near 1
says the harness's numbers agree with Triton's reference timer. CUDA only; this prints figures, it is not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch

NAME = "timer-check"


def build(model: str, batch: int, resolution: int, precision: str, device: torch.device) -> Any:
    """The cell's forward closure: the model and inputs built by the harness's own cell stages."""
    from glocal.benchmarks import cell as cells

    spec = cells.CellSpec(model=model, device=str(device), precision=precision, batch_size=batch,
                          resolution=resolution, weights="random")
    c = cells.setup(spec)
    net, inputs = cells.place(c, cells.build(c).eval())
    _, forward = cells.compile_model(c, net, inputs)
    return c.variant.name, forward


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="timer_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gcvit_tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0, help="harness: seconds timed per round")
    ap.add_argument("--rep", type=int, default=1000, help="do_bench: target milliseconds timed per round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        print("error: timer_check needs a CUDA device (triton.testing.do_bench times GPU work)", file=sys.stderr)
        return 2
    try:
        from triton.testing import do_bench
    except ImportError:
        print("error: triton is not installed", file=sys.stderr)
        return 2
    from glocal.benchmarks.timing import StopRule, measure

    name, forward = build(args.model, args.batch, args.resolution, args.precision, device)
    rule = StopRule(warmup_iters=10, warmup_s=1.0, min_iters=50, min_s=args.min_time)
    rows = []
    for r in range(args.rounds):
        harness = measure(forward, batch=args.batch, rule=rule, device=device).median
        triton = float(do_bench(forward, warmup=100, rep=args.rep, return_mode="median"))
        rows.append({"round": r, "harness_median_ms": harness, "do_bench_median_ms": triton,
                     "ratio": harness / triton})
    summary = {
        "model": name, "batch": args.batch, "resolution": args.resolution, "precision": args.precision,
        "device": torch.cuda.get_device_name(device), "torch": torch.__version__, "rounds": rows,
        "harness_median_ms": statistics.median(r["harness_median_ms"] for r in rows),
        "do_bench_median_ms": statistics.median(r["do_bench_median_ms"] for r in rows),
    }
    summary["ratio"] = summary["harness_median_ms"] / summary["do_bench_median_ms"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{name} batch {args.batch} at {args.resolution}px {args.precision} on {summary['device']}")
    print(f"{'round':>5}  {'harness ms':>11}  {'do_bench ms':>11}  {'ratio':>6}")
    for r in rows:
        print(f"{r['round']:>5}  {r['harness_median_ms']:>11.3f}  {r['do_bench_median_ms']:>11.3f}  {r['ratio']:>6.3f}")
    print(f"median over rounds: harness {summary['harness_median_ms']:.3f} ms, do_bench "
          f"{summary['do_bench_median_ms']:.3f} ms, ratio {summary['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
