"""HiPrune: the selection rule on hand-worked grids, the streamed scores against full attention maps, the pruned
LLaVA-1.5 / Qwen2.5-VL hosts (tiny configs, CPU) against the unpruned models; and the ``vlm`` task: POPE / GQA /
MME answer parsers and scorers by hand, the MME folder reader, greedy decoding against transformers' ``generate``,
the workload of a pruned cell."""

from __future__ import annotations

import copy

import pytest
import torch

from glocal.benchmarks.tasks import TaskError, get_evaluator, get_task, vlm
from glocal.zoo.methods import hiprune as hp
from glocal.zoo.methods.hiprune import HiPruneError, select_tokens

pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")


def _scores(n: int, top: dict[int, float], base: float = 0.001) -> torch.Tensor:
    s = torch.arange(n, dtype=torch.float32) * base
    for i, v in top.items():
        s[i] = v
    return s


# ------------------------------------------------------------------------------------ selection by hand
# 4x4 grid, keep=10, alpha=1 -> round(10/5) = 2 anchors: tokens 2 (top row) and 7 (right edge).
OBJ_4x4 = _scores(16, {2: 0.9, 7: 0.8})
DEEP_4x4 = _scores(16, {15: 0.9, 12: 0.8, 0: 0.7, 9: 0.6, 4: 0.5})


def test_official_buffers_wrap_rows_and_clamp_into_the_grid():
    # anchor 2: 1, 3, 6 and 2-4 -> clamped to 0; anchor 7: 6, 3, 11 and 7+1 = 8 (wraps to the next row)
    assert hp.buffer_tokens(torch.tensor([2, 7]), 4, 16, wrap=True).tolist() == [0, 1, 2, 3, 6, 7, 8, 11]
    # 8 buffered tokens, 2 registers by deep score among the rest: 15 and 12 (0 is already in)
    kept = select_tokens(OBJ_4x4, DEEP_4x4, 10, 4, alpha=1.0)
    assert kept.tolist() == [0, 1, 2, 3, 6, 7, 8, 11, 12, 15]


def test_grid_buffers_stop_at_row_ends_and_grid_edges():
    assert hp.buffer_tokens(torch.tensor([2, 7]), 4, 16, wrap=False).tolist() == [1, 2, 3, 6, 7, 11]
    kept = select_tokens(OBJ_4x4, DEEP_4x4, 10, 4, alpha=1.0, wrap=False)
    assert kept.tolist() == [0, 1, 2, 3, 6, 7, 9, 11, 12, 15]  # 4 registers: 15, 12, 0, 9
    # corners: no neighbour outside the grid, either way of counting
    assert hp.buffer_tokens(torch.tensor([0]), 4, 16, wrap=False).tolist() == [0, 1, 4]
    assert hp.buffer_tokens(torch.tensor([15]), 4, 16, wrap=False).tolist() == [11, 14, 15]
    assert hp.buffer_tokens(torch.tensor([15]), 4, 16, wrap=True).tolist() == [11, 14, 15]


def test_anchor_counts_of_the_paper_budgets():
    assert [hp.anchor_count(k) for k in (192, 128, 64)] == [4, 3, 1]
    assert hp.anchor_count(125) == 2  # round(2.5): Python's round, as the official code
    assert hp.anchor_count(9) == 0  # too small for an anchor: registers only


def test_budgets_at_the_limits():
    n = 36
    obj, deep = _scores(n, {14: 0.9}), _scores(n, {0: 0.5})
    assert select_tokens(obj, deep, n, 6).tolist() == list(range(n))  # keep all
    # keep = 5 * anchors: one interior anchor and its 4 buffers fill the budget exactly
    assert select_tokens(obj, deep, 5, 6, alpha=1.0).tolist() == [8, 13, 14, 15, 20]
    assert select_tokens(obj, deep, 1, 6).tolist() == [0]  # no anchor: the top register
    with pytest.raises(HiPruneError, match=r"keep=4 is too small for 1 anchors and their buffers \(5 tokens"):
        select_tokens(obj, deep, 4, 6, alpha=1.0)
    for keep in (0, n + 1):
        with pytest.raises(HiPruneError, match=f"keep={keep} is outside 1..36"):
            select_tokens(obj, deep, keep, 6)


