"""Loaders for super-resolution benchmark folders and paired dehazing folders.

Super-resolution (Set5, Set14, B100, Urban100, Manga109, any folder of HR images), ``root`` is either

* ``root/HR/*.png`` + ``root/LR_bicubic/X{s}/`` (or ``x{s}``) with LR names ``<stem>x{s}.png`` (DIV2K/BasicSR
  convention), ``<stem>_LRBI_x{s}.png`` (Manga109 packaging) or ``<stem>.png``: the packaged LR images are
  used and each HR image is cropped top-left to LR size x s (as BasicSR's validation does);
* ``root/HR/`` without ``LR_bicubic/X{s}`` or a flat folder of HR images: HR is mod-cropped (top-left) to a
  multiple of s and LR is made with MATLAB-compatible bicubic downscaling (:mod:`.matlab_resize`) rounded to
  uint8, which is how the "BI" benchmark LR images were produced.

Paired dehazing (SOTS, Haze4K and their repackagings), ``root`` (or ``root/test``) holds a hazy folder
(``hazy/`` or ``haze/``) and a clear folder (``clear/``, ``GT/`` or ``gt/``). A hazy file pairs with the clear
file of the same stem, else with the clear file named by the stem's part before the first ``_``:
SOTS-indoor ``1400_1.png`` -> ``1400.png``, SOTS-outdoor ``0001_0.8_0.2.jpg`` -> ``0001.png``, Haze4K
``test/haze/1_0.89_1.56.png`` -> ``test/gt/1.png``. Clear images exactly 20 px larger on both sides than
their hazy image (the original SOTS-indoor release, whose GT has a 10-px white border) are centre-cropped
by 10 px; any other size mismatch is an error.

Images are RGB float32 tensors (3, H, W) in [0, 1] (grey images are replicated to 3 channels); each sample
is read from disk only when indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from glocal.datasets.matlab_resize import imresize
from glocal.datasets.registry import DatasetError, image_files

SOTS_BORDER = 10  # px of white border around the original SOTS-indoor ground truths


def read_image(path: Path) -> torch.Tensor:
    """An image file as an RGB float32 tensor (3, H, W) in [0, 1] (16-bit files keep their precision)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64) / 65535.0
                arr = np.repeat(a[..., None], 3, axis=2).astype(np.float32)
                return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
            rgb = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) top-left so H and W are multiples of ``scale``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a uint8-valued [0, 1] image, rounded to uint8 levels."""
    levels = torch.round(hr.double() * 255.0)
    lr = imresize(levels, 1.0 / scale)
    return (torch.floor(lr + 0.5).clamp_(0, 255) / 255.0).to(hr.dtype)


def _check_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise DatasetError(f"{what} folder not found: {p}")
    return p


def _listing(names: list[str], n: int = 5) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


# ----------------------------------------------------------------------------------------- super-resolution
@dataclass(frozen=True)
class SRItem:
    name: str
    hr: Path
    lr: Path | None  # None: LR is generated with MATLAB bicubic


class SRFolder(Dataset):
    """An SR benchmark folder at one scale; items are dicts ``name``, ``lr`` (3, h, w), ``hr`` (3, sh, sw)."""

    def __init__(self, root: str | Path, scale: int) -> None:
        self.root = Path(root)
        self.scale = int(scale)
        if self.scale < 1:
            raise DatasetError(f"SR scale must be >= 1, got {scale}")
        _check_dir(self.root, "SR dataset")
        self.items, self.layout = self._discover()

    def _discover(self) -> tuple[list[SRItem], str]:
        s = self.scale
        hr_dir = self.root / "HR"
        if not hr_dir.is_dir():
            files = [p for p in self.root.iterdir() if p.is_file()] if self.root.is_dir() else []
            if not files:
                raise DatasetError(f"no HR/ folder and no images in {self.root} (expected HR/ + "
                                   f"LR_bicubic/X{s}/ or a flat folder of HR images)")
            items = [SRItem(p.stem, p, None) for p in image_files(self.root)]
            return items, "flat folder of HR (LR: MATLAB bicubic)"
        hrs = image_files(hr_dir)
        lr_dirs = (self.root / "LR_bicubic" / f"X{s}", self.root / "LR_bicubic" / f"x{s}")
        lr_dir = next((d for d in lr_dirs if d.is_dir()), None)
        if lr_dir is None:
            return [SRItem(p.stem, p, None) for p in hrs], f"HR/ (no LR_bicubic/X{s}; LR: MATLAB bicubic)"
        lrs = {p.stem: p for p in image_files(lr_dir)}
        items, missing = [], []
        for p in hrs:
            lr = next((lrs[k] for k in (f"{p.stem}x{s}", f"{p.stem}_LRBI_x{s}", p.stem) if k in lrs), None)
            if lr is None:
                missing.append(p.name)
            items.append(SRItem(p.stem, p, lr))
        if missing:
            raise DatasetError(f"{len(missing)} HR images have no LR image in {lr_dir} (looked for "
                               f"<name>x{s}, <name>_LRBI_x{s}, <name>): {_listing(missing)}")
        return items, f"HR/ + LR_bicubic/{lr_dir.name}/"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        hr = read_image(it.hr)
        if it.lr is None:
            hr = modcrop(hr, self.scale)
            if min(hr.shape[-2:]) == 0:
                raise DatasetError(f"HR image {it.hr} is smaller than the scale {self.scale}")
            lr = bicubic_lr(hr, self.scale)
        else:
            lr = read_image(it.lr)
            h, w = lr.shape[-2] * self.scale, lr.shape[-1] * self.scale
            if hr.shape[-2] < h or hr.shape[-1] < w:
                raise DatasetError(f"HR image {it.hr} ({hr.shape[-2]}x{hr.shape[-1]}) is smaller than its LR "
                                   f"{it.lr.name} x{self.scale} ({h}x{w})")
            hr = hr[:, :h, :w]
        return {"name": it.name, "lr": lr, "hr": hr}


# ---------------------------------------------------------------------------------------- paired dehazing
HAZY_DIRS = ("hazy", "haze")
CLEAR_DIRS = ("clear", "GT", "gt")


@dataclass(frozen=True)
class HazeItem:
    name: str
    hazy: Path
    clear: Path


class PairedDehazeFolder(Dataset):
    """Hazy/clear pairs in the SOTS or Haze4K layout; items are dicts ``name``, ``hazy``, ``clear``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        _check_dir(self.root, "dehazing dataset")
        self.hazy_dir, self.clear_dir = self._find_dirs()
        self.items = self._pair()

    def _find_dirs(self) -> tuple[Path, Path]:
        looked = []
        for base in (self.root, self.root / "test"):
            hazy = next((base / d for d in HAZY_DIRS if (base / d).is_dir()), None)
            clear = next((base / d for d in CLEAR_DIRS if (base / d).is_dir()), None)
            if hazy and clear:
                return hazy, clear
            rel = "" if base == self.root else "test/"
            looked.append(f"{rel}{{{','.join(HAZY_DIRS)}}}/ + {rel}{{{','.join(CLEAR_DIRS)}}}/"
                          + (f" (found only {rel}{(hazy or clear).name}/)" if (hazy or clear) else ""))
        raise DatasetError(f"no hazy/clear folder pair in {self.root}: looked for {'; '.join(looked)}")

    def _pair(self) -> list[HazeItem]:
        clear = {p.stem: p for p in image_files(self.clear_dir)}
        items, missing = [], []
        for p in image_files(self.hazy_dir):
            c = clear.get(p.stem) or clear.get(p.stem.split("_")[0])
            if c is None:
                missing.append(p.name)
            else:
                items.append(HazeItem(p.stem, p, c))
        if missing:
            raise DatasetError(f"{len(missing)} hazy images in {self.hazy_dir} have no clear image in "
                               f"{self.clear_dir} (same name or the part before '_'): {_listing(missing)}")
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        hazy, clear = read_image(it.hazy), read_image(it.clear)
        (hh, hw), (ch, cw) = hazy.shape[-2:], clear.shape[-2:]
        if (ch - hh, cw - hw) == (2 * SOTS_BORDER, 2 * SOTS_BORDER):
            clear = clear[:, SOTS_BORDER:-SOTS_BORDER, SOTS_BORDER:-SOTS_BORDER]
        elif (ch, cw) != (hh, hw):
            raise DatasetError(f"size mismatch: hazy {it.hazy.name} is {hh}x{hw}, "
                               f"clear {it.clear.name} is {ch}x{cw}")
        return {"name": it.name, "hazy": hazy, "clear": clear}
