"""Scale-DiT on diffusers FLUX: the rules, the processor paths, the per-token patch, the LoRA and the pipeline.

Tiny configurations on CPU; nothing is downloaded (the tiny VAE, text encoders and tokenizers are built here).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from glocal.zoo import CheckpointError, create_model  # noqa: E402
from glocal.zoo.models import scaledit as sd  # noqa: E402
from tests.manifests import load_manifest, manifest_shapes  # noqa: E402

warnings.filterwarnings("ignore", message=".*flex_attention.*")


@pytest.fixture()
def tiny() -> sd.ScaleDiTTransformer:
    torch.manual_seed(0)
    return create_model("scaledit_tiny", weights="random", quiet=True)


@pytest.fixture(params=["scaledit_tiny", "scaledit_flux2_tiny"])
def either_tiny(request: pytest.FixtureRequest) -> sd.ScaleDiTTransformer:
    """The tiny model on each host: FLUX.1 (FluxTransformer2DModel) and FLUX.2 (Flux2Transformer2DModel)."""
    torch.manual_seed(0)
    return create_model(request.param, weights="random", quiet=True)


def _run(model: sd.ScaleDiTTransformer, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


# ------------------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize("rules", sd.RULES)
@pytest.mark.parametrize("text_attend", sd.TEXT_ATTEND)
@pytest.mark.parametrize("shape", [(8, 16, 16, 4, 2), (5, 8, 12, 4, 2), (3, 16, 32, 8, 2), (2, 32, 48, 16, 4)])
def test_counted_pairs_equal_formula(rules: str, text_attend: str, shape: tuple) -> None:
    text, h, w, window, factor = shape
    layout = sd.ScaleDiTLayout(text, h, w, window, factor, rules=rules, text_attend=text_attend)
    assert layout.count_pairs() == layout.pair_formula()
    macs = sd.attention_macs(layout, heads=2, head_dim=16, layers=3)
    assert macs == layout.count_pairs() * 16 * 2 * 2 * 3


def test_pairs_flux_shape_4k_and_dense_ratio() -> None:
    """At 4096 px on FLUX.1-dev (T 512, N 65,536, M 4,096) the formula's pair count, and its ratio to dense."""
    layout = sd.ScaleDiTLayout.for_image(4096, 512)
    assert (layout.n_hi, layout.n_lo, layout.total) == (65_536, 4_096, 70_144)
    pairs = layout.pair_formula()
    assert pairs == 512 * (512 + 65_536) + 65_536 * 512 + sd._band(256, 8) ** 2 + 256 * 16 * (3 * 256 - 2) \
        + sd._band(64, 2) ** 2
    assert layout.dense_pairs() == 4_362_338_304 and pairs == 88_925_540  # 49.1x fewer pairs than dense


def test_layout_ids_and_permutation_round_trip() -> None:
    layout = sd.ScaleDiTLayout(text=3, height=8, width=8, window=4, factor=2)
    hi, lo = torch.randn(2, 64, 5), torch.randn(2, 16, 5)
    seq = layout.pack(hi, lo)
    assert seq.shape == (2, 80, 5)
    assert torch.equal(layout.unpack(seq), hi)
    assert torch.equal(seq[:, :4], hi[:, [0, 1, 2, 3]]) and torch.equal(seq[:, 4:8], hi[:, [8, 9, 10, 11]])
    ids = layout.image_ids()
    assert ids[64:].max() == 3 * 2  # low-res ids on the high-res lattice (x factor)
    assert torch.equal(ids[64 + 1], torch.tensor([0.0, 0.0, 2.0]))


