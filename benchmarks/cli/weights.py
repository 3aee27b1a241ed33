"""``bench weights``: pretrained weights as pip packages (package, index, fetch, list, verify)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from glocal.benchmarks.cli import app, errors_as_one_line, out

weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights as pip packages.")
app.add_typer(weights_app, name="weights")


@weights_app.command("package")
def weights_package(
    model: Annotated[str, typer.Option(help="the variant the checkpoint belongs to, e.g. gcvit_tiny")],
    from_file: Annotated[Path, typer.Option("--from", help="the official checkpoint (safetensors or PyTorch)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the wheel")] = Path("."),
    accept_license: Annotated[bool, typer.Option("--accept-license",
                                                 help="package weights under a restricted or gated licence")] = False,
    version: Annotated[str, typer.Option(help="the package version")] = "1.0.0",
    external_url: Annotated[str | None, typer.Option(
        help="metadata-only wheel: the converted file (written beside the wheel) will be hosted at this URL "
             "and downloaded on first use")] = None,
    max_wheel_mb: Annotated[float, typer.Option(help="larger files need --external-url (or are the official "
                                                     "file itself, then its URL is used)")] = 1000.0,
) -> None:
    """Convert an official checkpoint to the zoo layout, load it strictly, and write glocal-weights-VARIANT."""
    from glocal.zoo.weights_packages import package

    with errors_as_one_line():
        built = package(model, from_file, out_dir, accept_license=accept_license, version=version,
                        external_url=external_url, max_wheel_mb=max_wheel_mb)
    meta = built.metadata
    out.print(f"wrote {built.wheel} ({meta['distribution']}=={meta['version']}, {meta['layout']} layout, "
              f"sha256 {meta['sha256']})", highlight=False)
    if meta["urls"]:
        hosted = built.external_file or from_file
        out.print(f"metadata only: the file is downloaded on first use from {meta['urls'][0]} (upload {hosted} "
                  "there if it is not the official file)", highlight=False)


@weights_app.command("index")
def weights_index(folder: Annotated[Path, typer.Argument(help="a folder of wheels")]) -> None:
    """Write a PEP 503 simple index (FOLDER/simple) for pip install --index-url file://FOLDER/simple."""
    from glocal.zoo.weights_packages import build_index

    with errors_as_one_line():
        simple = build_index(folder)
    out.print(f"index at {simple}; install with: pip install --index-url {simple.resolve().as_uri()} "
              "glocal-weights-VARIANT", highlight=False, soft_wrap=True)


@weights_app.command("fetch")
def weights_fetch(
    model: Annotated[str, typer.Option(help="variant")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder (default: the user cache)")] = None,
    source: Annotated[int | None, typer.Option(help="which of the card's sources (see --list)", min=0)] = None,
    list_only: Annotated[bool, typer.Option("--list", help="only list the sources and how to get each")] = False,
) -> None:
    """Download a variant's official weights file (Hugging Face, GitHub releases, any HTTP URL), resumable and
    verified; sources that need a browser (Google Drive, Baidu) are listed with instructions."""
    from glocal.download import DownloadError
    from glocal.zoo.weights_packages import fetch, fetch_plans

    with errors_as_one_line(DownloadError):
        variant, plans = fetch_plans(model)
        if list_only or (source is None and not any(p.url for p in plans)):
            for i, p in enumerate(plans):
                how = p.url or f"manual: {p.manual}"
                out.print(f"[{i}] {p.source.description}\n    {how}", highlight=False, soft_wrap=True)
            if list_only:
                return
        path, plan = fetch(model, out_dir, source)
    out.print(f"{variant.name}: {path}", highlight=False)
    if plan.source.sha256 is None:
        out.print("no published sha256 to check it against; `bench weights package --from` records its sha256",
                  highlight=False)


def _rows(verify: bool) -> list[dict]:
    from glocal.zoo import weights_packages as wp

    with errors_as_one_line():
        return wp.verify() if verify else wp.installed()


def _table(rows: list[dict], as_json: bool, verify: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    table = Table(title=f"{len(rows)} weights package(s)", header_style="bold")
    cols = ["variant", "distribution", "version", "sha256", "license", "file"] + (["status"] if verify else [])
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        vals = {**r, "sha256": (r.get("sha256") or "-")[:16], "file": r.get("file") or "-"}
        if not r.get("present") and r.get("external"):
            vals["file"] = f"{vals['file']} (downloaded on first use)"
        table.add_row(*(str(vals.get(c) or "-") for c in cols))
    out.print(table)


@weights_app.command("list")
def weights_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Installed weights packages: variants, versions, sha256, licence and file."""
    _table(_rows(verify=False), as_json, verify=False)


@weights_app.command("verify")
def weights_verify(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Recompute every installed weights file's sha256 against its package metadata (a mismatch is an error)."""
    rows = _rows(verify=True)
    if not rows and not as_json:
        out.print("no weights packages installed (pip install glocal-weights-VARIANT)")
        return
    _table(rows, as_json, verify=True)
