"""DEA-Net: official layouts, the five-branch DEConv against an independent reference, exact folding, CGA."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint

from glocal.zoo import CheckpointError, create_model, resolve
from glocal.zoo.models.deanet import (
    CGAFusion,
    DEABlock,
    DEANet,
    DEConv,
    angular_difference_kernel,
    central_difference_kernel,
    fold_state_dict,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def train_model() -> DEANet:
    """Training form with random (not default-init) weights so every branch matters."""
    torch.manual_seed(0)
    model = DEANet(deploy=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("variant,deploy", [("deploy", True), ("train", False)])
def test_layout_matches_manifest(variant: str, deploy: bool) -> None:
    manifest = load_manifest("dea_net", variant)
    model = DEANet(base_dim=32, deploy=deploy)
    assert_matches_manifest(model, manifest)
    assert list(model.state_dict()) == list(manifest["state_dict"])  # same order as the official class


def test_registry_variants() -> None:
    card, variant = resolve("DEA-Net")
    assert (card.family, card.task, variant.name) == ("deanet", "dehazing", "deanet_cr")
    assert {v.name for v in card.variants} == {"deanet_cr", "deanet_cr_train"}
    assert card.variant("deanet_cr").params == load_manifest("dea_net", "deploy")["num_params"]
    assert card.variant("deanet_cr_train").params == load_manifest("dea_net", "train")["num_params"]
    assert {w.filename.split("/")[0] for w in variant.weights} == {"ITS", "OTS", "HAZE4K"}
    metrics = {(m.dataset, m.metric): m.value for m in variant.paper_metrics}
    assert metrics[("SOTS-indoor", "psnr")] == 41.31 and metrics[("SOTS-outdoor", "psnr")] == 36.59
    assert not create_model("deanet_cr_train", weights="random").deploy


# --- independent reference of the five difference convolutions -------------------------------------

def _neighbours(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 9, H, W): the zero-padded 3x3 neighbourhood, taps in raster order."""
    b, c, h, w = x.shape
    return F.unfold(x, 3, padding=1).view(b, c, 9, h, w)


def _reference_deconv(x: torch.Tensor, m: DEConv) -> torch.Tensor:
    """Run the five branches separately, each written as the difference it computes on the input."""
    nb = _neighbours(x)  # taps: 0 1 2 / 3 4 5 / 6 7 8
    centre = nb[:, :, 4]

    def apply(weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:  # weight [O, I, K], taps [B, I, K, H, W]
        return torch.einsum("oik,bikhw->bohw", weight, taps)

    w_cd = m.conv1_1.conv.weight.flatten(2)
    cd = apply(w_cd, nb - centre.unsqueeze(2)) + m.conv1_1.conv.bias.view(1, -1, 1, 1)
    # horizontal: 1-D taps down the rows, each on (left neighbour - right neighbour)
    hd = apply(m.conv1_2.conv.weight, nb[:, :, [0, 3, 6]] - nb[:, :, [2, 5, 8]]) + m.conv1_2.conv.bias.view(1, -1, 1, 1)
    # vertical: 1-D taps along the columns, each on (top neighbour - bottom neighbour)
    vd = apply(m.conv1_3.conv.weight, nb[:, :, [0, 1, 2]] - nb[:, :, [6, 7, 8]]) + m.conv1_3.conv.bias.view(1, -1, 1, 1)
    # angular: every ring tap minus its clockwise successor; the centre cancels
    ring = [0, 1, 2, 5, 8, 7, 6, 3]
    succ = {ring[i]: ring[(i + 1) % 8] for i in range(8)}
    succ[4] = 4
    w_ad = m.conv1_4.conv.weight.flatten(2)
    ad = apply(w_ad, nb - nb[:, :, [succ[t] for t in range(9)]]) + m.conv1_4.conv.bias.view(1, -1, 1, 1)
    vanilla = F.conv2d(x, m.conv1_5.weight, m.conv1_5.bias, padding=1)
    return cd + hd + vd + ad + vanilla


def test_deconv_equals_five_independent_branches() -> None:
    torch.manual_seed(1)
    m = DEConv(5)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 5, 9, 11)
    ref = _reference_deconv(x, m)
    torch.testing.assert_close(m(x), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(m.fuse()(x), ref, atol=1e-4, rtol=1e-5)


def test_difference_kernels_on_known_weights() -> None:
    w = torch.arange(9.0).view(1, 1, 3, 3)
    cd = central_difference_kernel(w)
    assert cd.flatten().tolist() == [0, 1, 2, 3, 4 - 36, 5, 6, 7, 8]
    ad = angular_difference_kernel(w)  # w[k] - w[official perm[k]], perm = 3 0 1 6 4 2 7 8 5
    assert ad.flatten().tolist() == [0 - 3, 1 - 0, 2 - 1, 3 - 6, 0, 5 - 2, 6 - 7, 7 - 8, 8 - 5]
    assert ad.sum() == 0 and cd.sum() == 0  # difference kernels ignore flat regions


# --- re-parameterisation -----------------------------------------------------------------------------

def test_reparameterize_in_place_matches_training_form(train_model: DEANet) -> None:
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        expected = train_model(x)
        deploy = copy.deepcopy(train_model)
        assert deploy.reparameterize() is deploy and deploy.deploy
        out = deploy(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    manifest = load_manifest("dea_net", "deploy")
    assert list(deploy.state_dict()) == list(manifest["state_dict"])
    assert_matches_manifest(deploy, manifest)
    assert not any(isinstance(m, DEConv) for m in deploy.modules())
    assert any(isinstance(m, DEConv) for m in train_model.modules())  # the original is a separate copy


def test_timm_reparameterize_model_returns_folded_copy(train_model: DEANet) -> None:
    from timm.utils import reparameterize_model

    folded = reparameterize_model(train_model)
    assert folded is not train_model and any(isinstance(m, DEConv) for m in train_model.modules())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), train_model(x), atol=1e-5, rtol=1e-5)
    assert list(folded.state_dict()) == list(load_manifest("dea_net", "deploy")["state_dict"])


