"""Microbenchmark: every available neighborhood-attention backend vs dense attention with the same mask.

    python -m glocal.benchmarks.microbench.neighborhood_attention [--device cpu|cuda] [--sizes 56,112,224]
        [--dim 64 --heads 2 --kernel 7 --dilation 1] [--batch 1] [--no-rpb] [--json]

For each square feature map it first checks that all backends agree with a baseline (dense when it fits,
else the gather reference), then times each with ``torch.utils.benchmark.Timer.blocked_autorange`` and
prints the median and the speed-up over dense. Dense is ``scaled_dot_product_attention`` over all H*W
tokens with the neighbourhood rule as a mask: a boolean mask with ``--no-rpb``, otherwise the same mask as an
additive float mask carrying the RPB (so its output is comparable). Runs that would not fit in memory are
reported as ``skipped: needs X GiB``. This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from glocal.zoo.layers import neighborhood_attention as na

NAME = "na"
ALIASES = ('neighborhood-attention',)

GIB = 1024 ** 3
# Agreement bound per dtype, relative to the baseline output's largest magnitude (at least 1): in bf16 one ulp
# of an output near 4-8 is already 2**-5 = 3.1e-2 (seen at 224^2 on an H100).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def agreement_bound(dtype: torch.dtype, baseline: torch.Tensor) -> float:
    """Largest max-abs difference from the baseline still counted as agreement."""
    return TOLERANCE.get(dtype, 1e-4) * max(1.0, float(baseline.float().abs().max()))


class SkipRun(Exception):
    """A run that cannot happen here (too big for memory, backend unavailable); the message says why."""


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or MemAvailable from /proc/meminfo on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GIB


def dense_bytes(batch: int, heads: int, size: int, rpb: bool, itemsize: int) -> int:
    """Peak estimate for dense masked SDPA: the [heads|1, N, N] mask plus about three [B, heads, N, N] buffers."""
    n2 = (size * size) ** 2
    mask = n2 * (heads * itemsize if rpb else 1)
    return mask + 3 * batch * heads * n2 * itemsize


def reference_bytes(batch: int, heads: int, size: int, head_dim: int, kernel: int, itemsize: int) -> int:
    """Peak estimate for the gather reference: gathered keys and values, [B, heads, H, W, k*k, D] each."""
    return 2 * batch * heads * size * size * kernel * kernel * head_dim * itemsize


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None, kernel: int,
                    dilation: int) -> Callable[[], torch.Tensor]:
    """A closure running dense SDPA over all tokens with the neighbourhood mask (built once, outside timing)."""
    B, heads, H, W, D = q.shape
    dev = str(q.device)
    member_h, off_h = na._axis_membership(H, kernel, dilation, dev)
    member_w, off_w = na._axis_membership(W, kernel, dilation, dev)
    allowed = (member_h[:, None, :, None] & member_w[None, :, None, :]).reshape(H * W, H * W)
    if rpb is None:
        mask: torch.Tensor = allowed
    else:
        mask = rpb[:, off_h[:, None, :, None], off_w[None, :, None, :]].reshape(heads, H * W, H * W).to(q.dtype)
        mask = mask.masked_fill_(~allowed, float("-inf"))
        del allowed
    qf, kf, vf = (t.flatten(2, 3) for t in (q, k, v))

    def run() -> torch.Tensor:
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=1.0)
        return out.view(B, heads, H, W, v.shape[-1])

    return run


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    oom_text = "out of memory" in text or "not enough memory" in text
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or oom_text


def _median_ms(fn: Callable[[], Any], min_run_time: float, label: str) -> float:
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), label=label)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _backends(device: torch.device, with_rpb: bool) -> list[str]:
    names = ["reference", "blocked", "flex"]
    if na.natten_supports(with_rpb):
        names.append("natten")
    return names


def bench_size(size: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    """Check agreement, then time dense and every backend on one ``size x size`` map."""
    heads, kernel, dilation = args.heads, args.kernel, args.dilation
    head_dim = args.dim // heads
    itemsize = torch.tensor([], dtype=dtype).element_size()
    budget = args.max_gib * GIB if args.max_gib else 0.6 * available_bytes(device)
    base = {"size": size, "batch": args.batch, "heads": heads, "head_dim": head_dim, "kernel": kernel,
            "dilation": dilation, "rpb": not args.no_rpb, "device": str(device),
            "dtype": str(dtype).replace("torch.", "")}
    if size < kernel * dilation:
        return [{**base, "backend": "all", "status": f"skipped: map {size} < kernel*dilation {kernel * dilation}"}]
    g = torch.Generator(device="cpu").manual_seed(size)
    q, k, v = (torch.randn(args.batch, heads, size, size, head_dim, generator=g).to(device, dtype) for _ in range(3))
    q = q * head_dim ** -0.5
    rpb = None
    if not args.no_rpb:
        rpb = (torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=g) * 0.5).to(device, dtype)

    runs: dict[str, Callable[[], torch.Tensor]] = {}
    rows: dict[str, dict[str, Any]] = {}
    need = dense_bytes(args.batch, heads, size, rpb is not None, itemsize)
    if need > budget:
        rows["dense"] = {"status": f"skipped: needs {need / GIB:.1f} GiB"}
    else:
        try:
            runs["dense"] = dense_attention(q, k, v, rpb, kernel, dilation)
        except Exception as e:  # noqa: BLE001 - report, keep benchmarking the rest
            rows["dense"] = {"status": f"skipped: needs {need / GIB:.1f} GiB" if _is_oom(e) else f"error: {e}"}
    for name in _backends(device, rpb is not None):
        if name == "reference":
            need_ref = reference_bytes(args.batch, heads, size, head_dim, kernel, itemsize)
            if need_ref > budget:
                rows[name] = {"status": f"skipped: needs {need_ref / GIB:.1f} GiB"}
                continue
        runs[name] = (lambda n=name: na.na2d(q, k, v, rpb, kernel, dilation, backend=n))

    outputs: dict[str, torch.Tensor] = {}
    for name, fn in list(runs.items()):  # first call: correctness and warm-up (compilation for flex)
        try:
            t0 = time.perf_counter()
            outputs[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rows[name] = {"first_call_s": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001
            del runs[name]
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            skipped = _is_oom(e) or isinstance(e, na.NeighborhoodAttentionError)  # e.g. eager flex too big
            reason = "out of memory" if _is_oom(e) else msg
            rows[name] = {"status": f"skipped: {reason}" if skipped else f"error: {msg}"}
    if "flex" in rows and "first_call_s" in rows["flex"]:
        rows["flex"]["variant"] = "compiled" if na.flex_compile_enabled() else "eager"
    baseline = next((n for n in ("dense", "reference", "blocked") if n in outputs), None)
    tol = agreement_bound(dtype, outputs[baseline])
    for name, out in outputs.items():
        diff = float((out.float() - outputs[baseline].float()).abs().max())
        rows[name].update({"max_abs_diff": diff, "vs": baseline, "tolerance": tol, "agrees": diff <= tol})
    del outputs
    for name, fn in runs.items():
        if not rows[name].get("agrees", False):
            rows[name]["status"] = f"MISMATCH vs {baseline} (max |diff| {rows[name]['max_abs_diff']:.2e}); not timed"
            continue
        try:
            rows[name]["median_ms"] = _median_ms(fn, args.min_run_time, f"{name}@{size}")
            rows[name]["status"] = "ok"
        except Exception as e:  # noqa: BLE001
            rows[name]["status"] = "skipped: out of memory" if _is_oom(e) else f"error: {e}"
    dense_ms = rows.get("dense", {}).get("median_ms")
    out_rows = []
    for name in ["dense", *[n for n in rows if n != "dense"]]:
        if name not in rows:
            continue
        r = {**base, "backend": name, **rows[name]}
        if dense_ms and r.get("median_ms"):
            r["speedup_vs_dense"] = dense_ms / r["median_ms"]
        out_rows.append(r)
    return out_rows


def _table_header() -> list[str]:
    head = (f"{'map':>9}  {'backend':<16} {'median ms':>11} {'vs dense':>9} {'max|diff|':>10} "
            f"{'first call s':>12}  status")
    return [head, "-" * len(head)]


def _table_row(r: dict[str, Any]) -> str:
    name = r["backend"] + (f" ({r['variant']})" if r.get("variant") else "")
    med = f"{r['median_ms']:.2f}" if r.get("median_ms") is not None else "-"
    ratio = f"{r['speedup_vs_dense']:.2f}x" if r.get("speedup_vs_dense") else "-"
    diff = f"{r['max_abs_diff']:.1e}" if r.get("max_abs_diff") is not None else "-"
    first = f"{r['first_call_s']:.2f}" if r.get("first_call_s") is not None else "-"
    size = f"{r['size']:>4}x{r['size']:<4}"
    return f"{size}  {name:<16} {med:>11} {ratio:>9} {diff:>10} {first:>12}  {r.get('status', '')}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of medians, ratios vs dense and agreement."""
    return "\n".join(_table_header() + [_table_row(r) for r in rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m glocal.benchmarks.microbench.neighborhood_attention",
                                description="Time neighborhood-attention backends against dense masked attention.")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--sizes", default="56,112,224", help="comma-separated square map sizes (default 56,112,224)")
    p.add_argument("--dim", type=int, default=64, help="channels = heads * head_dim (default 64)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--kernel", type=int, default=7)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--no-rpb", action="store_true", help="no relative positional bias (dense uses a boolean mask)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per blocked_autorange (default 1)")
    p.add_argument("--max-gib", type=float, default=None, help="skip runs estimated above this (default 60%% of free)")
    p.add_argument("--no-compile", action="store_true", help="run FlexAttention eagerly (unfused)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point (``bench microbench na`` mounts it); returns the exit status."""
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        na.check_kernel_dilation(args.kernel, args.dilation)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.dim % args.heads or not sizes or min(sizes) < 1:
        print(f"error: need positive sizes and --dim divisible by --heads (got {args.dim}, {args.heads})",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_compile:
        na.set_flex_compile(False)
    dtype = getattr(torch, args.dtype)
    if not args.json:  # the table is printed size by size, so a long run shows progress
        print(f"neighborhood attention, {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
              f"{args.dtype}, batch {args.batch}, dim {args.dim}, heads {args.heads}, kernel {args.kernel}, "
              f"dilation {args.dilation}, rpb {'off' if args.no_rpb else 'on'}; median of blocked_autorange")
        print("\n".join(_table_header()), flush=True)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        new_rows = bench_size(size, args, device, dtype)
        rows.extend(new_rows)
        if not args.json:
            print("\n".join(_table_row(r) for r in new_rows), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if all(not str(r.get("status", "")).startswith(("MISMATCH", "error")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
