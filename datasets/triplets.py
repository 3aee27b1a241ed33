"""Triplet sets of the global-structure tests (DiST, DiSRT and locally generated look-alikes): the layouts, their
loaders, and the writer the triplet generators (``dist-ps``, ``disrt-style``) share.

A trial is ``(original, disrupted_a, disrupted_b)``. Three layouts are read by :func:`load_triplets`:

**Generated sets** (``bench datasets make dist-ps|disrt-style``), recognised by ``ROOT/manifest.json``::

    ROOT/manifest.json                      generator, version, params, seed, items (id, source sha256, status)
    ROOT/items/<id>/original.png            the source, resized and cropped as its disrupted versions (disrt-style
                                            draws its shared lattice on it; dist-ps renders it by default)
    ROOT/items/<id>/disrupted_a.png
    ROOT/items/<id>/disrupted_b.png
    ROOT/items/<id>/meta.json               per-item record (losses, CPU seconds, seed)
    ROOT/rejected/<id>.json                 items that failed (e.g. synthesis did not converge) and why

  They are named after their generator (``dist-ps``, ``disrt-style``), never ``DiST``/``DiSRT``: their
  scores are not comparable with the papers' numbers.

**Official releases** of DiST (arXiv 2310.07555) and DiSRT (arXiv 2506.00718). No release could be
inspected (the DiST repository, https://github.com/leelabcnbc/DiST, holds a README only; DiSRT publishes no
code or data), so the layout assumed is "one folder per triplet", with an optional index::

    ROOT/triplets.csv  (optional)           columns: original, disrupted_a, disrupted_b [, triplet_id]
                                            (aliases: orig/orig_path/original_path, synth_a/synth_a_path,
                                            synth_b/synth_b_path, id); paths relative to ROOT
    ROOT/**/<triplet>/original.<ext>        or orig.<ext>; exactly two other images in the same folder
    ROOT/**/<triplet>/<any>.<ext>  x 2      the disrupted versions (sorted by name: a, b)

Missing pieces raise :class:`~glocal.datasets.registry.DatasetError` naming the file or folder.

The second half of this module writes that layout for the generators, one item folder per source, on top of
:mod:`glocal.datasets.engine` (seeded per-item jobs, atomic writes, resume, worker pool, progress, manifest).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glocal.datasets.engine import (
    atomic_dir,
    item_id,
    item_seed,
    read_manifest,
    remove_stale,
    run_jobs,
    save_png,
    sha256_file,
    single_thread_worker,
    write_json,
)
from glocal.datasets.registry import IMAGE_EXTS, DatasetError, image_files

FORMAT = "glocal-triplets/1"
SOURCE_REDUCING_GAP = 3.0  # Pillow's reducing_gap when the generators resize a source (engine.load_rgb)
ROLES = ("original", "disrupted_a", "disrupted_b")
FAMILIES = {"dist": ("dist-ps",), "disrt": ("disrt-style",)}  # which generated sets each test accepts
_CSV_ALIASES = {
    "original": ("original", "orig", "orig_path", "original_path"),
    "disrupted_a": ("disrupted_a", "synth_a", "synth_a_path", "disrupted_a_path"),
    "disrupted_b": ("disrupted_b", "synth_b", "synth_b_path", "disrupted_b_path"),
    "id": ("triplet_id", "id"),
}


# ----------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class TripletSet:
    """Triplets on disk; ``set[i]`` -> (original, disrupted_a, disrupted_b) PIL images, loaded lazily."""

    name: str  # dist / disrt (official) or the generator's name (dist-ps, disrt-style)
    path: Path
    source: str  # official | generated
    ids: list[str]
    files: list[tuple[Path, Path, Path]]
    manifest: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, Any, Any]:
        from PIL import Image

        out = []
        for p in self.files[i]:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        return tuple(out)  # type: ignore[return-value]

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        for i in range(len(self)):
            yield self[i]

    def tensors(self, i: int) -> Any:
        """Triplet ``i`` as a float tensor (3, 3, H, W) in [0, 1] (the three images must share a size)."""
        import torch

        arrs = [np.asarray(im, dtype=np.float32) / 255.0 for im in self[i]]
        if len({a.shape for a in arrs}) != 1:
            raise DatasetError(f"triplet {self.ids[i]} mixes image sizes {[a.shape[:2] for a in arrs]}")
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

    def describe(self, n: int | None = None) -> dict[str, Any]:
        """What was scored, for result records: name, path, num_samples (trials), source, generator info."""
        d: dict[str, Any] = {"name": self.name, "path": str(self.path), "num_samples": len(self) if n is None else n,
                             "source": self.source}
        if self.manifest is not None:
            m = self.manifest
            d.update({"generator": m.get("generator"), "generator_version": m.get("version"), "seed": m.get("seed"),
                      "params": m.get("params"), "n_rejected": m.get("n_rejected"),
                      "manifest_sha256": self.extra.get("manifest_sha256")})
        return d


def load_triplets(path: str | os.PathLike, expect: str | None = None) -> TripletSet:
    """Load a generated set (has ``manifest.json``) or an official DiST/DiSRT layout.

    ``expect`` (``dist``/``disrt``) names the test being run: a generated set made for the other test is an
    error, and an official layout is labelled with it."""
    root = Path(path).expanduser()
    if expect is not None and expect not in FAMILIES:
        raise DatasetError(f"unknown structure test {expect!r} (known: {', '.join(FAMILIES)})")
    if not root.exists():
        raise DatasetError(f"triplet set not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"triplet set must be a folder, got a file: {root}")
    if (root / "manifest.json").is_file():
        return load_generated(root, expect)
    return load_official(root, expect or "triplets")


def load_generated(root: str | os.PathLike, expect: str | None = None) -> TripletSet:
    """A set written by a glocal generator: its ``manifest.json`` lists the finished items."""
    root = Path(root)
    mpath = root / "manifest.json"
    try:
        raw = mpath.read_bytes()
        m = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"unreadable manifest {mpath}: {e}") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatasetError(f"{mpath} is not a glocal triplet manifest (format {FORMAT!r})")
    gen = m.get("generator")
    if expect is not None and gen not in FAMILIES[expect]:
        other = [k for k, v in FAMILIES.items() if gen in v]
        hint = f"; score it with --dataset {other[0]}={root}" if other else ""
        raise DatasetError(f"{root} is a {gen} set, not a {expect} set{hint}")
    if m.get("status") != "complete":
        raise DatasetError(f"{root} is an unfinished {gen} set; rerun `bench datasets make {gen}` to finish it")
    ids, files = [], []
    for item in m.get("items", []):
        if item.get("status") != "ok":
            continue
        trip = tuple(root / item["files"][r] for r in ROLES)
        for p in trip:
            if not p.is_file():
                raise DatasetError(f"{gen} set {root}: item {item['id']} is missing {p.name}")
        ids.append(item["id"])
        files.append(trip)
    if not files:
        raise DatasetError(f"{gen} set {root} has no accepted triplets ({m.get('n_rejected', 0)} rejected)")
    return TripletSet(name=gen, path=root, source="generated", ids=ids, files=files, manifest=m,  # type: ignore[arg-type]
                      extra={"manifest_sha256": hashlib.sha256(raw).hexdigest()})


def load_official(root: str | os.PathLike, name: str = "triplets") -> TripletSet:
    """An official release in the assumed layout: ``triplets.csv`` or one folder per triplet (module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name} folder not found: {root}")
    index = root / "triplets.csv"
    ids: list[str] = []
    files: list[tuple[Path, Path, Path]] = []
    if index.is_file():
        with index.open(newline="") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            pick = {}
            for role, aliases in _CSV_ALIASES.items():
                hit = next((cols[a] for a in aliases if a in cols), None)
                if hit is None and role != "id":
                    raise DatasetError(f"{index} has no {role!r} column (accepted: {', '.join(aliases)})")
                pick[role] = hit
            for n, row in enumerate(reader, start=2):
                trip = []
                for role in ROLES:
                    p = Path(row[pick[role]].strip())
                    p = p if p.is_absolute() else root / p
                    if not p.is_file():
                        raise DatasetError(f"{index} line {n}: {role} image not found: {p}")
                    trip.append(p)
                ids.append(row[pick["id"]].strip() if pick["id"] else trip[0].parent.name + "/" + trip[0].stem)
                files.append(tuple(trip))  # type: ignore[arg-type]
        if not files:
            raise DatasetError(f"{index} lists no triplets")
    else:
        for folder in sorted(p for p in [root, *root.rglob("*")] if p.is_dir()):
            images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            orig = [p for p in images if p.stem.lower() in ("original", "orig")]
            if not orig:
                continue
            if len(orig) > 1:
                raise DatasetError(f"{folder} has {len(orig)} original images; expected one")
            others = [p for p in images if p != orig[0]]
            if len(others) != 2:
                raise DatasetError(f"{folder} has {len(others)} disrupted images next to {orig[0].name}; expected 2")
            ids.append(str(folder.relative_to(root)) if folder != root else root.name)
            files.append((orig[0], others[0], others[1]))
        if not files:
            raise DatasetError(f"no triplets in {root}: expected triplets.csv (columns original, disrupted_a, "
                               "disrupted_b) or folders holding original.<ext> and two disrupted images")
    return TripletSet(name=name, path=root, source="official", ids=ids, files=files)


