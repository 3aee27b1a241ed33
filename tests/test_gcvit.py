"""GC ViT (timm's model, glocal's card): whole-graph compile at a fixed size."""

from __future__ import annotations

import pytest
import torch
from compile_check import BACKENDS, assert_compiles_fullgraph

from glocal.zoo import resolve


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend):
    torch.manual_seed(0)
    model = resolve("gcvit_xxtiny")[1].build(img_size=64).eval()  # the smallest registered variant, 64 px
    assert_compiles_fullgraph(model, torch.rand(1, 3, 64, 64), backend)
