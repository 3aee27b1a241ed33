"""MATLAB bicubic resize, SR/dehazing folders, the 8KDehaze loader, the haze generator, the built-in sets."""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glocal.datasets import get_generator
from glocal.datasets.eightk_dehaze import EightKDehaze, split_names
from glocal.datasets.haze_synthesis import (
    BETA_RANGES,
    D_MIN,
    add_haze,
    density_field,
    image_params,
    synthesize,
)
from glocal.datasets.matlab_resize import imresize, quantize_uint8
from glocal.datasets.registry import DatasetError
from glocal.datasets.restoration import PairedDehazeFolder, SRFolder, bicubic_lr, read_image

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ reference MATLAB imresize
def _cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_resize_1d(v: list[float], scale: float) -> list[float]:
    """One output pixel at a time, straight from MATLAB's imresize/contributions description."""
    n = len(v)
    out_n = math.ceil(n * scale - 1e-9)
    width = 4.0 / scale if scale < 1 else 4.0
    res = []
    for i in range(1, out_n + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        acc = tot = 0.0
        for k in range(left, left + math.ceil(width) + 2):
            w = scale * _cubic(scale * (u - k)) if scale < 1 else _cubic(u - k)
            j = k
            while j < 1 or j > n:  # symmetric mirroring, 1-based
                j = 1 - j if j < 1 else 2 * n + 1 - j
            acc += w * v[j - 1]
            tot += w
        res.append(acc / tot)
    return res


def _ref_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    rows = np.array([_ref_resize_1d(list(img[:, c]), scale) for c in range(img.shape[1])]).T
    return np.array([_ref_resize_1d(list(r), scale) for r in rows])


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.6, 2, 3, 4])
def test_imresize_matches_loop_reference(scale):
    g = np.random.default_rng(0)
    img = g.random((9, 7))
    ours = imresize(torch.from_numpy(img), scale).numpy()
    ref = _ref_imresize(img, scale)
    assert ours.shape == ref.shape == (math.ceil(9 * scale - 1e-9), math.ceil(7 * scale - 1e-9))
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_imresize_properties():
    c = torch.full((2, 3, 13, 17), 0.3, dtype=torch.float64)
    for s in (1 / 4, 1 / 3, 2, 3):
        torch.testing.assert_close(imresize(c, s), torch.full_like(imresize(c, s), 0.3), atol=1e-14, rtol=0)
    x = torch.rand(3, 10, 11, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 1.0), x, atol=1e-15, rtol=0)  # cubic(0)=1, cubic(+-1)=cubic(+-2)=0
    assert imresize(x.float(), 0.5).dtype == torch.float32
    assert imresize(x, size=(5, 22)).shape == (3, 5, 22)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(TypeError, match="floating"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)


def test_quantize_rounds_half_away_from_zero():
    v = torch.tensor([0.5, 1.5, 2.5, 254.5, 300.0, -3.0]) / 255
    assert (quantize_uint8(v) * 255).round().tolist() == [1, 2, 3, 255, 255, 0]


def test_bicubic_sr_pipeline_matches_basicsr_reference():
    # skimage astronaut, MATLAB bicubic x4 down, torch bicubic x4 up, uint8, Y, crop 4: BasicSR's
    # calculate_psnr/calculate_ssim (basicsr/metrics/psnr_ssim.py, https://github.com/XPixelGroup/BasicSR; BGR
    # input, test_y_channel=True) gave 27.0396 / 0.8463
    from skimage import data

    from glocal.benchmarks.metrics import psnr, ssim

    hr = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    lr = bicubic_lr(hr, 4)
    up = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    up = torch.round(up.clamp(0, 1) * 255) / 255
    assert psnr(up, hr, y_channel=True, crop_border=4) == pytest.approx(27.0396, abs=6e-5)
    assert ssim(up, hr, y_channel=True, crop_border=4) == pytest.approx(0.8463, abs=6e-5)


