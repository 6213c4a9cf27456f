"""Loss functions and metrics on toy inputs: finite, sensible, differentiable."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from derain_ros.eval.metrics import psnr, ssim
from derain_training.losses import (
    CONTRAST_TERMS,
    NonLocalContrast,
    PatchDiscriminator,
    charbonnier,
    cross_modal_contrastive,
    hinge_d_loss,
    hinge_g_loss,
    kl_rain_prior,
    reconstruction_loss,
    ssim_loss,
)


def test_ssim_and_psnr_match_scikit_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    a, b = x[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy()
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert ssim(x, y).item() == pytest.approx(ref, abs=1e-4)
    assert psnr(x, y).item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0),
                                              abs=1e-3)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_pixel_losses() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert charbonnier(x, x, eps=1e-3).item() == pytest.approx(1e-3, rel=1e-3)
    assert charbonnier(x, x + 0.5).item() == pytest.approx(0.5, rel=1e-3)
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    rain = torch.rand_like(x) * 0.1
    assert reconstruction_loss(rain, x, x + rain).item() == pytest.approx(0.0, abs=1e-6)
    assert reconstruction_loss(rain, x, x).item() > 0.01


def _feats(aligned: bool) -> list[SimpleNamespace]:
    g = torch.Generator().manual_seed(1)
    out = []
    for c, s in ((8, 16), (12, 8), (16, 4)):
        rain = torch.rand(2, c, s, s, generator=g)
        bg = torch.rand(2, c, s, s, generator=g)
        if aligned:  # rain on the first half of channels, background on the second
            rain[:, c // 2:] = 0
            bg[:, : c // 2] = 0
        out.append(SimpleNamespace(frame_rain=rain, event_rain=rain.clone() if aligned else bg,
                                   frame_background=bg, event_background=bg.clone()))
    return out


def test_cross_modal_contrast_is_lower_when_features_align() -> None:
    good, bad = cross_modal_contrastive(_feats(True)), cross_modal_contrastive(_feats(False))
    assert set(good) == set(CONTRAST_TERMS)
    for name in CONTRAST_TERMS:
        assert torch.isfinite(good[name]) and torch.isfinite(bad[name])
        assert good[name].item() < bad[name].item() - 0.1, name
        assert good[name].item() == pytest.approx(0.0, abs=1e-5)


def test_nlcl_prefers_self_similar_background_distinct_from_rain() -> None:
    torch.manual_seed(0)
    nl = NonLocalContrast(3, anchors=8, negatives=32, dim=32, hidden=32)
    g = torch.Generator().manual_seed(0)
    _yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    bg = (0.5 + 0.3 * torch.sin(xx / 3)).expand(2, 3, 64, 64).contiguous()
    rain = torch.zeros(2, 3, 64, 64)
    rain[..., ::7] = 0.8  # vertical streaks
    distinct = nl(bg, rain, g)[0]
    same = nl(bg, bg.clone(), torch.Generator().manual_seed(0))[0]
    assert torch.isfinite(distinct) and torch.isfinite(same)
    # Negatives identical to the positives' kind: InfoNCE near log(1 + negatives).
    assert same.item() > distinct.item()
    assert same.item() > 0.5 * np.log(33)
    # Trainable: gradients reach the projection head and the images.
    bg_var = bg.clone().requires_grad_(True)
    nl(bg_var, rain, g)[0].backward()
    assert nl.proj[0].weight.grad is not None and bg_var.grad is not None
    # A crop too small for the window gives zero, not an error.
    assert nl(bg[..., :16, :16], rain[..., :16, :16], g)[0].item() == 0.0


def test_hinge_gan_losses() -> None:
    d = PatchDiscriminator(3, width=8, layers=3)
    scores = d(torch.rand(2, 3, 32, 32))
    assert scores.shape == (2, 1, 4, 4)
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert hinge_d_loss(real, fake).item() == 0.0  # confident and right
    assert hinge_d_loss(fake, real).item() == pytest.approx(6.0)
    assert hinge_g_loss(fake).item() == pytest.approx(2.0)


def test_kl_rain_prior() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 0.2
    same = torch.rand(2, 3, 32, 32, generator=g) * 0.2  # same distribution, other pixels
    heavy = torch.rand(2, 3, 32, 32, generator=g) * 0.9
    assert kl_rain_prior(a, same).item() < 0.02
    assert kl_rain_prior(a, heavy).item() > 0.2
    a.requires_grad_(True)
    kl_rain_prior(a, heavy).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
