"""The ``vlm`` task: vision-language models (LLaVA-1.5, Qwen2.5-VL on transformers' classes), with or without a
visual-token method such as HiPrune.

A cell is an image size (``--resolution``), a prompt length (``--opt prompt=N`` text tokens) and a generation
length (``--opt generate=N``). The harness times :meth:`VLMTask.forward`, which is the **prefill** (vision tower,
projector, any token selection, the language model on the whole prompt, next-token logits), so its latency and
memory columns are the prefill's. :meth:`VLMTask.workload` adds, on the cell's device and precision: per-token
decode latency and tokens/s (greedy, ``generate`` tokens after the prefill), the visual tokens that reach the
language model, and the prefill FLOPs counted with ``torch.utils.flop_counter`` beside the closed form
(LLaVA; :func:`llava_prefill_flops`).

Accuracy, with real weights only (``--weights`` a local Hugging Face folder): POPE (accuracy, F1; LLaVA's
``eval_pope.py`` answer parsing), GQA (exact match after LLaVA's ``convert_gqa_for_eval.py`` normalisation) and MME
(perception and cognition scores, acc + acc+ per category; the MME/lmms-eval ``parse_pred_ans``), read from the
benchmarks' published files. The parsers and scorers are pure functions below.
"""

from __future__ import annotations

import copy
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from glocal.benchmarks.tasks import (
    DatasetSpec,
    EvalContext,
    EvalResult,
    Task,
    TaskError,
    TaskOption,
    positive_int,
    register_evaluator,
    register_task,
)

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."  # LLaVA-1.5 / lmms-eval post-prompt
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
LLAVA_FLOPS_FORMULA = ("vision n_v(2N(4d_v^2 + 2d_v f_v) + 4N^2 d_v) + 2P(3p^2)d_v + scores 2x2N^2 d_v (HiPrune) + "
                       "projector 2P(d_v d + d^2) + LLM n_l(2L(2d^2 + 2d kv + 3d f) + 4L^2 d) + head 2dV")


