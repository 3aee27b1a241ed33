"""LLaVA-1.5 on transformers' own ``LlavaForConditionalGeneration`` (CLIP ViT-L/14-336 + 2-layer MLP + Vicuna).

Variants: ``llava15_tiny`` (a small config of the same class, for CPU tests and smoke runs; the family default so
that ``bench run --model llava15`` works anywhere) and ``llava15_7b`` (the shapes of ``llava-hf/llava-1.5-7b-hf``).
Real weights load from a local Hugging Face folder (``--weights PATH``) through ``from_pretrained``, strictly.
:func:`prefill_inputs` builds the language model's prefill inputs with an optional visual-token selector, which
is how token-pruning methods (``glocal.zoo.methods.hiprune``) reach the model without copying its code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from glocal.zoo.models._vlm import Selector, load_pretrained, need_transformers, splice_visual_tokens
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 and Vicuna-7B (Llama-2 shapes, vocabulary 32064)
LLAVA15_7B = {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu"},
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "image_token_index": 32000, "pad_token_id": 32001,
}
# Same class and token grid (336 / 14 = 24 x 24 = 576 visual tokens, 24 vision layers so HiPrune's layer 9 and
# layer -2 exist), small widths: a prefill takes milliseconds on a CPU.
LLAVA15_TINY = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 24, "num_attention_heads": 2,
               "image_size": 336, "patch_size": 14, "projection_dim": 32, "hidden_act": "quick_gelu"},
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 1024, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5},
    "image_token_index": 1000, "pad_token_id": 1001,
}


def llava_config(spec: dict[str, Any]) -> Any:
    """A ``LlavaConfig`` from one of the shape dicts above (eager-free: SDPA attention throughout)."""
    need_transformers("llava15")
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    config = LlavaConfig(vision_config=CLIPVisionConfig(**spec["vision"]).to_dict(),
                         text_config=LlamaConfig(**spec["text"]).to_dict(),
                         image_token_index=spec["image_token_index"], pad_token_id=spec["pad_token_id"],
                         image_seq_length=(spec["vision"]["image_size"] // spec["vision"]["patch_size"]) ** 2,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    config._attn_implementation = "sdpa"
    return config


def build_llava(shapes: str = "tiny", weights_dir: str | os.PathLike | None = None,
                dtype: torch.dtype | None = None) -> nn.Module:
    """``LlavaForConditionalGeneration`` with random weights, or loaded strictly from ``weights_dir``."""
    need_transformers("llava15")
    from transformers import LlavaForConditionalGeneration

    if weights_dir is not None:
        return load_pretrained(LlavaForConditionalGeneration, "llava", weights_dir, dtype)
    spec = {"tiny": LLAVA15_TINY, "7b": LLAVA15_7B}[shapes]
    model = LlavaForConditionalGeneration(llava_config(spec))
    return model.to(dtype) if dtype is not None else model


def visual_grid(model: nn.Module) -> tuple[int, int]:
    vc = model.config.vision_config
    return vc.image_size // vc.patch_size, vc.image_size // vc.patch_size


def prefill_inputs(model: nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, select: Selector | None = None,
                   **_: Any) -> dict[str, torch.Tensor]:
    """Keyword inputs for ``model(**inputs)`` whose language model sees the visual tokens ``select`` keeps.

    ``input_ids`` carries one ``image_token_index`` placeholder per visual token (576 per image); ``select``
    (called after the vision tower ran) returns sorted kept indices per image; ``None`` keeps all, which equals
    the model's own forward.
    """
    cfg = model.config
    feats = model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = list(feats.pooler_output)
    kept = select([visual_grid(model)] * len(feats), {}) if select is not None else None
    embeds = model.get_input_embeddings()(input_ids)
    return splice_visual_tokens(embeds, input_ids == cfg.image_token_id, feats, kept, attention_mask)


def dummy_inputs(model: nn.Module, batch: int = 1, prompt_tokens: int = 32, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A LLaVA-1.5 prompt ``<s> text[:half] <image>x576 text[half:]`` with random text ids and a random image."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    side = cfg.vision_config.image_size
    n_img = visual_grid(model)[0] * visual_grid(model)[1]
    vocab = min(cfg.image_token_id, cfg.text_config.vocab_size)
    text = torch.randint(3, vocab, (batch, prompt_tokens), generator=g)
    half = prompt_tokens // 2
    image = torch.full((batch, n_img), cfg.image_token_id)
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), text[:, :half], image, text[:, half:]], dim=1)
    pixels = torch.randn(batch, 3, side, side, generator=g)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device, dtype),
            "attention_mask": torch.ones_like(ids).to(device)}


def _variant(name: str, shapes: str, params: int | None, notes: str) -> Variant:
    return Variant(
        name=name, builder=build_llava, kwargs={"shapes": shapes}, params=params,
        preprocessing=Preprocessing(input_size=(3, 336, 336), mean=CLIP_MEAN, std=CLIP_STD, crop_pct=1.0),
        resolutions=(336,),
        weights=(WeightSource(description="llava-hf/llava-1.5-7b-hf (transformers layout); pass the downloaded "
                                          "folder with --weights PATH", hf_hub_id="llava-hf/llava-1.5-7b-hf",
                              layout="transformers"),) if shapes == "7b" else (),
        paper_metrics=(PaperMetric("POPE", "f1", 85.9, "LLaVA-1.5-7B, 576 tokens, HiPrune paper table"),
                       PaperMetric("GQA", "accuracy", 62.0, "LLaVA-1.5 paper"),
                       PaperMetric("MME", "perception", 1510.7, "LLaVA-1.5 paper")) if shapes == "7b" else (),
        notes=notes,
    )


CARD = register(ModelCard(
    family="llava15",
    display_name="LLaVA-1.5",
    task="vlm",
    paper_title="Improved Baselines with Visual Instruction Tuning",
    arxiv_id="2310.03744",
    official_repo="https://github.com/haotian-liu/LLaVA",
    license="Apache-2.0 (code); Llama 2 Community License (weights)",
    default_variant="llava15_tiny",
    aliases=("llava", "llava_1_5"),
    description="CLIP ViT-L/14-336 features of the penultimate layer, a 2-layer MLP projector and Vicuna-7B; "
                "576 visual tokens per image reach the language model (transformers' LlavaForConditionalGeneration).",
    variants=(
        _variant("llava15_tiny", "tiny", None, "Tiny widths, real token grid (576 visual tokens, 24 vision layers); "
                 "random weights only, for CPU tests and smoke runs."),
        _variant("llava15_7b", "7b", 7_063_427_072, "Shapes of llava-hf/llava-1.5-7b-hf; real weights from a "
                 "local Hugging Face folder (--weights PATH)."),
    ),
))
