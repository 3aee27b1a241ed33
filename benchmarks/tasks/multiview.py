"""Multi-view 3D reconstruction (VGGT, FlashVGGT): a cell is a number of frames at an input size.

The resolution is the frame width (518 for the 1B models, the official preprocessing's width); the height is
``--opt height=H`` or three quarters of the width rounded to a multiple of 14 (518 -> 392, the official 4:3
input). ``--frames 8,32,100`` sweeps the frame count; ``--compare vggt`` measures VGGT beside each FlashVGGT cell
(a family name picks the variant of the same size: ``flashvggt_tiny`` is compared with ``vggt_tiny``). The
record's workload gives tokens, the key/value count of one compressed global layer (dense for VGGT) and the
aggregator's attention GMACs from :func:`glocal.zoo.models.flashvggt.attention_macs`; the harness counts the
whole model's GMACs. Streaming models take ``--opt chunk=N`` (frames per chunk).
"""

from __future__ import annotations

from typing import Any

import torch

from glocal.benchmarks.tasks import Task, TaskError, TaskOption, register_task


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def default_height(width: int) -> int:
    """Three quarters of the width, rounded (ties to even) to a multiple of 14: 518 -> 392."""
    return max(14, round(width * 3 / 4 / 14) * 14)


class MultiviewTask(Task):
    name = "multiview"
    options = {
        "frames": TaskOption(_positive, default=8, help="frames per forward (sweep with --frames 8,32,100)"),
        "height": TaskOption(_positive, help="frame height in pixels (default: 3/4 of the width, multiple of 14)"),
        "chunk": TaskOption(_positive, help="frames per chunk of a streaming model (default: the model's)"),
    }

    def check_options(self, card: Any, variant: Any, options: dict[str, Any]) -> dict[str, Any]:
        out = super().check_options(card, variant, options)
        if out.get("height") is not None and out["height"] % 14:
            raise TaskError(f"--opt height={out['height']}: frame sides must be multiples of 14")
        if out.get("chunk") is not None and not variant.kwargs.get("stream"):
            raise TaskError(f"--opt chunk applies to streaming models only, not {variant.name}")
        return out

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
        out = {"frames": frames, "height": h, "width": w, "tokens": m["tokens"], "global_kv": m["global_kv"],
               "attention_gmacs": m["attention_macs"] / 1e9, "global_attention_gmacs": m["global_macs"] / 1e9,
               "kv_fraction": m["global_kv"] / m["tokens"]}
        if chunk:
            out["chunk"] = chunk
        return out

    def compare(self, card: Any, variant: Any, value: str) -> list[tuple[str, dict[str, Any]]]:
        """Another multi-view model; a family name picks its variant of the same size (tiny with tiny)."""
        from glocal import zoo
        from glocal.zoo.registry import normalize

        other_card, other = zoo.resolve(value)
        if other_card.task != card.task:
            raise TaskError(f"cannot compare {variant.name} ({card.task}) with {other.name} ({other_card.task})")
        if normalize(value) == normalize(other_card.family) and variant.name.endswith("_tiny"):
            tiny = [v for v in other_card.variants if v.name.endswith("_tiny") and not v.kwargs.get("stream")]
            other = tiny[0] if tiny else other
        return [(other.name, {})]


register_task(MultiviewTask())
