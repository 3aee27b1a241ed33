"""The result record: one builder and one validator, both read by the store, the harness and the site.

The validator interprets ``benchmarks/schema/record.schema.json`` itself (types, required fields, enums,
constants, minimums, array items), so the schema file is the one definition of a record's fields; on top
it enforces what a schema cannot say: every number finite, and no quality metric from random weights.
It lives at the package root beside :mod:`glocal.taskspec` and imports only the standard library, so the
harness, the store and the site (which never imports the harness) all read the same definition.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
QUALITY_FREE_METRICS = frozenset({"num_samples"})  # metrics that are not quality (allowed with random weights)


class RecordError(ValueError):
    """A record that breaks the schema (one line naming where and the field)."""


SCHEMA_PATH = Path(__file__).resolve().parent / "benchmarks" / "schema" / "record.schema.json"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The record schema (``benchmarks/schema/record.schema.json``, read without importing the harness)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------
# validation

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _check(value: Any, node: dict[str, Any], path: str, where: str) -> None:
    """Check ``value`` against one schema node (the subset of JSON Schema the record schema uses)."""
    types = node.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            raise RecordError(f"{where}: field {path!r} should be {' or '.join(types)}, got {value!r:.60}")
    if "const" in node and value != node["const"]:
        raise RecordError(f"{where}: field {path!r} is {value!r:.60}; expected {node['const']!r}")
    if "enum" in node and value not in node["enum"]:
        allowed = ", ".join(str(e) for e in node["enum"])
        raise RecordError(f"{where}: field {path!r} is {value!r:.60}; expected one of {allowed}")
    if "minimum" in node and _TYPES["number"](value) and value < node["minimum"]:
        raise RecordError(f"{where}: field {path!r} is {value!r}; expected at least {node['minimum']}")
    if isinstance(value, dict):
        for key in node.get("required", ()):
            if key not in value:
                raise RecordError(f"{where}: missing field {_join(path, key)!r}")
        for key, sub in node.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, _join(path, key), where)
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            _check(item, node["items"], f"{path}[{i}]", where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{where}: field {path!r} is {value!r}; numbers must be finite (use null)")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_finite(value: Any, path: str, where: str) -> None:
    """Every number anywhere in a record is finite (JSON has no NaN, though Python's json writes it)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{where}: field {path!r} is {value!r}; numbers must be finite (use null)")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, _join(path, str(k)), where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{path}[{i}]", where)


def validate_record(record: Any, where: str = "record") -> dict[str, Any]:
    """Check a record against the schema; return it, or raise :class:`RecordError` naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if "schema_version" not in record:
        raise RecordError(f"{where}: missing field 'schema_version'")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise RecordError(f"{where}: unsupported schema_version {version!r} (this site reads {SCHEMA_VERSION})")
    _check(record, schema(), "", where)
    _check_finite(record, "", where)
    weights = record["weights"]
    if weights["source"] == "random" and set(record.get("metrics") or {}) - QUALITY_FREE_METRICS:
        raise RecordError(f"{where}: a random-weights record cannot carry quality metrics")
    return record


# ---------------------------------------------------------------------------------------------------------
# building


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with id, schema version and timestamp filled in, updated with ``fields``."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "ok",
        "error": None,
        "metrics": {},
        "notes": [],
    }
    rec.update(fields)
    return rec


def model_fields(card: Any, variant: Any) -> dict[str, Any]:
    """The ``model`` section from a zoo card and variant."""
    return {"family": card.family, "variant": variant.name, "display_name": card.display_name, "task": card.task}


def cell_record(cell: Any, card: Any, variant: Any, task: str, settings: dict[str, Any], environment: dict[str, Any],
                **fields: Any) -> dict[str, Any]:
    """The one record builder for a measurement cell: successful, failed and crashed cells all start here, so
    they share every setting (and hence their cell key). ``settings`` is :func:`cell_settings`'s output."""
    weights = cell.weights
    return new_record(
        run_id=cell.run_id, command=cell.command, task=task, model=model_fields(card, variant),
        weights={"source": "random" if weights in (None, "random") else "file", "id": weights or "random",
                 "sha256": None, "layout": None},
        dataset=None, settings=settings, environment=environment, latency=None, memory=None, compute=None,
        workload=None, precision_check=None, compile_time_s=None, compile_cache=None, notes=list(cell.notes),
        **fields,
    )


def cell_settings(cell: Any, resolution: int, input_shape: list[int] | None, threads: int) -> dict[str, Any]:
    """The ``settings`` section: every setting of a cell that changes a measurement."""
    return {
        "device": cell.device, "precision": cell.precision, "batch_size": cell.batch_size, "resolution": resolution,
        "input_shape": input_shape, "channels_last": cell.channels_last, "compile": cell.compile,
        "cuda_graphs": cell.cuda_graphs, "tf32": cell.tf32,
        "cudnn_benchmark": cell.cudnn_benchmark, "threads": threads,
        "weights_cast": "pure" if cell.precision != "fp32" else None, "stop_rule": dict(cell.rule),
        "method": cell.method, "task_options": dict(cell.task_options), "timeout_s": cell.timeout, "backends": {},
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""


def cell_key(record: dict[str, Any]) -> tuple:
    """What makes two records measurements of the same cell (a newer one supersedes an older one; a sweep
    resumes past it): model, weights, task view, dataset, device, and every setting that changes a number."""
    from glocal.taskspec import view_of

    s, dataset = record["settings"], record.get("dataset") or {}
    return (
        record["model"]["family"], record["model"]["variant"], record["weights"]["source"], record["weights"]["id"],
        view_of(record["task"], dataset.get("name"), record.get("metrics")), dataset.get("name") or "",
        record["environment"]["device_name"], s["precision"], s["batch_size"], s["resolution"],
        bool(s.get("channels_last", False)), s.get("compile") or "", bool(s.get("cuda_graphs", False)),
        _canonical(s.get("method")),
        _canonical(s.get("task_options")),
    )