# ------------------------------------------------------------------------------------------ cost pieces
def count_flops(fn: Any) -> int:
    """FLOPs of ``fn()`` (2 per multiply-add). SDPA runs on its math backend while counting: the counter has no
    formula for the CPU flash kernel and would count attention as zero."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return int(counter.get_total_flops())


def llava_prefill_flops(config: Any, text_tokens: int, kept: int | None) -> dict[str, int]:
    """Closed-form prefill FLOPs of LLaVA on one image (``kept=None``: unpruned, no score taps)."""
    vc, tc = config.vision_config, config.text_config
    p = (vc.image_size // vc.patch_size) ** 2
    n, dv, fv = p + 1, vc.hidden_size, vc.intermediate_size
    vision = vc.num_hidden_layers * (2 * n * (4 * dv * dv + 2 * dv * fv) + 4 * n * n * dv)
    vision += 2 * p * 3 * vc.patch_size ** 2 * dv
    scores = 0 if kept is None else 2 * 2 * n * n * dv
    d, f = tc.hidden_size, tc.intermediate_size
    kvw = tc.num_key_value_heads * (d // tc.num_attention_heads)
    projector = 2 * p * (dv * d + d * d)
    length = text_tokens + (p if kept is None else kept)
    llm = tc.num_hidden_layers * (2 * length * (2 * d * d + 2 * d * kvw + 3 * d * f) + 4 * length * length * d)
    head = 2 * d * tc.vocab_size
    return {"vision": vision, "scores": scores, "projector": projector, "llm": llm, "head": head,
            "total": vision + scores + projector + llm + head, "length": length}


QWEN_FLOPS_FORMULA = ("vision 2T(3 t p^2)d_v + sum_layers[2T(4d_v^2 + 3d_v f_v) + 4 sum_w n_w^2 d_v] + merger "
                      "2(T/4)(16d_v^2 + 4d_v d) + scores 2x2 sum_w n_w^2 d_v (HiPrune) + LLM n_l(2L(2d^2 + 2d kv + "
                      "3d f) + 4L^2 d) + head 2dV; n_w: tokens per attention window (the image in full layers)")


def qwen_prefill_flops(config: Any, text_tokens: int, grid_thw: torch.Tensor, kept: int | None,
                       tapped_layers: Sequence[int] = (15, 31)) -> dict[str, int]:
    """Closed-form prefill FLOPs of Qwen2.5-VL on one image of ``grid_thw`` patches (``kept=None``: unpruned)."""
    from transformers.vision_utils import get_vision_window_index

    vc, tc = config.vision_config, config.text_config
    t = int(grid_thw.prod())
    dv, fv = vc.hidden_size, vc.intermediate_size
    _, cu = get_vision_window_index(grid_thw, spatial_merge_size=vc.spatial_merge_size, window_size=vc.window_size,
                                    patch_size=vc.patch_size, kwargs={})
    cu = sorted(set(int(c) for c in cu))
    windowed = sum((b - a) ** 2 for a, b in zip(cu[:-1], cu[1:], strict=True))
    square = {i: t * t if i in vc.fullatt_block_indexes else windowed for i in range(vc.depth)}
    vision = 2 * t * 3 * vc.temporal_patch_size * vc.patch_size ** 2 * dv
    vision += sum(2 * t * (4 * dv * dv + 3 * dv * fv) + 4 * square[i] * dv for i in range(vc.depth))
    unit = vc.spatial_merge_size ** 2
    merger = 2 * (t // unit) * ((unit * dv) ** 2 + unit * dv * vc.out_hidden_size)
    scores = 0 if kept is None else sum(2 * square[i] * dv for i in tapped_layers)
    d, f = tc.hidden_size, tc.intermediate_size
    kvw = tc.num_key_value_heads * (d // tc.num_attention_heads)
    length = text_tokens + (t // unit if kept is None else kept)
    llm = tc.num_hidden_layers * (2 * length * (2 * d * d + 2 * d * kvw + 3 * d * f) + 4 * length * length * d)
    head = 2 * d * tc.vocab_size
    return {"vision": vision + merger, "scores": scores, "llm": llm, "head": head,
            "total": vision + merger + scores + llm + head, "length": length}


def decoder_of(model: nn.Module) -> nn.Module:
    """The model decoding steps go to (a token-pruning wrapper names it ``decoder_model``)."""
    return getattr(model, "decoder_model", model)


def greedy_generate(model: nn.Module, inputs: dict[str, Any], steps: int,
                    eos_token_id: int | None = None) -> tuple[torch.Tensor, list[float]]:
    """Prefill, then ``steps`` greedy tokens with the cache. Returns (tokens ``(B, n)``, seconds per step, the
    prefill first); stops early when every sample produced ``eos_token_id``."""
    sync = torch.cuda.synchronize if inputs["input_ids"].is_cuda else (lambda: None)
    times: list[float] = []
    t0 = time.perf_counter()
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    times.append(time.perf_counter() - t0)
    tokens = [token]
    decoder = decoder_of(model)
    for _ in range(steps - 1):
        if eos_token_id is not None and bool((token == eos_token_id).all()):
            break
        t0 = time.perf_counter()
        # no attention mask (prompts are unpadded): positions then follow the cache (Qwen: plus its rope deltas);
        # transformers 5.24's Qwen2.5-VL builds full-length position ids from a decode-step mask
        out = decoder(input_ids=token, cache=out.cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        times.append(time.perf_counter() - t0)
        tokens.append(token)
    return torch.cat(tokens, dim=1), times


# ------------------------------------------------------------------------------------------------ task
class VLMTask(Task):
    name = "vlm"
    options = {
        "prompt": TaskOption(positive_int, 32, "text tokens of the prompt besides the image"),
        "generate": TaskOption(positive_int, 16, "tokens generated after the prefill (decode latency, tokens/s)"),
    }

    def check_resolution(self, card: Any, variant: Any, resolution: int) -> None:
        if card.family == "llava15" and resolution != 336:
            raise TaskError(f"{variant.name} takes 336 x 336 images (CLIP ViT-L/14-336 position embeddings), "
                            f"got {resolution}")
        super().check_resolution(card, variant, resolution)

    def build_model(self, card: Any, variant: Any, cell: Any) -> nn.Module:
        """Random weights through the zoo, or real ones from a local Hugging Face folder / hub name (strict)."""
        from glocal import zoo
        from glocal.zoo.weights import WeightsInfo

        weights = cell.weights
        if weights in (None, "random", "auto", "pretrained"):
            return zoo.create_model(variant.name, weights="random" if weights is None else weights, quiet=True)
        model = variant.build(weights_dir=weights)
        source = "file" if Path(str(weights)).expanduser().is_dir() else "hub"
        model.glocal_weights = WeightsInfo(source, str(weights), None, "transformers")
        model.glocal_weights_message = f"weights from {weights}"
        model.glocal_card, model.glocal_variant = card, variant
        return model

    def make_inputs(self, model: nn.Module, card: Any, variant: Any, cell: Any, batch: int,
                    device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, Any]:
        from glocal.zoo.models._vlm import host_for

        host = host_for(model)
        extra = {"image_size": cell.resolution} if card.family != "llava15" else {}
        return host.dummy_inputs(model, batch=batch, prompt_tokens=cell.task_options["prompt"], seed=seed,
                                 device=device, dtype=dtype, **extra)

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        """The prefill: the whole prompt, the next token's logits, the cache for decoding."""
        return model(**inputs, use_cache=True, logits_to_keep=1)

    def workload(self, model: nn.Module, card: Any, variant: Any, cell: Any) -> dict[str, Any]:
        """Visual tokens reaching the LLM, prefill FLOPs (counted and formula), decode latency on the cell's device.

        Decoding is timed on a copy placed on the cell's device and precision (the harness places the model
        itself after this), so the measured model is left as it was.
        """
        device = torch.device(cell.device)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cell.precision]
        inputs = self.make_inputs(model, card, variant, cell, 1, torch.device("cpu"), torch.float32)
        seen: dict[str, int] = {}
        lm = decoder_of(model).model.language_model
        handle = lm.register_forward_pre_hook(
            lambda m, a, kw: seen.__setitem__("length", kw["inputs_embeds"].shape[1]), with_kwargs=True)
        try:
            flops = count_flops(lambda: self.forward(model, inputs))
        finally:
            handle.remove()
        image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        text = inputs["input_ids"].shape[1] - image_tokens
        out: dict[str, Any] = {"prompt_tokens": text, "image_tokens": image_tokens,
                               "visual_tokens": seen["length"] - text, "llm_prefill_tokens": seen["length"],
                               "prefill_gflops": flops / 1e9, "flop_counter": "torch.utils.flop_counter (SDPA math)"}
        kept = None if not hasattr(model, "decoder_model") else seen["length"] - text
        if card.family == "llava15":
            out["prefill_gflops_formula"] = llava_prefill_flops(model.config, text, kept)["total"] / 1e9
            out["flops_formula"] = LLAVA_FLOPS_FORMULA
        elif card.family == "qwen25vl":
            scorer = getattr(model, "scorer", None)
            taps = (scorer.object_index, scorer.deep_index) if scorer is not None else ()
            formula = qwen_prefill_flops(model.config, text, inputs["image_grid_thw"], kept, taps)
            out["prefill_gflops_formula"] = formula["total"] / 1e9
            out["flops_formula"] = QWEN_FLOPS_FORMULA
        out.update(self._decode_timing(model, card, variant, cell, device, dtype))
        return out

    def _decode_timing(self, model: nn.Module, card: Any, variant: Any, cell: Any, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        steps = cell.task_options["generate"]
        placed = copy.deepcopy(model).to(device=device, dtype=dtype)
        inputs = self.make_inputs(placed, card, variant, cell, cell.batch_size, device, dtype)
        with torch.inference_mode():
            greedy_generate(placed, inputs, min(steps, 2))  # warm-up
            runs = [greedy_generate(placed, inputs, steps)[1] for _ in range(3)]
        del placed
        per_token = sorted(sum(r[1:]) / max(1, len(r) - 1) for r in runs)[1]
        prefill = sorted(r[0] for r in runs)[1]
        return {"generated_tokens": steps, "decode_ms_per_token": per_token * 1e3,
                "decode_tokens_per_s": cell.batch_size / per_token if per_token else None,
                "generate_prefill_ms": prefill * 1e3}


register_task(VLMTask())


# ----------------------------------------------------------------------------------- answer parsing
def pope_answer(text: str) -> str:
    """LLaVA's ``eval_pope.py``: first sentence, commas dropped; 'no' if it says No / no / not, else 'yes'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = 'yes') and the yes ratio of parsed POPE answers, in %."""
    if not predictions or len(predictions) != len(labels):
        raise TaskError(f"POPE: {len(predictions)} answers for {len(labels)} labels")
    tp = sum(p == "yes" and g == "yes" for p, g in zip(predictions, labels, strict=True))
    fp = sum(p == "yes" and g != "yes" for p, g in zip(predictions, labels, strict=True))
    tn = sum(p != "yes" and g != "yes" for p, g in zip(predictions, labels, strict=True))
    fn = len(labels) - tp - fp - tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": 100 * (tp + tn) / len(labels), "precision": 100 * precision, "recall": 100 * recall,
            "f1": 100 * f1, "yes_ratio": 100 * predictions.count("yes") / len(predictions)}


