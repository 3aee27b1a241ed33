"""GC ViT (Global Context Vision Transformers, ICML 2023) through timm's implementation.

timm's ``GlobalContextVit`` is the model; this file adds the card, the variants and the conversion of
NVIDIA's 2023 checkpoints (official ``levels.*`` layout, ``nvidia/GCViT`` on the hub) to timm's layout.
GC ViT bakes its window sizes into the model, so it is built for the resolution it runs at
(``img_size``); sizes must be multiples of 32. Its attention modules stay timm's ``WindowAttentionGlobal``
(same parameters and state dict), switched to :class:`WindowAttentionGlobalSdpa`, whose softmax runs through
``F.scaled_dot_product_attention`` with the relative-position bias as ``attn_mask``.
"""

from __future__ import annotations

import re

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import use_fused_attn
from timm.models.gcvit import WindowAttentionGlobal

from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register
from glocal.zoo.weights import unwrap_state_dict


class WindowAttentionGlobalSdpa(WindowAttentionGlobal):
    """timm's local-window / global-query attention with fused SDPA (bias as ``attn_mask``), so that flash and
    memory-efficient kernels apply on GPU; ``fused_attn=False`` runs timm's own manual-softmax forward."""

    fused_attn: bool = True

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        if not self.fused_attn:
            return super().forward(x, q_global)
        B, N, C = x.shape
        if self.use_global and q_global is not None:
            k, v = self.qkv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            # windows are image-major: each image's global query serves all of its windows (as timm does)
            q = q_global.repeat_interleave(B // q_global.shape[0], dim=0)
            q = q.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos.get_bias().to(q.dtype),
                                           dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


def use_sdpa(model: nn.Module, fused: bool | None = None) -> nn.Module:
    """Switch every timm ``WindowAttentionGlobal`` in ``model`` to :class:`WindowAttentionGlobalSdpa` in place
    (no parameter changes); ``fused`` defaults to timm's switch (``timm.layers.set_fused_attn``)."""
    fused = use_fused_attn() if fused is None else fused
    for module in model.modules():
        if isinstance(module, WindowAttentionGlobal):
            module.__class__ = WindowAttentionGlobalSdpa
            module.fused_attn = fused
    return model


def _build(arch: str, img_size: int = 224, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build timm's GC ViT at ``img_size`` (windows follow the resolution), attention on SDPA.

    With ``pretrained=True`` timm's own loader reads the weights (``pretrained_cfg_overlay=dict(file=...)`` or
    ``hf_hub_id``/``hf_hub_filename`` for NVIDIA's 2023 files) through :func:`checkpoint_filter_fn`.
    """
    if img_size % 32:
        raise ValueError(f"GC ViT needs an input side that is a multiple of 32 (e.g. 224, 256, 384), got {img_size}")
    return use_sdpa(timm.create_model(arch, pretrained=pretrained, img_size=img_size,
                                      pretrained_filter_fn=checkpoint_filter_fn, **kwargs))


# Official (NVlabs/GCVit) key -> timm key, applied in order; SE Linear weights become 1x1 convs.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed\.proj\.", "stem.conv1."),
    (r"^patch_embed\.conv_down\.", "stem.down."),
    (r"^levels\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
    (r"^levels\.(\d+)\.q_global_gen\.to_q_global\.(\d+)\.",
     lambda m: f"stages.{m.group(1)}.global_block.blocks.conv{int(m.group(2)) + 1}."),
    (r"^levels\.", "stages."),
    (r"\.attn\.relative_position_bias_table$", ".attn.rel_pos.relative_position_bias_table"),
    (r"\.gamma1$", ".ls1.gamma"),
    (r"\.gamma2$", ".ls2.gamma"),
    (r"^norm\.", "stages.3.norm."),
    (r"^head\.", "head.fc."),
)
_UNIT = (("conv.0.", "conv_dw."), ("conv.2.fc.0.", "se.fc1."), ("conv.2.fc.2.", "se.fc2."), ("conv.3.", "conv_pw."))


def _remap_unit(key: str) -> str:
    """Rename the fused-MBConv inside a reduce unit (``conv_block.`` level) or a global-query unit (none)."""
    for old, new in _UNIT:
        pos = key.find("." + old)
        if pos < 0:
            continue
        head, tail = key[:pos], key[pos + 1 + len(old):]
        level = "" if ".global_block.blocks.conv" in head else "conv_block."
        return f"{head}.{level}{new}{tail}"
    return key


def convert_official(state_dict: dict[str, torch.Tensor], layout: str = "official") -> dict[str, torch.Tensor]:
    """NVIDIA GC ViT checkpoint (``levels.*``) -> timm ``GlobalContextVit`` state dict."""
    if layout != "official":
        raise ValueError(f"unknown GC ViT checkpoint layout {layout!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            continue  # a fixed index; timm rebuilds it as a non-persistent buffer
        new = key
        for pattern, repl in _RULES:
            new = re.sub(pattern, repl, new)
        new = _remap_unit(new)
        if (".se.fc1." in new or ".se.fc2." in new) and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """``official`` for NVIDIA's ``levels.*`` files, ``timm`` for timm's ``stages.*`` files."""
    if any(k.startswith("levels.") for k in state_dict):
        return "official"
    if any(k.startswith("stages.") for k in state_dict):
        return "timm"
    raise ValueError("not a GC ViT checkpoint: neither official (levels.*) nor timm (stages.*) keys")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor],
                         model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: NVIDIA's 2023 layout is converted, timm-layout files pass unchanged."""
    state_dict = unwrap_state_dict(state_dict, origin="GC ViT checkpoint")
    return convert_official(state_dict) if detect_layout(state_dict) == "official" else state_dict


def _variant(size: str, params: int, top1_2023: float, top1_2022: float, gmacs: float) -> Variant:
    """A GC ViT size; preprocessing and the 2022 weights' URL come from timm's pretrained config."""
    arch = f"gcvit_{size}"
    cfg = timm.models.get_pretrained_cfg(arch)
    return Variant(
        name=arch,
        builder=_build,
        kwargs={"arch": arch},
        preprocessing=Preprocessing.from_timm(arch),
        weights=(
            WeightSource(description="NVIDIA 2022 ImageNet-1K weights (timm layout), timm's pretrained path",
                         url=cfg.url, timm_name=f"{arch}.in1k",
                         layout="timm"),
            WeightSource(description="NVIDIA 2023 ImageNet-1K weights (official layout, converted on load)",
                         hf_hub_id="nvidia/GCViT", filename=f"gcvit_1k_{size}.pth.tar", layout="official"),
        ),
        paper_metrics=(
            PaperMetric("ImageNet-1K", "top1", top1_2023, "2023 weights, official README"),
            PaperMetric("ImageNet-1K", "top1", top1_2022, "2022 weights (timm), Aug 2022 README"),
            PaperMetric("ImageNet-1K", "gmacs", gmacs, "paper/README FLOPs (multiply-adds) at 224"),
        ),
        params=params,
        resolution_multiple=32,
        resolutions=(224, 384, 512),
        build_at_resolution=True,
        notes="timm's preprocessing (crop 0.875) matches the 2022 weights; NVIDIA's 2023 eval config uses "
              "crop 1.0 for xxtiny, tiny and base.",
    )


CARD = register(ModelCard(
    family="gcvit",
    display_name="GC ViT",
    task="classification",
    paper_title="Global Context Vision Transformers",
    arxiv_id="2206.09959",
    official_repo="https://github.com/NVlabs/GCVit",
    license="NVIDIA Source Code License-NC (weights); timm code Apache-2.0",
    default_variant="gcvit_tiny",
    aliases=("gc_vit", "global_context_vit"),
    description="Alternating local window attention and global-query attention whose queries summarise "
                "the whole stage map.",
    variants=(
        _variant("xxtiny", 11_995_428, 79.9, 79.8, 2.1),
        _variant("xtiny", 19_981_294, 82.0, 82.04, 2.6),
        _variant("tiny", 28_221_974, 83.5, 83.4, 4.7),
        _variant("small", 51_092_173, 84.3, 83.95, 8.5),
        _variant("base", 90_320_836, 85.0, 84.47, 14.8),
    ),
    convert_state_dict=convert_official,
    detect_layout=detect_layout,
))
