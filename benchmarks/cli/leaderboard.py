"""``bench leaderboard build|serve``: gather records and model cards, build the static site, preview it.

Records come from the published files in ``glocal/leaderboard/results/`` (``*.json`` holding one record or
a list, ``*.jsonl`` one per line; skipped with ``--no-published``) and from every ``--results PATH``: a JSON
or JSONL export, a folder of them, or a SQLite result store (read through
``glocal.benchmarks.results.ResultStore``). Repeated record ids keep the first seen, published first.
A malformed record stops the build with one line naming its file and field; nothing is written then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glocal.benchmarks.cli import app, errors_as_one_line, fail

leaderboard_app = typer.Typer(help="Build and preview the static leaderboard site.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")

SQLITE_MAGIC = b"SQLite format 3\x00"


def published_results_dir() -> Path:
    """The published records shipped with the package: ``glocal/leaderboard/results/``."""
    import glocal.leaderboard

    return Path(glocal.leaderboard.__file__).resolve().parent / "results"


def _is_sqlite(path: Path) -> bool:
    """A SQLite store by its name, or by its header (a store in WAL mode may have an empty main file)."""
    if path.suffix.lower() in (".sqlite", ".sqlite3", ".db"):
        return True
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def read_results(path: Path) -> list[dict]:
    """Records from one ``--results`` path: a SQLite store, a JSON/JSONL file, or a folder of them."""
    from glocal.leaderboard.data import RecordError, read_record_file, read_results_dir, validate_record

    path = Path(path).expanduser()
    if path.is_dir():
        return read_results_dir(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file or folder")
    if _is_sqlite(path):
        try:
            from glocal.benchmarks.results import ResultStore
        except ImportError as e:
            raise RecordError(f"{path}: a SQLite result store, but the store reader cannot be imported ({e})") from None
        return [validate_record(r, f"{path}: record {i}") for i, r in enumerate(ResultStore(path).records())]
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise RecordError(f"{path}: expected a .json or .jsonl export, a folder of them, or a SQLite result store")
    return read_record_file(path)


def gather_records(results: list[Path], *, published: bool = True) -> list[dict]:
    """Published records first (unless ``published`` is False), then each ``--results`` path in order."""
    from glocal.leaderboard.data import read_results_dir

    records = read_results_dir(published_results_dir()) if published else []
    for p in results:
        records.extend(read_results(p))
    return records


def model_cards() -> list[dict]:
    """Every registered model card as a JSON-friendly dict."""
    import glocal.zoo

    return [c.to_dict() for c in glocal.zoo.cards()]


def _require_site_extra() -> None:
    """The site needs the ``leaderboard`` extra; say so in one line rather than failing half-way."""
    import importlib.util

    missing = [m for m in ("jinja2",) if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"the leaderboard needs {', '.join(missing)}: pip install 'glocal[leaderboard]'")


@leaderboard_app.command()
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the site to (replaced atomically).")],
    results: Annotated[list[Path] | None, typer.Option(
        "--results", "-r", help="A result store (SQLite), a JSON/JSONL export, or a folder of them; repeatable.",
    )] = None,
    published: Annotated[bool, typer.Option(
        "--published/--no-published", help="Include the records published in glocal/leaderboard/results/.")] = True,
    charts: Annotated[bool, typer.Option("--charts/--no-charts", help="Draw Vega charts (needs altair, vl-convert).")
                      ] = True,
    title: Annotated[str, typer.Option("--title", help="Site title.")] = "glocal leaderboard",
) -> None:
    """Build the static site from result records; it opens from file:// and needs no network."""
    _require_site_extra()
    from glocal.leaderboard.site import SiteError, build_site

    with errors_as_one_line(SiteError):
        records = gather_records(list(results or []), published=published)
        try:
            summary = build_site(records, model_cards(), out, title=title, charts=charts)
        except OSError as e:
            fail(f"cannot write the site to {out} ({e.strerror or e})")
    typer.echo(
        f"built {summary.out}: {summary.pages} pages, {summary.cells} cells from {summary.records} records, "
        f"{summary.models} models, {summary.charts} charts"
    )
    typer.echo(f"open {summary.out / 'index.html'} or run `bench leaderboard serve --dir {out}`")


@leaderboard_app.command()
def serve(
    dir: Annotated[Path, typer.Option("--dir", "-d", help="A folder built by `bench leaderboard build`.")
                   ] = Path("site"),
    port: Annotated[int, typer.Option("--port", "-p", help="Port on 127.0.0.1 (0 picks a free one).", min=0,
                                      max=65535)] = 8000,
) -> None:
    """Preview a built site on http://127.0.0.1:PORT/ (local only; Ctrl-C stops)."""
    _require_site_extra()
    from glocal.leaderboard.site import SiteError, make_server

    with errors_as_one_line(SiteError):
        try:
            server = make_server(dir, port)
        except OSError as e:
            fail(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e})")
    typer.echo(f"serving {Path(dir).resolve()} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