def test_fold_state_dict_loads_into_released_layout(tmp_path, train_model: DEANet) -> None:
    train_sd = train_model.state_dict()
    path_train = tmp_path / "train.pk"
    torch.save({"model": train_sd, "epoch": 3}, path_train)  # official training checkpoint shape
    path_deploy = tmp_path / "PSNR4131_SSIM9945.pth"
    torch.save(fold_state_dict(train_sd), path_deploy)  # raw state dict, like the released files
    deploy = create_model("deanet_cr", weights=path_deploy)
    train = create_model("deanet_cr_train", weights=path_train)
    x = torch.rand(1, 3, 17, 22)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), train(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="incomplete DEConv"):
        fold_state_dict({k: v for k, v in train_sd.items() if "down_level1_block1.conv1.conv1_2" not in k})


def test_random_official_checkpoint_loads_strictly(tmp_path) -> None:
    path = tmp_path / "HAZE4K.pth"
    torch.save(random_checkpoint(load_manifest("dea_net", "deploy"), seed=3), path)
    model = create_model("deanet_cr", weights=path)
    assert model.glocal_weights.source == "file"
    with torch.no_grad():
        y = model(torch.rand(1, 3, 13, 10))
    assert y.shape == (1, 3, 13, 10) and torch.isfinite(y).all()
    with pytest.raises(CheckpointError, match="does not match"):
        create_model("deanet_cr_train", weights=path)


# --- content-guided attention -------------------------------------------------------------------------

def _reference_cga_map(m, s: torch.Tensor) -> torch.Tensor:
    """CGA: sigmoid(grouped 7x7 conv over [s_c, coarse_c] pairs), coarse = spatial + channel attention."""
    sp = F.conv2d(F.pad(torch.cat([s.mean(1, keepdim=True), s.max(1, keepdim=True).values], 1), (3,) * 4,
                        mode="reflect"), m.sa.sa.weight, m.sa.sa.bias)
    ca = m.ca.ca
    ch = F.conv2d(F.relu(F.conv2d(s.mean((2, 3), keepdim=True), ca[0].weight, ca[0].bias)), ca[2].weight, ca[2].bias)
    coarse = sp + ch
    pairs = torch.empty(s.shape[0], 2 * s.shape[1], *s.shape[2:])
    pairs[:, 0::2], pairs[:, 1::2] = s, coarse
    return torch.sigmoid(F.conv2d(F.pad(pairs, (3,) * 4, mode="reflect"), m.pa.pa2.weight, m.pa.pa2.bias,
                                  groups=s.shape[1]))


def test_cga_fusion_and_dea_block_against_reference() -> None:
    torch.manual_seed(2)
    fusion, block = CGAFusion(16, reduction=4), DEABlock(16, deploy=True)
    with torch.no_grad():
        for p in list(fusion.parameters()) + list(block.parameters()):
            p.copy_(torch.randn_like(p) * 0.3)
    x, y = torch.randn(2, 16, 10, 12), torch.randn(2, 16, 10, 12)
    with torch.no_grad():
        s = x + y
        w = torch.sigmoid(_reference_cga_map(fusion, s))  # the official second sigmoid
        ref = F.conv2d(s + w * x + (1 - w) * y, fusion.conv.weight, fusion.conv.bias)
        torch.testing.assert_close(fusion(x, y), ref, atol=1e-5, rtol=1e-5)
        res = block.conv2(F.relu(block.conv1(x)) + x)
        torch.testing.assert_close(block(x), res * _reference_cga_map(block, res) + x, atol=1e-5, rtol=1e-5)


# --- any input size -----------------------------------------------------------------------------------

def test_odd_sizes_reflect_pad_and_crop() -> None:
    torch.manual_seed(4)
    model = DEANet().eval()
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        y = model(x)
        ref = model.forward_body(F.pad(x, (0, 3, 0, 3), mode="reflect"))[..., :37, :29]  # official eval.py
        tiny = model(torch.rand(2, 3, 1, 2))
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref)
    assert tiny.shape == (2, 3, 1, 2) and torch.isfinite(tiny).all()


@pytest.mark.parametrize("bad", [torch.rand(3, 16, 16), torch.rand(1, 4, 16, 16), "image"])
def test_bad_input_raises_one_line(bad) -> None:
    with pytest.raises(ValueError, match=r"DEA-Net expects an \(N, 3, H, W\)"):
        DEANet()(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend) -> None:
    torch.manual_seed(0)
    assert_compiles_fullgraph(DEANet(base_dim=8).eval(), torch.rand(1, 3, 30, 34), backend)
