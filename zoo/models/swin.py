"""Swin Transformer (V1) through timm's implementation: the base models that DIMAP prunes.

timm's ``SwinTransformer`` is the model; this card pins the ImageNet-1K weights (``.ms_in1k``). timm's
*default* tag for swin_small and swin_base is ``ms_in22k_ft_in1k``, which is not the Swin-paper (and DIMAP)
baseline, so the tag is always named here. Official Swin files (``{'model': ...}``, downsample at the end of a
stage, DIMAP's pruned checkpoints in the same format) are converted by timm's own ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import re

import timm
import torch
import torch.nn as nn
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

TAG = "ms_in1k"  # the Swin paper's ImageNet-1K weights; see the module docstring


def _build(arch: str, img_size: int = 224, **kwargs) -> nn.Module:
    """Build timm's Swin at ``img_size`` (the attention windows and masks are baked in at build time)."""
    if img_size % 32:
        raise ValueError(f"Swin needs an input side that is a multiple of 32 (e.g. 224), got {img_size}")
    return timm.create_model(arch, pretrained=False, img_size=img_size, **kwargs)


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """``official`` for Microsoft's (and DIMAP's) files, ``timm`` for timm's; both use ``layers.*`` keys."""
    if "layers.0.downsample.reduction.weight" in state_dict or "head.weight" in state_dict:
        return "official"
    if any(k.startswith("layers.") for k in state_dict):
        return "timm"
    raise ValueError("not a Swin checkpoint: no layers.* keys")


def _skeleton(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A meta-device Swin with the checkpoint's widths, depths, heads and window (what the filter looks at)."""
    embed_dim = state_dict["patch_embed.proj.weight"].shape[0]
    depths: dict[int, int] = {}
    heads: dict[int, int] = {}
    window = 7
    for key, value in state_dict.items():
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$", key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
            heads[stage] = value.shape[1]
            window = (round(value.shape[0] ** 0.5) + 1) // 2
    n = len(depths)
    with torch.device("meta"):
        return SwinTransformer(embed_dim=embed_dim, depths=tuple(depths[i] for i in range(n)),
                               num_heads=tuple(heads[i] for i in range(n)), window_size=window)


def convert_official(state_dict: dict[str, torch.Tensor], layout: str = "official") -> dict[str, torch.Tensor]:
    """Official Swin (or DIMAP) checkpoint -> timm layout, through timm's ``checkpoint_filter_fn``."""
    if layout != "official":
        raise ValueError(f"unknown Swin checkpoint layout {layout!r}")
    return checkpoint_filter_fn(state_dict, _skeleton(state_dict))


def _variant(size: str, params: int, top1: float, gmacs: float) -> Variant:
    """A Swin size at 224 with its ImageNet-1K (``ms_in1k``) weights; preprocessing from timm's config."""
    arch = f"swin_{size}_patch4_window7_224"
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{TAG}")
    return Variant(
        name=f"swin_{size}",
        builder=_build,
        kwargs={"arch": arch},
        preprocessing=Preprocessing(input_size=tuple(cfg.input_size), mean=tuple(cfg.mean), std=tuple(cfg.std),
                                    interpolation=cfg.interpolation, crop_pct=cfg.crop_pct, crop_mode=cfg.crop_mode),
        weights=(
            WeightSource(description="Microsoft ImageNet-1K weights through timm (tag ms_in1k, not timm's default "
                                     "22k-fine-tuned tag)", hf_hub_id=cfg.hf_hub_id,
                         timm_name=f"{arch}.{TAG}", layout="timm"),
            WeightSource(description="official Swin release file (and DIMAP's pruned checkpoints, same format), "
                                     "converted by timm's checkpoint filter",
                         url=cfg.url, filename=f"swin_{size}_patch4_window7_224.pth", layout="official"),
        ),
        paper_metrics=(
            PaperMetric("ImageNet-1K", "top1", top1, "official Swin README (ImageNet-1K, 224)"),
            PaperMetric("ImageNet-1K", "gmacs", gmacs, "official Swin README FLOPs (multiply-adds) at 224"),
        ),
        params=params,
        resolution_multiple=32,
        resolutions=(224,),
        build_at_resolution=True,
    )


CARD = register(ModelCard(
    family="swin",
    display_name="Swin",
    task="classification",
    paper_title="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    arxiv_id="2103.14030",
    official_repo="https://github.com/microsoft/Swin-Transformer",
    license="MIT",
    default_variant="swin_tiny",
    aliases=("swin_transformer", "swin_v1"),
    description="Local window attention with windows shifted between blocks; the hierarchical baseline "
                "that DIMAP prunes.",
    variants=(
        _variant("tiny", 28_288_354, 81.2, 4.5),
        _variant("small", 49_606_258, 83.2, 8.7),
        _variant("base", 87_768_224, 83.5, 15.4),
    ),
    convert_state_dict=convert_official,
    detect_layout=detect_layout,
))
