"""Multi-view sequences with cameras and depth: a synthetic scene, RealEstate10K and CO3Dv2 (published layouts).

Every loader returns :class:`MultiviewSequence` with OpenCV camera-from-world extrinsics [S, 3, 4] and pixel
intrinsics [S, 3, 3]. Layouts assumed (nothing is downloaded):

* RealEstate10K (Zhou et al. 2018): ``<root>/<split>/<sequence>.txt``; line 1 is the video URL, then one line per
  frame: ``timestamp fx fy cx cy k1 k2`` followed by the 12 row-major entries of the 3x4 camera-from-world matrix,
  intrinsics normalised by the image width/height. Frames extracted as ``<root>/frames/<sequence>/<timestamp>.png``
  (or ``.jpg``), the layout pixelSplat's and most converters' scripts write.
* CO3Dv2 as VGGT's and PoseDiffusion's evaluations read it: ``<anno_dir>/<category>_<split>.jgz`` (gzip JSON,
  sequence -> list of ``{"filepath", "R", "T", ...}`` in PyTorch3D's convention), images under
  ``<co3d_dir>/<filepath>``; PyTorch3D (R, T) become OpenCV by negating the first two columns of R and the first
  two entries of T, then transposing R.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from glocal.datasets.registry import DatasetError


@dataclass
class MultiviewSequence:
    """One sequence: images [S, 3, H, W] in [0, 1] (or None), cameras, and depth [S, H, W] when known."""

    name: str
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    images: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    paths: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- synthetic


def _yaw_pitch(yaw: float, pitch: float) -> torch.Tensor:
    """World-to-camera rotation of a camera turned by yaw (about y) then pitch (about x), float64."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    return (Ry @ Rx).T


def synthetic_sequence(frames: int = 4, height: int = 56, width: int = 70, seed: int = 0) -> MultiviewSequence:
    """A room corner (back wall z = 6, floor y = 1.5, side wall x = -3) seen by cameras on a small arc.

    Depth is exact (ray-plane intersection), images are a world-space checkerboard so frames agree; cameras
    look roughly along +z with yaw/pitch jitter. Known cameras and depth for the metrics' tests."""
    if frames < 1 or height < 2 or width < 2:
        raise DatasetError(f"synthetic sequence needs >= 1 frame and >= 2x2 pixels, got {frames}, {height}x{width}")
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    rays_cam = torch.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, torch.ones_like(u)], dim=-1)  # z = 1: depth units
    planes = [(2, 6.0), (1, 1.5), (0, -3.0)]  # axis, value
    ext, imgs, depths = [], [], []
    for i in range(frames):
        angle = 0.25 * i / max(frames - 1, 1) - 0.125
        C = torch.tensor([2.0 * math.sin(angle), -0.2 * i / max(frames, 1), -2.0 + 0.3 * math.cos(angle)],
                         dtype=torch.float64)
        R = _yaw_pitch(angle + 0.05 * float(torch.randn(1, generator=g)), 0.05 * float(torch.randn(1, generator=g)))
        d_world = rays_cam @ R  # R^T applied to each ray
        depth = torch.full((height, width), math.inf, dtype=torch.float64)
        for axis, value in planes:
            s = (value - C[axis]) / d_world[..., axis]
            depth = torch.where((s > 1e-6) & (s < depth), s, depth)
        X = C + depth[..., None] * d_world
        checker = ((X[..., 0].floor() + X[..., 1].floor() + X[..., 2].floor()) % 2).float()
        shade = torch.stack([0.2 + 0.6 * checker, 0.3 + 0.1 * (X[..., 1] % 1).float(), 0.8 - 0.5 * checker])
        ext.append(torch.cat([R, (-R @ C)[:, None]], dim=1))
        imgs.append(shade.clamp(0, 1))
        depths.append(depth)
    return MultiviewSequence(f"synthetic_{seed}", torch.stack(ext), K.expand(frames, 3, 3).clone(),
                             torch.stack(imgs), torch.stack(depths))


