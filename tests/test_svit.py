"""SViT: official layout, super token attention against an equation-level reference, loading, sizes, MACs."""

from __future__ import annotations

import argparse
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint

import glocal.zoo
from glocal.benchmarks.compute import count_macs
from glocal.zoo import CheckpointError, create_model, resolve
from glocal.zoo.models.svit import SuperTokenAttention, SViT, SViTBlock
from glocal.zoo.weights import load_strict

VARIANTS = {"svit_small": "S", "svit_base": "B", "svit_large": "L"}
IDENTITY = torch.eye(9).reshape(9, 1, 3, 3)
TINY = dict(embed_dim=(16, 32, 32, 48), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 3), stoken_size=(8, 4, 1, 1),
            n_iter=(1, 1, 1, 1), projection=64, layerscale=(False, False, True, True), num_classes=7)


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machines are shared: one intra-op thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meta_build(name: str, **kw) -> torch.nn.Module:
    """The registered variant with shape-only (meta) tensors: layout and MAC checks without the memory."""
    with torch.device("meta"):
        return resolve(name)[1].build(**kw).eval()


def _official_like_checkpoint(manifest: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official layout, with valid BN variances and the identity kernels the
    official files always store."""
    sd = random_checkpoint(manifest, seed=seed)
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
        elif k.endswith(("attn.unfold.weights", "attn.fold.weights")):
            sd[k] = IDENTITY.clone()
    return sd


# ---------------------------------------------------------------- official layout

@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_matches_official_manifest(name):
    manifest = load_manifest("svit", VARIANTS[name])
    model = _meta_build(name)
    # The official frozen fold/unfold kernels are persistent buffers here (same keys, same place in the state
    # dict), so the module's parameters are exactly the official trainable ones.
    assert_matches_manifest(model, dict(manifest, num_params=manifest["num_params_trainable"]))
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])  # same order too
    kernels = [k for k in sd if k.endswith(("attn.unfold.weights", "attn.fold.weights"))]
    assert kernels == manifest["frozen_parameters"]
    params = dict(model.named_parameters())
    assert [k for k in sd if k not in params] == sorted(manifest["buffers"] + kernels, key=list(sd).index)
    assert all(p.requires_grad for p in params.values())
    assert sum(p.numel() for p in params.values()) == manifest["num_params_trainable"]
    assert resolve(name)[1].params == manifest["num_params_trainable"]


def test_fold_unfold_kernels_are_the_official_identity():
    model = create_model("svit_small", weights="random", quiet=True)
    sd = model.state_dict()
    kernels = [k for k in sd if k.endswith(("attn.unfold.weights", "attn.fold.weights"))]
    assert len(kernels) == 2 * sum((3, 5, 9, 3))
    for k in kernels:
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], IDENTITY), k
        assert k in dict(model.named_buffers()) and k not in dict(model.named_parameters())


# ---------------------------------------------------------------- reference for super token attention

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # neighbour n of a cell, row-major


def _ref_mhsa(s: torch.Tensor, mod) -> torch.Tensor:
    """Multi-head self-attention over all tokens of s (B, C, h, w), head-major [q|k|v] channels per head."""
    B, C, h, w = s.shape
    heads, hd = mod.num_heads, C // mod.num_heads
    t = s.reshape(B, C, h * w)
    qkv = torch.einsum("oc,bcn->bon", mod.qkv.weight[:, :, 0, 0], t) + mod.qkv.bias[:, None]
    outs = []
    for i in range(heads):
        q, k, v = (qkv[:, i * 3 * hd + j * hd: i * 3 * hd + (j + 1) * hd] for j in range(3))
        a = torch.softmax(torch.einsum("bdq,bdk->bqk", q, k) * hd**-0.5, dim=-1)
        outs.append(torch.einsum("bqk,bdk->bdq", a, v))
    o = torch.einsum("oc,bcn->bon", mod.proj.weight[:, :, 0, 0], torch.cat(outs, 1)) + mod.proj.bias[:, None]
    return o.reshape(B, C, h, w)


def _ref_sta(x: torch.Tensor, attn: SuperTokenAttention) -> torch.Tensor:
    """Super token attention from the paper's equations, with explicit loops over cells and neighbours.

    Pixels are zero-padded to whole S x S cells; super tokens start as cell means; each pixel's association
    Q is the softmax over the 9 super tokens around its cell of <x, s> / sqrt(C) (absent neighbours are zero
    vectors); super tokens are re-estimated as sum(Q x) / sum(Q) over the pixels that see them; after
    attention among super tokens each pixel is sum_n Q_n s_n.
    """
    sh, sw = attn.stoken_size
    if sh == sw == 1:
        return _ref_mhsa(x, attn.stoken_refine)
    B, C, H0, W0 = x.shape
    H, W = math.ceil(H0 / sh) * sh, math.ceil(W0 / sw) * sw
    xp = x.new_zeros(B, C, H, W)
    xp[:, :, :H0, :W0] = x
    gh, gw = H // sh, W // sw

    def cell(i, j):
        return xp[:, :, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw]  # (B, C, sh, sw)

    def neighbours(s):  # (B, C, gh, gw) -> [i][j] -> (B, 9, C)
        out = [[x.new_zeros(B, 9, C) for _ in range(gw)] for _ in range(gh)]
        for i in range(gh):
            for j in range(gw):
                for n, (dy, dx) in enumerate(_OFFSETS):
                    if 0 <= i + dy < gh and 0 <= j + dx < gw:
                        out[i][j][:, n] = s[:, :, i + dy, j + dx]
        return out

    def associate(s):  # [i][j] -> (B, sh, sw, 9)
        nb = neighbours(s)
        return [[torch.softmax(torch.einsum("bcyx,bnc->byxn", cell(i, j), nb[i][j]) / math.sqrt(C), dim=-1)
                 for j in range(gw)] for i in range(gh)]

    def update(q):
        num, den = x.new_zeros(B, C, gh, gw), x.new_zeros(B, gh, gw)
        for i in range(gh):
            for j in range(gw):
                for n, (dy, dx) in enumerate(_OFFSETS):
                    ti, tj = i + dy, j + dx
                    if 0 <= ti < gh and 0 <= tj < gw:
                        num[:, :, ti, tj] += torch.einsum("byx,bcyx->bc", q[i][j][..., n], cell(i, j))
                        den[:, ti, tj] += q[i][j][..., n].sum((1, 2))
        return num / (den[:, None] + 1e-12)

    s = F.avg_pool2d(xp, (sh, sw))
    for it in range(attn.n_iter):
        q = associate(s)
        if it < attn.n_iter - 1:
            s = update(q)
    s = _ref_mhsa(update(q), attn.stoken_refine)
    nb = neighbours(s)
    out = torch.zeros_like(xp)
    for i in range(gh):
        for j in range(gw):
            out[:, :, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw] = torch.einsum(
                "byxn,bnc->bcyx", q[i][j], nb[i][j])
    return out[:, :, :H0, :W0]


@pytest.mark.parametrize("size,stoken,n_iter,heads", [
    ((8, 12), 4, 1, 2),         # whole cells, 2 x 3 super tokens (border cells see absent neighbours)
    ((10, 13), (4, 3), 1, 2),   # padding path, non-square super tokens
    ((12, 12), 3, 2, 4),        # two association iterations
    ((5, 6), 1, 1, 2),          # super-token size 1: plain global attention
])
def test_super_token_attention_matches_reference(size, stoken, n_iter, heads):
    torch.manual_seed(0)
    attn = SuperTokenAttention(8, stoken, n_iter=n_iter, num_heads=heads, qkv_bias=True).eval()
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        got, want = attn(x), _ref_sta(x, attn)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_block_matches_reference_with_layer_scale():
    torch.manual_seed(1)
    blk = SViTBlock(8, stoken_size=4, num_heads=2, qkv_bias=True, layerscale=True, init_values=0.5).eval()
    with torch.no_grad():
        blk.gamma_1.uniform_(0.5, 1.5)
        blk.gamma_2.uniform_(0.5, 1.5)
        blk.norm2.running_mean.normal_()
        blk.norm2.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        y = x + F.conv2d(x, blk.pos_embed.conv.weight, blk.pos_embed.conv.bias, padding=1, groups=8)
        ln = F.layer_norm(y.permute(0, 2, 3, 1), (8,), blk.norm1.norm.weight, blk.norm1.norm.bias, 1e-6)
        y = y + blk.gamma_1 * _ref_sta(ln.permute(0, 3, 1, 2), blk.attn)
        bn = F.batch_norm(y, blk.norm2.running_mean, blk.norm2.running_var, blk.norm2.weight, blk.norm2.bias,
                          eps=blk.norm2.eps)
        m = blk.mlp2
        hid = F.gelu(F.conv2d(bn, m.fc1.weight, m.fc1.bias))
        hid = hid + F.conv2d(hid, m.conv.conv.weight, m.conv.conv.bias, padding=1, groups=hid.shape[1])
        want = y + blk.gamma_2 * F.conv2d(hid, m.fc2.weight, m.fc2.bias)
        torch.testing.assert_close(blk(x), want, atol=1e-5, rtol=1e-5)


def test_association_is_not_differentiated_and_kernels_get_no_gradient():
    torch.manual_seed(2)
    model = SViT(**TINY).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    attn = model.layers[0].blocks[0].attn
    assert attn.unfold.weights.grad is None and attn.fold.weights.grad is None
    grad = attn.stoken_refine.qkv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    model = SViT(**TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    model(x).square().sum().backward()
    ref = model.patch_embed.proj[0].weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    torch.testing.assert_close(model.patch_embed.proj[0].weight.grad, ref)


# ---------------------------------------------------------------- loading official-layout files

@pytest.mark.parametrize("name,size", [
    ("svit_small", 64), ("svit_base", 64), ("svit_large", 64),
    pytest.param("svit_large", 224, marks=pytest.mark.slow),
])
def test_random_official_checkpoint_loads_strictly_and_runs(name, size):
    sd = _official_like_checkpoint(load_manifest("svit", VARIANTS[name]), seed=1)
    model = resolve(name)[1].build().eval()
    load_strict(model, sd)
    for k in ("head.weight", "layers.0.blocks.0.attn.stoken_refine.qkv.weight", "norm.running_var"):
        assert torch.equal(model.state_dict()[k], sd[k])
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all() and out.std() > 0


def test_deit_training_dict_with_args_namespace_loads(tmp_path):
    sd = _official_like_checkpoint(load_manifest("svit", "S"), seed=2)
    ema = dict(sd, **{"head.bias": sd["head.bias"] + 1.0})
    path = tmp_path / "stvit-small-224.pth"
    torch.save({"model": sd, "model_ema": ema, "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {"last_epoch": 299}, "epoch": 299, "scaler": {"scale": 65536.0},
                "args": argparse.Namespace(model="stvit_small", drop_path=0.1, input_size=224),
                "max_accuracy": 83.6}, path)
    model = create_model("svit_small", weights=path)
    assert model.glocal_weights.source == "file"
    got = model.state_dict()
    assert torch.equal(got["head.bias"], sd["head.bias"])  # the README evaluates 'model', not 'model_ema'
    assert all(torch.equal(got[k], sd[k]) for k in sd)


class _Opaque:
    """An arbitrary picklable object, as a tampered checkpoint could carry."""


def test_checkpoint_with_other_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"model": {"head.bias": torch.zeros(1000)}, "args": argparse.Namespace(), "hook": _Opaque()},
               path)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*bad\.pth") as err:
        create_model("svit_small", weights=path)
    assert "\n" not in str(err.value)


def test_checkpoint_of_another_layout_is_refused_clearly():
    sd = _official_like_checkpoint(load_manifest("svit", "S"))
    del sd["layers.0.blocks.0.attn.unfold.weights"]
    model = SViT(**resolve("svit_small")[1].kwargs)
    missing = r"1 missing \(e\.g\. layers\.0\.blocks\.0\.attn\.unfold\.weights\)"
    with pytest.raises(CheckpointError, match=missing):
        load_strict(model, sd)


# ---------------------------------------------------------------- sizes, API, registries, MACs

def test_other_resolutions_and_stage_features():
    model = SViT(**TINY).eval()
    feats: dict[str, tuple[int, ...]] = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda m, i, o, name=info["module"]: feats.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 288, 256))
    assert out.shape == (1, 7)
    assert [feats[f["module"]] for f in model.feature_info] == [
        (1, f["num_chs"], 288 // f["reduction"], 256 // f["reduction"]) for f in model.feature_info]
    assert [f["module"] for f in model.feature_info] == ["layers.0.blocks.0", "layers.1.blocks.1",
                                                        "layers.2.blocks.0", "layers.3.blocks.0"]


@pytest.mark.slow
def test_svit_small_runs_at_256():
    model = create_model("svit_small", weights="random", quiet=True)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_sizes_needing_padding_are_refused_unless_allowed():
    assert resolve("svit_small")[1].resolution_multiple == 32
    model = SViT(**TINY).eval()
    assert model.size_multiple == 32
    with pytest.raises(ValueError, match=r"multiples of 32 .*got 240x224"):
        model(torch.randn(1, 3, 240, 224))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\) images, got shape \[3, 224, 224\]"):
        model(torch.randn(3, 224, 224))
    assert SViT(**{**TINY, "stoken_size": (16, 8, 1, 1)}).size_multiple == 64
    padded = SViT(**TINY, allow_padding=True).eval()
    padded.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = padded(torch.randn(1, 3, 240, 200))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_timm_style_api():
    torch.manual_seed(4)
    model = SViT(**TINY).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 2, 3) and model.num_features == 64
        torch.testing.assert_close(model.forward_head(feats), model(x))
        pooled = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(pooled, feats.mean((2, 3)))
        torch.testing.assert_close(model(x), pooled @ model.head.weight.T + model.head.bias)
        model.reset_classifier(5)
        assert model.num_classes == 5 and model(x).shape == (2, 5)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(3, global_pool="max")  # timm's pooling choices
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.amax((2, 3)))
        model.reset_classifier(0, "")  # no pooling: the (B, C, h, w) map
        torch.testing.assert_close(model(x), feats)


def test_registry_card_and_aliases():
    card, variant = resolve("stvit")
    assert (card.family, variant.name) == ("svit", "svit_small")
    assert resolve("SViT-Base")[1].name == "svit_base" and resolve("svit large")[1].name == "svit_large"
    assert card.license == "MIT" and card.arxiv_id == "2211.11167"
    assert "svit_small" in glocal.zoo.list_models(task="classification")
    # README Results table: top-1 at 224 for S / B / L
    top1 = {n: next(m.value for m in resolve(n)[1].paper_metrics if m.metric == "top1") for n in VARIANTS}
    assert top1 == {"svit_small": 83.6, "svit_base": 84.8, "svit_large": 85.3}
    assert all(w.filename.startswith("stvit-") and w.url for w in variant.weights)


def test_timm_registry():
    assert {"svit_small", "svit_base", "svit_large"} <= set(timm.list_models("svit_*"))
    with torch.device("meta"):
        model = timm.create_model("svit_base", num_classes=10)
    assert isinstance(model, SViT) and model.head.out_features == 10
    cfg = model.pretrained_cfg
    assert (cfg["crop_pct"], cfg["first_conv"], cfg["classifier"]) == (0.875, "patch_embed.proj.0", "head")
    sd = model.state_dict()
    official = load_manifest("svit", "B")["state_dict"]
    assert [k for k in sd if not k.startswith("head.")] == [k for k in official if not k.startswith("head.")]
    with pytest.raises(ValueError, match="no timm/hub weights"):
        timm.create_model("svit_small", pretrained=True)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_macs_at_224_match_the_paper(name):
    paper = next(m.value for m in resolve(name)[1].paper_metrics if m.metric == "gmacs")
    if name == "svit_small":  # real tensors once; meta tensors (same dispatch, no compute) for B and L
        model = create_model(name, weights="random", quiet=True)
        x = torch.randn(1, 3, 224, 224)
    else:
        model, x = _meta_build(name), torch.empty(1, 3, 224, 224, device="meta")
    gmacs = count_macs(model, x)["gmacs"]
    assert abs(gmacs / paper - 1) < 0.02, (gmacs, paper)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend):
    """SViT-S at 224 (its smallest registered variant) runs as one graph under torch.compile(fullgraph=True)."""
    torch.manual_seed(0)
    model = glocal.zoo.create_model("svit_small", weights="random", quiet=True).eval()
    assert_compiles_fullgraph(model, torch.rand(1, 3, 224, 224), backend)
