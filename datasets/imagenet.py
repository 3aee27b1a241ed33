"""ImageNet-style validation sets: a folder of class sub-folders (sorted WNIDs give the class index, as
torchvision's ImageFolder and timm do), or a flat folder plus a labels file (``filename label`` per line,
or a CSV with those two columns)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glocal.datasets.registry import DatasetError

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _read_labels(labels: Path) -> dict[str, int]:
    text = labels.read_text().splitlines()
    out: dict[str, int] = {}
    rows = csv.reader(text) if labels.suffix == ".csv" else (line.split() for line in text)
    for n, row in enumerate(rows, 1):
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise DatasetError(f"{labels}:{n}: expected 'filename label'")
        try:
            out[Path(row[0]).name] = int(row[1])
        except ValueError:
            if n == 1:  # a CSV header
                continue
            raise DatasetError(f"{labels}:{n}: label {row[1]!r} is not an integer") from None
    return out


def find_samples(root: Path, labels_file: Path | None = None) -> list[tuple[Path, int]]:
    """(image path, class index) pairs of a validation folder, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if labels_file is None and (root / "labels.txt").is_file():
        labels_file = root / "labels.txt"
    if labels_file is not None:
        labels = _read_labels(Path(labels_file))
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        missing = [p.name for p in files if p.name not in labels]
        if missing:
            raise DatasetError(f"{len(missing)} images in {root} have no label in {labels_file} (e.g. {missing[0]})")
        samples = [(p, labels[p.name]) for p in files]
    else:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise DatasetError(f"{root} has neither class sub-folders nor a labels file (labels.txt)")
        samples = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())
                   if p.suffix.lower() in IMAGE_EXTS]
    if not samples:
        raise DatasetError(f"no images found in {root}")
    return samples


class ImageFolderDataset:
    """A map-style dataset of (transformed image, label); images are opened lazily in ``__getitem__``."""

    def __init__(self, root: str | Path, transform: Callable[[Any], Any], labels_file: str | Path | None = None):
        self.samples = find_samples(Path(root), Path(labels_file) if labels_file else None)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            img = im.convert("RGB")
        return self.transform(img), label
