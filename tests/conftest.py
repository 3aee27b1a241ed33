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


PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch):
    """The test-only models and method of ``tests/plugins/glocal_test_models.py``, registered here and in every
    cell subprocess (through GLOCAL_PLUGINS and PYTHONPATH)."""
    monkeypatch.setenv("GLOCAL_PLUGINS", "glocal_test_models")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    sys.path.insert(0, str(PLUGINS))
    import glocal_test_models  # noqa: F401  (registers in this process too)

    yield
    sys.path.remove(str(PLUGINS))


@pytest.fixture(scope="module")
def one_thread():
    """Small CPU tensors run faster on one thread on a shared machine (a second one only spins); restored after.
    A module uses it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def eager_flex_one_thread():
    """FlexAttention eagerly (compiling takes ~30 s per shape on CPU; a slow test compiles on purpose) and one
    thread (small tensors: a second thread only spins on a shared machine). Used by the NA and DiNAT tests."""
    from glocal.zoo.layers import neighborhood_attention as na

    was, threads = na._FLEX["compile"], torch.get_num_threads()
    na.set_flex_compile(False)
    torch.set_num_threads(1)
    yield
    na.set_flex_compile(was)
    torch.set_num_threads(threads)
