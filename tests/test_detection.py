"""Detection: the COCO metric against pycocotools on a tiny COCO-format set made here, the evaluator over a
folder with a detector whose predictions are known, torchvision's Mask R-CNN on zoo/timm backbones, and the
MMDetection backbone converter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glocal.benchmarks.metrics.coco import STAT_NAMES, coco_ap, to_coco_results
from glocal.benchmarks.tasks import DatasetSpec, EvalContext, TaskError, get_task
from glocal.zoo.detection import (
    BackboneWithPyramid,
    DetectionError,
    FeatureBackbone,
    build_mask_rcnn,
    coco_image_size,
    convert_mmdet_backbone,
    feature_extractor,
)

pycocotools = pytest.importorskip("pycocotools")

# Three 64x48 images; each object is a rectangle (box and mask agree), categories 1 and 3.
SIZE = (48, 64)  # H, W
OBJECTS = {1: [(1, (4, 6, 20, 20))], 2: [(3, (10, 8, 40, 30)), (1, (30, 30, 12, 10))], 3: [(3, (0, 0, 64, 48))]}


pytestmark = pytest.mark.usefixtures("eager_flex_one_thread")  # one thread (tests/conftest.py)


def _rect_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    m = np.zeros(SIZE, dtype=np.uint8)
    m[y:y + h, x:x + w] = 1
    return m


def _ground_truth() -> dict:
    """COCO annotations: polygon masks equal to the boxes, areas from the masks."""
    images, anns = [], []
    for image_id, objects in OBJECTS.items():
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "height": SIZE[0], "width": SIZE[1]})
        for cat, (x, y, w, h) in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": float(w * h), "iscrowd": 0,
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "one"}, {"id": 3, "name": "three"}]}


def _coco(tmp_path):
    from pycocotools.coco import COCO

    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(_ground_truth()))
    return path, COCO(str(path))


def _output(objects, shift: float = 0.0, score: float = 1.0) -> dict[str, torch.Tensor]:
    """A torchvision detection output for ``objects`` (boxes shifted right by ``shift`` pixels)."""
    boxes = torch.tensor([[x + shift, y, x + w + shift, y + h] for _, (x, y, w, h) in objects], dtype=torch.float32)
    masks = torch.stack([torch.from_numpy(_rect_mask(b)).float() for _, b in objects])[:, None]
    return {"boxes": boxes, "labels": torch.tensor([c for c, _ in objects]),
            "scores": torch.full((len(objects),), score), "masks": masks}


def test_perfect_predictions_score_ap_one(tmp_path):
    _, gt = _coco(tmp_path)
    results = [r for i, objs in OBJECTS.items() for r in to_coco_results(i, _output(objs))]
    metrics = coco_ap(gt, results)
    assert set(metrics) == {f"{p}_{n}" for p in ("box", "mask") for n in STAT_NAMES}
    for prefix in ("box", "mask"):
        assert metrics[f"{prefix}_ap"] == pytest.approx(1.0)
        assert metrics[f"{prefix}_ap50"] == pytest.approx(1.0) and metrics[f"{prefix}_ap75"] == pytest.approx(1.0)
        # sizes: 20x20 and 12x10 are small (< 32^2), 40x30 and 64x48 medium (< 96^2)
        assert metrics[f"{prefix}_ap_small"] == pytest.approx(1.0)
        assert metrics[f"{prefix}_ap_medium"] == pytest.approx(1.0)
        assert metrics[f"{prefix}_ap_large"] == -1.0  # no object above 96^2 pixels


def test_shifted_box_scores_what_cocoeval_gives(tmp_path):
    """One 20x20 ground-truth box, predicted 4 px to the right: IoU = 320 / 480 = 2/3, so it matches at the
    IoU thresholds 0.50 ... 0.65 (4 of 10): AP 0.4, AP50 1, AP75 0; the object is small."""
    from pycocotools.coco import COCO

    data = _ground_truth()
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 1]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(data))
    results = to_coco_results(1, _output(OBJECTS[1], shift=4.0))
    metrics = coco_ap(COCO(str(path)), results, iou_types=("bbox",), image_ids=[1])
    assert metrics["box_ap"] == pytest.approx(0.4)
    assert (metrics["box_ap50"], metrics["box_ap75"]) == (pytest.approx(1.0), pytest.approx(0.0))
    assert metrics["box_ap_small"] == pytest.approx(0.4)
    assert metrics["box_ap_medium"] == -1.0 and metrics["box_ap_large"] == -1.0


def test_results_are_coco_entries():
    from pycocotools import mask as mask_utils

    out = _output(OBJECTS[2], score=0.7)
    out["masks"] = out["masks"] * 0.6  # probabilities: 0.6 > 0.5 keeps the mask
    res = to_coco_results(2, out, category_of=lambda label: label * 10)
    assert [r["bbox"] for r in res] == [[10.0, 8.0, 40.0, 30.0], [30.0, 30.0, 12.0, 10.0]]
    assert [r["category_id"] for r in res] == [30, 10] and all(r["score"] == pytest.approx(0.7) for r in res)
    decoded = mask_utils.decode(res[0]["segmentation"])
    assert np.array_equal(decoded, _rect_mask((10, 8, 40, 30)))


class _KnownDetector(torch.nn.Module):
    """Returns the ground truth of the image it is given (images are filled with their id / 255)."""

    def forward(self, images):
        return [_output(OBJECTS[round(float(img[0, 0, 0]) * 255)]) for img in images]


def _coco_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "annotations.json").write_text(json.dumps(_ground_truth()))
    for image_id in OBJECTS:
        Image.fromarray(np.full((*SIZE, 3), image_id, dtype=np.uint8)).save(root / "images" / f"{image_id:012d}.png")
    return root


def test_coco_evaluator_on_a_folder(tmp_path):
    root = _coco_folder(tmp_path)
    entry_fn = __import__("glocal.benchmarks.tasks.detection", fromlist=["evaluate_coco"]).evaluate_coco
    ctx = EvalContext(device=torch.device("cpu"), progress=False)
    result = entry_fn(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={root}"), ctx)
    assert result.metrics["box_ap"] == pytest.approx(100.0) and result.metrics["mask_ap"] == pytest.approx(100.0)
    assert result.metrics["num_samples"] == 3 and result.dataset["annotations"] == "annotations.json"
    limited = entry_fn(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={root},limit=1"), ctx)
    assert limited.metrics["num_samples"] == 1 and limited.metrics["box_ap"] == pytest.approx(100.0)


def test_coco_evaluator_names_the_extra_without_pycocotools(tmp_path, monkeypatch):
    import sys

    from glocal.benchmarks.tasks.detection import evaluate_coco

    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)  # as if not installed
    ctx = EvalContext(device=torch.device("cpu"), progress=False)
    with pytest.raises(TaskError, match=r"needs pycocotools: pip install 'glocal\[detection\]'"):
        evaluate_coco(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={tmp_path}"), ctx)


def test_coco_evaluator_refuses_bad_folders(tmp_path):
    from glocal.benchmarks.tasks.detection import evaluate_coco

    ctx = EvalContext(device=torch.device("cpu"), progress=False)
    with pytest.raises(TaskError, match="needs a COCO-format folder"):
        evaluate_coco(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={tmp_path / 'nowhere'}"), ctx)
    with pytest.raises(TaskError, match="expected one annotations/instances_"):
        evaluate_coco(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={tmp_path}"), ctx)
    root = _coco_folder(tmp_path)
    (root / "images" / "000000000002.png").unlink()
    with pytest.raises(TaskError, match=r"1 image\(s\) of annotations.json are not in .*000000000002.png"):
        evaluate_coco(_KnownDetector(), None, None, DatasetSpec.parse(f"coco={root}"), ctx)


# ------------------------------------------------------------------------------------------------ the detector

def test_coco_image_size_follows_the_protocol():
    assert coco_image_size(800) == (800, 1067)  # 4:3 landscape, longer side under 1333
    assert coco_image_size(800, aspect=2.0) == (800, 1333)  # capped
    assert coco_image_size(400) == (400, 533)
    with pytest.raises(DetectionError):
        coco_image_size(0)


def test_mask_rcnn_on_a_timm_backbone_is_torchvisions():
    from torchvision.models.detection import MaskRCNN
    from torchvision.ops import FeaturePyramidNetwork

    torch.manual_seed(0)
    det = build_mask_rcnn("timm:resnet18", weights="random", min_size=96, max_size=160)
    assert isinstance(det, MaskRCNN) and isinstance(det.backbone, BackboneWithPyramid)
    assert isinstance(det.backbone.fpn, FeaturePyramidNetwork)
    assert det.backbone.body.reductions == [4, 8, 16, 32] and det.backbone.body.channels == [64, 128, 256, 512]
    assert det.glocal_weights.is_random and det.transform.size_divisible == 32
    assert not any(k.startswith("backbone.body.features.model.fc") for k in det.state_dict())  # head pruned
    det.roi_heads.score_thresh = 0.0
    with torch.inference_mode():
        out = det([torch.rand(3, 90, 120)])[0]
    assert out["boxes"].shape == (100, 4) and out["masks"].shape == (100, 1, 90, 120)
    assert bool((out["boxes"][:, 2] <= 120).all() and (out["boxes"][:, 3] <= 90).all())


@pytest.mark.parametrize("name", ["dinat_mini", pytest.param("svit_small", marks=pytest.mark.slow),
                                  pytest.param("gcvit_xxtiny", marks=pytest.mark.slow)])
def test_zoo_backbone_pads_to_its_multiple_and_crops_back(name):
    """Stage maps of an image that is not a multiple of 32: padded inside, cropped to ceil(side / stride)."""
    from glocal import zoo

    size = (96, 128)
    card, variant = zoo.resolve(name)
    if variant.build_at_resolution:
        import timm

        classifier = timm.create_model(variant.kwargs["arch"], img_size=size)
    else:
        classifier = variant.build()
    body = FeatureBackbone(feature_extractor(classifier.eval()), 32)
    with torch.inference_mode():
        maps = body(torch.rand(1, 3, 90, 120))
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(-(-90 // r), -(-120 // r)) for r in (4, 8, 16, 32)]
    assert [m.shape[1] for m in maps.values()] == body.channels


# ------------------------------------------------------------------------------------------------ MMDetection

def _tiny_svit():
    from glocal.zoo.models.svit import SViT

    return SViT(embed_dim=(16, 32, 32, 48), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 3), projection=64,
                num_classes=7)


def test_mmdet_backbone_converter_reports_used_and_left_keys():
    torch.manual_seed(1)
    classifier = _tiny_svit()
    own = classifier.state_dict()
    ckpt = {f"backbone.{k}": torch.randn_like(v) if v.is_floating_point() else v.clone()
            for k, v in own.items() if not k.startswith("head.")}
    ckpt["backbone.norm0.weight"] = torch.ones(16)  # MMDetection backbones add per-output norms
    ckpt.update({"neck.lateral_convs.0.conv.weight": torch.zeros(256, 16, 1, 1),
                 "neck.fpn_convs.0.conv.weight": torch.zeros(256, 256, 3, 3),
                 "rpn_head.rpn_conv.weight": torch.zeros(256, 256, 3, 3),
                 "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024),
                 "roi_head.mask_head.conv_logits.weight": torch.zeros(80, 256, 1, 1)})
    sd, report = convert_mmdet_backbone(ckpt, classifier)
    assert sorted(report.used) == sorted(k for k in own if not k.startswith("head."))
    assert report.unused_backbone == ["norm0.weight"] and report.missing == []
    assert report.left == {"neck": 2, "rpn_head": 1, "roi_head": 2}
    missing, unexpected = classifier.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["head.bias", "head.weight"] and unexpected == []
    assert all(torch.equal(classifier.state_dict()[k], ckpt[f"backbone.{k}"]) for k in report.used)
    assert "neck 2" in report.summary() and "1 unused (e.g. norm0.weight)" in report.summary()


def test_mmdet_converter_refuses_other_files():
    classifier = _tiny_svit()
    with pytest.raises(DetectionError, match="no backbone"):
        convert_mmdet_backbone({"head.weight": torch.zeros(7, 64)}, classifier)
    with pytest.raises(DetectionError, match=r"backbone key proj.weight: shape \(1,\) in the checkpoint"):
        convert_mmdet_backbone({"backbone.proj.weight": torch.zeros(1)}, classifier)


# ------------------------------------------------------------------------------------------------ the task

def test_detection_task_adapter():
    from glocal import zoo

    task = get_task("detection")
    card, variant = zoo.resolve("gcvit_tiny")
    assert task.applies_to(card, variant) and task.default_resolution(card, variant) == 800
    assert task.input_shape(card, variant, 800) == (3, 800, 1067)
    assert task.check_options(card, variant, {}) == {"score_thresh": 0.0}
    assert task.check_options(card, variant, {"score_thresh": "0.05"}) == {"score_thresh": 0.05}
    with pytest.raises(TaskError, match="bad value '2' for task option score_thresh"):
        task.check_options(card, variant, {"score_thresh": "2"})
    with pytest.raises(TaskError, match="at least 64"):
        task.check_resolution(card, variant, 32)
