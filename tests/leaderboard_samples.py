"""Sample result records and model cards for the leaderboard tests (``test_leaderboard*.py``).

The fixed data lives in ``tests/data/leaderboard/``: ``sample_records.json`` (the keyword arguments of
:func:`make_record`, one record per line: several models, tasks, devices, precisions and resolutions; one
random-weights record, one OOM record, one superseded record, and one model whose names and notes hold markup)
and ``sample_cards.json`` (card fields, built into the real dataclasses by :func:`sample_cards`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "leaderboard"
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
XSS_FAMILY = "xss<img src=x onerror=alert(1)>"
XSS_NAME = "</script><img src=x onerror=alert(1)>"
XSS_NOTE = "<script>alert('note')</script> & <u>underlined</u>"


def make_record(
    family: str,
    variant: str,
    *,
    task: str = "classification",
    device: str = H100,
    precision: str = "bf16",
    batch: int = 1,
    resolution: int = 224,
    metrics: dict | None = None,
    latency: float | None = None,
    p90: float | None = None,
    memory: float | None = None,
    gmacs: float | None = None,
    params: int | None = None,
    status: str = "ok",
    error: str | None = None,
    weights: str = "package",
    dataset: str | None = "imagenet",
    timestamp: str = "2026-08-20T10:00:00+00:00",
    display_name: str | None = None,
    notes: list[str] | None = None,
    noise: float | None = None,
    threads: int | None = None,
    method: dict | None = None,
    task_options: dict | None = None,
    workload: dict | None = None,
    **extra: Any,
) -> dict:
    """A v1 result record; the id is derived from the arguments, so the same call gives the same id.
    ``noise`` is the latency's IQR over its median; ``threads`` makes it a CPU run (memory is then the CPU
    peak RSS); ``method``, ``task_options`` and ``workload`` fill the fields of the same names."""
    key = repr((family, variant, task, device, precision, batch, resolution, dataset, weights, timestamp, status,
                method, task_options))
    ok = status == "ok"
    cpu = threads is not None
    rec: dict[str, Any] = {
        "schema_version": 1,
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "run_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "run" + timestamp)),
        "timestamp": timestamp,
        "status": status,
        "error": error,
        "model": {"family": family, "variant": variant, "task": task, "display_name": display_name or family},
        "weights": {
            "source": weights,
            "id": "random" if weights == "random" else f"{variant}.official",
            "sha256": None if weights == "random" else "ab" * 32,
            "layout": "official",
        },
        "task": task,
        "dataset": {"name": dataset, "path": None, "num_samples": 50_000} if dataset else None,
        "settings": {
            "device": "cpu" if cpu else "cuda",
            "precision": precision,
            "batch_size": batch,
            "resolution": resolution,
            "input_shape": [batch, 3, resolution, resolution],
            "channels_last": False,
            "compile": None,
            "tf32": False,
            "cudnn_benchmark": True,
            "threads": threads or 1,
            "method": method,
            "task_options": dict(task_options or {}),
        },
        "metrics": dict(metrics or {}),
        "latency": {
            "timer": "cuda_event",
            "unit": "ms",
            "n": 200,
            "median": latency,
            "p90": p90 if p90 is not None else (latency * 1.05 if latency else None),
            "throughput": (1000.0 * batch / latency) if latency else None,
            "throughput_unit": "img/s",
            "ms_per_megapixel": latency / (resolution * resolution / 1e6) if latency else None,
            "samples": [latency] * 20 if latency else [],
            "iqr_over_median": noise or 0.0,
        }
        if ok
        else None,
        "memory": ({"unit": "MiB", "cpu_peak_rss": memory} if cpu else
                   {"unit": "MiB", "peak_allocated": memory, "peak_reserved": memory * 1.2 if memory else None})
        if ok
        else None,
        "compute": {"params": params, "gmacs": gmacs, "counter": "FlopCounterMode"} if ok and params else None,
        "environment": {
            "device_name": device,
            "driver": "560.35",
            "cuda": "12.6",
            "cudnn": 90300,
            "torch": "2.15.0",
            "torchvision": "0.30.0",
            "timm": "1.0.31",
            "glocal": "0.1.0",
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "python": "3.11.9",
            "platform": "Linux-6.8-x86_64",
            "cpu": "AMD EPYC",
            "gpu_uuid": "GPU-1234",
        },
        "command": (
            f"bench run --model {variant} --device cuda --precision {precision} --batch-size {batch} "
            f"--resolution {resolution}"
            + (f" --dataset {dataset}=/data/{dataset}" if dataset else "")
            + (" --weights random" if weights == "random" else "")
        ),
        "notes": list(notes or []),
    }
    if workload is not None:
        rec["workload"] = dict(workload)
    if cpu:
        rec["environment"].update(threads=threads, cuda=None, cudnn=None, driver=None, gpu_uuid=None)
    rec.update(extra)
    return rec


def sample_records() -> list[dict]:
    """The leaderboard test records (``sample_records.json``; a ``_comment`` says what an entry is for)."""
    rows = json.loads((DATA / "sample_records.json").read_text())
    return [make_record(**{k: v for k, v in row.items() if k != "_comment"}) for row in rows]


def scaling_records() -> list[dict]:
    """Generation and multi-view records (``scaling_records.json``): Scale-DiT and UltraGen each against dense
    attention (the ``attention`` task option), VGGT and FlashVGGT against frames with one out-of-memory cell."""
    rows = json.loads((DATA / "scaling_records.json").read_text())
    return [make_record(**{k: v for k, v in row.items() if k != "_comment"}) for row in rows]


def scaling_cards() -> list[dict]:
    """The cards of :func:`scaling_records` (``scaling_cards.json``), with paper-reported runtime figures."""
    return sample_cards("scaling_cards.json")


def sample_cards(name: str = "sample_cards.json") -> list[dict]:
    """Model cards as ``ModelCard.to_dict()`` gives them, built from ``sample_cards.json`` (or ``name``) with the
    real dataclasses; every variant has the same builder, kwargs and one official weight source."""
    import torch.nn as nn

    from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource

    def variant(name: str, params: int, paper_metrics: list = (), preprocessing: dict | None = None,
                **kw: Any) -> Variant:
        if preprocessing is not None:
            kw["preprocessing"] = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in preprocessing.items()})
        if "resolutions" in kw:
            kw["resolutions"] = tuple(kw["resolutions"])
        return Variant(
            name=name,
            builder=nn.Identity,
            kwargs={"depths": (2, 2, 6, 2), "norm_layer": nn.LayerNorm},
            params=params,
            paper_metrics=tuple(PaperMetric(*m) for m in paper_metrics),
            weights=(WeightSource(description="official ImageNet-1K checkpoint", url="https://example.org/w.pth",
                                  filename="w.pth"),),
            **kw,
        )

    cards = []
    for c in json.loads((DATA / name).read_text()):
        fields = {k: v for k, v in c.items() if k != "variants"}
        cards.append(ModelCard(**fields, variants=tuple(variant(**v) for v in c["variants"])))
    return [c.to_dict() for c in cards]


BUILT_CARDS = DATA / "sample_cards.built.json"


def cards_as_json(cards: list[dict]) -> list[dict]:
    """Card dicts as the site's ``data/cards.json`` holds them (what a page can ever read of a card)."""
    return json.loads(json.dumps(cards, sort_keys=True, default=str))


def sample_card_dicts() -> list[dict]:
    """:func:`sample_cards` as JSON, stored in ``sample_cards.built.json`` so that the browser tests need no
    torch import; ``test_leaderboard.py`` checks that the file equals a fresh build of the cards."""
    return json.loads(BUILT_CARDS.read_text())
