"""``8kdehaze-synth``: 8KDehaze-style hazy/clear pairs at any size from any clear images.

The haze follows the atmospheric scattering model ``I = J * t + A * (1 - t)`` with transmission
``t = exp(-beta * d)``. The density ``d`` is a smooth random field in [D_MIN, 1]: fractal value noise (a sum
of octaves of Gaussian noise on coarse grids, 3 to 96 cells across, interpolated with cubic B-splines and
weighted by 0.55^k), so haze thickness varies across the image like the Perlin-noise cloud masks of
SatelliteCloudGenerator that 8KDehaze used. The grids are laid over the image, not over pixels, so the same
seed gives the same haze pattern at any resolution. The airlight ``A`` is near-white with a small random
tint. Each image gets one density field and one airlight, and a beta per level drawn from increasing,
non-overlapping ranges, so L1 (light) to L4 (very dense) thicken the same haze.

Output (the 8KDehaze layout, see :mod:`.eightk_dehaze`): ``out/clear/<stem>.png``,
``out/cloud_L1..cloud_L4/<stem>.png`` and ``out/manifest.json`` (generator name and version, parameters,
seed, sha256 of every source image, per-image airlight and betas). Everything is seeded per image (from the
seed and the file name), so runs are reproducible byte for byte whatever the number of workers, and a rerun
skips images whose outputs are already written and valid (hashing, atomic writes, workers and progress are
:mod:`.engine`'s). This is a synthetic set named ``8kdehaze-synth``, not the original 8KDehaze. Only numpy and
Pillow are used, so worker processes start fast.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from glocal.datasets.engine import (
    load_rgb,
    open_image,
    read_manifest,
    remove_stale,
    run_jobs,
    save_png,
    sha256_file,
    write_json,
)
from glocal.datasets.registry import DatasetError, image_files, register_generator

GENERATOR = "8kdehaze-synth"
VERSION = 1
LEVELS = (1, 2, 3, 4)
BETA_RANGES = {1: (0.4, 0.8), 2: (0.8, 1.3), 3: (1.3, 2.0), 4: (2.0, 3.0)}
AIRLIGHT_BASE = (0.85, 0.98)  # grey level of A
AIRLIGHT_TINT = 0.03  # +- per-channel tint
D_MIN = 0.25  # thinnest haze density, so no region is haze-free
NOISE_BASE_CELLS = 3
NOISE_OCTAVES = 6
NOISE_PERSISTENCE = 0.55
ROW_CHUNK = 1024  # rows of the image blended at a time (bounds memory on 8K images)
PNG_LEVEL = 1  # zlib level: PNG encoding dominates the run time; 1 is ~6x faster than 6, files ~25 % larger


# ------------------------------------------------------------------------------------------- haze model
def _bspline_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells + 3) cubic B-spline interpolation weights from a grid of ``cells`` spanning n pixels."""
    p = (np.arange(n, dtype=np.float64) + 0.5) / n * cells + 1.0
    j = np.floor(p).astype(np.int64)
    t = p - j
    w = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1) / 6
    m = np.zeros((n, cells + 3), dtype=np.float64)
    rows = np.arange(n)[:, None]
    m[rows, j[:, None] + np.arange(-1, 3)[None, :]] = w
    return m


