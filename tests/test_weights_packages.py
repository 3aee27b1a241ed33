"""`bench weights`: official checkpoints -> verified wheels -> a PEP 503 index -> pip install into a fresh venv
-> the zoo and `bench run` use them; resumable, locked, verified downloads against a local HTTP server; bad input.

One virtual environment (``--system-site-packages``: torch is not reinstalled) serves the whole module.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from manifests import load_manifest, random_checkpoint
from safetensors.torch import save_file
from typer.testing import CliRunner

import glocal
from glocal import zoo
from glocal.benchmarks.cli import app
from glocal.download import DownloadError, download
from glocal.hashing import sha256_file
from glocal.zoo import weights_packages as wp
from glocal.zoo.models.gcvit import convert_official

runner = CliRunner()
FAST = ["--warmup-iters", "1", "--warmup-time", "0", "--min-iters", "2", "--min-time", "0"]
PACKAGES = {"gcvit_xxtiny": "gcvit_1k_xxtiny.pth.tar", "deanet_cr_train": "deanet_train.pk",
            "rgt_s_x2": "RGT_S_x2.pth"}
INPUTS = {"deanet_cr_train": (1, 3, 24, 20), "rgt_s_x2": (1, 3, 16, 16)}


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _env(tmp: Path) -> dict[str, str]:
    """The venv's environment: this checkout importable, its own store and cache, strictly offline."""
    root = str(Path(glocal.__file__).parent.parent)  # the folder holding `glocal` (symlinks kept: no neighbours)
    pp = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), root) if p)
    return {**os.environ, "PYTHONPATH": pp, "GLOCAL_STORE": str(tmp / "store.sqlite"),
            "GLOCAL_CACHE": str(tmp / "cache"), "GLOCAL_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Random checkpoints in each official layout, packaged into wheels, indexed, pip-installed into one venv."""
    tmp = tmp_path_factory.mktemp("weights")
    ck = tmp / "checkpoints"
    ck.mkdir()
    official = random_checkpoint(load_manifest("gcvit", "xxtiny"), seed=3)
    torch.save({"state_dict": official, "args": argparse.Namespace(model="gc_vit_xxtiny")},
               ck / PACKAGES["gcvit_xxtiny"])
    save_file({k: v.contiguous() for k, v in convert_official(official).items()}, str(ck / "gcvit_xxtiny.safetensors"))
    torch.save({"model": random_checkpoint(load_manifest("dea_net", "train"), seed=4), "epoch": 3},
               ck / PACKAGES["deanet_cr_train"])  # the DEA-Net training file and its wrapper
    torch.save({"params": random_checkpoint(load_manifest("rgt", "rgt_s_x2"), seed=5)}, ck / PACKAGES["rgt_s_x2"])
    wheels = tmp / "wheels"
    metas = {v: wp.package(v, ck / f, wheels, accept_license=True).metadata for v, f in PACKAGES.items()}
    timm_layout = wp.package("gcvit_xxtiny", ck / "gcvit_xxtiny.safetensors", tmp / "alt", accept_license=True)
    wp.build_index(wheels)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = _env(tmp)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                          "--disable-pip-version-check", "--index-url", (wheels / "simple").as_uri(),
                          *(wp.dist_name(v) for v in PACKAGES)], env=env, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    return {"tmp": tmp, "ck": ck, "wheels": wheels, "metas": metas, "timm_layout": timm_layout, "python": python,
            "env": env, "site": Path(site)}


