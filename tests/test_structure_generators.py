"""Triplet generators (disrt-style, dist-ps): outputs, manifests, resume, parallelism, and shortcut controls.

Shortcut criterion. A local-only observer (``pixel_histogram``, ``local_patches``) is "at chance" on a set when
(a) its 95% bootstrap interval includes 1/3 (the evaluator's own ``shortcut_flags`` rule) and (b) an exact
one-sided binomial test of its strict wins (ties count as losses, so the test is conservative) against
p = 1/3 gives p >= 0.05. It is "caught" when the interval lies above 1/3 and the binomial p < 0.01. The sets
are seeded, so each check is deterministic; the criterion's false-alarm rate on a truly local-blind set is at
most 5%, and with 24 trials an observer that wins 70% of trials is caught (p < 1e-4), so the check has power.
Every positive check is paired with a deliberately bad generator that the same rule must catch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from glocal.benchmarks.metrics.structure_sensitivity import CHANCE, bootstrap_ci, score_observer
from glocal.benchmarks.metrics.texture_observers import OBSERVERS
from glocal.datasets import get_generator
from glocal.datasets.registry import DatasetError
from glocal.datasets.triplets import load_triplets

skdata = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "coins")


def _photo(name: str) -> np.ndarray:
    a = getattr(skdata, name)()
    return np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]


def _sources(folder, size: int, crops: int = 3, names=PHOTOS) -> None:
    """Square crops (three per photo: two opposite corners and the centre) of scikit-image's bundled photos; the
    corner crops of a square photo take 7/8 of its side, so that they differ."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        a = _photo(name)
        h, w = a.shape[:2]
        s = min(h, w)
        c0 = s if h != w else s * 7 // 8
        boxes = [(0, 0, c0), (h - c0, w - c0, c0), ((h - s * 3 // 4) // 2, (w - s * 3 // 4) // 2, s * 3 // 4)][:crops]
        for k, (y, x, c) in enumerate(boxes):
            crop = Image.fromarray(a[y:y + c, x:x + c]).resize((size, size), Image.Resampling.BICUBIC)
            crop.save(folder / f"{name}_{k}.png")


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def observer_report(triplets, name: str) -> dict:
    credits = score_observer(triplets, OBSERVERS[name]).numpy()
    wins = int((credits == 1.0).sum())
    lo, hi = bootstrap_ci(credits)
    return {"accuracy": float(credits.mean()), "ci95": (lo, hi), "wins": wins, "n": len(credits),
            "p_value": binom_sf(wins, len(credits), CHANCE)}


def at_chance(r: dict) -> bool:
    return r["ci95"][0] - 1e-9 <= CHANCE <= r["ci95"][1] + 1e-9 and r["p_value"] >= 0.05


def caught(r: dict) -> bool:
    return r["ci95"][0] > CHANCE + 1e-9 and r["p_value"] < 0.01


def _files_sha(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    _sources(root / "src", 160)
    return root / "src"


# ---------------------------------------------------------------------------------------------------------
# disrt-style


def test_disrt_style_registered():
    g = get_generator("disrt-style")
    assert set(g.options) == {"size", "grid", "seams", "border", "overlap", "feather"}
    assert "rearranged" in g.description


def test_disrt_style_set_is_local_blind(photos, tmp_path):
    out = tmp_path / "disrt"
    summary = get_generator("disrt-style").fn(photos, out, seed=3, progress=False, size=96, grid=3)
    assert (summary["n_written"], summary["n_rejected"], summary["n_skipped"]) == (24, 0, 0)
    assert summary["cpu_seconds_per_image"] > 0
    s = load_triplets(out, expect="disrt")
    assert len(s) == 24 and s.name == "disrt-style"
    m = s.manifest
    assert (m["generator"], m["version"], m["seed"]) == ("disrt-style", "1", 3)
    assert (m["n_rejected"], m["status"]) == (0, "complete")
    assert m["params"] == {"size": 96, "grid": 3, "seams": "occlude", "border": 4, "overlap": 0.15, "feather": 1.0}
    for src in m["sources"]:
        assert src["sha256"] == hashlib.sha256((photos / src["file"]).read_bytes()).hexdigest()
    trip = [s[i] for i in range(len(s))]
    for o, a, b in trip[:3]:
        o, a, b = (np.asarray(x) for x in (o, a, b))
        assert o.shape == a.shape == (96, 96, 3) and not np.array_equal(o, a) and not np.array_equal(a, b)
        for x in (a, b):  # same pixels, rearranged: identical per-channel histograms
            for c in range(3):
                np.testing.assert_array_equal(np.bincount(o[..., c].ravel(), minlength=256),
                                              np.bincount(x[..., c].ravel(), minlength=256))
    for name in OBSERVERS:
        r = observer_report(trip, name)
        assert at_chance(r), (name, r)
        assert r["accuracy"] == pytest.approx(CHANCE)  # exact three-way ties by construction


def test_bad_generators_are_caught(photos, tmp_path):
    """The same criterion flags leaky sets: pristine originals with quilted seams, and a colour shift."""
    out = tmp_path / "quilt"
    get_generator("disrt-style").fn(photos, out, seed=3, progress=False, size=96, grid=3, seams="quilt")
    trip = [t for t in load_triplets(out)]
    r = observer_report(trip, "local_patches")
    assert caught(r), r
    # a generator that changes the colour histogram of its disrupted images
    occl = tmp_path / "occl"
    get_generator("disrt-style").fn(photos, occl, seed=3, progress=False, size=96, grid=3)
    shifted = []
    for o, a, b in load_triplets(occl):
        shift = [np.clip(np.asarray(x, np.int16) + (12, 0, -12), 0, 255).astype(np.uint8) for x in (a, b)]
        shifted.append((o, *(Image.fromarray(x) for x in shift)))
    assert caught(observer_report(shifted, "pixel_histogram"))
    # a lattice too narrow for the 7 px observer: windows straddle the lines
    narrow = tmp_path / "narrow"
    get_generator("disrt-style").fn(photos, narrow, seed=3, progress=False, size=96, grid=3, border=1)
    assert caught(observer_report([t for t in load_triplets(narrow)], "local_patches"))


def test_disrt_style_resume_and_atomicity(photos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(photos.iterdir())[:4]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "set"
    make = get_generator("disrt-style").fn
    make(src, out, progress=False, size=64, grid=2)
    first = _files_sha(out)
    victim = sorted((out / "items").iterdir())[0]
    shutil.rmtree(victim)
    (out / "items" / ".tmp-half-written-123").mkdir()  # an interrupted item
    (out / "items" / ".tmp-half-written-123" / "original.png").write_bytes(b"partial")
    summary = make(src, out, progress=False, size=64, grid=2)
    assert (summary["n_written"], summary["n_skipped"], summary["n_total"]) == (1, 3, 4)
    assert _files_sha(out) == first  # seeded per image: the redone item is byte-identical
    assert not any(p.name.startswith(".tmp-") for p in (out / "items").iterdir())
    with pytest.raises(DatasetError, match="other disrt-style options or seed"):
        make(src, out, progress=False, size=64, grid=2, seed=1)
    summary = make(src, out, progress=False, size=64, grid=2, seed=1, resume=False)
    assert (summary["n_written"], summary["n_skipped"]) == (4, 0) and _files_sha(out) != first
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs for a process pool")
def test_disrt_style_parallel_matches_serial(photos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(photos.iterdir())[:4]:
        shutil.copy(p, src / p.name)
    make = get_generator("disrt-style").fn
    make(src, tmp_path / "serial", progress=False, size=64, grid=2, seams="quilt")
    summary = make(src, tmp_path / "pool", progress=False, size=64, grid=2, seams="quilt", workers=2)
    assert summary["n_written"] == 4
    assert _files_sha(tmp_path / "serial") == _files_sha(tmp_path / "pool")


def test_disrt_style_bad_options(photos, tmp_path):
    make = get_generator("disrt-style").fn
    with pytest.raises(DatasetError, match="disrt-style has no option 'tiles'"):
        make(photos, tmp_path / "a", tiles=3)
    with pytest.raises(DatasetError, match="option grid='x' is not a valid int"):
        make(photos, tmp_path / "a", grid="x")
    with pytest.raises(DatasetError, match="size 100 is not a multiple of grid 3"):
        make(photos, tmp_path / "a", size=100, grid=3)
    with pytest.raises(DatasetError, match="seams must be one of occlude, quilt"):
        make(photos, tmp_path / "a", seams="blend")
    with pytest.raises(DatasetError, match="image folder not found"):
        make(tmp_path / "nothing", tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty and holds no manifest.json"):
        make(photos, tmp_path / "full")


# ---------------------------------------------------------------------------------------------------------
# dist-ps


def test_dist_ps_helpers():
    from glocal.datasets.dist_ps import ColourBasis, auto_scales, match_histograms

    assert (auto_scales(64, 7), auto_scales(128, 7), auto_scales(256, 7), auto_scales(32, 7)) == (3, 4, 4, 2)
    with pytest.raises(DatasetError, match="size 12 cannot hold any PS scales"):
        auto_scales(12, 7)
    with pytest.raises(DatasetError, match="size 64 cannot hold 4 PS scales"):
        auto_scales(64, 7, 4)
    img = np.asarray(Image.fromarray(_photo("coffee")).resize((32, 32)))
    basis = ColourBasis(img)
    z = basis.forward(img)
    assert z.shape == (3, 32, 32) and z.min() == pytest.approx(0) and z.max() == pytest.approx(1)
    np.testing.assert_allclose(basis.inverse(z) * 255, img, atol=1e-9)
    cov = np.cov(z.reshape(3, -1))
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-10  # decorrelated axes
    grey = np.repeat(img[..., :1], 3, axis=2)
    assert ColourBasis(grey).active.tolist() == [True, False, False]
    rng = np.random.default_rng(0)
    noisy = rng.random((32, 32, 3))
    m = match_histograms(noisy, img)
    for c in range(3):
        np.testing.assert_array_equal(np.sort(m[..., c].ravel()), np.sort(img[..., c].ravel()))
        # rank order of the input is kept
        assert np.all(np.diff(m[..., c].ravel()[np.argsort(noisy[..., c].ravel())].astype(int)) >= 0)


def test_dist_ps_colour_transfer():
    """Sliced colour transfer restores the original's colour combinations that per-channel matching loses."""
    from glocal.datasets.dist_ps import match_histograms, transfer_colours

    img = np.asarray(Image.fromarray(_photo("coffee")).resize((48, 48)))
    rng = np.random.default_rng(1)
    # same per-channel values, combinations scrambled: what independent channel syntheses look like
    scrambled = np.stack([rng.permutation(img[..., c].ravel()).reshape(48, 48) for c in range(3)], -1) / 255.0
    ref_cov = np.cov(img.reshape(-1, 3).T / 255.0)
    per_channel = match_histograms(scrambled, img)
    joint = match_histograms(transfer_colours(scrambled, img, 30), img)
    off = ~np.eye(3, dtype=bool)
    err_per_channel = np.abs(np.cov(per_channel.reshape(-1, 3).T / 255.0) - ref_cov)[off].max()
    err_joint = np.abs(np.cov(joint.reshape(-1, 3).T / 255.0) - ref_cov)[off].max()
    assert err_per_channel > 0.5 * np.abs(ref_cov[off]).max()  # correlations lost
    assert err_joint < 0.05 * err_per_channel  # and restored
    for c in range(3):  # the per-channel histograms stay exact
        np.testing.assert_array_equal(np.sort(joint[..., c].ravel()), np.sort(img[..., c].ravel()))
    np.testing.assert_array_equal(transfer_colours(scrambled, img, 5), transfer_colours(scrambled, img, 5))
    np.testing.assert_array_equal(transfer_colours(scrambled, img, 0), scrambled)
    with pytest.raises(ValueError, match="shapes differ"):
        transfer_colours(scrambled[:8], img)


def test_dist_ps_small_set(tmp_path):
    """Two 64 px images with a few L-BFGS steps, and a flat image that must be rejected."""
    pytest.importorskip("plenoptic")
    src = tmp_path / "src"
    _sources(src, 64, crops=1, names=("coffee", "chelsea"))
    Image.new("RGB", (64, 64), (90, 120, 30)).save(src / "flat.png")
    out = tmp_path / "ps"
    make = get_generator("dist-ps").fn
    summary = make(src, out, progress=False, size=64, steps=5, polish=1, polish_steps=3, threshold=10, original="photo")
    assert (summary["n_written"], summary["n_rejected"]) == (2, 1)
    assert summary["cpu_seconds_per_image"] > 0 and summary["cpu_seconds_per_synthesis"] > 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["generator"], m["n_items"], m["n_rejected"]) == ("dist-ps", 2, 1)
    flat = next(i for i in m["items"] if i["source"] == "flat.png")
    assert flat["status"] == "rejected" and flat["reason"].startswith("flat image")
    ok = [i for i in m["items"] if i["status"] == "ok"]
    for item in ok:
        assert item["n_scales"] == 3 and item["steps"] == [8, 8] and len(item["final_loss"]) == 2
        assert all(0 < r <= 10 for r in item["relative_synthesis_loss"])
        for k in range(2):
            assert item["relative_final_loss"][k] == pytest.approx(item["final_loss"][k] / item["noise_loss"][k])
    s = load_triplets(out, expect="dist")
    assert len(s) == 2
    for o, a, b in s:
        o, a, b = (np.asarray(x) for x in (o, a, b))
        for x in (a, b):
            for c in range(3):  # exact histogram matching: identical 8-bit values per channel
                np.testing.assert_array_equal(np.sort(o[..., c].ravel()), np.sort(x[..., c].ravel()))
            assert abs(np.corrcoef(o.ravel(), x.ravel())[0, 1]) < 0.9  # a new image, not a copy
        assert not np.array_equal(a, b)
    r = observer_report([t for t in s], "pixel_histogram")
    assert r["accuracy"] == pytest.approx(CHANCE) and at_chance(r)
    # a threshold no synthesis can meet rejects everything, counted and reported
    summary = make(src, tmp_path / "strict", progress=False, size=64, steps=2, polish=0, threshold=1e-6,
                   original="photo")
    assert (summary["n_written"], summary["n_rejected"]) == (0, 3)
    reasons = [json.loads(p.read_text())["reason"] for p in sorted((tmp_path / "strict" / "rejected").iterdir())]
    assert sum(r.startswith("not converged: synthesis loss") for r in reasons) == 2
    with pytest.raises(DatasetError, match="has no accepted triplets \\(3 rejected\\)"):
        load_triplets(tmp_path / "strict")


def test_dist_ps_rendered_small_set(tmp_path):
    """``original=rendered``: three renderings per photo, all histogram-matched to it; only the original's keeps
    the photo's blurred layout."""
    pytest.importorskip("plenoptic")
    import torch

    from glocal.datasets.dist_ps import ColourBasis, blur
    from glocal.datasets.engine import load_rgb
    from glocal.datasets.triplets import SOURCE_REDUCING_GAP

    src = tmp_path / "src"
    _sources(src, 48, crops=1, names=("coffee", "astronaut"))
    out = tmp_path / "ps"
    # original=rendered is the default
    summary = get_generator("dist-ps").fn(src, out, progress=False, size=32, steps=5, threshold=10)
    assert (summary["n_written"], summary["n_rejected"]) == (2, 0)
    assert len(load_triplets(out, expect="dist")) == 2
    sigmas = (0.125 * 32,)  # an analysis blur, finer than the default layout (0.1875 of the side)

    def layout(x: np.ndarray, basis: ColourBasis) -> np.ndarray:
        return blur(torch.from_numpy(basis.forward(x)).float()[None], sigmas)[0, 0].flatten().numpy()

    for item in json.loads((out / "manifest.json").read_text())["items"]:
        assert item["original"] == "rendered" and item["n_scales"] == 2 and item["steps"] == [5, 5]
        assert item["render_steps"] == [5, 5, 5] and len(item["final_loss"]) == 3
        reference = np.mean(item["noise_loss"])
        assert item["relative_render_loss"] == pytest.approx([v / reference for v in item["render_loss"]])
        photo = load_rgb(src / item["source"], 32, reducing_gap=SOURCE_REDUCING_GAP)
        basis = ColourBasis(photo)
        o, a, b = (np.asarray(Image.open(out / item["files"][k]).convert("RGB"))
                   for k in ("original", "disrupted_a", "disrupted_b"))
        corr = [float(np.corrcoef(layout(x, basis), layout(photo, basis))[0, 1]) for x in (o, a, b)]
        assert corr[0] > 0.8 and corr[0] > max(corr[1:]) + 0.3, corr  # only the original keeps the layout
        for x in (o, a, b):
            assert not np.array_equal(x, photo)
            for c in range(3):  # every image, the rendered original too, holds the photo's 8-bit values
                np.testing.assert_array_equal(np.sort(x[..., c].ravel()), np.sort(photo[..., c].ravel()))


def test_dist_ps_blur():
    import torch

    from glocal.datasets.dist_ps import blur

    z = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    out = blur(z, (1.0, 3.0))
    assert out.shape == z.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), z.mean(dim=(2, 3)), atol=0.02, rtol=0)  # mass kept
    assert out[0, 1].std() < out[0, 0].std() < z[0, 0].std()  # the second channel blurred more
    torch.testing.assert_close(blur(torch.full((1, 1, 8, 8), 0.3), (50.0,)), torch.full((1, 1, 8, 8), 0.3))


def test_dist_ps_bad_options(tmp_path):
    make = get_generator("dist-ps").fn
    with pytest.raises(DatasetError, match="size 12 cannot hold"):
        make(tmp_path, tmp_path / "o", size=12)
    with pytest.raises(DatasetError, match="spatial_corr_width must be odd"):
        make(tmp_path, tmp_path / "o", spatial_corr_width=6)
    with pytest.raises(DatasetError, match="colour_iters must be 0 or more"):
        make(tmp_path, tmp_path / "o", colour_iters=-1)
    with pytest.raises(DatasetError, match="original must be one of photo, rendered, got 'texform'"):
        make(tmp_path, tmp_path / "o", original="texform")
    with pytest.raises(DatasetError, match="layout_sigma must be positive, got 0.0"):
        make(tmp_path, tmp_path / "o", original="rendered", layout_sigma=0)
    with pytest.raises(DatasetError, match="dist-ps has no option 'iterations'"):
        make(tmp_path, tmp_path / "o", iterations=3)


@pytest.mark.slow
@pytest.mark.parametrize("sources, original, local_blind",
                         [(PHOTOS[:4], "photo", False), (PHOTOS[:4], "rendered", True),
                          (("brick", "grass", "gravel"), "rendered", True)],
                         ids=["photos-photo", "photos-rendered", "textures-rendered"])
def test_dist_ps_local_controls_measured(tmp_path, sources, original, local_blind):
    """Three 64 px crops per source at the default synthesis settings. Pixel histograms tie exactly. With the
    photo as the original, the 7 px local observer is blind to PS syntheses of stationary textures but catches
    those of photos (a mixture of regions, unlike one stationary PS texture; the evaluator reports it in
    ``shortcut_flags``). With the default ``original=rendered`` (the photo's layout rendered in PS texture, like
    the syntheses) it is blind on photos too. Figures in the ``dist_ps`` docstring."""
    pytest.importorskip("plenoptic")
    src = tmp_path / "src"
    _sources(src, 96, crops=3, names=sources)
    out = tmp_path / "ps"
    summary = get_generator("dist-ps").fn(src, out, progress=False, size=64, original=original,
                                          workers=min(4, os.cpu_count() or 1))
    assert summary["n_total"] == 3 * len(sources) and summary["n_rejected_total"] == 0
    trip = [t for t in load_triplets(out)]
    hist = observer_report(trip, "pixel_histogram")
    assert at_chance(hist) and hist["accuracy"] == pytest.approx(CHANCE)
    local = observer_report(trip, "local_patches")
    print(original, sources, local, summary["cpu_seconds_per_image"])
    assert at_chance(local) if local_blind else caught(local), local
