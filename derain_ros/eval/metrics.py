"""PSNR and SSIM: the one definition of full-reference quality in the project.

Used by evaluation (per-frame scores of a replayed bag), by the training package
(validation, and the SSIM loss, which must be differentiable) and by benchmarks, so
that every number in a report, a training log and a table means the same thing.

Why hand-written rather than scikit-image: the loss needs a differentiable SSIM on
batches of tensors, and validation must score exactly what the loss optimises;
scikit-image works on numpy one image at a time. The definition matches scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` (Wang et al. 2004):

- images are RGB (or grey) in ``[0, data_range]`` with ``data_range = 1.0`` by default;
- SSIM: an 11 x 11 Gaussian window with sigma 1.5 px, ``C1 = (0.01 L)^2``,
  ``C2 = (0.03 L)^2``, computed per channel at the "valid" window positions only (no
  border padding, as scikit-image crops its border) and averaged over channels and
  pixels;
- PSNR: ``10 log10(L^2 / MSE)`` in dB per image, MSE over all pixels and channels; an
  exact match gives ``+inf`` (as scikit-image does).

Two layers: :func:`psnr` / :func:`ssim` take ``[N, C, H, W]`` tensors (batched,
differentiable); :func:`image_psnr` / :func:`image_ssim` take one ``H x W`` or
``H x W x C`` numpy image (float in [0, 1], or uint8/uint16 scaled by their maximum)
and return a float. The SSIM formula is written once (:func:`_ssim_map`, plain
arithmetic that numpy and torch share); only the Gaussian blur has two back ends:
grouped ``conv2d`` for tensors, OpenCV's separable filter in float64 for numpy (about
30x faster than torch's CPU convolution at camera resolutions, which matters when a
report scores every frame against several baselines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "as_float_image",
    "gaussian_window",
    "image_psnr",
    "image_ssim",
    "latency_summary",
    "psnr",
    "ssim",
]

#: SSIM window size (px) and Gaussian sigma (px).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    ) -> Tensor:
    """A normalised 1-D Gaussian of ``size`` taps, ``sigma`` in px."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter of ``[N, C, H, W]``, each channel on its own."""
    c = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _ssim_map(x: Any, y: Any, blur: Callable[[Any], Any], data_range: float) -> Any:
    """The SSIM map at the valid window positions (numpy arrays or tensors alike)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Structural similarity of ``[N, C, H, W]`` images (differentiable).

    Args:
        x, y: images in ``[0, data_range]``; H and W must be at least the window (11 px).
        data_range: the value range L of the images (1.0 for [0, 1]).
        reduction: ``"mean"`` (one number) or ``"none"`` (one value per image).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got "
                         f"{list(x.shape)} and {list(y.shape)}")
    _check_size(x.shape[-2:])
    compute = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    x, y = x.to(compute), y.to(compute)
    g = gaussian_window(dtype=compute, device=x.device)
    s = _ssim_map(x, y, lambda t: _blur(t, g), data_range)
    return _reduce(s.flatten(1).mean(dim=1), reduction)


def _check_size(hw: Any) -> None:
    if min(hw) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW} px, got {list(hw)}")


def psnr(x: Tensor, y: Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB of ``[N, C, H, W]`` images, per image then averaged.

    An exact match gives +inf for that image (and for the mean).
    """
    if x.shape != y.shape:
        raise ValueError(
            f"psnr needs tensors of one shape, got {list(x.shape)} and {list(y.shape)}")
    compute = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    mse = (x.to(compute) - y.to(compute)).pow(2).flatten(1).mean(dim=1)
    per_image = 10 * torch.log10(data_range**2 / mse)
    return _reduce(per_image, reduction)


def as_float_image(image: np.ndarray) -> np.ndarray:
    """One image as float64 ``H x W x C`` in [0, 1] (uint8/uint16 divided by their max)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"an image must be H x W or H x W x C, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    return arr.astype(np.float64, copy=False)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = as_float_image(a), as_float_image(b)
    if fa.shape != fb.shape:
        raise ValueError(f"images differ in shape: {fa.shape} vs {fb.shape}")
    return fa, fb


def _cv_blur(image: np.ndarray) -> np.ndarray:
    """The same 'valid' Gaussian as :func:`_blur`, for H x W x C float64 arrays (OpenCV)."""
    g = gaussian_window(dtype=torch.float64).numpy()
    r = SSIM_WINDOW // 2
    out = cv2.sepFilter2D(image, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    out = out.reshape(image.shape)
    return out[r:image.shape[0] - r, r:image.shape[1] - r]


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of one image pair (data range 1.0, float64); ``inf`` for identical images."""
    fa, fb = _pair(a, b)
    mse = float(np.mean((fa - fb) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def image_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of one image pair (data range 1.0, channels averaged); 1.0 for identical images."""
    fa, fb = _pair(a, b)
    _check_size(fa.shape[:2])
    return float(_ssim_map(fa, fb, _cv_blur, 1.0).mean())


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99, mean, max and count of latencies in ms (empty dict for none)."""
    if not values_ms:
        return {}
    arr = np.asarray(values_ms, float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean()),
            "max": float(arr.max()), "n": int(arr.size)}
