"""Scale-DiT on diffusers' FLUX.2 (Flux2Transformer2DModel, the official v4 host): the processors, the per-token
modulation hooks, the official FLUX.2-klein LoRA layout (strict load, per-group gating) and the generation task.

Tiny configurations on CPU; the 9B host is built on the meta device (no memory); nothing is downloaded.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from glocal.zoo import CheckpointError, create_model  # noqa: E402
from glocal.zoo.models import scaledit as sd  # noqa: E402
from tests.manifests import load_manifest, manifest_shapes  # noqa: E402

warnings.filterwarnings("ignore", message=".*flex_attention.*")
MANIFEST = "lora_flux2_klein_9b_r16"


@pytest.fixture()
def tiny() -> sd.ScaleDiTFlux2Transformer:
    torch.manual_seed(0)
    return create_model("scaledit_flux2_tiny", weights="random", quiet=True)


def _run(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


def _random_lora(model: sd.ScaleDiTTransformer, seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * scale for k, s in sd.lora_layout(model.transformer).items()}


# --------------------------------------------------------------------------------------------- processors
# The all-true-mask, BlockMask-vs-boolean and outside-token tests run on both hosts in test_scaledit.py.
def test_dense_sdpa_restores_diffusers_flux2_processors(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    from diffusers.models.transformers.transformer_flux2 import Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor

    tr = tiny.transformer
    tiny.configure(128, "scaledit")
    double, single = tr.transformer_blocks[0].attn.processor, tr.single_transformer_blocks[0].attn.processor
    assert type(double) is sd.ScaleDiTAttnProcessor and single.base is double
    tiny.configure(128, "dense-sdpa")
    assert type(tr.transformer_blocks[0].attn.processor) is Flux2AttnProcessor
    assert type(tr.single_transformer_blocks[0].attn.processor) is Flux2ParallelSelfAttnProcessor


# ------------------------------------------------------------------------------------------ modulation hooks
def test_guidance_tokens_modulated_at_t0_equal_stock_forward_at_t0(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    """At timestep 0 every token shares one timestep: the hooked model equals diffusers' stock forward (hooks idle
    outside the wrapper); at another timestep the guidance tokens' t = 0 modulation changes the output."""
    tiny.configure(128, "scaledit", impl="sdpa")
    stock = tiny.transformer
    at0 = tiny.make_inputs(timestep=0.0)
    torch.testing.assert_close(_run(tiny, at0), _run(stock, {**at0, "return_dict": False})[0], rtol=0, atol=1e-6)
    at_half = tiny.make_inputs(timestep=0.5)
    assert (_run(tiny, at_half) - _run(stock, {**at_half, "return_dict": False})[0]).abs().max() > 1e-4


