"""Video quality measures of UltraGen (arXiv 2510.18775, Sec. 4): CLIP score per frame, temporal consistency,
HD-MSE / HD-LPIPS and HD-FVD. Pure functions on tensors; the feature extractors (open_clip, LPIPS, I3D) are
passed in, so nothing here downloads weights and every function runs on random-init extractors in tests.

Videos are (T, 3, H, W) float tensors in [0, 1]. HD-MSE and HD-LPIPS measure the high-frequency content a
video loses under 2^k downsampling (k = 3, 4, 5): higher means more detail, but noise and artefacts score
high too, so they are only meaningful beside HD-FVD and CLIP (the paper reports them as higher-is-better).
The paper does not state its resampling filters; here downsampling is antialiased bilinear and upsampling
bilinear.

The loaders at the end (:func:`open_clip_frames`, :func:`lpips_distance`, :func:`i3d_extractor`) build those
extractors from files the user gives; a missing or unreadable file is one :class:`VideoQualityError` line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

HD_SCALES = (3, 4, 5)  # 2^k downsampling factors of HD-MSE / HD-LPIPS
I3D_SIZE = 224  # HD-FVD: native-resolution patches of the I3D input size
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation (open_clip's default)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LPIPS_KINDS = ("torchscript", "alex", "vgg", "squeeze")
I3D_KINDS = ("styleganv", "torchscript")


class VideoQualityError(ValueError):
    """A feature-extractor file or kind that cannot be used (one line)."""


def preprocess_frames(video: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                      std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """CLIP preprocessing of (T, 3, H, W) frames: short side to ``size`` (bicubic), centre crop, normalise."""
    _, _, h, w = video.shape
    scale = size / min(h, w)
    frames = F.interpolate(video, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                           antialias=True, align_corners=False).clamp(0, 1)
    top, left = (frames.shape[-2] - size) // 2, (frames.shape[-1] - size) // 2
    frames = frames[..., top:top + size, left:left + size]
    return (frames - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class FrameClip:
    """Per-frame CLIP scores (raw cosine with the prompt) and image embeddings of a video, from an open_clip-style
    model (``encode_image``, ``encode_text``) and its tokenizer; frames go through :func:`preprocess_frames`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], size: int = 224,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 device: torch.device | str = "cpu", batch: int = 16) -> None:
        self.model, self.tokenizer, self.size, self.mean, self.std = model, tokenizer, size, mean, std
        self.device, self.batch = torch.device(device), batch

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (T,), embeddings (T, D)), both float on the CPU."""
        from glocal.benchmarks.metrics.generation import clip_score

        emb = torch.cat([self.model.encode_image(preprocess_frames(chunk, self.size, self.mean, self.std)
                                                 .to(self.device)).float() for chunk in video.split(self.batch)])
        text = self.model.encode_text(self.tokenizer([prompt]).to(self.device))  # once, for every frame
        scores = clip_score(emb, [prompt] * video.shape[0], lambda e: e, lambda texts: text.expand(len(texts), -1))
        return scores.cpu(), emb.cpu()


def frame_clip_scores(video: torch.Tensor, prompt: str, model: torch.nn.Module,
                      tokenizer: Callable[[list[str]], torch.Tensor], size: int = 224) -> torch.Tensor:
    """CLIP score of every frame against the prompt (raw cosine), with an open_clip model and its tokenizer."""
    return FrameClip(model, tokenizer, size)(video, prompt)[0]


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


def patch_features(video: torch.Tensor, extractor: Callable[[torch.Tensor], torch.Tensor],
                   size: int = I3D_SIZE) -> torch.Tensor:
    """The extractor's features (P, D) of one video's native-resolution ``size`` patches (one clip per position)."""
    return extractor(video_patches(video, size)).float().cpu()


def hd_fvd(real: Sequence[torch.Tensor], generated: Sequence[torch.Tensor],
           extractor: Callable[[torch.Tensor], torch.Tensor], size: int = I3D_SIZE) -> float:
    """HD-FVD: FVD between the I3D features of native-resolution patches of real and generated videos.
    ``extractor`` maps a batch of clips (P, T, 3, size, size) in [0, 1] to (P, D) features (the user's I3D)."""
    from glocal.benchmarks.metrics.generation import frechet_distance

    feats = [torch.cat([patch_features(v, extractor, size) for v in videos]) for videos in (real, generated)]
    return frechet_distance(feats[0], feats[1])


# --------------------------------------------------------------------------------- extractors from user files
def _existing(path: str | Path, what: str, option: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise VideoQualityError(f"{what} not found: {path} (give {option}=KIND:PATH)")
    return path


def _torchscript(path: Path, device: torch.device | str, what: str) -> torch.jit.ScriptModule:
    """A TorchScript archive (code and tensors, no pickled Python objects), in eval mode on ``device``."""
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - torch.jit.load raises RuntimeError, ValueError ... for a bad archive
        raise VideoQualityError(f"{what} {path} is not a TorchScript file: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


def open_clip_frames(arch: str, checkpoint: str | Path, device: torch.device | str = "cpu") -> FrameClip:
    """:class:`FrameClip` on an open_clip architecture and a local checkpoint file (the model's own input size
    and normalisation)."""
    import open_clip

    path = _existing(checkpoint, "CLIP checkpoint", "clip")
    model = open_clip.create_model(arch, pretrained=str(path), device=device).eval()
    size = model.visual.image_size
    return FrameClip(model, open_clip.get_tokenizer(arch), size if isinstance(size, int) else size[0],
                     model.visual.image_mean or CLIP_MEAN, model.visual.image_std or CLIP_STD, device)


def lpips_distance(kind: str, path: str | Path, device: torch.device | str = "cpu",
                   batch: int = 8) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An LPIPS distance for :func:`hd_lpips` (two (N, 3, H, W) batches in [-1, 1] -> (N,) distances):
    ``torchscript:FILE`` (a TorchScript module called as ``module(a, b)``, e.g. a traced ``lpips.LPIPS``), or
    ``alex|vgg|squeeze:FILE`` through the ``lpips`` package (its bundled linear layers) with the torchvision
    backbone weights in FILE (e.g. ``alexnet-owt-7be5be79.pth``), so nothing is downloaded."""
    if kind not in LPIPS_KINDS:
        raise VideoQualityError(f"unknown LPIPS kind {kind!r}; expected one of {', '.join(LPIPS_KINDS)}")
    path = _existing(path, "LPIPS weights file", "lpips")
    net = _torchscript(path, device, "LPIPS") if kind == "torchscript" else _lpips_package(kind, path, device)

    @torch.no_grad()
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x.to(device), y.to(device)).reshape(x.shape[0], -1).mean(1).float().cpu()
                          for x, y in zip(a.split(batch), b.split(batch), strict=True)])

    return distance


def _lpips_package(kind: str, path: Path, device: torch.device | str) -> torch.nn.Module:
    """``lpips.LPIPS`` with a random backbone (no download) whose layers then load the torchvision weights file
    strictly (``features.<i>.*`` -> ``net.slice<k>.<i>.*``)."""
    try:
        import lpips
    except ImportError:
        raise VideoQualityError(f"lpips={kind}:PATH needs the lpips package: pip install lpips (or give "
                                "lpips=torchscript:PATH)") from None
    from glocal.zoo.weights import read_checkpoint

    net = lpips.LPIPS(net=kind, pretrained=True, pnet_rand=True, verbose=False)
    names = {k.split(".", 2)[1] + "." + k.split(".", 2)[2]: k for k in net.net.state_dict()}  # "<i>.weight" -> key
    state = {names.get(k.removeprefix("features."), k): v for k, v in read_checkpoint(path).items()
             if k.startswith("features.")}
    try:
        net.net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise VideoQualityError(f"{path} is not a torchvision {kind} backbone: {str(e).splitlines()[0]}") from None
    return net.to(device).eval()


def i3d_extractor(kind: str, path: str | Path, device: torch.device | str = "cpu",
                  batch: int = 4) -> Callable[[torch.Tensor], torch.Tensor]:
    """An I3D feature extractor for :func:`hd_fvd` from a TorchScript file: clips (P, T, 3, S, S) in [0, 1] are
    fed as (P, 3, T, S, S) in [-1, 1]; ``styleganv`` is StyleGAN-V's ``i3d_torchscript.pt`` (called with
    ``rescale=False, resize=False, return_features=True``: 400-d features, as FVD uses it), ``torchscript`` any
    module called as ``module(x) -> (P, D)``."""
    if kind not in I3D_KINDS:
        raise VideoQualityError(f"unknown I3D kind {kind!r}; expected one of {', '.join(I3D_KINDS)}")
    net = _torchscript(_existing(path, "I3D TorchScript file", "i3d"), device, "I3D")
    kwargs = dict(rescale=False, resize=False, return_features=True) if kind == "styleganv" else {}

    @torch.no_grad()
    def extract(clips: torch.Tensor) -> torch.Tensor:
        return torch.cat([net((c.permute(0, 2, 1, 3, 4) * 2 - 1).to(device), **kwargs).float().cpu()
                          for c in clips.split(batch)])

    return extract
