"""Content hashes of files: the one sha256 helper of the zoo (checkpoint provenance) and the datasets (sources).

It lives at the package root, beside :mod:`glocal.taskspec`, because both ``glocal.zoo`` and
``glocal.datasets`` use it and it must import nothing: importing it from a dataset generator's worker process
must not pull in torch, which ``import glocal.zoo`` does.
"""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks (constant memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
