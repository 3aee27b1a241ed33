"""Multi-view 3D reconstruction (VGGT, FlashVGGT): a cell is a number of frames at an input size.

The resolution is the frame width (518 for the 1B models, the official preprocessing's width); the height is
``--opt height=H`` or three quarters of the width rounded to a multiple of 14 (518 -> 392, the official 4:3
input). ``--frames 8,32,100`` sweeps the frame count; ``--compare vggt`` measures VGGT beside each FlashVGGT cell
(a family name picks the variant of the same size: ``flashvggt_tiny`` is compared with ``vggt_tiny``) with the
same prediction heads (camera + depth: FlashVGGT has no point or track head), so that the difference is the
aggregator; ``--opt heads=camera+depth`` sets the heads of every cell (the rest are dropped after loading). The
record's workload gives tokens, the key/value count of one compressed global layer (dense for VGGT) and the
aggregator's attention GMACs from :func:`glocal.zoo.models.flashvggt.attention_macs`; the harness counts the
whole model's GMACs. Streaming models take ``--opt chunk=N`` (frames per chunk).

With real weights, ``--dataset co3d=ROOT,anno=DIR`` and ``--dataset re10k=ROOT`` score camera poses (RRA, RTA,
AUC@30 over all frame pairs, :mod:`glocal.benchmarks.metrics.multiview`) on the layouts documented in
:mod:`glocal.datasets.multiview`.
"""

from __future__ import annotations

from typing import Any

import torch

from glocal.benchmarks.tasks import (
    DatasetSpec,
    EvalResult,
    Task,
    TaskError,
    TaskOption,
    positive_int,
    register_evaluator,
    register_task,
)


def parse_heads(text: str) -> str:
    """``depth+camera`` -> ``camera+depth`` (the official head order, the form records keep); unknown names
    refused."""
    from glocal.zoo.models.vggt import ALL_HEADS

    names = {h.strip().lower() for h in text.split("+") if h.strip()}
    unknown = sorted(names - set(ALL_HEADS))
    if unknown or not names:
        raise ValueError(f"heads are {'+'.join(ALL_HEADS)} joined by '+', got {text!r}")
    return "+".join(h for h in ALL_HEADS if h in names)


def variant_heads(variant: Any) -> tuple[str, ...]:
    """The prediction heads a registered variant builds (its ``heads`` config)."""
    from glocal.zoo.models.vggt import ALL_HEADS

    return tuple(variant.kwargs.get("heads", ALL_HEADS))


def default_height(width: int) -> int:
    """Three quarters of the width, rounded (ties to even) to a multiple of 14: 518 -> 392."""
    return max(14, round(width * 3 / 4 / 14) * 14)