def gqa_answer(text: str) -> str:
    """LLaVA's ``convert_gqa_for_eval.py``: trailing periods stripped, lower case (then exact match)."""
    return text.rstrip(".").lower()


def gqa_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """GQA exact match (%), predictions normalised by :func:`gqa_answer`."""
    if not predictions or len(predictions) != len(answers):
        raise TaskError(f"GQA: {len(predictions)} answers for {len(answers)} questions")
    return 100 * sum(gqa_answer(p) == a for p, a in zip(predictions, answers, strict=True)) / len(answers)


def mme_answer(text: str) -> str:
    """MME's ``parse_pred_ans`` (eval_tool, lmms-eval): 'yes', 'no' or 'other'."""
    text = text.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_scores(rows: Iterable[tuple[str, str, str, str]]) -> dict[str, Any]:
    """MME scores from (category, image, parsed prediction, answer) rows: per category acc + acc+ (both of an
    image's two questions right), summed into perception (max 2000) and cognition (max 800)."""
    per: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for category, image, pred, answer in rows:
        per[category][image].append(pred == answer.lower().strip().replace(".", ""))
    scores: dict[str, float] = {}
    for category, images in per.items():
        n_q = sum(len(v) for v in images.values())
        acc = 100 * sum(sum(v) for v in images.values()) / n_q
        acc_plus = 100 * sum(all(v) for v in images.values()) / len(images)
        scores[category] = acc + acc_plus
    return {"perception": sum(v for k, v in scores.items() if k in MME_PERCEPTION),
            "cognition": sum(v for k, v in scores.items() if k in MME_COGNITION), "categories": scores}


