"""UltraGen against dense Wan: seconds per denoising step (one transformer forward), side by side, with the ratio.

    bench microbench ultragen [--shapes tiny,1.3b] [--videos 9x256x256,81x480p] [--device cpu|cuda]
        [--dtype fp32|bf16] [--max-step-s 60] [--json]

One model per shape with random weights: UltraGen is timed, then the same model with Wan's own processor on every
``attn1`` (dense SDPA, identical base weights), so the two columns differ only in the self-attention. A video is
``FRAMESxHEIGHTxWIDTH`` or ``FRAMESxNAME`` (480p, 720p, 1080p, 4k), mapped to the token grid through the Wan VAE
(4x temporal, 8x spatial) and 1x2x2 patches; the text context is 512 tokens, as umT5 gives Wan. A video whose dense
step is predicted (from the forward's FLOPs and this device's measured matmul rate) to take longer than
``--max-step-s`` is not run and is listed as skipped. Attention FLOPs: the paper's eq. 12 (K = 4, the dense layers
at 4 d N^2) and the exact count of the released geometry; ``pairs`` is the fraction of dense attention's
query-key pairs that UltraGen computes.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import torch

from glocal.benchmarks.timing import StopRule, measure
from glocal.progress import track

NAME = "ultragen"
TEXT_TOKENS = 512
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHAPES = {"tiny": "WAN_TINY", "1.3b": "WAN21_1_3B"}
DEFAULT_VIDEOS = {"tiny": ("9x256x256", "17x480p", "81x480p"),
                  "1.3b": ("5x128x128", "9x256x256", "81x480p", "81x720p", "81x1080p", "29x4k")}


class BenchError(ValueError):
    """Bad arguments (one line)."""


@dataclass(frozen=True)
class Video:
    """A video size: frames, height, width (pixels) and how it was written."""

    label: str
    frames: int
    height: int
    width: int


def parse_video(text: str) -> Video:
    """``81x480p`` or ``9x256x256`` -> :class:`Video`."""
    from glocal.zoo.models.ultragen import VIDEO_SIZES

    m = re.fullmatch(r"(\d+)x(?:(\d+)x(\d+)|([0-9a-z]+))", text.strip().lower())
    if m is None or (m.group(4) and m.group(4) not in VIDEO_SIZES):
        raise BenchError(f"video {text!r}: expected FRAMESxHEIGHTxWIDTH or FRAMESx{{{','.join(VIDEO_SIZES)}}}")
    h, w = VIDEO_SIZES[m.group(4)] if m.group(4) else (int(m.group(2)), int(m.group(3)))
    return Video(text.strip(), int(m.group(1)), h, w)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """This device's dense matmul rate in FLOP/s (median of a few n x n products)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    stats = measure(lambda: a @ b, batch=1, rule=StopRule(warmup_iters=2, warmup_s=0, min_iters=5, min_s=0.2),
                    device=device)
    return 2 * n**3 / (stats.median / 1000)


def _step_fn(model: torch.nn.Module, inputs: tuple) -> Any:
    def step() -> None:
        with torch.no_grad():
            model(*inputs, return_dict=False)
    return step


