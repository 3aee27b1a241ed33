"""Registry of dataset generators (``bench datasets make NAME``)."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """Missing or malformed data (one clear line naming what is missing)."""


@dataclass(frozen=True)
class Generator:
    """``fn(src, out, *, seed, workers, resume, progress, **options) -> summary dict`` (counts, rejected, seconds)."""

    name: str
    fn: Callable[..., dict[str, Any]]
    description: str
    options: dict[str, str]  # option name -> help text, passed as --opt key=value


_GENERATORS: dict[str, Generator] = {}
_LOADED = False


def register_generator(name: str, description: str, options: dict[str, str] | None = None) -> Callable:
    """Register ``fn`` as generator ``name``. The registered function first ends, quietly, a worker process
    that is re-importing a script which calls it without a ``__main__`` guard (the parent then says so in one
    line; see :func:`glocal.datasets.engine.exit_if_reimported`)."""

    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> dict[str, Any]:
            from glocal.datasets.engine import exit_if_reimported

            exit_if_reimported()
            return fn(*args, **kwargs)

        _GENERATORS[name] = Generator(name, generator, description, options or {})
        return generator

    return deco


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import glocal.datasets as pkg

        for info in pkgutil.walk_packages(pkg.__path__, prefix="glocal.datasets."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)


def generators() -> dict[str, Generator]:
    _load()
    return dict(_GENERATORS)


def get_generator(name: str) -> Generator:
    gens = generators()
    if name not in gens:
        raise DatasetError(f"unknown generator {name!r} (known: {', '.join(sorted(gens)) or 'none'})")
    return gens[name]


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_files(folder: Path, exts: tuple[str, ...] = IMAGE_EXTS) -> list[Path]:
    """Sorted image files directly under ``folder`` (raises naming the folder when missing or empty)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    if not files:
        raise DatasetError(f"no images ({', '.join(exts)}) in {folder}")
    return files
