"""A micro Swin (timm's class, 64 px, ~0.6M parameters) registered only for the DIMAP harness tests."""

import timm
from timm.models.swin_transformer import SwinTransformer

from glocal.zoo.registry import ModelCard, Variant, register


def micro_swin(img_size: int = 64, num_classes: int = 10) -> SwinTransformer:
    """timm's Swin with every size turned down; the same module names as Swin-T/S/B."""
    return SwinTransformer(img_size=img_size, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2),
                           window_size=4, num_classes=num_classes)


CARD = register(ModelCard(
    family="swinmicro", display_name="Swin micro (test)", task="classification", paper_title="none",
    arxiv_id="0000.00000", official_repo="none", license=f"Apache-2.0 (timm {timm.__version__})",
    variants=(Variant(name="swin_micro", builder=micro_swin, resolutions=(64,), resolution_multiple=32,
                      build_at_resolution=True),),
))
