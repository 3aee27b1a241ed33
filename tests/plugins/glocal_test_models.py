"""Tiny models registered only for tests (through GLOCAL_PLUGINS): one that works, one whose process
dies, one that runs out of memory."""

import os

import torch
import torch.nn as nn

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
        return self.head(self.conv(x).relu().mean((2, 3)))


CARD = register(ModelCard(
    family="testnet", display_name="TestNet", task="classification", paper_title="none", arxiv_id="0000.00000",
    official_repo="none", license="MIT",
    variants=(
        Variant(name="testnet_ok", builder=TinyNet, kwargs={"mode": "ok"}, params=8 * 27 + 8 + 8 * 10 + 10,
                resolutions=(32,)),
        Variant(name="testnet_crash", builder=TinyNet, kwargs={"mode": "crash"}, resolutions=(32,)),
        Variant(name="testnet_oom", builder=TinyNet, kwargs={"mode": "oom"}, resolutions=(32,)),
    ),
))
