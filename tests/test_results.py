"""The result store: validation, all-or-nothing appends, concurrent writers, exports."""

import json
import multiprocessing as mp

import pytest

from glocal.benchmarks.results import ResultStore, export, load_records_file
from glocal.record import RecordError, new_record, validate_record


def make(i: int = 0, **over):
    rec = new_record(
        task="classification", model={"family": "gcvit", "variant": "gcvit_tiny", "task": "classification"},
        weights={"source": "random", "id": "random"}, dataset=None,
        settings={"device": "cpu", "precision": "fp32", "batch_size": 1, "resolution": 224},
        environment={"device_name": "CPU: test", "torch": "2", "glocal": "0.1.0"},
        latency={"median": float(i)},
    )
    rec.update(over)
    return rec


def test_validation_rejects_incomplete_and_random_weights_accuracy():
    validate_record(make())
    with pytest.raises(RecordError, match="^record: missing field 'settings'$"):
        validate_record({k: v for k, v in make().items() if k != "settings"})
    with pytest.raises(RecordError, match="field 'status' is 'great'; expected one of ok, oom, error, timeout"):
        validate_record(make(status="great"))
    with pytest.raises(RecordError, match="field 'latency.median' is nan; numbers must be finite"):
        validate_record(make(latency={"median": float("nan")}))
    with pytest.raises(RecordError, match="field 'settings.method' should be object or null"):
        validate_record(make(settings={**make()["settings"], "method": "dimap"}))
    with pytest.raises(RecordError, match="random-weights record cannot carry quality metrics"):
        validate_record(make(metrics={"top1": 80.0}))


def test_append_is_all_or_nothing(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    with pytest.raises(ValueError):
        store.append([make(1), make(2, status="bogus")])
    assert store.records() == []
    store.append([make(1), make(2)])
    assert [r["latency"]["median"] for r in store.records()] == [1.0, 2.0]
    assert store.records(model="gcvit") and not store.records(model="dinat")


def _writer(path, n, offset, start):
    start.wait()  # all writers open the new store at once (the journal-mode switch races there)
    store = ResultStore(path)
    for i in range(n):
        store.append([make(offset + i)])


def test_concurrent_writers_do_not_corrupt(tmp_path):
    path = tmp_path / "s.sqlite"
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(path, 15, k * 100, start)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    medians = sorted(r["latency"]["median"] for r in ResultStore(path).records())
    assert medians == sorted(float(k * 100 + i) for k in range(4) for i in range(15))


def test_exports_round_trip(tmp_path):
    recs = [make(1), make(2)]
    (tmp_path / "a.json").write_text(export(recs, "json"))
    (tmp_path / "b.jsonl").write_text(export(recs, "jsonl"))
    assert load_records_file(tmp_path / "a.json") == recs == load_records_file(tmp_path / "b.jsonl")
    assert len(load_records_file(tmp_path)) == 4
    assert json.loads(export(recs[:1], "json"))[0]["id"] == recs[0]["id"]
    with pytest.raises(ValueError, match="unknown export format"):
        export(recs, "xml")
