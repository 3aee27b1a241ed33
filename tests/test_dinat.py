"""DiNAT: official state-dict layout for all five variants, strict loading of official-layout checkpoints,
the forward wiring against a functional re-statement, resolutions, GMACs vs the paper, timm API/registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint

import glocal.zoo
from glocal.zoo.layers import neighborhood_attention as na
from glocal.zoo.models.dinat import CONFIGS, DiNAT

VARIANTS = ("mini", "tiny", "small", "base", "large")
PAPER_GMACS = {"mini": 2.7, "tiny": 4.3, "small": 7.8, "base": 13.7, "large": 30.6}  # classification/DiNAT.md

# A tiny DiNAT with every feature in play: dilations (incl. padding at 64x64 inputs), layer scale, 4 levels.
TINY = dict(embed_dim=16, mlp_ratio=2, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), kernel_size=3,
            dilations=[[1, 4], [1, 2], [2, 1], [1]], layer_scale=0.5, drop_path_rate=0.1)


pytestmark = pytest.mark.usefixtures("eager_flex_one_thread")


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_official_manifest(variant: str) -> None:
    manifest = load_manifest("dinat", variant)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = glocal.zoo.resolve(f"dinat_{variant}")[1].build()
    assert_matches_manifest(model, manifest)
    assert list(model.state_dict()) == list(manifest["state_dict"])  # same order too
    assert len(model.state_dict()) == manifest["num_state_dict_entries"]
    assert glocal.zoo.resolve(f"dinat_{variant}")[1].params == manifest["num_params"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_equals_official_constructor_args(variant: str) -> None:
    want = load_manifest("dinat", variant)["constructor_args"]["class_kwargs"]
    got = CONFIGS[f"dinat_{variant}"]
    for key in ("embed_dim", "mlp_ratio", "drop_path_rate", "kernel_size"):
        assert got[key] == want[key], key
    assert list(got["depths"]) == want["depths"] and list(got["num_heads"]) == want["num_heads"]
    assert got["dilations"] == want["dilations"]
    assert got.get("layer_scale") == want.get("layer_scale")


def test_random_official_checkpoint_loads_strictly(tmp_path) -> None:
    from safetensors.torch import save_file

    from glocal.zoo.weights import CheckpointError

    sd = random_checkpoint(load_manifest("dinat", "mini"), seed=1)
    path = tmp_path / "dinat_mini_in1k_224.safetensors"
    save_file(sd, str(path))
    model = glocal.zoo.create_model("dinat_mini", weights=path)
    assert model.glocal_weights.source == "file"
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key
    with torch.inference_mode():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
        logits = model.forward_head(feats)
    assert feats.shape == (1, 7, 7, 512) and logits.shape == (1, 1000)  # channels-last features
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((1, 2)))
    sd.pop("levels.0.blocks.1.attn.rpb")
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing"):
        glocal.zoo.create_model("dinat_mini", weights=tmp_path / "broken.safetensors")


def _functional_dinat(sd: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """The official NAT/DiNAT forward re-stated on a raw state dict, with the brute-force-checked NA."""
    def ln(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)

    x = F.conv2d(x, sd["patch_embed.proj.0.weight"], sd["patch_embed.proj.0.bias"], stride=2, padding=1)
    x = F.conv2d(x, sd["patch_embed.proj.1.weight"], sd["patch_embed.proj.1.bias"], stride=2, padding=1)
    x = ln(x.permute(0, 2, 3, 1), "patch_embed.norm")
    k = cfg["kernel_size"]
    for i, depth in enumerate(cfg["depths"]):
        heads = cfg["num_heads"][i]
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."
            d = cfg["dilations"][i][j]
            h = ln(x, p + "norm1")
            B, H, W, C = h.shape
            pad_h, pad_w = max(0, k * d - H), max(0, k * d - W)
            h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
            qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
            qkv = qkv.view(B, H + pad_h, W + pad_w, 3, heads, C // heads).permute(3, 0, 4, 1, 2, 5)
            a = na.na2d(qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2], sd[p + "attn.rpb"], k, d, backend="reference")
            a = a.permute(0, 2, 3, 1, 4).reshape(B, H + pad_h, W + pad_w, C)[:, :H, :W]
            a = F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
            x = x + sd[p + "gamma1"] * a
            m = F.gelu(F.linear(ln(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
            x = x + sd[p + "gamma2"] * F.linear(m, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if i < len(cfg["depths"]) - 1:
            p = f"levels.{i}.downsample."
            x = F.conv2d(x.permute(0, 3, 1, 2), sd[p + "reduction.weight"], stride=2, padding=1)
            x = ln(x.permute(0, 2, 3, 1), p + "norm")
    x = ln(x, "norm").flatten(1, 2).mean(1)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def test_forward_equals_functional_restatement_on_every_backend() -> None:
    torch.manual_seed(0)
    model = DiNAT(**TINY, num_classes=7).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # move biases, norms and layer scales off their init values
        x = torch.randn(2, 3, 64, 64)
        want = _functional_dinat(model.state_dict(), TINY, x)
        for backend in ("reference", "blocked", "flex"):
            model.set_backend(backend)
            assert model.glocal_backends() == {"neighborhood_attention": backend}
            assert (model(x) - want).abs().max().item() < 1e-5, backend


def test_other_resolutions_run_and_bad_sizes_raise() -> None:
    torch.manual_seed(0)
    model = glocal.zoo.create_model("dinat_mini", weights="random", quiet=True)
    assert model.glocal_variant.resolution_multiple == 32
    with torch.inference_mode():
        for size in (256, 320):
            assert torch.isfinite(model(torch.randn(1, 3, size, size))).all()
        assert model.forward_features(torch.randn(1, 3, 256, 320)).shape == (1, 8, 10, 512)
    for shape in ((1, 3, 250, 250), (1, 3, 224, 200)):
        with pytest.raises(ValueError, match="multiples of 32"):
            model(torch.randn(*shape))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 224, 224, 3))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gmacs_within_2_percent_of_paper(variant: str) -> None:
    from glocal.benchmarks.compute import count_macs

    with torch.device("meta"):  # the counter only needs shapes
        model = glocal.zoo.resolve(f"dinat_{variant}")[1].build().eval()
        r = count_macs(model, torch.empty(1, 3, 224, 224))
    assert r["gmacs"] == pytest.approx(PAPER_GMACS[variant], rel=0.02)
    heads_dims = [(d, int(CONFIGS[f"dinat_{variant}"]["embed_dim"] * 2**i), 56 // 2**i)
                  for i, d in enumerate(CONFIGS[f"dinat_{variant}"]["depths"])]
    na_macs = sum(depth * side * side * 49 * 2 * dim for depth, dim, side in heads_dims)  # heads*head_dim = dim
    assert r["formula_gmacs"] * 1e9 == pytest.approx(na_macs, abs=0.5)


def test_card_and_paper_metrics() -> None:
    card, variant = glocal.zoo.resolve("DiNAT")
    assert variant.name == "dinat_tiny" and card.task == "classification" and card.license == "MIT"
    assert glocal.zoo.list_models(family="dinat") == [f"dinat_{v}" for v in VARIANTS]
    metrics = {(m.metric): m.value for m in glocal.zoo.resolve("dinat_base")[1].paper_metrics}
    assert metrics == {"top1": 84.4, "params_m": 90, "gmacs": 13.7}
    large = glocal.zoo.resolve("dinat_large")[1]
    assert large.weights[0].url.endswith("imagenet1k/dinat_large_in22k_in1k_224.pth")
    assert large.weights[0].timm_name == "dinat_large"  # auto weights take timm's pretrained path (same URL)
    import timm

    assert timm.models.get_pretrained_cfg("dinat_large").url == large.weights[0].url
    assert {m.metric: m.value for m in large.paper_metrics}["top1"] == 86.6


def test_timm_registry_and_api() -> None:
    import timm  # the entry points are registered by `import glocal.zoo` (top of this file)

    model = timm.create_model("dinat_mini", num_classes=10)
    assert isinstance(model, DiNAT) and model.num_classes == 10 and model.num_features == 512
    assert model.pretrained_cfg["first_conv"] == "patch_embed.proj.0"
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(64, 4), (128, 8), (256, 16), (512, 32)]
    modules = dict(model.named_modules())
    assert all(f["module"] in modules for f in model.feature_info)
    model.reset_classifier(3)
    assert model.head.out_features == 3 and model.get_classifier() is model.head
    assert timm.list_pretrained("dinat_mini") == ["dinat_mini"]  # pretrained=True: tests/test_timm_contract.py
    small = DiNAT(**TINY, num_classes=5).eval()
    seen = {}
    hooks = [dict(small.named_modules())[f["module"]].register_forward_hook(
        lambda m, i, o, name=f["module"]: seen.__setitem__(name, o.shape)) for f in small.feature_info]
    with torch.no_grad():
        small(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert [seen[f["module"]] for f in small.feature_info] == [
        (1, 64 // f["reduction"], 64 // f["reduction"], f["num_chs"]) for f in small.feature_info]  # NHWC


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend):
    """DiNAT-Mini at 224 runs as one graph under torch.compile(fullgraph=True) (neighborhood attention included)."""
    torch.manual_seed(0)
    model = glocal.zoo.create_model("dinat_mini", weights="random", quiet=True).eval()
    assert_compiles_fullgraph(model, torch.rand(1, 3, 224, 224), backend)