class MultiviewTask(Task):
    name = "multiview"
    options = {
        "frames": TaskOption(positive_int, default=8, help="frames per forward (sweep with --frames 8,32,100)"),
        "height": TaskOption(positive_int, help="frame height in pixels (default: 3/4 of the width, multiple of 14)"),
        "chunk": TaskOption(positive_int, help="frames per chunk of a streaming model (default: the model's)"),
        "heads": TaskOption(parse_heads, help="prediction heads to run, e.g. camera+depth (default: the model's)"),
    }

    def check_options(self, card: Any, variant: Any, options: dict[str, Any]) -> dict[str, Any]:
        out = super().check_options(card, variant, options)
        if out.get("height") is not None and out["height"] % 14:
            raise TaskError(f"--opt height={out['height']}: frame sides must be multiples of 14")
        if out.get("chunk") is not None and not variant.kwargs.get("stream"):
            raise TaskError(f"--opt chunk applies to streaming models only, not {variant.name}")
        heads = out.get("heads")
        if heads is not None and not set(heads.split("+")) <= set(variant_heads(variant)):
            raise TaskError(f"{variant.name} has heads {'+'.join(variant_heads(variant))}; cannot run {heads}")
        return out

    def build_model(self, card: Any, variant: Any, cell: Any) -> torch.nn.Module:
        """The zoo's model with its weights, then only the cell's heads kept (``--opt heads``)."""
        model = super().build_model(card, variant, cell)
        heads = cell.task_options.get("heads")
        if heads is not None:
            try:
                model.keep_heads(tuple(heads.split("+")))
            except ValueError as e:
                raise TaskError(str(e)) from None
        return model

    def frame_size(self, cell: Any) -> tuple[int, int]:
        return cell.task_options.get("height") or default_height(cell.resolution), cell.resolution

    def make_inputs(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any, batch: int,
                    device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
        """``images`` [batch, frames, 3, H, W] in [0, 1] (and the streaming chunk size when given)."""
        h, w = self.frame_size(cell)
        g = torch.Generator().manual_seed(seed)
        images = torch.rand(batch, cell.task_options["frames"], 3, h, w, generator=g).to(device=device, dtype=dtype)
        inputs: dict[str, Any] = {"images": images}
        if cell.task_options.get("chunk"):
            inputs["chunk_size"] = cell.task_options["chunk"]
        return inputs

    def workload(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any) -> dict[str, Any]:
        from glocal.zoo.models.flashvggt import FlashVGGTStream, attention_macs

        h, w = self.frame_size(cell)
        frames = cell.task_options["frames"]
        flash = getattr(model, "flash", None)
        chunk = None
        if isinstance(model, FlashVGGTStream):
            chunk = cell.task_options.get("chunk") or model.chunk_size
        m = attention_macs(frames, h, w, model.cfg, flash, chunk=chunk,
                           drop=getattr(model, "memory_drop_rate", 1))
        out = {"frames": frames, "height": h, "width": w, "heads": list(model.cfg.heads), "tokens": m["tokens"],
               "global_kv": m["global_kv"],
               "attention_gmacs": m["attention_macs"] / 1e9, "global_attention_gmacs": m["global_macs"] / 1e9,
               "kv_fraction": m["global_kv"] / m["tokens"]}
        if chunk:
            out["chunk"] = chunk
        return out

    def compare(self, card: Any, variant: Any, value: str,
                options: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Another multi-view model with the same heads as this one's cells; a family name picks its variant of
        the same size (tiny with tiny)."""
        from glocal import zoo
        from glocal.zoo.registry import normalize

        other_card, other = zoo.resolve(value)
        if other_card.task != card.task:
            raise TaskError(f"cannot compare {variant.name} ({card.task}) with {other.name} ({other_card.task})")
        if normalize(value) == normalize(other_card.family) and variant.name.endswith("_tiny"):
            tiny = [v for v in other_card.variants if v.name.endswith("_tiny") and not v.kwargs.get("stream")]
            other = tiny[0] if tiny else other
        given = (options or {}).get("heads")
        mine = tuple(given.split("+")) if given else variant_heads(variant)
        theirs = variant_heads(other)
        if not set(mine) <= set(theirs):
            common = "+".join(h for h in mine if h in theirs)
            raise TaskError(f"{other.name} has no {'+'.join(h for h in mine if h not in theirs)} head: give "
                            f"--opt heads={common or 'camera'} so that both models run the same heads")
        return [(other.name, {"heads": "+".join(mine)} if mine != theirs else {})]


register_task(MultiviewTask())


# --------------------------------------------------------------------------------------------- pose evaluators


def _read_frames(paths: tuple[str, ...]) -> torch.Tensor:
    """Images as [S, 3, 392, 518]-style tensors through the official crop preprocessing (width 518)."""
    import numpy as np
    from PIL import Image

    from glocal.zoo.models.vggt import preprocess_frames

    frames = []
    for p in paths:
        with Image.open(p) as im:
            frames.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1))
    return preprocess_frames(frames)


def evaluate_poses(model: torch.nn.Module, sequences: list, ctx: Any) -> dict[str, Any]:
    """Relative-pose errors of every pair of every sequence pooled, then RRA/RTA@t and AUC@30/15/5/3."""
    from glocal.benchmarks.metrics.multiview import pose_auc, relative_pose_errors
    from glocal.progress import track
    from glocal.zoo.models.vggt import pose_encoding_to_extri_intri

    r_all, t_all = [], []
    for seq in track(sequences, description="sequences"):
        weight = next(model.parameters(), None)
        images = _read_frames(seq.paths).to(ctx.device, weight.dtype if weight is not None else torch.float32)
        with torch.inference_mode():
            pose_enc = model(images)["pose_enc"]
        extrinsics, _ = pose_encoding_to_extri_intri(pose_enc.double(), images.shape[-2:])
        r, t = relative_pose_errors(extrinsics[0].cpu(), seq.extrinsics)
        r_all.append(r)
        t_all.append(t)
    if not r_all:
        raise TaskError("no sequence to score")
    r, t = torch.cat(r_all), torch.cat(t_all)
    out = {f"rra{th}": float((r < th).double().mean()) for th in (5, 15, 30)}
    out |= {f"rta{th}": float((t < th).double().mean()) for th in (5, 15, 30)}
    out |= {f"auc{m}": pose_auc(r, t, m) for m in (30, 15, 5, 3)}
    return out | {"pairs": int(r.numel()), "sequences": len(r_all)}


def _sample(n_total: int, frames: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:frames].tolist())


@register_evaluator("co3d", ("multiview",), description="CO3Dv2 camera pose (VGGT's protocol: 10 random frames "
                    "per test sequence, AUC@30); PATH = CO3D root, options anno=DIR, categories=a+b, frames, seed")
def evaluate_co3d(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: Any) -> EvalResult:
    """Pose accuracy on CO3Dv2 test sequences with >= 50 frames (annotation layout of VGGT's evaluation)."""
    from glocal.datasets.multiview import co3d_sequence, load_co3d_annotations
    from glocal.datasets.registry import DatasetError

    if spec.path is None or "anno" not in spec.options:
        raise TaskError("--dataset co3d needs the data and annotation folders: co3d=PATH,anno=DIR")
    frames, seed = int(spec.options.get("frames", 10)), int(spec.options.get("seed", 0))
    cats = [c for c in spec.options.get("categories", "apple").split("+") if c]
    try:
        sequences = []
        for cat in cats:
            for name, data in sorted(load_co3d_annotations(spec.options["anno"], cat).items()):
                if len(data) >= 50:
                    sequences.append(co3d_sequence(spec.path, name, data, _sample(len(data), frames, seed)))
    except DatasetError as e:
        raise TaskError(str(e)) from e
    return EvalResult(evaluate_poses(model, sequences, ctx),
                      {"name": "co3d", "path": str(spec.path), "categories": cats, "frames": frames})


@register_evaluator("re10k", ("multiview",), description="RealEstate10K camera pose: PATH = root with <split>/*.txt "
                    "and frames/<sequence>/<timestamp>.png; options split, frames, limit, seed")
def evaluate_re10k(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: Any) -> EvalResult:
    """Pose accuracy on RealEstate10K sequences whose frames are extracted (evenly sampled random frames)."""
    from pathlib import Path

    from glocal.datasets.multiview import load_re10k, read_re10k_cameras
    from glocal.datasets.registry import DatasetError

    if spec.path is None:
        raise TaskError("--dataset re10k needs a folder: re10k=PATH")
    split, frames = spec.options.get("split", "test"), int(spec.options.get("frames", 10))
    limit, seed = int(spec.options.get("limit", 100)), int(spec.options.get("seed", 0))
    files = sorted((Path(spec.path) / split).glob("*.txt"))[:limit]
    if not files:
        raise TaskError(f"no RealEstate10K camera files under {Path(spec.path) / split}")
    try:
        sequences = [load_re10k(spec.path, f.stem, split, _sample(len(read_re10k_cameras(f)[0]), frames, seed))
                     for f in files]
    except DatasetError as e:
        raise TaskError(str(e)) from e
    return EvalResult(evaluate_poses(model, sequences, ctx),
                      {"name": "re10k", "path": str(spec.path), "split": split, "frames": frames})
