"""DehazeXL: official layout and buffers, strict loading, determinism, chunked and recomputed tiling,
any-size inputs, the global context path, and reduced precision. Full-size model where cheap, a small
configuration of the same code otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compile_check import BACKENDS, assert_compiles_fullgraph
from manifests import assert_matches_manifest, load_manifest, random_checkpoint
from timm.models.swin_transformer import get_relative_position_index

from glocal.zoo import create_model, resolve
from glocal.zoo.layers.windows import shifted_window_mask
from glocal.zoo.models.dehazexl import DehazeXL, from_tiles, sincos_pos_embed_2d, to_tiles
from glocal.zoo.weights import load_strict

SMALL = dict(tile=64, encoder_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=8),
             bottleneck_layers=1, bottleneck_heads=2, decoder_heads=(1, 1, 2, 2))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small() -> DehazeXL:
    torch.manual_seed(0)
    return DehazeXL(**SMALL).eval()


def _official_random_checkpoint(seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights in the manifest's layout, with real index/mask tables as an official file holds."""
    manifest = load_manifest("dehazexl", "default")
    sd = random_checkpoint(manifest, seed=seed)
    for key in manifest["buffers"]:
        if key.endswith("relative_position_index"):
            sd[key] = get_relative_position_index(8, 8)
        else:
            size = {"1": 16, "2": 32, "3": 64}[key.split(".")[2]]
            sd[key] = shifted_window_mask(size, size, (8, 8), (4, 4))
    return sd


@pytest.fixture(scope="module")
def full() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The full model with a random official-layout state dict loaded strictly."""
    sd = _official_random_checkpoint()
    model = resolve("dehazexl")[1].build().eval()
    load_strict(model, sd)
    return model, sd


def _image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_full_model_layout_matches_official_manifest(full):
    model, _ = full
    manifest = load_manifest("dehazexl", "default")
    assert_matches_manifest(model, manifest)
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])
    persistent = [k for k, _ in model.named_buffers() if k in sd]
    assert persistent == manifest["buffers"] and len(persistent) == 11
    parts = {p: sum(v.numel() for k, v in model.named_parameters() if k.startswith(p + "."))
             for p in ("encoder", "bottleneck", "decoder")}
    assert parts == manifest["params_by_part"]
    assert resolve("dehazexl")[1].params == manifest["num_params"] == 125_484_996


def _official_region(r: int, size: int, ws: int, shift: int) -> int:
    return 0 if r < size - ws else (1 if r < size - shift else 2)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_decoder_buffers_follow_swin_definitions(size):
    ws, shift = 8, 4
    idx = get_relative_position_index(ws, ws)  # timm's, as the decoder registers it
    assert idx.dtype == torch.int64
    coords = [(i, j) for i in range(ws) for j in range(ws)]
    want = torch.tensor([[(a[0] - b[0] + ws - 1) * (2 * ws - 1) + (a[1] - b[1] + ws - 1) for b in coords]
                         for a in coords])
    assert torch.equal(idx, want)
    mask = shifted_window_mask(size, size, (ws, ws), (shift, shift))
    nw = size // ws
    assert mask.shape == (nw * nw, ws * ws, ws * ws)
    for w in range(nw * nw):
        wy, wx = divmod(w, nw)
        labels = [3 * _official_region(wy * ws + i, size, ws, shift) + _official_region(wx * ws + j, size, ws, shift)
                  for i in range(ws) for j in range(ws)]
        lab = torch.tensor(labels)
        want = torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
        assert torch.equal(mask[w], want)


def test_official_checkpoint_loads_strictly_and_is_deterministic(full):
    model, sd = full
    own = model.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in sd)
    x = _image(1, 3, 100, 131)  # odd size: padded to one 256 tile, cropped back
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.mark.slow
def test_official_file_loads_through_create_model(tmp_path):
    sd = _official_random_checkpoint(seed=2)
    path = tmp_path / "dehazexl.pth"
    torch.save(sd, path)  # the official format: a raw state dict
    model = create_model("dehazexl", weights=path)
    assert model.glocal_weights.source == "file" and not model.training
    assert torch.equal(model.state_dict()["bottleneck.input_proj.weight"], sd["bottleneck.input_proj.weight"])
    with torch.inference_mode():
        y = model(_image(1, 3, 300, 260))
    assert y.shape == (1, 3, 300, 260) and torch.isfinite(y).all()


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    sd = DehazeXL(**SMALL).state_dict()
    path = tmp_path / "small.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="does not match the model"):
        create_model("dehazexl", weights=path)


def test_tile_aligned_input_is_deterministic(small):
    x = _image(1, 3, 512, 512, seed=2)
    with torch.inference_mode():
        a, b = small(x), small(x)
    assert torch.equal(a, b)
    assert (a - x).abs().mean() > 0.05  # the network does something beyond the residual


def test_chunked_and_recomputed_encoding_match_unchunked(small):
    x = _image(1, 3, 256, 320, seed=3)  # 4 x 5 tiles
    outs = {}
    with torch.inference_mode():
        for chunk, recompute in [(64, False), (1, False), (7, False), (3, True), (64, True)]:
            small.chunk_size, small.recompute_skips = chunk, recompute
            outs[(chunk, recompute)] = small(x)
    small.chunk_size, small.recompute_skips = 16, False
    ref = outs[(64, False)]
    for key, out in outs.items():
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5, msg=f"chunk_size, recompute = {key}")


def test_context_is_global(small):
    """Changing the top-left tile changes the bottom-right tile's output (only the bottleneck links them)."""
    x = _image(1, 3, 192, 192, seed=4)
    y = x.clone()
    y[:, :, :64, :64] = 1 - y[:, :, :64, :64]
    with torch.inference_mode():
        a, b = small(x), small(y)
    assert (a[:, :, 128:, 128:] - b[:, :, 128:, 128:]).abs().max() > 1e-5
    small_local = DehazeXL(**{**SMALL, "bottleneck_layers": 0}).eval()  # projection + positions only
    with torch.inference_mode():
        a, b = small_local(x), small_local(y)
    assert torch.equal(a[:, :, 128:, 128:], b[:, :, 128:, 128:])


