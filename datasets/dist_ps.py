"""``dist-ps``: DiST-style triplets made with Portilla-Simoncelli texture synthesis (``plenoptic``).

DiST (Wen, Li, Jing & Lee, arXiv 2310.07555) pairs each original with two texture-synthesised versions that
keep its local statistics but lose its global shape. The paper used Gatys et al. (2015) Gram-matrix synthesis
on ImageNet-trained VGG-19 features; those weights cannot be had offline, so this generator uses the
weight-free Portilla & Simoncelli (2000) model from ``plenoptic`` (https://github.com/plenoptic-org/plenoptic)
instead. It is a different generator: sets are named ``dist-ps`` and their scores are not comparable with the paper's.

Per source image (seeded per image from the run seed and the image's sha256; each item runs on one thread,
``workers`` processes run items in parallel):

1. resize (shorter side) and centre-crop to ``size`` x ``size`` RGB: the *photo* (the triplet's original with
   ``original=photo``; with the default ``original=rendered`` see the last section);
2. decorrelate colour: project the pixels on the principal axes of their RGB covariance and rescale each axis
   to [0, 1] (axes with no spread, e.g. the chroma of a grey image, are held at their mean), because
   plenoptic's PS model treats channels independently and naive per-RGB synthesis gives wrong colours;
3. synthesise the decorrelated channels twice, from two seeded uniform noises: ``plenoptic.Metamer`` with the
   recommended ``portilla_simoncelli_loss_factory`` loss, L-BFGS (10 evaluations per step, strong Wolfe line
   search), up to ``steps`` steps, stopping early below ``target`` times the starting noise's loss or on a <1%
   improvement over 20 steps.
   The penalty keeps the *re-correlated RGB* image inside [0, 1] (in trials, clipping an out-of-gamut
   synthesis afterwards raised its loss more than tenfold);
4. re-correlate, move the colour *combinations* onto the original's joint RGB distribution (``colour_iters``
   rounds of sliced optimal transport: independent channel syntheses otherwise make colour pairs the photo
   never has), and histogram-match each RGB channel to the original exactly (rank matching onto the
   original's 8-bit values), so pixel histograms cannot give the original away. Matching moves the PS
   statistics (the per-axis moments no longer fit exactly), so ``polish`` rounds of (match, ``polish_steps``
   more L-BFGS steps) precede the final match;
5. convergence check: each synthesis must end at most ``threshold`` times the loss of its starting noise;
   otherwise the triplet is rejected, counted and recorded with its losses under ``rejected/`` and in the
   manifest (flat images are rejected up front). The loss of the shipped, histogram-matched 8-bit image is
   recorded too (``final_loss``, ``relative_final_loss``): matching raises it (measured 0.006-0.25 of the
   start at 64 px, colour photos highest), which is the price of exact pixel histograms.

Shortcut controls with ``original=photo`` (``tests/test_structure_generators.py``, slow; 64 px, otherwise
defaults, scikit-image sources):

* the pixel-histogram observer ties exactly (1/3) by construction;
* on *textures* (``brick``, ``grass``, ``gravel``, three crops each) the 7 px ``local_patches`` observer wins 6
  of 9 (p 0.04; margin +0.019, range -0.004..+0.058): all three ``brick`` crops, whose straight mortar
  lattice PS does not reproduce (LBP and vertical-derivative blocks), and 3 of the 6 ``grass`` and ``gravel``
  crops by small margins: PS reproduces most of what a bag of local patches sees in an irregular texture.
  (Earlier figures said "at chance": the test's two corner crops of a square image were then the same crop.);
* on *photos* (``astronaut``, ``coffee``, ``chelsea``, ``rocket``, three crops each) it finds the original in
  12 of 12 triplets: the two syntheses are closer to each other (Hellinger distance 0.04-0.09) than to the
  original (0.07-0.37). A photo is a mixture of regions (flat sky, fur, edges; lighting gradients that skew
  the signs of derivatives), while a PS synthesis spreads one averaged texture evenly over the image, so
  every local descriptor block differs, chroma gradients most. Measured mitigations that did not close the
  gap (same 12 triplets): four times as many steps; Heeger-Bergen matching of every steerable-pyramid
  subband's histogram; starting the synthesis from a tile-shuffled copy of the photo instead of noise (100
  steps move far from any start); PS losses pooled over overlapping 32 px windows with a deranged window
  assignment plus the global loss (the original-to-synthesis distance fell by about a third, 2.5 times
  the CPU, poorer convergence). Sliced colour transfer (``colour_iters``, version 2) removes the joint
  colour-histogram cue (on the same 12 syntheses before polishing, the ``rg``/``by`` chroma-histogram
  distance gap fell from 0.11/0.14 to 0.04/0.00) but not the spatial ones. Region-wise synthesis was also
  prototyped (not shipped): k-means the photo into 3 colour/energy regions, synthesise each region's
  texture from a quilt of its own 16 px patches, lay the textures out on a new random blob map with the
  same area fractions. It did not help: on the same 6 photo triplets the observer's original-vs-synthesis
  excess was 0.14-0.21 on the luminance blocks and 0.18/0.21 on the chroma-gradient blocks, against
  0.12-0.18 and 0.14/0.16 for this generator, and the observer won every trial of both. Synthesising each
  region on its principal colour axis alone (4 triplets), or matching colours with smooth
  (quantile-interpolated) instead of rank transfers, changed little. Two side findings: matching global
  band-wise cross-channel correlations during synthesis does not reduce the chroma-gradient cue, and exact
  rank matching of an image whose colours are far from the original's spreads equal colours into fine
  chroma noise (``astronaut`` projected on its first principal axis and matched back keeps 10% of
  near-zero chroma gradients instead of 37%).

A ``dist-ps`` set whose original is the photo (``original=photo``, DiST's protocol) therefore mixes
global-structure sensitivity with detection of synthesised texture; the evaluator reports this in
``shortcut_flags``. The same caveat applies to DiST's Gatys textures, for which no such control was published.

``original=rendered`` (the default since version 3) removes that cue by giving all three images the same kind
of local texture. Every image of the triplet is a PS *rendering*: L-BFGS on the PS loss plus a layout penalty
(``layout_weight`` times the mean squared difference between the image blurred with a Gaussian of
``layout_sigma`` x side, twice that on the two chroma-like axes, and its layout), started from the layout plus
uniform noise with the photo's detail spread. The original's layout is the blurred photo; each synthesis's
layout is that of a free PS synthesis (steps 2-3, convergence-checked as usual). All three are colour-matched
to the photo as in step 4 (no polish rounds: pixel histograms still tie exactly), and a triplet is rejected when
a rendering ends above ``threshold`` of the free syntheses' mean starting-noise loss (measured 0.13-0.47% at 64
px, against 0.17-0.80% for the free syntheses). The original keeps the photo's layout at scales above about
``layout_sigma`` x side and loses its photographic detail; the two others keep neither. It is a texform-like
original (compare Long & Konkle's texforms), not the photo: scores on such sets measure sensitivity to the
coarse global layout given the same kind of local texture, and are not comparable with ``original=photo`` sets
or with DiST's.

Measured with the slow test's 12 photo triplets (``astronaut``, ``coffee``, ``chelsea``, ``rocket``, three
crops each, 64 px, seed 0), per layout_sigma; observer = ``local_patches``; margin = its
original-to-nearest-synthesis distance minus the synthesis-to-synthesis distance (positive: the observer
wins); layout kept = correlation of the 6 px-blurred first colour axis with the photo's:

=================  ===============  =======================  ===============  =====================
original           observer wins    margin mean (range)      layout kept      CPU s per triplet
=================  ===============  =======================  ===============  =====================
photo              12/12 (p 2e-6)   +0.128 (+0.023..+0.276)  1 vs 0.04        72
rendered, 0.125    8/12 (p 0.019)   +0.011 (-0.016..+0.053)  0.94 vs 0.05     154
rendered, 0.1875   6/12 (p 0.18)    -0.000 (-0.020..+0.023)  0.87 vs 0.06     162
=================  ===============  =======================  ===============  =====================

On the textures (``brick``, ``grass``, ``gravel``, three crops each) the default rendering gives 5/9 (p 0.14),
margin -0.000 (-0.008..+0.005), 96 CPU s per triplet; with the photo as the original, 6/9 (above).

("vs": the syntheses' correlation with the photo's layout, mean; single syntheses reach 0.9 by chance, e.g.
a dark top over a bright base.) At 0.125 three of the eight wins are the three ``rocket`` crops, whose long
vertical towers survive the blur and show in the derivative histograms; at the default 0.1875 the observer sits
at chance, at the price of a coarser kept layout (at 64 px the rendered astronaut is a layout of colour masses,
no longer a recognisable figure). Two workers on two cores; "CPU s" is per triplet and worker.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from glocal.datasets.engine import load_rgb, parse_options
from glocal.datasets.registry import DatasetError, register_generator
from glocal.datasets.triplets import SOURCE_REDUCING_GAP, Job, make_triplet_set

NAME = "dist-ps"
VERSION = "3"
SCHEMA: dict[str, tuple[type, Any, str]] = {
    "size": (int, 128, "output side in pixels (source resized and centre-cropped); a multiple of 2**n_scales"),
    "steps": (int, 100, "maximum L-BFGS steps per synthesis (10 loss evaluations each)"),
    "target": (float, 1e-3, "stop a synthesis early once its loss falls below this fraction of its starting loss"),
    "threshold": (float, 0.01, "reject a triplet when a synthesis (or rendering) ends above this fraction of its "
                  "starting noise's loss (not converged)"),
    "polish": (int, 2, "rounds of (histogram match, short re-synthesis) before the final histogram match"),
    "polish_steps": (int, 10, "L-BFGS steps per polish round"),
    "colour_iters": (int, 30, "iterations of sliced colour transfer onto the original's joint RGB distribution before "
                     "the per-channel match (0: per-channel match only)"),
    "n_scales": (int, 0, "PS pyramid scales (0: the most that fit, size / 2**n >= spatial_corr_width, at most 4)"),
    "n_orientations": (int, 4, "PS orientations per scale"),
    "spatial_corr_width": (int, 7, "PS autocorrelation window (odd)"),
    "original": (str, "rendered", "the triplet's original: 'rendered' (every image, the original too, is PS texture "
                 "rendered over a blurred layout: the photo's for the original, each synthesis's own for the two "
                 "others; see the module docstring) or 'photo' (the source image itself, DiST's protocol)"),
    "layout_sigma": (float, 0.1875, "rendered: Gaussian sigma of the layout as a fraction of the side, for the "
                     "first colour axis (the two others use twice it)"),
    "layout_weight": (float, 10.0, "rendered: weight of the layout penalty (mean squared difference between the "
                      "blurred image and its layout)"),
}
ORIGINALS = ("photo", "rendered")
_MIN_STD = 1e-3  # decorrelated axes with less spread (in [0, 1] RGB units) are held constant


def auto_scales(size: int, width: int, n_scales: int = 0) -> int:
    """PS scales for ``size``: the requested number, or the most (<= 4) with size / 2**n >= width."""
    if n_scales:
        n = n_scales
    else:
        n = max([k for k in range(1, 5) if size % 2**k == 0 and size // 2**k >= width], default=0)
    if n < 1 or size % 2**n or size // 2**n < width:
        raise DatasetError(f"{NAME}: size {size} cannot hold {n_scales or 'any'} PS scales with "
                           f"spatial_corr_width {width} (need size / 2**n_scales >= width, a multiple of 2**n_scales)")
    return n


def check_params(p: dict[str, Any]) -> int:
    """Validate options; returns the number of PS scales."""
    if p["steps"] < 1:
        raise DatasetError(f"{NAME}: steps must be at least 1, got {p['steps']}")
    if p["threshold"] <= 0:
        raise DatasetError(f"{NAME}: threshold must be positive, got {p['threshold']}")
    if p["colour_iters"] < 0:
        raise DatasetError(f"{NAME}: colour_iters must be 0 or more, got {p['colour_iters']}")
    if p["original"] not in ORIGINALS:
        raise DatasetError(f"{NAME}: original must be one of {', '.join(ORIGINALS)}, got {p['original']!r}")
    for key in ("layout_sigma", "layout_weight"):
        if p[key] <= 0:
            raise DatasetError(f"{NAME}: {key} must be positive, got {p[key]}")
    if p["spatial_corr_width"] < 3 or p["spatial_corr_width"] % 2 == 0:
        raise DatasetError(f"{NAME}: spatial_corr_width must be odd and at least 3, got {p['spatial_corr_width']}")
    return auto_scales(p["size"], p["spatial_corr_width"], p["n_scales"])


class ColourBasis:
    """PCA of an image's RGB pixels: project to decorrelated axes rescaled to [0, 1], and back."""

    def __init__(self, rgb: np.ndarray) -> None:
        x = rgb.reshape(-1, 3).astype(np.float64) / 255.0
        self.mean = x.mean(0)
        cov = np.cov(x - self.mean, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        self.axes = evecs[:, order]  # columns: principal axes, largest variance first
        y = (x - self.mean) @ self.axes
        self.lo, self.hi = y.min(0), y.max(0)
        self.active = np.sqrt(np.maximum(evals[order], 0.0)) > _MIN_STD
        self.shape = rgb.shape

    def forward(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (k, H, W) float in [0, 1] on the k active axes."""
        y = (rgb.reshape(-1, 3).astype(np.float64) / 255.0 - self.mean) @ self.axes
        z = (y - self.lo) / np.maximum(self.hi - self.lo, 1e-12)
        return z[:, self.active].T.reshape(-1, *self.shape[:2])

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """(k, H, W) on the active axes -> (H, W, 3) float RGB in [0, 1] units (inactive axes at their mean)."""
        n = self.shape[0] * self.shape[1]
        y = np.zeros((n, 3))
        act = self.active
        y[:, act] = z.reshape(int(act.sum()), n).T * (self.hi - self.lo)[act] + self.lo[act]
        return (y @ self.axes.T + self.mean).reshape(self.shape)


def match_histograms(rgb: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Exact per-channel histogram matching: the output holds exactly the reference's 8-bit values per channel,
    assigned in the rank order of ``rgb``."""
    out = np.empty_like(reference)
    for c in range(3):
        order = np.argsort(rgb[..., c].ravel(), kind="stable")
        flat = np.empty(order.size, dtype=reference.dtype)
        flat[order] = np.sort(reference[..., c].ravel())
        out[..., c] = flat.reshape(reference.shape[:2])
    return out


def transfer_colours(rgb: np.ndarray, reference: np.ndarray, iters: int = 30, seed: int = 0) -> np.ndarray:
    """Move the joint RGB distribution of ``rgb`` (float, [0, 1] units) onto that of ``reference`` (uint8) by
    iterated 1-D rank matching along random orthonormal axes (Pitié, Kokaram & Dahyot 2005; sliced optimal
    transport). Per-channel matching alone keeps wrong colour *combinations* (channels are synthesised
    independently); this fixes the combinations while moving each pixel little. Deterministic for a seed."""
    if rgb.shape != reference.shape:
        raise ValueError(f"transfer_colours: shapes differ, {rgb.shape} vs {reference.shape}")
    rng = np.random.default_rng(seed)
    x = rgb.reshape(-1, 3).astype(np.float64)
    t = reference.reshape(-1, 3).astype(np.float64) / 255.0
    for _ in range(iters):
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        px, pt = x @ q, np.sort(t @ q, axis=0)
        for k in range(3):
            px[np.argsort(px[:, k], kind="stable"), k] = pt[:, k]
        x = px @ q.T
    return x.reshape(rgb.shape)


def blur(z: Any, sigmas: tuple[float, ...]) -> Any:
    """Separable Gaussian blur of a (1, k, H, W) tensor, channel ``i`` with ``sigmas[min(i, len - 1)]`` pixels
    (reflected borders; the kernel is cut at 3 sigma or the image side)."""
    import torch
    import torch.nn.functional as F

    out = []
    for i in range(z.shape[1]):
        sigma = sigmas[min(i, len(sigmas) - 1)]
        r = max(1, min(int(3 * sigma), z.shape[-1] - 1, z.shape[-2] - 1))
        t = torch.arange(-r, r + 1, dtype=z.dtype)
        k = torch.exp(-t**2 / (2 * sigma**2))
        k = k / k.sum()
        c = F.conv2d(F.pad(z[:, i:i + 1], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        out.append(F.conv2d(F.pad(c, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1)))
    return torch.cat(out, 1)


def _seed(seed: int, k: int) -> int:
    return (seed + k * 0x9E3779B97F4A7C15) % 2**63


class Synthesizer:
    """PS metamers of one image's decorrelated channels, kept inside the RGB gamut, with histogram matching."""

    def __init__(self, img: np.ndarray, p: dict[str, Any], n_scales: int) -> None:
        import plenoptic as po
        import torch

        self.img, self.p = img, p
        self.basis = b = ColourBasis(img)
        k = int(b.active.sum())
        self.scale = torch.tensor((b.hi - b.lo)[b.active], dtype=torch.float32).view(1, k, 1, 1)
        self.lo = torch.tensor(b.lo[b.active], dtype=torch.float32).view(1, k, 1, 1)
        self.axes = torch.tensor(b.axes[:, b.active].T, dtype=torch.float32)  # (k, 3)
        self.mean = torch.tensor(b.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.target = self.encode(img)
        size = img.shape[0]
        self.model = po.models.PortillaSimoncelli((size, size), n_scales=n_scales, n_orientations=p["n_orientations"],
                                                  spatial_corr_width=p["spatial_corr_width"])
        po.remove_grad(self.model)
        self.model.eval()
        self.loss_fn = po.loss.portilla_simoncelli_loss_factory(self.model, self.target)
        with torch.no_grad():
            self.target_rep = self.model(self.target)
        side = p["layout_sigma"] * size
        self.sigmas = (side, 2 * side)  # first (luminance-like) axis, then the chroma axes
        self.layout: Any = None  # set while rendering: the blurred layout the image must keep

    def encode(self, rgb: np.ndarray) -> Any:
        """(H, W, 3) uint8 -> (1, k, H, W) decorrelated tensor."""
        import torch

        return torch.from_numpy(self.basis.forward(rgb)).float()[None].contiguous()

    def to_rgb(self, z: Any) -> Any:
        """(1, k, H, W) decorrelated -> (1, 3, H, W) RGB in [0, 1] units (differentiable)."""
        import torch

        return torch.einsum("bkhw,kc->bchw", z * self.scale + self.lo, self.axes) + self.mean

    def gamut_penalty(self, z: Any) -> Any:
        """Squared excursion of the RGB image outside [0, 1]: keeps independent channel syntheses in gamut."""
        import plenoptic as po

        return po.regularize.penalize_range(self.to_rgb(z), allowed_range=(0.0, 1.0))

    def penalty(self, z: Any) -> Any:
        """The metamer penalty: the gamut penalty, plus the layout penalty while rendering."""
        out = self.gamut_penalty(z)
        if self.layout is not None:
            out = out + self.p["layout_weight"] * ((blur(z, self.sigmas) - self.layout) ** 2).mean()
        return out

    def loss(self, z: Any) -> float:
        """PS loss of ``z`` against the original (the plenoptic loss factory's weighting)."""
        import torch

        with torch.no_grad():
            return float(self.loss_fn(self.model(z), self.target_rep))

    def noise(self, seed: int) -> Any:
        """Uniform noise with each decorrelated channel's mean and standard deviation (the synthesis start)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        t = self.target
        mean, std = t.mean(dim=(2, 3), keepdim=True), t.std(dim=(2, 3), keepdim=True)
        return (mean + std * 3**0.5 * (2 * torch.rand(t.shape, generator=g) - 1)).clamp(0, 1).contiguous()

    def run(self, z: Any, steps: int, target_loss: float = 0.0) -> tuple[Any, int]:
        """L-BFGS metamer steps from ``z``: stops at ``steps``, below ``target_loss``, or on a <1%/20-step plateau."""
        import plenoptic as po
        import torch

        done = 0
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # plenoptic's tqdm bar, notes
            warnings.simplefilter("ignore")
            met = po.Metamer(self.target, self.model, loss_function=self.loss_fn,
                             penalty_function=self.penalty, penalty_lambda=1.0)
            met.setup(z.contiguous(), optimizer=torch.optim.LBFGS,
                      optimizer_kwargs={"max_iter": 10, "max_eval": 10, "history_size": 100,
                                        "line_search_fn": "strong_wolfe", "lr": 1})
            while done < steps:
                n = min(5, steps - done)
                met.synthesize(max_iter=n, stop_criterion=0.0, stop_iters_to_check=steps + 1)
                done += n
                losses = [float(v) for v in met.losses]
                if losses[-1] < target_loss:
                    break
                if len(losses) > 20 and losses[-21] - losses[-1] < 0.01 * losses[-21]:
                    break
        return met.metamer.detach(), done

    def matched(self, z: Any) -> np.ndarray:
        """RGB 8-bit image of ``z``: its colour combinations moved onto the original's (``colour_iters`` rounds of
        sliced transfer), then each channel's histogram matched exactly to the original's."""
        rgb = self.to_rgb(z)[0].permute(1, 2, 0).double().numpy()
        if self.p["colour_iters"]:
            rgb = transfer_colours(rgb, self.img, self.p["colour_iters"])
        return match_histograms(rgb, self.img)

    def free(self, seed: int) -> tuple[Any, dict[str, Any]]:
        """A free synthesis from seeded noise (no layout): the decorrelated tensor and its losses."""
        start = self.noise(seed)
        noise_loss = self.loss(start)
        z, steps = self.run(start, self.p["steps"], self.p["target"] * noise_loss)
        synthesis_loss = self.loss(z)
        return z, {"noise_loss": noise_loss, "synthesis_loss": synthesis_loss,
                   "relative_synthesis_loss": synthesis_loss / noise_loss, "steps": steps}

    def render(self, layout_of: Any, seed: int) -> tuple[Any, dict[str, Any]]:
        """PS texture laid over the blurred layout of ``layout_of`` (a decorrelated tensor): L-BFGS from the layout
        plus seeded uniform noise with the original's detail spread, under the PS loss and the layout penalty."""
        import torch

        self.layout = blur(layout_of, self.sigmas)
        try:
            detail = (self.target - blur(self.target, self.sigmas)).std(dim=(2, 3), keepdim=True)
            g = torch.Generator().manual_seed(seed)
            start = (self.layout + detail * 3**0.5 * (2 * torch.rand(self.layout.shape, generator=g) - 1)).clamp(0, 1)
            z, steps = self.run(start.contiguous(), self.p["steps"], self.p["target"] * self.loss(start))
        finally:
            self.layout = None
        return z, {"render_loss": self.loss(z), "render_steps": steps}

    def synthesize(self, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """One shipped image: synthesis, ``polish`` rounds of (histogram match, short re-synthesis), and a final
        histogram match. Returns the 8-bit image and its losses (absolute, and relative to the starting noise)."""
        p = self.p
        z, rec = self.free(seed)
        noise_loss, synthesis_loss, steps = rec["noise_loss"], rec["synthesis_loss"], rec["steps"]
        for _ in range(p["polish"]):
            z, n = self.run(self.encode(self.matched(z)), p["polish_steps"])
            steps += n
        out = self.matched(z)
        final_loss = self.loss(self.encode(out))
        return out, {"noise_loss": noise_loss, "synthesis_loss": synthesis_loss, "final_loss": final_loss,
                     "relative_synthesis_loss": synthesis_loss / noise_loss,
                     "relative_final_loss": final_loss / noise_loss, "steps": steps}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run an item on one intra-op thread (small FFTs do not scale; ``workers`` gives the parallelism)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_item(job: Job) -> tuple[str, list[np.ndarray] | None, dict[str, Any]]:
    """One triplet: the original and two histogram-matched PS syntheses, or a rejection with its losses."""
    with _one_thread():
        return _make_item(job)


def _make_item(job: Job) -> tuple[str, list[np.ndarray] | None, dict[str, Any]]:
    p = job.params
    n_scales = check_params(p)
    img = load_rgb(job.source, p["size"], reducing_gap=SOURCE_REDUCING_GAP)
    if not ColourBasis(img).active.any():
        return "rejected", None, {"n_scales": n_scales, "reason": "flat image (no colour or intensity variation)"}
    syn = Synthesizer(img, p, n_scales)
    meta: dict[str, Any] = {"n_scales": n_scales, "active_axes": int(syn.basis.active.sum()), "original": p["original"]}
    try:
        if p["original"] == "rendered":
            return _rendered_triplet(syn, job.seed, meta)
        outputs, records = [], []
        for k in range(2):
            out, rec = syn.synthesize(_seed(job.seed, k))
            outputs.append(out)
            records.append(rec)
    except ValueError as e:  # plenoptic raises ValueError on a NaN loss
        if "NaN" not in str(e):
            raise
        return "rejected", None, {**meta, "reason": f"synthesis diverged: {e}"}
    _collect(meta, records)
    rejected = _not_converged(meta, p)
    return ("rejected", None, {**meta, "reason": rejected}) if rejected else ("ok", [img, *outputs], meta)


def _collect(meta: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Per-image records -> one list per key in ``meta``."""
    for key in records[0]:
        meta[key] = [r[key] for r in records]


def _not_converged(meta: dict[str, Any], p: dict[str, Any]) -> str | None:
    """The rejection reason when a free synthesis ended above ``threshold`` of its start, else None."""
    worst = max(meta["relative_synthesis_loss"])
    if not np.isfinite(worst) or worst > p["threshold"]:
        return f"not converged: synthesis loss {worst:.4g} of its start > threshold {p['threshold']}"
    return None


def _rendered_triplet(syn: Synthesizer, seed: int,
                      meta: dict[str, Any]) -> tuple[str, list[np.ndarray] | None, dict[str, Any]]:
    """``original=rendered``: two free syntheses (convergence-checked), then three renderings over the layouts of
    the photo and of each synthesis, colour-matched to the photo. Losses of the renderings list the original
    first."""
    p = syn.p
    free = [syn.free(_seed(seed, k)) for k in range(2)]
    _collect(meta, [rec for _, rec in free])
    rejected = _not_converged(meta, p)
    if rejected:
        return "rejected", None, {**meta, "reason": rejected}
    layouts = [syn.target] + [z for z, _ in free]
    rendered = [syn.render(layout, _seed(seed, 2 + k)) for k, layout in enumerate(layouts)]
    images = [syn.matched(z) for z, _ in rendered]
    reference = float(np.mean(meta["noise_loss"]))
    _collect(meta, [rec for _, rec in rendered])
    meta["relative_render_loss"] = [v / reference for v in meta["render_loss"]]
    meta["final_loss"] = [syn.loss(syn.encode(x)) for x in images]
    meta["relative_final_loss"] = [v / reference for v in meta["final_loss"]]
    worst = max(meta["relative_render_loss"])
    if not np.isfinite(worst) or worst > p["threshold"]:
        return "rejected", None, {**meta, "reason": f"not converged: rendering loss {worst:.4g} of the starting "
                                                    f"noise's > threshold {p['threshold']}"}
    return "ok", images, meta


@register_generator(NAME, "DiST-style triplets: two Portilla-Simoncelli syntheses per image (colour-decorrelated, "
                    "histogram-matched, convergence-checked)", {k: v[2] for k, v in SCHEMA.items()})
def make_dist_ps(src: str | Path, out: str | Path, *, seed: int = 0, workers: int = 1, resume: bool = True,
                 progress: bool = True, **options: Any) -> dict[str, Any]:
    """Write a ``dist-ps`` triplet set from the images in ``src`` (see the module docstring)."""
    params = parse_options(options, SCHEMA, NAME)
    check_params(params)  # fail before any work
    rendered = params["original"] == "rendered"
    note = ("DiST-like texture triplets made locally with Portilla-Simoncelli synthesis; not the DiST release "
            "(Gatys synthesis), not comparable with its numbers")
    if rendered:
        note += ("; the original is the photo's blurred layout rendered in PS texture (original=rendered), "
                 "not the photo")
    summary = make_triplet_set(generator=NAME, version=VERSION, src=src, out=out, params=params, work=make_item,
                               seed=seed, workers=workers, resume=resume, progress=progress, note=note)
    # optimisations per triplet: two free syntheses, plus three renderings with original=rendered
    summary["cpu_seconds_per_synthesis"] = summary["cpu_seconds_per_image"] / (5 if rendered else 2)
    return summary
