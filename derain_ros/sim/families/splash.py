"""``splash``: splashes from the road and spray from the vehicles ahead.

References: Garg and Nayar, "Vision and rain" (IJCV 2007: splashes and the visual
effects of rain near the ground); the spray/splash category of rain appearance in
the deraining surveys; background.md section 5 (e). Two parts, both in the lower part
of the frame (the road, below the ``ground`` row):

- splashes: a drop hitting the road throws a crown of 3-10 droplets up and out; each
  flies ballistically (``x = x0 + vx t``, ``y = y0 - vy t + g t^2 / 2``) until it falls
  back to the road (at most 0.35 s). Bright, short-lived streaks drawn with the
  particle photometry ``(1 - c) B + c E`` (``E`` = radiance x the scene's mean
  luminance), motion-blurred over each window. Splashes are born at ``rate_hz``
  (Poisson), nearer ones (lower in the frame) bigger and faster;
- spray plumes behind vehicles: 0-3 soft elliptical clouds low in the frame, drifting
  sideways with their vehicle, their texture rising; inside one the contrast falls
  (``I = (1 - m) B + m A``, ``A`` a bright grey), as behind a truck on a wet road.

Splashes are generated lazily per 0.1 s time bin from the clip's seed and the bin's
index, so any window at any time renders the same droplets, in any order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from derain_ros.sim.families.base import (
    FamilyParams,
    RainFamily,
    TimeCache,
    check_ranges,
    expand,
    lerp,
    translate_wrap,
)
from derain_ros.sim.families.veil import _smooth_noise
from derain_ros.sim.rain import _MAX_R, _deposit, composite

__all__ = ["SplashParams", "SplashRain"]

_BIN_S = 0.1
_MAX_LIFE_S = 0.35


@dataclass(frozen=True, slots=True)
class SplashParams(FamilyParams):
    """``ground``: top of the road as a fraction of the height; ``rate_hz``: splashes per
    second over the road; ``droplets``: per splash (mean); ``speed_px_s``: launch speed
    of the nearest splashes; ``radius_px``: droplet radius at the bottom row;
    ``radiance``: droplet brightness over the mean luminance; ``plumes``: spray clouds;
    ``plume_strength``: their peak opacity; ``spray_light``: their brightness over the
    mean luminance."""

    ground: float = 0.6
    rate_hz: float = 300.0
    droplets: float = 6.0
    speed_px_s: float = 120.0
    radius_px: float = 1.0
    radiance: float = 6.0
    plumes: int = 1
    plume_strength: float = 0.4
    spray_light: float = 2.0

    def __post_init__(self) -> None:
        check_ranges(self, {"ground": (0.2, 0.95), "rate_hz": (0.0, 20000.0),
                            "droplets": (1.0, 30.0), "speed_px_s": (5.0, 1000.0),
                            "radius_px": (0.2, 5.0), "radiance": (0.5, 30.0),
                            "plumes": (0, 6), "plume_strength": (0.0, 0.95),
                            "spray_light": (0.5, 5.0)})


@njit(cache=True, nogil=True)
def _splat_ballistic(x0: np.ndarray, y0: np.ndarray, vx: np.ndarray, vy: np.ndarray,
                     g: np.ndarray, tb: np.ndarray, life: np.ndarray, area: np.ndarray,
                     sigma: np.ndarray, radiance: np.ndarray, t0: float, t1: float,
                     cov: np.ndarray, rad: np.ndarray) -> None:
    """Each droplet's path during the part of [t0, t1] it is alive, as coverage."""
    dt = t1 - t0
    wx = np.empty(2 * _MAX_R + 1)
    wy = np.empty(2 * _MAX_R + 1)
    for i in range(x0.shape[0]):
        a = max(t0, tb[i])
        b = min(t1, tb[i] + life[i])
        if b <= a:
            continue
        ta, tb_ = a - tb[i], b - tb[i]
        # Path length over the overlap bounds the sampling step (about 1 px).
        xa, ya = x0[i] + vx[i] * ta, y0[i] - vy[i] * ta + 0.5 * g[i] * ta * ta
        xb, yb = x0[i] + vx[i] * tb_, y0[i] - vy[i] * tb_ + 0.5 * g[i] * tb_ * tb_
        n = int(math.hypot(xb - xa, yb - ya) / max(1.0, sigma[i])) + 2
        m = area[i] * (b - a) / dt / n
        for j in range(n):
            tau = ta + (j + 0.5) / n * (tb_ - ta)
            x = x0[i] + vx[i] * tau
            y = y0[i] - vy[i] * tau + 0.5 * g[i] * tau * tau
            _deposit(x, y, m, radiance[i], sigma[i], cov, rad, wx, wy)