def test_any_size_and_batches(small):
    x = _image(2, 3, 70, 100, seed=5)
    with torch.inference_mode():
        y = small(x)
        singles = torch.cat([small(x[:1]), small(x[1:])])
        padded = torch.nn.functional.pad(x, (0, 128 - 100, 0, 128 - 70), mode="reflect")
        direct = small.restore(padded)[:, :, :70, :100]
    assert y.shape == x.shape
    torch.testing.assert_close(y, singles, rtol=0, atol=1e-5)
    torch.testing.assert_close(y, direct, rtol=0, atol=0)


def test_tiles_round_trip():
    x = _image(2, 3, 6, 9)
    t = to_tiles(x, 3)
    assert t.shape == (12, 3, 3, 3)
    assert torch.equal(t[7], x[1, :, :3, 3:6])  # second image, first row, second column
    assert torch.equal(from_tiles(t, 2, 2, 3), x)


def _mae_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's 2-D sin-cos table (numpy, float32), the form the official bottleneck calls."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float32) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


def test_sincos_embedding_matches_mae_on_square_grids():
    for dim, grid in [(768, 8), (768, 32), (64, 5)]:
        got = sincos_pos_embed_2d(dim, grid, grid).numpy()
        np.testing.assert_allclose(got, _mae_sincos(dim, grid), rtol=0, atol=1e-4)
    rect = sincos_pos_embed_2d(16, 2, 3)
    assert rect.shape == (6, 16)
    torch.testing.assert_close(rect[3], sincos_pos_embed_2d(16, 2, 2)[2])  # (y=1, x=0) on both grids


def test_bfloat16_close_to_float32(small):
    x = _image(1, 3, 128, 64, seed=6)
    low = DehazeXL(**SMALL).eval()
    low.load_state_dict(small.state_dict())
    low = low.to(torch.bfloat16)
    with torch.inference_mode():
        ref = small(x)
        out = low(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_input_raises_one_clear_error(small):
    with pytest.raises(ValueError, match=r"expects an \(N, 3, H, W\)"):
        small(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match=r"expects an \(N, 3, H, W\)"):
        small(torch.rand(1, 4, 64, 64))
    small.chunk_size = 0
    try:
        with pytest.raises(ValueError, match="chunk_size must be at least 1"):
            small(torch.rand(1, 3, 64, 64))
    finally:
        small.chunk_size = 16
    with pytest.raises(ValueError, match="4-stage encoder"):
        DehazeXL(tile=64, encoder_kwargs=dict(embed_dim=16, depths=(1, 1, 1), num_heads=(1, 1, 2), window_size=8))


def test_card():
    card, v = resolve("DehazeXL")
    assert card.task == "dehazing" and v.name == "dehazexl_swinv2_tiny"
    assert v.weights == () and "lost" in v.notes
    metrics = {(m.dataset, m.metric): m.value for m in v.paper_metrics}
    assert metrics[("8KDehaze", "psnr")] == 32.35 and metrics[("8KDehaze", "ssim")] == 0.9863


def test_memory_benchmark_prediction_and_arguments(capsys):
    from glocal.benchmarks.microbench import dehazexl_memory as bench

    one = [{"status": "ok", "side": 1024, "peak_gb": 3.0, "baseline_gb": 1.0, "seconds": 10.0}]
    assert bench.predict(one, 2048) == pytest.approx(1.0 + 2.0 * 4)  # the part above the baseline scales
    assert bench.predict_seconds(one, 2048) == pytest.approx(40.0)
    two = one + [{"status": "ok", "side": 2048, "peak_gb": 9.0, "baseline_gb": 1.0, "seconds": 45.0}]
    line = bench.predict(two, 4096)  # through both points: 3 + (9 - 3) / (2048^2 - 1024^2) * (4096^2 - 1024^2)
    assert line == pytest.approx(3.0 + 6.0 * 15 / 3)
    assert bench.predict([{"status": "oom", "side": 512}], 1024) is None
    assert bench.parse_sides("2048, 1024,1024") == [1024, 2048]
    with pytest.raises(ValueError, match="comma-separated integers"):
        bench.parse_sides("1k")
    assert bench.main(["--chunk", "0"]) == 2
    assert "--chunk must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiles_without_graph_breaks(backend):
    """Two tiles (fixed size): tiling loops, bottleneck and SDPA windows trace as one graph."""
    torch.manual_seed(0)
    model = DehazeXL(**{**SMALL, "decoder_depths": (1, 1, 1, 1)}).eval()
    assert_compiles_fullgraph(model, _image(1, 3, 64, 128, seed=7), backend)
