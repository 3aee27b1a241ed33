"""DiNAT: Dilated Neighborhood Attention Transformer (Hassani & Shi, arXiv 2209.15001), ImageNet classifiers.

A faithful re-implementation of the official classifier (SHI-Labs/Neighborhood-Attention-Transformer,
``classification/nat.py`` + ``dinat.py`` at d334f5bb; DiNAT is NAT with per-layer dilations) whose
``state_dict()`` equals the official checkpoints key for key (raw state dicts, no buffers). The attention is
:class:`glocal.zoo.layers.neighborhood_attention.NeighborhoodAttention2D` (NATTEN's module with RPB and its
<= 0.15 padding of maps smaller than kernel x dilation), so no NATTEN install is needed.

Tensors are channels-last (B, H, W, C) from the stem on: ``forward_features`` returns the final normalised
NHWC map and the ``feature_info`` stage outputs are NHWC too (``output_fmt = "NHWC"``);
``forward_intermediates`` (and ``timm.create_model(..., features_only=True)``) give NCHW stage maps.
"""

# No ``from __future__ import annotations`` here: torch.fx copies string annotations into the traced code as
# names that TorchScript cannot resolve (timm's fx + TorchScript check).
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from glocal.zoo.layers.init import init_vit_linear
from glocal.zoo.layers.inputs import check_image
from glocal.zoo.layers.neighborhood_attention import NeighborhoodAttention2D
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register
from glocal.zoo.weights import unwrap_state_dict

__all__ = ["DiNAT", "CONFIGS"]

SIZE_MULTIPLE = 32  # stride-4 stem and three stride-2 downsamplers


