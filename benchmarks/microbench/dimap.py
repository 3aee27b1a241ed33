"""Microbenchmark: dense against DIMAP-pruned hierarchical ViTs, side by side, and the paper's Table 1 check.

    bench microbench dimap [--models swin_tiny,swin_small,swin_base,gcvit_tiny,dinat_tiny,svit_small]
        [--ratios 0.15,0.35,0.55] [--baseline] [--weights random|PATH] [--device cpu|cuda] [--dtype fp32|bf16]
        [--batch 1] [--pattern unstructured|2:4] [--min-iters 3] [--json]

For each model at 224: non-zero parameters, non-zero GMACs (the paper's UVC-style count: dense
``torch.utils.flop_counter`` GMACs minus each module layer's MACs times its fraction of zero weights), measured
median latency and the forward pass's memory, for the dense model and for DIMAP at each ratio (the same
fraction of every module), with ``--baseline`` also uniform magnitude pruning. For Swin T/S/B it then sets the
reductions beside the paper's Table 1 (DIMAP1/2/3 <-> ratios 0.15/0.35/0.55). Unstructured zeros run through
the same dense kernels, so latency and memory are expected to equal the dense model's. ``--pattern 2:4`` (CUDA,
compute capability 8.0+) instead compares dense against 2:4 semi-structured sparse kernels, a different pattern
from DIMAP's. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

import torch

from glocal import zoo
from glocal.benchmarks import compute, memory, timing
from glocal.progress import track
from glocal.zoo.methods import dimap as D

NAME = "dimap"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODELS = ("swin_tiny", "swin_small", "swin_base", "gcvit_tiny", "dinat_tiny", "svit_small")
# DIMAP paper Table 1 (ImageNet-1K, 224, after 30 epochs of fine-tuning): parameter and FLOP reductions (%).
PAPER_TABLE1 = {
    "swin_tiny": {0.15: (13.7, 13.9), 0.35: (32.0, 32.4), 0.55: (50.3, 50.8)},
    "swin_small": {0.15: (14.2, 14.3), 0.35: (33.2, 33.2), 0.55: (52.2, 52.3)},
    "swin_base": {0.15: (14.3, 14.4), 0.35: (33.4, 33.5), 0.55: (52.5, 52.7)},
}


def measure(model: torch.nn.Module, x: torch.Tensor, rule: timing.StopRule) -> dict[str, float]:
    """Median latency (ms) and the forward pass's memory: CUDA peak allocated, or the CPU RSS rise."""
    def forward() -> None:
        with torch.inference_mode():
            model(x)

    lat = timing.measure(forward, batch=x.shape[0], rule=rule, device=x.device)
    mem = memory.measure_memory(forward, x.device, memory.tensor_bytes(model))
    peak = mem.get("peak_allocated", (mem.get("cpu_peak_rss") or 0) - (mem.get("cpu_rss_before") or 0))
    return {"median_ms": lat.median, "forward_mib": peak, "weights_mib": mem["weights"]}


def row(name: str, method: str, ratio: float | None, report: dict[str, Any], timed: dict[str, float],
        dense: dict[str, Any]) -> dict[str, Any]:
    """One line of the table: the model's counts and measurements and their change against dense."""
    nz_params = report["nonzero_params"]
    nz_gmacs = report["nonzero_gmacs"]
    return {"model": name, "method": method, "ratio": ratio, "params_m": report["params"] / 1e6,
            "nonzero_params_m": nz_params / 1e6, "params_drop_pct": 100 * (1 - nz_params / report["params"]),
            "dense_gmacs": report["dense_gmacs"], "nonzero_gmacs": nz_gmacs,
            "gmacs_drop_pct": 100 * (1 - nz_gmacs / report["dense_gmacs"]),
            "module_sparsity": {m: v["sparsity"] for m, v in report["modules"].items()}, **timed,
            "x_dense": dense["median_ms"] / timed["median_ms"] if timed["median_ms"] else None}