def test_official_registers_can_repick_anchors_when_scores_exceed_one():
    # Qwen's scores are sums over queries: subtracting 1 does not demote a strong anchor
    obj = _scores(16, {5: 0.9})
    deep = _scores(16, {5: 3.0, 0: 1.5})
    assert select_tokens(obj, deep, 6, 4, alpha=1.0).tolist() == [1, 4, 5, 6, 9]  # 5 tokens, not 6
    assert select_tokens(obj, deep, 6, 4, alpha=1.0, registers="exclusive").tolist() == [0, 1, 4, 5, 6, 9]


def test_crop_budget_split():
    obj = torch.stack([_scores(16, {5: 0.9}), _scores(16, {10: 0.9})])
    deep = torch.stack([_scores(16, {0: 0.5}), _scores(16, {3: 0.5})])
    kept = hp.select_crops(obj, deep, 11, 4, alpha=1.0)  # int(11 / 2) = 5 per crop, one anchor each
    assert [k.tolist() for k in kept] == [[1, 4, 5, 6, 9], [6, 9, 10, 11, 14]]
    assert hp.keep_count(None, 0.334, 64) == 21 and hp.keep_count(192, None, 576) == 192


def test_bad_selection_input_one_line():
    with pytest.raises(HiPruneError, match="do not form a grid of width 5"):
        select_tokens(torch.rand(16), torch.rand(16), 4, 5)
    with pytest.raises(HiPruneError, match="1-D tensors of the same length"):
        select_tokens(torch.rand(16), torch.rand(15), 4, 4)
    with pytest.raises(HiPruneError, match="exactly one of keep"):
        hp.keep_count(192, 0.3, 576)
    with pytest.raises(HiPruneError, match="ratio=1.5 is outside"):
        hp.keep_count(None, 1.5, 576)


# ------------------------------------------------------------------------------ streamed == full maps
def test_chunked_reduction_equals_the_full_softmax():
    q, k = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8)
    full = torch.softmax(q @ k.transpose(-1, -2) * 0.3, dim=-1).sum(dim=(1, 2))
    torch.testing.assert_close(hp.received_attention(q, k, 0.3, chunk=3), full)


def test_clip_scores_equal_the_official_reduction_of_full_attention_maps():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=12, num_attention_heads=4,
                           image_size=56, patch_size=14)
    eager = CLIPVisionModel._from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()
    sdpa = CLIPVisionModel._from_config(copy.deepcopy(cfg), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        maps = eager(x, output_attentions=True).attentions
        scorer = hp.ClipScorer(sdpa)
        sdpa(x)
        obj, deep = scorer.take()
    # official: attentions[object_layer - 1] and attentions[-2], mean over heads then queries, CLS column dropped
    torch.testing.assert_close(obj, maps[8].mean(dim=1).mean(dim=1)[:, 1:])
    torch.testing.assert_close(deep, maps[-2].mean(dim=1).mean(dim=1)[:, 1:])
    assert sdpa.encoder.layers[8].self_attn.config._attn_implementation == hp._ATTN_IMPL
    scorer.remove()
    assert sdpa.encoder.layers[8].self_attn.config._attn_implementation == "sdpa"


def test_qwen_scores_equal_the_official_masked_maps_in_raster_order():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
    from transformers.vision_utils import get_vision_window_index

    from glocal.zoo.models import qwen_vl

    torch.manual_seed(0)
    model = qwen_vl.build_qwen("tiny").eval()
    visual = model.model.visual
    inputs = qwen_vl.dummy_inputs(model)  # 16x16 patches: 2x2 windows of 4x4 merged tokens
    grid = inputs["image_grid_thw"]
    captured = {}

    def keep_inputs(i):
        def hook(mod, args, kwargs):
            captured[i] = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0], kwargs)
        return hook
    handles = [visual.blocks[i].attn.register_forward_pre_hook(keep_inputs(i), with_kwargs=True) for i in (0, 31)]
    scorer = hp.QwenVisionScorer(visual, object_layer=1)  # layer 1 uses windows, 32 full attention
    with torch.no_grad():
        visual(inputs["pixel_values"], grid_thw=grid)
        obj, deep = scorer.take(grid_thw=grid)
    for h in handles:
        h.remove()

    def official(i):  # qwen2_5_vl_HiPrune.py: full map with a block mask, mean heads, sum queries, 2x2 mean
        x, kw = captured[i]
        attn, t = visual.blocks[i].attn, x.shape[0]
        q, k, _ = attn.qkv(x).reshape(t, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, *kw["position_embeddings"])
        mask = torch.full((t, t), float("-inf"))
        cu = kw["cu_seqlens"].tolist()
        for a, b in zip(cu[:-1], cu[1:], strict=True):
            mask[a:b, a:b] = 0
        w = torch.softmax((q.transpose(0, 1) @ k.transpose(0, 1).transpose(1, 2)) * attn.scaling + mask, dim=-1)
        s = w.mean(dim=0).sum(dim=0).view(-1, 4).mean(dim=-1)
        index, _ = get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14, kwargs={})
        return s[torch.argsort(index)]
    assert len(captured[0][1]["cu_seqlens"]) == 5  # four windows in layer 1
    torch.testing.assert_close(obj[0], official(0))
    torch.testing.assert_close(deep[0], official(31))


