"""8KDehaze (DehazeXL, CVPR 2025) in its published layout, read lazily.

Layout (README of CastleChen339/DehazeXL; the same for the mini and full versions)::

    8KDehaze/
        clear/      <name>.png   haze-free 8192 x 8192 aerial images (USGS tiles)
        cloud_L1/   <name>.png   light haze
        cloud_L2/   <name>.png   moderate haze
        cloud_L3/   <name>.png   dense haze
        cloud_L4/   <name>.png   very dense haze

Every level folder holds files with the same names as ``clear/``. Folders named ``cloud_<k>`` (no ``L``) are
accepted too. A ``manifest.json`` written by the ``8kdehaze-synth`` generator marks a synthetic set; the
loader then reports that name, never "8kdehaze".

Split: there is no official split. The official ``train.py`` lists ``clear/`` and calls
``torch.utils.data.random_split`` with sizes ``[int(0.85 n), n - int(0.85 n)]`` and
``torch.Generator().manual_seed(22)``. We apply exactly that permutation to the *sorted* file names (the
official list comes from ``os.listdir``, whose order depends on the file system), so our split is
reproducible and equals the official one wherever ``os.listdir`` returns sorted names.

Images are 8192^2 (~200 MB decoded): the dataset lists names at construction and opens files only in
``__getitem__``, optionally downscaling to a working size (Pillow bicubic with antialiasing, the same on
hazy and clear) and/or cropping (centre, or random with a per-sample seed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from glocal.datasets.registry import DatasetError, image_files

SPLIT_SEED = 22
TRAIN_FRACTION = 0.85
LEVEL_RE = re.compile(r"^cloud_L?(\d+)$")


def split_names(names: list[str], split: str, seed: int = SPLIT_SEED) -> list[str]:
    """The ``train``/``test`` part (or ``all``) of sorted names, as the official 85/15 ``random_split``."""
    names = sorted(names)
    if split == "all":
        return names
    if split not in ("train", "test"):
        raise DatasetError(f"unknown 8KDehaze split {split!r} (train, test, all)")
    n_train = int(len(names) * TRAIN_FRACTION)
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return [names[i] for i in idx]


def find_levels(root: Path) -> dict[int, Path]:
    """Haze-level folders under ``root``: level number -> folder (``cloud_L<k>`` or ``cloud_<k>``)."""
    found: dict[int, Path] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        m = LEVEL_RE.match(d.name)
        if m:
            found.setdefault(int(m.group(1)), d)
    return found


@dataclass(frozen=True)
class Sample:
    name: str
    level: int


class EightKDehaze(Dataset):
    """Hazy/clear pairs of 8KDehaze; items are dicts ``name``, ``level``, ``hazy``, ``clear`` (3, H, W).

    ``levels``: which haze levels (default: all four); ``split``: ``test`` (15 %), ``train`` or ``all``;
    ``size``: downscale both images to size x size first; ``crop``: then cut a crop x crop window,
    ``crop_mode`` ``center`` or ``random`` (seeded by ``seed`` and the sample index).
    """

    def __init__(self, root: str | Path, *, levels: tuple[int, ...] | None = None, split: str = "test",
                 size: int | None = None, crop: int | None = None, crop_mode: str = "center",
                 seed: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"8KDehaze folder not found: {self.root}")
        clear_dir = self.root / "clear"
        if not clear_dir.is_dir():
            raise DatasetError(f"8KDehaze folder {self.root} has no clear/ subfolder")
        if crop_mode not in ("center", "random"):
            raise DatasetError(f"crop_mode must be 'center' or 'random', got {crop_mode!r}")
        for k, v in (("size", size), ("crop", crop)):
            if v is not None and v <= 0:
                raise DatasetError(f"{k} must be positive, got {v}")
        self.size, self.crop, self.crop_mode, self.seed, self.split = size, crop, crop_mode, seed, split
        found = find_levels(self.root)
        if levels is None:
            uses_l = any(p.name.startswith("cloud_L") for p in found.values())
            missing = [f"cloud_L{k}" for k in (1, 2, 3, 4) if k not in found] if uses_l or not found else []
            if missing:
                raise DatasetError(f"8KDehaze folder {self.root} lacks haze-level folders: "
                                   f"{', '.join(missing)}")
            levels = tuple(sorted(found))
        else:
            absent = [k for k in levels if k not in found]
            if absent:
                have = ", ".join(p.name for p in found.values()) or "none"
                raise DatasetError(f"8KDehaze folder {self.root} has no level {absent[0]} folder "
                                   f"(cloud_L{absent[0]}); found: {have}")
        self.levels = tuple(levels)
        self.level_dirs = {k: found[k] for k in self.levels}
        clear = {p.name for p in image_files(clear_dir)}
        for d in self.level_dirs.values():
            hazy = {p.name for p in image_files(d)}
            if hazy != clear:
                lost, extra = sorted(clear - hazy), sorted(hazy - clear)
                parts = [f"{what} {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
                         for what, names in (("missing", lost), ("unmatched", extra)) if names]
                raise DatasetError(f"{d.name}/ does not match clear/ ({len(lost)} missing, {len(extra)} "
                                   f"without a clear image): {'; '.join(parts)}")
        self.names = split_names(sorted(clear), split)
        self.samples = [Sample(n, k) for k in self.levels for n in self.names]
        self.dataset_name = self._read_generator() or "8kdehaze"

    def _read_generator(self) -> str | None:
        mf = self.root / "manifest.json"
        if not mf.is_file():
            return None
        try:
            return json.loads(mf.read_text()).get("generator")
        except (ValueError, AttributeError) as e:
            raise DatasetError(f"unreadable manifest {mf}: {e}") from e

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            if self.size is not None and im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.Resampling.BICUBIC)
            if self.crop is not None:
                w, h = im.size
                c = min(self.crop, w, h)
                if self.crop_mode == "center":
                    left, top = (w - c) // 2, (h - c) // 2
                else:
                    rng = np.random.default_rng([self.seed, index])
                    left, top = int(rng.integers(0, w - c + 1)), int(rng.integers(0, h - c + 1))
                im = im.crop((left, top, left + c, top + c))
            arr = np.asarray(im).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        hazy = self._load(self.level_dirs[s.level] / s.name, i)
        clear = self._load(self.root / "clear" / s.name, i)
        if hazy.shape != clear.shape:
            raise DatasetError(f"size mismatch for {s.name}: cloud_L{s.level} is {tuple(hazy.shape[1:])}, "
                               f"clear is {tuple(clear.shape[1:])}")
        return {"name": f"L{s.level}/{s.name}", "level": s.level, "hazy": hazy, "clear": clear}
