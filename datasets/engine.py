"""The engine shared by the dataset generators (``bench datasets make``): what makes a run resumable and
reproducible whatever the number of workers.

* sources are identified by the sha256 of their bytes (:func:`glocal.hashing.sha256_file`), and each item is
  seeded from the run seed and that hash (:func:`item_seed`), so an item does not depend on order or workers;
* every file and item folder is written under a temporary name and renamed into place (:func:`atomic_file`,
  :func:`atomic_dir`, :func:`write_json`, :func:`save_png`), so an interrupted run leaves nothing
  half-written, and a rerun skips finished items;
* items run in a pool of ``spawn`` worker processes with a progress bar (:func:`run_jobs`);
* the manifest (the generator's record of what it made) is read with :func:`read_manifest` and written with
  :func:`write_json`.

The layouts themselves belong to the generators: the triplet layout to :mod:`.triplets`, the 8KDehaze layout
to :mod:`.haze_synthesis`. Only numpy and Pillow are imported (Pillow lazily), so workers start fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from glocal.datasets.registry import DatasetError
from glocal.hashing import sha256_file
from glocal.progress import track

J = TypeVar("J")
R = TypeVar("R")

TMP_TAG = ".tmp-"  # temporary names start with it (files: ".NAME.tmp-PID"; folders: ".tmp-ID-PID")
GUARD_HINT = ("worker processes stopped before finishing: a script that runs a generator with workers > 1 must "
              "call it under `if __name__ == \"__main__\":` (workers start by re-importing the script); with the "
              "guard in place a worker ran out of memory or crashed, so try fewer workers")

__all__ = ["GUARD_HINT", "atomic_dir", "atomic_file", "exit_if_reimported", "item_id", "item_seed", "load_rgb",
           "parse_options", "read_manifest", "remove_stale", "run_jobs", "save_png", "sha256_file",
           "single_thread_worker", "write_json"]


# ----------------------------------------------------------------------------------------------------------
# Identity and seeds


def item_seed(seed: int, sha256: str) -> int:
    """Per-item seed from the run seed and the source's content hash (independent of order and workers)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{sha256}".encode()).digest()[:8], "little") & (2**63 - 1)


def item_id(path: Path, sha256: str) -> str:
    """A readable, unique item name: the file stem (made filesystem-safe) and the first 10 hex of its hash."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "image"
    return f"{stem}-{sha256[:10]}"


def parse_options(options: dict[str, Any], schema: dict[str, tuple[type, Any, str]], generator: str) -> dict[str, Any]:
    """Typed options from ``--opt key=value`` strings (or Python values), with defaults; unknown keys are errors."""
    unknown = sorted(set(options) - set(schema))
    if unknown:
        raise DatasetError(f"{generator} has no option {unknown[0]!r} (options: {', '.join(schema)})")
    out = {}
    for key, (typ, default, _help) in schema.items():
        value = options.get(key, default)
        try:
            if typ is bool and isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("1", "true", "yes")
            out[key] = typ(value)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{generator} option {key}={value!r} is not a valid {typ.__name__}") from e
    return out


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Any]:
    """``PIL.Image.open`` whose failures (not an image, truncated, a decompression bomb) are one
    :class:`DatasetError` line naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            yield im
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def load_rgb(path: str | os.PathLike, size: int | None = None, *, reducing_gap: float | None = None) -> np.ndarray:
    """A source image as RGB uint8 (H, W, 3); with ``size``, the shorter side resized to ``size`` (Pillow
    bicubic, antialiased; ``reducing_gap`` as in ``Image.resize``) and the centre ``size`` x ``size`` cropped."""
    from PIL import Image

    with open_image(path) as im:
        im = im.convert("RGB")
        if size is not None:
            s = size / min(im.size)
            w, h = max(size, round(im.width * s)), max(size, round(im.height * s))
            im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=reducing_gap)
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).copy()


# ----------------------------------------------------------------------------------------------------------
# Atomic writes and the manifest


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed to ``path``, on error removed."""
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path, tag: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final`` (named ``.tmp-TAG-PID``) to fill; on success it replaces
    ``final`` (an older ``final`` is removed first), on error it is removed."""
    tmp = final.parent / f"{TMP_TAG}{tag}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(folder: Path) -> None:
    """Delete the temporary files and folders an interrupted run left directly in ``folder``."""
    for stale in list(folder.glob(f"{TMP_TAG}*")) + list(folder.glob(f".*{TMP_TAG}*")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def write_json(path: Path, obj: Any, *, indent: int = 1, sort_keys: bool = False, newline: bool = False) -> None:
    """Write ``obj`` as JSON atomically (``newline``: end the file with a line break)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + ("\n" if newline else "")
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def save_png(arr: np.ndarray, path: Path, compress_level: int | None = None) -> None:
    """Write a uint8 image as PNG atomically (``compress_level`` 0-9; Pillow's default 6 when None)."""
    from PIL import Image

    kwargs = {} if compress_level is None else {"compress_level": compress_level}
    with atomic_file(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", **kwargs)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path`` (None when there is none); an unreadable one is a DatasetError naming it."""
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"unreadable manifest {path}: {e}") from e
    if not isinstance(m, dict):
        raise DatasetError(f"unreadable manifest {path}: not a JSON object")
    return m


# ----------------------------------------------------------------------------------------------------------
# Workers


def single_thread_worker() -> None:
    """Pool initializer: one thread per worker process (the pool supplies the parallelism)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def exit_if_reimported() -> None:
    """Quietly end a spawned worker that is re-importing a script which calls a generator at module level
    (no ``__main__`` guard). The worker would otherwise start its own pool and die with a traceback; the
    parent reports the cause once, as :data:`GUARD_HINT`. ``_inheriting`` is the flag multiprocessing itself
    checks for this case (``spawn._check_not_importing_main``)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # set only while a spawned child prepares
        raise SystemExit(1)


def run_jobs(fn: Callable[[J], R], jobs: Iterable[J], *, workers: int = 1, description: str = "items",
             progress: bool = True, initializer: Callable[[], None] | None = None) -> Iterator[R]:
    """``fn(job)`` for every job, in this process (``workers=1``) or in ``workers`` spawned processes, yielding
    results as they finish, under a progress bar labelled ``description``. ``fn`` and the jobs must be
    picklable. A pool whose workers die raises one DatasetError line (:data:`GUARD_HINT`)."""
    jobs = list(jobs)
    if workers < 1:
        raise DatasetError(f"workers must be at least 1, got {workers}")
    bar = {"total": len(jobs), "description": description, "enabled": progress, "transient": False}
    if workers == 1 or len(jobs) < 2:
        yield from track((fn(j) for j in jobs), **bar)
        return
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=initializer) as pool:
            futures = [pool.submit(fn, j) for j in jobs]
            yield from track((f.result() for f in as_completed(futures)), **bar)
    except BrokenProcessPool:
        raise DatasetError(GUARD_HINT) from None  # the pool's own error says nothing more