def bench_shape(shape: str, videos: list[Video], device: torch.device, dtype: torch.dtype, max_step_s: float,
                rate: float) -> list[dict[str, Any]]:
    """Time every video at one shape: UltraGen, then dense Wan on the same model and weights."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from glocal.zoo.models import ultragen as U

    cfg = getattr(U, SHAPES[shape])
    torch.manual_seed(0)
    model = U.build_ultragen(**cfg).to(device).eval()
    if dtype != torch.float32:
        model.to(dtype)
    ultra, opts = dict(model.attn_processors), model.ultragen_options
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    rows = []
    for video in track(videos, description=f"ultragen {shape}"):
        grid = U.wan_latent_grid(video.frames, video.height, video.width)
        n = grid[0] * grid[1] * grid[2]
        dense_attn = 4.0 * d * n * n * cfg["num_layers"]
        row: dict[str, Any] = {
            "shape": shape, "video": video.label, "frames": video.frames, "size": f"{video.height}x{video.width}",
            "grid": list(grid), "tokens": n,
            "eq12_attention_tflops": U.eq12_attention_flops(n, d, cfg["num_layers"], U.RELEASED_DENSE_LAYERS) / 1e12,
            "exact_attention_tflops": U.exact_attention_flops(grid, d, cfg["num_layers"], opts) / 1e12,
            "dense_attention_tflops": dense_attn / 1e12,
            "pair_fraction": U.pair_fraction(grid, cfg["num_layers"], opts),
        }
        predicted = U.step_flops(cfg, n, TEXT_TOKENS, dense_attn) / rate
        row["predicted_dense_s"] = predicted
        if predicted > max_step_s:
            rows.append({**row, "status": f"skipped: dense step predicted {predicted:.0f} s > {max_step_s:g} s"})
            continue
        g = torch.Generator().manual_seed(1)
        inputs = (torch.randn(1, cfg["in_channels"], grid[0], 2 * grid[1], 2 * grid[2], generator=g),
                  torch.tensor([700.0]), torch.randn(1, TEXT_TOKENS, cfg["text_dim"], generator=g))
        inputs = tuple(x.to(device=device, dtype=dtype if x.ndim > 1 else torch.float32) for x in inputs)
        rule = StopRule(warmup_iters=1, warmup_s=0, min_iters=3 if predicted < 5 else 1, min_s=0,
                        max_s=3 * max_step_s)
        for name, processors in (("ultragen", ultra), ("dense", None)):
            model.set_attn_processor(dict(processors) if processors is not None else WanAttnProcessor())
            stats = measure(_step_fn(model, inputs), batch=1, rule=rule, device=device, unit="steps/s")
            row[f"{name}_s"] = stats.median / 1000
        model.set_attn_processor(dict(ultra))  # set_attn_processor empties the dict it is given
        row["ratio"] = row["dense_s"] / row["ultragen_s"]
        row["status"] = "ok"
        rows.append(row)
    del model
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'shape':5} {'video':11} {'grid':12} {'tokens':>8} {'UltraGen s':>11} {'dense s':>9} {'dense/UG':>8} "
            f"{'eq12 TF':>9} {'exact TF':>9} {'dense TF':>9} {'pairs':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        grid = "x".join(map(str, r["grid"]))
        timed = (f"{r['ultragen_s']:>11.4g} {r['dense_s']:>9.4g} {r['ratio']:>7.2f}x" if r["status"] == "ok"
                 else f"{'-':>11} {'-':>9} {'-':>8}")
        lines.append(f"{r['shape']:5} {r['video']:11} {grid:12} {r['tokens']:>8} {timed} "
                     f"{r['eq12_attention_tflops']:>9.3g} {r['exact_attention_tflops']:>9.3g} "
                     f"{r['dense_attention_tflops']:>9.3g} {r['pair_fraction']:>6.3f}"
                     + ("" if r["status"] == "ok" else f"  ({r['status']})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench microbench ultragen", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,1.3b", help="comma-separated: tiny, 1.3b")
    parser.add_argument("--videos", default=None, help="comma-separated FRAMESxHxW or FRAMESxNAME (default per shape)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--max-step-s", type=float, default=60.0, help="skip videos whose dense step would be longer")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    try:
        shapes = [s.strip().lower() for s in args.shapes.split(",") if s.strip()]
        bad = [s for s in shapes if s not in SHAPES]
        if bad or not shapes:
            raise BenchError(f"--shapes: unknown {bad or args.shapes!r} (known: {', '.join(SHAPES)})")
        videos = {s: [parse_video(v) for v in (args.videos.split(",") if args.videos else DEFAULT_VIDEOS[s])]
                  for s in shapes}
        from glocal.zoo.models.ultragen import wan_latent_grid

        for vs in videos.values():
            for v in vs:
                wan_latent_grid(v.frames, v.height, v.width)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    started = time.perf_counter()
    rate = matmul_rate(device, dtype)
    rows = [r for s in shapes for r in bench_shape(s, videos[s], device, dtype, args.max_step_s, rate)]
    if args.json:
        print(json.dumps({"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
                          "matmul_tflops": rate / 1e12, "rows": rows}, indent=1))
    else:
        print(f"device {device} ({args.dtype}, {torch.get_num_threads()} threads, matmul {rate / 1e9:.1f} GFLOP/s); "
              f"random weights; {time.perf_counter() - started:.0f} s")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
