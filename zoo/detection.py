"""Mask R-CNN with FPN on any backbone that gives stage features: torchvision's detector, the zoo's backbones.

The detector is torchvision's own :class:`~torchvision.models.detection.MaskRCNN` (RPN, RoI heads, the
``GeneralizedRCNNTransform`` that resizes to the COCO protocol and pads) over a backbone made of the
classifier's stage maps (timm's ``forward_intermediates`` through :class:`timm.models.FeatureGetterNet`, or
timm's ``features_only`` extractor) and torchvision's :class:`FeaturePyramidNetwork`. Zoo families (SViT,
DiNAT, GC ViT ...) and any ``timm:NAME`` model work the same way.

Official detection checkpoints of these papers are MMDetection Mask R-CNN / Cascade Mask R-CNN files: only
their backbone part maps onto this detector (:func:`convert_mmdet_backbone` reports what it used and what it
left); the MMDetection neck and heads are not converted, so the detector's own heads stay as built.

Backbones built for one input size (GC ViT: ``build_at_resolution``) are built by timm at the padded image
size, so their windows scale with the image (timm's rule: stage 3 attends over the whole map). The official
GC ViT detection backbone (NVlabs/GCVit ``detection/models/gc_vit.py``) instead uses 24x24 windows padded per
block with interpolated bias tables: latency and memory here are those of timm's GC ViT, not of that file.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["COCO_MAX_SIZE", "COCO_MIN_SIZE", "BackboneReport", "DetectionError", "FeatureBackbone",
           "build_mask_rcnn", "coco_image_size", "convert_mmdet_backbone"]

COCO_MIN_SIZE = 800  # the COCO protocol: shorter side 800 ...
COCO_MAX_SIZE = 1333  # ... longer side at most 1333
COCO_ASPECT = 4 / 3  # the benchmark image: COCO's most common shape (640 x 480), landscape
STRIDE = 32  # the deepest stage map: inputs are padded to multiples of it (or of the backbone's own multiple)


class DetectionError(ValueError):
    """A backbone that cannot serve the detector, or a checkpoint that does not fit it (one line)."""


def coco_image_size(shorter: int = COCO_MIN_SIZE, aspect: float = COCO_ASPECT,
                    max_size: int | None = None) -> tuple[int, int]:
    """(H, W) of a landscape image resized by the COCO rule: shorter side ``shorter``, longer side at most
    ``max_size`` (default: 1333 scaled with ``shorter``, i.e. 1333 at 800)."""
    if shorter <= 0:
        raise DetectionError(f"the shorter side must be positive, got {shorter}")
    limit = max_size if max_size is not None else round(COCO_MAX_SIZE * shorter / COCO_MIN_SIZE)
    return shorter, min(round(shorter * aspect), limit)


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` rounded up to multiples of ``multiple`` (what the detector's transform pads a batch to)."""
    return tuple(int(math.ceil(s / multiple) * multiple) for s in size)  # type: ignore[return-value]


