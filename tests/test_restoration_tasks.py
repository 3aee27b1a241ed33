"""Dehazing / super-resolution tasks, their evaluators end to end on tiny sets, and tiled inference."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from glocal.benchmarks.cell import CellSpec
from glocal.benchmarks.tasks import DatasetSpec, EvalContext, TaskError, evaluators, get_evaluator, get_task
from glocal.datasets import get_generator
from glocal.datasets.matlab_resize import imresize
from glocal.zoo.layers.tiling import tile_starts, tiled_forward
from glocal.zoo.registry import Variant

pytestmark = pytest.mark.usefixtures("one_thread")


CTX = EvalContext(device=torch.device("cpu"), progress=False)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Bicubic(nn.Module):
    """A stand-in SR model: MATLAB bicubic upscaling."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return imresize(x, float(self.scale))


class Brighten(nn.Module):
    def forward(self, x):
        return (x + 0.05).clamp(0, 1)


def _variant(scale=None, multiple=1, resolutions=()):
    return Variant(name=f"toy_x{scale}" if scale else "toy", builder=nn.Identity, scale=scale,
                   resolution_multiple=multiple, resolutions=resolutions)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _img(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(seed: int, h: int, w: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = [np.sin(6 * x * g.random() + 5 * y * g.random() + c) for c in range(3)]
    return np.clip(127 + 100 * np.stack(base, -1) + g.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _evaluate(name, model, variant, path=None, **options):
    spec = DatasetSpec(name, path, {k: str(v) for k, v in options.items()})
    entry = get_evaluator(spec, "super_resolution" if variant.scale else "dehazing")
    return entry.fn(model, None, variant, spec, CTX)


# ------------------------------------------------------------------------------------------------ tasks
def test_task_shapes_and_defaults():
    dh, sr = get_task("dehazing"), get_task("super_resolution")
    v4 = _variant(4)
    assert dh.input_shape(None, _variant(), 256) == (3, 256, 256)
    assert sr.input_shape(None, v4, 256) == (3, 64, 64)
    assert dh.output_pixels(None, _variant(), 300) == sr.output_pixels(None, v4, 300) == 90000
    assert dh.default_resolution(None, _variant()) == 256 == sr.default_resolution(None, v4)
    assert sr.default_resolution(None, _variant(3)) == 255  # nearest output side the x3 model can make
    assert dh.default_resolution(None, _variant(multiple=256, resolutions=(512,))) == 512
    assert dh.default_dataset(None, _variant()).name == "builtin-haze"
    assert sr.default_dataset(None, v4).name == "builtin-sr"
    cell = CellSpec(model="toy_x2", resolution=128)
    (x,) = sr.make_inputs(None, None, _variant(2), cell, 2, torch.device("cpu"), torch.float32).values()
    assert x.shape == (2, 3, 64, 64) and 0 <= x.min() and x.max() <= 1


def test_resolution_errors():
    sr, dh = get_task("super_resolution"), get_task("dehazing")
    sr.check_resolution(None, _variant(3), 255)
    with pytest.raises(TaskError, match=r"toy_x3 \(x3\) cannot run at 256: .*of 3 \(e.g. 255, 258\)"):
        sr.check_resolution(None, _variant(3), 256)
    sr.check_resolution(None, _variant(3, multiple=3), 240)  # the multiple refers to the output side too
    with pytest.raises(TaskError, match=r"multiple of 12 \(e.g. 96, 108\)"):
        sr.check_resolution(None, _variant(3, multiple=4), 100)
    with pytest.raises(TaskError, match="without a scale"):
        sr.input_shape(None, _variant(), 64)
    with pytest.raises(TaskError, match="multiples of 256"):
        dh.check_resolution(None, _variant(multiple=256), 300)


def test_evaluators_registered():
    ev = evaluators()
    for n in ("builtin-haze", "sots", "haze4k", "8kdehaze", "8kdehaze-synth"):
        assert ev[n].tasks == ("dehazing",)
    for n in ("builtin-sr", "set5", "set14", "b100", "urban100", "manga109", "sr-folder"):
        assert ev[n].tasks == ("super_resolution",)
    with pytest.raises(TaskError, match="does not apply to dehazing"):
        get_evaluator(DatasetSpec("set5"), "dehazing")


# ------------------------------------------------------------------------------------------------ dehazing
def test_sots_identity_scores_exactly_the_hazy_baseline(tmp_path):
    pairs = {}
    for scene in (1400, 1401):
        clear = _smooth(scene, 24, 28)
        _png(tmp_path / "clear" / f"{scene}.png", clear)
        for k in (1, 2):
            hazy = np.clip(clear * 0.6 + 90 + 10 * k, 0, 255).astype(np.uint8)
            _png(tmp_path / "hazy" / f"{scene}_{k}.png", hazy)
            pairs[f"{scene}_{k}"] = (hazy, clear)
    r = _evaluate("sots", Identity(), _variant(), tmp_path)
    m = r.metrics
    assert m["psnr"] == m["baseline"]["psnr"] and m["ssim"] == m["baseline"]["ssim"]
    assert m["baseline"]["method"] == "hazy input" and "RGB" in m["protocol"]
    ref = np.mean([peak_signal_noise_ratio(c, h, data_range=255) for h, c in pairs.values()])
    assert m["psnr"] == pytest.approx(ref, abs=1e-5)  # float32 images vs exact uint8
    assert r.dataset == {"name": "sots", "path": str(tmp_path), "num_samples": 4, "builtin": False,
                         "hazy_dir": "hazy", "clear_dir": "clear"}
    better = _evaluate("sots", Brighten(), _variant(), tmp_path, limit=2).metrics
    assert better["num_samples"] == 2 and better["psnr"] != better["baseline"]["psnr"]


def test_haze4k_and_builtin_haze(tmp_path):
    _png(tmp_path / "test" / "gt" / "1.png", _smooth(0, 20, 20))
    _png(tmp_path / "test" / "haze" / "1_0.89_1.56.png", _smooth(1, 20, 20))
    m = _evaluate("haze4k", Identity(), _variant(), tmp_path).metrics
    assert m["psnr"] == m["baseline"]["psnr"]
    b = _evaluate("builtin-haze", Identity(), _variant())
    assert b.dataset["builtin"] is True and b.dataset["num_samples"] == 5
    assert b.metrics["ssim"] == b.metrics["baseline"]["ssim"] and 5 < b.metrics["psnr"] < 25


def test_8kdehaze_on_a_generated_set_with_levels_and_tiles(tmp_path):
    for i in range(2):
        _png(tmp_path / "src" / f"t{i}.png", _smooth(i, 40, 40))
    get_generator("8kdehaze-synth").fn(tmp_path / "src", tmp_path / "set", progress=False)
    root = tmp_path / "set"
    r = _evaluate("8kdehaze", Identity(), _variant(), root, split="all", size=32, tile=16, overlap=4)
    m = r.metrics
    assert r.dataset["name"] == "8kdehaze-synth" and r.dataset["num_samples"] == 8
    assert r.dataset["working_size"] == 32
    assert m["psnr"] == m["baseline"]["psnr"] and m["tiling"] == {"tile": 16, "overlap": 4}
    per = [m["per_level"][f"L{k}"]["baseline_psnr"] for k in (1, 2, 3, 4)]
    assert per == sorted(per, reverse=True)  # denser haze, lower PSNR of the hazy input
    one = _evaluate("8kdehaze-synth", Identity(), _variant(), root, split="all", size=32, level="L3")
    assert one.metrics["psnr"] == m["per_level"]["L3"]["psnr"] and "per_level" not in one.metrics
    assert one.dataset["levels"] == ["L3"] and one.dataset["num_samples"] == 2
    (tmp_path / "set" / "manifest.json").unlink()
    with pytest.raises(TaskError, match="no 8kdehaze-synth manifest.json"):
        _evaluate("8kdehaze-synth", Identity(), _variant(), tmp_path / "set")


def test_dehazing_errors(tmp_path):
    with pytest.raises(TaskError, match="needs a folder: --dataset sots=PATH"):
        _evaluate("sots", Identity(), _variant())
    (tmp_path / "hazy").mkdir()
    with pytest.raises(TaskError, match="no hazy/clear folder pair"):
        _evaluate("sots", Identity(), _variant(), tmp_path)
    with pytest.raises(TaskError, match="has no option 'tyle'"):
        _evaluate("builtin-haze", Identity(), _variant(), tyle=3)
    with pytest.raises(TaskError, match=r"model returned \(1, 3, 120, 120\) for a \(1, 3, 240, 240\) input"):
        _evaluate("builtin-haze", nn.AvgPool2d(2), _variant(), limit=1)
    with pytest.raises(TaskError, match="level='x'"):
        _evaluate("8kdehaze", Identity(), _variant(), tmp_path, level="x")


# ------------------------------------------------------------------------------------------ super-resolution
def test_sr_bicubic_model_equals_bicubic_baseline_in_every_layout(tmp_path):
    s = 2
    for i, name in enumerate(["baby", "bird"]):
        hr = _smooth(i, 30, 34)
        _png(tmp_path / "packaged" / "HR" / f"{name}.png", hr)
        lr = _smooth(10 + i, 15, 17)
        _png(tmp_path / "packaged" / "LR_bicubic" / "X2" / f"{name}x2.png", lr)
        _png(tmp_path / "flat" / f"{name}.png", hr)
    _png(tmp_path / "manga" / "HR" / "Akuhamu.png", _smooth(5, 28, 28))
    _png(tmp_path / "manga" / "LR_bicubic" / "X2" / "Akuhamu_LRBI_x2.png", _smooth(6, 14, 14))
    for name, folder, n in (("set5", "packaged", 2), ("sr-folder", "flat", 2), ("manga109", "manga", 1)):
        r = _evaluate(name, Bicubic(s), _variant(s), tmp_path / folder)
        m = r.metrics
        assert m["psnr"] == m["baseline"]["psnr"] and m["ssim"] == m["baseline"]["ssim"], name
        assert m["baseline"]["method"] == "bicubic" and "border crop = scale (2 px)" in m["protocol"]
        assert r.dataset["num_samples"] == n and r.dataset["scale"] == 2
    flat = _evaluate("sr-folder", Identity(), _variant(1), tmp_path / "flat").metrics
    assert flat["psnr"] == float("inf") and flat["baseline"]["psnr"] == float("inf")  # x1: HR is its own LR


def test_sr_scores_against_an_independent_computation(tmp_path):
    hr = _smooth(3, 24, 24)
    lr = _smooth(4, 8, 8)
    _png(tmp_path / "HR" / "a.png", hr)
    _png(tmp_path / "LR_bicubic" / "X3" / "ax3.png", lr)

    class Nearest(nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest")

    m = _evaluate("set14", Nearest(), _variant(3), tmp_path).metrics
    up = np.repeat(np.repeat(lr, 3, 0), 3, 1).astype(np.float64) / 255

    def y(a):
        return 16 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]

    ref = peak_signal_noise_ratio(y(hr / 255)[3:-3, 3:-3], y(up)[3:-3, 3:-3], data_range=255)
    assert m["psnr"] == pytest.approx(ref, abs=1e-6)


def test_builtin_sr_and_tiling_option():
    full = _evaluate("builtin-sr", Bicubic(4), _variant(4), limit=2).metrics
    assert full["psnr"] == full["baseline"]["psnr"] and full["num_samples"] == 2
    conv = nn.Conv2d(3, 3 * 16, 1)
    model = nn.Sequential(conv, nn.PixelShuffle(4))  # pixelwise, so tiling changes nothing
    a = _evaluate("builtin-sr", model, _variant(4), limit=1).metrics
    b = _evaluate("builtin-sr", model, _variant(4), limit=1, tile=24, overlap=8).metrics
    assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-9) and b["tiling"] == {"tile": 24, "overlap": 8}
    with pytest.raises(TaskError, match="builtin-sr has scales 2, 3 and 4"):
        _evaluate("builtin-sr", Bicubic(8), _variant(8))


# ------------------------------------------------------------------------------------------------ tiling
def test_tile_starts():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    assert tile_starts(41, 16, 4) == [0, 12, 24, 25]


@pytest.mark.parametrize("blend", ["ramp", "mean"])
@pytest.mark.parametrize("scale", [1, 3])
def test_tiled_pixelwise_model_is_exact(blend, scale):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 1), nn.PixelShuffle(scale))
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, tile=16, overlap=6, scale=scale, blend=blend)
    assert tiled.shape == full.shape == (2, 3, 37 * scale, 50 * scale)
    assert torch.equal(tiled, full)


