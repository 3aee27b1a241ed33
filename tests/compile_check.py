"""``torch.compile(fullgraph=True)`` checks for zoo models at a fixed input size.

Backend ``eager`` runs Dynamo's whole-graph capture (any graph break raises) in seconds; ``inductor`` also
generates and runs C++ kernels, which takes minutes on a small CPU, so those tests are marked slow.
"""

from __future__ import annotations

import pytest
import torch

BACKENDS = ["eager", pytest.param("inductor", marks=pytest.mark.slow)]


def assert_compiles_fullgraph(model: torch.nn.Module, x: torch.Tensor, backend: str) -> None:
    """The compiled model runs as one graph and computes the eager model's output (exactly, for ``eager``)."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.inference_mode():
        got, want = compiled(x), model(x)
    tol = dict(rtol=0, atol=0) if backend == "eager" else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, want, **tol)
