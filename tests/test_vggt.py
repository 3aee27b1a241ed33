"""VGGT and FlashVGGT: official state-dict layouts, strict loading, descriptor attention against VGGT's global
attention, descriptor counts against the formula, streaming against the single pass, k-means keyframes,
geometry helpers and bad input. Tiny configs on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from manifests import assert_matches_manifest, load_manifest

import glocal.zoo
from glocal.zoo.models import flashvggt as FV
from glocal.zoo.models import vggt as V
from glocal.zoo.weights import CheckpointError, load_strict

pytestmark = pytest.mark.usefixtures("eager_flex_one_thread")  # one thread: tiny tensors, shared CPU

DENSE = FV.FlashConfig(kv_downfactor=1, keyframe_every=None, compressed=None, uncompressed_as_frame=False)


def _meta_checkpoint(manifest: dict) -> dict[str, torch.Tensor]:
    """The manifest's layout as meta tensors: key/shape checks of the 1B files without 5 GB of memory."""
    return {k: torch.empty(s, device="meta") for k, s in manifest["state_dict"].items()}


@pytest.fixture(scope="module")
def tiny_vggt() -> V.VGGT:
    torch.manual_seed(0)
    model = V.build_vggt("tiny")
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}  # LayerScale etc. matter
    model.load_state_dict(sd)
    return model


@pytest.mark.parametrize(("name", "family", "variant"), [("vggt_1b", "vggt", "vggt_1b"),
                                                         ("flashvggt", "flashvggt", "flashvggt"),
                                                         ("flashvggt_stream", "flashvggt", "flashvggt")])
def test_state_dict_matches_official_manifest(name: str, family: str, variant: str) -> None:
    manifest = load_manifest(family, variant)
    with torch.device("meta"):
        model = glocal.zoo.resolve(name)[1].build()
    assert_matches_manifest(model, manifest)  # keys, order, shapes, dtypes, parameter count
    assert glocal.zoo.resolve(name)[1].params == manifest["num_params"]
    assert not any(b for b in model.state_dict() if "cache" in b)  # the stream caches are never saved


@pytest.mark.parametrize(("name", "family", "variant"), [("vggt_1b", "vggt", "vggt_1b"),
                                                         ("flashvggt", "flashvggt", "flashvggt")])
def test_official_layout_loads_strictly(name: str, family: str, variant: str) -> None:
    manifest = load_manifest(family, variant)
    with torch.device("meta"):
        model = glocal.zoo.resolve(name)[1].build()
    ckpt = _meta_checkpoint(manifest)
    model.load_state_dict(ckpt, strict=True, assign=True)
    broken = dict(ckpt)
    broken["aggregator.camera_token"] = torch.empty(1, 2, 1, 1023, device="meta")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_strict(model, broken, origin="broken.pt")


def test_vggt_checkpoint_converts_to_flashvggt() -> None:
    """A VGGT-1B file loads into FlashVGGT once its point and track heads are dropped (detected layout)."""
    ckpt = _meta_checkpoint(load_manifest("vggt", "vggt_1b"))
    card = glocal.zoo.resolve("flashvggt")[0]
    assert card.detect_layout(ckpt) == "vggt"
    converted = card.convert_state_dict(ckpt, "vggt")
    assert list(converted) == list(load_manifest("flashvggt", "flashvggt")["state_dict"])


def test_random_checkpoint_round_trip(tiny_vggt: V.VGGT) -> None:
    """A tiny model's random state dict loads strictly into a fresh build and reproduces its outputs."""
    other = V.build_vggt("tiny")
    load_strict(other, tiny_vggt.state_dict())
    x = torch.rand(2, 3, 56, 42)
    with torch.no_grad():
        a, b = tiny_vggt(x), other(x)
    for key in ("pose_enc", "depth", "world_points"):
        assert torch.equal(a[key], b[key])


