"""Shared zoo layers: padding, the channel LayerNorm, the input check, the ViT init, the shift mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from glocal.zoo import InputError
from glocal.zoo.layers.init import init_vit_linear
from glocal.zoo.layers.inputs import check_image_batch
from glocal.zoo.layers.norm import ChannelLayerNorm
from glocal.zoo.layers.padding import crop_to, pad_bottom_right, pad_to_multiple
from glocal.zoo.layers.windows import shifted_window_mask


def test_pad_to_multiple_reflects_and_falls_back_to_replicate():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    y, size = pad_to_multiple(x, 4)
    assert size == (5, 7) and y.shape == (1, 2, 8, 8)
    assert torch.equal(y, F.pad(x, (0, 1, 0, 3), mode="reflect"))
    z, _ = pad_to_multiple(x, 4, min_size=16)  # pads reach past the side: replicate
    assert z.shape == (1, 2, 16, 16) and torch.equal(z, F.pad(x, (0, 9, 0, 11), mode="replicate"))
    assert pad_to_multiple(x, 1)[0] is x and pad_bottom_right(x, 0, 0) is x
    assert torch.equal(pad_bottom_right(x, 2, 1, mode="constant")[..., 5:, :], torch.zeros(1, 2, 2, 8))
    assert torch.equal(crop_to(y, size), x)


def test_channel_layer_norm_keys_function_and_layout():
    x = torch.randn(2, 6, 5, 4)
    body, norm = ChannelLayerNorm(6), ChannelLayerNorm(6, eps=1e-6, attr="norm")
    assert list(body.state_dict()) == ["body.weight", "body.bias"]
    assert list(norm.state_dict()) == ["norm.weight", "norm.bias"]
    with torch.no_grad():
        body.body.weight.uniform_()
        body.body.bias.uniform_()
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), body.body.weight, body.body.bias, 1e-5).permute(0, 3, 1, 2)
    out = body(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert out.is_contiguous()  # NCHW for the convolutions after it


@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.rand(1, 4, 8, 8), "image"])
def test_check_image_batch_raises_one_line(bad):
    with pytest.raises(InputError, match=r"^Net expects an \(N, 3, H, W\) image tensor in \[0, 1\], got "):
        check_image_batch(bad, 3, "Net")
    assert issubclass(InputError, ValueError)
    check_image_batch(torch.rand(2, 3, 1, 1), 3, "Net")


def test_init_vit_linear_touches_linear_layers_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Conv2d(3, 3, 3))
    conv = model[2].weight.detach().clone()
    model.apply(init_vit_linear)
    w = model[0].weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001  # timm trunc_normal_(std=.02)
    assert torch.equal(model[0].bias, torch.zeros(256)) and torch.equal(model[1].weight, torch.ones(256))
    assert torch.equal(model[2].weight, conv)


def test_shifted_window_mask_on_a_rectangular_window():
    mask = shifted_window_mask(4, 6, (2, 3), (1, 1))
    assert mask.shape == (4, 6, 6) and mask.dtype == torch.float32
    # the last window row/column holds wrapped-around tokens: region labels 3*row_region + col_region
    rows, cols = [0, 0, 1, 2], [0, 0, 0, 1, 1, 2]
    labels = torch.tensor([[3 * rows[i] + cols[j] for j in range(6)] for i in range(4)])
    last = labels[2:4, 3:6].flatten()
    want = torch.where(last[:, None] == last[None, :], 0.0, -100.0)
    assert torch.equal(mask[3], want) and torch.equal(mask[0], torch.zeros(6, 6))
