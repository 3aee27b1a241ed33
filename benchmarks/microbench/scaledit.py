"""Microbenchmark: seconds per denoising step of Scale-DiT against dense SDPA and dense flex, side by side.

    bench microbench scaledit [--device cpu|cuda] [--shape tiny,flux1-dev,flux1-dev-2blocks]
        [--sides 256,512,1024] [--dtype fp32|bf16] [--budget-s 60] [--rules inference] [--no-compile] [--json]
    bench microbench scaledit --masks [--shape flux1-dev] [--sides 1024,2048,4096,8192] [--budget-s 60] [--json]

One transformer forward (random weights: speed does not depend on their values) per cell, for each image
side, through three processors on the same model: ``scaledit`` (ScaleDiTAttnProcessor, BlockMask through a
compiled ``flex_attention``; the guidance tokens included), ``dense-sdpa`` (diffusers' stock FluxAttnProcessor)
and ``dense-flex`` (compiled flex without a mask). Shapes: ``tiny`` (always), ``flux1-dev`` (the real FLUX.1-dev
transformer, 19 + 38 blocks, 24 heads x 128; needs 24 GB in bf16, so GPU only in practice) and
``flux1-dev-2blocks`` (FLUX.1-dev widths, 1 double + 1 single block: per-block figures on a CPU). A cell whose
estimated step time exceeds ``--budget-s`` on this device, or whose weights do not fit, is printed as skipped
with the reason. Mask building and compilation happen before timing (the ``mask s`` column: the processor's
setup, which builds the BlockMask). This prints figures; it is not a test.

``--masks`` builds no model: it times the FlexAttention BlockMask of each side and rule set built from per-block
value ranges (``ScaleDiTLayout.block_mask``) against the exact token-level reduction (``exact=True``, O(L^2): run
only where its estimate, scaled from the last exact build, fits ``--budget-s``), with the fraction of blocks
each marks partial and full and whether the two structures are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from glocal.benchmarks.microbench.neighborhood_attention import GIB, available_bytes
from glocal.benchmarks.timing import StopRule, measure

NAME = "scaledit"
ATTENTIONS = ("scaledit", "dense-sdpa", "dense-flex")
SHAPES = {"tiny": ("scaledit_tiny", {}), "flux1-dev": ("scaledit_flux1_dev", {}),
          "flux1-dev-2blocks": ("scaledit_flux1_dev", {"num_layers": 1, "num_single_layers": 1}),
          "flux2-tiny": ("scaledit_flux2_tiny", {}), "flux2-klein": ("scaledit_flux2_klein_9b", {}),
          "flux2-klein-2blocks": ("scaledit_flux2_klein_9b", {"num_layers": 1, "num_single_layers": 1})}
DEFAULT_SIDES = {"tiny": (256, 512, 1024), "flux1-dev": (1024, 2048, 4096, 8192), "flux1-dev-2blocks": (1024, 2048),
                 "flux2-tiny": (256, 512, 1024), "flux2-klein": (1024, 2048, 4096, 8192),
                 "flux2-klein-2blocks": (512, 1024)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench microbench scaledit", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", default="tiny,flux1-dev-2blocks,flux1-dev", help="comma list of " + ",".join(SHAPES))
    p.add_argument("--sides", default="", help="image sides in px (default per shape)")
    p.add_argument("--dtype", default="", help="fp32 | bf16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--budget-s", type=float, default=60.0, help="skip cells whose estimated step exceeds this")
    p.add_argument("--rules", default="inference", choices=("inference", "training"))
    p.add_argument("--no-compile", action="store_true", help="eager flex (materialises scores on CPU)")
    p.add_argument("--masks", action="store_true", help="time the BlockMask build (fast vs exact), no model")
    p.add_argument("--json", action="store_true")
    return p


def _macs_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Measured multiply-accumulates per second of a 2048^2 matmul on this device (for the budget estimate)."""
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    (a @ a).sum().item()
    t = time.perf_counter()
    for _ in range(3):
        (a @ a).sum().item()
    return 3 * 2048 ** 3 / (time.perf_counter() - t)


