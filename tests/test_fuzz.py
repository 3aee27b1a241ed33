"""Fuzzing the command line: every bad value of every option is refused up front, with one line on stderr,
exit code 2, no traceback, and nothing written (store unchanged, no new files).

The default profile tries a few hundred generated cases in well under a minute; ``-m slow`` runs a longer
profile. Values come from hypothesis strategies of what a careless or hostile user types: empty items,
signs, non-ASCII digits, huge numbers, NaN/inf, control and bidi characters, path tricks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from glocal.benchmarks.cli import app

runner = CliRunner()
DEFAULT = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
LONG = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

NASTY = ["", " ", ",", "1,,1", "-1", "0", "+1", "1e12", "６４", "6_4", "0x10", "nan", "inf", "-inf", "1.5",
         "\u202e64", "64\x00", "../../etc", "a" * 300, "%", "'; DROP TABLE records; --", "\U0001f600"]
bad_ints = st.one_of(st.sampled_from(NASTY), st.integers(max_value=0).map(str),
                     st.integers(min_value=10**7).map(str),
                     st.text(st.characters(blacklist_categories=("Nd",)), min_size=1, max_size=8))
bad_floats = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "1e300", "", "x", "1,2"]),
                       st.floats(max_value=-1e-9, allow_nan=False).map(str), st.floats(min_value=1e7).map(str))
bad_names = st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=20).filter(lambda s: not s.isalnum()))


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(args: list[str], store: Path, cwd: Path) -> None:
    """The command fails with one stderr line starting 'error:' (or usage error), no traceback, nothing written."""
    before = snapshot(cwd)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (args, res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert "Traceback" not in res.output, (args, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("error:"):
        assert len(lines) == 1, (args, res.stderr)
    else:  # click's own usage errors: a usage box ending in one "Invalid value"/"No such option" message
        assert any(m in res.stderr for m in ("Invalid value", "No such option", "Missing", "requires an argument",
                                             "Got unexpected extra")), (args, res.stderr)
    assert not store.exists(), args
    assert snapshot(cwd) == before, args


@pytest.fixture
def place(tmp_path, store_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return store_path, tmp_path


RUN_INT_OPTIONS = ["--batch-size", "--resolution", "--frames"]
RUN_FLOAT_OPTIONS = ["--warmup-time", "--min-time", "--max-time"]


@DEFAULT
@given(option=st.sampled_from(RUN_INT_OPTIONS), value=bad_ints)
def test_run_list_options(place, option, value):
    refused(["run", "--model", "gcvit_xxtiny", option, value], *place)


@DEFAULT
@given(option=st.sampled_from(RUN_FLOAT_OPTIONS), value=bad_floats)
def test_run_stop_rule(place, option, value):
    refused(["run", "--model", "gcvit_xxtiny", option, value], *place)


@DEFAULT
@given(option=st.sampled_from(["--threads", "--eval-batch-size", "--workers", "--timeout", "--min-iters",
                               "--warmup-iters", "--max-iters"]),
       value=st.sampled_from(["0", "-1", "", "x", "nan", "1e12", "99999999999", "६"]))
def test_run_scalar_options(place, option, value):
    if option in ("--workers", "--warmup-iters") and value == "0":
        return  # zero data-loading workers and no warm-up iteration are valid
    refused(["run", "--model", "gcvit_xxtiny", option, value], *place)


@DEFAULT
@given(name=bad_names)
def test_run_model_names(place, name):
    refused(["run", "--model", name], *place)


@DEFAULT
@given(device=st.one_of(st.sampled_from(["cpu:1", "cuda:99", "tpu", "", "gpu", "cpu:-1", "meta", "mps:0"]),
                        st.text(max_size=6)))
def test_run_devices(place, device):
    if device in ("cpu", "cpu:0"):
        return
    refused(["run", "--model", "gcvit_xxtiny", "--device", device], *place)


@DEFAULT
@given(value=st.one_of(st.sampled_from(["", "fp8", "FP32 ", "fp32,", ",", "int8", "bf16,,fp16"]), st.text(max_size=5)))
def test_run_precisions(place, value):
    if value in ("fp32", "bf16", "fp16"):
        return
    refused(["run", "--model", "gcvit_xxtiny", "--precision", value], *place)


@DEFAULT
@given(spec=st.one_of(st.sampled_from(["", "=", "imagenet=", "imagenet=/no/such", "nosuch=/tmp", "imagenet=.,foo",
                                       "builtin-sr,bogus=1", ",", "imagenet=/tmp,=1"]),
                      st.text(max_size=12)))
def test_run_datasets(place, spec):
    refused(["run", "--model", "gcvit_xxtiny", "--dataset", spec], *place)


@DEFAULT
@given(method=st.one_of(st.sampled_from(["", ":", "nosuch", "none:x=1", "none,none", ":ratio=1"]),
                        st.text(max_size=10).filter(lambda s: s.strip().lower() != "none")))
def test_run_methods(place, method):
    refused(["run", "--model", "gcvit_xxtiny", "--method", method], *place)


@DEFAULT
@given(opt=st.one_of(st.sampled_from(["", "=", "foo", "foo=bar", "=1", "frames=2"]), st.text(max_size=10)))
def test_run_task_options(place, opt):
    refused(["run", "--model", "gcvit_xxtiny", "--opt", opt], *place)


@DEFAULT
@given(path=st.sampled_from(["/proc/x.json", "/no/such/dir/out.json", ".", "/"]))
def test_run_output_paths(place, path):
    refused(["run", "--model", "gcvit_xxtiny", "--output", path], *place)


@DEFAULT
@given(record_id=st.one_of(st.sampled_from(["%", "_", "", "x" * 100_000, "' OR 1=1 --"]), st.text(max_size=70)))
def test_results_show(place, record_id):
    store, cwd = place
    res = runner.invoke(app, ["results", "show", record_id])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1
    assert not store.exists()


@DEFAULT
@given(limit=st.sampled_from(["0", "-1", "x", ""]))
def test_results_ls_limit(place, limit):
    refused(["results", "ls", "--limit", limit], *place)


def test_results_export_refuses_bad_destinations(place, tmp_path):
    store, cwd = place
    from glocal.benchmarks.results import ResultStore
    from glocal.record import new_record

    ResultStore(store).append([new_record(
        task="classification", model={"family": "gcvit", "variant": "gcvit_tiny", "task": "classification"},
        weights={"source": "random", "id": "random"}, dataset=None,
        settings={"device": "cpu", "precision": "fp32", "batch_size": 1, "resolution": 224},
        environment={"device_name": "CPU: test", "torch": "2", "glocal": "0.1.0"})])
    for dest in (str(tmp_path), "/no/such/dir/x.csv", "/proc/x.csv"):
        res = runner.invoke(app, ["results", "export", "--format", "csv", "--out", dest])
        assert res.exit_code == 2 and res.stderr.startswith("error: "), (dest, res.output)
        assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_store_is_one_line(place, content):
    store, cwd = place
    store.write_bytes(content)
    for args in (["results", "ls"], ["results", "show", "abc"], ["results", "export"]):
        res = runner.invoke(app, args)
        if content == b"":  # an empty file is an empty store
            assert res.exit_code in (0, 2), res.output
            continue
        assert res.exit_code == 2 and res.stderr.startswith("error: "), (args, res.output)
        assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


def test_store_under_a_regular_file_is_one_line(place, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GLOCAL_STORE", str(tmp_path / "file" / "s.sqlite"))
    res = runner.invoke(app, ["run", "--model", "gcvit_xxtiny", "--resolution", "64"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.output


@DEFAULT
@given(name=st.one_of(st.sampled_from(["", "nosuch", "../x", "disrt-style\x00"]), st.text(max_size=10)),
       opt=st.sampled_from(["", "=", "foo", "bogus=1"]))
def test_datasets_make(place, name, opt):
    store, cwd = place
    src = cwd / "src"
    src.mkdir(exist_ok=True)
    args = ["datasets", "make", name, "--from", str(src), "--out", str(cwd / "out")]
    if opt:
        args += ["--opt", opt]
    before = snapshot(cwd)
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output, (args, res.output)
    assert snapshot(cwd) == before


@pytest.mark.slow
@LONG
@given(case=st.one_of(st.tuples(st.sampled_from(RUN_INT_OPTIONS), bad_ints),
                      st.tuples(st.sampled_from(RUN_FLOAT_OPTIONS), bad_floats)))
def test_long_profile_numbers(place, case):
    option, value = case
    refused(["run", "--model", "gcvit_xxtiny", option, value], *place)


def test_fuzz_leaves_the_environment_clean():
    assert "GLOCAL_CELL" not in os.environ


def test_leaderboard_build_refuses_deep_json_and_corrupt_stores(place, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    for path, message in ((deep, "nested too deeply"), (bad, "cannot open result store")):
        res = runner.invoke(app, ["leaderboard", "build", "--out", str(tmp_path / "site"), "--results", str(path),
                                  "--no-charts"])
        assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.output
        assert len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "site").exists()


def test_datasets_make_on_corrupt_images_is_one_line(place, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    res = runner.invoke(app, ["datasets", "make", "disrt-style", "--from", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "cannot read image" in res.stderr and "a.jpg" in res.stderr
    assert "Traceback" not in res.output
