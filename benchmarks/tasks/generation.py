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
* ``make_pipeline(path, device)`` (quality only): a callable ``(prompt, side, seed) -> images``; a video host's
  ``make_pipeline(path, device, dtype)`` returns ``(prompt, side, seed, frames, steps=..., guidance=...) -> video``
  (T, 3, H, W) in [0, 1], and the host exposes ``frames`` (the configured count).

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


def _prompt_set(model: torch.nn.Module, spec: DatasetSpec) -> list[Any]:
    """The checks both kinds of host share (real weights, prompt file, pipeline and out folders), then the prompts."""
    from glocal.benchmarks.metrics import generation as gm

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
        return gm.load_prompts(spec.path)[: int(o["limit"])] if "limit" in o else gm.load_prompts(spec.path)
    except gm.GenerationDataError as e:
        raise TaskError(str(e)) from None


def _video_host(model: torch.nn.Module) -> bool:
    """A host whose builder checks frame counts generates videos (UltraGen on Wan)."""
    return callable(getattr(model, "check_frames", None))


@register_evaluator("prompts", ("generation",), description="a prompt set (txt or JSONL): images or videos written "
                    "with their seeds; images: CLIP score (open_clip), FID and patch-FID (user-supplied Inception "
                    "weights); videos: CLIP score per frame, temporal consistency, HD-MSE, HD-LPIPS, HD-FVD (user-"
                    "supplied CLIP, LPIPS and I3D files)")
def evaluate_prompts(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec,
                     ctx: EvalContext) -> EvalResult:
    """``--dataset prompts=FILE,pipeline=DIR,out=DIR[,clip=ARCH:PATH][,inception=KIND:PATH,reference=DIR]
    [,crop=512][,limit=N]``: never with random weights (the harness skips those; refused here as well). A video
    host takes :func:`evaluate_videos`' options instead of ``inception`` and ``crop``."""
    from glocal.benchmarks.metrics import generation as gm
    from glocal.progress import track

    prompts = _prompt_set(model, spec)
    if _video_host(model):
        return evaluate_videos(model, spec, ctx, prompts)
    o = spec.options
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


# ----------------------------------------------------------------------------------------------- video quality
FRAME_FORMAT = "one folder of 8-bit PNG frames per video ({i:05d}_seed{seed}/{t:04d}.png), lossless"
HD_CAVEAT = ("hd_mse and hd_lpips sum what a video loses under 2^k down-up sampling (k = 3, 4, 5): higher means more "
             "high-frequency content, which noise and artefacts also have, so they reward noise; read them only "
             "beside hd_fvd and clip_score")


def quantise_video(video: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> uint8, as the frames are written (the measures read these values)."""
    return (video.clamp(0, 1) * 255).round().to(torch.uint8)


def write_video_frames(video: torch.Tensor, folder: Path) -> None:
    """A uint8 (T, 3, H, W) video as ``folder/0000.png ...`` (PNG: lossless, readable anywhere)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"{t:04d}.png")


def read_video_frames(folder: Path) -> torch.Tensor:
    """A folder of frames (PNG or JPEG, in name order) -> float (T, 3, H, W) in [0, 1]."""
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise TaskError(f"{folder} holds no frames (PNG or JPEG files)")
    try:
        return _images_to_tensor([Image.open(f) for f in files])
    except OSError as e:
        raise TaskError(f"{folder}: unreadable frame ({str(e).splitlines()[0]})") from None
    except RuntimeError:
        raise TaskError(f"{folder}: frames of different sizes") from None


def _reference_videos(path: Path) -> list[Path]:
    """The reference set of HD-FVD: one sub-folder of frames per real video."""
    if not path.is_dir():
        raise TaskError(f"reference video folder not found: {path}")
    folders = sorted(f for f in path.iterdir() if f.is_dir())
    if not folders:
        raise TaskError(f"reference folder {path} needs one sub-folder of frames per video (none found)")
    return folders