# --------------------------------------------------------------------------------------------- processor
def test_all_true_mask_equals_diffusers_default_processor(either_tiny: sd.ScaleDiTTransformer) -> None:
    tiny = either_tiny
    tiny.configure(128, "dense-sdpa")
    inputs = tiny.make_inputs()
    reference = _run(tiny, inputs)
    proc = sd.ScaleDiTAttnProcessor(impl="sdpa")
    n = tiny.state.layout.total
    proc.mask = torch.ones(1, 1, n, n, dtype=torch.bool)
    sd.set_processors(tiny.transformer, proc)
    torch.testing.assert_close(_run(tiny, inputs), reference, rtol=0, atol=1e-6)
    tiny.configure(128, "dense-flex")  # flex without a mask is dense attention too
    torch.testing.assert_close(_run(tiny, inputs), reference, rtol=0, atol=1e-5)


def _flux1_attention(processor: sd.ScaleDiTAttnProcessor) -> torch.nn.Module:
    from diffusers.models.transformers.transformer_flux import FluxAttention

    return FluxAttention(query_dim=32, dim_head=16, heads=2, out_dim=32, bias=True, pre_only=True, processor=processor)


def _flux2_parallel_attention(processor: sd.ScaleDiTAttnProcessor) -> torch.nn.Module:
    """FLUX.2's fused single-stream attention (QKV + MLP-in in one projection) under the Scale-DiT mask."""
    from diffusers.models.transformers.transformer_flux2 import Flux2ParallelSelfAttention

    return Flux2ParallelSelfAttention(query_dim=32, dim_head=16, heads=2, out_dim=32, mlp_ratio=3.0,
                                      processor=sd.ScaleDiTParallelAttnProcessor(processor))


