"""RGT: all six official layouts, the fixed buffers against independent formulas, L-SA and RG-SA against
dense references, run-time masks, padding, and strict loading of BasicSR-style checkpoints."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint
from timm.models.swin_transformer import window_partition, window_reverse

from glocal.zoo import CheckpointError, create_model, get_card, resolve
from glocal.zoo.models.rgt import (
    DIV2K_RGB_MEAN,
    L_SA,
    RG_SA,
    RGT,
    min_input_size,
    recursion_steps,
    shifted_window_masks,
)

torch.set_num_threads(1)
VARIANTS = ("rgt_s_x2", "rgt_s_x3", "rgt_s_x4", "rgt_x2", "rgt_x3", "rgt_x4")


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# --- layouts, buffers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_layout_matches_manifest(name: str) -> None:
    manifest = load_manifest("rgt", name)
    model = resolve(name)[1].build()
    assert_matches_manifest(model, manifest)
    assert list(model.state_dict()) == list(manifest["state_dict"])
    buffers = [k for k, _ in model.named_buffers()]
    assert buffers == manifest["buffers"]  # persistent buffers, in order; the mean is not one of them
    assert torch.equal(model.mean, torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1))


def _independent_rpe_table(h_sp: int, w_sp: int) -> np.ndarray:
    return np.array(list(itertools.product(range(1 - h_sp, h_sp), range(1 - w_sp, w_sp))), dtype=np.float32)


def _independent_rp_index(h_sp: int, w_sp: int) -> np.ndarray:
    ys, xs = np.divmod(np.arange(h_sp * w_sp), w_sp)  # raster order inside a window
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    table = {tuple(r): i for i, r in enumerate(_independent_rpe_table(h_sp, w_sp).astype(int).tolist())}
    return np.vectorize(lambda a, b: table[(a, b)])(dy, dx)


def _independent_mask(h: int, w: int, win: tuple[int, int], shift: tuple[int, int]) -> np.ndarray:
    """Swin rule: after rolling by -shift, tokens of one window attend only within their region."""
    def region(coord: np.ndarray, size: int, win_len: int, shift_len: int) -> np.ndarray:
        return np.where(coord < size - win_len, 0, np.where(coord < size - shift_len, 1, 2))

    ys, xs = np.mgrid[0:h, 0:w]
    label = 3 * region(ys, h, win[0], shift[0]) + region(xs, w, win[1], shift[1])
    out = []
    for wy in range(h // win[0]):
        for wx in range(w // win[1]):
            tok = label[wy * win[0]:(wy + 1) * win[0], wx * win[1]:(wx + 1) * win[1]].reshape(-1)
            out.append(np.where(tok[:, None] == tok[None, :], 0.0, -100.0))
    return np.stack(out).astype(np.float32)


def test_buffers_equal_independent_formulas() -> None:
    model = create_model("rgt_s_x2", weights="random")
    sd = model.state_dict()
    table = {0: _independent_rpe_table(8, 32), 1: _independent_rpe_table(32, 8)}
    index = {0: _independent_rp_index(8, 32), 1: _independent_rp_index(32, 8)}
    masks = (_independent_mask(64, 64, (8, 32), (4, 16)), _independent_mask(64, 64, (32, 8), (16, 4)))
    counts = {"rpe": 0, "mask": 0}
    for key, value in sd.items():
        if key.endswith("rpe_biases"):
            branch = int(key.split(".")[-2])
            assert value.dtype == torch.float32 and np.array_equal(value.numpy(), table[branch]), key
            counts["rpe"] += 1
        elif key.endswith("relative_position_index"):
            branch = int(key.split(".")[-2])
            assert value.dtype == torch.int64 and np.array_equal(value.numpy(), index[branch]), key
        elif "attn_mask_" in key:
            assert value.shape == (16, 256, 256) and np.array_equal(value.numpy(), masks[int(key[-1])]), key
            counts["mask"] += 1
    assert counts == {"rpe": 2 * 18, "mask": 2 * 9}  # 18 L-SA blocks, 9 of them shifted (RGT-S)
    # a padded 64x32 map (not stored) uses the same rule
    runtime = shifted_window_masks(64, 32, (8, 32), (4, 16))
    for got, (win, shift) in zip(runtime, [((8, 32), (4, 16)), ((32, 8), (16, 4))], strict=True):
        assert np.array_equal(got.numpy(), _independent_mask(64, 32, win, shift))


# --- window partition -----------------------------------------------------------------------------------

@pytest.mark.parametrize("win", [(8, 32), (32, 8)])
def test_window_partition_order_and_round_trip(win: tuple[int, int]) -> None:
    """timm's partition (used by L-SA) has the official order: windows raster, tokens raster inside a window."""
    x = torch.randn(2, 5, 64, 32)
    windows = window_partition(x.permute(0, 2, 3, 1), win).reshape(-1, win[0] * win[1], 5)
    ref = [x[b, :, i:i + win[0], j:j + win[1]].reshape(5, -1).T
           for b in range(2) for i in range(0, 64, win[0]) for j in range(0, 32, win[1])]
    assert torch.equal(windows, torch.stack(ref))
    assert torch.equal(window_reverse(windows, win, 64, 32), x.permute(0, 2, 3, 1))