# ----------------------------------------------------------------------------------------------------------
# Writing: the triplet layout on top of the generator engine


@dataclass(frozen=True)
class Job:
    """One source image to turn into a triplet (picklable, sent to worker processes)."""

    source: str
    sha256: str
    item_id: str
    out: str
    seed: int
    params: dict[str, Any]


Work = Callable[[Job], tuple[str, list[np.ndarray] | None, dict[str, Any]]]  # -> (status, 3 uint8 images, meta)


def run_job(work: Work, job: Job) -> dict[str, Any]:
    """Run one item and write it atomically: a temp folder renamed into ``items/<id>`` (or a rejection record).

    ``cpu_seconds``/``wall_seconds`` cover the work and the PNG encoding of the item."""
    t0, w0 = time.process_time(), time.perf_counter()
    status, images, meta = work(job)
    meta = {"id": job.item_id, "status": status, "seed": job.seed, "source": Path(job.source).name,
            "source_sha256": job.sha256, **meta}
    out = Path(job.out)
    if status == "ok":
        assert images is not None and len(images) == 3
        with atomic_dir(out / "items" / job.item_id, job.item_id) as tmp:
            meta["files"] = {}
            for role, arr in zip(ROLES, images, strict=True):
                save_png(arr, tmp / f"{role}.png")
                meta["files"][role] = f"items/{job.item_id}/{role}.png"
            meta.update(cpu_seconds=time.process_time() - t0, wall_seconds=time.perf_counter() - w0)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            with contextlib.suppress(FileNotFoundError):
                (out / "rejected" / f"{job.item_id}.json").unlink()
    else:
        meta.update(cpu_seconds=time.process_time() - t0, wall_seconds=time.perf_counter() - w0)
        (out / "rejected").mkdir(parents=True, exist_ok=True)
        write_json(out / "rejected" / f"{job.item_id}.json", meta)
        shutil.rmtree(out / "items" / job.item_id, ignore_errors=True)
    return meta


