"""DEA-Net (IEEE TIP 2024): single-image dehazing with detail-enhanced convolution and content-guided attention.

A three-level U-shaped CNN (base width 32, the encoder downsamples x4). Every block starts with a
detail-enhanced convolution (DEConv): five parallel 3x3 kernels -- central, horizontal, vertical and
angular difference plus a vanilla one -- that are linear in their weights and fold exactly into one 3x3
conv. The bottom level uses DEA blocks (DEConv block + content-guided attention, CGA); the skips are
merged by CGA fusion.

Two forms share one class, :class:`DEANet`, and the official state-dict layouts:

- ``deploy=True`` (official ``Backbone``; variant ``deanet_cr``): each DEConv is already one ``conv1``
  3x3 conv. The released DEA-Net-CR weights (ITS, OTS, Haze4K) are raw state dicts of this form.
- ``deploy=False`` (official ``DEANet``; variant ``deanet_cr_train``): five branches per DEConv
  (``conv1.conv1_1.conv`` ... ``conv1.conv1_5``). No weights of this form are published.

Re-parameterisation follows timm's convention: ``model.reparameterize()`` converts a training-form model
in place (and returns it); ``timm.utils.reparameterize_model(model)`` returns a converted copy, because
each :class:`DEConv` has ``fuse()``. :func:`fold_state_dict` does the same on a training-form state dict
(the official ``code/reparam.py``).

Input: RGB in [0, 1] (the official loaders use ``ToTensor`` without normalisation); any H, W -- the input
is reflect-padded to a multiple of 4 and the output cropped back, as in the official ``eval.py``. Sides
under 16, which the official network cannot run (its 7x7 reflect-padded attention convs at 1/4 resolution
need 4 pixels), are padded up to 16. The output is not clamped inside the model (``eval.py`` clamps to
[0, 1] before its metrics).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.zoo.layers.inputs import check_image_batch
from glocal.zoo.layers.padding import crop_to, pad_to_multiple
from glocal.zoo.registry import ModelCard, PaperMetric, Preprocessing, Variant, WeightSource, register

__all__ = ["DEANet", "DEConv", "fold_state_dict", "pad_input", "central_difference_kernel",
           "horizontal_difference_kernel", "vertical_difference_kernel", "angular_difference_kernel"]

_MULTIPLE = 4  # two stride-2 convolutions in the encoder
_MIN_SIDE = 16  # the 7x7 reflect-padded CGA convs at 1/4 resolution need a map side of at least 4
# Angular-difference permutation of the flattened 3x3 kernel (official ``Conv2d_ad``): each tap is paired
# with its clockwise neighbour on the 8-ring; the centre is paired with itself and so cancels.
_AD_PERM = (3, 0, 1, 6, 4, 2, 7, 8, 5)


# ----------------------------------------------------------------------------------------------------
# Difference kernels: each maps a learned weight to an equivalent vanilla 3x3 kernel (official deconv.py).
# ----------------------------------------------------------------------------------------------------

def central_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """CDC: sum_k w_k (x_k - x_centre); the centre tap becomes w_c - sum(w) (theta is unused officially)."""
    return w - F.pad(w.sum(dim=(2, 3), keepdim=True), (1, 1, 1, 1))


def horizontal_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """HDC from a Conv1d weight [O, I, 3]: left column +w, right column -w (rows follow the 1-D taps)."""
    return torch.stack((w, torch.zeros_like(w), -w), dim=-1)


def vertical_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """VDC from a Conv1d weight [O, I, 3]: top row +w, bottom row -w (columns follow the 1-D taps)."""
    return torch.stack((w, torch.zeros_like(w), -w), dim=-2)


def angular_difference_kernel(w: torch.Tensor, theta: float = 1.0) -> torch.Tensor:
    """ADC: w - theta * w[perm] on the flattened 3x3 kernel (official ``Conv2d_ad``, theta = 1)."""
    flat = w.flatten(2)
    return (flat - theta * flat[:, :, list(_AD_PERM)]).view_as(w)


class _Branch2d(nn.Module):
    """A difference-convolution branch holding its learned 3x3 weight as ``.conv`` (official key layout)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=True)


