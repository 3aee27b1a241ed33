"""Resumable, verified, locked downloads of weight files into the user cache.

A file is written to ``DEST.part`` and moved to ``DEST`` only after its sha256 matched, so a partial or
corrupt download is never used; a dropped connection resumes with an HTTP ``Range`` request; a lock file
beside the destination makes a second process wait for the first one's download instead of writing the same
``.part`` file. Offline (``GLOCAL_OFFLINE`` / ``HF_HUB_OFFLINE``) or unreachable hosts fail fast with one line.
Only the standard library is used (urllib), plus :mod:`glocal.progress` for the bar; like those, this module
lives at the package root and imports no torch, so any process (a dataset worker, a waiting second process)
can use it cheaply.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from glocal.hashing import sha256_file

CHUNK = 1 << 20  # 1 MiB: the unit of the progress bar
RETRIES = 5  # resumes after a dropped connection (only once bytes have arrived: a refused connect fails at once)


class DownloadError(ValueError):
    """A download that cannot be completed or verified (one clear line; nothing half-written is kept)."""


def offline() -> bool:
    """The user said there is no network (the variables the zoo's hub path honours too)."""
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "GLOCAL_OFFLINE"))


def cache_dir() -> Path:
    """The user cache for weight files: ``$GLOCAL_CACHE``, else ``$XDG_CACHE_HOME/glocal`` or ``~/.cache/glocal``."""
    root = os.environ.get("GLOCAL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glocal"


@contextlib.contextmanager
def file_lock(path: Path, poll: float = 0.1) -> Iterator[None]:
    """An exclusive lock on ``path`` (created, and removed when released) shared by processes and threads.

    After acquiring, the lock is re-checked to be the file now at ``path``: a holder that removed it on release
    may have let us lock an unlinked file, in which case we try again (the usual unlink-on-release race).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd, poll)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _lock_fd(fd: int, poll: float) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks one byte; poll until it is free
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(poll)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _request(url: str, start: int) -> urllib.request.Request:
    headers = {"User-Agent": "glocal-weights"}
    if start:
        headers["Range"] = f"bytes={start}-"
    token = os.environ.get("HF_TOKEN")
    if token and (urlparse(url).hostname or "").endswith("huggingface.co"):
        headers["Authorization"] = f"Bearer {token}"  # gated repositories (e.g. FLUX.1-dev) need an accepted token
    return urllib.request.Request(url, headers=headers)


def _one_attempt(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """Append to ``part`` from where it stops; True when the server says the file is complete."""
    from glocal.progress import track

    start = part.stat().st_size if part.exists() else 0
    try:
        resp = urllib.request.urlopen(_request(url, start), timeout=timeout)  # noqa: S310 - http(s) URLs only
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # range past the end: the partial file already holds everything
            return True
        raise
    with resp:
        if start and resp.status != 206:  # the server ignored the range: start again
            start = 0
        length = resp.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        chunks = iter(lambda: resp.read(CHUNK), b"")
        total = None if expected is None else -(-(expected - start) // CHUNK)
        with open(part, "ab" if start else "wb") as f:
            for block in track(chunks, total=total, description=f"download {part.name[:-5]}", enabled=progress):
                f.write(block)
    return expected is None or part.stat().st_size >= expected


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *, timeout: float = 20.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resumable, locked, verified against ``sha256`` when given) and return it.

    An existing ``dest`` is returned as is: it only ever appears there after verification.
    """
    dest = Path(dest)
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download {url!r}: only http(s) URLs are supported")
    if dest.is_file():
        return dest
    if offline():
        raise DownloadError(f"offline (GLOCAL_OFFLINE/HF_HUB_OFFLINE set): cannot download {url}")
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    part = dest.with_name(dest.name + ".part")
    try:
        with file_lock(dest.with_name(dest.name + ".lock")):
            if dest.is_file():  # another process finished it while we waited
                return dest
            _download_locked(url, part, timeout, progress)
            got = sha256_file(part)
            if sha256 and got != sha256.lower():
                part.unlink()
                raise DownloadError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; "
                                    "the downloaded file was removed")
            os.replace(part, dest)
            return dest
    except BaseException:
        for p in made:  # folders this call created and left empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _download_locked(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Fetch into ``part``, resuming after dropped connections; a failure before any byte arrives is final."""
    host = urlparse(url).hostname
    for attempt in range(RETRIES + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            if _one_attempt(url, part, timeout, progress):
                return
        except urllib.error.HTTPError as e:
            _drop_empty(part)
            hint = " (gated: accept the licence on the model page and set HF_TOKEN)" if e.code in (401, 403) else ""
            raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}{hint}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            now = part.stat().st_size if part.exists() else 0
            if now == before or attempt == RETRIES:  # nothing came through: unreachable, fail fast
                _drop_empty(part)
                reason = getattr(e, "reason", e)
                raise DownloadError(f"cannot reach {host} for {url}: {reason}") from e
    raise DownloadError(f"download of {url} stopped short {RETRIES + 1} times; run the command again to resume")


def _drop_empty(part: Path) -> None:
    if part.exists() and part.stat().st_size == 0:
        part.unlink()
