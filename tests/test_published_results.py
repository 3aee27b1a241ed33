"""The published records in leaderboard/results/: valid, measured (with provenance), and the site builds from them."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from glocal.benchmarks.cli import app
from glocal.benchmarks.results import load_records_file
from glocal.record import validate_record

PUBLISHED = Path(__file__).resolve().parent.parent / "leaderboard" / "results"
RECORDS = load_records_file(PUBLISHED) if any(PUBLISHED.glob("*.json*")) else []


@pytest.mark.skipif(not RECORDS, reason="no published records yet")
def test_published_records_are_valid_measurements_with_provenance():
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == len(set(ids))
    for r in RECORDS:
        validate_record(r)
        env = r["environment"]
        assert env["device_name"] and env["torch"] and env["git_commit"], r["id"]
        assert r["command"].startswith("bench run --model ")
        if r["status"] == "ok":
            assert r["latency"]["n"] == len(r["latency"]["samples"]) > 0
        if r["weights"]["source"] == "random":
            assert not r["metrics"]


@pytest.mark.skipif(not RECORDS, reason="no published records yet")
def test_site_builds_from_the_published_records(tmp_path):
    out = tmp_path / "site"
    res = CliRunner().invoke(app, ["leaderboard", "build", "--out", str(out), "--no-charts"])
    assert res.exit_code == 0, res.output
    index = (out / "index.html").read_text()
    for family in {r["model"]["display_name"] for r in RECORDS}:
        assert family in index