# ------------------------------------------------------------------------------ folders
def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rand_img(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_sr_folder_packaged_lr(tmp_path):
    for i, name in enumerate(["baby", "bird"]):
        _png(tmp_path / "HR" / f"{name}.png", _rand_img(i, 26, 30))  # not a multiple of 4: cropped to LR*4
        _png(tmp_path / "LR_bicubic" / "X4" / f"{name}x4.png", _rand_img(10 + i, 6, 7))
    ds = SRFolder(tmp_path, 4)
    assert len(ds) == 2 and ds.layout == "HR/ + LR_bicubic/X4/"
    s = ds[1]
    assert s["name"] == "bird" and s["lr"].shape == (3, 6, 7) and s["hr"].shape == (3, 24, 28)
    torch.testing.assert_close(s["hr"], read_image(tmp_path / "HR" / "bird.png")[:, :24, :28])
    torch.testing.assert_close(s["lr"] * 255, torch.from_numpy(_rand_img(11, 6, 7)).permute(2, 0, 1).float())


def test_sr_folder_manga_names_and_missing(tmp_path):
    _png(tmp_path / "HR" / "AisazuNihaIrarenai.png", _rand_img(0, 8, 8))
    _png(tmp_path / "LR_bicubic" / "X2" / "AisazuNihaIrarenai_LRBI_x2.png", _rand_img(1, 4, 4))
    assert SRFolder(tmp_path, 2)[0]["lr"].shape == (3, 4, 4)
    _png(tmp_path / "HR" / "Other.png", _rand_img(0, 8, 8))
    with pytest.raises(DatasetError, match=r"1 HR images have no LR image .*Other\.png"):
        SRFolder(tmp_path, 2)


def test_sr_folder_generates_matlab_lr(tmp_path):
    _png(tmp_path / "butterfly.png", _rand_img(3, 27, 25))
    ds = SRFolder(tmp_path, 3)
    s = ds[0]
    assert "flat folder" in ds.layout and s["hr"].shape == (3, 27, 24) and s["lr"].shape == (3, 9, 8)
    hr = torch.from_numpy(_rand_img(3, 27, 25)[:27, :24]).double()
    ref = np.stack([_ref_imresize(hr[..., c].numpy(), 1 / 3) for c in range(3)])
    ref = np.clip(np.floor(ref + 0.5), 0, 255)
    np.testing.assert_array_equal((s["lr"] * 255).round().numpy(), ref)
    # HR/ without LR_bicubic/X3 also generates
    _png(tmp_path / "set" / "HR" / "a.png", _rand_img(4, 12, 12))
    assert "MATLAB bicubic" in SRFolder(tmp_path / "set", 3).layout
    with pytest.raises(DatasetError, match="not found"):
        SRFolder(tmp_path / "nope", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no HR/ folder and no images"):
        SRFolder(tmp_path / "empty", 2)


def test_paired_dehaze_sots_layout(tmp_path):
    for k in (1, 2):
        _png(tmp_path / "hazy" / f"1400_{k}.png", _rand_img(k, 20, 24))
    big = _rand_img(7, 40, 44)  # original SOTS-indoor GT: 10-px border around the 20x24 scene
    _png(tmp_path / "GT" / "1400.png", big)
    ds = PairedDehazeFolder(tmp_path)
    assert [it.name for it in ds.items] == ["1400_1", "1400_2"] and ds.clear_dir.name == "GT"
    s = ds[0]
    assert s["hazy"].shape == s["clear"].shape == (3, 20, 24)
    inner = torch.from_numpy(big[10:-10, 10:-10]).permute(2, 0, 1).float()
    torch.testing.assert_close(s["clear"] * 255, inner)
    _png(tmp_path / "hazy" / "1401_1.png", _rand_img(3, 20, 24))
    with pytest.raises(DatasetError, match=r"1 hazy images .* no clear image .*1401_1\.png"):
        PairedDehazeFolder(tmp_path)


def test_paired_dehaze_haze4k_layout_and_errors(tmp_path):
    _png(tmp_path / "test" / "haze" / "1_0.89_1.56.png", _rand_img(0, 16, 16))
    _png(tmp_path / "test" / "gt" / "1.png", _rand_img(1, 16, 16))
    _png(tmp_path / "test" / "haze" / "2_0.93_1.66.png", _rand_img(2, 16, 16))
    _png(tmp_path / "test" / "gt" / "2.png", _rand_img(3, 16, 18))
    ds = PairedDehazeFolder(tmp_path)
    assert len(ds) == 2 and ds.hazy_dir == tmp_path / "test" / "haze"
    with pytest.raises(DatasetError, match="mismatch: hazy 2_0.93_1.66.png is 16x16, clear 2.png is 16x18"):
        ds[1]
    (tmp_path / "only").mkdir()
    _png(tmp_path / "only" / "hazy" / "a.png", _rand_img(0, 8, 8))
    with pytest.raises(DatasetError, match=r"no hazy/clear folder pair .*found only hazy/"):
        PairedDehazeFolder(tmp_path / "only")


# ------------------------------------------------------------------------------ haze model and generator
def test_haze_model_follows_scattering_equation():
    clear = _rand_img(0, 33, 40)
    d = density_field(33, 40, np.random.default_rng(1))
    assert d.shape == (33, 40) and d.min() == pytest.approx(D_MIN) and d.max() == pytest.approx(1.0)
    a = np.array([0.9, 0.92, 0.95])
    hazy = add_haze(clear, d, 1.1, a).astype(np.float64) / 255
    t = np.exp(-1.1 * d.astype(np.float64))[..., None]
    np.testing.assert_allclose(hazy, clear / 255 * t + a * (1 - t), atol=0.5 / 255 + 1e-6)
    res = synthesize(clear, 3, "x.png")
    betas = [res["beta"][k] for k in (1, 2, 3, 4)]
    assert all(BETA_RANGES[k][0] <= res["beta"][k] < BETA_RANGES[k][1] for k in (1, 2, 3, 4))
    assert betas == sorted(betas)
    black = np.zeros_like(clear)  # a black scene shows A(1 - t): brighter at every denser level
    means = [synthesize(black, 3, "x.png")["hazy"][k].mean() for k in (1, 2, 3, 4)]
    assert means == sorted(means) and means[0] > 10
    a = res["airlight"]
    assert np.all(np.abs(a - a.mean()) <= 0.03 + 1e-9) and a.min() >= 0.82


def test_density_field_is_resolution_independent():
    a = density_field(64, 64, np.random.default_rng(5))
    b = density_field(128, 128, np.random.default_rng(5))
    # the same grids laid over the image: the 2x field, box-downsampled, follows the 1x field closely
    b_small = b.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.corrcoef(a.ravel(), b_small.ravel())[0, 1] > 0.95


def _sources(folder: Path, n: int = 3) -> None:
    for i in range(n):
        _png(folder / f"tile{i}.png", _rand_img(20 + i, 24, 30))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_reproducible_resumable_and_parallel(tmp_path):
    gen = get_generator("8kdehaze-synth")
    _sources(tmp_path / "src")
    r1 = gen.fn(tmp_path / "src", tmp_path / "a", seed=7, progress=False)
    r2 = gen.fn(tmp_path / "src", tmp_path / "b", seed=7, progress=False, workers=2)
    assert r1["written"] == r2["written"] == 3 and r1["rejected"] == []
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert ta == tb and len(ta) == 16  # 3 x (clear + 4 levels) + manifest, identical for 1 and 2 workers
    r3 = gen.fn(tmp_path / "src", tmp_path / "c", seed=8, progress=False)
    assert r3["written"] == 3 and _tree(tmp_path / "c")["cloud_L2/tile0.png"] != ta["cloud_L2/tile0.png"]
    # resume: nothing to do, nothing changed; a damaged output is rewritten
    mtime = (tmp_path / "a" / "cloud_L1" / "tile1.png").stat().st_mtime_ns
    r4 = gen.fn(tmp_path / "src", tmp_path / "a", seed=7, progress=False)
    assert (r4["written"], r4["skipped"]) == (0, 3)
    assert (tmp_path / "a" / "cloud_L1" / "tile1.png").stat().st_mtime_ns == mtime
    (tmp_path / "a" / "cloud_L3" / "tile2.png").write_bytes(ta["cloud_L3/tile2.png"][:100])
    r5 = gen.fn(tmp_path / "src", tmp_path / "a", seed=7, progress=False)
    assert (r5["written"], r5["skipped"]) == (1, 2) and _tree(tmp_path / "a") == ta
    with pytest.raises(DatasetError, match="other settings"):
        gen.fn(tmp_path / "src", tmp_path / "a", seed=9, progress=False)


def test_unguarded_script_with_workers_fails_in_one_line(tmp_path):
    """A script that calls a generator with workers > 1 at module level (no ``__main__`` guard): its spawned
    workers re-import it; they end quietly and the caller gets one DatasetError line naming the guard."""
    import subprocess
    import sys

    from glocal.datasets.engine import GUARD_HINT

    _sources(tmp_path / "src", 2)
    script = tmp_path / "make.py"
    script.write_text("from glocal.datasets.haze_synthesis import make_8kdehaze_synth\n"
                      "make_8kdehaze_synth('src', 'out', workers=2, progress=False, size=8)\n")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and lines[-1] == f"glocal.datasets.registry.DatasetError: {GUARD_HINT}"
    assert "RuntimeError" not in run.stderr and "BrokenProcessPool" not in run.stderr  # workers left quietly
    assert 'if __name__ == "__main__":' in GUARD_HINT


def test_generator_manifest_size_and_rejects(tmp_path):
    gen = get_generator("8kdehaze-synth")
    _sources(tmp_path / "src", 2)
    (tmp_path / "src" / "broken.png").write_bytes(b"not a png")
    r = gen.fn(tmp_path / "src", tmp_path / "out", seed=1, progress=False, size=16)
    assert r["count"] == 2 and [x["source"] for x in r["rejected"]] == ["broken.png"]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["generator"] == "8kdehaze-synth" and m["seed"] == 1 and m["size"] == 16 and m["version"] == 1
    e = m["images"][0]
    assert e["name"] == "tile0.png" and e["size"] == [16, 16]
    assert e["source_sha256"] == hashlib.sha256((tmp_path / "src" / "tile0.png").read_bytes()).hexdigest()
    airlight, betas, _ = image_params(1, "tile0.png")
    assert e["airlight"] == pytest.approx(list(airlight), abs=1e-6)
    assert e["beta"] == pytest.approx({f"L{k}": v for k, v in betas.items()}, abs=1e-6)
    assert Image.open(tmp_path / "out" / "cloud_L4" / "tile1.png").size == (16, 16)
    clear = np.asarray(Image.open(tmp_path / "out" / "clear" / "tile0.png"))
    ref = synthesize(clear, 1, "tile0.png")["hazy"][3]  # the generator writes what synthesize() makes
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "cloud_L3" / "tile0.png")), ref)
    with pytest.raises(DatasetError, match=r"unknown 8kdehaze-synth options: levels \(known: size, compression\)"):
        gen.fn(tmp_path / "src", tmp_path / "x", progress=False, levels=3)
    with pytest.raises(DatasetError, match=r"compression must be in \[0, 9\], got 12"):
        gen.fn(tmp_path / "src", tmp_path / "x", progress=False, compression="12")
    # the zlib level changes the files, not the pixels
    gen.fn(tmp_path / "src", tmp_path / "z9", seed=1, progress=False, size=16, compression=9)
    for sub in ("clear", "cloud_L2"):
        a, b = (np.asarray(Image.open(tmp_path / d / sub / "tile1.png")) for d in ("out", "z9"))
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ 8KDehaze loader
def _eightk(root: Path, n: int = 20, side: int = 12) -> list[str]:
    names = [f"k{i:02d}_0.png" for i in range(n)]
    for i, nm in enumerate(names):
        _png(root / "clear" / nm, _rand_img(i, side, side))
        for lv in (1, 2, 3, 4):
            _png(root / f"cloud_L{lv}" / nm, _rand_img(100 * lv + i, side, side))
    return names


