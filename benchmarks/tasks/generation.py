"""The ``generation`` task: one denoising step (one transformer forward) of an image or video generator at a
target side, its workload from formulas, and prompt-set quality with real weights.

The task is host-agnostic. A generation model (Scale-DiT on FLUX, UltraGen on Wan, ...) exposes:

* ``attentions``: the attention modes it can run, its own (sparse) one first; builders carry the same tuple as
  ``builder.attentions`` so options are checked before anything is built;
* ``configure(side, attention=..., frames=..., device=..., **host options)``: install the attention for that
  size (the latent grid is the host's business: FLUX packs 16 x 16 px per token, Wan adds frames);
* ``make_inputs(batch, device, dtype, seed=...)``: the step's keyword inputs (latent tokens, text tokens,
  timestep, guidance, position ids), called as ``model(**inputs)``;
* ``generation_workload()``: tokens by group, the fraction of query-key pairs computed, attention GMACs and the
  whole step's GMACs (formulas);
* ``make_pipeline(path, device)`` (quality only): a callable ``(prompt, side, seed) -> images``.

``--compare dense`` adds the host's dense attentions (``dense-sdpa``, ``dense-flex``) beside each cell;
host options a model's ``configure`` does not take are refused before anything runs. A video host's builder may
also carry ``check_side(resolution)`` and ``check_frames(frames)`` (raising ``ValueError``) so that sizes and frame
counts its latent grid cannot take are refused before anything runs; ``--resolution`` takes the video names
480p, 720p, 1080p and 4k (the cell's resolution is then 480, 720, 1080 or 2160, which the host maps to its size).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from glocal.benchmarks.tasks import (
    DatasetSpec,
    EvalContext,
    EvalResult,
    Task,
    TaskError,
    TaskOption,
    register_evaluator,
    register_task,
)

DENSE = ("dense-sdpa", "dense-flex")
VIDEO_RESOLUTIONS = {"480p": 480, "720p": 720, "1080p": 1080, "4k": 2160, "2160p": 2160}
HOST_OPTIONS = ("impl", "rules", "compile_flex", "text")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def named_resolutions(text: str) -> str:
    """``480p,1080p,4k`` -> ``480,1080,2160`` (other items unchanged): video names for ``--resolution``."""
    return ",".join(str(VIDEO_RESOLUTIONS.get(v.strip().lower(), v.strip())) for v in text.split(","))


def _host_check(variant: Any, name: str, value: int) -> None:
    """Run the builder's ``check_side`` / ``check_frames`` when it has one; its ValueError becomes a TaskError."""
    check = getattr(variant.builder, name, None)
    if check is not None:
        try:
            check(value)
        except ValueError as e:
            raise TaskError(f"{variant.name}: {e}") from None


def _attentions(variant: Any) -> tuple[str, ...]:
    return tuple(getattr(variant.builder, "attentions", ()) or ())