def test_timm_scores_equal_unfused_attention_maps():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=6).eval()
    maps = {}
    for i in (1, 5):
        model.blocks[i].attn.attn_drop.register_forward_hook(lambda m, a, out, i=i: maps.__setitem__(i, out))
    scorer = hp.TimmViTScorer(model, object_layer=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)  # fused: no maps
        obj, deep = scorer.take()
        for blk in model.blocks:
            blk.attn.fused_attn = False
        model(x)
        scorer.take()
    torch.testing.assert_close(obj, maps[1].mean(dim=1).mean(dim=1)[:, 1:])
    torch.testing.assert_close(deep, maps[5].mean(dim=1).mean(dim=1)[:, 1:])
    assert obj.shape == (2, 16) and scorer.grid == (4, 4)
    with torch.no_grad():
        model(x)
    kept = hp.kept_tokens(scorer, 6, alpha=1.0)  # one anchor, its buffers, registers: 6 sorted indices per image
    expected = [select_tokens(o, d, 6, 4, alpha=1.0) for o, d in zip(obj, deep, strict=True)]
    assert [k.tolist() for k in kept] == [e.tolist() for e in expected] and all(k.numel() == 6 for k in kept)


def test_open_clip_scores_equal_multihead_attention_weights():
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    visual = VisionTransformer(image_size=32, patch_size=8, width=32, layers=4, heads=2, mlp_ratio=2.0,
                               output_dim=16).eval()
    ref = {}

    def weights(i):
        def hook(mod, args, kwargs, out):
            ref[i] = torch.nn.MultiheadAttention.forward(mod, *args[:3], need_weights=True)[1]  # no hooks
        return hook
    scorer = hp.OpenClipScorer(visual, object_layer=2)
    for i in (1, 3):
        visual.transformer.resblocks[i].attn.register_forward_hook(weights(i), with_kwargs=True)
    with torch.no_grad():
        visual(torch.randn(2, 3, 32, 32))
        obj, deep = scorer.take()
    torch.testing.assert_close(obj, ref[1].mean(dim=1)[:, 1:])
    torch.testing.assert_close(deep, ref[3].mean(dim=1)[:, 1:])


# -------------------------------------------------------------------------------------- pruned hosts
@pytest.fixture(scope="module")
def llava():
    from glocal.zoo.models import llava as host

    torch.manual_seed(0)
    model = host.build_llava("tiny").eval()
    return model, host.dummy_inputs(model, batch=2, prompt_tokens=12)


