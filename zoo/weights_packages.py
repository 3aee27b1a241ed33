"""Pretrained weights as pip packages: build a wheel from an official checkpoint, index wheels, find what is
installed, verify it, and list where each variant's official files can be fetched.

A weights wheel ``glocal-weights-<variant>`` holds one importable module ``glocal_weights_<variant>`` with a
safetensors file in the zoo's own layout, a metadata file ``glocal-weights.json`` (variant, family, source URL
and sha256, converted sha256, licence, paper metrics, converter and glocal versions) and the ``glocal.weights``
entry point that :mod:`glocal.zoo.weights` discovers. Large files (a FLUX transformer, VGGT-1B) go in
metadata-only wheels: the file is downloaded on first use into the user cache (:mod:`glocal.download`).
Wheels are written with :mod:`zipfile` (a complete ``.dist-info``: METADATA, WHEEL, RECORD, entry_points.txt),
so packaging is fast and offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from glocal.hashing import sha256_file
from glocal.zoo.registry import ModelCard, Variant, WeightSource, resolve
from glocal.zoo.weights import CheckpointError, check_keys_and_shapes, read_checkpoint, to_native_layout

METADATA_FILE = "glocal-weights.json"
FORMAT_VERSION = 1
MAX_WHEEL_MB = 1000  # PyPI's default file limit is 100 MB, raised on request to ~1 GB; above this: metadata only
# terms that make redistribution or use conditional: refused by `package` unless the user accepts the licence
RESTRICTED = re.compile(r"\bNC\b|-NC\b|non-?commercial|research use only|academic|gated|none stated|"
                        r"all rights reserved", re.IGNORECASE)
MANUAL_HOSTS = {"drive.google.com": "Google Drive", "pan.baidu.com": "Baidu Pan", "1drv.ms": "OneDrive",
                "onedrive.live.com": "OneDrive", "mega.nz": "MEGA"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same checkpoint gives the same wheel bytes


class WeightsPackageError(CheckpointError):
    """A weights package that cannot be built, found or verified (one clear line)."""


def dist_name(variant: str) -> str:
    """``gcvit_tiny`` -> ``glocal-weights-gcvit-tiny`` (the PEP 503 normalised distribution name)."""
    return "glocal-weights-" + re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")


def module_name(variant: str) -> str:
    """``gcvit_tiny`` -> ``glocal_weights_gcvit_tiny`` (the importable module, and the wheel's file-name stem)."""
    return dist_name(variant).replace("-", "_")


# ----------------------------------------------------------------------------------------------------------
# Sources and licences


def source_url(src: WeightSource) -> str | None:
    """The URL a source's file is downloaded from (a Hugging Face resolve URL, a release asset, any HTTP URL),
    or its documentation page when it is a folder behind a browser (Google Drive, Baidu)."""
    if src.hf_hub_id and src.filename:
        return f"https://huggingface.co/{src.hf_hub_id}/resolve/main/{src.filename}"
    url = src.url
    if url and src.filename and urlparse(url).hostname == "huggingface.co" and "/resolve/" not in url:
        return f"{url.rstrip('/')}/resolve/main/{src.filename}"
    if url is None and src.timm_name:
        import timm

        cfg = timm.models.get_pretrained_cfg(src.timm_name)
        if cfg is not None and cfg.hf_hub_id:
            return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        url = cfg.url if cfg is not None else None
    return url


def manual_steps(src: WeightSource) -> str | None:
    """Instructions for a source that needs a browser (Google Drive, Baidu...), None for a plain URL."""
    url = source_url(src)
    host = urlparse(url).hostname if url else None
    if url is None and src.hf_hub_id:  # a whole repository (transformers models): many files, not one
        return (f"a multi-file Hugging Face repository: `huggingface-cli download {src.hf_hub_id} --local-dir DIR`"
                f"{' (gated: accept its terms first)' if src.gated else ''}, then `bench run --weights DIR`")
    if url is None:
        return f"no URL recorded: {src.description}"
    if host in MANUAL_HOSTS or (host or "").endswith(".baidu.com"):
        name = src.filename or "the file named in the description"
        return (f"open {url} in a browser ({MANUAL_HOSTS.get(host, 'Baidu Pan')}), download {name}, then "
                f"`bench weights package --model VARIANT --from FILE` or `bench run --weights FILE`")
    return None


def licence_of(card: ModelCard, src: WeightSource | None) -> tuple[str, str | None]:
    """(licence text, reason it needs accepting or None): the source's own licence, else the card's."""
    text = (src.license if src is not None else None) or card.license
    gated = src is not None and src.gated
    found = RESTRICTED.search(text)
    if gated:
        return text, "the weights are gated (their terms must be accepted)"
    return text, (f"the licence is restricted ({found.group(0).strip('-')!r} in {text!r})" if found else None)


def pick_source(variant: Variant, path: Path, layout: str | None = None) -> WeightSource | None:
    """The card's source for a local file: the one naming the file, else the first of the same layout."""
    names = {path.name, path.name.removesuffix(".tar")}
    for src in variant.weights:
        if src.filename and Path(src.filename).name in names:
            return src
    same = [s for s in variant.weights if s.layout == layout]
    return (same or list(variant.weights) or [None])[0]


# ----------------------------------------------------------------------------------------------------------
# Building a package


@dataclass(frozen=True)
class Built:
    """What ``package`` wrote: the wheel, its metadata, and (metadata-only wheels) the file to host."""

    wheel: Path
    metadata: dict[str, Any]
    external_file: Path | None = None


def convert_checkpoint(card: ModelCard, variant: Variant, path: Path) -> tuple[dict[str, torch.Tensor], str, bool]:
    """Read an official file, convert it to the zoo's layout and load it strictly into the (meta) model.

    Returns (state dict, source layout, whether the result is the file's own tensors, unchanged)."""
    raw = read_checkpoint(path)
    converted, layout = to_native_layout(card, raw, origin=str(path))
    model = _build_empty(variant)
    check_keys_and_shapes(model.state_dict(), converted, origin=str(path))
    model.load_state_dict(converted, strict=True, assign=True)  # the real strict load, without allocating
    unchanged = converted is raw and path.suffix == ".safetensors" and list(converted) == _safetensors_keys(path)
    return converted, layout, unchanged


def _build_empty(variant: Variant) -> torch.nn.Module:
    """The model without allocating its weights (meta device), or on the CPU when its constructor reads tensor
    values (e.g. ``linspace(...).tolist()`` for drop-path rates), which meta tensors cannot give."""
    try:
        with torch.device("meta"):
            return variant.build()
    except NotImplementedError:
        return variant.build()


def zoo_layout_of(card: ModelCard, state_dict: dict[str, torch.Tensor]) -> str:
    """The name of the module's own layout ("timm" for families built on timm's classes), as the loader reads it."""
    found = card.detect_layout(state_dict) if card.detect_layout is not None else "native"
    return found if found in ("native", "timm") else "native"


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors contiguously; tensors sharing storage (tied weights) are copied so safetensors accepts them."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, t in state_dict.items():
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    save_file(out, str(path), metadata={"format": "pt"})  # one entry: safetensors writes a map in no fixed order


def package(model: str, source_file: str | os.PathLike, out_dir: str | os.PathLike = ".", *,
            accept_license: bool = False, version: str = "1.0.0", external_url: str | None = None,
            max_wheel_mb: float = MAX_WHEEL_MB) -> Built:
    """Convert an official checkpoint into a ``glocal-weights-<variant>`` wheel in ``out_dir``.

    Nothing is left in ``out_dir`` when anything fails (unknown variant, unreadable or mismatched file,
    restricted licence not accepted). ``external_url`` makes a metadata-only wheel: the converted file is
    written beside it, to be hosted at that URL and downloaded on first use."""
    card, variant = resolve(model)
    path = Path(source_file)
    if not path.is_file():
        raise WeightsPackageError(f"checkpoint not found: {path}")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise WeightsPackageError(f"version {version!r}: expected dotted numbers such as 1.0.0")
    licence, restricted = licence_of(card, pick_source(variant, path))  # before reading: refusals are instant
    if restricted and not accept_license:
        raise WeightsPackageError(f"{variant.name}: {restricted}; read it, then pass --accept-license to package")
    original_sha = sha256_file(path)
    converted, layout, unchanged = convert_checkpoint(card, variant, path)
    zoo_layout = zoo_layout_of(card, converted)
    src = pick_source(variant, path, layout)
    licence, restricted = licence_of(card, src)
    if restricted and not accept_license:  # the source of this layout has other terms
        raise WeightsPackageError(f"{variant.name}: {restricted}; read it, then pass --accept-license to package")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limit = max_wheel_mb * 2**20
    named = src is not None and src.filename is not None and Path(src.filename).name == path.name
    official_url = source_url(src) if named and not manual_steps(src) else None
    # a large official safetensors file (the card's own file) already in the zoo layout: the wheel points at it
    as_is = unchanged and external_url is None and official_url is not None and path.stat().st_size > limit
    with tempfile.TemporaryDirectory(dir=out, prefix=".glocal-weights-") as tmp:
        if as_is:
            staged, url = path, official_url
        else:  # re-saved: the same weights in any official layout give the same bytes
            staged, url = Path(tmp) / f"{variant.name}.safetensors", external_url
            save_safetensors(converted, staged)
            if url is None and staged.stat().st_size > limit:
                raise WeightsPackageError(f"{variant.name}: the converted file is {staged.stat().st_size / 2**20:.0f} "
                                          f"MiB, over --max-wheel-mb {max_wheel_mb:g}; host it and pass "
                                          "--external-url URL")
        del converted
        meta = _metadata(card, variant, src, layout, zoo_layout, path, original_sha, staged, licence, restricted,
                         version, url)
        wheel = _write_wheel(out, meta, staged if url is None else None, Path(tmp))
        external = None
        if url is not None and not as_is:  # the maintainer uploads this file to --external-url
            external = out / f"{variant.name}-{meta['sha256'][:12]}.safetensors"
            os.replace(staged, external)
    return Built(wheel, meta, external)


def _metadata(card: ModelCard, variant: Variant, src: WeightSource | None, layout: str, zoo_layout: str, path: Path,
              original_sha: str, staged: Path, licence: str, restricted: str | None, version: str,
              url: str | None) -> dict[str, Any]:
    import glocal

    conv = card.convert_state_dict
    return {
        "format_version": FORMAT_VERSION,
        "distribution": dist_name(variant.name), "version": version,
        "variant": variant.name, "family": card.family, "task": card.task,
        "file": staged.name, "sha256": original_sha if staged == path else sha256_file(staged),
        "size": staged.stat().st_size,
        "layout": zoo_layout,
        "urls": [url] if url else [],
        "source": {"description": src.description if src else "local file", "url": source_url(src) if src else None,
                   "file": path.name, "sha256": original_sha, "layout": layout},
        "license": licence, "license_restricted": restricted,
        "paper_metrics": [asdict(m) for m in variant.paper_metrics],
        "converter": f"{conv.__module__}.{conv.__qualname__}" if conv is not None and layout not in (
            "native", "timm") else None,
        "glocal_version": glocal.__version__, "torch_version": torch.__version__.split("+")[0],
    }


_INIT = '''"""Pretrained weights for glocal's {variant} ({family}), packaged by `bench weights package`."""

from pathlib import Path


def weights() -> dict:
    """The ``glocal.weights`` entry point: where the file is (downloaded into the user cache on first use when
    this wheel carries only its metadata), its sha256, layout and this distribution's name."""
    from glocal.zoo.weights_packages import locate

    return locate(Path(__file__).with_name("{metadata}"))
'''


def _record_hash(data: bytes | Path) -> str:
    """RECORD's ``sha256=<urlsafe base64, no padding>`` of bytes or a file (read in blocks)."""
    h = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    else:
        h.update(data)
    return "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def _zip_add(zf: zipfile.ZipFile, arcname: str, data: bytes | Path) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    if isinstance(data, Path):  # weights: stored (safetensors barely compresses), streamed
        info.compress_type = zipfile.ZIP_STORED
        with open(data, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)


def _dist_info(meta: dict[str, Any]) -> dict[str, bytes]:
    """METADATA, WHEEL and entry_points.txt of a weights wheel (RECORD is added last, over all files)."""
    variant, mod = meta["variant"], module_name(meta["variant"])
    licence_line = " ".join(meta["license"].split())
    metadata = (f"Metadata-Version: 2.1\nName: {meta['distribution']}\nVersion: {meta['version']}\n"
                f"Summary: Pretrained weights for glocal's {variant} ({meta['family']}), sha256 {meta['sha256']}\n"
                f"License: {licence_line}\nKeywords: glocal,weights,{meta['family']}\n"
                f"Requires-Python: >=3.10\n")
    wheel = "Wheel-Version: 1.0\nGenerator: glocal-weights\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    eps = f"[glocal.weights]\n{variant} = {mod}:weights\n"
    return {"METADATA": metadata.encode(), "WHEEL": wheel.encode(), "entry_points.txt": eps.encode()}


def _write_wheel(out: Path, meta: dict[str, Any], weights_file: Path | None, tmp: Path) -> Path:
    """Write the wheel into ``tmp`` and move it into ``out`` complete (a failure leaves nothing in ``out``)."""
    mod = module_name(meta["variant"])
    stem = f"{mod}-{meta['version']}"
    files: dict[str, bytes | Path] = {
        f"{mod}/__init__.py": _INIT.format(variant=meta["variant"], family=meta["family"],
                                           metadata=METADATA_FILE).encode(),
        f"{mod}/{METADATA_FILE}": (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode(),
    }
    if weights_file is not None:
        files[f"{mod}/{meta['file']}"] = weights_file
    files.update({f"{stem}.dist-info/{k}": v for k, v in _dist_info(meta).items()})
    record = "".join(f"{name},{_record_hash(data)},{data.stat().st_size if isinstance(data, Path) else len(data)}\n"
                     for name, data in files.items()) + f"{stem}.dist-info/RECORD,,\n"
    files[f"{stem}.dist-info/RECORD"] = record.encode()
    staged = tmp / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(staged, "w") as zf:
        for name, data in files.items():
            _zip_add(zf, name, data)
    final = out / staged.name
    os.replace(staged, final)
    return final


# ----------------------------------------------------------------------------------------------------------
# Installed packages: locate (the entry point's work), list, verify


def cached_path(meta: dict[str, Any]) -> Path:
    """Where a metadata-only package's file lives once downloaded (content-addressed in the user cache)."""
    from glocal.download import cache_dir

    return cache_dir() / "sha256" / meta["sha256"] / meta["file"]


def locate(metadata_path: str | os.PathLike) -> dict[str, Any]:
    """The weights file of an installed package: in the wheel, else downloaded (verified) on first use."""
    from glocal.download import DownloadError, download

    meta_path = Path(metadata_path)
    meta = json.loads(meta_path.read_text())
    path = meta_path.with_name(meta["file"])
    if not path.is_file():
        if not meta.get("urls"):
            raise WeightsPackageError(f"{meta['distribution']}: {path} is missing and the package names no URL; "
                                      "reinstall it")
        errors = []
        for url in meta["urls"]:
            try:
                path = download(url, cached_path(meta), meta["sha256"])
                break
            except DownloadError as e:
                errors.append(str(e))
        else:
            raise DownloadError("; ".join(errors))
    return {"path": str(path), "sha256": meta["sha256"], "layout": meta["layout"],
            "name": f"{meta['distribution']}=={meta['version']}"}


def installed() -> list[dict[str, Any]]:
    """Installed weights packages (entry-point group ``glocal.weights``) with their metadata and file paths.

    Entry points of other packages that carry no ``glocal-weights.json`` are listed with what is known."""
    rows = []
    for ep in entry_points(group="glocal.weights"):
        dist = ep.dist
        files = (dist.files or []) if dist is not None else []
        meta_file = next((f for f in files if f.name == METADATA_FILE), None)
        row: dict[str, Any] = {"variant": ep.name, "distribution": dist.metadata["Name"] if dist else "?",
                               "version": dist.version if dist else "?", "file": None, "present": False}
        if meta_file is not None:
            meta_path = Path(dist.locate_file(meta_file))
            meta = json.loads(meta_path.read_text())
            inside = meta_path.with_name(meta["file"])
            file = inside if inside.is_file() or not meta.get("urls") else cached_path(meta)
            row.update({k: meta.get(k) for k in ("sha256", "license", "layout", "urls", "family")},
                       file=str(file), present=file.is_file(), external=bool(meta.get("urls")))
        rows.append(row)
    return sorted(rows, key=lambda r: r["variant"])


def verify() -> list[dict[str, Any]]:
    """Recompute every installed weights file's sha256; a mismatch raises naming the file(s).

    Metadata-only packages whose file was not downloaded yet are reported (``status: not downloaded``)."""
    rows, bad = installed(), []
    for row in rows:
        if row.get("sha256") is None:
            row["status"] = "no metadata"
        elif not row["present"]:
            row["status"] = "not downloaded" if row.get("external") else "missing"
            if not row.get("external"):
                bad.append(f"{row['file']} is missing ({row['distribution']})")
        else:
            got = sha256_file(row["file"])
            row["status"] = "ok" if got == row["sha256"] else "MISMATCH"
            if got != row["sha256"]:
                bad.append(f"{row['file']} ({row['distribution']}) has sha256 {got}, metadata says {row['sha256']}")
    if bad:
        raise WeightsPackageError("verification failed: " + "; ".join(bad))
    return rows


# ----------------------------------------------------------------------------------------------------------
# A PEP 503 simple index over a folder of wheels


def _project(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


def build_index(folder: str | os.PathLike) -> Path:
    """Write ``FOLDER/simple/`` (PEP 503) over the wheels in ``FOLDER``; ``pip install --index-url
    file://FOLDER/simple NAME`` then installs from it. Links carry ``#sha256=`` so pip checks each download."""
    root = Path(folder)
    if not root.is_dir():
        raise WeightsPackageError(f"not a folder: {root}")
    wheels = sorted(root.glob("*.whl"))
    if not wheels:
        raise WeightsPackageError(f"no wheels in {root}")
    projects: dict[str, list[Path]] = {}
    for w in wheels:
        projects.setdefault(_project(w), []).append(w)
    simple = root / "simple"
    for name, files in projects.items():
        links = "".join(f'<a href="../../{w.name}#sha256={sha256_file(w)}">{w.name}</a><br/>\n' for w in files)
        _write_atomic(simple / name / "index.html", _html(f"Links for {name}", links))
    links = "".join(f'<a href="{n}/">{n}</a><br/>\n' for n in sorted(projects))
    _write_atomic(simple / "index.html", _html("Simple index", links))
    return simple


def _html(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
            f"<title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}</body></html>\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# Official sources: which a plain download reaches, which need a browser


@dataclass(frozen=True)
class FetchPlan:
    """One official source of a variant: a URL ``fetch`` downloads, or the manual steps it prints instead."""

    source: WeightSource
    url: str | None
    manual: str | None

    @property
    def filename(self) -> str:
        return Path(self.source.filename or urlparse(self.url or "").path).name or "weights.bin"


def fetch_plans(model: str) -> tuple[Variant, list[FetchPlan]]:
    card, variant = resolve(model)
    plans = []
    for src in variant.weights:
        steps = manual_steps(src)
        plans.append(FetchPlan(src, None if steps else source_url(src), steps))
    return variant, plans


def fetch(model: str, out_dir: str | os.PathLike | None = None, index: int | None = None,
          progress: bool = True) -> tuple[Path, FetchPlan]:
    """Download a variant's official file (the first plain-URL source, or source ``index``) into ``out_dir``
    (default: the user cache), verified against the card's sha256 when it records one."""
    from glocal.download import cache_dir, download

    variant, plans = fetch_plans(model)
    if not plans:
        raise WeightsPackageError(f"{variant.name} has no official weights source")
    if index is not None:
        if not 0 <= index < len(plans):
            raise WeightsPackageError(f"{variant.name} has sources 0..{len(plans) - 1}, not {index}")
        chosen = plans[index]
    else:
        chosen = next((p for p in plans if p.url), plans[0])
    if chosen.url is None:
        raise WeightsPackageError(f"{variant.name}: no source is a plain download; {chosen.manual}")
    dest = Path(out_dir) if out_dir is not None else cache_dir() / "official" / variant.name
    return download(chosen.url, dest / chosen.filename, chosen.source.sha256, progress=progress), chosen
