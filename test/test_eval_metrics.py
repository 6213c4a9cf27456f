"""PSNR/SSIM (derain_ros.eval.metrics), NIQE (noref) and the median baseline: no ROS."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from derain_ros.eval.baselines import BASELINES, run_baseline, temporal_median
from derain_ros.eval.errors import NoReferenceError
from derain_ros.eval.metrics import image_psnr, image_ssim, psnr, ssim
from derain_ros.eval.noref import brisque_available, niqe


def _pair(seed: int = 0, shape=(48, 64, 3), sigma: float = 0.05):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0.0, sigma, shape), 0.0, 1.0)
    return a, b


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def test_identical_images_give_inf_and_one():
    a, _ = _pair()
    assert image_psnr(a, a) == math.inf
    assert image_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(float(psnr(_t(a), _t(a))))
    assert float(ssim(_t(a).float(), _t(a).float())) == pytest.approx(1.0, abs=1e-6)


def test_known_psnr_values():
    a = np.zeros((20, 30, 3))
    assert image_psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)     # MSE 0.01
    assert image_psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-9)    # MSE 1e-4
    # uint8 input is scaled by 255: a difference of 255 levels is MSE 1 -> 0 dB
    assert image_psnr(np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)) == 0.0
    # Gaussian noise of sigma 0.05 (unclipped) -> about 10 log10(1 / 0.0025) = 26.02 dB
    rng = np.random.default_rng(1)
    noisy = 0.5 + rng.normal(0, 0.05, (200, 200, 3))
    assert image_psnr(np.full_like(noisy, 0.5), noisy) == pytest.approx(26.02, abs=0.05)
    per_image = psnr(_t(a).repeat(2, 1, 1, 1), torch.cat([_t(a + 0.1), _t(a + 0.01)]),
                     reduction="none")
    assert per_image.tolist() == pytest.approx([20.0, 40.0], abs=1e-6)


@pytest.mark.parametrize("shape", [(48, 64, 3), (48, 64)])
def test_ssim_matches_scikit_image(shape):
    a, b = _pair(shape=shape)
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False,
                                channel_axis=-1 if len(shape) == 3 else None)
    assert image_ssim(a, b) == pytest.approx(ref, abs=1e-3)
    a3, b3 = (a, b) if a.ndim == 3 else (a[:, :, None], b[:, :, None])
    assert float(ssim(_t(a3).float(), _t(b3).float())) == pytest.approx(ref, abs=1e-3)


def test_ssim_is_differentiable_and_checks_shapes():
    a, b = _pair()
    x = _t(a).float().requires_grad_(True)
    (1 - ssim(x, _t(b).float())).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        image_ssim(a, b[:, :-1])
    with pytest.raises(ValueError):
        image_ssim(np.zeros((8, 8)), np.zeros((8, 8)))  # smaller than the 11 px window


def test_niqe_prefers_the_clean_image():
    clean = data.astronaut()[::2, ::2].astype(np.float64) / 255.0   # 256 x 256
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    blurred = np.stack([cv2.GaussianBlur(clean[:, :, c], (0, 0), 3)
                        for c in range(3)], axis=2)
    score = niqe(clean)
    assert 0 < score < niqe(noisy)
    assert score < niqe(blurred)
    assert niqe(data.astronaut()) == pytest.approx(niqe(data.astronaut() / 255.0), abs=1e-3)


def test_niqe_refuses_tiny_images_and_brisque_says_why():
    with pytest.raises(NoReferenceError, match="patches"):
        niqe(np.zeros((48, 64, 3)))
    ok, why = brisque_available()
    assert ok is False and "BRISQUE" in why


def test_median_baseline_removes_a_moving_streak():
    rng = np.random.default_rng(3)
    background = rng.random((32, 40, 3)).astype(np.float32)
    frames = []
    for k in range(7):  # a bright vertical streak, a different column in every frame
        f = background.copy()
        f[4:28, 3 + 5 * k] = 1.0
        frames.append(f)
    whole = temporal_median(frames)
    assert len(whole) == 7
    np.testing.assert_array_equal(whole[3], background)
    sliding = temporal_median(frames, 5)
    np.testing.assert_array_equal(sliding[3], background)
    assert image_psnr(frames[3], background) < 30 < image_psnr(sliding[3], background)
    assert set(BASELINES) >= {"rainy", "median_clip"}
    np.testing.assert_array_equal(run_baseline("rainy", frames)[2], frames[2])
    with pytest.raises(ValueError):
        temporal_median(frames, 4)