def test_8kdehaze_split_matches_official_random_split(tmp_path):
    names = _eightk(tmp_path)
    g = torch.Generator().manual_seed(22)
    train, test = torch.utils.data.random_split(sorted(names), [17, 3], generator=g)
    assert split_names(names, "test") == list(test) and split_names(names, "train") == list(train)
    ds = EightKDehaze(tmp_path)
    assert len(ds) == 3 * 4 and ds.dataset_name == "8kdehaze" and ds.names == list(test)
    s = ds[3]  # level 2, first test name
    assert s["level"] == 2 and s["name"] == f"L2/{test[0]}"
    torch.testing.assert_close(s["clear"], read_image(tmp_path / "clear" / test[0]))
    torch.testing.assert_close(s["hazy"], read_image(tmp_path / "cloud_L2" / test[0]))
    assert len(EightKDehaze(tmp_path, levels=(3,), split="all")) == 20


def test_8kdehaze_is_lazy_and_crops(tmp_path, monkeypatch):
    _eightk(tmp_path, n=4, side=16)
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    ds = EightKDehaze(tmp_path, split="all", size=8, crop=6, crop_mode="random", seed=3)
    assert opened == []
    s = ds[0]
    assert len(opened) == 2 and s["hazy"].shape == s["clear"].shape == (3, 6, 6)
    torch.testing.assert_close(ds[0]["hazy"], s["hazy"])  # the random crop is seeded per sample
    c = EightKDehaze(tmp_path, split="all", crop=4)[0]["clear"]
    torch.testing.assert_close(c, read_image(tmp_path / "clear" / "k00_0.png")[:, 6:10, 6:10])


