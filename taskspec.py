"""The task specification: one definition of every task that the zoo, the harness and the site read.

A task is named once here with what a newcomer needs to know about it: its title, what its models take
as input, its primary quality metric and that metric's direction, and the units its measurements are
reported in. The zoo checks a card's task against :data:`TASKS`; the harness's task adapters (one file
per task in ``glocal/benchmarks/tasks/``) implement these names; the site makes one tab per entry.
This module imports nothing beyond the standard library, so the site can read it without torch.

Adding a task is one entry here plus one adapter file in ``benchmarks/tasks/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: name, title, input kind, primary metric (and its direction) and units."""

    name: str
    title: str
    input_kind: str  # what the model takes: image, latent-tokens, video-latent-tokens, frames, image+text
    description: str
    primary_metric: str | None = None  # dotted path inside a record's ``metrics``
    primary_label: str = ""
    higher_is_better: bool = True
    resolution_label: str = "input side (px)"  # what ``settings.resolution`` means for this task
    throughput_unit: str = "img/s"
    units: dict[str, str] = field(default_factory=lambda: {"latency": "ms", "memory": "MiB", "compute": "GMACs"})
    per_megapixel: bool = False  # latency and memory also reported per output megapixel
    model_task: bool = True  # zoo models register under it (False: an evaluation view of other tasks' models)
    datasets: tuple[str, ...] = ()  # for evaluation views: the datasets whose records belong to the view


def _spec(*specs: TaskSpec) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}


TASKS: dict[str, TaskSpec] = _spec(
    TaskSpec(
        "classification", "Classification", "image",
        "Image classification: top-1/top-5 accuracy on the dataset named, latency and memory at the input "
        "side shown.",
        primary_metric="top1", primary_label="Top-1 (%)",
    ),
    TaskSpec(
        "dehazing", "Dehazing", "image",
        "Single-image dehazing: PSNR/SSIM on RGB in [0, 1] against the clear image, with the hazy input as "
        "baseline; latency and memory at the output side shown.",
        primary_metric="psnr", primary_label="PSNR (dB)", resolution_label="output side (px)", per_megapixel=True,
    ),
    TaskSpec(
        "super_resolution", "Super-resolution", "image",
        "Super-resolution: PSNR/SSIM on the Y channel with a border crop equal to the scale, with bicubic "
        "upscaling as baseline; latency and memory at the output side shown.",
        primary_metric="psnr", primary_label="PSNR (dB)", resolution_label="output side (px)", per_megapixel=True,
    ),
    TaskSpec(
        "structure", "Structure sensitivity", "image",
        "Global-structure sensitivity (DiST/DiSRT odd-one-out on frozen embeddings): chance is 1/3; the "
        "local-only baselines show how much a texture-only observer solves.",
        primary_metric="structure_sensitivity.accuracy", primary_label="odd-one-out accuracy",
        model_task=False, datasets=("dist", "disrt"),
    ),
    TaskSpec(
        "detection", "Detection", "image",
        "COCO detection and instance segmentation (Mask R-CNN with FPN on the backbone): box and mask AP, "
        "latency and memory per image at the COCO size (shorter side 800).",
        primary_metric="box_ap", primary_label="box AP", resolution_label="shorter side (px)",
    ),
    TaskSpec(
        "generation", "Generation", "latent-tokens",
        "Image and video generation: seconds per denoising step (one transformer forward) at the target "
        "size, peak memory, tokens and attention FLOPs; CLIP score and FID with real weights.",
        primary_metric="clip_score", primary_label="CLIP score", resolution_label="image side (px)",
        throughput_unit="steps/s",
    ),
    TaskSpec(
        "multiview", "3D reconstruction", "frames",
        "Multi-view 3D reconstruction: seconds and peak memory per forward against the number of frames; "
        "pose AUC@30, depth AbsRel and point-map Chamfer with real weights.",
        primary_metric="auc30", primary_label="AUC@30", resolution_label="frame side (px)",
        throughput_unit="sequences/s",  # one cell forward is a whole multi-frame sequence
    ),
    TaskSpec(
        "vlm", "Vision-language", "image+text",
        "Vision-language models: prefill and per-token decode latency, visual tokens reaching the language "
        "model, prefill FLOPs; POPE, GQA and MME with real weights.",
        primary_metric="pope_f1", primary_label="POPE F1", throughput_unit="prefills/s",  # decode tokens/s: workload
    ),
)

MODEL_TASKS: tuple[str, ...] = tuple(name for name, s in TASKS.items() if s.model_task)


def get(name: str) -> TaskSpec:
    """The specification of a task; an unknown name raises ``KeyError`` listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None


def view_of(task: str, dataset: str | None, metrics: dict | None = None) -> str:
    """The task view a record belongs to: an evaluation view that claims its dataset, else its own task."""
    for spec in TASKS.values():
        if not spec.model_task and (dataset in spec.datasets or (spec.primary_metric or "").split(".")[0] in
                                    (metrics or {})):
            return spec.name
    return task
