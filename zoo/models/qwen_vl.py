"""Qwen2.5-VL on transformers' own ``Qwen2_5_VLForConditionalGeneration`` (window-attention ViT with 2x2 token
merging, M-RoPE language model).

Variants: ``qwen25vl_tiny`` (small widths, the real 32-layer vision depth and window/full-attention layout, for
CPU tests) and ``qwen25vl_7b`` (the shapes of ``Qwen/Qwen2.5-VL-7B-Instruct``). :func:`prefill_inputs` computes the
3-D position ids on the full prompt, then slices them (and the attention mask) with the kept visual tokens, and
sets the model's ``rope_deltas`` so decoding continues after the last real position.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from glocal.zoo.models._vlm import Selector, load_pretrained, need_transformers, splice_visual_tokens
from glocal.zoo.registry import ModelCard, Preprocessing, Variant, WeightSource, register

QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)
_VISION_LAYOUT = {"depth": 32, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                  "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}

QWEN25VL_7B = {
    "vision": {**_VISION_LAYOUT, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
               "out_hidden_size": 3584, "tokens_per_second": 2},
    "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
    "tokens": {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
               "vision_end_token_id": 151653},
}
QWEN25VL_TINY = {
    "vision": {**_VISION_LAYOUT, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
               "tokens_per_second": 2},
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024, "bos_token_id": 1, "eos_token_id": 2,
             "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}},
    "tokens": {"image_token_id": 1000, "video_token_id": 1001, "vision_start_token_id": 1002,
               "vision_end_token_id": 1003},
}


def qwen_config(spec: dict[str, Any]) -> Any:
    """A ``Qwen2_5_VLConfig`` from one of the shape dicts above (SDPA attention)."""
    need_transformers("qwen25vl")
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(vision_config=dict(spec["vision"]), text_config=dict(spec["text"]), **spec["tokens"])
    config._attn_implementation = "sdpa"
    return config


def build_qwen(shapes: str = "tiny", weights_dir: str | os.PathLike | None = None,
               dtype: torch.dtype | None = None) -> nn.Module:
    """``Qwen2_5_VLForConditionalGeneration`` with random weights, or loaded strictly from ``weights_dir``."""
    need_transformers("qwen25vl")
    from transformers import Qwen2_5_VLForConditionalGeneration

    if weights_dir is not None:
        return load_pretrained(Qwen2_5_VLForConditionalGeneration, "qwen2_5_vl", weights_dir, dtype)
    spec = {"tiny": QWEN25VL_TINY, "7b": QWEN25VL_7B}[shapes]
    model = Qwen2_5_VLForConditionalGeneration(qwen_config(spec))
    return model.to(dtype) if dtype is not None else model


def token_grids(model: nn.Module, image_grid_thw: torch.Tensor) -> list[tuple[int, int]]:
    """(rows, width) of each image's merged-token grid, frames stacked as rows."""
    m = model.config.vision_config.spatial_merge_size
    return [(int(t) * int(h) // m, int(w) // m) for t, h, w in image_grid_thw.tolist()]


def prefill_inputs(model: nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                   image_grid_thw: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   select: Selector | None = None, mm_token_type_ids: torch.Tensor | None = None,
                   **_: Any) -> dict[str, torch.Tensor]:
    """Keyword inputs for ``model(**inputs)`` whose language model sees the visual tokens ``select`` keeps.

    ``None`` keeps all, which equals the model's own forward. Position ids are the full prompt's, sliced.
    """
    cfg, inner = model.config, model.model
    feats = list(inner.get_image_features(pixel_values, image_grid_thw).pooler_output)
    kept = select(token_grids(model, image_grid_thw), {"grid_thw": image_grid_thw}) if select is not None else None
    image_mask = input_ids == cfg.image_token_id
    types = mm_token_type_ids if mm_token_type_ids is not None else image_mask.int()
    positions, deltas = inner.get_rope_index(input_ids, types, image_grid_thw,
                                             attention_mask=attention_mask)
    embeds = model.get_input_embeddings()(input_ids)
    out = splice_visual_tokens(embeds, image_mask, feats, kept, attention_mask, positions)
    inner.rope_deltas = deltas + (input_ids.shape[1] - out["inputs_embeds"].shape[1])
    return out


def dummy_inputs(model: nn.Module, batch: int = 1, prompt_tokens: int = 32, image_size: int = 224, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A Qwen2.5-VL chat-like prompt ``text <vision_start> <image>xN <vision_end> text`` and random patches."""
    cfg, vc = model.config, model.config.vision_config
    unit = vc.patch_size * vc.spatial_merge_size
    if image_size % unit:
        raise ValueError(f"Qwen2.5-VL images must be multiples of {unit} pixels, got {image_size}")
    g = torch.Generator().manual_seed(seed)
    side = image_size // vc.patch_size
    n_img = (side // vc.spatial_merge_size) ** 2
    vocab = min(cfg.image_token_id, cfg.text_config.vocab_size)
    text = torch.randint(0, vocab, (batch, prompt_tokens), generator=g)
    half = prompt_tokens // 2
    image = torch.tensor([cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id])
    ids = torch.cat([text[:, :half], image.expand(batch, -1), text[:, half:]], dim=1)
    patch_dim = 3 * vc.temporal_patch_size * vc.patch_size ** 2
    pixels = torch.randn(batch * side * side, patch_dim, generator=g)
    grid = torch.tensor([[1, side, side]] * batch)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device, dtype),
            "image_grid_thw": grid.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "mm_token_type_ids": (ids == cfg.image_token_id).int().to(device)}


def _variant(name: str, shapes: str, params: int | None, notes: str) -> Variant:
    return Variant(
        name=name, builder=build_qwen, kwargs={"shapes": shapes}, params=params,
        preprocessing=Preprocessing(input_size=(3, 448, 448), mean=QWEN_MEAN, std=QWEN_STD, crop_pct=1.0),
        resolution_multiple=28, resolutions=(448,),
        weights=(WeightSource(description="Qwen/Qwen2.5-VL-7B-Instruct (transformers layout); pass the "
                                          "downloaded folder with --weights PATH",
                              hf_hub_id="Qwen/Qwen2.5-VL-7B-Instruct", layout="transformers"),)
        if shapes == "7b" else (),
        notes=notes,
    )


CARD = register(ModelCard(
    family="qwen25vl",
    display_name="Qwen2.5-VL",
    task="vlm",
    paper_title="Qwen2.5-VL Technical Report",
    arxiv_id="2502.13923",
    official_repo="https://github.com/QwenLM/Qwen2.5-VL",
    license="Apache-2.0",
    default_variant="qwen25vl_tiny",
    aliases=("qwen2_5_vl", "qwen_vl"),
    description="A native-resolution ViT (window attention, four full-attention layers, 2x2 token merging) and "
                "Qwen2.5 with M-RoPE (transformers' Qwen2_5_VLForConditionalGeneration).",
    variants=(
        _variant("qwen25vl_tiny", "tiny", None, "Tiny widths, the real vision depth and window layout; random "
                 "weights only, for CPU tests and smoke runs."),
        _variant("qwen25vl_7b", "7b", 8_292_166_656, "Shapes of Qwen/Qwen2.5-VL-7B-Instruct; real weights from a "
                 "local Hugging Face folder (--weights PATH)."),
    ),
))
