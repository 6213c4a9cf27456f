"""``particles``: the 3-D drop renderer of :mod:`derain_ros.sim.rain` as a family.

References: Garg and Nayar, "Photorealistic rendering of rain streaks" (SIGGRAPH 2006)
and "Vision and rain" (IJCV 2007) for the photometry (a drop is a bright, nearly
transparent streak, ``(1 - c) B + c E``); Marshall and Palmer (1948) for the drop sizes;
Atlas et al. (1973) for the fall speeds; background.md section 4 ("rain physics") and
section 5 (a). Streak length follows speed x exposure x focal length / depth, so the
motion blur depends on the exposure; the camera's own rotation adds ``pan_px_s`` to
every drop.

Randomised per clip: rain rate 10-300 mm/h (log-uniform around the intensity),
density scale 1.5-3, wind -5..5 m/s (spread 0.1-0.4), nearest drop 0.2-1 m, farthest
4-15 m, drop radiance 8-16 x the scene's mean luminance, camera pan -40..40 px/s
horizontally and -15..15 px/s vertically (30 % of clips: a still camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from derain_ros.sim.families.base import FamilyParams, RainFamily, check_ranges, lerp
from derain_ros.sim.rain import CameraGeometry, RainConfig, RainField, composite

__all__ = ["ParticleParams", "ParticleRain"]


@dataclass(frozen=True, slots=True)
class ParticleParams(FamilyParams):
    """The randomised fields of :class:`~derain_ros.sim.rain.RainConfig` (same units)."""

    rate_mm_h: float = 25.0
    density_scale: float = 2.0
    wind_m_s: float = 1.5
    wind_spread: float = 0.2
    depth_m: tuple[float, float] = (0.3, 8.0)
    radiance: float = 10.0
    pan_px_s: tuple[float, float] = (0.0, 0.0)
    aperture_mm: float = 3.0

    def __post_init__(self) -> None:
        check_ranges(self, {"rate_mm_h": (0.0, 300.0), "density_scale": (0.0, 5.0),
                            "wind_m_s": (-10.0, 10.0), "wind_spread": (0.0, 1.0),
                            "depth_m": (0.05, 50.0), "radiance": (0.5, 30.0),
                            "pan_px_s": (-200.0, 200.0), "aperture_mm": (0.0, 10.0)})

    def rain_config(self) -> RainConfig:
        """The :class:`RainConfig` these parameters make."""
        return RainConfig(rate_mm_h=self.rate_mm_h, density_scale=self.density_scale,
                          wind_m_s=self.wind_m_s, wind_spread=self.wind_spread,
                          depth_m=self.depth_m, radiance=self.radiance,
                          pan_px_s=self.pan_px_s)


class ParticleRain(RainFamily[ParticleParams]):
    """3-D drops with motion blur (see :mod:`derain_ros.sim.rain`); ``field`` renders them."""

    name = "particles"
    references = ("Garg & Nayar SIGGRAPH 2006 / IJCV 2007; Marshall & Palmer 1948; "
                  "Atlas et al. 1973; background.md sections 4 and 5 (a)")
    Params = ParticleParams

    def __init__(self, params: ParticleParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.camera = CameraGeometry(self.width, self.height, self.focal_px,
                                     params.aperture_mm, 10.0)
        self.field = RainField.sample(params.rain_config(), self.camera, 1.0 / self.fps,
                                      kw["rng"])

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> ParticleParams:
        u = float(rng.random()) if intensity is None else float(intensity)
        rate = lerp(float(np.clip(u + rng.normal(0.0, 0.08), 0.0, 1.0)), 10.0, 300.0, log=True)
        near = float(rng.uniform(0.2, 1.0))
        still = rng.random() < 0.3
        pan = (0.0, 0.0) if still else (float(rng.uniform(-40, 40)), float(rng.uniform(-15, 15)))
        return ParticleParams(
            rate_mm_h=rate, density_scale=float(rng.uniform(1.5, 3.0)),
            wind_m_s=float(rng.uniform(-5.0, 5.0)), wind_spread=float(rng.uniform(0.1, 0.4)),
            depth_m=(near, float(rng.uniform(4.0, 15.0))),
            radiance=float(lerp(u, 8.0, 16.0) * rng.uniform(0.8, 1.2)), pan_px_s=pan,
            aperture_mm=float(rng.uniform(0.0, 5.0)))

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        cov, rad = self.field.render(t0_s, t1_s)
        return composite(clean, cov, rad, environment)

    @property
    def n_drops(self) -> int:
        return self.field.n_drops