def test_outputs_and_encodings(tiny_vggt: V.VGGT) -> None:
    x = torch.rand(3, 3, 56, 70)
    q = torch.tensor([[10.0, 20.0], [60.0, 30.0]])
    with torch.no_grad():
        out = tiny_vggt(x, query_points=q)
    shapes = {k: tuple(v.shape) for k, v in out.items() if torch.is_tensor(v)}
    assert shapes == {"pose_enc": (1, 3, 9), "depth": (1, 3, 56, 70, 1), "depth_conf": (1, 3, 56, 70),
                      "world_points": (1, 3, 56, 70, 3), "world_points_conf": (1, 3, 56, 70), "track": (1, 3, 2, 2),
                      "vis": (1, 3, 2), "conf": (1, 3, 2), "images": (1, 3, 3, 56, 70)}
    assert len(out["pose_enc_list"]) == 4 and torch.equal(out["pose_enc_list"][-1], out["pose_enc"])
    assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all()  # exp and 1 + exp
    assert (out["pose_enc"][..., 7:] >= 0).all()  # field of view through ReLU
    assert torch.allclose(out["track"][:, 0], q[None])  # frame 0 keeps the query
    assert ((out["vis"] > 0) & (out["vis"] < 1)).all()


def test_rope_is_a_rotation_by_row_and_column() -> None:
    """Explicit 2D RoPE: first half rotated by the row, second by the column, frequencies 100^(-2j/(D/2))."""
    x = torch.randn(1, 1, 3, 8)
    pos = torch.tensor([[[0, 0], [2, 5], [7, 1]]])
    got = V.apply_rope2d(x, pos)
    freqs = 100.0 ** (-torch.arange(0, 4, 2).float() / 4)
    for n in range(3):
        for half, axis in ((0, 0), (1, 1)):
            a, b = x[0, 0, n, half * 4:half * 4 + 2], x[0, 0, n, half * 4 + 2:half * 4 + 4]
            ang = pos[0, n, axis] * freqs
            want = torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()])
            assert torch.allclose(got[0, 0, n, half * 4:half * 4 + 4], want, atol=1e-6)


def test_pose_encoding_round_trip_and_unprojection() -> None:
    angle = torch.tensor(0.3)
    R = torch.tensor([[angle.cos(), 0, angle.sin()], [0, 1, 0], [-angle.sin(), 0, angle.cos()]])
    t = torch.tensor([0.1, -0.2, 0.5])
    ext = torch.cat([R, t[:, None]], dim=1)[None, None]
    K = torch.tensor([[40.0, 0, 35], [0, 50.0, 28], [0, 0, 1]])[None, None]
    enc = V.extri_intri_to_pose_encoding(ext, K, (56, 70))
    ext2, K2 = V.pose_encoding_to_extri_intri(enc, (56, 70))
    assert torch.allclose(ext2, ext, atol=1e-6) and torch.allclose(K2, K, atol=1e-4)
    depth = torch.rand(1, 1, 56, 70, 1) + 1
    world = V.unproject_depth(depth, ext, K)
    cam = world @ R.T + t  # back into the camera: z is the depth, projection is the pixel grid
    assert torch.allclose(cam[..., 2], depth[..., 0], atol=1e-5)
    u = cam[..., 0] / cam[..., 2] * 40 + 35
    assert torch.allclose(u[0, 0, 3], torch.arange(70.0), atol=1e-3)


# --------------------------------------------------------------------------------------------- FlashVGGT


def _flash_from(vggt: V.VGGT, flash: FV.FlashConfig, stream: bool = False) -> FV.FlashVGGT:
    model = FV.build_flashvggt("tiny", stream=stream, flash=flash)
    load_strict(model, FV.convert_state_dict(vggt.state_dict(), "vggt"))
    return model


