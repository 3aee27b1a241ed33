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


def _pair(img_size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The zoo's GC ViT (SDPA) and timm's own model with the same weights."""
    import timm

    torch.manual_seed(0)
    ours = resolve("gcvit_xxtiny")[1].build(img_size=img_size).eval()
    theirs = timm.create_model("gcvit_xxtiny", img_size=img_size).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("img_size,batch", [(64, 2), (96, 1)])
def test_sdpa_attention_computes_timms_function(img_size, batch):
    from glocal.zoo.models.gcvit import WindowAttentionGlobal, WindowAttentionGlobalSdpa

    ours, theirs = _pair(img_size)
    attns = [m for m in ours.modules() if isinstance(m, WindowAttentionGlobal)]
    assert attns and all(type(m) is WindowAttentionGlobalSdpa and m.fused_attn for m in attns)
    assert not any(type(m) is WindowAttentionGlobalSdpa for m in theirs.modules())
    x = torch.randn(batch, 3, img_size, img_size)  # batch 2: each image's global query stays with its windows
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs["attn_mask"].shape)
        return sdpa(*args, **kwargs)

    with torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention = counting
        try:
            out = ours(x)
        finally:
            torch.nn.functional.scaled_dot_product_attention = sdpa
        ref = theirs(x)
    assert len(calls) == len(attns)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_timms_fused_attention_switch_selects_the_manual_path():
    from timm.layers import set_fused_attn

    from glocal.zoo.models.gcvit import WindowAttentionGlobalSdpa

    set_fused_attn(False)
    try:
        model = resolve("gcvit_xxtiny")[1].build(img_size=64)
    finally:
        set_fused_attn(True)
    attns = [m for m in model.modules() if isinstance(m, WindowAttentionGlobalSdpa)]
    assert attns and not any(m.fused_attn for m in attns)
