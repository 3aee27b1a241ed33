"""COCO detection and instance segmentation: torchvision's Mask R-CNN + FPN on a classification backbone.

Any classifier with stage features (zoo families, ``timm:NAME``) runs as a detection cell: ``bench run
--model gcvit_tiny --task detection``. The cell's resolution is the COCO protocol's shorter side (800; the
longer side is at most 1333 scaled alike); the benchmark image is landscape 4:3 (COCO's common 640x480), so
at 800 it is 800x1067, padded by the detector to the backbone's multiple. Latency and memory are per image
at batch 1 (the FPS the papers report); params and GMACs are the whole detector's. With real detector
weights, ``--dataset coco=PATH`` scores box and mask AP with pycocotools' COCOeval.
"""

from __future__ import annotations

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
from glocal.progress import track


def _score_thresh(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError("must be in [0, 1)")
    return value


class DetectionTask(Task):
    name = "detection"
    options = {
        "score_thresh": TaskOption(_score_thresh, 0.0, "box score threshold; 0 sends the full 100 detections per "
                                                       "image through the mask head, the protocol's worst case, "
                                                       "whatever the weights (MMDetection tests at 0.05)"),
    }

    def applies_to(self, card: Any, variant: Any) -> bool:
        """Classifiers serve as backbones (their stage maps feed the FPN)."""
        return card.task in ("classification", "detection")

    def default_resolution(self, card: Any, variant: Any) -> int:
        from glocal.zoo.detection import COCO_MIN_SIZE

        return COCO_MIN_SIZE

    def check_resolution(self, card: Any, variant: Any, resolution: int) -> None:
        if resolution < 64:
            raise TaskError(f"detection takes the image's shorter side, at least 64 (COCO: 800), got {resolution}")

    def image_size(self, resolution: int) -> tuple[int, int]:
        from glocal.zoo.detection import coco_image_size

        return coco_image_size(resolution)

    def input_shape(self, card: Any, variant: Any, resolution: int) -> tuple[int, ...]:
        return (3, *self.image_size(resolution))

    def build_model(self, card: Any, variant: Any, cell: Any) -> torch.nn.Module:
        from glocal.zoo.detection import COCO_MAX_SIZE, COCO_MIN_SIZE, DetectionError, build_mask_rcnn

        res = cell.resolution
        try:
            model = build_mask_rcnn(variant.name, weights=cell.weights, image_size=self.image_size(res), min_size=res,
                                    max_size=round(COCO_MAX_SIZE * res / COCO_MIN_SIZE))
        except DetectionError as e:
            raise TaskError(str(e)) from e
        model.roi_heads.score_thresh = cell.task_options.get("score_thresh", 0.0)
        return model

    def make_inputs(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any, batch: int,
                    device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
        """A list of ``batch`` images in [0, 1] at the COCO size (the detector normalises and pads them)."""
        g = torch.Generator().manual_seed(seed)
        shape = self.input_shape(card, variant, cell.resolution)
        return {"images": [torch.rand(shape, generator=g).to(device=device, dtype=dtype) for _ in range(batch)]}

    def forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        return model(inputs["images"])

    def workload(self, model: torch.nn.Module, card: Any, variant: Any, cell: Any) -> dict[str, Any]:
        from glocal.zoo.detection import padded_size

        size = self.image_size(cell.resolution)
        heads = model.roi_heads
        return {"image_size": list(size), "padded_size": list(padded_size(size, model.transform.size_divisible)),
                "rpn_proposals": model.rpn._post_nms_top_n["testing"], "max_detections": heads.detections_per_img,
                "score_thresh": heads.score_thresh}


register_task(DetectionTask())


def coco_paths(spec: DatasetSpec) -> tuple[Path, Path]:
    """(annotations JSON, image folder) of ``--dataset coco=PATH[,ann=FILE][,images=DIR]``: by default the one
    ``annotations/instances_*.json`` (or ``annotations.json``) and ``val2017/`` or ``images/`` (else PATH)."""
    if spec.path is None or not spec.path.is_dir():
        raise TaskError("--dataset coco needs a COCO-format folder: --dataset coco=PATH (annotations JSON + images)")
    root = spec.path
    if "ann" in spec.options:
        ann = Path(spec.options["ann"])
        ann = ann if ann.is_absolute() else root / ann
    else:
        found = sorted((root / "annotations").glob("instances_*.json")) + sorted(root.glob("annotations.json"))
        if len(found) != 1:
            raise TaskError(f"{root}: expected one annotations/instances_*.json or annotations.json, found "
                            f"{len(found)} (name it with ,ann=FILE)")
        ann = found[0]
    if not ann.is_file():
        raise TaskError(f"annotations file {ann} does not exist")
    if "images" in spec.options:
        images = root / spec.options["images"]
    else:
        images = next((d for d in (root / "val2017", root / "images") if d.is_dir()), root)
    return ann, images


@register_evaluator("coco", ("detection",),
                    description="COCO-format folder (annotations JSON + images): box and mask AP (COCOeval)")
def evaluate_coco(model: torch.nn.Module, card: Any, variant: Any, spec: DatasetSpec,
                  ctx: EvalContext) -> EvalResult:
    """Box and mask AP, AP50, AP75, small/medium/large (percent, COCOeval; -1 where a size has no object)."""
    import contextlib
    import io

    import numpy as np
    from PIL import Image

    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise TaskError("--dataset coco needs pycocotools: pip install 'glocal[detection]'") from None

    from glocal.benchmarks.metrics.coco import coco_ap, to_coco_results

    ann, images = coco_paths(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    ids = sorted(gt.getImgIds())[: int(spec.options["limit"])] if "limit" in spec.options else sorted(gt.getImgIds())
    missing = [i for i in ids if not (images / gt.imgs[i]["file_name"]).is_file()]
    if missing:
        raise TaskError(f"{len(missing)} image(s) of {ann.name} are not in {images} "
                        f"(e.g. {gt.imgs[missing[0]]['file_name']})")
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for image_id in track(ids, description="coco", enabled=ctx.progress):
            with Image.open(images / gt.imgs[image_id]["file_name"]) as im:
                img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            out = model([img.to(ctx.device, ctx.dtype)])[0]
            results += to_coco_results(image_id, out)
    metrics = {k: (100.0 * v if v >= 0 else v) for k, v in coco_ap(gt, results, image_ids=ids).items()}
    return EvalResult(metrics={**metrics, "num_samples": len(ids)},
                      dataset={"name": "coco", "path": str(spec.path), "annotations": ann.name,
                               "num_samples": len(ids), "builtin": False})
