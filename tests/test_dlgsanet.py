"""DLGSANet: official layouts of all nine configs, the pure-PyTorch dynamic depthwise conv, TLC windows,
strict loading of BasicSR checkpoints and any-size inference."""

from __future__ import annotations

import math

import pytest
import torch
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint

from glocal.benchmarks.compute import count_macs
from glocal.zoo import create_model, resolve
from glocal.zoo.models.dlgsanet import DLGSANet, SparseChannelAttention, dynamic_depthwise_conv, tlc_starts

VARIANTS = [f"{size}_x{scale}" for size in ("tiny", "light", "large") for scale in (2, 3, 4)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def naive_dynamic_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Straight transcription of the CUDA kernel's definition: one output pixel at a time, bounds-checked."""
    n, c, h, w = x.shape
    g, k = weight.shape[1], weight.shape[2]
    p = (k - 1) // 2
    out = torch.zeros_like(x, dtype=torch.float64)
    for b in range(n):
        for ch in range(c):
            grp = ch // (c // g)
            for i in range(h):
                for j in range(w):
                    acc = 0.0
                    for ki in range(k):
                        for kj in range(k):
                            hi, wj = i - p + ki, j - p + kj
                            if 0 <= hi < h and 0 <= wj < w:
                                acc += float(weight[b, grp, ki, kj, i, j]) * float(x[b, ch, hi, wj])
                    out[b, ch, i, j] = acc
    return out


def test_dynamic_conv_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, 5, 7, generator=g, dtype=torch.float64)  # 3 groups of 2 channels, 3x3
    torch.testing.assert_close(dynamic_depthwise_conv(x, weight), naive_dynamic_conv(x, weight),
                               rtol=0, atol=1e-12)
    x = torch.randn(1, 4, 6, 4, generator=g, dtype=torch.float64)  # 7x7 kernel larger than the map
    weight = torch.randn(1, 1, 7, 7, 6, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(dynamic_depthwise_conv(x, weight), naive_dynamic_conv(x, weight),
                               rtol=0, atol=1e-12)


def test_dynamic_conv_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="does not fit"):
        dynamic_depthwise_conv(torch.zeros(1, 6, 5, 5), torch.zeros(1, 4, 3, 3, 5, 5))


def _official_grid_starts(size: int, kernel: int) -> list[int]:
    """The official ``grids`` loop for one axis, written out as in TLC (reference for ``tlc_starts``)."""
    k = min(size, kernel)
    num = (size - 1) // k + 1
    step = k if num == 1 else math.ceil((size - k) / (num - 1) - 1e-8)
    starts, i, last = [], 0, False
    while i < size and not last:
        if i + k >= size:
            i, last = size - k, True
        starts.append(i)
        i += step
    return starts


@pytest.mark.parametrize("size", [1, 7, 47, 48, 49, 96, 97, 150, 201])
@pytest.mark.parametrize("kernel", [48, 72, 96])
def test_tlc_starts_follow_official_grid(size, kernel):
    starts = tlc_starts(size, kernel)
    assert starts == _official_grid_starts(size, kernel)
    k = min(size, kernel)
    covered = set()
    for s in starts:
        covered.update(range(s, s + k))
    assert covered == set(range(size))


def test_tlc_attention_matches_window_loop():
    attn = SparseChannelAttention(dim=12, num_heads=3, tlc_kernel=8).eval()
    torch.nn.init.normal_(attn.temperature, 1.0, 0.3)
    qkv = torch.randn(2, 36, 13, 19, generator=torch.Generator().manual_seed(1))
    got = attn.local_converter(qkv)
    want = torch.zeros(2, 12, 13, 19)
    count = torch.zeros(13, 19)
    for i in _official_grid_starts(13, 8):
        for j in _official_grid_starts(19, 8):
            want[:, :, i:i + 8, j:j + 8] += attn.attend(qkv[:, :, i:i + 8, j:j + 8])
            count[i:i + 8, j:j + 8] += 1
    torch.testing.assert_close(got, want / count, rtol=1e-6, atol=1e-6)