def test_wheels_are_complete_and_describe_their_source(built):
    for variant, filename in PACKAGES.items():
        meta = built["metas"][variant]
        card, v = zoo.resolve(variant)
        whl = built["wheels"] / f"{wp.module_name(variant)}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(whl) as zf:
            names = zf.namelist()
            record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode().splitlines()
            for line in record:  # every file's RECORD digest and size are right, RECORD itself unhashed
                name, digest, size = line.rsplit(",", 2)
                if name.endswith("RECORD"):
                    assert (digest, size) == ("", "")
                    continue
                data = zf.read(name)
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={want}" and int(size) == len(data)
            assert len(record) == len(names)
            eps = zf.read(f"{wp.module_name(variant)}-1.0.0.dist-info/entry_points.txt").decode()
            assert eps == f"[glocal.weights]\n{variant} = {wp.module_name(variant)}:weights\n"
            assert f"Name: {wp.dist_name(variant)}\nVersion: 1.0.0\n" in zf.read(
                f"{wp.module_name(variant)}-1.0.0.dist-info/METADATA").decode()
            inner = zf.read(f"{wp.module_name(variant)}/{variant}.safetensors")
        assert hashlib.sha256(inner).hexdigest() == meta["sha256"]
        assert meta["source"]["sha256"] == sha256_file(built["ck"] / filename)
        assert (meta["variant"], meta["family"], meta["license"]) == (variant, card.family, card.license)
        assert meta["paper_metrics"] == [{"dataset": m.dataset, "metric": m.metric, "value": m.value, "note": m.note}
                                         for m in v.paper_metrics]
        assert meta["glocal_version"] == glocal.__version__ and meta["urls"] == []
    gc = built["metas"]["gcvit_xxtiny"]
    assert gc["converter"] == "glocal.zoo.models.gcvit.convert_official" and gc["source"]["layout"] == "official"
    assert gc["source"]["url"] == "https://huggingface.co/nvidia/GCViT/resolve/main/gcvit_1k_xxtiny.pth.tar"
    assert built["metas"]["rgt_s_x2"]["license_restricted"] is None  # Apache-2.0
    assert "NC" in gc["license_restricted"]
    # the timm-layout file of the same weights is re-saved to the very same bytes
    alt = built["timm_layout"].metadata
    assert alt["source"]["layout"] == "timm" and alt["converter"] is None and alt["sha256"] == gc["sha256"]


def test_index_is_pep503(built):
    simple = built["wheels"] / "simple"
    top = (simple / "index.html").read_text()
    for v in PACKAGES:
        assert f'<a href="{wp.dist_name(v)}/">' in top
        page = (simple / wp.dist_name(v) / "index.html").read_text()
        whl = built["wheels"] / f"{wp.module_name(v)}-1.0.0-py3-none-any.whl"
        assert f'href="../../{whl.name}#sha256={sha256_file(whl)}"' in page


