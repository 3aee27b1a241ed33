"""VGGT against FlashVGGT: seconds and peak memory per forward against the number of frames, side by side.

    bench microbench vggt [--shape tiny,1b] [--frames 2,4,8,16,32] [--size 224x294] [--size-1b 392x518]
        [--frames-1b 1,2,4] [--device cpu|cuda] [--dtype fp32|bf16] [--max-seconds 60] [--json]

Both models get random weights and the same heads (camera + depth: FlashVGGT has no point or track head),
so the difference is the aggregator's global attention. Every (shape, frames, model) point runs in a fresh
interpreter: one warm-up forward on two frames (not for 1B on CPU), then the timed forwards (median of
``--repeats``; 1B: one); memory is the child's peak RSS during the last timed forward (CPU) or
``max_memory_allocated`` (CUDA), also given above the pre-forward baseline (weights + runtime). Frame counts
run in increasing order; a point predicted (linearly from the previous one, a lower bound) to take more than
``--max-seconds`` is skipped, as are larger ones.
Tokens, global-layer key/value counts and attention GMACs come from ``flashvggt.attention_macs``. FlashVGGT
uses the newest official settings at 1B (r=3, layers 9-19, keyframe_every=200); the tiny shape compresses
global layers 1-2 of 4 with r=3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

GiB = float(1 << 30)
MODELS = ("vggt", "flashvggt")


class BenchError(ValueError):
    """Bad arguments (one line)."""


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise BenchError(f"{what} takes comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise BenchError(f"{what} needs positive integers, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """``"392x518"`` -> (392, 518); both sides multiples of 14."""
    try:
        h, w = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"a size is HxW, e.g. 392x518, got {text!r}") from None
    if h % 14 or w % 14 or h < 14 or w < 14:
        raise BenchError(f"image sides must be positive multiples of 14, got {h}x{w}")
    return h, w


def configs(shape: str):
    """(VGGTConfig, FlashConfig) of a benchmark shape."""
    from glocal.zoo.models.flashvggt import FlashConfig
    from glocal.zoo.models.vggt import TINY, VGGTConfig

    if shape == "1b":
        return VGGTConfig(heads=("camera", "depth")), FlashConfig()
    if shape == "tiny":
        from dataclasses import replace

        return replace(TINY, heads=("camera", "depth")), FlashConfig(kv_downfactor=3, compressed=(1, 2))
    raise BenchError(f"unknown shape {shape!r} (tiny or 1b)")


def workload(shape: str, model: str, frames: int, size: tuple[int, int]) -> dict[str, Any]:
    from glocal.zoo.models.flashvggt import attention_macs

    cfg, flash = configs(shape)
    m = attention_macs(frames, size[0], size[1], cfg, flash if model == "flashvggt" else None)
    return {"tokens": m["tokens"], "global_kv": m["global_kv"], "attention_gmacs": m["attention_macs"] / 1e9}


# ------------------------------------------------------------------------------------------------ child


def _child(shape: str, model_name: str, frames: int, size: tuple[int, int], device_name: str, dtype: str,
           repeats: int, part: str = "model") -> dict[str, Any]:
    """Build one model with random weights, warm up, time ``repeats`` forwards and measure one (subprocess)."""
    import torch

    from glocal.benchmarks.memory import lifetime_peak_rss, measure_memory, tensor_bytes
    from glocal.zoo.models.flashvggt import FlashVGGT
    from glocal.zoo.models.vggt import VGGT

    device = torch.device(device_name)
    torch.manual_seed(0)
    cfg, flash = configs(shape)
    model = (VGGT(cfg) if model_name == "vggt" else FlashVGGT(cfg, flash)).to(device).eval()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    x = torch.rand(1, frames, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)

    def forward(images: torch.Tensor) -> None:
        with torch.inference_mode(), amp:
            if part == "aggregator":
                out = model.aggregator(images)[0][-1]
            else:
                out = model(images)["depth"]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite output")

    if shape == "tiny" or device.type == "cuda":  # a 1B forward on CPU is long enough to need no warm-up
        forward(x[:, :min(2, frames)])
    if device.type == "cuda":
        torch.cuda.empty_cache()
    times: list[float] = []

    def timed() -> None:
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)

    for _ in range(repeats - 1):
        timed()
    try:
        mem = measure_memory(timed, device, tensor_bytes(model))  # the last timed forward also gives the peak
    except torch.cuda.OutOfMemoryError as e:
        return {"status": "oom", "error": str(e).splitlines()[0]}
    mib = 1 << 20
    if device.type == "cuda":
        peak, base = mem["peak_allocated"] * mib, torch.cuda.memory_allocated(device)
    else:
        peak, base = max(mem["cpu_peak_rss"] * mib, lifetime_peak_rss()), mem["cpu_rss_before"] * mib
    return {"status": "ok", "seconds": sorted(times)[len(times) // 2], "peak_gb": peak / GiB,
            "extra_gb": (peak - base) / GiB, "threads": torch.get_num_threads()}


def _run_point(args: argparse.Namespace, shape: str, model: str, frames: int, size: tuple[int, int]) -> dict:
    cmd = [sys.executable, "-m", "glocal.benchmarks.microbench.vggt", "--_child", f"{shape},{model},{frames}",
           "--size", f"{size[0]}x{size[1]}", "--device", args.device, "--dtype", args.dtype,
           "--repeats", str(args.repeats if shape == "tiny" else 1), "--part", args.part]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"killed after {args.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
    oom = proc.returncode in (-9, 137) or "out of memory" in proc.stderr.lower()
    return {"status": "oom" if oom else "error", "error": err[-1]}


# ------------------------------------------------------------------------------------------------ sweep


def sweep(args: argparse.Namespace, shape: str, frames: list[int], size: tuple[int, int]) -> list[dict]:
    """All points of one shape: per frame count VGGT then FlashVGGT; a model stops at its first failure."""
    from glocal.progress import track

    rows: list[dict] = []
    stopped: dict[str, str] = {}
    last: dict[str, dict] = {}
    for n in track(frames, description=f"{shape} frames"):
        row: dict[str, Any] = {"shape": shape, "frames": n, "size": list(size)}
        for model in MODELS:
            point = {**workload(shape, model, n, size)}
            prev = last.get(model)
            guess = prev["seconds"] * n / prev["frames"] if prev else None
            if model in stopped:
                point.update(status="skipped", error=stopped[model])
            elif guess is not None and args.max_seconds and guess > args.max_seconds:
                point.update(status="skipped", error=f"predicted >= {guess:.0f} s > {args.max_seconds:g} s")
            else:
                point.update(_run_point(args, shape, model, n, size))
            if point["status"] == "ok":
                last[model] = {"seconds": point["seconds"], "frames": n}
            elif model not in stopped:
                stopped[model] = f"larger than {n} frames ({point['status']} there)"
            row[model] = point
        a, b = row["vggt"], row["flashvggt"]
        if a["status"] == b["status"] == "ok":
            row["time_ratio"] = b["seconds"] / a["seconds"]
            row["memory_ratio"] = b["extra_gb"] / a["extra_gb"] if a["extra_gb"] > 0 else None
        row["gmacs_ratio"] = b["attention_gmacs"] / a["attention_gmacs"]
        rows.append(row)
    return rows


def table(report: dict[str, Any]) -> str:
    mem = "alloc" if report["device"] == "cuda" else "RSS"
    out = [f"VGGT vs FlashVGGT: device={report['device']} ({report['cpu']}) dtype={report['dtype']} "
           f"threads={report['threads']} random weights, timed: {report['part']} (heads camera+depth)",
           f"{'shape':>5} {'HxW':>8} {'S':>4} {'tokens':>7} {'kv V':>7} {'kv F':>6} | {'s VGGT':>8} {'s Flash':>8} "
           f"{'t F/V':>6} | {'+GB V':>6} {'+GB F':>6} {'m F/V':>6} {'peak ' + mem + ' V':>11} {'F':>6} | "
           f"{'attn GMAC V':>12} {'F':>10} {'F/V':>6}"]

    def f(p: dict, key: str, fmt: str) -> str:
        return format(p[key], fmt) if p.get(key) is not None else "-"

    for r in report["rows"]:
        a, b = r["vggt"], r["flashvggt"]
        out.append(f"{r['shape']:>5} {r['size'][0]:>4}x{r['size'][1]:<3} {r['frames']:>4} {a['tokens']:>7} "
                   f"{a['global_kv']:>7} {b['global_kv']:>6} | {f(a, 'seconds', '8.3f')} {f(b, 'seconds', '8.3f')} "
                   f"{f(r, 'time_ratio', '6.3f')} | {f(a, 'extra_gb', '6.2f')} {f(b, 'extra_gb', '6.2f')} "
                   f"{f(r, 'memory_ratio', '6.3f')} {f(a, 'peak_gb', '11.2f')} {f(b, 'peak_gb', '6.2f')} | "
                   f"{a['attention_gmacs']:>12.1f} {b['attention_gmacs']:>10.1f} {r['gmacs_ratio']:>6.3f}")
        for name, p in (("VGGT", a), ("FlashVGGT", b)):
            if p["status"] != "ok":
                out.append(f"{'':>20} {name}: {p['status']} {p.get('error', '')}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print the side-by-side table (or JSON). Returns the exit status."""
    ap = argparse.ArgumentParser(prog="vggt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="tiny,1b", help="comma-separated shapes: tiny, 1b")
    ap.add_argument("--frames", default="2,4,8,16,32,64", help="frame counts for the tiny shape")
    ap.add_argument("--frames-1b", default="1,2,4,8", help="frame counts for the 1B shape")
    ap.add_argument("--size", default="224x294", help="HxW for the tiny shape")
    ap.add_argument("--size-1b", default="392x518", help="HxW for the 1B shape (the official 4:3 input)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per tiny point (median); 1B: one")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="skip points predicted to take longer")
    ap.add_argument("--timeout", type=float, default=600.0, help="kill a point that runs longer than this")
    ap.add_argument("--part", default="model", choices=("model", "aggregator"),
                    help="time the whole model (camera + depth heads) or the aggregator alone (the README's table)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in each child (default: torch's)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    try:
        args = ap.parse_args(argv)
        if args._child:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            shape, model, frames = args._child.split(",")
            print(json.dumps(_child(shape, model, int(frames), parse_size(args.size), args.device, args.dtype,
                                    args.repeats, args.part)))
            return 0
        shapes = [s.strip() for s in args.shape.split(",") if s.strip()]
        plan = []
        for shape in shapes:
            configs(shape)
            frames = parse_ints(args.frames if shape == "tiny" else args.frames_1b, "--frames")
            plan.append((shape, frames, parse_size(args.size if shape == "tiny" else args.size_1b)))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import platform

    import torch

    report: dict[str, Any] = {"device": args.device, "dtype": args.dtype, "part": args.part,
                              "cpu": platform.processor() or "cpu", "cpu_count": os.cpu_count(),
                              "threads": args.threads or torch.get_num_threads(), "rows": []}
    for shape, frames, size in plan:
        report["rows"] += sweep(args, shape, frames, size)
    print(json.dumps(report, indent=2) if args.json else table(report))
    bad = [r for r in report["rows"] for m in MODELS if r[m]["status"] == "error"]
    return 1 if bad else 0


NAME = "vggt"

if __name__ == "__main__":
    raise SystemExit(main())