# --- L-SA against a dense reference ------------------------------------------------------------------------

def _dense_branch(q, k, v, heads, scale, pos_mlp, win, shift, hp, wp):
    """Attention over the whole padded map with a block mask: rectangle windows offset by ``shift``.

    In original coordinates a shifted window partition is: rows [0, s), then [s, s + win), ...; the bias of a
    pair is the position MLP evaluated at its (dy, dx).
    """
    ys, xs = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    gy = torch.where(ys < shift[0], -1, (ys - shift[0]) // win[0])
    gx = torch.where(xs < shift[1], -1, (xs - shift[1]) // win[1])
    same = (gy[:, None] == gy[None, :]) & (gx[:, None] == gx[None, :])
    dys = torch.arange(1 - hp, hp)
    dxs = torch.arange(1 - wp, wp)
    grid = torch.stack(torch.meshgrid(dys, dxs, indexing="ij"), -1).reshape(-1, 2).float()
    bias_table = pos_mlp(grid)  # [(2hp-1)(2wp-1), heads]
    rel = (ys[:, None] - ys[None, :] + hp - 1) * (2 * wp - 1) + (xs[:, None] - xs[None, :] + wp - 1)
    bias = bias_table[rel].permute(2, 0, 1)  # heads, L, L
    n, c = q.shape
    split = lambda t: t.view(n, heads, c // heads).transpose(0, 1)  # noqa: E731
    logits = split(q) @ split(k).transpose(-1, -2) * scale + bias
    logits = logits.masked_fill(~same, float("-inf"))
    return (logits.softmax(-1) @ split(v)).transpose(0, 1).reshape(n, c)


def _dense_lsa(m: L_SA, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    qkv = m.qkv(x[0]).view(h, w, 3, c)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    qkv = F.pad(qkv, (0, 0, 0, 0, 0, wp - w, 0, hp - h)).view(hp * wp, 3, c)  # zero tokens take part
    outs = []
    for branch, sl in enumerate((slice(0, c // 2), slice(c // 2, c))):
        a = m.attns[branch]
        win = (a.h_sp, a.w_sp)
        shift = (win[0] // 2, win[1] // 2) if m.shifted else (0, 0)
        o = _dense_branch(qkv[:, 0, sl], qkv[:, 1, sl], qkv[:, 2, sl], a.num_heads, a.scale, a.pos, win, shift, hp, wp)
        outs.append(o.view(hp, wp, -1)[:h, :w].reshape(h * w, -1))
    v = qkv.view(hp, wp, 3, c)[:h, :w, 2].permute(2, 0, 1).unsqueeze(0)
    lcm = m.get_v(v)[0].flatten(1).T
    return m.proj(torch.cat(outs, -1) + lcm).unsqueeze(0)


@pytest.mark.parametrize("rs_id,idx,h,w,reso", [
    (0, 0, 20, 40, 64),  # plain windows, padded 32x64
    (0, 2, 20, 40, 64),  # shifted, masks computed at run time for 32x64
    (1, 4, 32, 32, 32),  # shifted, the stored masks (built for 32x32) are used
])
def test_lsa_matches_dense_reference(rs_id: int, idx: int, h: int, w: int, reso: int) -> None:
    torch.manual_seed(5)
    m = L_SA(180, 6, split_size=(8, 32), shift_size=(4, 16), qkv_bias=True, idx=idx, reso=reso, rs_id=rs_id).eval()
    _randomize(m, seed=6, scale=0.3)
    assert m.shifted == (idx != 0)
    x = torch.randn(1, h * w, 180)
    with torch.no_grad():
        torch.testing.assert_close(m(x, h, w), _dense_lsa(m, x, h, w), atol=2e-4, rtol=1e-4)


# --- RG-SA against a reference -----------------------------------------------------------------------------

def _reference_rgsa(m: RG_SA, x: torch.Tensor, h: int, w: int, steps: int) -> torch.Tensor:
    b, n, c = x.shape
    heads = m.num_heads
    r = x.transpose(1, 2).reshape(b, c, h, w)
    for _ in range(steps):
        r = F.conv2d(r, m.reduction1.weight, m.reduction1.bias, stride=4, groups=c)
    rh, rw = r.shape[-2:]
    r = F.conv2d(F.conv2d(r, m.dwconv.weight, m.dwconv.bias, padding=1, groups=c), m.conv.weight, m.conv.bias)
    r = F.gelu(F.layer_norm(r.flatten(2).transpose(1, 2), (m.cr,), m.norm_act[0].weight, m.norm_act[0].bias))
    q, k, v = m.q(x), m.k(r), m.v(r)
    v = v + F.conv2d(v.transpose(1, 2).reshape(b, c, rh, rw), m.cpe.weight, m.cpe.bias, padding=1,
                     groups=c).flatten(2).transpose(1, 2)
    outs = []
    dq, dv = m.cr // heads, c // heads
    for i in range(heads):
        att = (q[..., i * dq:(i + 1) * dq] @ k[..., i * dq:(i + 1) * dq].transpose(1, 2)) / math.sqrt(dv * 0.5)
        outs.append(att.softmax(-1) @ v[..., i * dv:(i + 1) * dv])
    return m.proj(torch.cat(outs, -1))


@pytest.mark.parametrize("training,h,w,steps", [(False, 37, 29, 2), (True, 37, 29, 1), (False, 40, 16, 2)])
def test_rgsa_matches_reference(training: bool, h: int, w: int, steps: int) -> None:
    torch.manual_seed(7)
    m = RG_SA(180, num_heads=6, qkv_bias=True, c_ratio=0.5).train(training)
    _randomize(m, seed=8, scale=0.2)
    assert recursion_steps(h, w, training) == steps
    x = torch.randn(2, h * w, 180)
    with torch.no_grad():
        torch.testing.assert_close(m(x, h, w), _reference_rgsa(m, x, h, w, steps), atol=1e-4, rtol=1e-4)


def test_recursion_steps_and_minimum_sizes() -> None:
    assert [recursion_steps(s, 16) for s in (16, 255, 256, 1023, 1024, 4096)] == [2, 2, 2, 2, 3, 4]
    assert [recursion_steps(s, 8, training=True) for s in (8, 15, 16, 63, 64, 256)] == [0, 0, 1, 1, 2, 3]
    assert min_input_size(37, 29) == (37, 29)  # the official network runs it as is
    assert min_input_size(15, 15) == (16, 16)
    assert min_input_size(20, 2000) == (64, 2000)  # T = 3 from the long side needs a short side of 64
    assert min_input_size(3, 40, training=True) == (4, 40)


# --- whole model ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_rgt() -> RGT:
    """Real widths and windows, two groups of two blocks (group 1 block 0 is a shifted L-SA)."""
    torch.manual_seed(9)
    model = RGT(upscale=2, img_size=64, embed_dim=180, depth=(2, 2), num_heads=(6, 6), mlp_ratio=2.0,
                split_size=(8, 32), c_ratio=0.5).eval()
    _randomize(model, seed=10, scale=0.05)
    return model


def test_stored_masks_used_only_at_build_size(small_rgt: RGT) -> None:
    lsa = small_rgt.layers[1].blocks[0].attn
    assert lsa.shifted and lsa.attn_mask_0.shape == (16, 256, 256)
    x64, x_odd = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        before = small_rgt(x64), small_rgt(x_odd)
        saved = lsa.attn_mask_0.clone(), lsa.attn_mask_1.clone()
        try:
            lsa.attn_mask_0.zero_()
            lsa.attn_mask_1.zero_()
            after = small_rgt(x64), small_rgt(x_odd)
        finally:
            lsa.attn_mask_0.copy_(saved[0])
            lsa.attn_mask_1.copy_(saved[1])
    assert not torch.allclose(before[0], after[0])  # the 64x64 map reads the stored buffers
    assert torch.equal(before[1], after[1])  # other sizes compute their own masks; buffers untouched


def test_padding_only_where_official_cannot_run(small_rgt: RGT) -> None:
    x = torch.rand(1, 3, 37, 29)
    tiny = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(small_rgt(x), small_rgt.forward_body(x))  # no padding at all
        y = small_rgt(tiny)
        ref = small_rgt.forward_body(F.pad(tiny, (0, 9, 0, 11), mode="replicate"))[..., :10, :14]
    assert y.shape == (1, 3, 10, 14)
    torch.testing.assert_close(y, ref)


def test_mean_shift_and_img_range() -> None:
    model = RGT(upscale=3, depth=(2,), num_heads=(6,), embed_dim=180, mlp_ratio=2.0, split_size=(8, 32),
                img_range=255.0).eval()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.fill_(51.0)  # 51 / img_range = 0.2
        y = model(torch.rand(2, 3, 16, 17))
    expected = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) + 0.2
    assert y.shape == (2, 3, 48, 51)
    torch.testing.assert_close(y, expected.expand_as(y))


def test_basicsr_checkpoint_loads_strictly_and_runs(tmp_path) -> None:
    path = tmp_path / "RGT_S_x2.pth"
    torch.save({"params": random_checkpoint(load_manifest("rgt", "rgt_s_x2"), seed=11)}, path)
    model = create_model("rgt_s_x2", weights=path)
    assert model.glocal_weights.source == "file" and not model.training
    with torch.no_grad():
        y = model(torch.rand(1, 3, 37, 29))
    assert y.shape == (1, 3, 74, 58) and torch.isfinite(y).all()
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("rgt_s_x3", weights=path)


def test_registry() -> None:
    card = get_card("rgt")
    assert card.task == "super_resolution" and card.default_variant == "rgt_x4"
    assert resolve("RGT")[1].name == "rgt_x4" and resolve("RGT-S x2")[1].name == "rgt_s_x2"
    for v in card.variants:
        manifest = load_manifest("rgt", v.name)
        assert v.scale == manifest["constructor_args"]["upscale"]
        assert v.params == manifest["num_params"]
        sets = {m.dataset for m in v.paper_metrics if m.metric == "psnr"}
        assert sets == {"Set5", "Set14", "B100", "Urban100", "Manga109"}
    x4 = {(m.dataset, m.metric): m.value for m in card.variant("rgt_x4").paper_metrics}
    assert x4[("Urban100", "psnr")] == 27.98 and x4[("paper", "gmacs")] == 251.07


@pytest.mark.parametrize("bad", [torch.rand(1, 1, 16, 16), torch.rand(16, 16)])
def test_bad_input_raises_one_line(small_rgt: RGT, bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"RGT expects an \(N, 3, H, W\)"):
        small_rgt(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend) -> None:
    """Plain and shifted L-SA (stored masks), RG-SA and the upsampler trace as one graph at a fixed size."""
    torch.manual_seed(0)
    model = RGT(img_size=32, embed_dim=64, depth=(4,), num_heads=(2,), mlp_ratio=2.0, split_size=(8, 32),
                upscale=2).eval()
    assert_compiles_fullgraph(model, torch.rand(1, 3, 32, 32), backend)
