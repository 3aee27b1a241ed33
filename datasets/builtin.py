"""The small default restoration sets, built at run time from images bundled with scikit-image (offline).

``builtin-sr``: five 240 x 240 centre crops (240 is a multiple of 2, 3 and 4, so no mod-crop is needed) of
scikit-image's astronaut, chelsea, coffee, rocket and immunohistochemistry images as HR, with LR made by
MATLAB-compatible bicubic downscaling rounded to uint8 (the "BI" degradation of the SR benchmarks).

``builtin-haze``: the same five crops as clear images, hazed with the ``8kdehaze-synth`` model
(:mod:`.haze_synthesis`) at level L2 (moderate) with seed 0, rounded to uint8.

A CPU pass of a small model over either set takes seconds. These sets are for smoke-testing and comparing
models against the baselines; they are not a published benchmark.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from glocal.datasets.haze_synthesis import synthesize
from glocal.datasets.restoration import bicubic_lr

IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
CROP = 240
HAZE_LEVEL = 2
HAZE_SEED = 0


def _center_crop(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return a[top:top + side, left:left + side]


@lru_cache(maxsize=1)
def builtin_images() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, uint8 (CROP, CROP, 3) array) for each bundled image."""
    from skimage import data

    return tuple((n, np.ascontiguousarray(_center_crop(getattr(data, n)(), CROP))) for n in IMAGES)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


@lru_cache(maxsize=4)
def _sr_pairs(scale: int) -> tuple[dict, ...]:
    out = []
    for name, a in builtin_images():
        hr = _tensor(a)
        out.append({"name": name, "lr": bicubic_lr(hr, scale), "hr": hr})
    return tuple(out)


def builtin_sr(scale: int) -> list[dict]:
    """``builtin-sr`` at one scale: dicts ``name``, ``lr`` (3, 240/s, 240/s), ``hr`` (3, 240, 240), [0, 1]."""
    if scale not in (2, 3, 4):
        raise ValueError(f"builtin-sr has scales 2, 3 and 4, not {scale}")
    return [dict(p) for p in _sr_pairs(scale)]


@lru_cache(maxsize=1)
def _haze_pairs() -> tuple[dict, ...]:
    out = []
    for name, a in builtin_images():
        hazy = synthesize(a, HAZE_SEED, f"{name}.png", levels=(HAZE_LEVEL,))["hazy"][HAZE_LEVEL]
        out.append({"name": name, "hazy": _tensor(hazy), "clear": _tensor(a)})
    return tuple(out)


def builtin_haze() -> list[dict]:
    """``builtin-haze``: dicts ``name``, ``hazy``, ``clear`` (3, 240, 240) in [0, 1]."""
    return [dict(p) for p in _haze_pairs()]
