"""Video quality measures of UltraGen (arXiv 2510.18775, Sec. 4): CLIP score per frame, temporal consistency,
HD-MSE / HD-LPIPS and HD-FVD. Pure functions on tensors; the feature extractors (open_clip, LPIPS, I3D) are
passed in, so nothing here downloads weights and every function runs on random-init extractors in tests.

Videos are (T, 3, H, W) float tensors in [0, 1]. HD-MSE and HD-LPIPS measure the high-frequency content a
video loses under 2^k downsampling (k = 3, 4, 5): higher means more detail, but noise and artefacts score
high too, so they are only meaningful beside HD-FVD and CLIP (the paper reports them as higher-is-better).
The paper does not state its resampling filters; here downsampling is antialiased bilinear and upsampling
bilinear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

HD_SCALES = (3, 4, 5)  # 2^k downsampling factors of HD-MSE / HD-LPIPS
I3D_SIZE = 224  # HD-FVD: native-resolution patches of the I3D input size


def preprocess_frames(video: torch.Tensor, size: int = 224,
                      mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
                      std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711)) -> torch.Tensor:
    """CLIP preprocessing of (T, 3, H, W) frames: short side to ``size`` (bicubic), centre crop, normalise."""
    _, _, h, w = video.shape
    scale = size / min(h, w)
    frames = F.interpolate(video, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                           antialias=True, align_corners=False).clamp(0, 1)
    top, left = (frames.shape[-2] - size) // 2, (frames.shape[-1] - size) // 2
    frames = frames[..., top:top + size, left:left + size]
    return (frames - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def frame_clip_scores(video: torch.Tensor, prompt: str, model: torch.nn.Module,
                      tokenizer: Callable[[list[str]], torch.Tensor], size: int = 224) -> torch.Tensor:
    """CLIP score of every frame against the prompt (raw cosine), with an open_clip model and its tokenizer."""
    from glocal.benchmarks.metrics.generation import clip_score

    with torch.no_grad():
        return clip_score(preprocess_frames(video, size), [prompt] * video.shape[0], model.encode_image,
                          lambda texts: model.encode_text(tokenizer(list(texts))))


def temporal_consistency(frame_embeddings: torch.Tensor) -> float:
    """Mean cosine similarity of consecutive frames' CLIP image embeddings (T, D); 1 for a still video."""
    if frame_embeddings.shape[0] < 2:
        raise ValueError("temporal consistency needs at least 2 frames")
    return float(F.cosine_similarity(frame_embeddings[1:], frame_embeddings[:-1], dim=-1).mean())


def down_up(video: torch.Tensor, k: int) -> torch.Tensor:
    """The video downsampled by 2^k (antialiased bilinear) and upsampled back (bilinear)."""
    h, w = video.shape[-2:]
    f = 2**k
    if h < f or w < f:
        raise ValueError(f"a {h}x{w} video is too small for 2^{k} downsampling")
    small = F.interpolate(video, size=(h // f, w // f), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def hd_mse(video: torch.Tensor, scales: Sequence[int] = HD_SCALES, peak: float = 255.0) -> float:
    """HD-MSE: sum over k of the MSE between the video and its 2^k down-up copy, on a 0..``peak`` scale.
    Higher = more high-frequency content (which noise also has)."""
    return float(sum(((video - down_up(video, k)) * peak).pow(2).mean() for k in scales))


def hd_lpips(video: torch.Tensor, lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             scales: Sequence[int] = HD_SCALES) -> float:
    """HD-LPIPS: sum over k of the mean LPIPS between frames and their 2^k down-up copies; ``lpips`` takes two
    (N, 3, H, W) batches in [-1, 1] (the ``lpips`` package's convention) and returns per-image distances."""
    return float(sum(lpips(video * 2 - 1, down_up(video, k) * 2 - 1).mean() for k in scales))


def video_patches(video: torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """The non-overlapping native-resolution ``size x size`` patches of a (T, 3, H, W) video as clips:
    (P, T, 3, size, size), each clip one patch position through all frames."""
    from glocal.benchmarks.metrics.generation import GenerationDataError, patch_crops

    try:
        return torch.stack([patch_crops(frame, size) for frame in video], dim=1)
    except GenerationDataError as e:
        raise ValueError(str(e)) from None


def hd_fvd(real: Sequence[torch.Tensor], generated: Sequence[torch.Tensor],
           extractor: Callable[[torch.Tensor], torch.Tensor], size: int = I3D_SIZE) -> float:
    """HD-FVD: FVD between the I3D features of native-resolution patches of real and generated videos.
    ``extractor`` maps a batch of clips (P, T, 3, size, size) in [0, 1] to (P, D) features (the user's I3D)."""
    from glocal.benchmarks.metrics.generation import frechet_distance

    feats = [torch.cat([extractor(video_patches(v, size)) for v in videos]) for videos in (real, generated)]
    return frechet_distance(feats[0], feats[1])
