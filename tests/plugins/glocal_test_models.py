"""Tiny models registered only for tests (through GLOCAL_PLUGINS): one that works, one whose process
dies, one that runs out of memory, one that never finishes; and a small efficiency method."""

import os
import time

import torch
import torch.nn as nn

from glocal.zoo.methods import Method, Param, register_method
from glocal.zoo.registry import ModelCard, Variant, register


class TinyNet(nn.Module):
    """conv -> global pool -> linear: a real (small) classifier."""

    def __init__(self, num_classes: int = 10, mode: str = "ok"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        if self.mode == "crash":
            os.abort()  # the whole process dies, as a segfault in a kernel would
        if self.mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        if self.mode == "hang":
            time.sleep(3600)
        return self.head(self.conv(x).relu().mean((2, 3)))


CARD = register(ModelCard(
    family="testnet", display_name="TestNet", task="classification", paper_title="none", arxiv_id="0000.00000",
    official_repo="none", license="MIT",
    variants=(
        Variant(name="testnet_ok", builder=TinyNet, kwargs={"mode": "ok"}, params=8 * 27 + 8 + 8 * 10 + 10,
                resolutions=(32,)),
        Variant(name="testnet_crash", builder=TinyNet, kwargs={"mode": "crash"}, resolutions=(32,)),
        Variant(name="testnet_oom", builder=TinyNet, kwargs={"mode": "oom"}, resolutions=(32,)),
        Variant(name="testnet_hang", builder=TinyNet, kwargs={"mode": "hang"}, resolutions=(32,)),
    ),
))


def _zero_first(model: nn.Module, card, variant, params: dict) -> nn.Module:
    """Zero the first ``count`` weights of the head: a method whose effect is known exactly."""
    with torch.no_grad():
        model.head.weight.view(-1)[: params["count"]] = 0
    return model


register_method(Method(
    name="zerofirst", description="zero the first COUNT head weights (test method)", apply=_zero_first,
    params={"count": Param(int, 4, check=lambda n: None if 0 <= n <= 80 else "must be in [0, 80]")},
    applies_to=lambda card, variant: card.family == "testnet",
    describe=lambda model: {"nonzero_params": sum(int((p != 0).sum()) for p in model.parameters())},
))
