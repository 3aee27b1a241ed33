"""Image classification: input (3, R, R); ImageNet-style top-1/top-5 with the model's own preprocessing."""

from __future__ import annotations

from typing import Any

import torch

from glocal.benchmarks.metrics import topk_correct
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
    loader = torch.utils.data.DataLoader(ds, batch_size=ctx.batch_size, shuffle=False, num_workers=ctx.workers)
    correct = {1: 0, 5: 0}
    seen = 0
    with torch.inference_mode():
        for images, target in track(loader, total=len(loader), description="imagenet", enabled=ctx.progress):
            images = images.to(ctx.device, ctx.dtype)
            if ctx.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images).float().cpu()
            for k, v in topk_correct(logits, target, (1, 5)).items():
                correct[k] += v
            seen += target.numel()
    return EvalResult(
        metrics={"top1": 100.0 * correct[1] / seen, "top5": 100.0 * correct[5] / seen, "num_samples": seen},
        dataset={"name": "imagenet", "path": str(spec.path), "num_samples": seen, "builtin": False,
                 "preprocessing": {"crop_pct": variant.preprocessing.crop_pct,
                                   "interpolation": variant.preprocessing.interpolation, "decoder": "PIL"}},
    )