# ------------------------------------------------------------------------------------------ evaluators
class VQASet:
    """A benchmark's questions as (image path, question, answer, group) rows; item ``i`` decodes its image
    (``group``: the POPE split, or the MME category, for the per-group scores)."""

    def __init__(self, rows: list[tuple[Path, str, str, str]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, str, str, str]:
        from glocal.datasets.engine import open_image

        path, question, answer, group = self.rows[i]
        if not path.is_file():
            raise TaskError(f"image not found: {path}")
        with open_image(path) as im:
            return im.convert("RGB"), question, answer, group


def _options(spec: DatasetSpec, allowed: tuple[str, ...]) -> int | None:
    """Check a dataset's options (one line for an unknown one or a bad limit); return ``limit``."""
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise TaskError(f"--dataset {spec.name} has no option {unknown[0]!r} (options: {', '.join(allowed)})")
    try:
        limit = int(spec.options["limit"]) if "limit" in spec.options else None
    except ValueError:
        raise TaskError(f"--dataset {spec.name}: limit must be an integer, got {spec.options['limit']!r}") from None
    if limit is not None and limit < 1:
        raise TaskError(f"--dataset {spec.name}: limit must be positive")
    return limit


def _read_json(path: Path, lines: bool) -> Any:
    try:
        text = path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()] if lines else json.loads(text)
    except (OSError, ValueError) as e:
        raise TaskError(f"cannot read {path}: {e}") from None


