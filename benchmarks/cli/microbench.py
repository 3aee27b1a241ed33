"""``bench microbench NAME [ARGS]``: kernel- and method-level benchmarks that print figures side by side.

Each benchmark is one module in ``glocal.benchmarks.microbench`` with ``NAME`` (its command name, plus
optional ``ALIASES``) and ``main(argv) -> int``; it is discovered here, so adding one is adding its file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated

import typer

from glocal.benchmarks.cli import app, fail


def microbenchmarks() -> dict[str, str]:
    """Command name (and aliases) -> module name of every microbenchmark."""
    import glocal.benchmarks.microbench as pkg

    names: dict[str, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name in (getattr(mod, "NAME", info.name.replace("_", "-")), *getattr(mod, "ALIASES", ())):
            names[name] = info.name
    return names


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def microbench(ctx: typer.Context,
               name: Annotated[str, typer.Argument(help="benchmark name; --help after it shows its options")]) -> None:
    """Kernel- and method-level benchmarks (e.g. `na`, `dehazexl-memory`, `timer-check`); each prints its table."""
    modules = microbenchmarks()
    if name not in modules:
        fail(f"unknown microbenchmark {name!r} (known: {', '.join(sorted(modules))})")
    mod = importlib.import_module(f"glocal.benchmarks.microbench.{modules[name]}")
    raise typer.Exit(mod.main(list(ctx.args)) or 0)