def test_tiled_3x3_conv_matches_with_enough_overlap():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(1, 3, 45, 38)
    with torch.no_grad():
        full = conv(x)
        for overlap, halo in ((4, None), (3, 1), (2, 1)):  # receptive radius 1 <= halo, overlap >= 2 * halo
            torch.testing.assert_close(tiled_forward(conv, x, tile=16, overlap=overlap, halo=halo), full,
                                       atol=1e-6, rtol=0)
        seams = tiled_forward(conv, x, tile=16, overlap=4, halo=0)  # tile-border values leak into the seams
    assert (seams - full).abs().max() > 1e-3
    interior = (seams - full)[..., :10, :10]  # inside the first tile, away from every seam
    assert interior.abs().max() < 1e-6


def test_tiled_multiple_and_errors():
    seen = []

    def fn(t):
        seen.append(tuple(t.shape[-2:]))
        return t * 2

    x = torch.rand(1, 3, 30, 21)
    y = tiled_forward(fn, x, tile=16, overlap=4, multiple=8)
    assert torch.equal(y, x * 2) and all(h % 8 == 0 and w % 8 == 0 for h, w in seen)
    with pytest.raises(ValueError, match="tile must be a positive multiple of 8"):
        tiled_forward(fn, x, tile=12, overlap=4, multiple=8)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, tile\)"):
        tiled_forward(fn, x, tile=8, overlap=8)
    with pytest.raises(ValueError, match="model returned"):
        tiled_forward(fn, x, tile=8, overlap=2, scale=2)
    with pytest.raises(ValueError, match="halo"):
        tiled_forward(fn, x, tile=8, overlap=2, halo=2)

