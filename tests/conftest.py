"""Shared fixtures: every test writes results to its own temporary store, never the user's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/manifests.py and friends
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("store") / "results.sqlite"
    monkeypatch.setenv("GLOCAL_STORE", str(path))
    return path


@pytest.fixture
def store_path(_isolated_store: Path) -> Path:
    return _isolated_store
