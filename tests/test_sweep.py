"""Sweeps: one file, the same cells as `bench run`, on the local, Ray and Slurm (submitit local) launchers,
with retries and --resume."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glocal.benchmarks.cli import app
from glocal.benchmarks.results import ResultStore
from glocal.record import validate_record

runner = CliRunner()
GRID = """
models: [testnet_ok]
batch_sizes: [1, 2]
threads: 1
stop_rule: {warmup_iters: 1, warmup_time: 0, min_iters: 2, min_time: 0}
"""



def sweep(tmp_path, text, *args):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return runner.invoke(app, ["sweep", str(path), *args])


def records_of(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def settings_of(records):
    return sorted(json.dumps({k: v for k, v in r["settings"].items()}, sort_keys=True) for r in records)


def test_sweep_expands_like_bench_run_and_resumes(plugins, tmp_path, store_path):
    recs = records_of(sweep(tmp_path, GRID, "--json"))
    assert [r["status"] for r in recs] == ["ok", "ok"] and [r["settings"]["batch_size"] for r in recs] == [1, 2]
    for r in recs:
        validate_record(r)
    res = runner.invoke(app, ["run", "--model", "testnet_ok", "--batch-size", "1,2", "--threads", "1",
                              "--warmup-iters", "1", "--warmup-time", "0", "--min-iters", "2", "--min-time", "0",
                              "--json", "--no-store"])
    assert [r["command"] for r in recs] == [r["command"] for r in json.loads(res.stdout)]  # the same cells
    assert len(ResultStore(store_path).records()) == 2
    again = sweep(tmp_path, GRID, "--resume")
    assert again.exit_code == 0 and "resume: 2 of 2 cell(s) already" in again.stderr
    assert "nothing to run" in again.stdout and len(ResultStore(store_path).records()) == 2


def test_a_crashing_cell_is_retried_then_recorded(plugins, tmp_path, store_path):
    recs = records_of(sweep(tmp_path, GRID.replace("[testnet_ok]", "[testnet_crash, testnet_ok]")
                            .replace("[1, 2]", "[1]") + "retries: 1\n", "--json"))
    crash, ok = recs
    assert crash["status"] == "error" and "attempt 2 of 2" in crash["notes"]
    assert ok["status"] == "ok" and not any("attempt" in n for n in ok["notes"])
    assert [r["status"] for r in ResultStore(store_path).records()] == ["ok", "error"]  # each stored once, as final


def test_submitit_local_executor_gives_the_same_records(plugins, tmp_path):
    local = records_of(sweep(tmp_path, GRID, "--json"))
    launcher = f"launcher: {{name: slurm, executor: local, folder: {tmp_path / 'jobs'}}}\n"
    slurm = records_of(sweep(tmp_path, GRID + launcher, "--json"))
    assert [r["status"] for r in slurm] == ["ok", "ok"]
    assert settings_of(slurm) == settings_of(local)


def test_ray_local_cluster_runs_the_sweep(plugins, tmp_path):
    pytest.importorskip("ray")
    recs = records_of(sweep(tmp_path, GRID + "launcher: {name: ray, local_cpus: 2}\n", "--json"))
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert sorted(r["settings"]["batch_size"] for r in recs) == [1, 2]


@pytest.mark.parametrize("text, message", [
    ("models: [gcvit_xxtiny]\nlauncher: {name: kubernetes}\n", "unknown launcher 'kubernetes'"),
    ("models: [gcvit_xxtiny]\nlauncher: {name: ray, adress: x}\n", "launcher ray has no option 'adress'"),
    ("models: [gcvit_xxtiny]\nbatchsizes: [1]\n", "unknown sweep key 'batchsizes'"),
    ("models: [nosuchnet]\n", "unknown model 'nosuchnet'"),
    ("models: [gcvit_xxtiny]\nbatch_sizes: [0]\n", "sweep key batch_sizes: expected positive integers"),
    ("models: [gcvit_xxtiny]\nretries: -1\n", "sweep key retries"),
    ("models: [gcvit_xxtiny\n", "cannot parse"),
    ("[1, 2]\n", "expected a mapping"),
    ("devices: [cpu]\n", "a sweep needs models"),
])
def test_bad_sweep_files_are_one_line(tmp_path, store_path, text, message):
    res = sweep(tmp_path, text)
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not store_path.exists()


def test_missing_engine_names_the_extra(tmp_path, monkeypatch, store_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    for name, extra in (("ray", "glocal[ray]"), ("slurm", "glocal[slurm]")):
        res = sweep(tmp_path, f"models: [gcvit_xxtiny]\nresolutions: [32]\nlauncher: {{name: {name}}}\n")
        assert res.exit_code == 2 and extra in res.stderr, res.output
    assert not store_path.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the behaviour without CUDA")
def test_a_gpu_sweep_is_listed_without_a_gpu_but_not_run_here(tmp_path):
    """A Slurm/Ray GPU sweep is prepared on a machine without CUDA: --dry-run lists its cells (only the device
    name is checked); running it with the local launcher is refused with one line."""
    grid = "models: [gcvit_xxtiny]\ndevices: [cuda]\nprecisions: [bf16]\nbatch_sizes: [1]\nresolutions: [64]\n" \
           "cuda_graphs: true\n"
    listed = sweep(tmp_path, grid, "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split()[:6] == ["bench", "run", "--model", "gcvit_xxtiny", "--device", "cuda"]
    assert "--cuda-graphs" in listed.stdout
    refused = sweep(tmp_path, grid)
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: device 'cuda' requested but CUDA is not available here"
    bad = sweep(tmp_path, grid.replace("cuda]", "tpu]"), "--dry-run")
    assert bad.exit_code == 2 and "unknown device 'tpu'" in bad.stderr


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks" / "campaigns").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_campaign_files_plan_into_cells(path):
    """The prepared GPU campaigns are valid sweeps: every model, option, size and comparison checks out."""
    from glocal.benchmarks.sweep import parse_sweep, plan_sweep, read_sweep_file

    cells, _ = plan_sweep(parse_sweep(read_sweep_file(path)), dry_run=True)
    assert cells and all(c.device.startswith("cuda") for c in cells)