def test_r1_without_keyframes_equals_vggt(tiny_vggt: V.VGGT) -> None:
    """With r=1 and no keyframes the descriptor set is every token: a compressed layer is VGGT's global layer."""
    flash = _flash_from(tiny_vggt, DENSE)
    x = torch.rand(1, 3, 3, 56, 70)
    tokens, pos = tiny_vggt.aggregator.embed(x)
    ctx = flash.aggregator.layer_context(tokens, 1, 3, 56, 70)
    with torch.no_grad():
        dense = tiny_vggt.aggregator.global_layer(1, tokens, pos, 1, 3, {})
        desc = flash.aggregator.global_layer(1, tokens, pos, 1, 3, ctx)
        a, b = tiny_vggt(x), flash(x)
    assert ctx["kv_counts"][1] == 3 * tokens.shape[1]
    assert torch.allclose(desc, dense, atol=1e-6)
    assert torch.allclose(a["pose_enc"], b["pose_enc"], atol=1e-5)
    assert torch.allclose(a["depth"], b["depth"], atol=1e-5)


@pytest.mark.parametrize(("S", "every", "mode"), [(3, None, "nearest"), (5, 100, "nearest"), (9, 4, "nearest"),
                                                  (9, 3, "bilinear")])
def test_descriptor_count_matches_formula(tiny_vggt: V.VGGT, S: int, every: int | None, mode: str) -> None:
    flash_cfg = FV.FlashConfig(kv_downfactor=2, keyframe_every=every, compressed=(1, 2), downsample=mode)
    model = _flash_from(tiny_vggt, flash_cfg)
    x = torch.rand(1, S, 3, 56, 84)  # 4 x 6 patches -> 2 x 3 descriptors per frame
    tokens, _ = model.aggregator.embed(x)
    ctx = model.aggregator.layer_context(tokens, 1, S, 56, 84)
    with torch.no_grad():
        model.aggregator(x, ctx=ctx)
    n_kf = FV.n_keyframes(S, every)
    assert (0 if ctx["keyframes"] is None else ctx["keyframes"].shape[1]) == n_kf
    want = FV.global_kv_count(S, 4, 6, 2, n_kf)
    assert want == S * (5 + 2 * 3) + n_kf * 24
    assert ctx["kv_counts"] == {1: want, 2: want}  # only the configured layers are compressed
    macs = FV.attention_macs(S, 56, 84, tiny_vggt.cfg, flash_cfg)
    assert macs["global_kv"] == want and macs["tokens"] == S * 29
    d, P = 32, 29
    assert macs["global_macs"] == 2 * (2 * d * S * P * want) + 2 * (2 * d * S * P * P)


def test_vggt_attention_macs_formula() -> None:
    cfg = V.VGGTConfig()
    m = FV.attention_macs(10, 392, 518, cfg)
    P = 5 + 28 * 37
    assert m["tokens"] == 10 * P and m["global_kv"] == 10 * P
    assert m["global_macs"] == 24 * 2 * 1024 * (10 * P) ** 2 and m["frame_macs"] == 24 * 2 * 1024 * 10 * P * P
    flash = FV.attention_macs(1000, 392, 518, cfg, FV.FlashConfig())
    assert flash["global_kv"] == 1000 * (5 + 9 * 12) + (1 + 5) * 28 * 37  # 113 keys per frame, 6 keyframes


def test_nearest_descriptors_are_the_official_strided_subset() -> None:
    """518x392 (28x37 patches), r=3: rows 0,3,...,24 and columns 0,3,...,33 (a 9x12 grid)."""
    y = torch.arange(28 * 37, dtype=torch.float32).view(1, 1, 28 * 37, 1)
    y = torch.cat([torch.full((1, 1, 5, 1), -1.0), y], dim=2)
    pos = V.token_positions(1, 28, 37, "cpu").view(1, 1, -1, 2)
    states, spos = FV.frame_descriptors(y, pos, 28, 37, 3)
    want = (torch.arange(0, 27, 3)[:, None] * 37 + torch.arange(0, 36, 3)[None]).flatten().float()
    assert states.shape == (1, 1, 5 + 108, 1)
    assert torch.equal(states[0, 0, 5:, 0], want)
    assert torch.equal(spos[0, 0, 5:], pos[0, 0, 5:][want.long()])  # each key keeps its own position


