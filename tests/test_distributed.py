"""Sharded evaluation under torchrun: 2 gloo processes give exactly the single-process metrics, and an uneven
split loses and duplicates nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from glocal.benchmarks.distributed import Shard


@pytest.mark.parametrize("n, world", [(5, 2), (7, 3), (2, 4), (0, 2)])
def test_shards_cover_every_sample_once(n, world):
    parts = [list(Shard(r, world).indices(n)) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    rows = [(i, f"row{i}") for p in reversed(parts) for i in p]
    assert Shard().gather(rows) == [f"row{i}" for i in range(n)]
    with pytest.raises(RuntimeError, match="twice"):
        Shard().gather([(0, "a"), (0, "b")])


def _env(tmp_path):
    return {**os.environ, "GLOCAL_STORE": str(tmp_path / "s.sqlite"), "OMP_NUM_THREADS": "1"}


def _run(args, env, nproc=None):
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "glocal"] if nproc else [sys.executable, "-m", "glocal"]
    res = subprocess.run([*head, "run", *args, "--json", "--no-store"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (rec,) = json.loads(res.stdout)
    return rec


def _labelled_folder(root: Path) -> Path:
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for c, n in (("a", 3), ("b", 2)):  # 5 images: uneven over 2 ranks
        (root / c).mkdir(parents=True)
        for i in range(n):
            pixels = (torch.rand(32, 32, 3, generator=rng) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def test_torchrun_classification_equals_one_process(plugins, tmp_path):
    from glocal_test_models import TinyNet

    weights = tmp_path / "tiny.safetensors"
    save_file(TinyNet(mode="ok").state_dict(), str(weights))
    folder = _labelled_folder(tmp_path / "val")
    args = ["--model", "testnet_ok", "--weights", str(weights), "--dataset", f"imagenet={folder}",
            "--eval-batch-size", "2", "--workers", "0"]
    env = _env(tmp_path)
    single, sharded = _run([*args, "--eval-only"], env), _run(args, env, nproc=2)
    assert single["metrics"] == sharded["metrics"] and sharded["metrics"]["num_samples"] == 5
    assert any("sharded over 2 processes" in n for n in sharded["notes"])


def test_torchrun_restoration_equals_one_process(tmp_path):
    from glocal import zoo

    model = zoo.create_model("deanet_cr", weights="random", quiet=True)
    weights = tmp_path / "deanet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    args = ["--model", "deanet_cr", "--weights", str(weights), "--dataset", "builtin-haze,limit=3", "--workers", "0"]
    env = _env(tmp_path)
    single, sharded = _run([*args, "--eval-only"], env), _run(args, env, nproc=2)
    assert sharded["metrics"]["num_samples"] == 3
    assert single["metrics"] == sharded["metrics"]  # the same rows summed in the same order: exactly equal
