"""DehazeXL peak memory and time against the image side (random weights, one forward per side).

    python -m glocal.benchmarks.microbench.dehazexl_memory --sides 1024,2048,4096 [--device cpu|cuda]
        [--dtype fp32|bf16|fp16] [--chunk 16] [--recompute-skips] [--max-gb 20] [--max-seconds S] [--json]

Every side runs in a fresh subprocess so peaks do not carry over: on CUDA the peak is
``torch.cuda.max_memory_allocated`` after resetting the statistics (after a 256x256 warm-up forward); on
CPU it is the child's peak RSS (polled, and the kernel's lifetime maximum), which includes the weights and
the Python runtime. Sides run in increasing order. Before each side the peak is predicted from the earlier
points (a line in the pixel count; from one point, the part above the model's resident baseline scales
with the pixels); a side whose prediction exceeds ``--max-gb`` is not run, and neither are larger ones. On
CPU the parent also kills a child whose RSS passes the budget; CUDA out-of-memory errors are recorded
as ``oom``. The paper reports 10240x10240 in FP16 in about 21 GB on one GPU (Fig. 1 label: 20.04 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

NAME = "dehazexl-memory"

GiB = float(1 << 30)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class BenchError(ValueError):
    """Bad arguments (one line)."""


def parse_sides(text: str) -> list[int]:
    """``"1024,2048"`` -> [1024, 2048] (sorted, unique, positive)."""
    try:
        sides = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise BenchError(f"--sides takes comma-separated integers, got {text!r}") from None
    if not sides or sides[0] < 1:
        raise BenchError(f"--sides needs positive sides, got {text!r}")
    return sides


def predict(points: list[dict[str, Any]], side: int, key: str = "peak_gb") -> float | None:
    """Predicted ``key`` at ``side`` from measured points: least-squares line in pixels (>= 2 points), or
    the part above the resident baseline scaled by the pixel ratio (1 point)."""
    done = [p for p in points if p.get("status") == "ok"]
    if not done:
        return None
    px = side * side
    if len(done) == 1:
        p = done[0]
        base = p["baseline_gb"] if key == "peak_gb" else 0.0
        return base + (p[key] - base) * px / (p["side"] ** 2)
    xs = [p["side"] ** 2 for p in done]
    ys = [p[key] for p in done]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my + slope * (px - mx)


def predict_seconds(points: list[dict[str, Any]], side: int) -> float | None:
    """Time grows at least with the pixel count (the global attention adds a quadratic term): scale the
    last point by the pixel ratio, a lower bound."""
    done = [p for p in points if p.get("status") == "ok"]
    if not done:
        return None
    p = done[-1]
    return p["seconds"] * (side / p["side"]) ** 2


# ------------------------------------------------------------------------------------------------ child


def _child(side: int, device_name: str, dtype_name: str, chunk: int, recompute: bool, seed: int) -> dict[str, Any]:
    """Build the model, run one forward at ``side`` and report time and memory (runs in a subprocess)."""
    import torch

    from glocal.benchmarks.memory import lifetime_peak_rss, measure_memory, tensor_bytes
    from glocal.zoo import create_model

    device = torch.device(device_name)
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(seed)
    model = create_model("dehazexl", weights="random", quiet=True)
    model.chunk_size, model.recompute_skips = chunk, recompute
    model = model.to(device=device, dtype=dtype).eval()
    weights = tensor_bytes(model)
    with torch.inference_mode():  # warm-up on one tile (kernels, allocator), not counted
        model(torch.rand(1, 3, 256, 256, device=device, dtype=dtype))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(device)
    else:
        import psutil

        baseline = psutil.Process().memory_info().rss
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    elapsed: list[float] = []

    def run() -> None:
        with torch.inference_mode():
            start = time.perf_counter()
            y = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed.append(time.perf_counter() - start)
            if not torch.isfinite(y).all():
                raise RuntimeError("non-finite output")

    try:
        mem = measure_memory(run, device, weights)
    except torch.cuda.OutOfMemoryError as e:
        return {"status": "oom", "error": str(e).splitlines()[0]}
    mib = 1 << 20
    if device.type == "cuda":
        peak = mem["peak_allocated"] * mib
        extra = {"peak_reserved_gb": mem["peak_reserved"] * mib / GiB}
    else:
        peak = max(mem["cpu_peak_rss"] * mib, lifetime_peak_rss())
        extra = {"polled_peak_rss_gb": mem["cpu_peak_rss"] * mib / GiB}
    return {"status": "ok", "seconds": elapsed[0], "peak_gb": peak / GiB, "baseline_gb": baseline / GiB,
            "weights_gb": weights / GiB, "threads": torch.get_num_threads(), **extra}


def _run_side(args: argparse.Namespace, side: int) -> dict[str, Any]:
    """One side in a fresh interpreter; on CPU the child is killed if its RSS passes ``--max-gb``."""
    import psutil

    cmd = [sys.executable, "-m", "glocal.benchmarks.microbench.dehazexl_memory", "--_child", str(side),
           "--device", args.device, "--dtype", args.dtype, "--chunk", str(args.chunk), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.recompute_skips:
        cmd.append("--recompute-skips")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    killed = None
    start = time.monotonic()
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if args.device == "cpu" and rss > args.max_gb * GiB:
            proc.kill()
            killed = f"killed: RSS {rss / GiB:.1f} GB passed the {args.max_gb:g} GB budget"
        elif args.timeout and time.monotonic() - start > args.timeout:
            proc.kill()
            killed = f"killed: ran past the {args.timeout:g} s timeout"
        time.sleep(0.05)
    out, err = proc.communicate()
    if killed:
        return {"status": "over-budget" if "RSS" in killed else "timeout", "error": killed}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    oom = proc.returncode in (-9, 137) or "out of memory" in err.lower() or "MemoryError" in err
    return {"status": "oom" if oom else "error", "error": tail}


def _table(report: dict[str, Any]) -> str:
    mem = "peak alloc GB" if report["device"] == "cuda" else "peak RSS GB"
    rows = [f"DehazeXL memory vs side: device={report['device']} dtype={report['dtype']} chunk={report['chunk']} "
            f"recompute_skips={report['recompute_skips']} budget={report['max_gb']:g} GB",
            f"{'side':>6} {'tiles':>6} {'tokens':>7} {'status':>11} {'seconds':>9} {mem:>14} {'base GB':>8} "
            f"{'predicted GB':>13}"]
    for p in report["points"]:
        def f(key: str, fmt: str, p: dict[str, Any] = p) -> str:
            return format(p[key], fmt) if p.get(key) is not None else "-"
        rows.append(f"{p['side']:>6} {p['tiles']:>6} {p['tokens']:>7} {p['status']:>11} {f('seconds', '9.1f')} "
                    f"{f('peak_gb', '14.2f')} {f('baseline_gb', '8.2f')} {f('predicted_gb', '13.2f')}")
        if p.get("error"):
            rows.append(f"{'':>6} {p['error']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; print a table (or JSON with ``--json``). Returns the exit status."""
    ap = argparse.ArgumentParser(prog="dehazexl_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", default="1024,2048,4096", help="comma-separated image sides (square inputs)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--chunk", type=int, default=16, help="tiles per encoder/decoder batch (official: 16)")
    ap.add_argument("--recompute-skips", action="store_true", help="re-run the encoder while decoding")
    ap.add_argument("--max-gb", type=float, default=None,
                    help="memory budget (default 20 on CPU, the GPU's memory on CUDA)")
    ap.add_argument("--max-seconds", type=float, default=None, help="skip sides predicted to take longer")
    ap.add_argument("--timeout", type=float, default=None, help="kill a side that runs longer than this")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in the child (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    try:
        args = ap.parse_args(argv)
        if args.chunk < 1:
            raise BenchError(f"--chunk must be at least 1, got {args.chunk}")
        if args._child is not None:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            print(json.dumps(_child(args._child, args.device, DTYPES[args.dtype], args.chunk, args.recompute_skips,
                                    args.seed)))
            return 0
        sides = parse_sides(args.sides)
        if args.max_gb is None:
            args.max_gb = _default_budget(args.device)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    report: dict[str, Any] = {"model": "dehazexl_swinv2_tiny", "weights": "random", "device": args.device,
                              "dtype": args.dtype, "chunk": args.chunk, "recompute_skips": args.recompute_skips,
                              "max_gb": args.max_gb, "cpu_count": os.cpu_count(), "threads": args.threads,
                              "points": []}
    points: list[dict[str, Any]] = report["points"]
    for side in sides:
        tiles = (-(-side // 256)) ** 2  # the model pads to whole 256-px tiles
        point: dict[str, Any] = {"side": side, "tiles": tiles, "tokens": tiles * 64,
                                 "predicted_gb": predict(points, side),
                                 "predicted_seconds_lower_bound": predict_seconds(points, side)}
        if point["predicted_gb"] is not None and point["predicted_gb"] > args.max_gb:
            point.update(status="skipped",
                         error=f"predicted {point['predicted_gb']:.1f} GB > budget {args.max_gb:g} GB")
        elif (args.max_seconds and point["predicted_seconds_lower_bound"] is not None
              and point["predicted_seconds_lower_bound"] > args.max_seconds):
            point.update(status="skipped", error=f"predicted >= {point['predicted_seconds_lower_bound']:.0f} s "
                                                 f"> --max-seconds {args.max_seconds:g}")
        else:
            if not args.json:
                print(f"side {side}: running ...", file=sys.stderr, flush=True)
            point.update(_run_side(args, side))
        points.append(point)
        if point["status"] != "ok":
            break  # larger sides would only need more
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0 if all(p["status"] in ("ok", "skipped", "oom", "over-budget") for p in points) else 1


def _default_budget(device: str) -> float:
    """20 GB on CPU; the device's total memory on CUDA."""
    if device == "cpu":
        return 20.0
    import torch

    if not torch.cuda.is_available():
        raise BenchError("--device cuda requested but CUDA is not available")
    return torch.cuda.get_device_properties(0).total_memory / GiB


if __name__ == "__main__":
    raise SystemExit(main())
