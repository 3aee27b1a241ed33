"""Helpers for checking zoo models against the official state-dict manifests in tests/data/manifests.

The manifests (copied from the project's reference folder) record every key and shape an official
implementation saves; no weights. ``random_checkpoint`` makes a random state dict in that exact layout,
so a strict load proves key-for-key and shape-for-shape compatibility with the official files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MANIFESTS = Path(__file__).parent / "data" / "manifests"
_DTYPES = {"int64": torch.int64, "int32": torch.int32, "float16": torch.float16, "bool": torch.bool,
           "float64": torch.float64, "uint8": torch.uint8}


def load_manifest(model: str, variant: str) -> dict:
    return json.loads((MANIFESTS / model / f"{variant}.json").read_text())


def manifest_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in manifest["state_dict"].items()}


def random_checkpoint(manifest: dict, seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A random state dict in the manifest's layout (floats ~N(0, scale), integer entries zero)."""
    g = torch.Generator().manual_seed(seed)
    non_float = manifest.get("non_float32_entries", {})
    out: dict[str, torch.Tensor] = {}
    for key, shape in manifest["state_dict"].items():
        dtype = _DTYPES.get(non_float.get(key, "float32"), torch.float32)
        if dtype.is_floating_point:
            out[key] = (torch.randn(shape, generator=g) * scale).to(dtype)
        else:
            out[key] = torch.zeros(shape, dtype=dtype)
    return out


def assert_matches_manifest(model: torch.nn.Module, manifest: dict) -> None:
    """Same keys, same order, same shapes, same dtypes, same parameter count as the official model."""
    sd = model.state_dict()
    expected = manifest_shapes(manifest)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    first = next((i for i, (x, y) in enumerate(zip(sd, expected, strict=True)) if x != y), None)
    assert first is None, f"state-dict order differs at entry {first}: {list(sd)[first]} vs {list(expected)[first]}"
    wrong = {k: (tuple(sd[k].shape), s) for k, s in expected.items() if tuple(sd[k].shape) != s}
    assert not wrong, f"shape mismatches: {list(wrong.items())[:5]}"
    non_float = manifest.get("non_float32_entries", {})
    for k, t in sd.items():
        want = _DTYPES.get(non_float.get(k, "float32"), torch.float32)
        assert t.dtype == want, f"{k}: dtype {t.dtype}, official {want}"
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]