def bench_model(name: str, ratios: list[float], methods: list[str], weights: str, device: torch.device,
                dtype: torch.dtype, batch: int, rule: timing.StopRule) -> list[dict[str, Any]]:
    """Dense, then each method at each ratio, each on a fresh copy of the dense model. Counts are taken at batch 1
    in fp32 on the CPU; latency and memory at ``batch`` in ``dtype`` on ``device``."""
    model = zoo.create_model(name, weights=weights, quiet=True)
    x1 = torch.randn(1, 3, 224, 224)
    dense_gmacs = compute.count_macs(model, x1)["gmacs"]
    macs = D.layer_macs(model, x1)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    dense_timed = measure(copy.deepcopy(model).to(device, dtype), x, rule)
    rows = [row(name, "dense", None, D.sparsity_report(model, macs, dense_gmacs), dense_timed, dense_timed)]
    scores = D.module_scores(model) if "dimap" in methods else None  # one sort per model, reused at every ratio
    for method, ratio in track([(m, r) for m in methods for r in ratios], description=f"{name} pruning"):
        pruned = copy.deepcopy(model)
        if method == "2:4":  # semi-structured tensors are made on the GPU in the precision they run in
            pruned.to(device, dtype)
            info = D.dimap(pruned, pattern="2:4")
        else:
            info = D.dimap(pruned, ratio=ratio, scores=scores) if method == "dimap" else D.magnitude(pruned, ratio)
            pruned.to(device, dtype)
        D._release_freed_memory()
        report = D.sparsity_report(pruned, macs, dense_gmacs)
        # the uniform baseline runs the very same dense kernels as DIMAP's rows: counted, not timed again
        timed = measure(pruned, x, rule) if method != "magnitude" else dict.fromkeys(dense_timed)
        r = row(name, method, info["ratios"]["mlp"], report, timed, dense_timed)
        r["thresholds"] = info.get("thresholds")
        rows.append(r)
        del pruned
        D._release_freed_memory()
    return rows


def print_table(rows: list[dict[str, Any]], device: str, batch: int, dtype: str) -> None:
    head = (f"{'model':<11} {'method':<9} {'ratio':>5} {'nz params M':>11} {'-params':>8} {'dense GMACs':>11} "
            f"{'nz GMACs':>9} {'-GMACs':>7} {'median ms':>10} {'x dense':>7} {'fwd MiB':>8}  sparsity qkv/proj/mlp")
    print(f"DIMAP microbenchmark, device: {device}, batch {batch}, 224x224, {dtype} (counts: batch 1)")
    print(head)
    print("-" * len(head))
    for r in rows:
        sp = "/".join(f"{v:.3f}" for v in r["module_sparsity"].values())
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['model']:<11} {r['method']:<9} {ratio:>5} {r['nonzero_params_m']:>11.2f} "
              f"{r['params_drop_pct']:>7.1f}% {r['dense_gmacs']:>11.2f} {r['nonzero_gmacs']:>9.2f} "
              f"{r['gmacs_drop_pct']:>6.1f}% {_num(r['median_ms'], 10, 1)} {_num(r['x_dense'], 6, 2, 'x')} "
              f"{_num(r['forward_mib'], 8, 0)}  {sp}")


def _num(value: float | None, width: int, digits: int, unit: str = "") -> str:
    return f"{'-':>{width + len(unit)}}" if value is None else f"{value:>{width}.{digits}f}{unit}"


def print_paper_check(rows: list[dict[str, Any]]) -> None:
    """Our reductions at the DIMAP1/2/3 ratios beside Table 1's."""
    lines = [r for r in rows if r["method"] == "dimap" and r["ratio"] in PAPER_TABLE1.get(r["model"], {})]
    if not lines:
        return
    print("\nPaper Table 1 (after fine-tuning) vs these ratios: -params / -FLOPs (%)")
    for r in lines:
        p_params, p_flops = PAPER_TABLE1[r["model"]][r["ratio"]]
        print(f"  {r['model']:<11} ratio {r['ratio']:.2f}: paper {p_params:.1f} / {p_flops:.1f}   here "
              f"{r['params_drop_pct']:.1f} / {r['gmacs_drop_pct']:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench microbench dimap", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--ratios", default="0.15,0.35,0.55")
    p.add_argument("--baseline", action="store_true",
                   help="also uniform magnitude pruning at the same ratios (counted; its kernels are DIMAP's)")
    p.add_argument("--weights", default="random", help="random (default) or a checkpoint path (one model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--pattern", default="unstructured", choices=D.PATTERNS,
                   help="2:4: dense vs 2:4 semi-structured sparse kernels (CUDA, compute capability 8.0+)")
    p.add_argument("--min-iters", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        ratios = [D.check_ratio(r) for r in args.ratios.split(",")]
        names = [zoo.resolve(n)[1].name for n in args.models.split(",")]
    except (D.PruningError, zoo.UnknownModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    rule = timing.StopRule(warmup_iters=1, warmup_s=0.0, min_iters=args.min_iters, min_s=0.0, max_s=600.0)
    methods = ["dimap", "magnitude"] if args.baseline else ["dimap"]
    if args.pattern == "2:4":
        methods, ratios = ["2:4"], [0.5]
        if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
            print("error: --pattern 2:4 needs a CUDA GPU with compute capability 8.0+ (PyTorch's semi-structured "
                  "sparse kernels); this run has none", file=sys.stderr)
            return 2
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += bench_model(name, ratios, methods, args.weights, device, DTYPES[args.dtype], args.batch, rule)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print_table(rows, f"{label}, {torch.get_num_threads()} threads", args.batch, args.dtype)
        print_paper_check(rows)
        print("\nUnstructured zeros: same dense kernels, so latency and memory match dense; the GMACs and parameter "
              "savings are theoretical (storage after compression, UVC-style FLOPs on non-zero weights).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
