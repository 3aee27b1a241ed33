"""Image classification: input (3, R, R); ImageNet-style top-1/top-5 with the model's own preprocessing."""

from __future__ import annotations

from typing import Any

import torch

from glocal.benchmarks.metrics import topk_hits
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


class ClassificationTask(Task):
    name = "classification"

    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...]:
        return (variant.preprocessing.input_size[0], resolution, resolution)


register_task(ClassificationTask())


def eval_transform(variant: Any, resolution: int | None = None):
    """timm's eval transform from the card's preprocessing (resize by crop_pct, centre crop, normalise)."""
    from timm.data import create_transform

    pp = variant.preprocessing
    size = resolution or pp.input_size[-1]
    return create_transform(input_size=(pp.input_size[0], size, size), is_training=False,
                            interpolation=pp.interpolation, mean=pp.mean, std=pp.std, crop_pct=pp.crop_pct,
                            crop_mode=pp.crop_mode)


def open_imagenet(card: Any, variant: Any, spec: DatasetSpec, resolution: int | None = None) -> Any:
    """The validation folder as a dataset of (transformed image, label); options: ``labels=FILE``."""
    from glocal.datasets.imagenet import ImageFolderDataset
    from glocal.datasets.registry import DatasetError

    unknown = sorted(set(spec.options) - {"labels"})
    if unknown:
        raise TaskError(f"--dataset imagenet has no option {unknown[0]!r} (options: labels)")
    if spec.path is None:
        raise TaskError("--dataset imagenet needs a folder: --dataset imagenet=PATH")
    try:
        return ImageFolderDataset(spec.path, eval_transform(variant, resolution), spec.options.get("labels"))
    except DatasetError as e:
        raise TaskError(str(e)) from e


@register_evaluator("imagenet", ("classification",), open=open_imagenet,
                    description="ImageNet-style validation folder (class sub-folders or labels.txt): top-1/top-5")
def evaluate_imagenet(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec,
                      ctx: EvalContext) -> EvalResult:
    """Top-1 and top-5 accuracy (percent) over every image of the folder, with the number scored."""
    ds = open_imagenet(card, variant, spec, ctx.resolution)
    mine = ctx.shard.indices(len(ds))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, mine), batch_size=ctx.batch_size,
                                         shuffle=False, num_workers=ctx.workers)
    rows: list[tuple[int, tuple[bool, bool]]] = []
    order = iter(mine)
    with torch.inference_mode():
        for images, target in track(loader, total=len(loader), description="imagenet", enabled=ctx.progress):
            images = images.to(ctx.device, ctx.dtype)
            if ctx.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            hits = topk_hits(model(images).float().cpu(), target, (1, 5))
            rows.extend((next(order), (bool(h1), bool(h5))) for h1, h5 in zip(hits[1], hits[5], strict=True))
    rows_all = ctx.shard.gather(rows)
    seen = len(rows_all)
    correct = {1: sum(r[0] for r in rows_all), 5: sum(r[1] for r in rows_all)}
    return EvalResult(
        metrics={"top1": 100.0 * correct[1] / seen, "top5": 100.0 * correct[5] / seen, "num_samples": seen},
        dataset={"name": "imagenet", "path": str(spec.path), "num_samples": seen, "builtin": False,
                 "preprocessing": {"crop_pct": variant.preprocessing.crop_pct,
                                   "interpolation": variant.preprocessing.interpolation, "decoder": "PIL"}},
    )