class SplashRain(RainFamily[SplashParams]):
    """Road splashes and vehicle spray (see the module)."""

    name = "splash"
    references = ("Garg & Nayar IJCV 2007 (splashes); background.md section 5 (e)")
    Params = SplashParams

    def __init__(self, params: SplashParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        rng: np.random.Generator = kw["rng"]
        w, h = self.width, self.height
        self._salt = int(rng.integers(0, 2**63 - 1))
        self._bins = TimeCache()
        self._px = max(w, h) / 346.0  # sizes and speeds are given for a 346 px wide image
        p = params
        self._plume_x = rng.uniform(0, w, p.plumes)
        self._plume_v = rng.uniform(-25, 25, p.plumes) * self._px
        self._plume_y = h * rng.uniform(max(p.ground, 0.55), 0.95, p.plumes)
        self._plume_sx = w * rng.uniform(0.06, 0.18, p.plumes)
        self._plume_sy = h * rng.uniform(0.05, 0.14, p.plumes)
        self._plume_s = p.plume_strength * rng.uniform(0.6, 1.0, p.plumes)
        self._plume_rise = float(rng.uniform(15, 60)) * self._px
        self._texture = _smooth_noise(rng, 2 * h, w, scale=max(h, w) / 10.0)
        self._xs = np.arange(w, dtype=np.float32)
        self._ys = np.arange(h, dtype=np.float32)

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> SplashParams:
        u = float(rng.random()) if intensity is None else float(intensity)
        return SplashParams(
            ground=float(rng.uniform(0.45, 0.75)),
            rate_hz=lerp(u, 40.0, 2500.0, log=True) * float(rng.uniform(0.8, 1.25)),
            droplets=float(rng.uniform(3.0, 10.0)), speed_px_s=float(rng.uniform(60, 220)),
            radius_px=float(rng.uniform(0.5, 1.6)), radiance=float(rng.uniform(3.0, 9.0)),
            plumes=int(rng.integers(0, 2) + round(2 * u * rng.random())),
            plume_strength=float(lerp(u, 0.15, 0.75) * rng.uniform(0.8, 1.2)),
            spray_light=float(rng.uniform(1.3, 3.0)))

    def _bin(self, k: int) -> tuple[np.ndarray, ...]:
        """The droplets of splashes born in time bin ``k`` (deterministic per clip)."""
        def make() -> tuple[np.ndarray, ...]:
            p = self.params
            rng = np.random.default_rng([self._salt, k & 0xFFFFFFFF, k >> 32 & 0xFFFFFFFF])
            h, w = self.height, self.width
            n = int(rng.poisson(p.rate_hz * _BIN_S))
            y_top = p.ground * h
            near = rng.random(n) ** 0.7            # more splashes near (low in the frame)
            sy = y_top + near * (h + 4 - y_top)
            sx = rng.uniform(-4, w + 4, n)
            born = (k + rng.random(n)) * _BIN_S
            scale = 0.3 + 0.7 * near
            per = rng.poisson(p.droplets, n) + 1
            idx = np.repeat(np.arange(n), per)
            m = len(idx)
            ang = rng.uniform(-1.1, 1.1, m)       # radians from vertical
            speed = p.speed_px_s * self._px * scale[idx] * rng.uniform(0.5, 1.0, m)
            g = 1800.0 * self._px * scale[idx]
            vy = speed * np.cos(ang)
            life = np.minimum(2.0 * vy / g, _MAX_LIFE_S)
            r = p.radius_px * self._px * scale[idx] * rng.uniform(0.6, 1.2, m)
            return (sx[idx], sy[idx], speed * np.sin(ang), vy, g, born[idx], life,
                    np.pi * r * r, np.maximum(r / 2.0, 0.3),
                    p.radiance * rng.uniform(0.7, 1.3, m))
        return self._bins.get(k, make)

    def droplets(self, t0_s: float, t1_s: float) -> tuple[np.ndarray, ...]:
        """Every droplet that may be alive during ``[t0_s, t1_s]`` (struct of arrays)."""
        k0 = math.floor((t0_s - _MAX_LIFE_S) / _BIN_S)
        k1 = math.floor(t1_s / _BIN_S)
        parts = [self._bin(k) for k in range(k0, k1 + 1)]
        return tuple(np.concatenate(col) for col in zip(*parts, strict=True))

    def spray(self, t_s: float) -> np.ndarray:
        """The spray plumes' opacity ``m`` (H x W float32 in [0, 0.95]) at ``t_s``."""
        m = np.zeros((self.height, self.width), np.float32)
        w = self.width
        for x0, v, y, sx, sy, s in zip(self._plume_x, self._plume_v, self._plume_y,
                                       self._plume_sx, self._plume_sy, self._plume_s,
                                       strict=True):
            span = w + 6 * sx
            xc = (x0 + v * t_s + 3 * sx) % span - 3 * sx
            gx = np.exp(-0.5 * ((self._xs - xc) / sx) ** 2)
            gy = np.exp(-0.5 * ((self._ys - y) / sy) ** 2)
            m += np.float32(s) * np.outer(gy, gx).astype(np.float32)
        if not len(self._plume_s):
            return m
        tex = translate_wrap(self._texture, 0.0, self._plume_rise * t_s, self.width,
                             self.height)
        return np.clip(m * np.clip(1.0 + 0.6 * tex, 0.0, 2.0), 0.0, 0.95)

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        p = self.params
        cov = np.zeros((self.height, self.width), np.float32)
        rad = np.zeros_like(cov)
        if t1_s > t0_s:
            # (typed loosely: mypy cannot match the unpacked droplet arrays to the
            # kernel's parameters one by one)
            splat: Callable[..., None] = _splat_ballistic
            splat(*self.droplets(t0_s, t1_s), float(t0_s), float(t1_s), cov, rad)
        out = composite(clean, cov, rad, environment)
        if p.plumes:
            m = expand(self.spray(0.5 * (t0_s + t1_s)), clean)
            a = np.float32(min(p.spray_light * max(environment, 0.02), 0.9))
            out = (out * (1.0 - m) + m * a).astype(np.float32)
        return out

    @property
    def n_drops(self) -> int:
        p = self.params
        return round(p.rate_hz * p.droplets)  # droplets per second