class GenerationTask(Task):
    name = "generation"
    options = {
        "attention": TaskOption(str, None, "attention mode: the model's own (default) or dense-sdpa, dense-flex"),
        "frames": TaskOption(int, 1, "frames of a video host (images: 1)"),
        "impl": TaskOption(str, None, "sparse attention implementation: flex (BlockMask) or sdpa (boolean mask)"),
        "compile_flex": TaskOption(_bool, True, "call a compiled flex_attention (eager flex materialises scores)"),
        "rules": TaskOption(str, None, "the host's rule set (Scale-DiT: inference or training)"),
        "text": TaskOption(int, None, "text tokens (default: the host's)"),
    }

    def check_options(self, card: Any, variant: Any, options: dict[str, Any]) -> dict[str, Any]:
        out = super().check_options(card, variant, options)
        modes = _attentions(variant)
        if not modes:
            raise TaskError(f"{variant.name} does not declare its attention modes (builder.attentions)")
        out["attention"] = out.get("attention") or modes[0]
        if out["attention"] not in modes:
            raise TaskError(f"{variant.name} has no attention {out['attention']!r} (modes: {', '.join(modes)})")
        if out["frames"] < 1:
            raise TaskError(f"frames must be at least 1, got {out['frames']}")
        _host_check(variant, "check_frames", out["frames"])
        return out

    def check_resolution(self, card: Any, variant: Any, resolution: int) -> None:
        super().check_resolution(card, variant, resolution)
        _host_check(variant, "check_side", resolution)

    def build_model(self, card: Any, variant: Any, cell: Any) -> torch.nn.Module:
        """The zoo's model with the cell's attention installed for its side (masks built on the cell's device)."""
        model = super().build_model(card, variant, cell)
        opts = dict(cell.task_options)
        accepted = set(inspect.signature(model.configure).parameters)
        host = {k: opts[k] for k in HOST_OPTIONS if opts.get(k) is not None}
        # a host option left at its default is dropped for hosts without it (compile_flex means nothing to Wan)
        refused = sorted(k for k in set(host) - accepted if host[k] != self.options[k].default)
        if refused:
            raise TaskError(f"{variant.name} takes no task option {', '.join(refused)}")
        host = {k: v for k, v in host.items() if k in accepted}
        try:
            model.configure(cell.resolution, attention=opts["attention"], frames=opts.get("frames", 1),
                            device=cell.device, **host)
        except ValueError as e:
            raise TaskError(str(e)) from None
        return model

    def make_inputs(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any, batch: int,
                    device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
        return model.make_inputs(batch=batch, device=device, dtype=dtype, seed=seed)

    def workload(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any) -> dict[str, Any]:
        return model.generation_workload()

    def compare(self, card: Any, variant: Any, value: str,
                options: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``--compare dense``: the same model with each dense attention it has; else another model."""
        if value.lower() == "dense":
            dense = [a for a in _attentions(variant) if a in DENSE]
            if not dense:
                raise TaskError(f"{variant.name} has no dense attention to compare with")
            return [(variant.name, {"attention": a}) for a in dense]
        return super().compare(card, variant, value, options)


register_task(GenerationTask())


# ----------------------------------------------------------------------------------------------- quality
def _split_path(value: str | None, what: str) -> tuple[str, Path]:
    kind, sep, path = (value or "").partition(":")
    if not sep or not kind or not path:
        raise TaskError(f"give {what}=KIND:PATH (e.g. {what}=ViT-L-14:/data/clip.bin)")
    return kind, Path(path).expanduser()


def _images_to_tensor(images: list[Any]) -> torch.Tensor:
    import numpy as np

    return torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
                        for im in images])


def _reference(path: Path) -> list[Any]:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if len(files) < 2:
        raise TaskError(f"reference folder {path} needs at least two images for FID")
    return [Image.open(p).convert("RGB") for p in files]


@register_evaluator("prompts", ("generation",), description="a prompt set (txt or JSONL): images written with "
                    "their seeds, CLIP score (open_clip), FID and patch-FID (user-supplied Inception weights)")
def evaluate_prompts(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec,
                     ctx: EvalContext) -> EvalResult:
    """``--dataset prompts=FILE,pipeline=DIR,out=DIR[,clip=ARCH:PATH][,inception=KIND:PATH,reference=DIR]
    [,crop=512][,limit=N]``: never with random weights (the harness skips those; refused here as well)."""
    from glocal.benchmarks.metrics import generation as gm
    from glocal.progress import track

    info = getattr(model, "glocal_weights", None)
    if info is None or info.is_random:
        raise TaskError("generation quality needs real weights (got random weights): give --weights PATH")
    if spec.path is None:
        raise TaskError("give the prompt set: --dataset prompts=FILE,pipeline=DIR,out=DIR")
    o = spec.options
    for key in ("pipeline", "out"):
        if key not in o:
            raise TaskError(f"--dataset prompts needs {key}=DIR")
    try:
        prompts = gm.load_prompts(spec.path)[: int(o["limit"])] if "limit" in o else gm.load_prompts(spec.path)
    except gm.GenerationDataError as e:
        raise TaskError(str(e)) from None
    side = ctx.resolution or 1024
    out = Path(o["out"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    generate = model.make_pipeline(o["pipeline"], ctx.device)
    images = []
    for i, p in enumerate(track(prompts, description="generating", enabled=ctx.progress)):
        image = generate(p.text, side=side, seed=p.seed)[0]
        image.save(out / f"{i:05d}_seed{p.seed}.png")
        images.append(image)
    metrics: dict[str, Any] = {}
    dataset = {"name": "prompts", "path": str(spec.path), "num_samples": len(prompts), "images": str(out)}
    try:
        if "clip" in o:
            arch, ckpt = _split_path(o["clip"], "clip")
            scores = gm.open_clip_scorer(arch, ckpt, ctx.device)(images, [p.text for p in prompts])
            metrics["clip_score"] = float(scores.mean())
            dataset["clip"] = f"open_clip {arch} ({ckpt.name}), raw cosine"
        if "inception" in o:
            kind, weights = _split_path(o["inception"], "inception")
            if "reference" not in o:
                raise TaskError("FID needs reference=DIR (real images)")
            extract = gm.inception_extractor(kind, weights, ctx.device)
            ref = _images_to_tensor(_reference(Path(o["reference"]).expanduser()))
            gen = _images_to_tensor(images)
            metrics["fid"] = gm.frechet_distance(extract(gen), extract(ref))
            crop = int(o.get("crop", 512))
            patches = [torch.cat([gm.patch_crops(x, crop) for x in batch]) for batch in (gen, ref)]
            metrics["fid_patch"] = gm.frechet_distance(extract(patches[0]), extract(patches[1]))
            dataset.update(inception=f"{kind} ({weights.name})", reference=o["reference"],
                           crop_protocol=f"non-overlapping {crop}x{crop} native-resolution grid crops")
    except gm.GenerationDataError as e:
        raise TaskError(str(e)) from None
    return EvalResult(metrics=metrics, dataset=dataset)
