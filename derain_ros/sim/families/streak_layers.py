"""``streak_layers``: texture rain-streak layers, in the manner of Rain100H / Rain800.

References: Yang et al., "Deep joint rain detection and removal from a single image"
(CVPR 2017; Rain100L/H: sparse noise, motion blur along a direction, several layers);
Zhang, Sindagi and Patel, "Image de-raining using a conditional GAN" (Rain800, 2017/2019);
the shared background notes (``background.md`` section 5 (b)). This is a different
generator from :mod:`~derain_ros.sim.families.particles`: streaks are a 2-D texture
with no depth, blended in a display-like domain by one of four rules, as the image
benchmarks render them.

Model, per layer ``i`` (1-4 layers per clip):

- a periodic seed texture (``TEX_ROWS`` x the frame height tall, a little wider than
  the frame): sparse points, ``density`` streaks per 10^4 px^2, each blurred to the
  layer's width (a Gaussian with sigma = width / 2.5, plus the layer's extra blur);
- the layer falls along its direction ``angle`` (degrees from vertical, + to the right;
  all layers share the clip's direction within a few degrees) at ``speed`` px/s, so
  at time t the layer is the texture translated by ``speed * t`` (wrapping around);
- over a window ``[t0, t1]`` it is the seeds averaged over their travel: the texture
  correlated with a line of length ``speed * (t1 - t0)`` (a streak is the path of a
  drop during the window, as in a real exposure). The frame's exposure gives streaks
  of the layer's ``length`` (10-80 px at 1/fps; the speed is ``length / exposure``,
  kept within 150-4000 px/s); a short event sub-step gives short bright dashes of the
  same drops, so events fire along every streak's path, not only at its ends;
- brightness: a streak's peak over the exposure is the layer's ``intensity`` (display
  units, 0-1); the seeds carry the matching instantaneous brightness.

Layers add up to ``R``; the clip blends ``R`` with the background ``B`` in the domain
``P = sqrt(B)`` (gamma 2, close to how sRGB images are composed) by one rule:
``add`` ``P + R``; ``screen`` ``1 - (1 - P)(1 - R)``; ``alpha`` ``P + a (c - P)`` with
opacity ``a = min(R / c, 1)`` and streak colour ``c``; ``max`` ``max(P, R)``. The result
saturates at ``P = 1.2`` (a bright drop clips, for the frame and for the events alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from derain_ros.sim.errors import SimConfigError
from derain_ros.sim.families.base import (
    FamilyParams,
    RainFamily,
    TimeCache,
    check_ranges,
    expand,
    lerp,
    line_kernel,
    loguniform,
    translate_wrap,
    wrap_filter,
)

__all__ = ["BLENDS", "StreakLayerParams", "StreakLayerRain", "StreakLayers"]

BLENDS = ("add", "screen", "alpha", "max")
TEX_ROWS = 4          # texture height in frame heights: a layer repeats after that travel
_MIN_SPEED, _MAX_SPEED = 150.0, 4000.0
_P_MAX = np.float32(1.2)


@dataclass(frozen=True, slots=True)
class StreakLayerParams(FamilyParams):
    """One tuple entry per layer; ``blend`` and ``color`` are per clip.

    ``angles_deg`` from vertical (+ right, within +-35); ``widths_px`` 1-5;
    ``lengths_px`` 10-80 (streak length over a 1/fps exposure); ``blurs_px`` 0-2 (extra
    Gaussian sigma); ``intensities`` 0.05-1 (peak of a streak, display units);
    ``densities`` 0.2-80 (streaks per 10^4 px^2); ``blend`` one of :data:`BLENDS`;
    ``color`` 0.5-1 (the streaks' display level for ``alpha``).
    """

    angles_deg: tuple[float, ...] = (10.0,)
    widths_px: tuple[float, ...] = (2.0,)
    lengths_px: tuple[float, ...] = (40.0,)
    blurs_px: tuple[float, ...] = (0.5,)
    intensities: tuple[float, ...] = (0.5,)
    densities: tuple[float, ...] = (10.0,)
    blend: str = "screen"
    color: float = 0.9

    def __post_init__(self) -> None:
        n = len(self.angles_deg)
        lens = {len(v) for v in (self.widths_px, self.lengths_px, self.blurs_px,
                                 self.intensities, self.densities)}
        if not 1 <= n <= 8 or lens != {n}:
            raise SimConfigError(f"streak layers: 1-8 layers, one value per layer in every "
                                 f"tuple (got {self})")
        if self.blend not in BLENDS:
            raise SimConfigError(f"unknown blend {self.blend!r}; known: {', '.join(BLENDS)}")
        check_ranges(self, {"angles_deg": (-35.0, 35.0), "widths_px": (1.0, 5.0),
                            "lengths_px": (1.0, 120.0), "blurs_px": (0.0, 2.0),
                            "intensities": (0.0, 1.0), "densities": (0.0, 80.0),
                            "color": (0.5, 1.0)})

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.angles_deg)


def sample_streak_params(rng: np.random.Generator, intensity: float | None,
                         *, max_layers: int = 4) -> StreakLayerParams:
    """Random layers: drizzle (few, faint, thin) .. downpour (many, bright, dense)."""
    u = float(rng.random()) if intensity is None else float(intensity)
    n = int(rng.integers(1, max_layers + 1))
    base = float(rng.uniform(-25.0, 25.0))
    angles = tuple(float(np.clip(base + rng.normal(0.0, 3.0), -35.0, 35.0)) for _ in range(n))
    lengths = tuple(loguniform(rng, 10.0, 80.0) for _ in range(n))
    # Longer (nearer) streaks are also wider: width grows with length, with spread.
    widths = tuple(float(np.clip(1.0 + 4.0 * ((length - 10.0) / 70.0) ** 0.8
                                 * rng.uniform(0.5, 1.3), 1.0, 5.0)) for length in lengths)
    blurs = tuple(float(rng.uniform(0.0, 1.5)) for _ in range(n))
    level = lerp(u, 0.4, 0.65)
    intensities = tuple(float(np.clip(level * rng.uniform(0.6, 1.25), 0.05, 1.0))
                        for _ in range(n))
    # The share of the frame the streaks cover sets how heavy the rain looks; the count
    # per area follows from each layer's streak size.
    coverage = lerp(u, 0.012, 0.1, log=True)
    shares = rng.dirichlet(np.full(n, 2.0))
    densities = tuple(float(np.clip(coverage * s * 1e4 / (length * max(width, 1.5)), 0.2, 80.0))
                      for s, length, width in zip(shares, lengths, widths, strict=True))
    blend = BLENDS[int(rng.integers(len(BLENDS)))]
    if blend == "max":  # a streak darker than the background vanishes: brighter ones
        intensities = tuple(min(1.0, 1.4 * v) for v in intensities)
    return StreakLayerParams(
        angles_deg=angles, widths_px=widths, lengths_px=lengths, blurs_px=blurs,
        intensities=intensities, densities=densities, blend=blend,
        color=float(rng.uniform(0.7, 1.0)))


class StreakLayers:
    """The moving layers of one clip: ``layer(t0, t1)`` is ``R`` (H x W, display units).

    Shared by the families that need streaks (``streak_layers``, ``veil``, ``night``).
    """

    def __init__(self, params: StreakLayerParams, width: int, height: int,
                 exposure_s: float, rng: np.random.Generator) -> None:
        self.params = params
        self.width, self.height = width, height
        th, tw = TEX_ROWS * height, width + 32
        self._angles = [math.radians(a) for a in params.angles_deg]
        self._speeds = [float(np.clip(length / exposure_s, _MIN_SPEED, _MAX_SPEED))
                        for length in params.lengths_px]
        self._seeds: list[np.ndarray] = []
        self._offsets = []
        for i in range(params.n_layers):
            sigma = math.hypot(params.widths_px[i] / 2.5, params.blurs_px[i])
            n = int(rng.poisson(params.densities[i] * th * tw / 1e4))
            tex: np.ndarray = np.zeros((th, tw), np.float32)
            ys, xs = rng.integers(0, th, n), rng.integers(0, tw, n)
            amp = rng.uniform(0.6, 1.0, n).astype(np.float32)
            np.add.at(tex, (ys, xs), amp)
            r = max(1, math.ceil(3.0 * sigma))
            g = cv2.getGaussianKernel(2 * r + 1, sigma).astype(np.float32)
            blob = g @ g.T
            tex = wrap_filter(tex, blob) / float(blob.max())
            # Peak of a streak over the exposure ~ amp * sqrt(2 pi) sigma / length: the
            # seeds carry the instantaneous brightness that gives ``intensity`` there.
            travel = self._speeds[i] * exposure_s
            gain = params.intensities[i] * max(1.0, travel / (math.sqrt(2 * math.pi) * sigma))
            self._seeds.append(tex * np.float32(gain))
            self._offsets.append((float(rng.uniform(0, tw)), float(rng.uniform(0, th))))
        self._cache = TimeCache()

    def _textures(self, window_s: float) -> list[np.ndarray]:
        key = round(window_s * 1e7)

        def make() -> list[np.ndarray]:
            return [wrap_filter(seed, line_kernel(v * window_s, a))
                    for seed, v, a in zip(self._seeds, self._speeds, self._angles, strict=True)]
        return self._cache.get(key, make)

    def layer(self, t0_s: float, t1_s: float) -> np.ndarray:
        """``R`` over ``[t0_s, t1_s]``: the layers' sum (H x W float32, display units)."""
        window = max(t1_s - t0_s, 1e-6)
        tm = 0.5 * (t0_s + t1_s)
        out = np.zeros((self.height, self.width), np.float32)
        for tex, v, a, (ox, oy) in zip(self._textures(window), self._speeds, self._angles,
                                       self._offsets, strict=True):
            # Content at screen (x, y) at time t came from texture (x - vx t, y - vy t).
            out += translate_wrap(tex, ox - v * math.sin(a) * tm, oy - v * math.cos(a) * tm,
                                  self.width, self.height)
        return out

    def blend(self, clean: np.ndarray, r: np.ndarray, mode: str, color: float) -> np.ndarray:
        """``clean`` (linear) with ``r`` blended by ``mode`` in the gamma-2 domain."""
        p = np.sqrt(np.maximum(clean, 0.0))
        rr = expand(r, clean)
        if mode == "add":
            p = p + rr
        elif mode == "screen":
            p = 1.0 - (1.0 - np.minimum(p, 1.0)) * (1.0 - np.minimum(rr, 1.0))
        elif mode == "alpha":
            c = np.float32(color)
            a = np.minimum(rr / c, 1.0)
            p = p + a * (c - p)
        else:
            p = np.maximum(p, rr)
        p = np.minimum(p, _P_MAX)
        return (p * p).astype(np.float32)


class StreakLayerRain(RainFamily[StreakLayerParams]):
    """Texture streak layers blended by add / screen / alpha / max (see the module)."""

    name = "streak_layers"
    references = ("Yang et al. CVPR 2017 (Rain100L/H); Zhang et al. 2019 (Rain800); "
                  "background.md section 5 (b)")
    Params = StreakLayerParams

    def __init__(self, params: StreakLayerParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.layers = StreakLayers(params, self.width, self.height, self.exposure_s, kw["rng"])

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> StreakLayerParams:
        return sample_streak_params(rng, intensity)

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        p = self.params
        return self.layers.blend(clean, self.layers.layer(t0_s, t1_s), p.blend, p.color)

    @property
    def n_drops(self) -> int:
        return 0
