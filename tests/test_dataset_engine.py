"""The dataset generator engine (glocal.datasets.engine): atomic writes, stale-file cleanup, manifests, seeds,
the worker pool."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from glocal.datasets.engine import (
    atomic_dir,
    atomic_file,
    item_id,
    item_seed,
    load_rgb,
    read_manifest,
    remove_stale,
    run_jobs,
    save_png,
    write_json,
)
from glocal.datasets.registry import DatasetError
from glocal.hashing import sha256_file


def _square(x: int) -> int:
    return x * x


def test_atomic_file_and_dir_leave_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"b": 1, "a": [2]}, indent=2, sort_keys=True, newline=True)
    assert target.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n' and len(list(tmp_path.iterdir())) == 1
    final = tmp_path / "items" / "x"
    final.mkdir(parents=True)
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final, "x") as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in (tmp_path / "items").iterdir()] == ["x"] and (final / "old.txt").is_file()
    with atomic_dir(final, "x") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_remove_stale_and_png_round_trip(tmp_path):
    (tmp_path / ".tmp-item-123").mkdir()
    (tmp_path / ".a.png.tmp-99").write_bytes(b"partial")
    (tmp_path / "keep.png").write_bytes(b"x")
    remove_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    img = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    save_png(img, tmp_path / "i.png", compress_level=1)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "i.png")), img)
    np.testing.assert_array_equal(load_rgb(tmp_path / "i.png"), img)
    assert load_rgb(tmp_path / "i.png", 4).shape == (4, 4, 3)


def test_manifest_ids_and_seeds(tmp_path):
    assert read_manifest(tmp_path / "manifest.json") is None
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps([1]))
    with pytest.raises(DatasetError, match="not a JSON object"):
        read_manifest(tmp_path / "manifest.json")
    data = b"abc" * 1000
    (tmp_path / "s.png").write_bytes(data)
    sha = sha256_file(tmp_path / "s.png", chunk=7)
    assert sha == hashlib.sha256(data).hexdigest()
    assert item_id(tmp_path / "my photo (1).png", sha) == f"my_photo_1_-{sha[:10]}"
    assert item_seed(0, sha) == int.from_bytes(hashlib.sha256(f"0:{sha}".encode()).digest()[:8], "little") & (2**63 - 1)
    assert item_seed(0, sha) != item_seed(1, sha)


def test_run_jobs_serial_and_pool_agree():
    assert sorted(run_jobs(_square, range(5), progress=False)) == [0, 1, 4, 9, 16]
    assert sorted(run_jobs(_square, range(5), workers=2, progress=False)) == [0, 1, 4, 9, 16]
    with pytest.raises(DatasetError, match="workers must be at least 1, got 0"):
        list(run_jobs(_square, range(3), workers=0))