class FeatureBackbone(nn.Module):
    """Stage maps of a backbone as torchvision's detectors want them: an ordered dict of NCHW tensors.

    ``features`` is a timm feature extractor (``FeatureGetterNet``, ``FeatureListNet`` ...); NHWC outputs are
    permuted. The input is zero-padded at the bottom/right to ``multiple`` (stride and window constraints)
    and each map is cropped back to the unpadded image's extent at its stride.
    """

    def __init__(self, features: nn.Module, multiple: int = STRIDE) -> None:
        super().__init__()
        self.features = features
        self.multiple = multiple
        info = features.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        fmt = getattr(features, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % self.multiple, (-W) % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, (f, r) in enumerate(zip(self.features(x), self.reductions, strict=True)):
            f = f.permute(0, 3, 1, 2) if self.channels_last else f
            out[str(i)] = f[..., : math.ceil(H / r), : math.ceil(W / r)]
        return out


class BackboneWithPyramid(nn.Module):
    """``body`` (stage maps) + torchvision's ``FeaturePyramidNetwork`` with the max-pool P6: the layout of
    torchvision's ``BackboneWithFPN`` (which needs a module whose children are the stages; this takes any
    feature extractor)."""

    def __init__(self, body: FeatureBackbone, out_channels: int = 256) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def _classifier(name: str, weights: Any, image_size: tuple[int, int]) -> tuple[nn.Module, Any, Any, Any]:
    """The zoo's classifier for ``name`` with its weights resolved as ``zoo.create_model`` does; models built for
    one input size (GC ViT) are built by timm at the padded detection size."""
    from glocal import zoo
    from glocal.zoo.weights import apply_weights, resolve_weights

    card, variant = zoo.resolve(name)
    if variant.build_at_resolution:
        arch = variant.kwargs.get("arch")
        if arch is None:
            raise DetectionError(f"{variant.name} is built for one input size and has no timm architecture to "
                                 f"build at {image_size[0]}x{image_size[1]}")
        import timm

        model = timm.create_model(arch, pretrained=False, img_size=image_size)
    else:
        model = variant.build()
    state_dict, info, message = resolve_weights(card, variant, weights)
    if state_dict is not None:
        info = apply_weights(card, variant, model, state_dict, info)
    return model, card, variant, (info, message)


PYRAMID_STRIDES = (4, 8, 16, 32)  # the FPN levels P2-P5 of Mask R-CNN


def pyramid_indices(model: nn.Module, strides: tuple[int, ...] = PYRAMID_STRIDES) -> tuple[int, ...]:
    """Indices of the model's ``feature_info`` entries at the pyramid strides (the last one of each stride:
    ResNet's stride-2 stem map is not a level)."""
    info = getattr(model, "feature_info", None) or []
    found = {f["reduction"]: i for i, f in enumerate(info)}
    if not set(strides) <= set(found):
        raise DetectionError(f"{type(model).__name__} has no stage maps at strides {list(strides)} (it has "
                             f"{sorted(found)}): it cannot feed an FPN")
    return tuple(found[s] for s in strides)


def feature_extractor(model: nn.Module, out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """timm's stage-feature wrapper of a built classifier at ``out_indices`` (default: the pyramid strides):
    ``FeatureGetterNet`` over ``forward_intermediates`` (pruning the head), or the hook-based
    ``FeatureListNet`` for models with only ``feature_info``."""
    from timm.models._features import FeatureGetterNet, FeatureListNet

    out_indices = pyramid_indices(model) if out_indices is None else out_indices
    if hasattr(model, "forward_intermediates"):
        return FeatureGetterNet(model, out_indices=out_indices)
    if getattr(model, "feature_info", None):
        return FeatureListNet(model, out_indices=out_indices)
    raise DetectionError(f"{type(model).__name__} has no forward_intermediates or feature_info: it cannot give "
                         "stage maps to a detector")


def build_mask_rcnn(backbone: str, weights: Any = "random", num_classes: int = 91,
                    image_size: tuple[int, int] | None = None, min_size: int = COCO_MIN_SIZE,
                    max_size: int = COCO_MAX_SIZE, out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """torchvision's Mask R-CNN + FPN on the zoo model ``backbone`` (classifier weights from ``weights``, as
    for ``zoo.create_model``); inputs are resized to ``min_size``/``max_size`` and padded to the backbone's
    multiple. ``image_size`` is the (H, W) the backbone is built for when it needs one (GC ViT)."""
    from torchvision.models.detection import MaskRCNN

    size = image_size or coco_image_size(min_size, max_size=max_size)
    classifier, card, variant, (info, message) = _classifier(backbone, weights, padded_size(size, STRIDE))
    multiple = math.lcm(STRIDE, getattr(variant, "resolution_multiple", 1) or 1)
    body = FeatureBackbone(feature_extractor(classifier, out_indices), multiple)
    detector = MaskRCNN(BackboneWithPyramid(body), num_classes=num_classes, min_size=min_size, max_size=max_size,
                        size_divisible=multiple)
    detector.eval()
    detector.glocal_weights = info  # type: ignore[attr-defined]
    detector.glocal_weights_message = message  # type: ignore[attr-defined]
    detector.glocal_card, detector.glocal_variant = card, variant  # type: ignore[attr-defined]
    return detector


# ------------------------------------------------------------------------------------------------------------
# MMDetection checkpoints: the backbone part
# ------------------------------------------------------------------------------------------------------------

MMDET_PARTS = ("backbone", "neck", "rpn_head", "roi_head")


@dataclass
class BackboneReport:
    """What :func:`convert_mmdet_backbone` did: backbone keys loaded, backbone keys of the file the classifier
    does not have (e.g. per-output norms), classifier keys the file lacks (e.g. the head), and the detector
    keys left unconverted, counted per MMDetection part (neck, rpn_head, roi_head ...)."""

    used: list[str] = field(default_factory=list)
    unused_backbone: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        left = ", ".join(f"{k} {v}" for k, v in sorted(self.left.items())) or "none"
        return (f"backbone: {len(self.used)} keys used, {len(self.unused_backbone)} unused "
                f"(e.g. {', '.join(self.unused_backbone[:3]) or '-'}), {len(self.missing)} missing "
                f"(e.g. {', '.join(self.missing[:3]) or '-'}); detector keys left unconverted: {left}")


def convert_mmdet_backbone(state_dict: dict[str, torch.Tensor], classifier: nn.Module,
                           convert: Any = None) -> tuple[dict[str, torch.Tensor], BackboneReport]:
    """The ``backbone.*`` tensors of an MMDetection Mask R-CNN / Cascade Mask R-CNN state dict, renamed into
    ``classifier``'s keys (``convert``: the card's official-layout converter, e.g. GC ViT's), and a report.
    Keys whose shape differs from the classifier's are refused (one line)."""
    report = BackboneReport()
    backbone: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        part = key.split(".", 1)[0]
        if part == "backbone":
            backbone[key[len("backbone."):]] = value
        else:
            report.left[part] = report.left.get(part, 0) + 1
    if not backbone:
        raise DetectionError("the checkpoint has no backbone.* keys (not an MMDetection detector state dict)")
    if convert is not None:
        backbone = convert(backbone)
    own = classifier.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.items():
        if key not in own:
            report.unused_backbone.append(key)
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            raise DetectionError(f"backbone key {key}: shape {tuple(value.shape)} in the checkpoint, "
                                 f"{tuple(own[key].shape)} in the model")
        out[key] = value
        report.used.append(key)
    head = re.compile(r"^(head|fc|classifier)\.")
    report.missing = [k for k in own if k not in out and not head.match(k)]
    return out, report