def test_modulation_hook_rows(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    """Per-token modulation: main rows carry the per-sample modulation of t, guidance rows that of t = 0."""
    tr, g = tiny.transformer, tiny.groups
    temb, temb0 = torch.randn(2, 32), torch.randn(2, 32)
    g.lowres, g.lowres_temb, g.text, g.high_res = 3, temb0, 5, 7
    try:
        with torch.no_grad():
            double, single = tr.double_stream_modulation_img(temb), tr.single_stream_modulation(temb)
    finally:
        g.lowres, g.lowres_temb = 0, None
    with torch.no_grad():
        for mod, out, main in ((tr.double_stream_modulation_img, double, 7), (tr.single_stream_modulation, single, 12)):
            assert out.shape == (2, main + 3, mod.linear.out_features)
            torch.testing.assert_close(out[:, :main], mod(temb)[:, None].expand(2, main, -1), rtol=0, atol=0)
            torch.testing.assert_close(out[:, main:], mod(temb0)[:, None].expand(2, 3, -1), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ the LoRA
def test_official_lora_layout_matches_manifest_on_flux2_klein_9b_host() -> None:
    from diffusers import Flux2Transformer2DModel

    manifest = load_manifest("scaledit", MANIFEST)
    assert manifest["host_config"] == {k: list(v) if isinstance(v, tuple) else v for k, v in sd.FLUX2_KLEIN_9B.items()}
    with torch.device("meta"):
        host = Flux2Transformer2DModel(**sd.FLUX2_KLEIN_9B)
    official = re.compile(manifest["constructor_args"]["target_modules"])
    ours = re.compile(sd.LORA_TARGETS_FLUX2)
    names = [n for n, _ in host.named_modules()]
    assert [n for n in names if official.fullmatch(n)] == [n for n in names if ours.fullmatch(n)]
    assert sum(p.numel() for p in host.parameters()) == manifest["host_num_params"] == 9_078_581_248
    layout = sd.lora_layout(host)
    assert list(layout.items()) == list(manifest_shapes(manifest).items())  # keys, order and shapes
    assert len(layout) == manifest["num_state_dict_entries"] == 194
    assert sum(a * b for a, b in layout.values()) == manifest["num_params"] == 33_622_016


def _full_depth_tiny() -> sd.ScaleDiTFlux2Transformer:
    torch.manual_seed(0)
    return sd.ScaleDiTFlux2Transformer(sd.FLUX2_TINY, window=4, factor=2, ntk_factor=1.0, text_tokens=8,
                                       num_layers=8, num_single_layers=24).eval()


def test_random_lora_in_official_flux2_layout_loads_strictly() -> None:
    """Every key of the official FLUX.2-klein layout (klein depth, tiny widths) is used by diffusers/peft."""
    from peft.utils import get_peft_model_state_dict

    model = _full_depth_tiny()
    keys = list(manifest_shapes(load_manifest("scaledit", MANIFEST)))
    assert list(sd.lora_layout(model.transformer)) == keys
    lora = _random_lora(model)
    sd.load_lora(model, lora)
    loaded = get_peft_model_state_dict(model.transformer, adapter_name="scaledit")
    assert sorted(f"transformer.{k}" for k in loaded) == keys
    for k, v in loaded.items():
        assert torch.equal(v, lora[f"transformer.{k}"])
    layers = model.guidance_only_layers()
    assert len(layers) == 97 and all(hasattr(m, "_scaledit_groups") for m in layers)
    assert {m.scaling["scaledit"] for m in layers} == {1.0}  # alpha = rank = 16, as train_flux2.yaml


def test_mismatched_flux2_lora_is_refused_in_one_line(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    lora = _random_lora(tiny)
    lora["transformer.transformer_blocks.0.norm1.linear.lora_A.weight"] = torch.zeros(16, 32)  # a FLUX.1 target
    with pytest.raises(CheckpointError, match=r"^LoRA does not match this host: 0 missing .*, 1 unexpected "
                                              r"\(e\.g\. \['transformer\.transformer_blocks\.0\.norm1") as e:
        sd.load_lora(tiny, lora)
    assert "\n" not in str(e.value)
    lora = _random_lora(tiny)
    lora["transformer.x_embedder.lora_A.weight"] = torch.zeros(16, 17)
    with pytest.raises(CheckpointError, match=r"1 of another shape \(e\.g\. \['transformer\.x_embedder\.lora_A"):
        sd.load_lora(tiny, lora)
    assert not tiny.lora_loaded


def test_every_lora_target_acts_on_the_guidance_rows_only(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    """In a real forward with guidance tokens, every LoRA layer (q/k/v included, unlike FLUX.1) gives the main rows
    exactly its base layer's output and the guidance rows the adapted output."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layout = tiny.configure(128, "scaledit", impl="sdpa")
    sd.load_lora(tiny, _random_lora(tiny))
    seen: dict[str, tuple[float, float]] = {}

    def check(name: str):
        def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            x, m = args[0], layout.n_lo
            main = (out[:, :-m] - module.base_layer(x[:, :-m])).abs().max()
            guide = (out[:, -m:] - module.base_layer(x[:, -m:])).abs().max()
            seen[name] = (float(main), float(guide))
        return hook

    layers = {n: mod for n, mod in tiny.transformer.named_modules() if isinstance(mod, BaseTunerLayer)}
    handles = [mod.register_forward_hook(check(n)) for n, mod in layers.items()]
    _run(tiny, tiny.make_inputs())
    for h in handles:
        h.remove()
    assert set(seen) == set(layers) and len(layers) == 9  # x_embedder, q, k, v, out.0, ff in/out, qkv_mlp, to_out
    for name, (main, guide) in seen.items():
        assert main == 0.0 and guide > 1e-4, (name, main, guide)


def _official_v4_step(model: sd.ScaleDiTFlux2Transformer, inputs: dict) -> torch.Tensor:
    """An independent reference: the official v4 forward (src/flux/transformer2.py, block2.py) on the same diffusers
    modules, the guidance tokens as a separate stream (x_embedder, modulation at t = 0, every LoRA target on) and
    the text and high-res tokens with the base weights; one boolean mask over [text | high-res | low-res]."""
    import torch.nn.functional as F
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux2 import Flux2Modulation

    tr, layout = model.transformer, model.state.layout
    n, heads = layout.n_hi, tr.config.num_attention_heads

    def base(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer.base_layer(x) if hasattr(layer, "base_layer") else layer(x)

    def lora(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return type(layer).forward(layer, x)  # peft's forward, adapter on (not the gated instance forward)

    def attend(q: list, k: list, v: list, rope: tuple) -> torch.Tensor:
        q, k, v = (torch.cat(x, 1).unflatten(-1, (heads, -1)) for x in (q, k, v))
        q, k = (apply_rotary_emb(x, rope, sequence_dim=1) for x in (q, k))
        out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), attn_mask=mask)
        return out.transpose(1, 2).flatten(2)

    def heads_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x.unflatten(-1, (heads, -1))).flatten(2)

    mask = layout.dense_mask()
    hi, lo = inputs["hidden_states"][:, :n], inputs["hidden_states"][:, n:]
    h, g = base(tr.x_embedder, hi), lora(tr.x_embedder, lo)
    temb = tr.time_guidance_embed(inputs["timestep"] * 1000, None)
    temb0 = tr.time_guidance_embed(torch.zeros_like(inputs["timestep"]), None)
    c = tr.context_embedder(inputs["encoder_hidden_states"])
    rope = tr.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
    text = c.shape[1]
    for blk in tr.transformer_blocks:
        (a, b), (ct_a, ct_b), (lr_a, lr_b) = (Flux2Modulation.split(mod, 2) for mod in (
            tr.double_stream_modulation_img(temb), tr.double_stream_modulation_txt(temb),
            tr.double_stream_modulation_img(temb0)))
        nh, nc, ng = ((1 + m[1]) * blk.norm1(x) + m[0] for x, m in ((h, a), (c, ct_a), (g, lr_a)))
        at = blk.attn
        q = [heads_norm(at.norm_added_q, at.add_q_proj(nc)), heads_norm(at.norm_q, base(at.to_q, nh)),
             heads_norm(at.norm_q, lora(at.to_q, ng))]
        k = [heads_norm(at.norm_added_k, at.add_k_proj(nc)), heads_norm(at.norm_k, base(at.to_k, nh)),
             heads_norm(at.norm_k, lora(at.to_k, ng))]
        v = [at.add_v_proj(nc), base(at.to_v, nh), lora(at.to_v, ng)]
        out = attend(q, k, v, rope)
        c = c + ct_a[2] * at.to_add_out(out[:, :text])
        h = h + a[2] * base(at.to_out[0], out[:, text:text + n])
        g = g + lr_a[2] * lora(at.to_out[0], out[:, text + n:])
        ff = blk.ff
        h = h + b[2] * base(ff.linear_out, ff.act_fn(base(ff.linear_in, (1 + b[1]) * blk.norm2(h) + b[0])))
        g = g + lr_b[2] * lora(ff.linear_out, ff.act_fn(lora(ff.linear_in, (1 + lr_b[1]) * blk.norm2(g) + lr_b[0])))
        c = c + ct_b[2] * blk.ff_context((1 + ct_b[1]) * blk.norm2_context(c) + ct_b[0])
    x = torch.cat([c, h], 1)
    for blk in tr.single_transformer_blocks:
        (m,), (lr,) = Flux2Modulation.split(tr.single_stream_modulation(temb), 1), Flux2Modulation.split(
            tr.single_stream_modulation(temb0), 1)
        at = blk.attn
        px = base(at.to_qkv_mlp_proj, (1 + m[1]) * blk.norm(x) + m[0])
        pg = lora(at.to_qkv_mlp_proj, (1 + lr[1]) * blk.norm(g) + lr[0])
        (qx, kx, vx, mx), (qg, kg, vg, mg) = ((*p[..., :3 * at.inner_dim].chunk(3, -1), p[..., 3 * at.inner_dim:])
                                              for p in (px, pg))
        out = attend([heads_norm(at.norm_q, qx), heads_norm(at.norm_q, qg)],
                     [heads_norm(at.norm_k, kx), heads_norm(at.norm_k, kg)], [vx, vg], rope)
        x = x + m[2] * base(at.to_out, torch.cat([out[:, :-g.shape[1]], at.mlp_act_fn(mx)], -1))
        g = g + lr[2] * lora(at.to_out, torch.cat([out[:, -g.shape[1]:], at.mlp_act_fn(mg)], -1))
    return tr.proj_out(tr.norm_out(x[:, text:], temb))


def test_forward_with_lora_equals_the_official_v4_forward(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    """The whole step (guidance at t = 0, per-group LoRA on every target, masked attention in both block kinds)
    against the official algorithm written out separately; the high-res rows are the step's output."""
    layout = tiny.configure(128, "scaledit", impl="sdpa")
    sd.load_lora(tiny, _random_lora(tiny))
    inputs = tiny.make_inputs(timestep=0.7)
    with torch.no_grad():
        expected = _official_v4_step(tiny, inputs)
        got = tiny(**inputs)[:, :layout.n_hi]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ generation task
def test_generation_task_runs_the_tiny_flux2_variant_with_dense_comparison() -> None:
    """What `bench run --model scaledit_flux2_tiny --resolution 128 --compare dense` runs, cell by cell."""
    from types import SimpleNamespace

    from glocal.benchmarks.tasks import get_task
    from glocal.zoo import resolve

    card, variant = resolve("scaledit_flux2_tiny")
    task = get_task("generation")
    assert task.compare(card, variant, "dense") == [("scaledit_flux2_tiny", {"attention": "dense-sdpa"}),
                                                    ("scaledit_flux2_tiny", {"attention": "dense-flex"})]
    tokens = {"scaledit": 8 + 64 + 16, "dense-sdpa": 8 + 64, "dense-flex": 8 + 64}
    for attention, total in tokens.items():
        opts = task.check_options(card, variant, {"attention": attention, "compile_flex": "false", "impl": "sdpa"})
        cell = SimpleNamespace(resolution=128, task_options=opts, weights="random", device="cpu", channels_last=False)
        model = task.build_model(card, variant, cell)
        inputs = task.make_inputs(model, card, variant, cell, 2, torch.device("cpu"), torch.float32)
        assert inputs["img_ids"].shape == (total - 8, 4) and "pooled_projections" not in inputs
        assert torch.equal(inputs["txt_ids"][:, 3], torch.arange(8.0))
        with torch.no_grad():  # as the harness runs a step
            assert task.forward(model, inputs).shape == (2, total - 8, 16)
        work = task.workload(model, card, variant, cell)
        assert work["tokens"]["total"] == total
        d2 = 4 + 3 * 3.0  # FLUX.2 SwiGLU blocks: 13 d^2 per token and block
        io = (total - 8) * 16 * 32 * 2 + 8 * 32 * 32
        assert work["step_gmacs"] * 1e9 == pytest.approx(total * d2 * 32 * 32 * 2 + io + work["attention_gmacs"] * 1e9)
    assert model.glocal_backends()["impl"] == "ScaleDiTAttnProcessor (flex, compile=False)"


def test_flux2_linear_macs_formula_matches_the_flop_counter(tiny: sd.ScaleDiTFlux2Transformer) -> None:
    """The block_d2 = 13 formula counts FLUX.2's linear layers: the FLOP counter (linear layers only, since the
    CPU SDPA kernel is not counted) agrees up to the per-sample AdaLN and timestep MLPs."""
    from torch.utils.flop_counter import FlopCounterMode

    tiny.configure(256, "dense-sdpa")
    with FlopCounterMode(display=False) as counter:
        _run(tiny, tiny.make_inputs())
    work = tiny.generation_workload()
    linear = work["step_gmacs"] * 1e9 - work["attention_gmacs"] * 1e9
    counted = counter.get_total_flops() // 2 - counter.get_flop_counts()["Global"].get(
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, 0) // 2
    d = 32
    per_sample = d * 6 * d + d * 6 * d + d * 3 * d + d * 2 * d + 32 * d + d * d  # 3 modulations, norm_out, t-MLP
    assert counted == linear + per_sample


def test_flux2_pipeline_is_refused_in_one_line(tiny: sd.ScaleDiTFlux2Transformer, tmp_path) -> None:
    with pytest.raises(sd.ScaleDiTError, match=r"^the two-stage Scale-DiT pipeline is wired to FLUX\.1"):
        tiny.make_pipeline(tmp_path)


@pytest.mark.slow
def test_bench_run_compare_dense_on_the_tiny_flux2_variant() -> None:
    """The CLI end to end (three cell subprocesses, about a minute): Scale-DiT beside dense SDPA and dense flex."""
    import json

    from typer.testing import CliRunner

    from glocal.benchmarks.cli import app

    res = CliRunner().invoke(app, ["run", "--model", "scaledit_flux2_tiny", "--resolution", "128", "--compare", "dense",
                                   "--opt", "compile_flex=false", "--opt", "impl=sdpa", "--warmup-iters", "1",
                                   "--warmup-time", "0", "--min-iters", "2", "--min-time", "0", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = {r["settings"]["task_options"]["attention"]: r for r in json.loads(res.stdout)}
    assert sorted(records) == ["dense-flex", "dense-sdpa", "scaledit"]
    assert {a: r["workload"]["tokens"]["total"] for a, r in records.items()} == {
        "scaledit": 88, "dense-sdpa": 72, "dense-flex": 72}
    assert records["dense-sdpa"]["settings"]["backends"]["impl"] == (
        "Flux2AttnProcessor + Flux2ParallelSelfAttnProcessor (native SDPA)")
    assert all(r["latency"]["median"] > 0 for r in records.values())
