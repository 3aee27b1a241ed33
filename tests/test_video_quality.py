"""UltraGen's video measures on tiny tensors: CLIP score per frame and temporal consistency against cosines,
HD-MSE on a signal with a known answer (and noise scoring high), HD-LPIPS with a stand-in distance, patches,
the Fréchet distance against its closed form for diagonal covariances, and HD-FVD end to end."""

from __future__ import annotations

import pytest
import torch

from glocal.benchmarks.metrics import video_quality as vq


def test_frame_clip_scores_and_temporal_consistency():
    class MeanColour(torch.nn.Module):  # a stand-in CLIP: image -> its mean colour; text -> a fixed colour
        def encode_image(self, x):
            assert x.shape[-2:] == (32, 32)
            return x.mean(dim=(2, 3))

        def encode_text(self, tokens):
            return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(tokens), 3)

    video = torch.full((3, 3, 40, 64), 0.5)
    video[1, 0] = 0.9  # a redder frame
    scores = vq.frame_clip_scores(video, "a red frame", MeanColour(), lambda texts: torch.zeros(len(texts), 4),
                                  size=32)  # token ids (one row per text), as open_clip's tokenizers return
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    for i, colour in ((0, torch.tensor([0.5, 0.5, 0.5])), (1, torch.tensor([0.9, 0.5, 0.5]))):
        v = (colour - mean) / std  # the frame's normalised mean colour; cosine with the text's (1, 0, 0)
        torch.testing.assert_close(scores[i], v[0] / v.norm())
    assert scores[1] > scores[0] and scores[2] == scores[0]
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(4, 8, generator=g)
    assert vq.temporal_consistency(frames[:1].repeat(5, 1)) == pytest.approx(1.0)
    assert vq.temporal_consistency(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least 2 frames"):
        vq.temporal_consistency(frames[:1])


def test_hd_mse_known_values_and_noise_scores_high():
    flat = torch.full((2, 3, 64, 64), 0.3)
    assert vq.hd_mse(flat) == pytest.approx(0.0, abs=1e-6)
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(2, 3, 64, 64)
    # every 2^k down-up copy of a one-pixel checkerboard is flat grey: error 127.5^2 per pixel at each scale
    assert vq.hd_mse(checker) == pytest.approx(3 * 127.5**2, rel=1e-3)
    smooth = torch.linspace(0, 1, 64).expand(2, 3, 64, 64)
    noisy = (smooth + 0.1 * torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert vq.hd_mse(noisy) > vq.hd_mse(smooth) + 1000  # noise (sigma 0.1) adds about 3 x 255^2 x 0.01
    with pytest.raises(ValueError, match="too small for 2\\^5"):
        vq.hd_mse(torch.zeros(1, 3, 16, 16))


def test_hd_lpips_sums_the_distance_over_scales():
    video = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))

    def l1(a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))

    want = sum(float(2 * (video - vq.down_up(video, k)).abs().mean()) for k in (3, 4, 5))
    assert vq.hd_lpips(video, l1) == pytest.approx(want, rel=1e-5)


def test_video_patches_are_native_resolution_tiles():
    video = torch.rand(5, 3, 50, 70)
    p = vq.video_patches(video, size=20)
    assert p.shape == (2 * 3, 5, 3, 20, 20)
    torch.testing.assert_close(p[4], video[..., 20:40, 20:40])  # row 1, column 1
    with pytest.raises(ValueError, match="larger than the image"):
        vq.video_patches(video)


def test_hd_fvd_end_to_end_with_a_stand_in_extractor():
    g = torch.Generator().manual_seed(3)
    real = [torch.rand(4, 3, 64, 96, generator=g) for _ in range(3)]

    def extractor(clips):  # (P, T, 3, s, s) -> (P, 6): per-channel mean and std over the clip
        return torch.cat([clips.mean(dim=(1, 3, 4)), clips.std(dim=(1, 3, 4))], dim=1)

    assert vq.hd_fvd(real, real, extractor, size=32) == pytest.approx(0.0, abs=1e-8)
    darker = [v * 0.5 for v in real]
    assert vq.hd_fvd(real, darker, extractor, size=32) > 0.05
