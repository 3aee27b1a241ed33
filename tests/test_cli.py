"""`bench` end to end: runs in subprocess cells, records in the store, bad input, crash isolation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from glocal.benchmarks.cli import app
from glocal.benchmarks.results import ResultStore
from glocal.record import validate_record

FAST = ["--warmup-iters", "1", "--warmup-time", "0", "--min-iters", "3", "--min-time", "0"]
runner = CliRunner()



def bench(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_run_gcvit_records_everything(store_path):
    res = bench("run", "--model", "gcvit_xxtiny", "--resolution", "64", *FAST, "--json")
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.stdout)
    validate_record(rec)
    assert rec["status"] == "ok" and rec["weights"]["source"] == "random" and rec["metrics"] == {}
    assert rec["settings"]["resolution"] == 64 and rec["settings"]["input_shape"] == [1, 3, 64, 64]
    import timm

    at64 = sum(p.numel() for p in timm.create_model("gcvit_xxtiny", img_size=64).parameters())
    assert rec["compute"]["params"] == at64 < 11_995_428  # windows (and their bias tables) follow the size
    assert rec["compute"]["gmacs"] > 0
    assert rec["latency"]["n"] >= 3 and len(rec["latency"]["samples"]) == rec["latency"]["n"]
    assert rec["latency"]["timer"] == "perf_counter"
    assert rec["memory"]["weights"] >= at64 * 4 / 2**20  # parameters + buffers, fp32
    assert rec["environment"]["torch"] == torch.__version__
    assert rec["command"].startswith("bench run --model gcvit_xxtiny")
    assert ResultStore(store_path).records()[0]["id"] == rec["id"]


def test_table_output_says_what_was_not_measured():
    res = bench("run", "--model", "gcvit_xxtiny", "--resolution", "64", *FAST, "--no-store")
    assert res.exit_code == 0
    assert "gcvit_xxtiny" in res.stdout and "Not measured" in res.stdout
    assert "random weights" in res.stdout and "batch 64 not measured" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "gcvit_tinyy"], "unknown model 'gcvit_tinyy'; did you mean gcvit_tiny"),
    (["--model", "gcvit", "--resolution", "100"], "sizes must be positive multiples of 32"),
    (["--model", "gcvit", "--device", "tpu"], "unknown device"),
    (["--model", "gcvit", "--precision", "fp8"], "unknown precision"),
    (["--model", "gcvit", "--dataset", "imagenet=/no/such/folder"], "dataset folder not found: /no/such/folder"),
    (["--model", "gcvit", "--dataset", "nosuchset=/tmp"], "unknown dataset 'nosuchset'"),
    (["--model", "gcvit", "--weights", "/no/such.safetensors"], "checkpoint not found"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(args, message, store_path):
    res = runner.invoke(app, ["run", *args])
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in " ".join(res.stderr.split())
    assert not store_path.exists()


def test_mismatched_checkpoint_is_refused_before_running(tmp_path, store_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    res = runner.invoke(app, ["run", "--model", "gcvit_xxtiny", "--weights", str(path)])
    assert res.exit_code == 2 and "does not match gcvit" in res.stderr
    assert not store_path.exists()
    from manifests import load_manifest, random_checkpoint

    from glocal.zoo.models.gcvit import convert_official

    sd = convert_official(random_checkpoint(load_manifest("gcvit", "xtiny")))  # right family, wrong size
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    res = runner.invoke(app, ["run", "--model", "gcvit_xxtiny", "--weights", str(path)])
    assert res.exit_code == 2 and "does not match the model" in res.stderr and "unexpected" in res.stderr
    assert not store_path.exists()


def test_crash_and_oom_are_recorded_and_do_not_stop_other_cells(plugins, store_path):
    res = bench("run", "--model", "testnet_crash", "--model", "testnet_oom", "--model", "testnet_ok", *FAST, "--json")
    assert res.exit_code == 0, res.output
    crash, oom, ok = json.loads(res.stdout)
    assert crash["status"] == "error" and "exited with code" in crash["error"]
    assert oom["status"] == "oom" and "out of memory" in oom["error"]
    assert ok["status"] == "ok" and ok["compute"]["params"] == 8 * 27 + 8 + 8 * 10 + 10
    assert [r["status"] for r in ResultStore(store_path).records()] == ["error", "oom", "ok"]


def test_interrupted_run_keeps_finished_cells_in_the_store(plugins, store_path, monkeypatch):
    """Records reach the store cell by cell: a campaign killed half-way keeps what it measured."""
    from glocal.benchmarks import runner as runner_mod

    real, calls = runner_mod.run_cell_subprocess, []

    def first_then_interrupt(spec, on_event=None):
        calls.append(spec.model)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(spec, on_event)

    monkeypatch.setattr(runner_mod, "run_cell_subprocess", first_then_interrupt)
    res = bench("run", "--model", "testnet_ok", "--batch-size", "1,2", *FAST)
    assert res.exit_code == 130  # typer exits 130 on Ctrl-C
    assert calls == ["testnet_ok", "testnet_ok"]
    (rec,) = ResultStore(store_path).records()
    assert rec["status"] == "ok" and rec["settings"]["batch_size"] == 1


def _image_folder(root: Path, per_class: int = 3) -> Path:
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea()]
    for c, img in enumerate(sources[:2]):
        (root / f"n0000000{c}").mkdir(parents=True)
        for i in range(per_class):
            crop = img[i * 40: i * 40 + 200, i * 30: i * 30 + 220]
            Image.fromarray(crop).save(root / f"n0000000{c}" / f"img{i}.png")
    return root


def test_imagenet_accuracy_on_a_tiny_labelled_folder(plugins, tmp_path):
    from glocal import zoo
    from glocal.benchmarks.tasks.classification import eval_transform
    from glocal.datasets.imagenet import ImageFolderDataset

    folder = _image_folder(tmp_path / "val")
    model = zoo.create_model("testnet_ok", weights="random")
    ckpt = tmp_path / "testnet.safetensors"
    save_file(model.state_dict(), str(ckpt))
    res = bench("run", "--model", "testnet_ok", "--weights", str(ckpt), "--dataset", f"imagenet={folder}",
                "--workers", "0", *FAST, "--json")
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.stdout)
    assert rec["weights"]["source"] == "file" and rec["dataset"]["num_samples"] == 6
    _, variant = zoo.resolve("testnet_ok")
    ds = ImageFolderDataset(folder, eval_transform(variant, 32))
    with torch.inference_mode():
        logits = torch.stack([model(ds[i][0][None])[0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    assert rec["metrics"]["top1"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    assert rec["metrics"]["top5"] == pytest.approx(100.0 * top5)


def test_random_weights_never_score(plugins, tmp_path):
    folder = _image_folder(tmp_path / "val", per_class=1)
    res = bench("run", "--model", "testnet_ok", "--dataset", f"imagenet={folder}", *FAST, "--json")
    (rec,) = json.loads(res.stdout)
    assert rec["metrics"] == {} and any("random weights never produce" in n for n in rec["notes"])


def test_results_ls_show_export_round_trip(plugins, tmp_path, store_path):
    bench("run", "--model", "testnet_ok", *FAST, "--json")
    (rec,) = ResultStore(store_path).records()
    shown = json.loads(bench("results", "show", rec["id"][:8]).stdout)
    assert shown == rec
    out = tmp_path / "export.jsonl"
    assert bench("results", "export", "--format", "jsonl", "--out", str(out)).exit_code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [rec]
    csv_text = bench("results", "export", "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("id,timestamp,status,model")
    assert "testnet_ok" in bench("results", "ls").stdout
    missing = runner.invoke(app, ["results", "show", "ffffffff"])
    assert missing.exit_code == 2 and "no record" in missing.stderr


def test_python_dash_m_glocal_lists_models():
    out = subprocess.run([sys.executable, "-m", "glocal", "list", "models", "--json"], capture_output=True,
                         text=True, check=True).stdout
    families = {c["family"] for c in json.loads(out)}
    assert "gcvit" in families


def test_precisions_resolutions_and_layout_expand_into_cells(plugins):
    res = bench("run", "--model", "testnet_ok", "--precision", "fp32,bf16", "--resolution", "32,64",
                "--channels-last", *FAST, "--json")
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    cells = [(r["settings"]["precision"], r["settings"]["resolution"]) for r in recs]
    assert cells == [("fp32", 32), ("fp32", 64), ("bf16", 32), ("bf16", 64)]
    assert len({r["run_id"] for r in recs}) == 1
    for r in recs:
        assert r["status"] == "ok" and r["settings"]["channels_last"] is True
        if r["settings"]["precision"] == "bf16":
            check = r["precision_check"]
            assert check["reference"] == "fp32" and 0 < check["rel_error"] < 0.05
        else:
            assert r["precision_check"] is None
    # MACs scale with the pixel count: conv 3->8 (3x3) + linear, at batch 1
    macs = {r["settings"]["resolution"]: r["compute"]["gmacs"] * 1e9
            for r in recs if r["settings"]["precision"] == "fp32"}
    assert macs[32] == pytest.approx(32 * 32 * 8 * 27 + 80)
    assert macs[64] == pytest.approx(64 * 64 * 8 * 27 + 80)