def _cell(model: Any, attention: str, side: int, device: torch.device, dtype: torch.dtype, args: Any) -> dict:
    """Configure, warm up (compiles), time one step; returns seconds per step and the workload."""
    t = time.perf_counter()
    layout = model.configure(side, attention, impl="flex", rules=args.rules, compile_flex=not args.no_compile,
                             device=device)
    setup_s = time.perf_counter() - t
    inputs = model.make_inputs(device=device, dtype=dtype)
    work = model.generation_workload()
    out = {"attention": attention, "side": side, "text": layout.text, "high_res": layout.n_hi, "low_res": layout.n_lo,
           "pair_fraction": work["pair_fraction"], "attention_gmacs": work["attention_gmacs"],
           "step_gmacs": work["step_gmacs"], "setup_s": setup_s}
    if out["step_gmacs"] * 1e9 / args.rate > args.budget_s:
        return {**out, "skipped": f"estimated {out['step_gmacs'] * 1e9 / args.rate:.0f} s/step > {args.budget_s:.0f}"}
    with torch.no_grad():
        t = time.perf_counter()
        model(**inputs)  # compile and warm-up
        out["first_call_s"] = time.perf_counter() - t
        stats = measure(lambda: model(**inputs), batch=1, device=device, unit="steps/s",
                        rule=StopRule(warmup_iters=1, warmup_s=0.0, min_iters=3, min_s=1.0, max_s=args.budget_s))
    return {**out, "seconds_per_step": stats.median / 1000.0, "iqr_over_median": stats.iqr_over_median}


def _run_shape(shape: str, sides: list[int], device: torch.device, dtype: torch.dtype, args: Any) -> list[dict]:
    from glocal.zoo import create_model, resolve

    name, overrides = SHAPES[shape]
    _, variant = resolve(name)
    with torch.device("meta"):  # meta tensors share data_ptr 0, so count elements rather than storages
        need = sum(p.numel() for p in variant.build(**overrides).parameters()) * dtype.itemsize
    free = available_bytes(device)
    if need > 0.8 * free:
        return [{"shape": shape, "side": s, "attention": a, "skipped": f"weights need {need / GIB:.1f} GiB, "
                 f"{free / GIB:.1f} GiB free on {device.type}"} for s in sides for a in ATTENTIONS]
    model = create_model(name, weights="random", quiet=True, **overrides).to(device=device, dtype=dtype)
    rows = []
    for side in sides:
        for attention in ATTENTIONS:
            try:
                row = _cell(model, attention, side, device, dtype, args)
            except torch.OutOfMemoryError:
                row = {"attention": attention, "side": side, "skipped": "out of memory"}
            rows.append({"shape": shape, **row})
            print(f"  {shape} {side} px {attention}: "
                  f"{row.get('seconds_per_step', row.get('skipped'))}", file=sys.stderr, flush=True)
    del model
    return rows


