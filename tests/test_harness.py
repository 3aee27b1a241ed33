"""The harness core: reproduce commands, methods side by side, task options, time limits, one record builder."""

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glocal.benchmarks.cell import CellSpec
from glocal.benchmarks.cli import app
from glocal.benchmarks.results import ResultStore
from glocal.benchmarks.runner import RunRequest, crash_record, plan, remove_stale_cell_dirs, reproduce_command
from glocal.record import cell_key, validate_record

FAST = ["--warmup-iters", "1", "--warmup-time", "0", "--min-iters", "3", "--min-time", "0"]
runner = CliRunner()



def bench_json(*args):
    res = runner.invoke(app, ["run", *args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def one_line_error(*args):
    res = runner.invoke(app, ["run", *args])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_a_records_command_reproduces_its_settings(plugins):
    (first,) = bench_json("--model", "testnet_ok", "--threads", "1", "--method", "zerofirst:count=6", *FAST,
                          "--max-time", "30", "--timeout", "120")
    argv = shlex.split(first["command"])
    assert argv[:2] == ["bench", "run"]
    for flag in ("--threads", "--method", "--min-iters", "--warmup-time", "--max-time", "--timeout", "--resolution"):
        assert flag in argv, flag
    (again,) = bench_json(*argv[2:])
    assert again["settings"] == first["settings"] and again["command"] == first["command"]
    assert cell_key(again) == cell_key(first)
    assert again["settings"]["method"] == {"name": "zerofirst", "params": {"count": 6}}
    assert again["settings"]["stop_rule"]["max_s"] == 30 and again["settings"]["threads"] == 1


def test_methods_run_side_by_side_with_their_workload(plugins):
    base, pruned = bench_json("--model", "testnet_ok", "--method", "none", "--method", "zerofirst:count=10", *FAST)
    assert base["settings"]["method"] is None and base["workload"] is None
    assert pruned["settings"]["method"] == {"name": "zerofirst", "params": {"count": 10}}
    total = 8 * 27 + 8 + 8 * 10 + 10
    assert pruned["workload"] == {"nonzero_params": total - 10}  # random init has no exact zeros
    assert base["compute"]["params"] == pruned["compute"]["params"] == total
    assert cell_key(base) != cell_key(pruned)


@pytest.mark.parametrize("args, message", [
    (["--method", "nosuch"], "unknown method 'nosuch'"),
    (["--method", "zerofirst:count=99"], "method zerofirst: count=99: must be in [0, 80]"),
    (["--method", "zerofirst:count=x"], "method zerofirst: bad value 'x' for count (expected int)"),
    (["--method", "zerofirst:size=1"], "method zerofirst has no parameter size (parameters: count)"),
    (["--method", "zerofirst:count"], "expected key=value"),
    (["--method", "none", "--method", "none"], "--method none is given twice"),
    (["--opt", "frames=2"], "task classification has no option frames (options: none)"),
    (["--frames", "2"], "task classification has no option frames"),
    (["--compare", "deanet"], "cannot compare testnet_ok (classification) with deanet_cr (dehazing)"),
    (["--task", "dehazing"], "testnet_ok (classification) cannot run as a dehazing task"),
    (["--task", "nosuch"], "no harness task 'nosuch'"),
    (["--batch-size", "1,,2"], "--batch-size: empty value in '1,,2'"),
    (["--batch-size", "６４"], "--batch-size: expected positive integers"),
    (["--resolution", "0"], "--resolution: expected positive integers up to 65536, got '0'"),
    (["--min-time", "nan"], "--min-time must be a finite number"),
    (["--warmup-time", "inf"], "--warmup-time must be a finite number"),
    (["--min-iters", "1000000000"], "--min-iters must be a finite number between 1 and 1e+06"),
])
def test_bad_requests_are_refused_before_anything_runs(plugins, store_path, args, message):
    assert message in one_line_error("--model", "testnet_ok", *args)
    assert not store_path.exists()


def test_method_that_does_not_apply_is_refused(plugins, store_path):
    assert "method zerofirst does not apply to gcvit_xxtiny" in one_line_error(
        "--model", "gcvit_xxtiny", "--method", "zerofirst")
    assert not store_path.exists()


def test_a_cell_past_its_time_limit_is_recorded_as_timeout(plugins, store_path):
    res = runner.invoke(app, ["run", "--model", "testnet_hang", "--timeout", "10", *FAST, "--json"])
    assert res.exit_code == 1  # no cell succeeded
    (hung,) = json.loads(res.stdout)
    assert hung["status"] == "timeout" and hung["error"] == "past its time limit of 10 s"
    assert hung["settings"]["timeout_s"] == 10 and "--timeout 10" in hung["command"]
    validate_record(hung)
    assert [r["status"] for r in ResultStore(store_path).records()] == ["timeout"]


def test_crashed_and_finished_cells_share_their_settings(plugins):
    cells, _ = plan(RunRequest(models=["testnet_ok"], threads=1))
    (cell,) = cells
    assert cell.resolution == 32 and cell.command == reproduce_command(cell)
    crashed = crash_record(cell, -6, ["Fatal Python error: Aborted"])
    validate_record(crashed)
    assert crashed["status"] == "error" and crashed["settings"]["resolution"] == 32
    assert crashed["settings"]["method"] is None and crashed["settings"]["task_options"] == {}
    from glocal.benchmarks.cell import run_cell

    finished = run_cell(CellSpec(**{**cell.__dict__, "rule": {"warmup_iters": 0, "warmup_s": 0, "min_iters": 1,
                                                                "min_s": 0, "max_iters": 1, "max_s": 1}}))
    assert finished["status"] == "ok"
    assert {k: v for k, v in finished["settings"].items() if k != "stop_rule"} == \
        {k: v for k, v in crashed["settings"].items() if k != "stop_rule"}


def test_killing_bench_run_leaves_no_cell_process_or_temp_folder(plugins, store_path, tmp_path):
    """kill -9 of a multi-cell `bench run` at (seeded) random points: cells end with it, their work folders go,
    and the store holds only whole, valid records."""
    import random
    import signal
    import subprocess
    import time

    import psutil

    rng = random.Random(0)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    cmd = [sys.executable, "-m", "glocal", "run", "--model", "testnet_ok", "--batch-size", "1,2,3", *FAST, "--json"]
    for delay in (rng.uniform(1.0, 6.0) for _ in range(3)):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"cells outlived their parent (killed after {delay:.1f} s)"
        deadline = time.monotonic() + 5
        while any(tmp.glob("glocal-cell-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        remove_stale_cell_dirs(tmp)  # what the next run does for a cell that had finished just before the kill
        assert not list(tmp.glob("glocal-cell-*"))
    for rec in ResultStore(store_path).records():
        validate_record(rec)
        assert rec["status"] == "ok"


def _class_folder(root: Path, n: int = 2) -> Path:
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (40, 40), (10 * i, 80, 160)).save(root / c / f"{i}.jpg")
    return root


def _bad_dataset(kind: str, root: Path) -> str:
    """A --dataset value for one kind of bad input (each is refused before any cell runs)."""
    from PIL import Image

    if kind == "empty":
        root.mkdir()
        return f"imagenet={root}"
    if kind == "no-classes":
        root.mkdir()
        (root / "x.txt").write_text("x")
        return f"imagenet={root}"
    if kind == "corrupt":
        _class_folder(root)
        (root / "a" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        return f"imagenet={root}"
    if kind == "truncated":
        _class_folder(root)
        data = (root / "a" / "0.jpg").read_bytes()
        (root / "a" / "0.jpg").write_bytes(data[: len(data) // 3])
        return f"imagenet={root}"
    if kind == "bomb":
        (root / "a").mkdir(parents=True)
        Image.new("1", (20_000, 20_000)).save(root / "a" / "0.png")  # 4e8 pixels in a tiny file
        return f"imagenet={root}"
    if kind == "labels":
        _class_folder(root)
        return f"imagenet={root},labels={root / 'missing.txt'}"
    if kind == "option":
        _class_folder(root)
        return f"imagenet={root},foo=bar"
    if kind == "manifest":
        root.mkdir()
        (root / "manifest.json").write_text("{not json")
        return f"dist={root}"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("empty", "has neither class sub-folders nor a labels file"),
    ("no-classes", "has neither class sub-folders nor a labels file"),
    ("corrupt", "cannot read the first item"),
    ("truncated", "cannot read the first item"),
    ("bomb", "DecompressionBombError"),
    ("labels", "missing.txt"),
    ("option", "--dataset imagenet has no option 'foo'"),
    ("manifest", "manifest"),
])
def test_bad_datasets_are_refused_before_measuring(tmp_path, store_path, kind, message):
    spec = _bad_dataset(kind, tmp_path / "set")
    line = one_line_error("--model", "gcvit_xxtiny", "--resolution", "64", "--dataset", spec)
    assert message in line
    assert not store_path.exists()


@pytest.mark.parametrize("kind, message", [
    ("nan", "holds NaN or infinite values"),
    ("inf", "holds NaN or infinite values"),
    ("int64", "is int64; the model expects floating point"),
    ("bool", "is bool; the model expects floating point"),
])
def test_garbage_checkpoints_are_refused(tmp_path, store_path, kind, message):
    import timm
    import torch
    from safetensors.torch import save_file

    sd = timm.create_model("gcvit_xxtiny").state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 2)
    sd[key] = {"nan": torch.full_like(sd[key], float("nan")), "inf": sd[key].clone().fill_(float("inf")),
               "int64": sd[key].long(), "bool": sd[key] > 0}[kind]
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    line = one_line_error("--model", "gcvit_xxtiny", "--weights", str(path))
    assert message in line and key in line
    assert not store_path.exists()


def test_a_checkpoint_is_checked_at_every_requested_resolution(tmp_path, store_path):
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("gcvit_xxtiny", img_size=64).state_dict()  # windows (and bias tables) follow the size
    path = tmp_path / "w64.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    line = one_line_error("--model", "gcvit_xxtiny", "--weights", str(path), "--resolution", "64,96")
    assert "does not match the model" in line
    assert not store_path.exists()


def test_oom_means_out_of_memory_only(plugins, store_path):
    res = runner.invoke(app, ["run", "--model", "testnet_sigkill", "--model", "testnet_cpu_oom", *FAST, "--json"])
    killed, cpu_oom = json.loads(res.stdout)
    assert killed["status"] == "error" and killed["error"].startswith("killed by SIGKILL")
    assert cpu_oom["status"] == "oom" and "can't allocate memory" in cpu_oom["error"]


def test_cuda_graphs_are_refused_without_cuda(store_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: --cuda-graphs is measured by the GPU campaign")
    assert "--cuda-graphs needs a CUDA device" in one_line_error("--model", "gcvit_xxtiny", "--cuda-graphs")
    assert not store_path.exists()


def test_noisy_latency_is_retried_and_marked(plugins, monkeypatch):
    """A latency pass whose IQR/median exceeds 10 % is run again (up to twice more); the least noisy pass is kept
    and the record says whether it stayed noisy."""
    from glocal.benchmarks import cell as cells
    from glocal.benchmarks import timing

    spreads = iter([0.4, 0.2, 0.3])
    real = timing.summarize

    def noisy(*args, **kwargs):
        stats = real(*args, **kwargs)
        stats.iqr_over_median = next(spreads)
        return stats

    monkeypatch.setattr(timing, "summarize", noisy)
    cells_, _ = plan(RunRequest(models=["testnet_ok"], threads=1, rule={"warmup_iters": 0, "warmup_s": 0,
                                                                       "min_iters": 2, "min_s": 0, "max_iters": 2,
                                                                       "max_s": 1}))
    rec = cells.run_cell(cells_[0])
    assert rec["latency"]["attempts"] == 3 and rec["latency"]["iqr_over_median"] == 0.2
    assert rec["latency"]["noisy"] is True
    validate_record(rec)


def test_compute_counts_fused_attention():
    """SDPA is counted through its math decomposition (the counter sees no FLOPs in the CPU flash kernel):
    QK^T and AV of a (1, 2, 64, 32) attention are 2 * 2*64*64*32 multiply-adds."""
    import torch

    from glocal.benchmarks.compute import count_macs

    class Attn(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    macs = count_macs(Attn(), torch.randn(1, 2, 64, 32))
    assert macs["gmacs"] == 2 * 2 * 64 * 64 * 32 / 1e9
