"""Result records for the site: reading record files, checking the fields the site shows, picking the
newest record per measurement cell, and the rules for which numbers may be shown.

Records are plain dicts in the v1 schema (``benchmarks/schema/record.schema.json``), checked by the one
record validator (:mod:`glocal.record`, standard library only); this module never imports the
harness itself. A malformed record is an error naming its file and record, never skipped: a
leaderboard that silently drops a submitted result is worse than a build that stops.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glocal.record import RecordError, cell_key, validate_record
from glocal.taskspec import view_of

# ---------------------------------------------------------------------------------------------------------
# fields


def get(record: dict, path: str, default: Any = None) -> Any:
    """``get(rec, "latency.median")``: a nested field, or ``default`` where any part is missing or null."""
    cur: Any = record
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            return default
        cur = cur[part]
    return cur


# ---------------------------------------------------------------------------------------------------------
# reading record files


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON number {name}")


def parse_records(text: str, source: str, *, jsonl: bool = False) -> list[dict]:
    """Records from JSON text (one object or a list of them) or JSON lines; every record is validated."""
    items: list[tuple[str, Any]] = []
    if jsonl:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"{source}:{lineno}", json.loads(line, parse_constant=_reject_constant)))
            except ValueError as e:
                raise RecordError(f"{source}:{lineno}: not valid JSON ({_json_reason(e)})") from None
    else:
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except ValueError as e:
            raise RecordError(f"{source}: not valid JSON ({_json_reason(e)})") from None
        if isinstance(data, list):
            items = [(f"{source}: record {i}", d) for i, d in enumerate(data)]
        else:
            items = [(source, data)]
    return [validate_record(rec, where) for where, rec in items]


def _json_reason(e: ValueError) -> str:
    return e.msg if isinstance(e, json.JSONDecodeError) else str(e)


def read_record_file(path: str | Path) -> list[dict]:
    """Records from a ``.json`` file (an object or a list) or a ``.jsonl`` file (one record per line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    return parse_records(text, str(path), jsonl=path.suffix.lower() == ".jsonl")


def read_results_dir(directory: str | Path) -> list[dict]:
    """Every ``*.json`` and ``*.jsonl`` file under ``directory`` (recursively, in path order)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in (".json", ".jsonl"))
    out: list[dict] = []
    for f in files:
        out.extend(read_record_file(f))
    return out


def dedupe_records(records: Iterable[dict]) -> list[dict]:
    """Drop repeated record ids, keeping the first (the published files are read first, so a local store
    cannot replace a published record)."""
    seen: set[str] = set()
    out: list[dict] = []
    for r in records:
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


# ---------------------------------------------------------------------------------------------------------
# what may be shown


def num(value: Any) -> float | None:
    """A finite number as float, else None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def is_ok(record: dict) -> bool:
    return record.get("status") == "ok"


def is_random(record: dict) -> bool:
    return get(record, "weights.source") == "random"


def measured(record: dict, path: str) -> float | None:
    """A latency/memory/compute number: only from records with status ok."""
    return num(get(record, path)) if is_ok(record) else None


def quality(record: dict, path: str) -> float | None:
    """A quality metric (``metrics.<path>``): only from ok records with real weights, never random ones."""
    if not is_ok(record) or is_random(record):
        return None
    return num(get(record.get("metrics") or {}, path))


def memory_value(record: dict) -> tuple[float | None, str]:
    """Peak memory in MiB and which counter: GPU peak allocated, else the CPU process peak RSS."""
    alloc = measured(record, "memory.peak_allocated")
    if alloc is not None:
        return alloc, "peak_allocated"
    rss = measured(record, "memory.cpu_peak_rss")
    if rss is not None:
        return rss, "cpu_peak_rss"
    return None, ""


# ---------------------------------------------------------------------------------------------------------
# grouping


def tab_of(record: dict) -> str:
    """The site tab a record belongs to: its task, or the evaluation view (``structure``) that claims it."""
    return view_of(record["task"], get(record, "dataset.name"), record.get("metrics"))


def device_name(record: dict) -> str:
    return record["environment"]["device_name"]


def dataset_name(record: dict) -> str:
    return get(record, "dataset.name", "") or ""


def timestamp_key(record: dict) -> tuple[float, str]:
    """Sort key for record times: parsed UTC seconds where ISO-8601 parses, then the raw text."""
    text = record.get("timestamp", "")
    try:
        t = datetime.fromisoformat(text)
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp(), text
    except ValueError:
        return float("-inf"), text


def newest_key(record: dict) -> tuple[tuple[float, str], str]:
    """Order of recency: the timestamp, then the record id, so equal times still give one answer."""
    return timestamp_key(record), record["id"]


def latest_per_cell(records: Sequence[dict]) -> list[dict]:
    """One record per cell: the newest with status ok, else the newest of any status (an OOM or error
    stays visible until a run succeeds). Order follows the first appearance of each cell."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault(cell_key(r), []).append(r)
    out = []
    for group in cells.values():
        ok = [r for r in group if is_ok(r)]
        out.append(max(ok or group, key=newest_key))
    return out


def slugify(text: str, taken: set[str] | None = None) -> str:
    """A file-name-safe slug (``[a-z0-9-]``); when ``taken`` is given, made unique with a short hash."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"
    if taken is not None:
        if slug in taken:
            slug = f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
        n = 2
        base = slug
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
    return slug


def record_anchors(records: Iterable[dict]) -> dict[str, str]:
    """HTML ids of records on their model pages: ``r-`` and the id with unsafe characters replaced, unique."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for r in records:
        base = "r-" + re.sub(r"[^A-Za-z0-9_-]", "-", r["id"])[:80]
        anchor, n = base, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        taken.add(anchor)
        out[r["id"]] = anchor
    return out