def density_field(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random (h, w) float32 field in [D_MIN, 1] (fractal value noise, resolution-independent)."""
    longest = max(h, w)
    total = np.zeros((h, w), dtype=np.float64)
    amp = 1.0
    for k in range(NOISE_OCTAVES):
        cells = NOISE_BASE_CELLS * 2**k
        cy, cx = max(1, math.ceil(cells * h / longest)), max(1, math.ceil(cells * w / longest))
        grid = rng.standard_normal((cy + 3, cx + 3))
        cols = grid @ _bspline_matrix(w, cx).T  # (cy + 3, w)
        my = _bspline_matrix(h, cy)
        for r0 in range(0, h, ROW_CHUNK):  # row blocks: no full-size temporary on 8K images
            total[r0:r0 + ROW_CHUNK] += amp * (my[r0:r0 + ROW_CHUNK] @ cols)
        amp *= NOISE_PERSISTENCE
    lo, hi = total.min(), total.max()
    total -= lo  # in place: an 8K float64 field is 512 MB
    total *= (1 - D_MIN) / (hi - lo) if hi > lo else 0.0
    total += D_MIN
    return total.astype(np.float32)


def add_haze(clear: np.ndarray, density: np.ndarray, beta: float, airlight: np.ndarray) -> np.ndarray:
    """Hazy uint8 image ``J t + A (1 - t)``, ``t = exp(-beta d)``, from a uint8 (H, W, 3) clear image."""
    out = np.empty_like(clear)
    a = np.asarray(airlight, dtype=np.float32)
    for r0 in range(0, clear.shape[0], ROW_CHUNK):
        sl = slice(r0, r0 + ROW_CHUNK)
        t = np.exp(-np.float32(beta) * density[sl])[..., None]
        j = clear[sl].astype(np.float32) / 255.0
        hazy = j * t + a * (1.0 - t)
        out[sl] = np.clip(np.floor(hazy * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return out


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def image_params(seed: int, name: str) -> tuple[np.ndarray, dict[int, float], np.random.Generator]:
    """Per-image airlight (3,), beta per level and the density field's generator, seeded by seed and name."""
    seq = np.random.SeedSequence([int(seed), _name_key(name)])
    prm, fld = (np.random.default_rng(s) for s in seq.spawn(2))
    base = prm.uniform(*AIRLIGHT_BASE)
    airlight = np.clip(base + prm.uniform(-AIRLIGHT_TINT, AIRLIGHT_TINT, size=3), 0.0, 1.0)
    betas = {lv: float(prm.uniform(*BETA_RANGES[lv])) for lv in LEVELS}
    return airlight, betas, fld


def synthesize(clear: np.ndarray, seed: int, name: str, levels: tuple[int, ...] = LEVELS) -> dict[str, Any]:
    """Hazy versions of a uint8 (H, W, 3) image at the given levels.

    Returns ``hazy`` {level: uint8 image}, ``airlight`` (3,), ``beta`` {level: float} and ``density``.
    """
    airlight, betas, fld = image_params(seed, name)
    d = density_field(clear.shape[0], clear.shape[1], fld)
    hazy = {lv: add_haze(clear, d, betas[lv], airlight) for lv in levels}
    return {"hazy": hazy, "airlight": airlight, "beta": {lv: betas[lv] for lv in levels}, "density": d}


# ------------------------------------------------------------------------------------------- generator
def parameters() -> dict[str, Any]:
    """The model constants recorded in the manifest (a rerun with other constants never mixes outputs)."""
    return {"beta_ranges": {f"L{k}": list(v) for k, v in BETA_RANGES.items()},
            "airlight_base": list(AIRLIGHT_BASE),
            "airlight_tint": AIRLIGHT_TINT, "density_min": D_MIN, "noise_base_cells": NOISE_BASE_CELLS,
            "noise_octaves": NOISE_OCTAVES, "noise_persistence": NOISE_PERSISTENCE,
            "model": "I = J*t + A*(1-t), t = exp(-beta*d)"}


def _expected_size(path: Path, size: int | None) -> tuple[int, int]:
    if size is not None:
        return size, size
    with open_image(path) as im:
        return im.size[1], im.size[0]


def _valid(path: Path, hw: tuple[int, int]) -> bool:
    """A PNG that decodes completely and has the expected (H, W)."""
    from PIL import Image

    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            if (im.size[1], im.size[0]) != hw:
                return False
            im.verify()
        return True
    except Exception:
        return False


def level_dir(level: int) -> str:
    return f"cloud_L{level}"


def _make_one(job: dict[str, Any]) -> dict[str, Any]:
    """Generate (or, with resume, validate and skip) the clear image and four hazy levels of one source."""
    src, out, name, seed, size = Path(job["src"]), Path(job["out"]), job["name"], job["seed"], job["size"]
    targets = [out / "clear" / name] + [out / level_dir(lv) / name for lv in LEVELS]
    try:
        hw = _expected_size(src, size)
        skip = job["resume"] and job["trusted"] and all(_valid(p, hw) for p in targets)
        clear = None if skip else load_rgb(src, size)
    except Exception as e:  # an unreadable source is reported and left out, not fatal
        return {"name": name, "source": src.name, "status": "rejected", "reason": f"{type(e).__name__}: {e}"}
    airlight, betas, fld = image_params(seed, name)
    if clear is not None:  # one level in memory at a time (8K: 200 MB each)
        d = density_field(clear.shape[0], clear.shape[1], fld)
        save_png(clear, targets[0], job["compression"])  # atomic: an interrupted run leaves no valid-looking file
        for lv, p in zip(LEVELS, targets[1:], strict=True):
            save_png(add_haze(clear, d, betas[lv], airlight), p, job["compression"])
    status = "skipped" if skip else "written"
    return {"name": name, "source": src.name, "status": status, "source_sha256": job["sha256"],
            "size": list(hw),
            "airlight": [round(float(a), 6) for a in airlight],
            "beta": {f"L{k}": round(v, 6) for k, v in betas.items()}}


OPTIONS = {"size": "output side N: resize the short side to N and centre-crop N x N (default: keep each "
                   "source's size)",
           "compression": f"PNG zlib level 0-9 (default {PNG_LEVEL}: fast; 6-9 give ~20 % smaller files, 3-6x "
                          "slower); pixels are the same at every level"}


def _int_option(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{GENERATOR} option {name}={value!r} is not an integer") from None
    if v < lo or (hi is not None and v > hi):
        raise DatasetError(f"{GENERATOR} option {name} must be in [{lo}, {hi if hi is not None else 'inf'}], "
                           f"got {v}")
    return v


@register_generator(GENERATOR, "8KDehaze-style hazy/clear pairs (atmospheric scattering, 4 haze levels) from "
                    "any clear images", options=OPTIONS)
def make_8kdehaze_synth(src: str | Path, out: str | Path, *, seed: int = 0, workers: int = 1,
                        resume: bool = True, progress: bool = True, size: int | str | None = None,
                        compression: int | str = PNG_LEVEL, **options: Any) -> dict[str, Any]:
    """Write ``out/clear``, ``out/cloud_L1..L4`` and ``out/manifest.json`` from the images in ``src``."""
    if options:
        raise DatasetError(f"unknown {GENERATOR} options: {', '.join(sorted(options))} "
                           f"(known: {', '.join(OPTIONS)})")
    t0 = time.perf_counter()
    size = None if size in (None, "", "none") else _int_option("size", size, 1)
    compression = _int_option("compression", compression, 0, 9)
    src, out = Path(src), Path(out)
    sources = image_files(src)
    names: dict[str, Path] = {}
    dupes = []
    for p in sources:
        n = p.stem + ".png"
        if n in names:
            dupes.append(f"{names[n].name}/{p.name}")
        names[n] = p
    if dupes:
        raise DatasetError(f"sources with the same stem would overwrite each other: {', '.join(dupes)}")
    header = {"generator": GENERATOR, "version": VERSION, "seed": int(seed), "size": size,
              "parameters": parameters()}
    manifest_path = out / "manifest.json"
    old_images: dict[str, dict] = {}
    old = read_manifest(manifest_path) if resume else None
    if old is not None:
        if {k: old.get(k) for k in header} != header:
            raise DatasetError(f"{out} holds a {old.get('generator')} set made with other settings (seed, "
                               "size or version); use a new folder or resume=False")
        old_images = {e["name"]: e for e in old.get("images", [])}
    for d in ["clear"] + [level_dir(lv) for lv in LEVELS]:
        (out / d).mkdir(parents=True, exist_ok=True)
        remove_stale(out / d)
    jobs = []
    for n, p in sorted(names.items()):
        sha = sha256_file(p)
        trusted = not old_images or old_images.get(n, {}).get("source_sha256") == sha
        jobs.append({"src": str(p), "out": str(out), "name": n, "seed": int(seed), "size": size,
                     "resume": resume, "sha256": sha, "trusted": trusted, "compression": compression})
    results = sorted(run_jobs(_make_one, jobs, workers=max(1, workers), description=GENERATOR,  # 0 ran serially
                              progress=progress), key=lambda r: r["name"])
    good = [{k: v for k, v in r.items() if k != "status"} for r in results if r["status"] != "rejected"]
    rejected = [{"source": r["source"], "reason": r["reason"]} for r in results if r["status"] == "rejected"]
    manifest = {**header, "png_compression": compression,
                "layout": {"clear": "clear", "levels": {f"L{lv}": level_dir(lv) for lv in LEVELS}},
                "note": "synthetic haze on the listed sources; not the original 8KDehaze data",
                "images": good, "rejected": rejected}
    write_json(manifest_path, manifest, indent=2, sort_keys=True, newline=True)
    return {"generator": GENERATOR, "out": str(out), "count": len(good),
            "written": sum(r["status"] == "written" for r in results),
            "skipped": sum(r["status"] == "skipped" for r in results),
            "rejected": rejected, "seconds": round(time.perf_counter() - t0, 3)}
