"""Result records and their store.

A record is one JSON object per measurement cell (schema: ``benchmarks/schema/record.schema.json``; built and
validated by :mod:`glocal.record`).
The default store is SQLite under the user data directory (``GLOCAL_STORE`` or ``--store`` override):
each record is inserted in its own transaction (a crash leaves no half record), WAL mode and a busy
timeout let concurrent runs append safely. Records are append-only: nothing updates or deletes them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from glocal.record import validate_record


class StoreError(RuntimeError):
    """The store cannot be opened or a record is not there (one line)."""


def default_store_path() -> Path:
    env = os.environ.get("GLOCAL_STORE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("glocal", appauthor=False)) / "results.sqlite"


_BUSY_SECONDS = 30.0


def _use_wal(con: sqlite3.Connection) -> None:
    """Switch a store to WAL mode (persistent, so usually already on). Changing the journal mode can return
    SQLITE_BUSY at once, without the busy handler, while another process creates the same new file, so it
    is retried here with backoff up to the busy timeout."""
    deadline = time.monotonic() + _BUSY_SECONDS
    delay = 0.005
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class ResultStore:
    """Append-only SQLite store of records."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_store_path()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise StoreError(f"no result store at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
            _use_wal(con)
            con.execute(
                "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, run_id TEXT, timestamp TEXT, "
                "family TEXT, variant TEXT, task TEXT, status TEXT, device TEXT, record TEXT NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open result store {self.path}: {e}") from e
        return con

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Insert records, each validated, all in one transaction (all or nothing)."""
        recs = list(records)
        for r in recs:
            validate_record(r)
        if not recs:
            return 0
        con = self._connect(create=True)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)",
                [(r["id"], r.get("run_id"), r["timestamp"], r["model"]["family"], r["model"]["variant"],
                  r["task"], r["status"], r["environment"]["device_name"], json.dumps(r)) for r in recs])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return len(recs)

    def records(self, model: str | None = None, task: str | None = None, status: str | None = None,
                run_id: str | None = None) -> list[dict[str, Any]]:
        """Records in insertion order, optionally filtered (``model`` matches family or variant)."""
        if not self.path.exists():
            return []
        sql, args = "SELECT id, record FROM records WHERE 1=1", []
        if model:
            sql += " AND (family = ? OR variant = ?)"
            args += [model, model]
        for col, val in (("task", task), ("status", status), ("run_id", run_id)):
            if val:
                sql += f" AND {col} = ?"
                args.append(val)
        return [r for r in (self._parse(i, text) for i, text in self._query(sql + " ORDER BY rowid", args)) if r]

    def _query(self, sql: str, args: list[Any]) -> list[tuple]:
        """Rows of a read query; a file that is not a readable store is one :class:`StoreError` line."""
        con = self._connect(create=False)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read result store {self.path}: {e}") from None
        finally:
            con.close()

    def _parse(self, record_id: str, text: str) -> dict[str, Any] | None:
        """A stored record, or None with a warning naming it when it is not valid (the rest stays readable)."""
        try:
            return validate_record(json.loads(text, parse_constant=_reject_constant), f"record {record_id}")
        except ValueError as e:
            print(f"warning: {self.path}: skipped invalid record {record_id!r} ({e})", file=sys.stderr)
            return None

    def get(self, record_id: str) -> dict[str, Any]:
        """A record by id or unique id prefix (taken literally: no wildcards)."""
        if not record_id or len(record_id) > 64:
            raise StoreError(f"bad record id {record_id[:40]!r}: give an id or a prefix of one")
        rows = self._query("SELECT id, record FROM records WHERE substr(id, 1, ?) = ?", [len(record_id), record_id])
        if not rows:
            raise StoreError(f"no record {record_id!r} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"record id prefix {record_id!r} is ambiguous ({len(rows)} records)")
        record = self._parse(*rows[0])
        if record is None:
            raise StoreError(f"record {rows[0][0]!r} in {self.path} is not a valid record")
        return record


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON number {name}")


def load_records_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records from a JSON file (one record or a list), a JSONL file, or a SQLite store."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no results at {path}")
    if path.is_dir():
        out: list[dict[str, Any]] = []
        for p in sorted(path.rglob("*")):
            if p.suffix in (".json", ".jsonl"):
                out.extend(load_records_file(p))
        return out
    if path.suffix in (".sqlite", ".db", ".sqlite3"):
        return ResultStore(path).records()
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, list) else [data]


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row per record for tables and CSV (no raw samples)."""
    lat = record.get("latency") or {}
    mem = record.get("memory") or {}
    comp = record.get("compute") or {}
    st = record["settings"]
    metrics = {f"metric.{k}": v for k, v in (record.get("metrics") or {}).items() if not isinstance(v, dict)}
    return {
        "id": record["id"], "timestamp": record["timestamp"], "status": record["status"],
        "model": record["model"]["variant"], "task": record["task"], "weights": record["weights"]["source"],
        "device": record["environment"]["device_name"], "precision": st["precision"],
        "batch": st["batch_size"], "resolution": st["resolution"],
        "latency_ms": lat.get("median"), "p90_ms": lat.get("p90"), "throughput": lat.get("throughput"),
        "peak_mem_mib": mem.get("peak_allocated", mem.get("cpu_peak_rss")),
        "params": comp.get("params"), "gmacs": comp.get("gmacs"), **metrics,
    }


def export(records: list[dict[str, Any]], fmt: str) -> str:
    """Serialize records as ``json`` (a list), ``jsonl`` or ``csv`` (flattened)."""
    if fmt == "json":
        return json.dumps(records, indent=1)
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    if fmt == "csv":
        rows = [flatten(r) for r in records]
        cols: list[str] = []
        for row in rows:
            cols.extend(c for c in row if c not in cols)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    raise ValueError(f"unknown export format {fmt!r} (json, jsonl, csv)")


def write_atomic(path: Path, text: str) -> None:
    """Write a file via a temp name and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def iter_ok(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (r for r in records if r.get("status") == "ok")