def test_sparse_attention_is_relu_channel_attention():
    attn = SparseChannelAttention(dim=4, num_heads=2, tlc_flag=False)
    qkv = torch.randn(1, 12, 3, 5, generator=torch.Generator().manual_seed(2))
    q, k, v = (t.reshape(1, 2, 2, 15) for t in qkv.chunk(3, dim=1))
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    want = (torch.relu(q @ k.transpose(-2, -1)) @ v).reshape(1, 4, 3, 5)
    torch.testing.assert_close(attn.attend(qkv), want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layout_matches_official_manifest(variant):
    manifest = load_manifest("dlgsanet", variant)
    card, v = resolve(f"dlgsanet_{variant}")
    model = v.build()
    assert_matches_manifest(model, manifest)
    assert list(model.state_dict()) == list(manifest["state_dict"])  # same order as the official module
    assert v.params == manifest["num_params"]
    assert v.scale == manifest["constructor_args"]["upscale"]
    args = manifest["constructor_args"]
    assert (v.kwargs["dim"], v.kwargs["groups"], v.kwargs["blocks"], v.kwargs["tlc_kernel"]) == (
        args["dim"], args["groups"], args["blocks"], args["tlc_kernel"])


@pytest.mark.parametrize("variant,size", [("tiny_x2", (9, 13)), ("light_x3", (11, 7)), ("large_x4", (7, 5))])
def test_basicsr_checkpoint_loads_strictly_and_runs_any_size(tmp_path, variant, size):
    manifest = load_manifest("dlgsanet", variant)
    sd = random_checkpoint(manifest, seed=3)
    path = tmp_path / "net_g.pth"
    torch.save({"params": sd}, path)
    model = create_model(f"dlgsanet_{variant}", weights=path)
    assert model.glocal_weights.source == "file"
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key
    scale = manifest["constructor_args"]["upscale"]
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(y).all()


def test_eval_windows_cover_small_maps_exactly():
    """A map no larger than the TLC window is one window: eval (TLC) equals train-mode global attention."""
    model = create_model("dlgsanet_tiny_x4", weights="random")
    x = torch.rand(1, 3, 20, 33, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y_eval = model(x)
        y_train = model.train()(x)
    torch.testing.assert_close(y_eval, y_train, rtol=0, atol=1e-5)


def test_tlc_changes_large_maps_and_batches_match_singles():
    model = create_model("dlgsanet_tiny_x4", weights="random")
    for m in model.modules():
        if isinstance(m, SparseChannelAttention):
            m.tlc_kernel = 8  # small windows so a tiny input exercises the stitching
    x = torch.rand(2, 3, 19, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        both = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
        global_ = model.train()(x)
    torch.testing.assert_close(both, singles, rtol=0, atol=1e-5)
    assert (both - global_).abs().max() > 1e-4  # windows really differ from global attention here


def test_mean_shift_identity_path():
    """With zero weights the output is the upsampler bias plus the DIV2K mean (official range handling)."""
    model = create_model("dlgsanet_tiny_x2", weights="random")
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        model.upsample[0].bias.fill_(0.25)
        y = model(torch.rand(1, 3, 4, 6))
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (0.25 + mean).expand(1, 3, 8, 12))


def test_bad_input_raises_one_clear_error():
    model = create_model("dlgsanet_tiny_x2", weights="random")
    with pytest.raises(ValueError, match=r"expects an \(N, 3, H, W\)"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"expects an \(N, 3, H, W\)"):
        model(torch.rand(1, 1, 8, 8))


def test_macs_at_paper_resolution():
    """Large x4 at a 1280x720 output: the counter sees what the official code's count gives (276.4 G, paper
    274 G); the dynamic conv adds C*K*K MACs per pixel and block through ``glocal_macs``."""
    model = create_model("dlgsanet_large_x4", weights="random").to("meta")
    macs = count_macs(model, torch.empty(1, 3, 180, 320, device="meta"))
    assert macs["counter_gmacs"] == pytest.approx(276.405, abs=0.01)
    assert macs["formula_gmacs"] * 1e9 == 24 * 90 * 49 * 180 * 320


def test_card():
    card, v = resolve("dlgsanet")
    assert v.name == "dlgsanet_light_x4" and card.task == "super_resolution"
    with_weights = {v.name for v in card.variants if v.weights}
    lightweight = {f"dlgsanet_{s}_x{k}" for s in ("tiny", "light") for k in (2, 3, 4)}
    assert with_weights == lightweight | {"dlgsanet_large_x4"}
    large_x4 = card.variant("dlgsanet_large_x4")
    assert {(m.dataset, m.metric): m.value for m in large_x4.paper_metrics}[("Urban100", "psnr")] == 27.17


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend):
    """The dynamic-conv tap loop and the TLC windows (eval) trace as one graph at a fixed size."""
    torch.manual_seed(0)
    model = DLGSANet(upscale=2, dim=12, groups=1, blocks=1, tlc_kernel=16).eval()
    assert_compiles_fullgraph(model, torch.rand(1, 3, 20, 24), backend)