def _video_measures(o: dict[str, str], ctx: EvalContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The extractors the options ask for, loaded before anything is generated, and their record lines."""
    from glocal.benchmarks.metrics import video_quality as vq

    for key in ("inception", "crop"):
        if key in o:
            raise TaskError(f"{key}= is an image measure; a video host takes clip=ARCH:PATH, lpips=KIND:PATH, "
                            "i3d=KIND:PATH,reference=DIR")
    tools: dict[str, Any] = {}
    lines: dict[str, Any] = {}
    if "clip" in o:
        arch, ckpt = _split_path(o["clip"], "clip")
        tools["clip"] = vq.open_clip_frames(arch, ckpt, ctx.device)
        lines["clip"] = f"open_clip {arch} ({ckpt.name}), raw cosine per frame; temporal consistency from its " \
                        "frame embeddings"
    if "lpips" in o:
        kind, path = _split_path(o["lpips"], "lpips")
        tools["lpips"] = vq.lpips_distance(kind, path, ctx.device)
        lines["lpips"] = f"{kind} ({path.name})"
    if "i3d" in o:
        kind, path = _split_path(o["i3d"], "i3d")
        if "reference" not in o:
            raise TaskError("HD-FVD needs reference=DIR (one sub-folder of frames per real video)")
        tools["i3d"], tools["patch"] = vq.i3d_extractor(kind, path, ctx.device), int(o.get("patch", vq.I3D_SIZE))
        refs = _reference_videos(Path(o["reference"]).expanduser())
        tools["reference"] = torch.cat([vq.patch_features(read_video_frames(f), tools["i3d"], tools["patch"])
                                        for f in refs])
        lines.update(i3d=f"{kind} ({path.name})", reference=o["reference"], reference_videos=len(refs),
                     patch_protocol=f"non-overlapping {tools['patch']}x{tools['patch']} native-resolution patches, "
                                    "every frame")
    return tools, lines


def _sampling(generate: Any, o: dict[str, str]) -> dict[str, Any]:
    """``steps`` and ``guidance`` from the options, else the pipeline's defaults (recorded as used)."""
    params = inspect.signature(generate).parameters
    out = {}
    for key, cast in (("steps", int), ("guidance", float)):
        if key in o:
            out[key] = cast(o[key])
        elif key in params and params[key].default is not inspect.Parameter.empty:
            out[key] = params[key].default
    return out


def evaluate_videos(model: torch.nn.Module, spec: DatasetSpec, ctx: EvalContext, prompts: list[Any]) -> EvalResult:
    """``--dataset prompts=FILE,pipeline=DIR,out=DIR[,clip=ARCH:PATH][,lpips=KIND:PATH][,i3d=KIND:PATH,
    reference=DIR][,patch=224][,steps=N][,guidance=G][,limit=N]`` on a video host at its configured frame count:
    videos written as PNG frames with their seeds, then CLIP score (mean over frames and videos), temporal
    consistency (needs clip), HD-MSE, HD-LPIPS (needs lpips) and HD-FVD (needs i3d and reference videos)."""
    from glocal.benchmarks.metrics import generation as gm
    from glocal.progress import track

    o, frames = spec.options, int(model.frames)
    if frames < 2:
        raise TaskError(f"video quality needs at least 2 frames (--frames 5, 81 ...), got {frames}")
    try:
        tools, lines = _video_measures(o, ctx)
        generate = model.make_pipeline(o["pipeline"], ctx.device, ctx.dtype)
    except (gm.GenerationDataError, ValueError) as e:
        raise TaskError(str(e).splitlines()[0]) from None
    sampling = _sampling(generate, o)
    side, out = ctx.resolution or 480, Path(o["out"]).expanduser()
    sums: dict[str, list[float]] = {}
    feats, size = [], ""
    for i, p in enumerate(track(prompts, description="generating videos", enabled=ctx.progress)):
        video = quantise_video(generate(p.text, side=side, seed=p.seed, frames=frames, **sampling))
        write_video_frames(video, out / f"{i:05d}_seed{p.seed}")
        size = "x".join(map(str, video.shape[-2:]))
        try:
            values, feat = _measure_video(video.float() / 255, p.text, tools)
        except ValueError as e:
            raise TaskError(f"video {i}: {e}") from None
        for key, value in values.items():
            sums.setdefault(key, []).append(value)
        feats += [feat] if feat is not None else []
    metrics = {k: sum(v) / len(v) for k, v in sums.items()}
    if feats:
        try:
            metrics["hd_fvd"] = gm.frechet_distance(tools["reference"], torch.cat(feats))
        except gm.GenerationDataError as e:
            raise TaskError(str(e)) from None
    dataset = {"name": "prompts", "path": str(spec.path), "num_samples": len(prompts), "videos": str(out),
               "frames": frames, "size": size, "format": FRAME_FORMAT,
               "sampling": sampling, **lines, "hd_caveat": HD_CAVEAT}
    return EvalResult(metrics=metrics, dataset=dataset)


def _measure_video(video: torch.Tensor, prompt: str, tools: dict[str, Any]) -> tuple[dict[str, float],
                                                                                    torch.Tensor | None]:
    """One video's measures (CLIP score as its frame mean, temporal consistency, HD-MSE, HD-LPIPS) and its I3D
    patch features (None without i3d)."""
    from glocal.benchmarks.metrics import video_quality as vq

    values = {"hd_mse": vq.hd_mse(video)}
    if "clip" in tools:
        scores, emb = tools["clip"](video, prompt)
        values.update(clip_score=float(scores.mean()), temporal_consistency=vq.temporal_consistency(emb))
    if "lpips" in tools:
        values["hd_lpips"] = vq.hd_lpips(video, tools["lpips"])
    feat = vq.patch_features(video, tools["i3d"], tools["patch"]) if "i3d" in tools else None
    return values, feat