def _fields(row: Any, keys: tuple[str, ...], where: Path) -> list[Any]:
    if not isinstance(row, dict) or any(k not in row for k in keys):
        raise TaskError(f"{where}: expected entries with {', '.join(keys)}")
    return [row[k] for k in keys]


def open_pope(card: Any, variant: Any, spec: DatasetSpec) -> VQASet:
    """POPE question files (JSON lines: question_id, image, text, label), a file or a folder of splits."""
    limit = _options(spec, ("images", "limit"))
    if spec.path is None or not spec.path.exists():
        raise TaskError("pope needs its question file or folder: --dataset pope=PATH,images=COCO_val2014_DIR")
    files = sorted(spec.path.glob("*.json")) if spec.path.is_dir() else [spec.path]
    images = Path(spec.options.get("images", spec.path if spec.path.is_dir() else spec.path.parent))
    rows = []
    for f in files:
        entries = _read_json(f, lines=True)[:limit]
        for e in entries:
            image, text, label = _fields(e, ("image", "text", "label"), f)
            rows.append((images / image, text + SHORT_ANSWER, str(label), f.stem))
    return VQASet(rows)


def open_gqa(card: Any, variant: Any, spec: DatasetSpec) -> VQASet:
    """GQA's question file (a JSON object: question id -> {imageId, question, answer, ...}), images as ID.jpg."""
    limit = _options(spec, ("images", "limit"))
    if spec.path is None or not spec.path.is_file():
        raise TaskError("gqa needs its question file: --dataset gqa=testdev_balanced_questions.json,images=DIR")
    questions = _read_json(spec.path, lines=False)
    if not isinstance(questions, dict):
        raise TaskError(f"{spec.path}: expected GQA's object of questions keyed by id")
    images = Path(spec.options.get("images", spec.path.parent / "images"))
    rows = []
    for q in list(questions.values())[:limit]:
        image, question, answer = _fields(q, ("imageId", "question", "answer"), spec.path)
        rows.append((images / f"{image}.jpg", question + SHORT_ANSWER, str(answer), "gqa"))
    return VQASet(rows)


def mme_items(root: Path) -> list[tuple[str, Path, str, str]]:
    """(category, image, question, answer) of the MME release folder: per category either ``images/`` +
    ``questions_answers_YN/`` or image files beside same-named ``.txt`` files; each line 'question<TAB>answer'."""
    items = []
    for cat in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = cat / "questions_answers_YN" if (cat / "questions_answers_YN").is_dir() else cat
        img_dir = cat / "images" if (cat / "images").is_dir() else cat
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((img_dir / f"{txt.stem}{ext}" for ext in (".jpg", ".png", ".jpeg")
                          if (img_dir / f"{txt.stem}{ext}").is_file()), None)
            if image is None:
                raise TaskError(f"MME: no image for {txt}")
            for line in txt.read_text().splitlines():
                if line.strip():
                    question, _, answer = line.rpartition("\t")
                    items.append((cat.name, image, question.strip(), answer.strip()))
    if not items:
        raise TaskError(f"no MME questions under {root} (expected category folders with question files)")
    return items


