"""``night``: rain at night, streaks lit by lamps and headlights against a dark scene.

References: background.md section 5 (f); Garg and Nayar (IJCV 2007: a drop's
brightness is the light it refracts, so streaks are bright only near light sources);
night-rain data sets that render lit streaks and glare (e.g. the GTAV-NightRain set of
Zhang et al., 2022). The clean scene itself changes (the ground truth is the dark
scene, not the day-time source):

- darkening: ``B' = exposure x B ** gamma`` (exposure 0.02-0.15, gamma 1.0-1.6), plus
  2-6 light sources: street lamps high in the frame (sodium orange or LED white) and
  headlight pairs low in it, each a saturated core with a lens bloom halo;
- rain: streak layers (:class:`~.streak_layers.StreakLayers`) whose brightness is the
  light reaching them, ``ambient + sum_j L_j / (1 + (r_j / reach_j)^2)``, so streaks
  shine near lamps and vanish in the dark, plus a rain glare: the lamps' halo grows
  (light scattered by the drops between lamp and camera), ``glare`` x a wide halo.

Both are added in linear light. The scene's darkening applies to luminance exactly as
to RGB only for gamma 1; for the event simulator (which sees luminance) the error of
applying the gamma to luminance instead of per channel is small and the same for the
rainy and the clean level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derain_ros.sim.families.base import (
    FamilyParams,
    RainFamily,
    check_ranges,
    expand,
    lerp,
    per_channel,
)
from derain_ros.sim.families.streak_layers import (
    StreakLayerParams,
    StreakLayers,
    sample_streak_params,
)

__all__ = ["NightParams", "NightRain"]

_SODIUM = np.array([1.0, 0.55, 0.2], np.float32)
_LED = np.array([0.95, 0.97, 1.0], np.float32)
_R_MAX = np.float32(2.0)


@dataclass(frozen=True, slots=True)
class NightParams(FamilyParams):
    """``exposure``, ``gamma``: the darkening; ``lamps``: street lamps, ``headlights``:
    headlight pairs; ``lamp_power``: peak linear level of a lamp's halo; ``reach``:
    how far a lamp lights the rain (fraction of the width); ``ambient``: light on the
    rain far from lamps; ``glare``: the rain's extra halo; ``streaks``: the layers."""

    exposure: float = 0.1
    gamma: float = 1.3
    lamps: int = 2
    headlights: int = 1
    lamp_power: float = 3.0
    reach: float = 0.15
    ambient: float = 0.05
    glare: float = 0.3
    streaks: StreakLayerParams = field(default_factory=StreakLayerParams)

    def __post_init__(self) -> None:
        check_ranges(self, {"exposure": (0.005, 1.0), "gamma": (0.5, 3.0), "lamps": (0, 10),
                            "headlights": (0, 5), "lamp_power": (0.1, 20.0),
                            "reach": (0.01, 1.0), "ambient": (0.0, 1.0),
                            "glare": (0.0, 2.0)})


class NightRain(RainFamily[NightParams]):
    """Dark scene, lamps with bloom, lamp-lit streaks and rain glare (see the module)."""

    name = "night"
    references = ("background.md section 5 (f); Garg & Nayar IJCV 2007; "
                  "GTAV-NightRain (Zhang et al. 2022)")
    Params = NightParams

    def __init__(self, params: NightParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        rng: np.random.Generator = kw["rng"]
        w, h = self.width, self.height
        p = params
        self.layers = StreakLayers(p.streaks, w, h, self.exposure_s, rng)
        lights = []  # (x, y, colour, core radius px, power)
        for _ in range(p.lamps):
            colour = _SODIUM if rng.random() < 0.5 else _LED
            lights.append((rng.uniform(0, w), h * rng.uniform(0.02, 0.45), colour,
                           w * rng.uniform(0.006, 0.015), p.lamp_power * rng.uniform(0.5, 1.2)))
        for _ in range(p.headlights):
            x, y = rng.uniform(0.1 * w, 0.9 * w), h * rng.uniform(0.5, 0.85)
            gap = w * rng.uniform(0.04, 0.12) * (y / h)
            power = p.lamp_power * rng.uniform(0.7, 1.3)
            for side in (-0.5, 0.5):
                lights.append((x + side * gap, y, _LED, w * rng.uniform(0.005, 0.01), power))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._bloom = np.zeros((h, w, 3), np.float32)   # core + lens bloom (clean scene)
        self._light = np.zeros((h, w), np.float32)      # light reaching the rain
        self._halo = np.zeros((h, w, 3), np.float32)    # rain glare
        reach = p.reach * w
        for x, y, colour, core, power in lights:
            r2 = (xs - x) ** 2 + (ys - y) ** 2
            shape = 4.0 * np.exp(-r2 / (2 * core**2)) + 1.0 / (1.0 + r2 / (3 * core) ** 2) ** 1.5
            self._bloom += np.float32(power) * shape[..., None] * colour
            self._light += np.float32(0.15 * power) / (1.0 + r2 / reach**2)
            self._halo += (np.float32(power) / (1.0 + r2 / (0.6 * reach) ** 2))[..., None] * colour
        self._white = np.ones(3, np.float32)

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> NightParams:
        u = float(rng.random()) if intensity is None else float(intensity)
        return NightParams(
            exposure=float(rng.uniform(0.02, 0.15)), gamma=float(rng.uniform(1.0, 1.6)),
            lamps=int(rng.integers(1, 5)), headlights=int(rng.integers(0, 3)),
            lamp_power=float(rng.uniform(1.0, 3.0)), reach=float(rng.uniform(0.04, 0.15)),
            ambient=float(lerp(u, 0.004, 0.02) * rng.uniform(0.7, 1.3)),
            glare=float(lerp(u, 0.005, 0.08) * rng.uniform(0.7, 1.3)),
            streaks=sample_streak_params(rng, lerp(u, 0.25, 0.8)))

    def _colour(self, field: np.ndarray, like: np.ndarray) -> np.ndarray:
        """An H x W x 3 light field shaped like ``like`` (luma for H x W)."""
        if like.ndim == 2:
            return field @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        return field[..., : like.shape[2]] if like.shape[2] == 3 else (
            field @ np.array([0.2126, 0.7152, 0.0722], np.float32))[..., None]

    def scene(self, linear: np.ndarray, t_s: float) -> np.ndarray:
        p = self.params
        dark = np.float32(p.exposure) * np.power(np.maximum(linear, 0.0), np.float32(p.gamma))
        return (dark + self._colour(self._bloom, linear)).astype(np.float32)

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        p = self.params
        # A drop is at most a few times as bright as the light on it (the short sub-step
        # windows would otherwise give the dashes an unbounded peak).
        r = np.minimum(self.layers.layer(t0_s, t1_s), _R_MAX)
        lit = r * (np.float32(p.ambient) + self._light)
        rain = expand(lit, clean) * per_channel(clean, self._white)
        glare = np.float32(p.glare) * self._colour(self._halo, clean)
        return (clean + rain + glare).astype(np.float32)