def _table(rows: list[dict]) -> str:
    """One line per (shape, side): the three s/step side by side and dense / Scale-DiT ratios."""
    head = (f"{'shape':<18} {'side':>5} {'T/N/M tokens':>20} {'pairs':>7} {'mask s':>7} {'scaledit s':>11} "
            f"{'dense-sdpa s':>12} {'dense-flex s':>12} {'sdpa/sdit':>9} {'flex/sdit':>9}")
    lines = [head, "-" * len(head)]
    keys = sorted({(r["shape"], r["side"]) for r in rows}, key=lambda k: (list(SHAPES).index(k[0]), k[1]))
    for shape, side in keys:
        cell = {r["attention"]: r for r in rows if (r["shape"], r["side"]) == (shape, side)}
        sd = cell.get("scaledit", {})
        secs = [cell.get(a, {}).get("seconds_per_step") for a in ATTENTIONS]
        fmt = [f"{s:.4g}" if s else "skip" for s in secs]
        ratio = [f"{d / secs[0]:.2f}x" if d and secs[0] else "-" for d in secs[1:]]
        tokens = f"{sd.get('text', '?')}/{sd.get('high_res', '?')}/{sd.get('low_res', '?')}"
        frac = f"{sd['pair_fraction']:.3f}" if "pair_fraction" in sd else "-"
        mask = f"{sd['setup_s']:.3g}" if "setup_s" in sd else "-"
        lines.append(f"{shape:<18} {side:>5} {tokens:>20} {frac:>7} {mask:>7} {fmt[0]:>11} {fmt[1]:>12} {fmt[2]:>12} "
                     f"{ratio[0]:>9} {ratio[1]:>9}")
    skipped = sorted({f"{r['shape']} {r['side']} px {r['attention']}: {r['skipped']}" for r in rows if "skipped" in r})
    return "\n".join(lines + [f"skipped: {s}" for s in skipped])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def _timed_mask(layout: Any, device: torch.device, exact: bool) -> tuple[float, Any]:
    """One BlockMask build (seconds are minutes apart between the two kinds: one build each is enough)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    bm = layout.block_mask(device, exact=exact)
    sync()
    return time.perf_counter() - t, bm


def _mask_builds(shape: str, sides: list[int], device: torch.device, budget_s: float) -> list[dict]:
    """Per rule set and side: BlockMask build seconds from block ranges and exactly, and blocks partial / full."""
    from glocal.zoo import resolve
    from glocal.zoo.models.scaledit import RULES, ScaleDiTLayout

    kw = resolve(SHAPES[shape][0])[1].kwargs
    for exact in (False, True):  # warm-up: imports and first-call costs stay out of the first row
        _timed_mask(ScaleDiTLayout(8, kw["window"], kw["window"], kw["window"], kw["factor"]), device, exact)
    rows = []
    for rules in RULES:
        per_pair = None  # exact build seconds per token pair, from the last exact build
        for side in sorted(sides):
            layout = ScaleDiTLayout.for_image(side, kw["text_tokens"], kw["window"], kw["factor"], rules=rules)
            row = {"shape": shape, "side": side, "rules": rules, "tokens": layout.total}
            builds = {}
            for kind in ("fast", "exact"):
                estimate = per_pair * layout.total ** 2 if per_pair else 0.0
                if kind == "exact" and estimate > budget_s:
                    row["exact_skipped"] = f"estimated {estimate:.0f} s > {budget_s:.0f}"
                    continue
                row[f"{kind}_s"], bm = _timed_mask(layout, device, exact=kind == "exact")
                builds[kind] = bm
                nb = bm.kv_num_blocks.shape[-1]
                row[f"{kind}_partial"] = int(bm.kv_num_blocks.sum()) / nb ** 2
                row[f"{kind}_full"] = int(bm.full_kv_num_blocks.sum()) / nb ** 2
                row["blocks"] = nb
            if "exact_s" in row:
                per_pair = row["exact_s"] / layout.total ** 2
                row["identical"] = all(torch.equal(getattr(builds["fast"], a), getattr(builds["exact"], a)) for a in
                                       ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"))
            rows.append(row)
            exact = f"{row['exact_s']:.3g} s" if "exact_s" in row else row["exact_skipped"]
            print(f"  masks {shape} {side} px {rules}: fast {row['fast_s']:.3g} s, exact {exact}", file=sys.stderr,
                  flush=True)
    return rows


def _mask_table(rows: list[dict]) -> str:
    """One line per (side, rule set): build seconds fast and exact, their ratio, blocks partial / full (%)."""
    head = (f"{'shape':<10} {'side':>5} {'rules':<9} {'tokens':>7} {'blocks':>6} {'fast s':>8} {'exact s':>8} "
            f"{'exact/fast':>10} {'partial% fast/exact':>20} {'full% fast/exact':>17} {'identical':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        exact = f"{r['exact_s']:.3g}" if "exact_s" in r else "skip"
        ratio = f"{r['exact_s'] / r['fast_s']:.0f}x" if "exact_s" in r else "-"
        part = f"{100 * r['fast_partial']:.3f}/" + (f"{100 * r['exact_partial']:.3f}" if "exact_s" in r else "-")
        full = f"{100 * r['fast_full']:.3f}/" + (f"{100 * r['exact_full']:.3f}" if "exact_s" in r else "-")
        lines.append(f"{r['shape']:<10} {r['side']:>5} {r['rules']:<9} {r['tokens']:>7} {r['blocks']:>6} "
                     f"{r['fast_s']:>8.3g} {exact:>8} {ratio:>10} {part:>20} {full:>17} "
                     f"{str(r.get('identical', '-')):>9}")
    skipped = [f"{r['side']} px {r['rules']} exact: {r['exact_skipped']}" for r in rows if "exact_skipped" in r]
    return "\n".join(lines + [f"skipped: {s}" for s in skipped])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    shapes = [s.strip() for s in args.shape.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        print(f"error: unknown shape {bad[0]!r}; expected one of {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    if args.masks:
        rows = []
        for shape in shapes:
            sides = [int(s) for s in args.sides.split(",")] if args.sides else [1024, 2048, 4096, 8192]
            rows += _mask_builds(shape, sides, device, args.budget_s)
        if args.json:
            print(json.dumps({"device": str(device), "rows": rows}, indent=1))
        else:
            print(f"Scale-DiT BlockMask build, {_device_name(device)}: from block ranges (fast) vs the exact "
                  "token-level reduction; partial/full = % of block pairs")
            print(_mask_table(rows))
        return 0
    args.rate = _macs_rate(device, dtype)
    rows: list[dict] = []
    for shape in shapes:
        sides = [int(s) for s in args.sides.split(",")] if args.sides else list(DEFAULT_SIDES[shape])
        rows += _run_shape(shape, sides, device, dtype, args)
    if args.json:
        print(json.dumps({"device": str(device), "dtype": str(dtype), "rows": rows}, indent=1))
    else:
        print(f"Scale-DiT vs dense, seconds per denoising step (median), {_device_name(device)}, "
              f"{str(dtype).split('.')[-1]}, "
              f"random weights, rules={args.rules}, flex {'eager' if args.no_compile else 'compiled'}; "
              f"pairs = fraction of query-key pairs Scale-DiT computes; ratios = dense / Scale-DiT")
        print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
