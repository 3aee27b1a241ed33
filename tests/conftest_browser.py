"""Result records and model cards for the leaderboard tests (imported by test_leaderboard*.py).

Several models, tasks, devices, precisions and resolutions; one random-weights record, one OOM record, one
superseded record, and one model whose names and notes hold markup.
"""

from __future__ import annotations

import uuid
from typing import Any

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
    **extra: Any,
) -> dict:
    """A v1 result record; the id is derived from the arguments, so the same call gives the same id."""
    key = repr((family, variant, task, device, precision, batch, resolution, dataset, weights, timestamp, status))
    ok = status == "ok"
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
            "device": "cuda",
            "precision": precision,
            "batch_size": batch,
            "resolution": resolution,
            "input_shape": [batch, 3, resolution, resolution],
            "channels_last": False,
            "compile": None,
            "tf32": False,
            "cudnn_benchmark": True,
            "threads": 1,
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
        }
        if ok
        else None,
        "memory": {"unit": "MiB", "peak_allocated": memory, "peak_reserved": memory * 1.2 if memory else None}
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
    rec.update(extra)
    return rec


def sample_records() -> list[dict]:
    """The leaderboard test data (see the module docstring)."""
    R = make_record
    cls = [
        # H100 bf16 ImageNet: gcvit_xxtiny, dinat_mini, gcvit_tiny on the frontier; dinat_tiny, xss not.
        R(
            "gcvit",
            "gcvit_xxtiny",
            metrics={"top1": 79.9, "top5": 95.0},
            latency=3.1,
            memory=410.0,
            gmacs=2.14,
            params=12_000_000,
        ),
        R(
            "dinat",
            "dinat_mini",
            metrics={"top1": 81.8, "top5": 95.8},
            latency=4.0,
            memory=520.0,
            gmacs=2.7,
            params=19_984_174,
        ),
        R(
            "gcvit",
            "gcvit_tiny",
            metrics={"top1": 83.4, "top5": 96.4},
            latency=5.2,
            memory=800.0,
            gmacs=4.7,
            params=28_224_160,
        ),
        R(
            "dinat",
            "dinat_tiny",
            metrics={"top1": 82.7, "top5": 96.2},
            latency=6.5,
            memory=900.0,
            gmacs=4.3,
            params=27_994_486,
        ),
        R(
            XSS_FAMILY,
            "xss_tiny",
            display_name=XSS_NAME,
            metrics={"top1": 50.0},
            latency=50.0,
            memory=100.0,
            gmacs=1.0,
            params=1_000_000,
            notes=[XSS_NOTE],
            command=f"bench run --model '{XSS_NAME}'",
        ),
        # the same cell measured earlier: superseded by the run above
        R(
            "gcvit",
            "gcvit_tiny",
            metrics={"top1": 80.0, "top5": 94.0},
            latency=5.9,
            memory=800.0,
            gmacs=4.7,
            params=28_224_160,
            timestamp="2026-08-01T09:00:00+00:00",
        ),
        # A100 fp32
        R(
            "gcvit",
            "gcvit_tiny",
            device=A100,
            precision="fp32",
            metrics={"top1": 83.38},
            latency=11.0,
            memory=1500.0,
            gmacs=4.7,
            params=28_224_160,
        ),
        R(
            "dinat",
            "dinat_mini",
            device=A100,
            precision="fp32",
            metrics={"top1": 81.79},
            latency=9.0,
            memory=1000.0,
            gmacs=2.7,
            params=19_984_174,
        ),
        # random weights: latency shown, no quality (a record carrying any is refused by the validator)
        R(
            "dinat",
            "dinat_tiny",
            device=A100,
            precision="fp32",
            weights="random",
            metrics={},
            latency=12.5,
            memory=1200.0,
            gmacs=4.3,
            params=27_994_486,
            dataset=None,
        ),
    ]
    # latency-only resolution sweeps (no dataset) on H100 bf16, and one out-of-memory cell
    sweep = []
    for res, (lg, ld, mg, md) in {
        224: (5.0, 3.9, 700.0, 500.0),
        384: (12.0, 9.5, 1900.0, 1300.0),
        512: (24.0, 18.0, 3500.0, 2400.0),
    }.items():
        sweep.append(
            R(
                "gcvit",
                "gcvit_tiny",
                resolution=res,
                dataset=None,
                latency=lg,
                memory=mg,
                gmacs=4.7 * (res / 224) ** 2,
                params=28_224_160,
            )
        )
        sweep.append(
            R(
                "dinat",
                "dinat_mini",
                resolution=res,
                dataset=None,
                latency=ld,
                memory=md,
                gmacs=2.7 * (res / 224) ** 2,
                params=19_984_174,
            )
        )
    sweep.append(
        R(
            "gcvit",
            "gcvit_tiny",
            resolution=2048,
            dataset=None,
            status="oom",
            error="CUDA out of memory. Tried to allocate 12.00 GiB",
        )
    )
    restoration = [
        R(
            "dea_net",
            "dea_net_deploy",
            task="dehazing",
            precision="fp16",
            resolution=512,
            dataset="sots-indoor",
            metrics={
                "psnr": 41.31,
                "ssim": 0.9952,
                "baseline": {"method": "hazy input", "psnr": 12.1, "ssim": 0.7},
            },
            latency=8.0,
            memory=600.0,
            gmacs=34.8,
            params=3_653_480,
        ),
        R(
            "dea_net",
            "dea_net_deploy",
            task="dehazing",
            precision="fp16",
            resolution=1024,
            dataset=None,
            latency=31.0,
            memory=2200.0,
            gmacs=139.2,
            params=3_653_480,
        ),
        R(
            "rgt",
            "rgt_s_x4",
            task="super_resolution",
            resolution=512,
            dataset="set5",
            metrics={
                "psnr": 32.8,
                "ssim": 0.902,
                "baseline": {"method": "bicubic", "psnr": 28.4, "ssim": 0.81},
            },
            latency=80.0,
            memory=3000.0,
            gmacs=200.0,
            params=10_200_000,
        ),
        R(
            "rgt",
            "rgt_s_x4",
            task="super_resolution",
            resolution=512,
            device=A100,
            precision="fp32",
            dataset=None,
            status="error",
            error="RuntimeError: <boom> & friends",
        ),
    ]
    structure = [
        R(
            "gcvit",
            "gcvit_tiny",
            dataset="dist",
            metrics={
                "structure_sensitivity": {
                    "accuracy": 0.62,
                    "ci95": [0.58, 0.66],
                    "n_trials": 200,
                    "chance": 1 / 3,
                    "distance": "cosine",
                    "layer": "pooled",
                    "baselines": {"pixel_histogram": {"accuracy": 0.35}, "local_patches": {"accuracy": 0.41}},
                }
            },
            latency=5.1,
            memory=800.0,
            gmacs=4.7,
            params=28_224_160,
        ),
    ]
    return cls + sweep + restoration + structure


