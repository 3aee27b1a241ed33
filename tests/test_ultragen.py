"""UltraGen on diffusers' Wan: each branch against a direct per-window formula, gate fusion, the K = 1 reduction
to dense attention, the official (DiffSynth) layout at full size (meta tensors) and a tiny round trip, processor
parameters in the state dict, pair counts and FLOP formulas, and one-line errors. Tiny configs, CPU."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from manifests import load_manifest

from glocal.zoo import CheckpointError, create_model, resolve
from glocal.zoo.models import ultragen as U
from glocal.zoo.weights import apply_weights, check_keys_and_shapes

pytest.importorskip("diffusers")

GRID = (2, 12, 12)  # T', H', W' tokens


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = U.build_ultragen(**U.WAN_TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial LoRAs and gates (they start as zero updates / 0.5)
        for name, p in model.named_parameters():
            if ".processor." in name and ("lora_B" in name or ".proj." in name):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _rope(model, t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's RoPE tables for a (t, h, w) token grid straight from the model's rope module: (1, S, 1, D)."""
    return model.rope(torch.empty(1, 1, t, 2 * h, 2 * w))


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotation (x: (B, S, H, D))."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
    out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
    return out


def _direct_windows(model, attn, x: torch.Tensor, rows, cols, loras=None, key_from_query=False) -> torch.Tensor:
    """Softmax attention computed window by window with explicit slicing (x: (B, T, H, W, C)); RoPE positions
    local to each window, as the released code applies them."""
    b, t, _, _, c = x.shape
    heads = attn.heads
    out = torch.zeros_like(x)
    y0 = 0
    for a in rows:
        x0 = 0
        for w in cols:
            tok = x[:, :, y0:y0 + a, x0:x0 + w].reshape(b, -1, c)
            q, k, v = attn.to_q(tok), (attn.to_q if key_from_query else attn.to_k)(tok), attn.to_v(tok)
            if loras is not None:
                q, k, v = q + loras[0](tok), k + loras[1](tok), v + loras[2](tok)
            q, k = attn.norm_q(q), attn.norm_k(k)
            q, k, v = (z.reshape(b, -1, heads, c // heads) for z in (q, k, v))
            cos, sin = _rope(model, t, a, w)
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
            p = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads), dim=-1)
            o = torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, a, w, c)
            out[:, :, y0:y0 + a, x0:x0 + w] = o
            x0 += w
        y0 += a
    return out


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """torchvision's Resize on the frame planes of (B, T, H, W, C), as the released code calls it."""
    b, t, h, w, c = x.shape
    planes = TF.resize(x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w), list(size), antialias=True)
    return planes.reshape(b, t, c, *size).permute(0, 1, 3, 4, 2)


def _pool(x: torch.Tensor, k: int) -> torch.Tensor:
    b, t, h, w, c = x.shape
    z = F.avg_pool2d(x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w), k)
    return z.reshape(b, t, c, *z.shape[-2:]).permute(0, 1, 3, 4, 2)


def _box3d(x: torch.Tensor) -> torch.Tensor:
    """The 3x3x3 box filter (zero padding) the refinement convs start as."""
    padded = F.pad(x.permute(0, 4, 1, 2, 3), (1, 1, 1, 1, 1, 1))
    return F.avg_pool3d(padded, 3, stride=1).permute(0, 2, 3, 4, 1)