class _Branch1d(nn.Module):
    """A horizontal/vertical difference branch: its 1-D weight lives in a ``Conv1d`` named ``.conv``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1, bias=True)


class DEConv(nn.Module):
    """Detail-enhanced convolution (training form): five branches summed into one 3x3 kernel per forward."""

    def __init__(self, dim: int, theta: float = 1.0) -> None:
        super().__init__()
        self.theta = theta  # angular-difference factor (official default 1.0)
        self.conv1_1 = _Branch2d(dim)  # central difference
        self.conv1_2 = _Branch1d(dim)  # horizontal difference
        self.conv1_3 = _Branch1d(dim)  # vertical difference
        self.conv1_4 = _Branch2d(dim)  # angular difference
        self.conv1_5 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)  # vanilla

    def kernel_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent single 3x3 kernel and bias (sum of the five branches)."""
        w = (central_difference_kernel(self.conv1_1.conv.weight)
             + horizontal_difference_kernel(self.conv1_2.conv.weight)
             + vertical_difference_kernel(self.conv1_3.conv.weight)
             + angular_difference_kernel(self.conv1_4.conv.weight, self.theta)
             + self.conv1_5.weight)
        b = (self.conv1_1.conv.bias + self.conv1_2.conv.bias + self.conv1_3.conv.bias
             + self.conv1_4.conv.bias + self.conv1_5.bias)
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.kernel_and_bias()
        return F.conv2d(x, w, b, stride=1, padding=1)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The deploy-form 3x3 conv computing the same function (timm ``reparameterize_model`` hook)."""
        w, b = self.kernel_and_bias()
        conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=True, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        return conv


def _deconv(dim: int, deploy: bool) -> nn.Module:
    """``conv1`` of a block: one 3x3 conv in deploy form, a five-branch DEConv in training form."""
    return nn.Conv2d(dim, dim, 3, padding=1, bias=True) if deploy else DEConv(dim)


# ----------------------------------------------------------------------------------------------------
# Content-guided attention (official cga.py) and the blocks
# ----------------------------------------------------------------------------------------------------

class SpatialAttention(nn.Module):
    """Channel mean and max -> 7x7 conv (reflect padding) -> one spatial map (no activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.sa = nn.Conv2d(2, 1, 7, padding=3, padding_mode="reflect", bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sa(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1))


class ChannelAttention(nn.Module):
    """Global average pool -> 1x1 conv to C/r -> ReLU -> 1x1 conv back (no activation)."""

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        self.ca = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1, bias=True),
            nn.ReLU(),
            nn.Conv2d(dim // reduction, dim, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(x.mean(dim=(2, 3), keepdim=True))


def interleave_channels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x2 -> (B, 2C, H, W) ordered a0, b0, a1, b1, ... (official ``b c t h w -> b (c t) h w``)."""
    return torch.stack((a, b), dim=2).flatten(1, 2)


class PixelAttention(nn.Module):
    """Refines the coarse map with the features: grouped 7x7 conv over interleaved pairs, then sigmoid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pa2 = nn.Conv2d(2 * dim, dim, 7, padding=3, padding_mode="reflect", groups=dim, bias=True)

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pa2(interleave_channels(x, coarse)))


class DEBlock(nn.Module):
    """DEConv -> ReLU -> +x -> 3x3 conv -> +x."""

    def __init__(self, dim: int, deploy: bool = True) -> None:
        super().__init__()
        self.conv1 = _deconv(dim, deploy)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = F.relu(self.conv1(x)) + x
        return self.conv2(res) + x


class DEABlock(nn.Module):
    """DEBlock whose second residual is gated by content-guided attention: CGA(res) * res + x."""

    def __init__(self, dim: int, deploy: bool = True, reduction: int = 8) -> None:
        super().__init__()
        self.conv1 = _deconv(dim, deploy)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.sa = SpatialAttention()
        self.ca = ChannelAttention(dim, reduction)
        self.pa = PixelAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv2(F.relu(self.conv1(x)) + x)
        coarse = self.sa(res) + self.ca(res)  # (B,1,H,W) + (B,C,1,1) -> (B,C,H,W)
        return res * self.pa(res, coarse) + x


