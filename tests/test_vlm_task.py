"""The ``vlm`` task: answer parsers and scorers of POPE / GQA / MME against hand-worked cases, the MME folder reader,
greedy decoding against transformers' ``generate``, the workload of a pruned cell, and one-line errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from glocal.benchmarks.tasks import (  # noqa: E402
    TaskError,
    get_evaluator,
    get_task,
    vlm,  # noqa: E402
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_pruned_cell_workload_counts_the_kept_tokens():
    from glocal import zoo
    from glocal.benchmarks.cell import CellSpec
    from glocal.zoo.methods import apply_method, describe_method, parse_method

    task = get_task("vlm")
    card, variant = zoo.resolve("llava15")
    cell = CellSpec(model=variant.name, resolution=336, weights="random",
                    task_options=task.check_options(card, variant, {"prompt": "8", "generate": "2"}))
    torch.manual_seed(0)
    spec = parse_method("hiprune:keep=64")
    model = apply_method(task.build_model(card, variant, cell), card, variant, spec)
    w = task.workload(model, card, variant, cell)
    assert (w["visual_tokens"], w["llm_prefill_tokens"], w["prompt_tokens"]) == (64, 64 + 9, 9)
    assert w["prefill_gflops"] == pytest.approx(w["prefill_gflops_formula"], rel=1e-9)
    assert w["decode_ms_per_token"] > 0 and w["generated_tokens"] == 2
    assert describe_method(model, spec)["visual_tokens_kept"] == [64]


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
