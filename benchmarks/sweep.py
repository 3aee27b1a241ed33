"""Sweeps: a grid of cells described in a YAML or TOML file, expanded and validated exactly as ``bench run``
expands its options, run by a launcher (local, Ray, Slurm), with retries and ``--resume``.

```yaml
models: [gcvit_tiny, dinat_mini]
devices: [cuda]
precisions: [fp32, bf16]
batch_sizes: [1, 64]
resolutions: [224, 384]
methods: [none, "dimap:ratio=0.35"]
retries: 1
launcher: {name: ray, address: auto}
```

Keys: ``models`` (required), ``devices``, ``precisions``, ``batch_sizes``, ``resolutions``, ``frames``,
``methods``, ``options`` (task options), ``compare``, ``task``, ``datasets``, ``weights``, ``threads``,
``channels_last``, ``compile``, ``tf32``, ``cudnn_benchmark``, ``stop_rule`` (warmup_iters, warmup_time,
min_iters, min_time, max_iters, max_time), ``timeout``, ``measure`` (false: evaluation only, untimed cells
that may share a machine), ``eval_batch_size``, ``workers``, ``retries``, ``launcher`` (``name`` plus the
launcher's options). Unknown keys are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocal.benchmarks.cell import CellSpec
from glocal.benchmarks.runner import RunError, RunRequest, plan

KEYS = {"models", "devices", "precisions", "batch_sizes", "resolutions", "frames", "methods", "options", "compare",
        "task", "datasets", "weights", "threads", "channels_last", "compile", "cuda_graphs", "tf32", "cudnn_benchmark",
        "stop_rule", "timeout", "measure", "eval_batch_size", "workers", "retries", "launcher"}
STOP_RULE_KEYS = {"warmup_iters": "warmup_iters", "warmup_time": "warmup_s", "min_iters": "min_iters",
                  "min_time": "min_s", "max_iters": "max_iters", "max_time": "max_s"}
RETRY_STATUSES = ("error", "timeout")  # a crashed, lost or timed-out cell is tried again; oom is final


@dataclass
class Sweep:
    """A parsed sweep file: the requests (one per device), the launcher and its options, and the retry limit."""

    requests: list[RunRequest]
    launcher: str = "local"
    launcher_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 0


def read_sweep_file(path: Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.toml`` file (one line on any read or syntax error)."""
    if not path.is_file():
        raise RunError(f"sweep file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise RunError(f"{path}: a sweep file is .yaml, .yml or .toml")
    except (ValueError, ImportError) as e:  # yaml.YAMLError and tomllib.TOMLDecodeError are ValueErrors
        raise RunError(f"{path}: cannot parse: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - PyYAML's errors do not share a base with ValueError
        raise RunError(f"{path}: cannot parse: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a mapping of keys (models, devices, ...)")
    return data


def _list(data: dict[str, Any], key: str, typ: type, default: Any = None) -> list | None:
    value = data.get(key, default)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, typ) or isinstance(v, bool) or (typ is int and v < 1):
            raise RunError(f"sweep key {key}: expected {'positive integers' if typ is int else typ.__name__ + 's'}, "
                           f"got {v!r}")
    return items


def parse_sweep(data: dict[str, Any]) -> Sweep:
    """Sweep file contents -> requests for :func:`glocal.benchmarks.runner.plan` (the same as ``bench run``'s)."""
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise RunError(f"unknown sweep key {unknown[0]!r} (keys: {', '.join(sorted(KEYS))})")
    models = _list(data, "models", str)
    if not models:
        raise RunError("a sweep needs models: [...]")
    rule = _stop_rule(data.get("stop_rule") or {})
    launcher = dict(data.get("launcher") or {"name": "local"})
    name = launcher.pop("name", "local")
    frames = _list(data, "frames", int)
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise RunError("sweep key options: expected a mapping of task options")
    common = dict(
        models=models, precisions=_list(data, "precisions", str, ["fp32"]), batch_sizes=_list(data, "batch_sizes", int),
        resolutions=_list(data, "resolutions", int), weights=data.get("weights"), task=data.get("task"),
        methods=_list(data, "methods", str, []), task_options={k: str(v) for k, v in options.items()},
        sweeps={"frames": [str(f) for f in frames]} if frames else {}, compare=_list(data, "compare", str, []),
        channels_last=bool(data.get("channels_last", False)), compile=data.get("compile"),
        cuda_graphs=bool(data.get("cuda_graphs", False)),
        tf32=bool(data.get("tf32", False)), cudnn_benchmark=bool(data.get("cudnn_benchmark", False)),
        threads=data.get("threads"), datasets=_list(data, "datasets", str, []),
        eval_batch_size=int(data.get("eval_batch_size", 32)), workers=int(data.get("workers", 2)), rule=rule,
        measure=bool(data.get("measure", True)), timeout=data.get("timeout"),
    )
    requests = [RunRequest(device=d, **common) for d in _list(data, "devices", str, ["cpu"])]
    retries = data.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise RunError(f"sweep key retries: expected an integer from 0 to 10, got {retries!r}")
    return Sweep(requests, name, launcher, retries)


def _stop_rule(given: dict[str, Any]) -> dict[str, Any] | None:
    from glocal.benchmarks.runner import CPU_RULE

    unknown = sorted(set(given) - set(STOP_RULE_KEYS))
    if unknown:
        raise RunError(f"unknown stop_rule key {unknown[0]!r} (keys: {', '.join(STOP_RULE_KEYS)})")
    if not given:
        return None
    rule = dict(CPU_RULE)
    rule.update({STOP_RULE_KEYS[k]: v for k, v in given.items()})
    return rule


def plan_sweep(sweep: Sweep, dry_run: bool = False) -> tuple[list[CellSpec], list[str]]:
    """Every cell of the sweep, validated up front (nothing runs on bad input). Devices must exist here only
    when the cells run here (local launcher, not a dry run): a Slurm GPU sweep is planned on a login node."""
    cells: list[CellSpec] = []
    notes: list[str] = []
    for req in sweep.requests:
        c, n = plan(req, here=sweep.launcher == "local" and not dry_run)
        cells += c
        notes += [x for x in n if x not in notes]
    return cells, notes


def code_version(record: dict[str, Any]) -> tuple[str | None, str | None]:
    env = record.get("environment") or {}
    return env.get("glocal"), env.get("git_commit")


def already_done(cells: list[CellSpec], records: list[dict[str, Any]], version: tuple[str | None, str | None]
                 ) -> list[bool]:
    """Which cells a store already holds: an ``ok`` record with the same reproduce command (model, weights and
    every setting) measured by the same code version."""
    done = {r.get("command") for r in records if r.get("status") == "ok" and code_version(r) == version}
    return [c.command in done for c in cells]


def run_with_retries(cells: list[CellSpec], retries: int, sink: Callable[[dict[str, Any]], None],
                     run: Callable[[list[CellSpec], Callable[[list[dict[str, Any]]], None]], list[dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
    """Run cells with ``run(cells, on_records)``; a cell that ends in error or timeout runs again, up to ``retries``
    more times. Each cell's final record goes to ``sink`` as soon as it is final (the attempts noted)."""
    final: dict[int, dict[str, Any]] = {}
    todo = list(range(len(cells)))
    for attempt in range(retries + 1):
        last = attempt == retries

        def keep(records: list[dict[str, Any]], attempt: int = attempt, last: bool = last) -> None:
            for rec in records:
                if rec["status"] not in RETRY_STATUSES or last:
                    if attempt:
                        rec["notes"] = [*rec.get("notes", []), f"attempt {attempt + 1} of {retries + 1}"]
                    sink(rec)

        records = run([cells[i] for i in todo], keep)
        again = []
        for i, rec in zip(todo, records, strict=True):
            if rec["status"] in RETRY_STATUSES and not last:
                again.append(i)
            else:
                final[i] = rec
        todo = again
        if not todo:
            break
    return [final[i] for i in sorted(final)]