def _inputs(seed: int = 0, grid=GRID, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    return (torch.randn(batch, 16, t, 2 * h, 2 * w, generator=g), torch.tensor([700.0] * batch),
            torch.randn(batch, 6, U.WAN_TINY["text_dim"], generator=g))


def _branch_args(tiny, index: int, grid=GRID):
    attn, proc = tiny.blocks[index].attn1, tiny.blocks[index].attn1.processor
    x = torch.randn(1, *grid, attn.to_q.in_features, generator=torch.Generator().manual_seed(index))
    return attn, proc, x, _rope(tiny, *grid)


# ---------------------------------------------------------------------------------------------- branches


@pytest.mark.parametrize("index", [3, 4])
def test_local_branch_equals_direct_windows(tiny, index):
    """Block 3: K = 5 windows per side, 12 -> 10 resized (released) and back; block 4: K = 4 windows of 3x3."""
    attn, proc, x, rope = _branch_args(tiny, index)
    k = 4 + index % 2
    assert proc.local_windows == k
    side = 10 if k == 5 else 12
    with torch.no_grad():
        got = proc.local_branch(attn, x, rope, GRID)
        want = _resize(_direct_windows(tiny, attn, _resize(x, (side, side)), [side // k] * k, [side // k] * k),
                       (12, 12))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_local_branch_split_option_uses_uneven_windows(tiny):
    """``indivisible=split`` (paper): 12 tokens in 5 windows -> sides 3, 3, 2, 2, 2, no resampling."""
    attn, proc, x, rope = _branch_args(tiny, 3)
    split = copy.copy(proc)
    split.options = U.parse_options(indivisible="split")
    with torch.no_grad():
        got = split.local_branch(attn, x, rope, GRID)
        want = _direct_windows(tiny, attn, x, [3, 3, 2, 2, 2], [3, 3, 2, 2, 2])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("global_key", ["query", "key"])
def test_global_branch_equals_pool_attend_upsample(tiny, global_key):
    """Compression is 4x4 average pooling at init; full attention with LoRA_g (key from the query projection as
    released, or from the key projection); bilinear upsampling; the 3x3x3 box refinement at init."""
    attn, proc, x, rope = _branch_args(tiny, 4)
    proc = copy.copy(proc)
    proc.options = U.parse_options(global_key=global_key)
    loras = (proc.global_q_lora, proc.global_k_lora, proc.global_v_lora)
    with torch.no_grad():
        got = proc.global_branch(attn, x, rope, GRID)
        z = _pool(x, 4)
        att = _direct_windows(tiny, attn, z, [3], [3], loras, key_from_query=global_key == "query")
        want = _box3d(_resize(att, (12, 12)))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("index", [3, 4])
def test_hierarchical_branch_equals_pool_windows_resize(tiny, index):
    """2x2 average pooling at init -> (2 + i % 2)^2 windows with LoRA_h -> resize to the grid -> 3x3x3 box."""
    attn, proc, x, rope = _branch_args(tiny, index)
    kh = 2 + index % 2
    loras = (proc.hier_q_lora, proc.hier_k_lora, proc.hier_v_lora)
    with torch.no_grad():
        got = proc.hier_branch(attn, x, rope, GRID)
        z = _pool(x, 2)  # 6 x 6, divisible by 2 and 3
        want = _box3d(_resize(_direct_windows(tiny, attn, z, [6 // kh] * kh, [6 // kh] * kh, loras), (12, 12)))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_global_key_option_matters(tiny):
    attn, proc, x, rope = _branch_args(tiny, 4)
    paper = copy.copy(proc)
    paper.options = U.parse_options(global_key="key")
    with torch.no_grad():
        assert (proc.global_branch(attn, x, rope, GRID) - paper.global_branch(attn, x, rope, GRID)).abs().max() > 1e-3


def test_gates_and_fusion_equal_direct_formula(tiny):
    """alpha = sigmoid(W_p silu(W_2 silu(W_1 sincos_256(t)))) per channel; released fusion
    a_g (a_h L + (1 - a_h) H) + (1 - a_g) G, then the output projection; the paper option swaps the sides."""
    attn, proc, x, rope = _branch_args(tiny, 4)
    t = torch.tensor([700.0, 35.0])
    freqs = 10000 ** (-torch.arange(128, dtype=torch.float64) / 128)
    sincos = torch.cat([torch.cos(t[:, None].double() * freqs), torch.sin(t[:, None].double() * freqs)], 1).float()

    def gate(g):
        hidden = g.embedder.linear_2(F.silu(g.embedder.linear_1(sincos)))
        return torch.sigmoid(g.proj(F.silu(hidden)))

    with torch.no_grad():
        a_g, a_h = proc.gates(t)
        torch.testing.assert_close(a_g[:, 0], gate(proc.gate_global), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a_h[:, 0], gate(proc.gate_hier), atol=1e-6, rtol=1e-5)
        assert a_g.shape == (2, 1, attn.to_q.in_features) and a_g.std() > 0.01
        proc.context.grid, proc.context.timestep = GRID, t[:1]
        n = math.prod(GRID)
        local, glob, hier = (f(attn, x, rope, GRID).reshape(1, n, -1) for f in (
            proc.local_branch, proc.global_branch, proc.hier_branch))
        got = proc(attn, x.reshape(1, n, -1), rotary_emb=rope)
        ag, ah = a_g[:1], a_h[:1]
        want = attn.to_out[0](ag * (ah * local + (1 - ah) * hier) + (1 - ag) * glob)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        paper = copy.copy(proc)
        paper.options = U.parse_options(gate_side="global")
        want = attn.to_out[0]((1 - ag) * ((1 - ah) * local + ah * hier) + ag * glob)
        torch.testing.assert_close(paper(attn, x.reshape(1, n, -1), rotary_emb=rope), want, atol=1e-5, rtol=1e-4)


def test_one_window_and_local_gates_equal_dense_wan():
    """With K = 1 and both gates forced to the local side, every UltraGen layer is Wan's dense self-attention: the
    whole model then equals plain WanTransformer3DModel with the same base weights."""
    torch.manual_seed(0)
    dense = U.build_ultragen(**U.WAN_TINY, attention="dense").eval()
    ultra = U.build_ultragen(**U.WAN_TINY, dense_layers="none").eval()
    missing, unexpected = ultra.load_state_dict(dense.state_dict(), strict=False)
    assert not unexpected and all(".processor." in k for k in missing) and missing
    with torch.no_grad():
        for block in ultra.blocks:
            proc = block.attn1.processor
            proc.local_windows = 1
            for gate in (proc.gate_global, proc.gate_hier):
                gate.proj.bias.fill_(40.0)  # sigmoid -> 1: all weight on the local branch
        x, t, ctx = _inputs(3)
        want, got = dense(x, t, ctx, return_dict=False)[0], ultra(x, t, ctx, return_dict=False)[0]
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        ultra.blocks[2].attn1.processor.local_windows = 2  # and the check can fail
        assert (ultra(x, t, ctx, return_dict=False)[0] - want).abs().max() > 1e-3


def test_model_forward_sets_grid_and_processors_only_on_attn1(tiny):
    x, t, ctx = _inputs(1, grid=(3, 10, 14), batch=2)
    with torch.no_grad():
        out = tiny(x, t, ctx, return_dict=False)[0]
    assert out.shape == x.shape and torch.isfinite(out).all()
    procs = tiny.attn_processors
    kinds = {name: type(p).__name__ for name, p in procs.items()}
    assert [n for n, k in kinds.items() if k == "UltraGenAttnProcessor"] == ["blocks.3.attn1.processor",
                                                                            "blocks.4.attn1.processor"]
    assert all(k == "WanAttnProcessor" for n, k in kinds.items() if ".attn2." in n or n.startswith(("blocks.0",)))
    assert procs["blocks.3.attn1.processor"].context.grid == (3, 10, 14)
    with torch.no_grad():  # batch 2 equals two batch-1 passes (the released code runs batch 1 only)
        one = torch.cat([tiny(x[i:i + 1], t[i:i + 1], ctx[i:i + 1], return_dict=False)[0] for i in range(2)])
    torch.testing.assert_close(out, one, atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- state dict


def test_processor_parameters_are_in_and_load_from_the_state_dict(tiny, tmp_path):
    sd = tiny.state_dict()
    proc_keys = [k for k in sd if ".attn1.processor." in k]
    per_block = {re.match(r"blocks\.(\d+)\.", k).group(1) for k in proc_keys}
    assert per_block == {"3", "4"} and len(proc_keys) == 2 * 44
    assert not any(".attn2.processor." in k for k in sd)
    torch.save(sd, tmp_path / "tiny.pt")  # a bare diffusers state dict: the card adds the wrapper's prefix
    torch.manual_seed(123)
    fresh = create_model("ultragen_tiny", weights=tmp_path / "tiny.pt")
    assert fresh.glocal_weights.layout == "diffusers"
    for k in proc_keys:
        assert torch.equal(fresh.state_dict()[f"transformer.{k}"], sd[k])
    x, t, ctx = _inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, t, ctx), tiny(x, t, ctx, return_dict=False)[0])


def test_full_size_official_layout_converts_to_the_model_exactly():
    """The 1,881-key released layout (manifest) maps name for name onto the 1.3B model (built on meta) with equal
    shapes; the parameter count is the official one."""
    manifest = load_manifest("ultragen", "ultragen_1080p")
    assert manifest["num_state_dict_entries"] == 1881
    official = {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}
    card, variant = resolve("ultragen_1080p")
    with torch.device("meta"):
        model = variant.build()
    converted = card.convert_state_dict(official, card.detect_layout(official))
    check_keys_and_shapes(model.state_dict(), converted)
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"] == variant.params
    assert list(U.to_official(converted)) == list(official)
    assert card.detect_layout(official) == "diffsynth" and card.detect_layout(converted) == "native"
    assert card.detect_layout(U.convert_official(official)) == "diffusers"
    branch = [k for k in converted if ".processor." in k]
    assert len(branch) == manifest["ultragen_additions"]["num_keys"]
    assert {int(k.split(".")[2]) for k in branch} == set(manifest["ultragen_additions"]["blocks"])


def _tiny_official(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the released layout at the tiny width: the manifest's keys of blocks 0-4 (0-2 dense,
    3-4 UltraGen, as in the released code) with 1536 -> 32 (6x too), 8960 -> 48, 4096 -> 40, LoRA rank 64 -> 4."""
    manifest = load_manifest("ultragen", "ultragen_1080p")
    sizes = {1536: 32, 8960: 48, 4096: 40, 6 * 1536: 6 * 32}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in manifest["state_dict"].items():
        m = re.match(r"blocks\.(\d+)\.", key)
        if m and int(m.group(1)) >= U.WAN_TINY["num_layers"]:
            continue
        shape = [sizes.get(s, s) for s in shape]
        if ".lora_" in key:
            shape = [4 if s == 64 else s for s in shape]
        out[key] = torch.randn(shape, generator=g) * 0.05
    return out


def test_tiny_official_layout_round_trips_through_the_model():
    official = _tiny_official()
    card, variant = resolve("ultragen_tiny")
    model = variant.build().eval()
    info = apply_weights(card, variant, model, official, _info())
    assert info.layout == "diffsynth"
    back = U.to_official(model.state_dict())
    assert set(back) == set(official) and len(back) == len(official)
    for k, v in official.items():
        assert torch.equal(back[k], v), k
    x, t, ctx = _inputs(2)
    with torch.no_grad():
        assert torch.isfinite(model(x, t, ctx)).all()


def _info():
    from glocal.zoo.weights import WeightsInfo

    return WeightsInfo("file", "ultragen_tiny_official.ckpt", None, None)


@pytest.mark.parametrize("damage, message", [
    (lambda sd: sd.pop("blocks.3.self_attn.k_lora_2.lora_B.bias"), "1 missing"),
    (lambda sd: sd.__setitem__("blocks.3.self_attn.extra.weight", torch.zeros(1)), "unexpected key"),
    (lambda sd: sd.__setitem__("blocks.4.self_attn.downsample_conv.weight", torch.zeros(32, 1, 2, 2)),
     "1 shape mismatches"),
    (lambda sd: sd.__setitem__("blocks.1.self_attn.q_lora_1.lora_A.weight", torch.zeros(4, 32)), "1 unexpected"),
])
def test_converter_refuses_mismatched_checkpoints_in_one_line(damage, message):
    official = _tiny_official()
    damage(official)
    card, variant = resolve("ultragen_tiny")
    model = variant.build()
    with pytest.raises(CheckpointError) as err:
        apply_weights(card, variant, model, official, _info())
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- cost


def _direct_pairs(grid, rows, cols) -> int:
    """Pairs of tokens sharing a window, counted on the N x N matrix of window ids."""
    t = grid[0]
    ids = torch.cat([torch.full((a,), i) for i, a in enumerate(rows)])[:, None] * 100 + torch.cat(
        [torch.full((b,), j) for j, b in enumerate(cols)])[None, :]
    ids = ids[None].expand(t, -1, -1).reshape(-1)
    return int((ids[:, None] == ids[None, :]).sum())


@pytest.mark.parametrize("grid, index, indivisible, local, hier", [
    ((2, 12, 12), 3, "resize", ([2] * 5, [2] * 5), ([2] * 3, [2] * 3)),  # 12 -> 10 for K = 5; 6 in 3 windows
    ((2, 12, 12), 4, "resize", ([3] * 4, [3] * 4), ([3] * 2, [3] * 2)),
    ((3, 14, 9), 3, "split", ([3, 3, 3, 3, 2], [2, 2, 2, 2, 1]), ([3, 2, 2], [2, 1, 1])),
    ((3, 14, 9), 4, "resize", ([3] * 4, [2] * 4), ([3] * 2, [2] * 2)),  # 14 -> 12, 9 -> 8, 7 -> 6 (ties go down)
])
def test_pair_counts_equal_a_direct_count(grid, index, indivisible, local, hier):
    opts = U.parse_options(dense_layers="none", indivisible=indivisible)
    geo = U.layer_geometry(grid, index, opts, 30)
    t, h, w = grid
    assert (list(geo.local_rows), list(geo.local_cols), list(geo.hier_rows), list(geo.hier_cols)) == (*local, *hier)
    direct = _direct_pairs(grid, *local) + _direct_pairs(grid, *hier) + _direct_pairs(grid, [h // 4], [w // 4])
    assert U.attention_pairs(grid, geo) == direct
    dense = U.layer_geometry(grid, 0, U.parse_options(), 30)
    assert dense.dense and U.attention_pairs(grid, dense) == (t * h * w) ** 2


def test_eq12_formula_and_pair_fraction():
    """On a grid divisible by 16 with K = 4 layers, the exact count equals the paper's eq. 12, dense layers counted
    at 4 d N^2; 12.2x fewer FLOPs than dense per three-branch layer; the 1080P released model's fraction."""
    grid, d = (3, 16, 16), 32
    n = math.prod(grid)
    opts = U.parse_options(dense_layers="1,3")  # layers 0 and 2 (K = 4) run the branches
    exact = U.exact_attention_flops(grid, d, 4, opts)
    assert exact == U.eq12_attention_flops(n, d, 4, [1, 3], k=4)
    assert U.eq12_attention_flops(n, d, 1, [], 4) == pytest.approx(4 * d * n * n / 12.19, rel=1e-3)
    assert U.pair_fraction(grid, 4, opts) == pytest.approx(exact / (4 * 4 * d * n * n))
    released = U.pair_fraction(U.wan_latent_grid(81, 1088, 1920), 30, U.parse_options())
    assert 0.2 < released < 0.2 + 0.8 * 0.1  # 6 dense layers of 30 dominate


# ---------------------------------------------------------------------------------------------- errors


def test_video_geometry_and_bad_frame_counts():
    assert U.wan_latent_grid(81, 1088, 1920) == (21, 68, 120)
    assert U.wan_latent_grid(29, 2176, 3840) == (8, 136, 240)
    with pytest.raises(U.VideoShapeError, match=r"^80 frames cannot be mapped by the Wan VAE .*4k\+1"):
        U.wan_latent_grid(80, 480, 832)
    with pytest.raises(U.VideoShapeError, match="multiples of 16"):
        U.wan_latent_grid(81, 481, 832)


@pytest.mark.parametrize("options, message", [
    ({"windows": 3}, "unknown UltraGen option 'windows'"),
    ({"gate_side": "middle"}, "gate_side='middle': expected one of local, global"),
    ({"dense_layers": "first"}, "dense_layers='first'"),
])
def test_unknown_options_get_one_line(options, message):
    with pytest.raises(U.UltraGenOptionError) as err:
        create_model("ultragen_tiny", weights="random", **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lists_without_diffusers_and_building_names_the_extra(monkeypatch):
    import sys

    from glocal import zoo

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    assert "ultragen_tiny" in zoo.list_models() and "ultragen_1080p" in zoo.list_models()
    with pytest.raises(ImportError, match=r"^ultragen needs diffusers: pip install 'glocal\[generation\]'"):
        create_model("ultragen_tiny", weights="random")


# ---------------------------------------------------------------------------------------------- generation task


def test_video_wrapper_configures_sizes_attention_and_workload():
    model = create_model("ultragen_tiny", weights="random").eval()
    assert model.configure(480, frames=5) == (2, 30, 52)
    assert U.video_size(1080) == (1088, 1920) and U.video_size(2160) == (2176, 3840) and U.video_size(64) == (64, 64)
    model.configure(64, attention="ultragen", frames=5)
    inputs = model.make_inputs(batch=1, seed=3)
    assert inputs["hidden_states"].shape == (1, 16, 2, 8, 8) and inputs["encoder_hidden_states"].shape[1] == 512
    with torch.no_grad():
        ultra = model(**inputs)
        work = model.generation_workload()
        model.configure(64, attention="dense-sdpa", frames=5)
        dense = model(**inputs)
    assert ultra.shape == dense.shape == inputs["hidden_states"].shape and (ultra - dense).abs().max() > 1e-4
    assert not any(".processor." in k for k in model.state_dict())  # Wan's own processor everywhere
    dense_work = model.generation_workload()
    n, d, layers = 2 * 4 * 4, 32, 5
    assert work["tokens"]["video"] == dense_work["tokens"]["video"] == n and dense_work["pair_fraction"] == 1.0
    assert dense_work["attention_gmacs"] == pytest.approx(2 * d * n * n * layers / 1e9)
    grid = (2, 4, 4)
    assert work["pair_fraction"] == pytest.approx(U.pair_fraction(grid, layers, U.parse_options()))
    assert work["attention_gmacs"] == pytest.approx(U.exact_attention_flops(grid, d, layers, U.parse_options()) / 2e9)
    model.configure(64, attention="ultragen", frames=5)
    assert sum(".processor." in k for k in model.state_dict()) == 2 * 44
    with pytest.raises(U.VideoShapeError, match="4k\\+1"):
        model.configure(64, frames=8)
    with pytest.raises(U.VideoShapeError, match="multiple of 16"):
        model.configure(100)


def test_generation_task_refuses_bad_frames_and_sizes_up_front():
    from glocal.benchmarks.tasks import TaskError, get_task
    from glocal.benchmarks.tasks.generation import named_resolutions

    task = get_task("generation")
    card, variant = resolve("ultragen_tiny")
    assert task.check_options(card, variant, {"frames": "81"})["attention"] == "ultragen"
    assert task.compare(card, variant, "dense") == [("ultragen_tiny", {"attention": "dense-sdpa"})]
    with pytest.raises(TaskError, match="^ultragen_tiny: 80 frames cannot be mapped by the Wan VAE"):
        task.check_options(card, variant, {"frames": "80"})
    with pytest.raises(TaskError, match="ultragen_tiny"):
        task.check_resolution(card, variant, 1000)
    task.check_resolution(card, variant, 1080)
    assert named_resolutions("480p, 720p,1080P,4k,256") == "480,720,1080,2160,256"