def test_installed_packages_give_the_same_outputs_as_the_files(built, monkeypatch):
    """The pip-installed wheels, read through the venv's site-packages: same logits as --weights FILE."""
    for name in [m for m in sys.modules if m.startswith("glocal_weights_")]:  # another test's stand-in package
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(built["site"]))
    for variant, filename in PACKAGES.items():
        meta = built["metas"][variant]
        pkg = zoo.create_model(variant)
        info = pkg.glocal_weights
        assert info.to_dict() == {"source": "package", "id": f"{wp.dist_name(variant)}==1.0.0",
                                  "sha256": meta["sha256"], "layout": meta["layout"]}
        ref = zoo.create_model(variant, weights=built["ck"] / filename)
        ref_sd = ref.state_dict()
        assert list(pkg.state_dict()) == list(ref_sd)
        assert all(torch.equal(v, ref_sd[k]) for k, v in pkg.state_dict().items())
        if variant in INPUTS:  # GC ViT's logits at 224 cost ~10 s here; equal tensors above already fix them
            x = torch.rand(INPUTS[variant], generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                torch.testing.assert_close(pkg(x), ref(x), rtol=0, atol=0)


@pytest.mark.slow  # `bench run` in the venv: 30-90 s on the shared CPU (two interpreters, all measurement passes)
def test_bench_run_in_the_venv_records_the_package(built):
    res = subprocess.run([str(built["python"]), "-m", "glocal", "run", "--model", "deanet_cr_train", "--resolution",
                          "32", *FAST, "--json", "--no-store"], env=built["env"], capture_output=True, text=True,
                         cwd=built["tmp"])
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads(res.stdout[res.stdout.index("["):])[0]
    meta = built["metas"]["deanet_cr_train"]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["weights"] == {"source": "package", "id": "glocal-weights-deanet-cr-train==1.0.0",
                              "sha256": meta["sha256"], "layout": "native"}


def test_list_and_verify_name_a_corrupted_file(built, monkeypatch):
    monkeypatch.syspath_prepend(str(built["site"]))
    res = runner.invoke(app, ["weights", "list", "--json"])
    rows = {r["variant"]: r for r in json.loads(res.stdout)}
    assert set(rows) == set(PACKAGES)
    assert all(rows[v]["sha256"] == built["metas"][v]["sha256"] and rows[v]["present"] for v in PACKAGES)
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 0
    target = Path(rows["rgt_s_x2"]["file"])
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        res = runner.invoke(app, ["weights", "verify"])
        assert res.exit_code == 2 and str(target) in " ".join(res.output.split())
        assert res.output.count("error:") == 1
    finally:
        target.write_bytes(original)


# ----------------------------------------------------------------------------------------------------------
# Downloads against a local HTTP server


class _Server:
    """Serves ``files`` with Range support; ``drop_once`` cuts the first response after that many bytes; ``delay``
    slows each 256 KiB block. ``log`` keeps (path, Range header, bytes it sends) per request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, int] = {}
        self.delay = 0.0
        self.log: list[tuple[str, str | None, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                limit = outer.drop_once.pop(self.path, None)
                body = data[start:] if limit is None else data[start:start + limit]
                outer.log.append((self.path, rng, len(body)))  # before sending: the client may finish first
                for i in range(0, len(body), 1 << 18):
                    self.wfile.write(body[i:i + (1 << 18)])
                    time.sleep(outer.delay)
                if limit is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()


def _payload(n: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).numpy().tobytes()


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    data = _payload(3 << 20, 1)
    server.files["/big.bin"] = data
    server.drop_once["/big.bin"] = (1 << 20) + 1000
    dest = download(f"{server.url}/big.bin", tmp_path / "c" / "big.bin", hashlib.sha256(data).hexdigest(),
                    progress=False)
    assert dest.read_bytes() == data
    hits = [e for e in server.log if e[0] == "/big.bin"]
    assert hits[0] == ("/big.bin", None, (1 << 20) + 1000)
    assert hits[1] == ("/big.bin", f"bytes={(1 << 20) + 1000}-", len(data) - (1 << 20) - 1000)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.bin"]  # no .part, no .lock


def test_wrong_sha256_is_refused_and_nothing_is_kept(server, tmp_path):
    server.files["/wrong.bin"] = _payload(1 << 19, 2)
    with pytest.raises(DownloadError, match="sha256 mismatch .* the downloaded file was removed"):
        download(f"{server.url}/wrong.bin", tmp_path / "cache" / "x" / "wrong.bin", "0" * 64, progress=False)
    assert not (tmp_path / "cache").exists()


def test_two_processes_share_one_download(server, tmp_path):
    """Two processes ask for the same file at once: one downloads, the other waits on the lock, then uses it."""
    data = _payload(2 << 20, 3)
    server.files["/shared.bin"] = data
    server.delay = 0.15  # ~1.2 s transfer: the second process arrives while the first is downloading
    sha = hashlib.sha256(data).hexdigest()
    code = ("import sys, time, pathlib; from glocal.download import download; r = pathlib.Path(sys.argv[1]); "
            "(r / sys.argv[2]).touch(); [time.sleep(0.02) for _ in range(1000) if len(list(r.glob('ready*'))) < 2]; "
            f"print(download('{server.url}/shared.bin', r / 'cache' / 'shared.bin', '{sha}', progress=False))")
    env = {**_env(tmp_path), "GLOCAL_OFFLINE": "0", "HF_HUB_OFFLINE": "0"}
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"ready{i}"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        server.delay = 0.0
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert {o[0].strip() for o in outs} == {str(tmp_path / "cache" / "shared.bin")}
    assert [e for e in server.log if e[0] == "/shared.bin"] == [("/shared.bin", None, len(data))]  # fetched once
    assert (tmp_path / "cache" / "shared.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shared.bin"]


def test_metadata_only_wheel_downloads_on_first_use(built, server, tmp_path, monkeypatch):
    """A large-weights wheel carries no file: the zoo downloads it (verified) into the cache when first used."""
    url = f"{server.url}/rgt_s_x2.safetensors"
    src = built["ck"] / PACKAGES["rgt_s_x2"]
    res = runner.invoke(app, ["weights", "package", "--model", "rgt_s_x2", "--from", str(src), "--out",
                              str(tmp_path / "ext"), "--external-url", url])
    assert res.exit_code == 0 and "metadata only" in res.output, res.output
    sha = built["metas"]["rgt_s_x2"]["sha256"]
    wheel = tmp_path / "ext" / "glocal_weights_rgt_s_x2-1.0.0-py3-none-any.whl"
    hosted = tmp_path / "ext" / f"rgt_s_x2-{sha[:12]}.safetensors"  # the file to upload to the URL
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == sorted([wheel.name, hosted.name])
    assert sha256_file(hosted) == sha
    with zipfile.ZipFile(wheel) as zf:
        assert not any(n.endswith(".safetensors") for n in zf.namelist())
        zf.extractall(tmp_path / "site")
    meta = json.loads((tmp_path / "site" / wp.module_name("rgt_s_x2") / wp.METADATA_FILE).read_text())
    assert meta["urls"] == [url] and meta["sha256"] == sha
    server.files["/rgt_s_x2.safetensors"] = hosted.read_bytes()
    monkeypatch.setenv("GLOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GLOCAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, wp.module_name("rgt_s_x2"), raising=False)  # the venv's copy, imported above
    model = zoo.create_model("rgt_s_x2")
    assert model.glocal_weights.source == "package" and model.glocal_weights.sha256 == sha
    cached = tmp_path / "cache" / "sha256" / sha / "rgt_s_x2.safetensors"
    assert cached.is_file()
    n = len(server.log)
    again = wp.locate(tmp_path / "site" / wp.module_name("rgt_s_x2") / wp.METADATA_FILE)  # second use: the cache
    assert again["path"] == str(cached) and len(server.log) == n


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing left behind


def _one_line_error(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert res.output.count("error:") == 1 and message in text, text


def test_bad_checkpoints_are_one_line_and_leave_no_wheel(built, tmp_path):
    ck, out = built["ck"], tmp_path / "out"
    truncated = tmp_path / "RGT_S_x2.pth"
    truncated.write_bytes((ck / PACKAGES["rgt_s_x2"]).read_bytes()[:100_000])
    evil = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.ones(1)}, "x": Evil()}, evil, pickle_module=pickle)
    cases = [
        (["--model", "gcvit_tiny", "--from", str(ck / PACKAGES["gcvit_xxtiny"]), "--accept-license"],
         "does not match the model"),
        (["--model", "rgt_s_x2", "--from", str(truncated)], "cannot read checkpoint"),
        (["--model", "rgt_s_x2", "--from", str(evil)], "cannot read checkpoint"),
        (["--model", "rgt_s_x9", "--from", str(ck / PACKAGES["rgt_s_x2"])], "unknown model 'rgt_s_x9'"),
        (["--model", "gcvit_xxtiny", "--from", str(ck / PACKAGES["gcvit_xxtiny"])],
         "the licence is restricted ('NC'"),
        (["--model", "rgt_s_x2", "--from", str(tmp_path / "none.pth")], "checkpoint not found"),
        (["--model", "rgt_s_x2", "--from", str(ck / PACKAGES["rgt_s_x2"]), "--max-wheel-mb", "1"],
         "over --max-wheel-mb 1; host it and pass --external-url URL"),
    ]
    for args, message in cases:
        _one_line_error(["weights", "package", *args, "--out", str(out)], message)
    assert not out.exists() or not any(out.iterdir())


def test_unreachable_and_offline_fail_fast_and_leave_no_cache_file(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("GLOCAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=f"cannot reach 127.0.0.1 for http://127.0.0.1:{port}/w.bin"):
        download(f"http://127.0.0.1:{port}/w.bin", tmp_path / "cache" / "w.bin", progress=False)
    assert time.monotonic() - t0 < 10 and not (tmp_path / "cache").exists()
    monkeypatch.setenv("GLOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLOCAL_OFFLINE", "1")
    _one_line_error(["weights", "fetch", "--model", "gcvit_xxtiny"], "offline")
    assert not (tmp_path / "cache").exists()


def test_fetch_plans_separate_plain_urls_from_manual_sources():
    _, gc = wp.fetch_plans("gcvit_xxtiny")
    assert gc[0].url.startswith("https://github.com/") and "/releases/download/" in gc[0].url
    assert gc[1].url == "https://huggingface.co/nvidia/GCViT/resolve/main/gcvit_1k_xxtiny.pth.tar"
    _, rgt = wp.fetch_plans("rgt_s_x2")
    assert rgt[0].url is None and "Google Drive" in rgt[0].manual
    _one_line_error(["weights", "fetch", "--model", "rgt_s_x2"], "no source is a plain download")


def test_fetch_downloads_a_cards_plain_url_source(server, tmp_path, monkeypatch):
    """`bench weights fetch` takes the first plain-URL source (here pointed at the local server) into --out."""
    data = _payload(1 << 19, 4)
    server.files["/gcvit_xxtiny_224_nvidia.pth"] = data
    monkeypatch.setattr(wp, "source_url", lambda src: f"{server.url}/gcvit_xxtiny_224_nvidia.pth")
    monkeypatch.delenv("GLOCAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    res = runner.invoke(app, ["weights", "fetch", "--model", "gcvit_xxtiny", "--out", str(tmp_path / "official")])
    assert res.exit_code == 0, res.output
    got = tmp_path / "official" / "gcvit_xxtiny_224_nvidia.pth"
    assert got.read_bytes() == data and sorted(p.name for p in got.parent.iterdir()) == [got.name]
    assert "no published sha256" in res.output