def test_streaming_one_chunk_equals_single_pass(tiny_vggt: V.VGGT) -> None:
    cfg = FV.FlashConfig(kv_downfactor=2, keyframe_every=100, compressed=(1, 2))  # keyframes: frame 0 only
    single, stream = _flash_from(tiny_vggt, cfg), _flash_from(tiny_vggt, cfg, stream=True)
    x = torch.rand(5, 3, 56, 70)
    with torch.no_grad():
        a, b = single(x, return_points=False), stream(x, chunk_size=5)
    for key in ("pose_enc", "depth", "depth_conf"):
        assert torch.equal(a[key], b[key])
    assert len(b["pose_enc_list"]) == 4


def test_streaming_cache_grows_with_retained_frames(tiny_vggt: V.VGGT) -> None:
    """Chunks of 2 over 5 frames, p=2: cache = frame 0's grid + the descriptors of frame 0 (chunk 1), frame 2
    (chunk 2) and frame 4 (chunk 3)."""
    cfg = FV.FlashConfig(kv_downfactor=2, keyframe_every=None, compressed=(1, 2))
    stream = _flash_from(tiny_vggt, cfg, stream=True)
    with torch.no_grad():
        out = stream(torch.rand(5, 3, 56, 70), chunk_size=2, memory_drop_rate=2)
    per_frame = 5 + 2 * 2  # 4 x 5 patches -> 2 x 2
    assert stream.cache_tokens == {1: 4 * 5 + 3 * per_frame, 2: 4 * 5 + 3 * per_frame}
    assert FV.stream_kv_counts(5, 4, 5, 2, chunk=2, drop=2) == [20 + per_frame, 20 + 2 * per_frame, 20 + 3 * per_frame]
    assert out["depth"].shape == (1, 5, 56, 70, 1) and out["pose_enc"].shape == (1, 5, 9)


def test_kmeans_keyframes_match_direct_computation() -> None:
    """Three tight, well-separated clusters of frame descriptors: k-means converges to the cluster means and the
    keyframes are frame 0 plus, per cluster, the frame nearest its mean (computed directly)."""
    g = torch.Generator().manual_seed(0)
    S, P, C = 12, 6, 8
    centres = torch.tensor([[0.0] * C, [10.0] * C, [-10.0] * C])
    label = torch.tensor([0, 1, 2] * 4)
    tokens = centres[label][:, None, :] + 0.3 * torch.randn(S, P, C, generator=g)
    frames = tokens.mean(dim=1)
    got = FV.select_keyframes(tokens, 1, S, keyframe_every=4)
    assert got.shape == (1, 4) and got[0, 0] == 0
    means = torch.stack([frames[label == c].mean(0) for c in range(3)])
    nearest = {int(torch.cdist(means[c:c + 1], frames).argmin()) for c in range(3)}
    assert set(got[0, 1:].tolist()) == nearest
    found = FV.kmeans_centers(frames[None], 3)[0]
    assert torch.allclose(torch.sort(found.sum(-1)).values, torch.sort(means.sum(-1)).values, atol=1e-4)
    assert FV.select_keyframes(tokens, 1, S, keyframe_every=7).tolist() == [[0]]  # K = 1: frame 0 only
    assert FV.select_keyframes(tokens, 1, S, keyframe_every=None) is None


def test_kmeans_is_deterministic_lloyd_fixed_point() -> None:
    x = torch.randn(2, 40, 5, generator=torch.Generator().manual_seed(1))
    c1, c2 = FV.kmeans_centers(x, 4), FV.kmeans_centers(x, 4)
    assert torch.equal(c1, c2)
    for b in range(2):  # each centre is the mean of the points it owns (converged Lloyd)
        lab = torch.cdist(x[b], c1[b]).argmin(1)
        for k in range(4):
            if (lab == k).any():
                assert torch.allclose(c1[b, k], x[b][lab == k].mean(0), atol=1e-4)


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m(torch.rand(0, 3, 56, 56)), "at least one frame"),
    (lambda m: m(torch.rand(2, 3, 56, 60)), "multiples of 14"),
    (lambda m: m(torch.rand(2, 4, 56, 56)), "shape"),
    (lambda m: V.stack_frames([torch.rand(3, 56, 56), torch.rand(3, 42, 56)]), "share one size"),
    (lambda m: V.stack_frames([]), "at least one frame"),
    (lambda m: V.preprocess_frames([torch.rand(3, 40, 50)], width=500), "not a multiple of 14"),
    (lambda m: m([torch.rand(3, 56, 56)]), "tensor"),
])
def test_bad_input_one_clear_line(tiny_vggt: V.VGGT, call, match: str) -> None:
    with pytest.raises(V.VGGTInputError, match=match) as err:
        call(tiny_vggt)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_descriptor_grid_too_small_is_an_input_error(tiny_vggt: V.VGGT) -> None:
    model = _flash_from(tiny_vggt, FV.FlashConfig(kv_downfactor=5, keyframe_every=None, compressed=(1, 2)))
    with pytest.raises(V.VGGTInputError, match="cannot be reduced"):
        model(torch.rand(2, 3, 56, 56))


