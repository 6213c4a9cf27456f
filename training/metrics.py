"""PSNR and SSIM in torch, for training losses, validation and the quality benchmark.

Why hand-written: the loss needs a differentiable SSIM on batches of tensors, and
validation must score exactly what the loss optimises; scikit-image works on numpy
one image at a time and is not differentiable. The definition follows Wang et al.
(2004): an 11x11 Gaussian window with sigma 1.5, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``
with data range ``L = 1``, computed per channel ("valid" window positions only, as
scikit-image does with ``gaussian_weights=True``) and averaged over channels and pixels.
PSNR is ``10 log10(1 / MSE)`` per image for images in [0, 1].

This module will move to a shared place (``derain_ros/eval/metrics.py``) once the
evaluation package exists; until then evaluation code may import it from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_window", "psnr", "ssim"]

#: SSIM window size (px) and Gaussian sigma (px).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    ) -> Tensor:
    """A normalised 1-D Gaussian of ``size`` taps."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter of ``[N, C, H, W]`` per channel."""
    c = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Structural similarity of ``[N, C, H, W]`` images (differentiable).

    Args:
        x, y: images in ``[0, data_range]``; H and W must be at least the window (11 px).
        reduction: ``"mean"`` (one number) or ``"none"`` (one value per image).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got "
                         f"{list(x.shape)} and {list(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW} px, got {list(x.shape[-2:])}")
    x, y = x.float(), y.float()
    g = gaussian_window(dtype=x.dtype, device=x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    per_image = s.flatten(1).mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image


def psnr(x: Tensor, y: Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB of ``[N, C, H, W]`` images, per image then averaged.

    An exact match gives +inf for that image (as scikit-image does).
    """
    if x.shape != y.shape:
        raise ValueError(
            f"psnr needs tensors of one shape, got {list(x.shape)} and {list(y.shape)}")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)
    per_image = 10 * torch.log10(data_range**2 / mse)
    return per_image.mean() if reduction == "mean" else per_image
