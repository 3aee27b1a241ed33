"""Dehazing and super-resolution: task adapters and dataset evaluators with PSNR/SSIM and a baseline.

``resolution`` is the *output* side R: a dehazing model takes (3, R, R); an xs SR model takes
(3, R/s, R/s), so R must be a multiple of s (and of the variant's ``resolution_multiple``, which also refers
to the output side). Latency and memory are reported per output megapixel (``output_pixels`` = R^2).

Protocols (each evaluator records its own in ``metrics["protocol"]``):

* dehazing (DEA-Net's evaluation): outputs clamped to [0, 1] and kept as floats; PSNR and SSIM on RGB with
  data range 1, no border crop; baseline = the hazy input itself;
* super-resolution (BasicSR, as used by RGT and DLGSANet): outputs clamped and rounded to the 256 uint8
  levels (BasicSR's ``tensor2img`` does this before its metrics); PSNR and SSIM on the BT.601 Y channel
  (0-255 scale) with ``crop_border`` = scale; baseline = MATLAB-bicubic upscaling of the LR, rounded alike.

SSIM everywhere: Gaussian 11x11, sigma 1.5, valid region (:mod:`glocal.benchmarks.metrics.image_quality`).
Scores are means over images. Images of a set differ in size, so models run one image at a time; the
option ``tile=N`` (model-input pixels; ``overlap=M``, default max(8, N/8)) runs them with
:func:`glocal.zoo.layers.tiling.tiled_forward`; ``limit=K`` scores only the first K samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from glocal.benchmarks.metrics.image_quality import psnr_per_image, ssim_per_image
from glocal.benchmarks.tasks import (
    DatasetSpec,
    EvalContext,
    EvalResult,
    Task,
    TaskError,
    register_evaluator,
    register_task,
)
from glocal.progress import track

DEFAULT_RESOLUTION = 256
DEHAZE_PROTOCOL = ("RGB PSNR/SSIM on float outputs clamped to [0, 1] (data range 1, no border crop, no "
                   "8-bit rounding); SSIM Gaussian 11x11 sigma 1.5, valid region; mean over images")
SR_PROTOCOL = ("Y-channel (BT.601, 0-255) PSNR/SSIM, border crop = scale ({s} px), outputs clamped and "
               "rounded to uint8 levels; SSIM Gaussian 11x11 sigma 1.5, valid region; mean over images")


# ------------------------------------------------------------------------------------------------ tasks
def _nearest_multiple(r: int, k: int) -> int:
    return max(k, round(r / k) * k)


class DehazingTask(Task):
    """Dehazing: input (3, R, R) hazy RGB in [0, 1], output the same size."""

    name = "dehazing"

    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...]:
        return (3, resolution, resolution)

    def default_resolution(self, card: Any, variant: Any) -> int:
        if variant.resolutions:
            return variant.resolutions[0]
        return _nearest_multiple(DEFAULT_RESOLUTION, variant.resolution_multiple)

    def output_pixels(self, card: Any, variant: Any, resolution: int) -> int:
        return resolution * resolution

    def default_dataset(self, card: Any, variant: Any) -> DatasetSpec:
        return DatasetSpec("builtin-haze")


def _scale(variant: Any) -> int:
    if not variant.scale or variant.scale < 1:
        raise TaskError(f"{variant.name} is a super-resolution variant without a scale in its card")
    return int(variant.scale)


class SuperResolutionTask(Task):
    """Super-resolution: ``resolution`` is the HR output side R; the input is (3, R/s, R/s)."""

    name = "super_resolution"

    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...]:
        s = _scale(variant)
        return (3, resolution // s, resolution // s)

    def check_resolution(self, card: Any, variant: Any, resolution: int) -> None:
        """The output side must be a multiple of the scale and of the variant's ``resolution_multiple``."""
        s = _scale(variant)
        k = math.lcm(s, variant.resolution_multiple)
        if resolution <= 0 or resolution % k:
            lo = max(k, resolution // k * k)
            raise TaskError(f"{variant.name} (x{s}) cannot run at {resolution}: the output side must be a "
                            f"positive multiple of {k} (e.g. {lo}, {lo + k})")

    def default_resolution(self, card: Any, variant: Any) -> int:
        if variant.resolutions:
            return variant.resolutions[0]
        return _nearest_multiple(DEFAULT_RESOLUTION, math.lcm(_scale(variant), variant.resolution_multiple))

    def output_pixels(self, card: Any, variant: Any, resolution: int) -> int:
        return resolution * resolution

    def default_dataset(self, card: Any, variant: Any) -> DatasetSpec:
        return DatasetSpec("builtin-sr")


register_task(DehazingTask())
register_task(SuperResolutionTask())


# ------------------------------------------------------------------------------------------------ options
COMMON_OPTIONS = ("tile", "overlap", "limit")


def _options(spec: DatasetSpec, extra: Sequence[str] = ()) -> dict[str, str]:
    known = (*COMMON_OPTIONS, *extra)
    bad = sorted(set(spec.options) - set(known))
    if bad:
        raise TaskError(f"dataset {spec.name!r} has no option {bad[0]!r} (known: {', '.join(known)})")
    return dict(spec.options)


def _int_opt(opts: dict[str, str], key: str, default: int | None = None, minimum: int = 1) -> int | None:
    if key not in opts or opts[key] in ("", None):
        return default
    try:
        v = int(opts[key])
    except (TypeError, ValueError):
        raise TaskError(f"dataset option {key}={opts[key]!r} is not an integer") from None
    if v < minimum:
        raise TaskError(f"dataset option {key} must be >= {minimum}, got {v}")
    return v


def _need_path(spec: DatasetSpec) -> Path:
    if spec.path is None:
        raise TaskError(f"--dataset {spec.name} needs a folder: --dataset {spec.name}=PATH")
    if not spec.path.exists():
        raise TaskError(f"dataset folder not found: {spec.path}")
    return spec.path


def _dataset_error(fn: Callable[[], Any]) -> Any:
    from glocal.datasets.registry import DatasetError

    try:
        return fn()
    except DatasetError as e:
        raise TaskError(str(e)) from e


# ------------------------------------------------------------------------------------------------ scoring
def _forward(model: Callable, x: torch.Tensor, ctx: EvalContext, scale: int, tile: int | None,
             overlap: int | None) -> torch.Tensor:
    """One (3, h, w) image through the model on ctx.device/dtype -> float32 (3, sh, sw) on the device."""
    from glocal.zoo.layers.tiling import tiled_forward

    xb = x.unsqueeze(0).to(ctx.device, ctx.dtype)
    if ctx.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    if tile:
        ov = overlap if overlap is not None else _default_overlap(tile)
        try:
            y = tiled_forward(model, xb, tile=tile, overlap=ov, scale=scale)
        except ValueError as e:
            raise TaskError(f"tiled inference: {e}") from e
    else:
        y = model(xb)
    if not isinstance(y, torch.Tensor):
        raise TaskError(f"model returned {type(y).__name__}, expected an image tensor")
    want = (1, 3, x.shape[-2] * scale, x.shape[-1] * scale)
    if tuple(y.shape) != want:
        raise TaskError(f"model returned {tuple(y.shape)} for a {tuple(xb.shape)} input; expected {want}")
    return y[0].float().clamp_(0, 1)


def _metric_device(ctx: EvalContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def score(model: Callable, samples: Sequence[dict], ctx: EvalContext, *, kind: str, scale: int = 1,
          tile: int | None = None, overlap: int | None = None,
          description: str = "restoration") -> dict[str, Any]:
    """Mean PSNR/SSIM of the model and of the baseline over samples (``hazy``/``clear`` or ``lr``/``hr``),
    with a per-group breakdown when samples carry different ``level`` values."""
    from glocal.datasets.matlab_resize import imresize, quantize_uint8

    sr = kind == "sr"
    kw = {"data_range": 1.0, "crop_border": scale, "y_channel": True} if sr else {"data_range": 1.0}
    dev = _metric_device(ctx)
    rows: list[tuple[int, tuple[Any, float, float, float, float]]] = []
    if hasattr(model, "eval"):
        model.eval()
    mine = ctx.shard.indices(len(samples))
    with torch.inference_mode():
        for i in track(mine, total=len(mine), description=description, enabled=ctx.progress):
            s = samples[i]
            x, target = (s["lr"], s["hr"]) if sr else (s["hazy"], s["clear"])
            out = _forward(model, x, ctx, scale if sr else 1, tile, overlap).to(dev)
            if sr:
                out = quantize_uint8(out)
                base = quantize_uint8(imresize(x, float(scale)))
            else:
                base = x
            t, base = target.to(dev), base.to(dev)
            rows.append((i, (s.get("level"), psnr_per_image(out, t, **kw)[0], ssim_per_image(out, t, **kw)[0],
                             psnr_per_image(base, t, **kw)[0], ssim_per_image(base, t, **kw)[0])))
    rows = ctx.shard.gather(rows)  # every rank's rows in sample order: the same sums as one process
    if not rows:
        raise TaskError(f"{description}: no samples to score")

    def mean(i: int, rs: list) -> float:
        return sum(r[i] for r in rs) / len(rs)

    metrics: dict[str, Any] = {
        "psnr": mean(1, rows), "ssim": mean(2, rows),
        "baseline": {"method": "bicubic" if sr else "hazy input", "psnr": mean(3, rows),
                     "ssim": mean(4, rows)},
        "protocol": SR_PROTOCOL.format(s=scale) if sr else DEHAZE_PROTOCOL,
        "num_samples": len(rows),
    }
    groups = sorted({r[0] for r in rows if r[0] is not None})
    if len(groups) > 1:
        metrics["per_level"] = {}
        for g in groups:
            rs = [r for r in rows if r[0] == g]
            metrics["per_level"][f"L{g}"] = {"psnr": mean(1, rs), "ssim": mean(2, rs),
                                             "baseline_psnr": mean(3, rs), "baseline_ssim": mean(4, rs),
                                             "num_samples": len(rs)}
    return metrics


class _Limited(Sequence):
    """The first ``n`` items of an indexable dataset, read lazily."""

    def __init__(self, ds: Any, n: int | None) -> None:
        self.ds, self.n = ds, len(ds) if n is None else min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return _dataset_error(lambda: self.ds[i])


def _default_overlap(tile: int) -> int:
    return min(tile - 1, max(8, tile // 8))


def _run(model: Callable, ds: Any, ctx: EvalContext, opts: dict[str, str], *, kind: str, scale: int,
         name: str, dataset: dict[str, Any]) -> EvalResult:
    samples = _Limited(ds, _int_opt(opts, "limit"))
    tile = _int_opt(opts, "tile")
    overlap = _int_opt(opts, "overlap", minimum=0)
    if tile and overlap is None:
        overlap = _default_overlap(tile)
    metrics = score(model, samples, ctx, kind=kind, scale=scale, tile=tile, overlap=overlap, description=name)
    if tile:
        metrics["tiling"] = {"tile": tile, "overlap": overlap}
    return EvalResult(metrics=metrics, dataset={"name": name, "num_samples": len(samples), **dataset})


# ------------------------------------------------------------------------------------------------ dehazing
def _check_options(extra: Sequence[str] = ()) -> Callable[[Any, Any, DatasetSpec], None]:
    """An ``open`` hook for the built-in sets: only the options are checked (the data is generated)."""

    def check(card: Any, variant: Any, spec: DatasetSpec) -> None:
        _int_opt(_options(spec, extra), "limit")

    return check


@register_evaluator("builtin-haze", ("dehazing",), open=_check_options(),
                    description="built-in: 5 scikit-image crops (240x240), seeded synthetic haze (level L2)")
def evaluate_builtin_haze(model: Callable, card: Any, variant: Any, spec: DatasetSpec,
                          ctx: EvalContext) -> EvalResult:
    """PSNR/SSIM (RGB) of the model and of the hazy input on the built-in hazy set."""
    from glocal.datasets import builtin

    opts = _options(spec)
    return _run(model, builtin.builtin_haze(), ctx, opts, kind="dehaze", scale=1, name="builtin-haze",
                dataset={"path": None, "builtin": True,
                         "generator": f"8kdehaze-synth level L{builtin.HAZE_LEVEL} seed {builtin.HAZE_SEED}",
                         "images": list(builtin.IMAGES)})


def _open_paired(card: Any, variant: Any, spec: DatasetSpec) -> Any:
    from glocal.datasets.restoration import PairedDehazeFolder

    _options(spec)
    return _dataset_error(lambda: PairedDehazeFolder(_need_path(spec)))


def _paired(name: str, description: str) -> None:
    @register_evaluator(name, ("dehazing",), description=description, open=_open_paired)
    def evaluate(model: Callable, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
        opts, root = _options(spec), _need_path(spec)
        ds = _open_paired(card, variant, spec)
        return _run(model, ds, ctx, opts, kind="dehaze", scale=1, name=name,
                    dataset={"path": str(root), "builtin": False, "hazy_dir": ds.hazy_dir.name,
                             "clear_dir": ds.clear_dir.name})

    evaluate.__name__ = f"evaluate_{name}"


_paired("sots", "SOTS (RESIDE) folder: hazy/ + clear/ or GT/ (hazy 1400_1.png -> clear 1400.png)")
_paired("haze4k", "Haze4K folder: test/haze/ + test/gt/ (hazy 1_0.89_1.56.png -> gt 1.png)")


EIGHTK_OPTIONS = ("level", "split", "size", "crop", "crop_mode", "seed")


def _open_eightk(spec: DatasetSpec, synthetic_only: bool) -> Any:
    from glocal.datasets.eightk_dehaze import EightKDehaze

    opts = _options(spec, EIGHTK_OPTIONS)
    _int_opt(opts, "limit")
    root = _need_path(spec)
    level = opts.get("level", "all").lower().removeprefix("l")
    if level != "all" and not level.isdigit():
        raise TaskError(f"8kdehaze option level={opts['level']!r}: expected 1-4 or all")
    levels = None if level == "all" else (int(level),)
    ds = _dataset_error(lambda: EightKDehaze(
        root, levels=levels, split=opts.get("split", "test"), size=_int_opt(opts, "size"),
        crop=_int_opt(opts, "crop"), crop_mode=opts.get("crop_mode", "center"),
        seed=_int_opt(opts, "seed", 0, minimum=0)))
    if synthetic_only and ds.dataset_name == "8kdehaze":
        raise TaskError(f"{root} has no 8kdehaze-synth manifest.json; score the original set with "
                        f"--dataset 8kdehaze={root}")
    return ds


def _eightk(name: str, description: str, synthetic_only: bool) -> None:
    @register_evaluator(name, ("dehazing",), description=description,
                        open=lambda card, variant, spec: _open_eightk(spec, synthetic_only))
    def evaluate(model: Callable, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
        opts, root = _options(spec, EIGHTK_OPTIONS), _need_path(spec)
        ds = _open_eightk(spec, synthetic_only)
        return _run(model, ds, ctx, opts, kind="dehaze", scale=1, name=ds.dataset_name,
                    dataset={"path": str(root), "builtin": False, "split": ds.split,
                             "levels": [f"L{k}" for k in ds.levels], "images": len(ds.names),
                             "working_size": ds.size, "crop": ds.crop,
                             "crop_mode": ds.crop_mode if ds.crop else None})

    evaluate.__name__ = f"evaluate_{name.replace('-', '_')}"


_eightk("8kdehaze", "8KDehaze folder (clear/ + cloud_L1..L4/); options level=1-4|all, split=test|train|all, "
        "size=N (downscale), crop=N, crop_mode=center|random", synthetic_only=False)
_eightk("8kdehaze-synth", "a set written by the 8kdehaze-synth generator (layout and options as 8kdehaze)",
        synthetic_only=True)


# ------------------------------------------------------------------------------------------ super-resolution
@register_evaluator("builtin-sr", ("super_resolution",), open=_check_options(),
                    description="built-in: 5 scikit-image crops (240x240 HR), MATLAB-bicubic LR")
def evaluate_builtin_sr(model: Callable, card: Any, variant: Any, spec: DatasetSpec,
                        ctx: EvalContext) -> EvalResult:
    """Y-channel PSNR/SSIM of the model and of bicubic upscaling on the built-in SR set."""
    from glocal.datasets import builtin

    opts = _options(spec)
    s = _scale(variant)
    if s not in (2, 3, 4):
        raise TaskError(f"builtin-sr has scales 2, 3 and 4; {variant.name} is x{s}")
    return _run(model, builtin.builtin_sr(s), ctx, opts, kind="sr", scale=s, name="builtin-sr",
                dataset={"path": None, "builtin": True, "scale": s, "images": list(builtin.IMAGES),
                         "lr": "MATLAB bicubic (generated)"})


def _open_sr(card: Any, variant: Any, spec: DatasetSpec) -> Any:
    from glocal.datasets.restoration import SRFolder

    _int_opt(_options(spec), "limit")
    root, s = _need_path(spec), _scale(variant)
    return _dataset_error(lambda: SRFolder(root, s))


def _sr_folder(name: str, description: str) -> None:
    @register_evaluator(name, ("super_resolution",), description=description, open=_open_sr)
    def evaluate(model: Callable, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
        opts, root, s = _options(spec), _need_path(spec), _scale(variant)
        ds = _open_sr(card, variant, spec)
        return _run(model, ds, ctx, opts, kind="sr", scale=s, name=name,
                    dataset={"path": str(root), "builtin": False, "scale": s, "layout": ds.layout})

    evaluate.__name__ = f"evaluate_{name.replace('-', '_')}"


for _name, _what in (("set5", "Set5"), ("set14", "Set14"), ("b100", "B100 (BSD100)"),
                     ("urban100", "Urban100"), ("manga109", "Manga109")):
    _sr_folder(_name, f"{_what} folder: HR/ + LR_bicubic/X<s>/, or HR images only (LR: MATLAB bicubic)")
_sr_folder("sr-folder", "any SR folder: HR/ + LR_bicubic/X<s>/, or HR images only (LR: MATLAB bicubic)")
