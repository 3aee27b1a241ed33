"""Generation quality: prompt sets, CLIP score, FID and patch-FID with a pluggable Inception feature extractor.

Nothing here downloads weights: the CLIP checkpoint and the Inception weights file are given by the user.
The CLIP score is the raw cosine between image and text embeddings (0-1 scale, as the Scale-DiT table reports
it; torchmetrics multiplies by 100 and clips at 0). FID is the Frechet distance between Gaussian fits of
2048-d Inception pool features; patch-FID computes it on native-resolution crops (:func:`patch_crops`), the
URAE/UltraPixel convention for 4K images. A number is only comparable with others of the same prompt set,
reference set and crop protocol, which the evaluator records beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [0, 1] -> features [B, D]


class GenerationDataError(ValueError):
    """A prompt file, weights file or reference set that cannot be used (one line)."""


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: int


def load_prompts(path: str | Path, base_seed: int = 0) -> list[Prompt]:
    """One prompt per line (``.txt``; blank lines and ``#`` comments skipped), or JSONL with ``prompt`` and an
    optional ``seed``; a prompt without a seed gets ``base_seed + its index``."""
    path = Path(path)
    if not path.is_file():
        raise GenerationDataError(f"prompt file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Prompt] = []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        if jsonl:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise GenerationDataError(f"{path}:{no}: not JSON ({e.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise GenerationDataError(f"{path}:{no}: expected an object with a string 'prompt'")
            seed = item.get("seed", base_seed + len(out))
            if not isinstance(seed, int):
                raise GenerationDataError(f"{path}:{no}: seed must be an integer, got {seed!r}")
            out.append(Prompt(item["prompt"], seed))
        else:
            out.append(Prompt(line, base_seed + len(out)))
    if not out:
        raise GenerationDataError(f"prompt file {path} has no prompts")
    return out


def clip_score(images: torch.Tensor, texts: Sequence[str], encode_image: Callable[[torch.Tensor], torch.Tensor],
               encode_text: Callable[[Sequence[str]], torch.Tensor]) -> torch.Tensor:
    """Per-pair cosine similarity of image and text embeddings (images already preprocessed for the encoder)."""
    a = torch.nn.functional.normalize(encode_image(images).float(), dim=-1)
    b = torch.nn.functional.normalize(encode_text(texts).float(), dim=-1)
    return (a * b).sum(-1)


def open_clip_scorer(arch: str, checkpoint: str | Path, device: torch.device | str = "cpu") -> Callable[
        [list[Any], Sequence[str]], torch.Tensor]:
    """A CLIP scorer on PIL images from an open_clip architecture and a local checkpoint file."""
    import open_clip

    if not Path(checkpoint).is_file():
        raise GenerationDataError(f"CLIP checkpoint not found: {checkpoint} (give clip=ARCH:PATH)")
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(checkpoint), device=device)
    tokenizer = open_clip.get_tokenizer(arch)
    model.eval()

    @torch.no_grad()
    def score(images: list[Any], texts: Sequence[str]) -> torch.Tensor:
        x = torch.stack([preprocess(im) for im in images]).to(device)
        return clip_score(x, texts, model.encode_image, lambda t: model.encode_text(tokenizer(list(t)).to(device)))

    return score


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets [n, D] (the FID formula)."""
    import numpy as np
    from scipy import linalg

    if a.shape[0] < 2 or b.shape[0] < 2:
        raise GenerationDataError("FID needs at least two feature vectors on each side")
    x, y = a.double().numpy(), b.double().numpy()
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals (as pytorch-fid does)
        eye = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eye) @ (s2 + eye))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def patch_crops(image: torch.Tensor, crop: int, count: int | None = None, seed: int = 0) -> torch.Tensor:
    """Native-resolution crops [n, C, crop, crop] of one image [C, H, W]: the non-overlapping grid (``count``
    None), or ``count`` random positions from ``seed``."""
    c, h, w = image.shape
    if h < crop or w < crop:
        raise GenerationDataError(f"crop {crop} is larger than the image ({h}x{w})")
    if count is None:
        tiles = image[:, : h // crop * crop, : w // crop * crop].unfold(1, crop, crop).unfold(2, crop, crop)
        return tiles.permute(1, 2, 0, 3, 4).reshape(-1, c, crop, crop)
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, h - crop + 1, (count,), generator=g)
    xs = torch.randint(0, w - crop + 1, (count,), generator=g)
    return torch.stack([image[:, y:y + crop, x:x + crop] for y, x in zip(ys.tolist(), xs.tolist(), strict=True)])


def inception_extractor(kind: str, weights: str | Path, device: torch.device | str = "cpu") -> FeatureExtractor:
    """2048-d Inception pool features from a user-supplied weights file: ``torchmetrics`` (its FID Inception,
    the TF-compatible port, weights file ``pt_inception-2015-12-05``) or ``torchvision`` (``inception_v3`` with a
    state dict file; not the TF FID network, so its numbers are not comparable with published FIDs)."""
    if not Path(weights).is_file():
        raise GenerationDataError(f"Inception weights file not found: {weights} (give inception=KIND:PATH)")
    if kind == "torchmetrics":
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError:
            raise GenerationDataError("inception=torchmetrics:PATH needs torchmetrics: pip install torchmetrics") \
                from None
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(weights)).to(device).eval()

        @torch.no_grad()
        def tm(images: torch.Tensor) -> torch.Tensor:
            return net((images.clamp(0, 1) * 255).to(torch.uint8).to(device)).reshape(images.shape[0], -1)

        return tm
    if kind == "torchvision":
        import torchvision

        from glocal.zoo.weights import read_checkpoint

        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(read_checkpoint(Path(weights)))
        net.fc = torch.nn.Identity()
        net = net.to(device).eval()
        mean = torch.tensor([0.485, 0.456, 0.406], device=device)[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225], device=device)[:, None, None]

        @torch.no_grad()
        def tv(images: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.interpolate(images.to(device).float(), size=(299, 299), mode="bilinear",
                                                align_corners=False)
            return net((x - mean) / std)

        return tv
    raise GenerationDataError(f"unknown Inception extractor {kind!r}; expected torchmetrics or torchvision")