def _finished(out: Path, iid: str) -> dict[str, Any] | None:
    for p in (out / "items" / iid / "meta.json", out / "rejected" / f"{iid}.json"):
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return None
    return None


def _open_output(out: Path, generator: str, version: str, params: dict[str, Any], seed: int, resume: bool) -> None:
    """Create ``out`` or check that it holds this generator's set made with the same settings (when resuming);
    remove what an interrupted run left half-written."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output must be a folder, got a file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out / "manifest.json")
    if old is not None:
        if old.get("generator") != generator:
            raise DatasetError(f"{out} holds a {old.get('generator')} set; choose another --out for {generator}")
        if resume and (old.get("params") != params or old.get("seed") != seed or old.get("version") != version):
            raise DatasetError(f"{out} was made with other {generator} options or seed; pass resume=False "
                               "(--no-resume) to rebuild it, or choose another --out")
    elif any(out.iterdir()):
        raise DatasetError(f"{out} is not empty and holds no manifest.json; choose an empty or new folder")
    for sub in ("items", "rejected"):
        (out / sub).mkdir(exist_ok=True)
        remove_stale(out / sub)


def make_triplet_set(*, generator: str, version: str, src: str | os.PathLike, out: str | os.PathLike,
                     params: dict[str, Any], work: Work, seed: int = 0, workers: int = 1, resume: bool = True,
                     progress: bool = True, note: str = "") -> dict[str, Any]:
    """Turn every image in ``src`` into a triplet under ``out`` with ``work``; resumable, parallel, seeded.

    Returns the summary: n_written / n_rejected (this run), n_skipped (finished before), totals, seconds,
    seconds_per_image (wall) and cpu_seconds_per_image (mean over the items processed in this run)."""
    if workers < 1:
        raise DatasetError(f"workers must be at least 1, got {workers}")
    sources = image_files(Path(src))
    out = Path(out)
    _open_output(out, generator, version, params, seed, resume)
    hashes = [sha256_file(p) for p in sources]
    ids = [item_id(p, h) for p, h in zip(sources, hashes, strict=True)]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"two source images give the same item {dup!r} (identical files?); remove one")
    header = {"format": FORMAT, "name": generator, "generator": generator, "version": version, "params": params,
              "seed": seed, "source_folder": str(Path(src).resolve()), "note": note}
    mpath = out / "manifest.json"
    write_json(mpath, {**header, "status": "incomplete"})
    jobs = [Job(str(p), h, i, str(out), item_seed(seed, h), params)
            for p, h, i in zip(sources, hashes, ids, strict=True)]
    todo = [j for j in jobs if not (resume and _finished(out, j.item_id) is not None)]
    t0 = time.perf_counter()
    done = list(run_jobs(functools.partial(run_job, work), todo, workers=workers, description=generator,
                         progress=progress, initializer=single_thread_worker))
    seconds = time.perf_counter() - t0
    items = []
    for j in jobs:
        meta = _finished(out, j.item_id)
        if meta is None:
            raise DatasetError(f"item {j.item_id} left no record in {out}")
        items.append(meta)
    n_ok = sum(m["status"] == "ok" for m in items)
    write_json(mpath, {**header, "status": "complete", "n_items": n_ok, "n_rejected": len(items) - n_ok,
                       "sources": [{"file": Path(j.source).name, "sha256": j.sha256, "id": j.item_id} for j in jobs],
                       "items": items})
    ran = len(done)
    return {"generator": generator, "out": str(out), "n_sources": len(jobs),
            "n_written": sum(m["status"] == "ok" for m in done), "n_rejected": sum(m["status"] != "ok" for m in done),
            "n_skipped": len(jobs) - len(todo), "n_total": n_ok, "n_rejected_total": len(items) - n_ok,
            "seconds": seconds, "seconds_per_image": seconds / ran if ran else 0.0,
            "cpu_seconds_per_image": sum(m["cpu_seconds"] for m in done) / ran if ran else 0.0}