def open_mme(card: Any, variant: Any, spec: DatasetSpec) -> VQASet:
    """The MME release folder (see :func:`mme_items`); the question is asked as written."""
    limit = _options(spec, ("limit",))
    if spec.path is None or not spec.path.is_dir():
        raise TaskError("mme needs the MME release folder: --dataset mme=MME_Benchmark_release_version")
    return VQASet([(image, q, a, cat) for cat, image, q, a in mme_items(spec.path)[:limit]])


def _processor(model: nn.Module) -> Any:
    info = getattr(model, "glocal_weights", None)
    if info is None or info.source not in ("file", "hub"):
        raise TaskError("VLM accuracy needs real weights from a Hugging Face folder (--weights PATH)")
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(info.id, local_files_only=info.source == "file")


def _answer(model: nn.Module, processor: Any, image: Any, question: str, ctx: EvalContext,
            max_new_tokens: int = 16) -> str:
    """One greedy answer to ``question`` about an RGB image, through the model's chat template."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    inputs = {k: v.to(ctx.device, ctx.dtype) if v.is_floating_point() else v.to(ctx.device)
              for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    with torch.inference_mode():
        tokens, _ = greedy_generate(model, inputs, max_new_tokens, processor.tokenizer.eos_token_id)
    return processor.tokenizer.decode(tokens[0], skip_special_tokens=True).strip()


def _answers(model: nn.Module, ds: VQASet, ctx: EvalContext, name: str) -> list[tuple[str, str, str, str]]:
    """(prediction, answer, group, image) for every question, with a progress bar."""
    from glocal.progress import track

    processor = _processor(model)
    out = []
    for i in track(range(len(ds)), description=name, enabled=ctx.progress):
        image, question, answer, group = ds[i]
        out.append((_answer(model, processor, image, question, ctx), answer, group, str(ds.rows[i][0])))
    return out


@register_evaluator("pope", ("vlm",), open=open_pope, description="POPE (COCO): yes/no accuracy and F1 (mean "
                    "over the splits); --dataset pope=QUESTIONS.json|DIR,images=COCO_val2014_DIR[,limit=N]")
def evaluate_pope(model: nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
    ds = open_pope(card, variant, spec)
    rows = _answers(model, ds, ctx, "POPE")
    splits = sorted({g for _, _, g, _ in rows})
    per = {s: pope_metrics([pope_answer(p) for p, _, g, _ in rows if g == s], [a for _, a, g, _ in rows if g == s])
           for s in splits}
    mean = {k: sum(m[k] for m in per.values()) / len(per) for k in ("accuracy", "f1")}
    return EvalResult({"pope_accuracy": mean["accuracy"], "pope_f1": mean["f1"], "num_samples": len(rows)},
                      {"name": "pope", "path": str(spec.path), "num_samples": len(rows), "splits": per})


@register_evaluator("gqa", ("vlm",), open=open_gqa, description="GQA exact match; --dataset "
                    "gqa=testdev_balanced_questions.json,images=DIR[,limit=N]")
def evaluate_gqa(model: nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
    rows = _answers(model, open_gqa(card, variant, spec), ctx, "GQA")
    acc = gqa_accuracy([p for p, _, _, _ in rows], [a for _, a, _, _ in rows])
    return EvalResult({"gqa_accuracy": acc, "num_samples": len(rows)},
                      {"name": "gqa", "path": str(spec.path), "num_samples": len(rows)})


@register_evaluator("mme", ("vlm",), open=open_mme, description="MME perception and cognition scores; --dataset "
                    "mme=MME_Benchmark_release_version[,limit=N]")
def evaluate_mme(model: nn.Module, card: Any, variant: Any, spec: DatasetSpec, ctx: EvalContext) -> EvalResult:
    rows = _answers(model, open_mme(card, variant, spec), ctx, "MME")
    scores = mme_scores((group, image, mme_answer(p), a) for p, a, group, image in rows)
    return EvalResult({"mme_perception": scores["perception"], "mme_cognition": scores["cognition"],
                       "num_samples": len(rows)},
                      {"name": "mme", "path": str(spec.path), "num_samples": len(rows),
                       "categories": scores["categories"]})