def test_preprocessing_follows_the_official_crop_rule() -> None:
    frames = V.preprocess_frames([torch.rand(3, 300, 400), torch.rand(3, 301, 401)])
    assert frames.shape == (2, 3, 392, 518)  # round(300 * 518 / 400 / 14) * 14 = 392
    tall = V.preprocess_frames([torch.rand(3, 800, 400)])
    assert tall.shape == (1, 3, 518, 518)  # centre-cropped to 518 rows
    assert math.isclose(round(300 * 518 / 400 / 14) * 14, 392)


def test_registry_builds_tiny_variants() -> None:
    for name in ("vggt_tiny", "flashvggt_tiny", "flashvggt_stream_tiny"):
        model = glocal.zoo.create_model(name, quiet=True)
        with torch.no_grad():
            out = model(torch.rand(2, 3, 56, 56))
        assert out["pose_enc"].shape == (1, 2, 9)


# --------------------------------------------------------------------------------------------- harness task


def test_multiview_task_cells_and_workload() -> None:
    from glocal.benchmarks.tasks import TaskError, get_task

    task = get_task("multiview")
    card, variant = glocal.zoo.resolve("flashvggt_tiny")
    opts = task.check_options(card, variant, {"frames": "3"})
    assert opts == {"frames": 3}
    with pytest.raises(TaskError, match="multiples of 14"):
        task.check_options(card, variant, {"height": "50"})
    with pytest.raises(TaskError, match="streaming models only"):
        task.check_options(card, variant, {"chunk": "2"})
    # VGGT beside FlashVGGT runs FlashVGGT's heads only, so that the difference is the aggregator
    assert task.compare(card, variant, "vggt") == [("vggt_tiny", {"heads": "camera+depth"})]
    assert task.compare(*glocal.zoo.resolve("flashvggt"), "vggt") == [("vggt_1b", {"heads": "camera+depth"})]

    class Cell:
        resolution, task_options = 70, {"frames": 3}

    model = variant.build()
    inputs = task.make_inputs(model, card, variant, Cell, 1, torch.device("cpu"), torch.float32)
    assert inputs["images"].shape == (1, 3, 3, 56, 70)  # height: 3/4 of 70 -> 52.5 -> 56 (a multiple of 14)
    work = task.workload(model, card, variant, Cell)
    assert work["tokens"] == 3 * (5 + 4 * 5) and work["global_kv"] == FV.global_kv_count(3, 4, 5, 2, 1)
    assert work["attention_gmacs"] == FV.attention_macs(3, 56, 70, model.cfg, model.flash)["attention_macs"] / 1e9
    from glocal.benchmarks.tasks.multiview import default_height

    assert default_height(518) == 392