@pytest.mark.parametrize("build", [_flux1_attention, _flux2_parallel_attention])
@pytest.mark.parametrize("rules", sd.RULES)
def test_changing_a_token_outside_the_allowed_set_leaves_the_window_unchanged(rules: str, build) -> None:
    layout = sd.ScaleDiTLayout(text=4, height=16, width=16, window=4, factor=2, rules=rules)
    torch.manual_seed(0)
    attn = build(sd.ScaleDiTAttnProcessor(layout, impl="sdpa")).eval()
    x = torch.randn(1, layout.total, 32)
    window0 = torch.arange(layout.text, layout.text + layout.window ** 2)  # the first window's tokens
    allowed = layout.dense_mask()
    outside = (~allowed[window0].any(0)).nonzero().flatten()
    assert outside.numel() > layout.total // 2
    k = int(outside[len(outside) // 2])
    y = x.clone()
    y[0, k] += 5.0
    with torch.no_grad():
        a, b = attn(x), attn(y)
    assert torch.equal(a[0, window0], b[0, window0])
    seen_by = allowed[:, k].nonzero().flatten()
    assert (a[0, seen_by] - b[0, seen_by]).abs().max() > 1e-3  # the change is visible where the rules allow


@pytest.mark.parametrize("rules", sd.RULES)
def test_block_mask_path_equals_boolean_reference(either_tiny: sd.ScaleDiTTransformer, rules: str) -> None:
    tiny = either_tiny
    tiny.configure(256, "scaledit", impl="sdpa", rules=rules)
    inputs = tiny.make_inputs()
    reference = _run(tiny, inputs)
    tiny.configure(256, "scaledit", impl="flex", rules=rules)
    torch.testing.assert_close(_run(tiny, inputs), reference, rtol=0, atol=1e-5)


def test_flop_counter_path_equals_boolean_reference(either_tiny: sd.ScaleDiTTransformer) -> None:
    """Under a dispatch mode (the harness's FLOP counter) flex cannot run: the row-chunked SDPA path gives the
    same output, and the counted MACs are the formula's."""
    from glocal.benchmarks import compute

    tiny = either_tiny

    tiny.configure(256, "scaledit", impl="sdpa")
    inputs = tiny.make_inputs()
    reference = _run(tiny, inputs)
    tiny.configure(256, "scaledit", impl="flex", compile_flex=True)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        out = _run(tiny, inputs)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    macs = compute.count_macs(tiny, call=lambda: tiny(**inputs))
    assert macs["gmacs"] == pytest.approx(tiny.generation_workload()["step_gmacs"])


def _listed(num: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """A BlockMask's (count, indices) lists as a boolean [q blocks, kv blocks]."""
    out = torch.zeros(num.shape[-1], idx.shape[-1], dtype=torch.bool)
    for qb in range(num.shape[-1]):
        out[qb, idx[0, 0, qb, : num[0, 0, qb]]] = True
    return out


def _materialise(bm: object) -> torch.Tensor:
    """The token mask a BlockMask stands for over the padded sequence: its full blocks all true, its partial blocks
    through its own mask_mod, every other block false."""
    block = bm.BLOCK_SIZE[0]
    full = _listed(bm.full_kv_num_blocks, bm.full_kv_indices)
    part = _listed(bm.kv_num_blocks, bm.kv_indices)
    n = full.shape[0] * block
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    grow = lambda m: m.repeat_interleave(block, 0).repeat_interleave(block, 1)  # noqa: E731
    return grow(full) | (grow(part) & bm.mask_mod(0, 0, q, k))


@pytest.mark.parametrize("lowres", [True, False])
@pytest.mark.parametrize("text_attend", sd.TEXT_ATTEND)
@pytest.mark.parametrize("rules", sd.RULES)
@pytest.mark.parametrize(("shape", "block"), [((3, 32, 32, 8, 2), 128), ((8, 16, 16, 4, 2), 16), ((5, 8, 12, 4, 2), 8),
                                              ((77, 32, 48, 16, 4), 128)])
def test_block_mask_materialises_to_the_dense_mask(shape: tuple, block: int, rules: str, text_attend: str,
                                                   lowres: bool) -> None:
    """Full blocks, partial blocks through mask_mod, nothing elsewhere: exactly the rules' token mask, and padding
    (up to the block size) is never allowed."""
    layout = sd.ScaleDiTLayout(*shape, rules=rules, text_attend=text_attend, lowres=lowres)
    mask = _materialise(layout.block_mask(block=block))
    n = layout.total
    assert torch.equal(mask[:n, :n], layout.dense_mask())
    assert not mask[n:].any() and not mask[:, n:].any()


def _bounds_exact(layout: sd.ScaleDiTLayout, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block structure fast and exact; asserts partial | full covers the exact one and full is within exact full."""
    partial, full = layout.block_structure(block=block)
    ex_partial, ex_full = layout.block_structure(block=block, exact=True)
    assert not (partial & full).any() and not (ex_partial & ex_full).any()
    assert not ((ex_partial | ex_full) & ~(partial | full)).any(), "a block holding an allowed pair was dropped"
    assert not (full & ~ex_full).any(), "a block with a disallowed pair was called full"
    return partial | full, ex_partial | ex_full, full


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=st.integers(0, 40), window_factor=st.sampled_from([(2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2),
                                                               (8, 4), (8, 8)]),
       windows=st.tuples(st.integers(1, 4), st.integers(1, 4)), block=st.sampled_from([8, 16, 32, 128]),
       rules=st.sampled_from(sd.RULES), text_attend=st.sampled_from(sd.TEXT_ATTEND), lowres=st.booleans())
def test_block_structure_bounds_the_exact_one(text: int, window_factor: tuple, windows: tuple, block: int, rules: str,
                                              text_attend: str, lowres: bool) -> None:
    """Drawn layouts, windows and blocks aligned or not: the fast structure never drops a block holding an allowed
    pair and never calls a block full that is not (against the token-level reduction)."""
    window, factor = window_factor
    layout = sd.ScaleDiTLayout(text, windows[0] * window, windows[1] * window, window, factor, rules=rules,
                               text_attend=text_attend, lowres=lowres)
    _bounds_exact(layout, block)


@pytest.mark.parametrize("lowres", [True, False])
@pytest.mark.parametrize("text_attend", sd.TEXT_ATTEND)
@pytest.mark.parametrize("rules", sd.RULES)
@pytest.mark.parametrize(("shape", "block"), [((16, 16, 16, 4, 2), 16), ((128, 64, 32, 16, 4), 128),
                                              ((16, 32, 16, 4, 2), 16)])
def test_block_structure_is_exact_where_blocks_are_grid_rectangles(shape: tuple, block: int, rules: str,
                                                                   text_attend: str, lowres: bool) -> None:
    """Blocks aligned with the windows (as on FLUX: text a multiple of 128 tokens, 256-token windows, 128-token
    blocks): a block's tokens of a group are a grid rectangle (split where a shifted window wraps round, the
    training rules' holes), so value ranges decide each block pair exactly."""
    layout = sd.ScaleDiTLayout(*shape, rules=rules, text_attend=text_attend, lowres=lowres)
    fast, exact, full = _bounds_exact(layout, block)
    assert torch.equal(fast, exact)
    assert torch.equal(full, layout.block_structure(block=block, exact=True)[1])


def test_block_structure_at_4096_px_touches_no_token_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 4096 px (70,144 tokens, 548 blocks) the structure comes from block ranges alone; it covers at least the
    allowed pairs, its full blocks at most, text rows see all text and high-res blocks, low-res rows no text."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("token pairs evaluated")

    layout = sd.ScaleDiTLayout.for_image(4096, 512)
    monkeypatch.setattr(sd.ScaleDiTLayout, "allowed", refuse)
    monkeypatch.setattr(sd.ScaleDiTLayout, "mask_rows", refuse)
    partial, full = layout.block_structure()
    text, hi = 512 // sd.BLOCK, 65_536 // sd.BLOCK
    assert partial.shape == (text + hi + 4096 // sd.BLOCK,) * 2
    assert int((partial | full).sum()) * sd.BLOCK ** 2 >= layout.pair_formula() >= int(full.sum()) * sd.BLOCK ** 2
    assert full[:text, :text + hi].all() and not (partial | full)[:text, text + hi:].any()
    assert not (partial | full)[text + hi:, :text + hi].any()
    assert int((partial | full)[text + 100, text:text + hi].sum()) == 9  # a high-res block: 3 x 3 neighbour blocks


# ------------------------------------------------------------------------------------------- timestep patch
def test_per_token_modulation_equals_unpatched_blocks_at_one_timestep(tiny: sd.ScaleDiTTransformer) -> None:
    """With the guidance tokens at the same timestep as the rest, the patched blocks equal the stock ones."""
    layout = tiny.configure(256, "scaledit", impl="sdpa")
    tr = tiny.transformer
    torch.manual_seed(1)
    img = torch.randn(1, layout.n_hi + layout.n_lo, 32)
    txt = torch.randn(1, layout.text, 32)
    temb = torch.randn(1, 32)
    rope = tr.pos_embed(torch.cat([torch.zeros(layout.text, 3), layout.image_ids()]))
    for block in (tr.transformer_blocks[0], tr.single_transformer_blocks[0]):
        with torch.no_grad():
            stock = block._scaledit_stock_forward(img, txt, temb, rope)
            tiny.groups.lowres, tiny.groups.lowres_temb = layout.n_lo, temb.clone()
            patched = block(img, txt, temb, rope)
            tiny.groups.lowres_temb = torch.randn(1, 32)
            other = block(img, txt, temb, rope)
            tiny.groups.lowres, tiny.groups.lowres_temb = 0, None
        for s, p in zip(stock, patched, strict=True):
            torch.testing.assert_close(p, s, rtol=0, atol=1e-6)
        assert (other[1][0, -layout.n_lo:] - stock[1][0, -layout.n_lo:]).abs().max() > 1e-4


def test_guidance_tokens_run_at_t0(tiny: sd.ScaleDiTTransformer) -> None:
    """The model computes the guidance tokens' embedding at t = 0: equal to a forward whose timestep is 0."""
    tiny.configure(128, "scaledit", impl="sdpa")
    inputs = tiny.make_inputs(timestep=0.0)
    a = _run(tiny, inputs)
    tiny.groups.lowres = 0
    for block in (*tiny.transformer.transformer_blocks, *tiny.transformer.single_transformer_blocks):
        block.forward = block._scaledit_stock_forward  # unpatched: every token at the input timestep (0)
    torch.testing.assert_close(_run(tiny, inputs), a, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ LoRA
def test_official_lora_layout_matches_manifest_on_flux1_dev_host() -> None:
    from diffusers import FluxTransformer2DModel

    manifest = load_manifest("scaledit", "lora_flux1_dev_r16")
    with torch.device("meta"):
        host = FluxTransformer2DModel(**sd.FLUX1_DEV)
    assert sum(p.numel() for p in host.parameters()) == manifest["host_num_params"] == 11_901_408_320
    layout = sd.lora_layout(host)
    assert layout == manifest_shapes(manifest)
    assert len(layout) == manifest["num_state_dict_entries"] == 686
    assert sum(a * b for a, b in layout.values()) == manifest["num_params"]


def _full_depth_tiny() -> sd.ScaleDiTTransformer:
    torch.manual_seed(0)
    return sd.ScaleDiTTransformer(sd.FLUX_TINY, window=4, factor=2, text_tokens=8, num_layers=19,
                                  num_single_layers=38).eval()


def test_random_lora_in_official_layout_loads_strictly() -> None:
    """Every key of the official layout (FLUX.1-dev depth, tiny widths) is used by diffusers/peft, none missing."""
    from peft.utils import get_peft_model_state_dict

    model = _full_depth_tiny()
    keys = set(manifest_shapes(load_manifest("scaledit", "lora_flux1_dev_r16")))
    shapes = sd.lora_layout(model.transformer)
    assert set(shapes) == keys
    g = torch.Generator().manual_seed(0)
    lora = {k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}
    sd.load_lora(model, lora)
    loaded = get_peft_model_state_dict(model.transformer, adapter_name="scaledit")
    assert {f"transformer.{k}" for k in loaded} == keys
    for k, v in loaded.items():
        assert torch.equal(v, lora[f"transformer.{k}"])


def test_lora_acts_with_guidance_tokens_and_is_off_without(either_tiny: sd.ScaleDiTTransformer) -> None:
    tiny = either_tiny
    tiny.configure(128, "dense-sdpa")
    dense_inputs = tiny.make_inputs()
    before_dense = _run(tiny, dense_inputs)
    tiny.configure(128, "scaledit", impl="sdpa")
    inputs = tiny.make_inputs()
    before = _run(tiny, inputs)
    g = torch.Generator().manual_seed(0)
    sd.load_lora(tiny, {k: torch.randn(s, generator=g) * 0.2 for k, s in sd.lora_layout(tiny.transformer).items()})
    assert (_run(tiny, inputs) - before).abs().max() > 1e-3
    tiny.configure(128, "dense-sdpa")
    torch.testing.assert_close(_run(tiny, dense_inputs), before_dense, rtol=0, atol=1e-6)


def test_deep_copy_follows_its_own_token_groups(either_tiny: sd.ScaleDiTTransformer) -> None:
    """The harness deep-copies models (precision reference): patched blocks, modulation hooks and gated LoRA layers
    of the copy must read the copy's token groups, so the copy computes the same step."""
    import copy

    tiny = either_tiny
    tiny.configure(128, "scaledit", impl="sdpa")
    g = torch.Generator().manual_seed(0)
    sd.load_lora(tiny, {k: torch.randn(s, generator=g) * 0.2 for k, s in sd.lora_layout(tiny.transformer).items()})
    inputs = tiny.make_inputs()
    twin = copy.deepcopy(tiny)
    assert twin.groups is not tiny.groups
    torch.testing.assert_close(_run(twin, inputs), _run(tiny, inputs), rtol=0, atol=0)


def test_lora_of_another_layout_is_refused_in_one_line() -> None:
    model = sd.ScaleDiTTransformer(sd.FLUX_TINY, window=4, factor=2, text_tokens=8)
    shapes = sd.lora_layout(model.transformer)
    lora = {k: torch.zeros(s) for k, s in shapes.items()}
    lora.pop(next(iter(lora)))
    with pytest.raises(CheckpointError, match=r"^LoRA does not match this host: 1 missing") as e:
        sd.load_lora(model, lora)
    assert "\n" not in str(e.value)


def test_guidance_only_targets_apply_lora_to_the_guidance_rows() -> None:
    model = sd.ScaleDiTTransformer(sd.FLUX_TINY, window=4, factor=2, text_tokens=8)
    g = torch.Generator().manual_seed(0)
    sd.load_lora(model, {k: torch.randn(s, generator=g) for k, s in sd.lora_layout(model.transformer).items()})
    x = torch.randn(1, 10, 16)
    emb = model.transformer.x_embedder
    model.groups.lowres = 3
    with torch.no_grad():
        y = emb(x)
    model.groups.lowres = 0
    with torch.no_grad():
        torch.testing.assert_close(y[:, :7], emb.base_layer(x[:, :7]))
        torch.testing.assert_close(y[:, 7:], emb(x)[:, 7:])
        assert (y[:, 7:] - emb.base_layer(x[:, 7:])).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------ pipeline
def _tiny_flux_pipeline(model: sd.ScaleDiTTransformer) -> object:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {w: i for i, w in enumerate("[PAD] [UNK] a photo of cat dog red".split())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()

    def tokenizer() -> PreTrainedTokenizerFast:
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       model_max_length=model.text_tokens)

    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8))
    t5 = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, scaling_factor=1.0, shift_factor=0.0)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    return FluxPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=clip.eval(), tokenizer=tokenizer(),
                        text_encoder_2=t5.eval(), tokenizer_2=tokenizer(), transformer=model.transformer)


def test_two_stage_pipeline_writes_an_image_of_the_requested_size(tiny: sd.ScaleDiTTransformer, tmp_path) -> None:
    pipe = sd.ScaleDiTPipeline(_tiny_flux_pipeline(tiny), tiny)
    images = pipe("a photo of a red cat", side=256, steps_low=2, steps_high=2, seed=3, impl="sdpa")
    assert len(images) == 1 and images[0].size == (256, 256)
    images[0].save(tmp_path / "seed3.png")
    assert (tmp_path / "seed3.png").stat().st_size > 0
    assert tiny.state.attention == "scaledit" and tiny.state.layout.n_lo == 64  # the high-res pass was sparse


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_gets_one_clear_line(tiny: sd.ScaleDiTTransformer) -> None:
    with pytest.raises(sd.ScaleDiTError, match=r"image side 300 px is not a multiple of the 4-token window \(64 px\)"):
        tiny.configure(300)
    with pytest.raises(sd.ScaleDiTError, match=r"image side 1000 px is not a multiple of the 16-token window "):
        sd.ScaleDiTLayout.for_image(1000, 512)
    with pytest.raises(sd.ScaleDiTError, match=r"unknown attention mode 'sparse'; expected one of scaledit"):
        tiny.configure(256, "sparse")
    with pytest.raises(sd.ScaleDiTError, match=r"unknown Scale-DiT rules 'paper'"):
        tiny.configure(256, rules="paper")
    with pytest.raises(sd.ScaleDiTError, match=r"unknown attention implementation 'xformers'"):
        tiny.configure(256, impl="xformers")
    with pytest.raises(sd.ScaleDiTError, match=r"dense 70144x70144 mask is refused"):
        sd.ScaleDiTLayout.for_image(4096, 512).dense_mask()
    with pytest.raises(sd.ScaleDiTError, match=r"call configure"):
        sd.ScaleDiTTransformer(sd.FLUX_TINY, window=4, factor=2, text_tokens=8).make_inputs()


# ------------------------------------------------------------------------------------------ generation task
def _cell(resolution: int, **options: object) -> object:
    from types import SimpleNamespace

    from glocal.benchmarks.tasks import get_task
    from glocal.zoo import resolve

    card, variant = resolve("scaledit_tiny")
    task = get_task("generation")
    opts = task.check_options(card, variant, {k: str(v) for k, v in options.items()})
    return task, card, variant, SimpleNamespace(resolution=resolution, task_options=opts, weights="random",
                                                device="cpu", channels_last=False)


def test_generation_task_options_compare_and_workload() -> None:
    from glocal.benchmarks.tasks import TaskError

    task, card, variant, cell = _cell(128, compile_flex="false", impl="sdpa")
    assert cell.task_options["attention"] == "scaledit" and cell.task_options["frames"] == 1
    assert task.compare(card, variant, "dense") == [("scaledit_tiny", {"attention": "dense-sdpa"}),
                                                    ("scaledit_tiny", {"attention": "dense-flex"})]
    with pytest.raises(TaskError, match=r"^scaledit_tiny has no attention 'sparse' \(modes: scaledit, dense-sdpa"):
        task.check_options(card, variant, {"attention": "sparse"})
    with pytest.raises(TaskError, match=r"cannot run at 100: sizes must be positive multiples of 64"):
        task.check_resolution(card, variant, 100)
    model = task.build_model(card, variant, cell)
    inputs = task.make_inputs(model, card, variant, cell, 2, torch.device("cpu"), torch.float32)
    assert inputs["hidden_states"].shape == (2, 64 + 16, 16) and inputs["img_ids"].shape == (80, 3)
    assert task.forward(model, inputs).shape == (2, 80, 16)
    work = task.workload(model, card, variant, cell)
    layout = model.state.layout
    assert work["tokens"] == {"text": 8, "high_res": 64, "low_res": 16, "total": 88}
    assert work["pair_fraction"] == layout.count_pairs() / 88 ** 2
    assert work["attention_gmacs"] == layout.count_pairs() * 16 * 2 * 2 * 2 / 1e9
    _, _, _, frames_cell = _cell(128, frames=4)
    with pytest.raises(TaskError, match="frames must be 1"):
        task.build_model(card, variant, frames_cell)


def test_dense_cell_workload_counts_dense_pairs() -> None:
    task, card, variant, cell = _cell(128, attention="dense-sdpa")
    model = task.build_model(card, variant, cell)
    work = task.workload(model, card, variant, cell)
    assert work["pair_fraction"] == 1.0 and work["tokens"]["low_res"] == 0
    assert work["attention_gmacs"] == (8 + 64) ** 2 * 16 * 2 * 2 * 2 / 1e9


# ------------------------------------------------------------------------------------------------ quality
def test_prompt_loader_txt_and_jsonl(tmp_path) -> None:
    from glocal.benchmarks.metrics import generation as gm

    (tmp_path / "p.txt").write_text("a red cat\n\n# a comment\na dog\n")
    assert gm.load_prompts(tmp_path / "p.txt", base_seed=10) == [gm.Prompt("a red cat", 10), gm.Prompt("a dog", 11)]
    (tmp_path / "p.jsonl").write_text('{"prompt": "x", "seed": 7}\n{"prompt": "y"}\n')
    assert gm.load_prompts(tmp_path / "p.jsonl") == [gm.Prompt("x", 7), gm.Prompt("y", 1)]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n{"text": "y"}\n')
    with pytest.raises(gm.GenerationDataError, match=r"bad.jsonl:2: expected an object with a string 'prompt'"):
        gm.load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{oops\n")
    with pytest.raises(gm.GenerationDataError, match=r"broken.jsonl:1: not JSON"):
        gm.load_prompts(tmp_path / "broken.jsonl")
    with pytest.raises(gm.GenerationDataError, match="prompt file not found"):
        gm.load_prompts(tmp_path / "missing.txt")


def test_clip_score_is_the_cosine_of_the_embeddings() -> None:
    from glocal.benchmarks.metrics import generation as gm

    images = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    texts = {"x": [2.0, 0.0], "y": [1.0, 0.0], "z": [1.0, 0.0]}
    score = gm.clip_score(images, ["x", "y", "z"], lambda x: x, lambda t: torch.tensor([texts[s] for s in t]))
    torch.testing.assert_close(score, torch.tensor([1.0, 2 ** -0.5, 0.0]))


def test_frechet_distance_closed_forms() -> None:
    from glocal.benchmarks.metrics import generation as gm

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 4, generator=g)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0])
    assert gm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert gm.frechet_distance(a, a + shift) == pytest.approx(float((shift ** 2).sum()), abs=1e-6)
    x, y = torch.randn(500, 1, generator=g), torch.randn(500, 1, generator=g) * 3 + 1  # 1-D: dm^2 + (s1 - s2)^2
    expected = float((x.mean() - y.mean()) ** 2 + (x.double().std() - y.double().std()) ** 2)
    assert gm.frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)