# --------------------------------------------------------------------------------------------- RealEstate10K


def read_re10k_cameras(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """A RealEstate10K camera file -> timestamps, normalised intrinsics [N, 4] (fx fy cx cy), extrinsics [N, 3, 4]."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines()[1:] if ln.strip()]
    if not lines or any(len(ln) != 19 for ln in lines):
        raise DatasetError(f"{path}: not a RealEstate10K camera file (want 19 numbers per frame line)")
    values = torch.tensor([[float(x) for x in ln[1:]] for ln in lines], dtype=torch.float64)
    return [ln[0] for ln in lines], values[:, :4], values[:, 6:].reshape(-1, 3, 4)


def _pixel_intrinsics(norm: torch.Tensor, height: int, width: int) -> torch.Tensor:
    K = torch.zeros(len(norm), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1] = norm[:, 0] * width, norm[:, 1] * height
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = norm[:, 2] * width, norm[:, 3] * height, 1.0
    return K


def load_re10k(root: str | Path, sequence: str, split: str = "test", frames: list[int] | None = None,
               image_hw: tuple[int, int] | None = None) -> MultiviewSequence:
    """Frames of one RealEstate10K sequence (cameras; image paths when extracted, images not read here)."""
    cam = Path(root) / split / f"{sequence}.txt"
    if not cam.is_file():
        raise DatasetError(f"RealEstate10K camera file {cam} not found (layout <root>/<split>/<sequence>.txt)")
    stamps, norm, ext = read_re10k_cameras(cam)
    idx = list(range(len(stamps))) if frames is None else frames
    paths = []
    for i in idx:
        stem = Path(root) / "frames" / sequence / stamps[i]
        hits = [p for p in (stem.with_suffix(e) for e in (".png", ".jpg")) if p.is_file()]
        paths.append(str(hits[0]) if hits else "")
    if image_hw is None:
        if not all(paths):
            raise DatasetError(f"{sequence}: frames not extracted under {Path(root) / 'frames' / sequence}; "
                               "pass image_hw for cameras only")
        from PIL import Image

        with Image.open(paths[0]) as im:
            image_hw = (im.height, im.width)
    return MultiviewSequence(sequence, ext[idx], _pixel_intrinsics(norm[idx], *image_hw), paths=tuple(paths))


# --------------------------------------------------------------------------------------------- CO3Dv2


def pytorch3d_to_opencv(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """PyTorch3D (R [3, 3] row-vector convention, T [3]) -> OpenCV camera-from-world [3, 4]."""
    R, T = R.clone().double(), T.clone().double()
    T[:2] *= -1
    R[:, :2] *= -1
    return torch.cat([R.T, T[:, None]], dim=1)


def load_co3d_annotations(anno_dir: str | Path, category: str, split: str = "test") -> dict[str, list[dict]]:
    """``<category>_<split>.jgz`` -> {sequence: [frame dicts]}."""
    path = Path(anno_dir) / f"{category}_{split}.jgz"
    if not path.is_file():
        raise DatasetError(f"CO3Dv2 annotation {path} not found (VGGT/PoseDiffusion layout <category>_<split>.jgz)")
    with gzip.open(path, "rt") as f:
        return json.load(f)


def co3d_sequence(co3d_dir: str | Path, name: str, frames: list[dict], pick: list[int] | None = None
                  ) -> MultiviewSequence:
    """Cameras (OpenCV) and image paths of chosen frames of one CO3Dv2 sequence (intrinsics left as NaN)."""
    pick = list(range(len(frames))) if pick is None else pick
    f64 = torch.float64
    ext = torch.stack([pytorch3d_to_opencv(torch.tensor(frames[i]["R"], dtype=f64), torch.tensor(frames[i]["T"],
                                                                                               dtype=f64))
                       for i in pick])
    K = torch.full((len(pick), 3, 3), float("nan"), dtype=torch.float64)
    paths = tuple(str(Path(co3d_dir) / frames[i]["filepath"]) for i in pick)
    return MultiviewSequence(name, ext, K, paths=paths)
