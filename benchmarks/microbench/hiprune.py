"""HiPrune on LLaVA-1.5: prefill latency, peak memory and FLOPs for keep = 576 (none), 192, 128, 64, side by side.

    bench microbench hiprune [--shapes tiny,7b] [--keeps 576,192,128,64] [--prompt 32] [--device cpu|cuda]
        [--dtype fp32|bf16] [--threads N] [--min-s 1] [--max-prefill-s 60] [--json]

A prefill is one forward of the whole model on one image and a ``--prompt``-token text (vision tower, projector,
HiPrune's selection, the language model on text + kept visual tokens, the next-token logits). ``none`` is the
unmodified transformers model. Random weights: this measures cost, not accuracy.

FLOPs are counted with ``torch.utils.flop_counter`` (2 per multiply-add) and printed beside the closed form
(``glocal.benchmarks.tasks.vlm.llava_prefill_flops``). The 7B shape is counted on the meta device, part by part
(vision tower with and without the HiPrune taps, projector, language model at the pruned length), because
selection needs real scores; its latency is measured only where one prefill is predicted to fit in
``--max-prefill-s`` (a 7B prefill is ~8.5 TFLOPs: minutes on a CPU). Memory: the key/value cache the prefill leaves
(measured from the cache tensors) and, on CUDA, the allocator's peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
import torch.nn as nn

from glocal.benchmarks.tasks.vlm import LLAVA_FLOPS_FORMULA, count_flops, llava_prefill_flops

NAME = "hiprune"
class BenchError(ValueError):
    """Bad arguments (one line)."""


def cache_bytes(output: Any) -> int:
    """Bytes of the key/value cache a prefill leaves for decoding (what pruning shrinks for every later token)."""
    cache = getattr(output, "cache", None)
    if cache is None:
        return 0
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
               if isinstance(t, torch.Tensor))


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured throughput of a 512x4096 @ 4096x4096 matmul (a 7B projection's shape), best of three."""
    a = torch.randn(512, 4096, device=device, dtype=dtype)
    b = torch.randn(4096, 4096, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(4):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * 512 * 4096 * 4096 / best / 1e9


def counted_real_flops(text_tokens: int, keeps: list[int | None]) -> dict[int | None, dict[str, int]]:
    """Counted FLOPs of the 7B shape on the meta device, part by part (no data-dependent selection needed)."""
    from glocal.zoo.methods.hiprune import ClipScorer
    from glocal.zoo.models import llava

    with torch.device("meta"):
        model = llava.build_llava("7b")
        p = model.config.image_seq_length
        pixels = torch.empty(1, 3, 336, 336)
        vision = count_flops(lambda: model.model.vision_tower(pixels, output_hidden_states=True))
        projector = count_flops(lambda: model.model.multi_modal_projector(torch.empty(1, p, 1024)))
        head = count_flops(lambda: model.lm_head(torch.empty(1, 1, 4096)))
        scorer = ClipScorer(model.model.vision_tower, 9, -2)
        tapped = count_flops(lambda: model.model.vision_tower(pixels, output_hidden_states=True))
        scorer.remove()
        out = {}
        for keep in keeps:
            length = text_tokens + (p if keep is None else keep)
            llm = count_flops(lambda n=length: model.model.language_model(inputs_embeds=torch.empty(1, n, 4096)))
            vis = vision if keep is None else tapped
            out[keep] = {"total": vis + projector + llm + head, "llm": llm, "length": length}
    return out


def _prefill_fn(model: nn.Module, keep: int | None, inputs: dict[str, torch.Tensor]) -> tuple[Any, nn.Module]:
    from glocal.zoo.methods.hiprune import HiPruneVLM

    runner = model if keep is None else HiPruneVLM(model, keep=keep)
    return (lambda: runner(**inputs, logits_to_keep=1)), runner


def bench_shape(shapes: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                keeps: list[int | None]) -> list[dict[str, Any]]:
    """Rows (one per keep) for one model shape: measured where it fits, counted FLOPs and the formula always."""
    from glocal.benchmarks.memory import measure_memory, tensor_bytes
    from glocal.benchmarks.timing import StopRule, measure
    from glocal.zoo.models import llava

    config = llava.llava_config(llava.LLAVA15_TINY if shapes == "tiny" else llava.LLAVA15_7B)
    text = args.prompt + 1  # <s> + prompt
    base_formula = llava_prefill_flops(config, text, None)["total"]
    if args.assumed_gflops is None and shapes != "tiny":
        args.assumed_gflops = matmul_gflops(device, dtype)
    rate = (args.assumed_gflops or 1.0) * 1e9
    run = shapes == "tiny" or base_formula / rate <= args.max_prefill_s
    rows: list[dict[str, Any]] = []
    counted_parts = counted_real_flops(text, keeps) if shapes != "tiny" else {}
    model = inputs = None
    if run:
        torch.manual_seed(0)
        model = llava.build_llava(shapes, dtype=dtype).to(device).eval()
        inputs = llava.dummy_inputs(model, prompt_tokens=args.prompt, device=device, dtype=dtype)
    for keep in keeps:
        formula = llava_prefill_flops(config, text, keep)
        row: dict[str, Any] = {"shape": shapes, "method": "none" if keep is None else f"hiprune:keep={keep}",
                               "visual_tokens": formula["length"] - text, "llm_tokens": formula["length"],
                               "formula_gflops": formula["total"] / 1e9, "formula_llm_gflops": formula["llm"] / 1e9}
        if run:
            fn, runner = _prefill_fn(model, keep, inputs)
            with torch.inference_mode():
                row["counted_gflops"] = count_flops(fn) / 1e9
                stats = measure(fn, batch=1, rule=StopRule(warmup_iters=1, warmup_s=0.0, min_iters=args.min_iters,
                                                           min_s=args.min_s, max_s=60.0), device=device)
                mem = measure_memory(fn, device, tensor_bytes(model))
            row["latency_ms"] = stats.median
            with torch.inference_mode():
                row["kv_mib"] = cache_bytes(fn()) / 2**20
            # CUDA: the allocator's peak; CPU has no allocator peak (RSS growth is allocator noise at these sizes)
            row["peak_mib"] = mem.get("peak_allocated")
            if keep is not None:
                row["kept"] = [int(k.numel()) for k in runner.last_kept]
                runner.remove()
        else:
            row["counted_gflops"] = counted_parts[keep]["total"] / 1e9
            row["not_run"] = (f"predicted {base_formula / rate:.0f} s per prefill at {args.assumed_gflops:.0f} GFLOP/s "
                              f"> --max-prefill-s {args.max_prefill_s:g}")
        rows.append(row)
    base = rows[0]
    for row in rows:
        for key in ("latency_ms", "peak_mib", "kv_mib", "counted_gflops", "formula_llm_gflops"):
            if row.get(key) is not None and base.get(key):
                row[key.rsplit("_", 1)[0] + "_ratio"] = row[key] / base[key]
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'shape':<5} {'method':<18} {'visual':>6} {'LLM tok':>7} {'prefill ms':>10} {'x':>6} "
            f"{'peak MiB':>9} {'KV MiB':>8} {'x':>6} {'GFLOPs':>10} {'formula':>10} {'x':>6} {'LLM x':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = f"{r['latency_ms']:10.1f} {r['latency_ratio']:6.3f}" if "latency_ms" in r else f"{'-':>10} {'-':>6}"
        peak = f"{r['peak_mib']:9.1f}" if r.get("peak_mib") is not None else f"{'-':>9}"
        mem = f"{peak} {r['kv_mib']:8.2f} {r['kv_ratio']:6.3f}" if "kv_mib" in r else f"{'-':>9} {'-':>8} {'-':>6}"
        lines.append(f"{r['shape']:<5} {r['method']:<18} {r['visual_tokens']:>6} {r['llm_tokens']:>7} {lat} {mem} "
                     f"{r['counted_gflops']:10.2f} {r['formula_gflops']:10.2f} {r['counted_ratio']:6.3f} "
                     f"{r['formula_llm_ratio']:6.3f}")
    notes = sorted({f"{r['shape']}: latency/memory not run ({r['not_run']})" for r in rows if "not_run" in r})
    return "\n".join(lines + notes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench microbench hiprune", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="tiny,7b", help="tiny and/or 7b (LLaVA-1.5-7B shapes, random weights)")
    p.add_argument("--keeps", default="576,192,128,64", help="visual tokens kept per image; 576 = none")
    p.add_argument("--prompt", type=int, default=32, help="text tokens besides <s> and the image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--min-s", type=float, default=1.0)
    p.add_argument("--max-prefill-s", type=float, default=60.0,
                   help="run a shape's latency only if one prefill is predicted to take at most this long")
    p.add_argument("--assumed-gflops", type=float, default=None,
                   help="device throughput for that prediction (default: a 512x4096x4096 matmul, measured)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = p.parse_args(argv)
    try:
        keeps = sorted({int(k) for k in args.keeps.split(",") if k.strip()}, reverse=True)
    except ValueError:
        raise BenchError(f"--keeps takes comma-separated integers, got {args.keeps!r}") from None
    if not keeps or keeps[-1] < 1 or keeps[0] > 576:
        raise BenchError(f"--keeps must lie in 1..576, got {args.keeps!r}")
    args.keep_list = [None] + [k for k in keeps if k != 576]
    args.shape_list = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not args.shape_list or set(args.shape_list) - {"tiny", "7b"}:
        raise BenchError(f"--shapes takes tiny and/or 7b, got {args.shapes!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    started = time.perf_counter()
    rows = []
    for shapes in args.shape_list:
        rows += bench_shape(shapes, args, device, dtype, args.keep_list)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    print(f"HiPrune prefill on LLaVA-1.5, one image + {args.prompt} text tokens, batch 1, {args.dtype}, "
          f"device: {device_name}; x = ratio to none; peak = "
          f"{'max allocated' if device.type == 'cuda' else 'not measured on CPU (no allocator peak)'}; "
          f"KV = key/value cache left by the prefill")
    print(format_table(rows))
    print(f"FLOPs = {LLAVA_FLOPS_FORMULA}; N = P + 1 vision tokens, L = text + kept visual tokens")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