class ConvTokenizer(nn.Module):
    """Stem: two 3x3 stride-2 convs (no activation between them), then LayerNorm; returns NHWC."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, norm_layer: type[nn.Module] = nn.LayerNorm,
                 device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1, **dd),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1, **dd),
        )
        self.norm = norm_layer(embed_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """Between levels: 3x3 stride-2 conv C -> 2C without bias, then LayerNorm (NHWC in and out)."""

    def __init__(self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, device=None, dtype=None) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False, device=device,
                                   dtype=dtype)
        self.norm = norm_layer(2 * dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class DiNATBlock(nn.Module):
    """Pre-norm block: x + NA(LN(x)), x + MLP(LN(x)), with optional layer scale (``gamma1``/``gamma2``)."""

    __constants__ = ["layer_scale"]

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer: type[nn.Module] = nn.LayerNorm,
                 layer_scale: float | None = None, backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = norm_layer(dim, **dd)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size=kernel_size, dilation=dilation,
                                            qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                            proj_drop=drop, backend=backend, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop, **dd)
        self.layer_scale = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim, **dd))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.layer_scale:
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class DiNATLevel(nn.Module):
    """One level: ``depth`` blocks with their dilations, then (except the last level) the downsampler."""

    def __init__(self, dim: int, depth: int, num_heads: int, kernel_size: int, dilations: Sequence[int],
                 downsample: bool, mlp_ratio: float, qkv_bias: bool, qk_scale: float | None, drop: float,
                 attn_drop: float, drop_path: Sequence[float], norm_layer: type[nn.Module],
                 layer_scale: float | None, backend: str, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList([
            DiNATBlock(dim, num_heads, kernel_size, dilations[i], mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                       drop_path[i], norm_layer, layer_scale, backend, **dd)
            for i in range(depth)])
        self.downsample = ConvDownsampler(dim, norm_layer, **dd) if downsample else nn.Identity()

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The level's blocks (its NHWC feature map, before the downsampler)."""
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class DiNAT(nn.Module):
    """DiNAT / NAT classifier with the official module names; channels-last inside, images (B, 3, H, W) in."""

    output_fmt = "NHWC"

    def __init__(self, embed_dim: int = 64, mlp_ratio: float = 3.0, depths: Sequence[int] = (3, 4, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16), drop_path_rate: float = 0.2, in_chans: int = 3,
                 kernel_size: int = 7, dilations: Sequence[Sequence[int]] | None = None, num_classes: int = 1000,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, norm_layer: type[nn.Module] = nn.LayerNorm,
                 layer_scale: float | None = None, backend: str = "auto", global_pool: str = "avg", device=None,
                 dtype=None, **kwargs: Any) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if kwargs:
            raise TypeError(f"DiNAT got unexpected arguments: {', '.join(sorted(kwargs))}")
        levels = len(depths)
        if len(num_heads) != levels:
            raise ValueError(f"depths and num_heads need one entry per level, got {len(depths)} and {len(num_heads)}")
        if dilations is None:
            dilations = [[1] * d for d in depths]
        if [len(d) for d in dilations] != list(depths):
            raise ValueError(f"dilations need one entry per block ({list(depths)}), got {[len(d) for d in dilations]}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.size_multiple = SIZE_MULTIPLE
        self.num_levels = levels
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (levels - 1))
        self.mlp_ratio = mlp_ratio
        self.kernel_size = kernel_size
        self.dilations = [list(d) for d in dilations]

        self.patch_embed = ConvTokenizer(in_chans, embed_dim, norm_layer, **dd)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth decay
        self.levels = nn.ModuleList([
            DiNATLevel(int(embed_dim * 2**i), depths[i], num_heads[i], kernel_size, dilations[i],
                       downsample=i < levels - 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                       drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                       norm_layer=norm_layer, layer_scale=layer_scale, backend=backend, **dd)
            for i in range(levels)])
        self.norm = norm_layer(self.num_features, **dd)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool), input_fmt="NHWC")
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        # Stage features: the last block of each level (each ``levels.i`` ends with its downsampler). NHWC.
        self.feature_info = [
            dict(num_chs=int(embed_dim * 2**i), reduction=4 * 2**i, module=f"levels.{i}.blocks.{depths[i] - 1}")
            for i in range(levels)]
        self.apply(init_vit_linear)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"rpb"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for level in self.levels:
            level.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New linear classifier (on the model's device and dtype); ``global_pool=''`` keeps the NHWC map."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool),
                                                    input_fmt="NHWC")
        ref = self.patch_embed.proj[0].weight
        self.head = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())

    @torch.jit.ignore
    def set_backend(self, backend: str) -> None:
        """Switch every neighborhood-attention layer to ``backend`` (auto, reference, blocked, flex, natten)."""
        from glocal.zoo.layers.neighborhood_attention import resolve_backend

        resolve_backend(backend, "cpu")  # validates the name
        for m in self.modules():
            if isinstance(m, NeighborhoodAttention2D):
                m.core.backend, m.core.last_backend = backend, None

    @torch.jit.ignore
    def glocal_backends(self) -> dict[str, str]:
        """The neighborhood-attention kernels this model ran with (``auto``: what it measured), else the ones it
        would run with on its current device (recorded in results)."""
        device = next(self.parameters()).device
        names = {m.core.last_backend or m.backend_for(device) for m in self.modules()
                 if isinstance(m, NeighborhoodAttention2D)}
        return {"neighborhood_attention": "+".join(sorted(names))}

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` if the model takes it, else ValueError: not (B, C, H, W), or sides not multiples of 32."""
        return check_image(x, self.in_chans, self.size_multiple, "DiNAT")

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Level maps (after each level's blocks; NCHW, or NHWC on request) and, unless ``intermediates_only``,
        the final normalised NHWC features. ``norm`` applies the final LayerNorm to the last level's map."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"DiNAT intermediates are NCHW or NHWC, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        x = self.pos_drop(self.patch_embed(self.check_input(x)))
        levels = self.levels if torch.jit.is_scripting() or not stop_early else self.levels[:max_index + 1]
        last = len(self.levels) - 1
        intermediates = []
        for i, level in enumerate(levels):
            x = level.forward_blocks(x)
            if i in take_indices:
                y = self.norm(x) if norm and i == last else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
            x = level.downsample(x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the levels after the last index taken (and its downsampler); with ``prune_norm`` also the final
        LayerNorm; with ``prune_head`` the classifier. Returns the absolute indices."""
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        self.levels = self.levels[:max_index + 1]
        self.levels[-1].downsample = nn.Identity()
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, levels and the final LayerNorm: a (B, H/32, W/32, C) channels-last map."""
        x = self.pos_drop(self.patch_embed(self.check_input(x)))
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over all tokens of the NHWC map (``global_pool``), then the linear head."""
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _alternating(pattern: Sequence[int], depth: int) -> list[int]:
    return [pattern[i % len(pattern)] for i in range(depth)]


def _dinat_dilations(depths: Sequence[int]) -> list[list[int]]:
    """Official 224 dilations: [1, 8, 1], [1, 4, 1, 4], alternating 1, 2, then all 1 (NA = global at 7x7)."""
    return [_alternating((1, 8), depths[0]), _alternating((1, 4), depths[1]), _alternating((1, 2), depths[2]),
            [1] * depths[3]]


# Official factories (classification/dinat.py @ d334f5bb); drop_path_rate is the training value (no effect in eval).
CONFIGS: dict[str, dict[str, Any]] = {
    "dinat_mini": dict(depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3, drop_path_rate=0.2),
    "dinat_tiny": dict(depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3, drop_path_rate=0.2),
    "dinat_small": dict(depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), embed_dim=96, mlp_ratio=2,
                        drop_path_rate=0.3),
    "dinat_base": dict(depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), embed_dim=128, mlp_ratio=2,
                       drop_path_rate=0.5, layer_scale=1e-5),
    "dinat_large": dict(depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), embed_dim=192, mlp_ratio=2,
                        drop_path_rate=0.35),
}
for _cfg in CONFIGS.values():
    _cfg.update(kernel_size=7, dilations=_dinat_dilations(_cfg["depths"]))

_CKPT = "https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/"
# classification/DiNAT.md "Checkpoints" table (= paper Table 2 / 3): params (M), FLOPs (G, multiply-adds) at
# 224x224, ImageNet-1K top-1 (%), and the checkpoint file linked from the top-1 cell.
_README: dict[str, tuple[float, float, float, str]] = {
    "dinat_mini": (20, 2.7, 81.8, "dinat_mini_in1k_224.pth"),
    "dinat_tiny": (28, 4.3, 82.7, "dinat_tiny_in1k_224.pth"),
    "dinat_small": (51, 7.8, 83.8, "dinat_small_in1k_224.pth"),
    "dinat_base": (90, 13.7, 84.4, "dinat_base_in1k_224.pth"),
    "dinat_large": (200, 30.6, 86.6, "dinat_large_in22k_in1k_224.pth"),
}
# Exact official parameter counts (tests/data/manifests/dinat/*.json, built from the official classes).
_PARAMS = {"dinat_mini": 19_984_174, "dinat_tiny": 27_901_582, "dinat_small": 50_719_681,
           "dinat_base": 89_769_652, "dinat_large": 200_943_514}


def _timm_cfg(name: str) -> dict[str, Any]:
    """timm pretrained_cfg: the official eval transform (timm defaults: crop 0.875, bicubic, ImageNet stats)."""
    return dict(url=_CKPT + _README[name][3], num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
                crop_pct=0.875, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="patch_embed.proj.0", classifier="head", license="mit", paper_ids="arXiv:2209.15001",
                origin_url="https://github.com/SHI-Labs/Neighborhood-Attention-Transformer")


default_cfgs = generate_default_cfgs({name: _timm_cfg(name) for name in CONFIGS})


def _checkpoint_filter_fn(state_dict: dict[str, Any], model: DiNAT) -> dict[str, torch.Tensor]:
    """The official files are raw state dicts; unwrap training wrappers too (``model``/``state_dict``)."""
    return unwrap_state_dict(state_dict, origin=f"{type(model).__name__} checkpoint")


def _create_timm(name: str, pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """timm entry point: the official config, overridable by keyword. ``pretrained=True`` takes timm's own path:
    the official URL (SHI Labs) through timm's cache, or ``pretrained_cfg_overlay=dict(file=PATH)``."""
    return build_model_with_cfg(DiNAT, name, pretrained=pretrained, pretrained_filter_fn=_checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
                                **{**CONFIGS[name], **kwargs})


@register_model
def dinat_mini(pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """DiNAT-Mini: 20M params, 2.7 GMACs, 81.8% ImageNet-1K top-1 (official README)."""
    return _create_timm("dinat_mini", pretrained, **kwargs)


@register_model
def dinat_tiny(pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """DiNAT-Tiny: 28M params, 4.3 GMACs, 82.7% top-1 (official README)."""
    return _create_timm("dinat_tiny", pretrained, **kwargs)


@register_model
def dinat_small(pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """DiNAT-Small: 51M params, 7.8 GMACs, 83.8% top-1 (official README)."""
    return _create_timm("dinat_small", pretrained, **kwargs)


@register_model
def dinat_base(pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """DiNAT-Base: 90M params, 13.7 GMACs, 84.4% top-1 (official README)."""
    return _create_timm("dinat_base", pretrained, **kwargs)


@register_model
def dinat_large(pretrained: bool = False, **kwargs: Any) -> DiNAT:
    """DiNAT-Large (ImageNet-22K pre-trained, 1K fine-tuned, 224): 200M params, 30.6 GMACs, 86.6% top-1."""
    return _create_timm("dinat_large", pretrained, **kwargs)


def _variant(name: str) -> Variant:
    """A registry variant with the official constructor arguments and the README's numbers."""
    params_m, gmacs, top1, filename = _README[name]
    large = name == "dinat_large"
    note = "ImageNet-22K pre-trained, fine-tuned on ImageNet-1K at 224" if large else "ImageNet-1K only, 224x224"
    weights = [WeightSource(description=f"official checkpoint ({note}); raw state dict, through timm's pretrained "
                                        "path (its cache, else the URL)", url=_CKPT + filename, filename=filename,
                            timm_name=name, layout="official")]
    return Variant(
        name=name,
        builder=DiNAT,
        kwargs={k: (list(v) if isinstance(v, tuple) else v) for k, v in CONFIGS[name].items()},
        preprocessing=Preprocessing.from_timm(name),  # one definition: the timm pretrained cfg registered above
        weights=tuple(weights),
        paper_metrics=(
            PaperMetric("ImageNet-1K", "top1", top1, f"224x224, {note}; classification/DiNAT.md"),
            PaperMetric("ImageNet-1K", "params_m", params_m, "classification/DiNAT.md '# of Params'"),
            PaperMetric("ImageNet-1K", "gmacs", gmacs, "224x224, classification/DiNAT.md 'FLOPs' (multiply-adds)"),
        ),
        params=_PARAMS[name],
        resolution_multiple=SIZE_MULTIPLE,
        resolutions=(224,),
        notes="Kernel 7, dilations [1,8,1] / [1,4,1,4] / alternating 1,2 / all 1 (the 224 configs). Input sides "
              "must be multiples of 32; stage maps smaller than kernel x dilation (inputs below 224) are "
              "zero-padded inside attention as NATTEN <= 0.15 does. Channels-last features (NHWC).",
    )


CARD = register(ModelCard(
    family="dinat",
    display_name="DiNAT",
    task="classification",
    paper_title="Dilated Neighborhood Attention Transformer",
    arxiv_id="2209.15001",
    official_repo="https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
    license="MIT",
    default_variant="dinat_tiny",
    aliases=("dinat",),
    description="Hierarchical transformer alternating local neighborhood attention (7x7 windows) with dilated "
                "neighborhood attention whose sparse 7x7 grid spans the whole map: local and global context.",
    variants=tuple(_variant(name) for name in CONFIGS),
))