def test_8kdehaze_errors(tmp_path):
    with pytest.raises(DatasetError, match="no clear/ subfolder"):
        (tmp_path / "x").mkdir() or EightKDehaze(tmp_path / "x")
    names = _eightk(tmp_path / "d", n=3)
    (tmp_path / "d" / "cloud_L3" / names[1]).unlink()
    _png(tmp_path / "d" / "cloud_L3" / "stray.png", _rand_img(0, 12, 12))
    msg = r"cloud_L3/ does not match clear/ \(1 missing, 1 without .*missing k01_0.png; unmatched stray.png"
    with pytest.raises(DatasetError, match=msg):
        EightKDehaze(tmp_path / "d")
    assert len(EightKDehaze(tmp_path / "d", levels=(1,), split="all")) == 3
    import shutil

    shutil.rmtree(tmp_path / "d" / "cloud_L4")
    with pytest.raises(DatasetError, match="lacks haze-level folders: cloud_L4"):
        EightKDehaze(tmp_path / "d")
    with pytest.raises(DatasetError, match="no level 4 folder"):
        EightKDehaze(tmp_path / "d", levels=(4,))


def test_generated_set_loads_as_synthetic(tmp_path):
    _sources(tmp_path / "src", 2)
    get_generator("8kdehaze-synth").fn(tmp_path / "src", tmp_path / "out", progress=False)
    ds = EightKDehaze(tmp_path / "out", split="all")
    assert ds.dataset_name == "8kdehaze-synth" and len(ds) == 8
    s = ds[0]
    assert s["hazy"].shape == (3, 24, 30) and s["hazy"].mean() > s["clear"].mean() - 0.05


# ------------------------------------------------------------------------------ built-in sets
def test_builtin_sets():
    from glocal.datasets.builtin import builtin_haze, builtin_sr

    sr = builtin_sr(3)
    assert len(sr) == 5 and sr[0]["hr"].shape == (3, 240, 240) and sr[0]["lr"].shape == (3, 80, 80)
    torch.testing.assert_close(sr[2]["lr"], bicubic_lr(sr[2]["hr"], 3))
    hz = builtin_haze()
    assert [p["name"] for p in hz] == [p["name"] for p in sr]
    torch.testing.assert_close(hz[1]["clear"], sr[1]["hr"])
    a = (hz[1]["clear"] * 255).round().byte().permute(1, 2, 0).numpy()
    ref = synthesize(a, 0, f"{hz[1]['name']}.png", levels=(2,))["hazy"][2]
    np.testing.assert_array_equal((hz[1]["hazy"] * 255).round().byte().permute(1, 2, 0).numpy(), ref)
    with pytest.raises(ValueError, match="scales 2, 3 and 4"):
        builtin_sr(8)
