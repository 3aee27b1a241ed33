"""COCO box and mask AP through pycocotools' COCOeval (the reference implementation, imported lazily).

:func:`to_coco_results` turns torchvision detector outputs (``boxes`` xyxy, ``labels``, ``scores``, ``masks``
as per-pixel probabilities) into COCO result entries (xywh boxes, RLE masks thresholded at 0.5);
:func:`coco_ap` scores them against a COCO-format ground truth with COCOeval's twelve numbers, of which the
record keeps AP, AP50, AP75 and AP for small / medium / large objects, per ``bbox`` and ``segm``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["STAT_NAMES", "coco_ap", "to_coco_results"]

# COCOeval.stats[0:6]: AP@[.5:.95], AP@.5, AP@.75, AP small / medium / large (all 100 detections)
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
PREFIX = {"bbox": "box", "segm": "mask"}


def to_coco_results(image_id: int, output: dict[str, torch.Tensor],
                    category_of: Callable[[int], int] = int, mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO result entries of one image from a torchvision detection output (``category_of`` maps a label to
    a category id; torchvision's COCO detectors use the category ids themselves as labels)."""
    from pycocotools import mask as mask_utils

    boxes = output["boxes"].detach().float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    labels, scores = output["labels"].tolist(), output["scores"].detach().float().cpu().tolist()
    rles = [None] * len(xywh)
    if "masks" in output:
        binary = (output["masks"].detach().float().cpu()[:, 0] > mask_threshold).numpy().astype(np.uint8)
        rles = [mask_utils.encode(np.asfortranarray(m)) for m in binary]
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
    results = []
    for box, label, score, rle in zip(xywh, labels, scores, rles, strict=True):
        entry = {"image_id": int(image_id), "category_id": int(category_of(label)), "bbox": box, "score": score}
        if rle is not None:
            entry["segmentation"] = rle
        results.append(entry)
    return results


def coco_ap(ground_truth: Any, results: Iterable[dict[str, Any]], iou_types: tuple[str, ...] = ("bbox", "segm"),
            image_ids: list[int] | None = None) -> dict[str, float]:
    """COCOeval's AP numbers for each IoU type, as ``box_ap``, ``box_ap50`` ... ``mask_ap_large`` (fractions in
    [0, 1]; -1 where the ground truth has no object of that size, as COCOeval reports). ``ground_truth`` is a
    ``pycocotools.coco.COCO`` or the path of an annotations JSON; ``image_ids`` restricts the evaluation."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = ground_truth if isinstance(ground_truth, COCO) else COCO(str(ground_truth))
    results = list(results)
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type == "segm" and results and "segmentation" not in results[0]:
            continue
        if not results:  # loadRes refuses an empty list: nothing detected scores 0 everywhere there are objects
            metrics.update({f"{PREFIX[iou_type]}_{n}": 0.0 for n in STAT_NAMES})
            continue
        with quiet:
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, iou_type)
            if image_ids is not None:
                ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics.update({f"{PREFIX[iou_type]}_{n}": float(v) for n, v in zip(STAT_NAMES, ev.stats[:6], strict=True)})
    return metrics