class CGAFusion(nn.Module):
    """Mix an encoder skip ``x`` and a decoder map ``y``: conv1x1(s + W*x + (1-W)*y), s = x + y, W = CGA(s).

    W is the sigmoid of the PixelAttention output, which is already a sigmoid: the official double sigmoid
    (issue #25) is kept because the released weights were trained with it.
    """

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention(dim, reduction)
        self.pa = PixelAttention(dim)
        self.conv = nn.Conv2d(dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = x + y
        w = torch.sigmoid(self.pa(s, self.sa(s) + self.ca(s)))
        return self.conv(s + w * x + (1 - w) * y)


# ----------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------

class DEANet(nn.Module):
    """DEA-Net; ``deploy=True`` is the official ``Backbone`` layout, ``deploy=False`` the official ``DEANet``."""

    def __init__(self, base_dim: int = 32, deploy: bool = True) -> None:
        super().__init__()
        d1, d2, d3 = base_dim, base_dim * 2, base_dim * 4
        self.deploy = deploy
        # Registration order follows the official class so state_dict() keys come out in the same order.
        self.down1 = nn.Sequential(nn.Conv2d(3, d1, 3, stride=1, padding=1))
        self.down2 = nn.Sequential(nn.Conv2d(d1, d2, 3, stride=2, padding=1), nn.ReLU())
        self.down3 = nn.Sequential(nn.Conv2d(d2, d3, 3, stride=2, padding=1), nn.ReLU())
        for i in range(1, 5):
            setattr(self, f"down_level1_block{i}", DEBlock(d1, deploy))
        for i in range(1, 5):
            setattr(self, f"up_level1_block{i}", DEBlock(d1, deploy))
        self.fe_level_2 = nn.Conv2d(d2, d2, 3, stride=1, padding=1)
        for i in range(1, 5):
            setattr(self, f"down_level2_block{i}", DEBlock(d2, deploy))
        for i in range(1, 5):
            setattr(self, f"up_level2_block{i}", DEBlock(d2, deploy))
        self.fe_level_3 = nn.Conv2d(d3, d3, 3, stride=1, padding=1)
        for i in range(1, 9):
            setattr(self, f"level3_block{i}", DEABlock(d3, deploy))
        self.up1 = nn.Sequential(nn.ConvTranspose2d(d3, d2, 3, stride=2, padding=1, output_padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(d2, d1, 3, stride=2, padding=1, output_padding=1), nn.ReLU())
        self.up3 = nn.Sequential(nn.Conv2d(d1, 3, 3, stride=1, padding=1))
        self.mix1 = CGAFusion(d3, reduction=8)
        self.mix2 = CGAFusion(d2, reduction=4)

    def _blocks(self, prefix: str, n: int) -> list[nn.Module]:
        return [getattr(self, f"{prefix}{i}") for i in range(1, n + 1)]

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """The official forward: H and W must be multiples of 4."""
        x1 = self.down1(x)
        for blk in self._blocks("down_level1_block", 4):
            x1 = blk(x1)
        x2 = self.down2(x1)
        x2_init = self.fe_level_2(x2)
        for blk in self._blocks("down_level2_block", 4):
            x2_init = blk(x2_init)
        x3 = self.down3(x2_init)
        y = self.fe_level_3(x3)
        for blk in self._blocks("level3_block", 8):
            y = blk(y)
        y = self.up1(self.mix1(x3, y))  # skip = level-3 input before its refinement conv
        for blk in self._blocks("up_level2_block", 4):
            y = blk(y)
        y = self.up2(self.mix2(x2, y))  # skip = level-2 input before fe_level_2 (official)
        for blk in self._blocks("up_level1_block", 4):
            y = blk(y)
        return self.up3(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hazy RGB in [0, 1], any size -> dehazed RGB of the same size (reflect pad to x4, crop back)."""
        check_image_batch(x, 3, "DEA-Net")
        return crop_to(self.forward_body(pad_input(x)), tuple(x.shape[-2:]))

    @torch.no_grad()
    def reparameterize(self) -> DEANet:
        """Fold every DEConv into one 3x3 conv in place (timm convention); returns ``self`` in deploy form."""
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, DEConv):
                    setattr(module, name, child.fuse())
        self.deploy = True
        return self


def pad_input(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple of 4 (official ``eval.py``); sides under 16 are padded up to 16
    (replicate where reflect cannot reach), because the official network cannot run them."""
    return pad_to_multiple(x, _MULTIPLE, mode="reflect", min_size=_MIN_SIDE)[0]


def fold_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Training-form state dict -> deploy-form state dict (the official ``code/reparam.py``), key order kept."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".conv1.conv1_" not in key:
            out[key] = value
            continue
        if not key.endswith(".conv1.conv1_5.bias"):
            continue  # folded when the last branch of the block is reached
        p = key[: -len("conv1_5.bias")]  # "<block>.conv1."
        try:
            w = (central_difference_kernel(state_dict[p + "conv1_1.conv.weight"])
                 + horizontal_difference_kernel(state_dict[p + "conv1_2.conv.weight"])
                 + vertical_difference_kernel(state_dict[p + "conv1_3.conv.weight"])
                 + angular_difference_kernel(state_dict[p + "conv1_4.conv.weight"])
                 + state_dict[p + "conv1_5.weight"])
            b = sum(state_dict[p + f"conv1_{i}.conv.bias"] for i in range(1, 5)) + value
        except KeyError as e:
            raise ValueError(f"incomplete DEConv in the training state dict: missing {e.args[0]}") from None
        out[p + "weight"] = w
        out[p + "bias"] = b
    return out


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

_DRIVE = "https://drive.google.com/drive/folders/1Rjb8dpyNnvvr0XLvIX9fg8Hdru_MhMCj"
_PREPROCESSING = Preprocessing(input_size=(3, 256, 256), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                               interpolation="bicubic", crop_pct=1.0, crop_mode="center")

# Paper Table (README ``fig/results.png``): DEA-Net-CR row, one model per training set.
_PAPER_CR = (
    PaperMetric("SOTS-indoor", "psnr", 41.31, "DEA-Net-CR, ITS weights (paper table / README)"),
    PaperMetric("SOTS-indoor", "ssim", 0.9945, "DEA-Net-CR, ITS weights (paper table / README)"),
    PaperMetric("SOTS-outdoor", "psnr", 36.59, "DEA-Net-CR, OTS weights (paper table / README)"),
    PaperMetric("SOTS-outdoor", "ssim", 0.9897, "DEA-Net-CR, OTS weights (paper table / README)"),
    PaperMetric("Haze4K", "psnr", 34.25, "DEA-Net-CR, Haze4K weights (paper table / README)"),
    PaperMetric("Haze4K", "ssim", 0.99, "DEA-Net-CR, Haze4K weights; two decimals in the paper table"),
    PaperMetric("paper", "params_m", 3.653, "paper table (deploy form)"),
    PaperMetric("paper", "gmacs", 32.23, "paper table '# FLOPs (G)', multiply-adds at a 256x256 input"),
    PaperMetric("paper", "latency_ms", 7.093, "paper table runtime; GPU and input size not stated"),
)

CARD = register(ModelCard(
    family="deanet",
    display_name="DEA-Net",
    task="dehazing",
    paper_title="DEA-Net: Single image dehazing based on detail-enhanced convolution and content-guided attention",
    arxiv_id="2301.04805",
    official_repo="https://github.com/cecret3350/DEA-Net",
    license="none stated (no licence file in the official repository)",
    default_variant="deanet_cr",
    aliases=("dea_net", "dea-net-cr"),
    description="U-shaped CNN whose detail-enhanced convolutions (difference kernels folded into one 3x3 conv) "
                "feed content-guided spatial/channel attention and attention-weighted skip fusion.",
    variants=(
        Variant(
            name="deanet_cr",
            builder=DEANet,
            kwargs={"base_dim": 32, "deploy": True},
            preprocessing=_PREPROCESSING,
            weights=(
                WeightSource("DEA-Net-CR trained on RESIDE ITS (SOTS-indoor), deploy form; Google Drive/Baidu",
                             url=_DRIVE, filename="ITS/PSNR4131_SSIM9945.pth"),
                WeightSource("DEA-Net-CR trained on RESIDE OTS (SOTS-outdoor), deploy form; Google Drive/Baidu",
                             url=_DRIVE, filename="OTS/PSNR3659_SSIM9897.pth"),
                WeightSource("DEA-Net-CR trained on Haze4K, deploy form; Google Drive/Baidu (the README also "
                             "spells the file PSNR3426_SSIM9985.pth / PSNR3425_SSIM9985.pth)",
                             url=_DRIVE, filename="HAZE4K/PSNR3426_SSIM9885.pth"),
            ),
            paper_metrics=_PAPER_CR,
            params=3_653_377,
            resolution_multiple=1,
            resolutions=(256,),
            notes="Re-parameterised (deploy) form of the official Backbone; the released weights load strictly. "
                  "Any input size: reflect-padded to a multiple of 4 and cropped back. Output not clamped.",
        ),
        Variant(
            name="deanet_cr_train",
            builder=DEANet,
            kwargs={"base_dim": 32, "deploy": False},
            preprocessing=_PREPROCESSING,
            params=7_789_313,
            resolution_multiple=1,
            resolutions=(256,),
            notes="Training form (five-branch DEConv, official DEANet class); no weights are published. "
                  "model.reparameterize() folds it in place into the deanet_cr layout with equal outputs.",
        ),
    ),
))