def test_patch_crops_grid_and_random() -> None:
    from glocal.benchmarks.metrics import generation as gm

    image = torch.arange(3 * 8 * 12, dtype=torch.float32).view(3, 8, 12)
    grid = gm.patch_crops(image, 4)
    assert grid.shape == (6, 3, 4, 4)
    assert torch.equal(grid[4], image[:, 4:8, 4:8])
    assert gm.patch_crops(image, 4, count=5, seed=1).shape == (5, 3, 4, 4)
    with pytest.raises(gm.GenerationDataError, match="crop 16 is larger than the image"):
        gm.patch_crops(image, 16)


def test_inception_extractor_needs_a_weights_file(tmp_path) -> None:
    from glocal.benchmarks.metrics import generation as gm

    with pytest.raises(gm.GenerationDataError, match=r"^Inception weights file not found: .*inception=KIND:PATH"):
        gm.inception_extractor("torchmetrics", tmp_path / "none.pth")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(gm.GenerationDataError, match="unknown Inception extractor 'tf'"):
        gm.inception_extractor("tf", tmp_path / "w.pth")


def test_quality_evaluator_refuses_random_weights(tiny: sd.ScaleDiTTransformer, tmp_path) -> None:
    from glocal.benchmarks.tasks import DatasetSpec, EvalContext, TaskError, get_evaluator

    (tmp_path / "p.txt").write_text("a cat\n")
    spec = DatasetSpec.parse(f"prompts={tmp_path / 'p.txt'},pipeline={tmp_path},out={tmp_path / 'out'}")
    entry = get_evaluator(spec, "generation")
    assert entry.needs_pretrained
    with pytest.raises(TaskError, match=r"^generation quality needs real weights \(got random weights\)"):
        entry.fn(tiny, None, None, spec, EvalContext(device=torch.device("cpu")))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ microbench
def test_microbench_mask_builds_fast_against_exact(capsys: pytest.CaptureFixture) -> None:
    """``bench microbench scaledit --masks``: per side and rule set the block fractions of both builds, whether
    they are identical, and the exact build skipped once its scaled estimate exceeds the budget."""
    from glocal.benchmarks.microbench import scaledit as mb

    rows = mb._mask_builds("tiny", [512, 256], torch.device("cpu"), budget_s=1e-9)
    assert [(r["side"], r["rules"]) for r in rows] == [(256, "inference"), (512, "inference"), (256, "training"),
                                                       (512, "training")]
    first = rows[0]
    partial, full = sd.ScaleDiTLayout.for_image(256, 8, 4, 2).block_structure()
    assert first["blocks"] == 3 and first["fast_partial"] == first["exact_partial"] == int(partial.sum()) / 9
    assert first["fast_full"] == int(full.sum()) / 9 and first["identical"] is True
    assert rows[1]["exact_skipped"].startswith("estimated ") and "exact_s" not in rows[1]
    assert mb.main(["--masks", "--shape", "tiny", "--sides", "256"]) == 0
    out = capsys.readouterr().out
    assert "Scale-DiT BlockMask build" in out and "tiny         256 inference     328      3" in out
