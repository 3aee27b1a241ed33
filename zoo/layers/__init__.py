"""Reusable layers shared by zoo models: input checks, padding, tiling, channel LayerNorm, ViT init, Swin shift
masks, FlexAttention block masks from block flags, neighborhood attention.
Prefer timm's layers where they compute the same function."""
