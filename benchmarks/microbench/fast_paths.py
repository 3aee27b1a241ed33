"""Microbenchmark: per family, the eager attention path against the fused SDPA path against ``torch.compile``,
side by side in one run on the device present, with the ratios.

``bench microbench fast-paths [--families gcvit,rgt] [--no-compile] [--device cuda --dtype bf16]``. The eager
and SDPA paths are the same weights built twice, with timm's fused-attention switch off and on
(``timm.layers.set_fused_attn``): modules that consult it (timm's, and the zoo's that follow timm) take the
manual softmax path or ``F.scaled_dot_product_attention``; a family whose modules ignore the switch shows the
same path twice, and the table says so. The compiled column compiles the SDPA model with ``fullgraph=True``
(a graph break is reported, then it compiles without), and gives the first call's time separately.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

NAME = "fast-paths"

# the smallest variant of each family, at a size where one forward takes well under a second on a CPU
CASES = {
    "gcvit": ("gcvit_xxtiny", 224), "svit": ("svit_small", 224), "dinat": ("dinat_mini", 224),
    "deanet": ("deanet_cr", 256), "dehazexl": ("dehazexl_swinv2_tiny", 256), "rgt": ("rgt_s_x2", 128),
    "dlgsanet": ("dlgsanet_tiny_x2", 128),
}


def _build(variant: str, resolution: int, fused: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """The model built with the fused-attention switch set, and its single-image input (the harness's own)."""
    from timm.layers import set_fused_attn

    from glocal.benchmarks import cell as cells

    set_fused_attn(fused)
    try:
        spec = cells.CellSpec(model=variant, device=str(device), precision={torch.float32: "fp32",
                              torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype], resolution=resolution,
                              weights="random")
        c = cells.setup(spec)
        torch.manual_seed(0)
        model, inputs = cells.place(c, cells.build(c).eval())
    finally:
        set_fused_attn(True)
    return model, lambda m: c.task.forward(m, inputs)


def _time(fn: Any, device: torch.device, iters: int) -> float:
    """Median ms of ``iters`` calls after two warm-up calls."""
    from glocal.benchmarks import timing

    rule = timing.StopRule(warmup_iters=2, warmup_s=0.0, min_iters=iters, min_s=0.0, max_iters=iters, max_s=600.0)
    with torch.inference_mode():
        return timing.measure(fn, batch=1, rule=rule, device=device).median


def bench_family(family: str, device: torch.device, dtype: torch.dtype, iters: int, compile: bool) -> dict[str, Any]:
    variant, res = CASES[family]
    eager, run_e = _build(variant, res, False, device, dtype)
    sdpa, run_s = _build(variant, res, True, device, dtype)
    sdpa.load_state_dict(eager.state_dict())
    with torch.inference_mode():
        same = torch.allclose(run_e(eager).float(), run_s(sdpa).float(), rtol=1e-3, atol=1e-4)
    row: dict[str, Any] = {"family": family, "variant": variant, "size": res, "outputs_match": bool(same),
                           "paths_differ": any(getattr(m, "fused_attn", None) is False for m in eager.modules())}
    row["eager_ms"] = _time(lambda: run_e(eager), device, iters)
    row["sdpa_ms"] = _time(lambda: run_s(sdpa), device, iters)
    if compile:
        row.update(_compiled(sdpa, run_s, device, iters))
    return row


def _compiled(model: Any, run: Any, device: torch.device, iters: int) -> dict[str, Any]:
    out: dict[str, Any] = {"fullgraph": True}
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, fullgraph=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            run(compiled)
    except Exception as e:  # noqa: BLE001 - a graph break is a finding, reported in the table
        out.update(fullgraph=False, graph_break=str(e).strip().splitlines()[0][:120])
        torch._dynamo.reset()
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        with torch.inference_mode():
            run(compiled)
    out["compile_s"] = time.perf_counter() - t0
    out["compiled_ms"] = _time(lambda: run(compiled), device, iters)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench microbench fast-paths", description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes per family on a CPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in CASES]
    if unknown:
        ap.error(f"unknown family {unknown[0]!r} (known: {', '.join(CASES)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    rows = [bench_family(f, device, dtype, args.iters, not args.no_compile) for f in families]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"fast paths on {name}, {args.dtype}, batch 1, median of {args.iters} (ratios: eager time / path time)")
    print(f"{'family':<9} {'variant':<21} {'size':>5} {'eager ms':>9} {'sdpa ms':>9} {'x':>6} {'compiled ms':>12} "
          f"{'x':>6} {'compile s':>10}  notes")
    for r in rows:
        comp = r.get("compiled_ms")
        notes = [] if r["paths_differ"] else ["modules ignore the fused switch: one path"]
        notes += [] if r["outputs_match"] else ["OUTPUTS DIFFER"]
        notes += [f"graph break: {r['graph_break']}"] if "graph_break" in r else []
        comp_ms, comp_x, comp_s = ("-", "", "") if comp is None else (
            f"{comp:.1f}", f"{r['eager_ms'] / comp:.2f}x", f"{r['compile_s']:.1f}")
        print(f"{r['family']:<9} {r['variant']:<21} {r['size']:>5} {r['eager_ms']:>9.1f} {r['sdpa_ms']:>9.1f} "
              f"{r['eager_ms'] / r['sdpa_ms']:>5.2f}x {comp_ms:>12} {comp_x:>6} {comp_s:>10}  {'; '.join(notes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
