"""``veil``: heavy rain with accumulation and veil (Li et al., CVPR 2019).

Reference: Li, Cheong and Tan, "Heavy rain image restoration: integrating physics model
and conditional adversarial learning" (CVPR 2019): ``I = T (B + sum R_i) + (1 - T) A``,
with the transmission ``T = exp(-beta d)`` from the scene depth ``d`` and the
atmospheric light ``A``; background.md section 5 (c). Far streaks are too thin and too
many to resolve: they become the veil ("rain accumulation"), which lowers the contrast
of the whole frame, more so far away.

Here: ``R`` is a streak-layer rain (:class:`~.streak_layers.StreakLayers`, added in the
gamma-2 domain); the depth proxy is image-row based (a horizon row; far above it,
nearer towards the bottom) plus a smooth random field; ``T`` ranges from ``t_far``
(far, 0.55-0.996) to ``t_near`` (the bottom rows); ``A`` is ``airlight`` (1-2.5) times
the scene's mean luminance, capped at 0.9, slightly blue; the veil drifts sideways with
the wind (a slowly moving low-frequency modulation of ``1 - T`` of depth ``mist``), so
it changes a little over time, as real mist does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from derain_ros.sim.families.base import (
    FamilyParams,
    RainFamily,
    check_ranges,
    expand,
    lerp,
    per_channel,
    translate_wrap,
)
from derain_ros.sim.families.streak_layers import (
    StreakLayerParams,
    StreakLayers,
    sample_streak_params,
)

__all__ = ["VeilParams", "VeilRain"]


@dataclass(frozen=True, slots=True)
class VeilParams(FamilyParams):
    """``t_far``/``t_near``: transmission far (above the horizon) and at the bottom row;
    ``horizon``: horizon row as a fraction of the height; ``depth_noise``: relative
    amplitude of the smooth random depth; ``airlight``: A over the mean luminance;
    ``tint``: blue bias of A; ``mist``/``drift_px_s``: moving veil modulation;
    ``streaks``: the streak layers (drawn at a lighter intensity than their own family).
    """

    t_far: float = 0.5
    t_near: float = 0.85
    horizon: float = 0.45
    depth_noise: float = 0.2
    airlight: float = 2.0
    tint: float = 0.05
    mist: float = 0.1
    drift_px_s: float = 10.0
    streaks: StreakLayerParams = field(default_factory=StreakLayerParams)

    def __post_init__(self) -> None:
        check_ranges(self, {"t_far": (0.05, 1.0), "t_near": (0.05, 1.0),
                            "horizon": (0.0, 1.0), "depth_noise": (0.0, 0.5),
                            "airlight": (0.5, 5.0), "tint": (0.0, 0.3), "mist": (0.0, 0.5),
                            "drift_px_s": (-100.0, 100.0)})


class VeilRain(RainFamily[VeilParams]):
    """``I = T (B + R) + (1 - T) A`` with a row-based depth proxy (see the module)."""

    name = "veil"
    references = "Li, Cheong & Tan CVPR 2019 (heavy rain); background.md section 5 (c)"
    Params = VeilParams

    def __init__(self, params: VeilParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        rng: np.random.Generator = kw["rng"]
        w, h = self.width, self.height
        self.layers = StreakLayers(params.streaks, w, h, self.exposure_s, rng)
        rows = (np.arange(h, dtype=np.float32) + 0.5) / h
        # Depth proxy in [0, 1]: 1 (far) down to the horizon, then falling to 0 at the bottom.
        below = np.clip((rows - params.horizon) / max(1.0 - params.horizon, 1e-3), 0.0, 1.0)
        depth = np.broadcast_to((1.0 - below ** 0.7)[:, None], (h, w))
        noise = _smooth_noise(rng, h, w, scale=max(h, w) / 4.0)
        depth = np.clip(depth * (1.0 + params.depth_noise * noise), 0.0, 1.2)
        # T = exp(-beta d): d = 0 -> t_near, d = 1 -> t_far.
        lo, hi = math.log(params.t_near), math.log(params.t_far)
        self._t = np.exp(lo + (hi - lo) * depth).astype(np.float32)
        self._mist = _smooth_noise(rng, h, w + 64, scale=max(h, w) / 6.0, wrap=True)
        self._a_rgb = np.array([1.0 - params.tint, 1.0 - 0.3 * params.tint, 1.0], np.float32)

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> VeilParams:
        u = float(rng.random()) if intensity is None else float(intensity)
        # The veil lifts the dark parts most (sRGB is steep near black): 1 - T spans
        # 0.006 (a trace) to 0.4 (a thick veil), log-uniform with the intensity.
        haze = lerp(float(np.clip(u + rng.normal(0.0, 0.05), 0.0, 1.0)), 0.006, 0.4, log=True)
        return VeilParams(
            t_far=1.0 - haze, t_near=1.0 - haze * float(rng.uniform(0.1, 0.6)),
            horizon=float(rng.uniform(0.25, 0.6)), depth_noise=float(rng.uniform(0.05, 0.35)),
            airlight=float(rng.uniform(1.0, 2.5)), tint=float(rng.uniform(0.0, 0.12)),
            mist=float(rng.uniform(0.0, 0.08)), drift_px_s=float(rng.uniform(-30.0, 30.0)),
            streaks=_fainter(sample_streak_params(rng, 0.5 * u), lerp(u, 0.6, 1.0)))

    def transmission(self, t_s: float) -> np.ndarray:
        """``T`` (H x W float32) at ``t_s``: the static depth part times the drifting mist."""
        p = self.params
        if p.mist <= 0.0:
            return self._t
        m = translate_wrap(self._mist, -p.drift_px_s * t_s, 0.0, self.width, self.height)
        return np.clip(self._t * (1.0 - p.mist * np.clip(m, 0.0, 2.0)), 0.02, 1.0)

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        p = self.params
        streaked = self.layers.blend(clean, self.layers.layer(t0_s, t1_s), "add", 1.0)
        t = expand(self.transmission(0.5 * (t0_s + t1_s)), clean)
        a = np.float32(min(p.airlight * max(environment, 0.02), 0.9)) * per_channel(
            clean, self._a_rgb)
        return (t * streaked + (1.0 - t) * a).astype(np.float32)


def _fainter(streaks: StreakLayerParams, gain: float) -> StreakLayerParams:
    """The streaks at ``gain`` x their intensity and density (the veil carries the rest)."""
    return streaks.replace(intensities=tuple(gain * v for v in streaks.intensities),
                           densities=tuple(gain * v for v in streaks.densities))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float,
                  wrap: bool = False) -> np.ndarray:
    """A smooth random field (H x W float32), zero mean, unit std, features ~``scale`` px."""
    gh, gw = max(2, math.ceil(h / scale) + 1), max(2, math.ceil(w / scale) + 1)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    if wrap:  # periodic along x: the last coarse column repeats the first
        coarse[:, -1] = coarse[:, 0]
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)