def test_heads_option_keeps_the_same_heads_on_both_sides() -> None:
    from glocal.benchmarks.tasks import TaskError, get_task

    task = get_task("multiview")
    vcard, vggt = glocal.zoo.resolve("vggt_tiny")
    assert task.check_options(vcard, vggt, {"heads": "depth+camera"})["heads"] == "camera+depth"
    with pytest.raises(TaskError, match="heads are camera\\+point\\+depth\\+track"):
        task.check_options(vcard, vggt, {"heads": "camera+normals"})
    fcard, flash = glocal.zoo.resolve("flashvggt_tiny")
    with pytest.raises(TaskError, match="flashvggt_tiny has heads camera\\+depth; cannot run camera\\+point"):
        task.check_options(fcard, flash, {"heads": "point+camera"})
    # VGGT with all its heads cannot be compared with FlashVGGT unless its cells drop point and track
    with pytest.raises(TaskError, match="no point\\+track head: give --opt heads=camera\\+depth"):
        task.compare(vcard, vggt, "flashvggt")
    assert task.compare(vcard, vggt, "flashvggt", {"heads": "camera+depth"}) == [("flashvggt_tiny", {})]

    class Cell:
        resolution, task_options, weights, device = 56, {"frames": 2, "heads": "camera+depth"}, "random", "cpu"

    model = task.build_model(vcard, vggt, Cell)
    assert model.point_head is None and model.track_head is None and model.depth_head is not None
    assert task.workload(model, vcard, vggt, Cell)["heads"] == ["camera", "depth"]
    with torch.no_grad():
        assert set(model(torch.rand(2, 3, 56, 56))) == {"pose_enc", "pose_enc_list", "depth", "depth_conf", "images"}


def test_checkpoint_files_load_through_the_zoo(tmp_path, tiny_vggt: V.VGGT) -> None:
    """A FlashVGGT training file ({"model": ..., "iteration": ...}) and a plain VGGT file both load strictly."""
    flash = _flash_from(tiny_vggt, FV.FLASH_TINY)
    torch.save({"model": flash.state_dict(), "iteration": 3}, tmp_path / "flash.pt")
    torch.save(tiny_vggt.state_dict(), tmp_path / "vggt.pt")
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        want = flash(x)["depth"]
        for name in ("flash.pt", "vggt.pt"):
            model = glocal.zoo.create_model("flashvggt_tiny", weights=str(tmp_path / name), quiet=True)
            assert torch.equal(model(x)["depth"], want)
    with pytest.raises(CheckpointError):
        glocal.zoo.create_model("vggt_tiny", weights=str(tmp_path / "flash.pt"), quiet=True)  # no point head


def test_microbench_arguments_and_workload() -> None:
    from glocal.benchmarks.microbench import vggt as mb

    assert mb.parse_size("392x518") == (392, 518)
    with pytest.raises(mb.BenchError, match="multiples of 14"):
        mb.parse_size("390x518")
    assert mb.parse_ints("8,2,2", "--frames") == [2, 8]
    work = mb.workload("1b", "flashvggt", 10, (392, 518))
    assert work["global_kv"] == 10 * 113 + 28 * 37 and work["tokens"] == 10 * 1041
    assert mb.workload("1b", "vggt", 10, (392, 518))["global_kv"] == 10 * 1041
    assert mb.main(["--shape", "bogus"]) == 2


def test_attention_macs_formula_equals_the_counted_math_kernel(tiny_vggt: V.VGGT) -> None:
    """The attention modules' ``glocal_macs`` equals what the FLOP counter sees on SDPA's math backend (it sees
    nothing of the CPU flash kernel), for VGGT and for FlashVGGT's descriptor keys."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from glocal.benchmarks import compute

    flash = _flash_from(tiny_vggt, FV.FlashConfig(kv_downfactor=2, keyframe_every=2, compressed=(1, 2)))
    x = torch.rand(1, 4, 3, 56, 56)
    for model in (tiny_vggt, flash):
        formula = compute.count_macs(model, call=lambda m=model: m(x))
        with sdpa_kernel(SDPBackend.MATH):
            for mod in model.modules():  # counting without the formula: the counter alone on the math kernel
                if isinstance(mod, V.RopeAttention):
                    mod.glocal_macs = None
            counted = compute.count_macs(model, call=lambda m=model: m(x))
            for mod in model.modules():
                if isinstance(mod, V.RopeAttention):
                    del mod.glocal_macs
        assert formula["formula_gmacs"] > 0 and counted["formula_gmacs"] == 0
        assert formula["gmacs"] == pytest.approx(counted["gmacs"], rel=1e-12)