def test_llava_keep_all_equals_the_unpruned_model(llava):
    model, inputs = llava
    wrapped = hp.HiPruneVLM(model, keep=576)
    try:
        with torch.no_grad():
            torch.testing.assert_close(wrapped(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    finally:
        wrapped.remove()


def test_llava_language_model_sees_exactly_the_kept_tokens_in_order(llava):
    model, inputs = llava
    seen = {}
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("embeds", kw["inputs_embeds"]), with_kwargs=True)
    wrapped = hp.HiPruneVLM(model, keep=192)
    try:
        with torch.no_grad():
            logits = wrapped(**inputs).logits
            cfg = model.config
            feats = model.model.get_image_features(pixel_values=inputs["pixel_values"], vision_feature_layer=-2,
                                                   vision_feature_select_strategy="default").pooler_output
    finally:
        wrapped.remove()
        handle.remove()
    assert logits.shape[1] == 1 + 12 + 192 == seen["embeds"].shape[1]
    for b, kept in enumerate(wrapped.last_kept):
        assert kept.numel() == 192 and torch.equal(kept, torch.unique(kept))  # sorted, no repeats
        torch.testing.assert_close(seen["embeds"][b, 7:7 + 192], feats[b][kept])  # after <s> + 6 text tokens
    assert wrapped.describe()["visual_tokens_kept"] == [192, 192]
    assert cfg.vision_config.num_hidden_layers == 24


def test_qwen_keep_all_equals_the_unpruned_model_and_decoding_continues():
    from glocal.zoo.models import qwen_vl

    torch.manual_seed(0)
    model = qwen_vl.build_qwen("tiny").eval()
    inputs = qwen_vl.dummy_inputs(model)
    with torch.no_grad():
        ref = model(**inputs, use_cache=True)
        ref_deltas = model.model.rope_deltas.clone()
        wrapped = hp.HiPruneVLM(model, ratio=1.0)
        out = wrapped(**inputs, use_cache=True)
        torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
        assert torch.equal(model.model.rope_deltas, ref_deltas)
        pruned = hp.HiPruneVLM(wrapped.remove(), ratio=0.334)
        pruned_out = pruned(**inputs)
    kept = pruned.last_kept[0]
    assert kept.numel() <= 21 and pruned_out.logits.shape[1] == inputs["input_ids"].shape[1] - 64 + kept.numel()
    # decoding continues after the full prompt's last position: deltas grow by the dropped tokens
    assert torch.equal(model.model.rope_deltas, ref_deltas + 64 - kept.numel())


def test_bad_host_input_one_line(llava, monkeypatch):
    from glocal.zoo import CheckpointError
    from glocal.zoo.models import llava as host
    from glocal.zoo.models._vlm import VisualTokenError, splice_visual_tokens

    model, inputs = llava
    with pytest.raises(HiPruneError, match="keep=600 is outside 1..576"):
        wrapped = hp.HiPruneVLM(model, keep=600)
        try:
            wrapped(**inputs)
        finally:
            wrapped.remove()
    with pytest.raises(HiPruneError, match="not Linear"):
        hp.HiPruneVLM(torch.nn.Linear(2, 2), keep=4)
    with pytest.raises(HiPruneError, match="object_layer=30 is outside 1..24"):
        hp.HiPruneVLM(model, keep=64, object_layer=30)
    with pytest.raises(VisualTokenError, match="576 image placeholder tokens but 575 visual features"):
        splice_visual_tokens(torch.zeros(1, 600, 4), torch.arange(600).unsqueeze(0) < 576, [torch.zeros(575, 4)])
    with pytest.raises(CheckpointError, match="weights not found: /nonexistent"):
        host.build_llava(weights_dir="/nonexistent/llava")
    monkeypatch.setenv("GLOCAL_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="offline: cannot fetch llava-hf/llava-1.5-7b-hf"):
        host.build_llava(weights_dir="llava-hf/llava-1.5-7b-hf")


def test_real_shapes_match_the_published_parameter_counts():
    from glocal.zoo import get_card
    from glocal.zoo.models import llava, qwen_vl

    with torch.device("meta"):
        big_llava = llava.build_llava("7b")
        big_qwen = qwen_vl.build_qwen("7b")
    assert sum(p.numel() for p in big_llava.parameters()) == get_card("llava15").variant("llava15_7b").params
    assert sum(p.numel() for p in big_qwen.parameters()) == get_card("qwen25vl").variant("qwen25vl_7b").params
    assert get_card("llava15").task == "vlm" and get_card("llava15").default_variant == "llava15_tiny"


# ------------------------------------------------------------------------------------------ vlm task
@pytest.mark.parametrize(("text", "parsed"), [
    ("Yes, there is a dog in the image.", "yes"), ("No.", "no"), ("There is not a cat", "no"),
    ("no, it isn't", "no"), ("Yes. No, wait.", "yes"), ("Nope", "yes"),  # LLaVA's parser only knows No/no/not
])
def test_pope_answer_parsing(text, parsed):
    assert vlm.pope_answer(text) == parsed


def test_pope_metrics_by_hand():
    m = vlm.pope_metrics(["yes", "yes", "no", "no", "yes"], ["yes", "no", "no", "yes", "yes"])  # TP2 FP1 TN1 FN1
    assert m["accuracy"] == pytest.approx(60.0) and m["yes_ratio"] == pytest.approx(60.0)
    assert m["precision"] == pytest.approx(200 / 3) and m["recall"] == pytest.approx(200 / 3)
    assert m["f1"] == pytest.approx(200 / 3)
    with pytest.raises(TaskError, match="POPE: 1 answers for 2 labels"):
        vlm.pope_metrics(["yes"], ["yes", "no"])


def test_gqa_exact_match():
    assert vlm.gqa_answer("Yes.") == "yes" and vlm.gqa_answer("The Cat") == "the cat"
    assert vlm.gqa_accuracy(["Left.", "the cat", "Red"], ["left", "cat", "red"]) == pytest.approx(200 / 3)


@pytest.mark.parametrize(("text", "parsed"), [
    ("Yes", "yes"), ("No, it is not.", "no"), ("y", "yes"), ("Maybe", "other"), ("The answer is yes", "other"),
])
def test_mme_answer_parsing(text, parsed):
    assert vlm.mme_answer(text) == parsed


def test_mme_scores_acc_plus_acc_per_category():
    rows = [("existence", "a", "yes", "Yes"), ("existence", "a", "no", "No"),   # image a: both right
            ("existence", "b", "yes", "Yes"), ("existence", "b", "yes", "No"),  # image b: one right
            ("code_reasoning", "c", "no", "Yes"), ("code_reasoning", "c", "other", "No")]
    s = vlm.mme_scores(rows)
    assert s["categories"] == {"existence": pytest.approx(75 + 50), "code_reasoning": 0.0}
    assert s["perception"] == pytest.approx(125) and s["cognition"] == 0.0


def test_mme_folder_layouts(tmp_path):
    flat = tmp_path / "existence"
    flat.mkdir()
    (flat / "0001.jpg").write_bytes(b"")
    (flat / "0001.txt").write_text("Is there a dog in this image?\tYes\nIs there a cat in this image?\tNo\n")
    nested = tmp_path / "artwork"
    (nested / "images").mkdir(parents=True)
    (nested / "questions_answers_YN").mkdir()
    (nested / "images" / "42.png").write_bytes(b"")
    (nested / "questions_answers_YN" / "42.txt").write_text("Is this by Monet? Please answer yes or no.\tNo\n")
    items = vlm.mme_items(tmp_path)
    assert [(c, p.name, q, a) for c, p, q, a in items] == [
        ("artwork", "42.png", "Is this by Monet? Please answer yes or no.", "No"),
        ("existence", "0001.jpg", "Is there a dog in this image?", "Yes"),
        ("existence", "0001.jpg", "Is there a cat in this image?", "No")]
    (flat / "0002.txt").write_text("Q?\tYes\n")
    with pytest.raises(TaskError, match="MME: no image for .*0002.txt"):
        vlm.mme_items(tmp_path)


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_greedy_decoding_equals_transformers_generate(family):
    from glocal.zoo.methods.hiprune import HiPruneVLM
    from glocal.zoo.models import llava, qwen_vl

    torch.manual_seed(0)
    host = llava if family == "llava" else qwen_vl
    model = (llava.build_llava if family == "llava" else qwen_vl.build_qwen)("tiny").eval()
    inputs = host.dummy_inputs(model, prompt_tokens=8)
    with torch.inference_mode():
        ref = model.generate(**inputs, max_new_tokens=5, do_sample=False)[:, inputs["input_ids"].shape[1]:]
        tokens, times = vlm.greedy_generate(model, inputs, 5)
        wrapped = HiPruneVLM(model, ratio=1.0)
        kept_all, _ = vlm.greedy_generate(wrapped, inputs, 5)
        wrapped.remove()
    assert torch.equal(tokens, ref) and torch.equal(kept_all, ref) and len(times) == 5


@pytest.mark.parametrize(("name", "resolution", "method", "visual"), [
    ("llava15", 336, "hiprune:keep=64", 64), ("qwen25vl", 280, "hiprune:ratio=0.334", 33),
    ("qwen25vl", 280, None, 100)])
def test_cell_workload_counts_visual_tokens_and_flops(name, resolution, method, visual):
    from glocal import zoo
    from glocal.benchmarks.cell import CellSpec
    from glocal.zoo.methods import apply_method, describe_method, parse_method

    task = get_task("vlm")
    card, variant = zoo.resolve(name)
    cell = CellSpec(model=variant.name, resolution=resolution, weights="random",
                    task_options=task.check_options(card, variant, {"prompt": "8", "generate": "2"}))
    torch.manual_seed(0)
    spec = parse_method(method) if method else None
    model = apply_method(task.build_model(card, variant, cell), card, variant, spec)
    w = task.workload(model, card, variant, cell)
    text = w["prompt_tokens"]  # Qwen's 280 px image: 20 x 20 patches in padded 8 x 8 windows, 10 x 10 tokens
    assert (w["visual_tokens"], w["llm_prefill_tokens"]) == (visual, visual + text)
    assert w["prefill_gflops"] == pytest.approx(w["prefill_gflops_formula"], rel=1e-9)
    assert w["decode_ms_per_token"] > 0 and w["generated_tokens"] == 2
    if spec:
        assert describe_method(model, spec)["visual_tokens_kept"] == [visual]


def test_task_bad_input_one_line():
    from glocal import zoo
    from glocal.benchmarks.cell import CellSpec
    from glocal.benchmarks.tasks import DatasetSpec
    from glocal.zoo import CheckpointError

    task = get_task("vlm")
    card, variant = zoo.resolve("llava15_tiny")
    with pytest.raises(TaskError, match="takes 336 x 336 images"):
        task.check_resolution(card, variant, 448)
    with pytest.raises(TaskError, match="bad value '0' for task option prompt"):
        task.check_options(card, variant, {"prompt": "0"})
    with pytest.raises(CheckpointError, match="weights not found: /nonexistent"):
        task.build_model(card, variant, CellSpec(model=variant.name, weights="/nonexistent/llava"))
    for name in ("pope", "gqa", "mme"):
        assert get_evaluator(DatasetSpec(name), "vlm").needs_pretrained
    model = zoo.create_model("llava15_tiny", weights="random", quiet=True)
    with pytest.raises(TaskError, match="needs real weights from a Hugging Face folder"):
        vlm._processor(model)


def test_hugging_face_folder_loads_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    from glocal.zoo import CheckpointError
    from glocal.zoo.models import llava, qwen_vl

    torch.manual_seed(0)
    model = llava.build_llava("tiny")
    model.save_pretrained(tmp_path / "llava")
    loaded = llava.build_llava(weights_dir=tmp_path / "llava")
    ref = model.state_dict()
    assert list(loaded.state_dict()) == list(ref)
    assert all(torch.equal(t, ref[k]) for k, t in loaded.state_dict().items())
    with pytest.raises(CheckpointError, match="holds a 'llava' model, not 'qwen2_5_vl'"):
        qwen_vl.build_qwen(weights_dir=tmp_path / "llava")
    weights = tmp_path / "llava" / "model.safetensors"
    tensors = load_file(weights)
    dropped = next(k for k in tensors if "multi_modal_projector" in k)
    save_file({k: v for k, v in tensors.items() if k != dropped}, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="does not match the model: 1 missing keys"):
        llava.build_llava(weights_dir=tmp_path / "llava")
    with pytest.raises(CheckpointError, match="is not a Hugging Face model folder"):
        llava.build_llava(weights_dir=tmp_path)


def test_benchmark_files_open_in_their_published_formats(tmp_path):
    import json

    from PIL import Image

    from glocal.benchmarks.tasks import DatasetSpec, check_dataset

    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "COCO_val2014_000000000001.jpg")
    Image.new("RGB", (8, 6), (0, 255, 0)).save(tmp_path / "n161313.jpg")
    pope = tmp_path / "coco_pope_random.json"
    pope.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog in the image?",
         "label": "yes"},
        {"question_id": 2, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cat in the image?",
         "label": "no"}]))
    gqa = tmp_path / "testdev_balanced_questions.json"
    gqa.write_text(json.dumps({"201307251": {"imageId": "n161313", "question": "Is it red?", "answer": "no"}}))
    ds = vlm.open_pope(None, None, DatasetSpec("pope", pope, {"images": str(tmp_path), "limit": "1"}))
    image, question, answer, group = ds[0]
    assert (len(ds), image.size, answer, group) == (1, (8, 6), "yes", "coco_pope_random")
    assert question == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    ds = vlm.open_gqa(None, None, DatasetSpec("gqa", gqa, {"images": str(tmp_path)}))
    assert ds[0][1:] == ("Is it red?\nAnswer the question using a single word or phrase.", "no", "gqa")
    entry = get_evaluator(DatasetSpec("gqa"), "vlm")
    with pytest.raises(TaskError, match="--dataset gqa has no option 'split'"):
        check_dataset(entry, None, None, DatasetSpec("gqa", gqa, {"split": "testdev"}))
    with pytest.raises(TaskError, match="image not found: .*images/n161313.jpg"):
        check_dataset(entry, None, None, DatasetSpec("gqa", gqa))  # images default to ./images
    with pytest.raises(TaskError, match="expected entries with image, text, label"):
        vlm.open_pope(None, None, DatasetSpec("pope", gqa))