def sample_cards() -> list[dict]:
    """Model cards as ``ModelCard.to_dict()`` gives them (built from the real dataclasses)."""
    import torch.nn as nn

    from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource

    def v(name: str, params: int, metrics: tuple = (), **kw: Any) -> Variant:
        return Variant(
            name=name,
            builder=nn.Identity,
            kwargs={"depths": (2, 2, 6, 2), "norm_layer": nn.LayerNorm},
            params=params,
            paper_metrics=metrics,
            weights=(
                WeightSource(
                    description="official ImageNet-1K checkpoint",
                    url="https://example.org/w.pth",
                    filename="w.pth",
                ),
            ),
            **kw,
        )

    cards = [
        ModelCard(
            family="gcvit",
            display_name="GC ViT",
            task="classification",
            paper_title="Global Context Vision Transformers",
            arxiv_id="2206.09959",
            official_repo="https://github.com/NVlabs/GCVit",
            license="CC-BY-NC-SA-4.0",
            default_variant="gcvit_tiny",
            description="Global context attention with local windows.",
            variants=(
                v("gcvit_xxtiny", 12_000_000, (PaperMetric("ImageNet-1K", "top1", 79.9),)),
                v(
                    "gcvit_tiny",
                    28_224_160,
                    (PaperMetric("ImageNet-1K", "top1", 83.5), PaperMetric("ImageNet-1K", "gmacs", 4.7)),
                    resolutions=(224, 384, 512),
                ),
            ),
        ),
        ModelCard(
            family="dinat",
            display_name="DiNAT",
            task="classification",
            paper_title="Dilated Neighborhood Attention Transformer",
            arxiv_id="2209.15001",
            official_repo="javascript:alert(1)",
            license="MIT",
            variants=(
                v("dinat_mini", 19_984_174, (PaperMetric("ImageNet-1K", "top1", 81.8),)),
                v("dinat_tiny", 27_994_486, (PaperMetric("ImageNet-1K", "top1", 82.7),)),
            ),
        ),
        ModelCard(
            family="dea_net",
            display_name="DEA-Net",
            task="dehazing",
            paper_title="DEA-Net: Single image dehazing based on detail-enhanced convolution and "
            "content-guided attention",
            arxiv_id="2301.04805",
            official_repo="https://github.com/cecret3350/DEA-Net",
            license="unknown",
            variants=(
                v(
                    "dea_net_deploy",
                    3_653_480,
                    (PaperMetric("SOTS-indoor", "psnr", 41.31),),
                    preprocessing=Preprocessing(input_size=(3, 256, 256)),
                ),
            ),
        ),
        ModelCard(
            family="swin_unused",
            display_name="Unmeasured Net",
            task="super_resolution",
            paper_title="A model with a card and no records",
            arxiv_id="",
            official_repo="",
            license="MIT",
            variants=(v("unused_x2", 1_000, scale=2),),
        ),
    ]
    return [c.to_dict() for c in cards]
