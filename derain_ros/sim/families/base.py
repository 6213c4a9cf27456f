"""What every rain family is: an appearance model that turns a clean scene into a rainy one.

A family is drawn once per clip (:meth:`RainFamily.sample`: random parameters from a
``numpy.random.Generator``, so the same seed gives the same rain) and then rendered at
any time window: :meth:`RainFamily.render` takes the clean *linear* image (H x W luma,
or H x W x C) and a window ``[t0_s, t1_s]`` (s from the clip start) and returns the
rainy linear image over that window. The synthesis pipeline calls it with the frame's
exposure for the frames and with one short window per sub-step for the event simulator,
so the events see the same rain as the frames, at sub-frame times.

Three optional hooks: :meth:`RainFamily.scene` changes the clean scene itself (night:
darker, lamps), so the ground-truth clean frame is the changed one; :meth:`RainFamily.mask`
gives a per-pixel occlusion mask (lens drops); :attr:`RainFamily.n_drops` counts the
family's discrete objects for the summary.

Shared helpers here: the display-like domain the texture families blend in (gamma 2:
``sqrt`` of linear, cheap and close to sRGB's perceptual spacing), periodic textures
(sparse seeds, wrap-around blur) and their translation at sub-pixel offsets.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

import cv2
import numpy as np

from derain_ros.sim.errors import SimConfigError

__all__ = ["FamilyParams", "RainFamily", "TimeCache", "loguniform", "translate_wrap",
           "wrap_filter"]

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709, linear RGB

P = TypeVar("P", bound="FamilyParams")


@dataclass(frozen=True, slots=True)
class FamilyParams:
    """Base of each family's parameter record (frozen; ``replace`` validates names)."""

    def replace(self: P, **changes: Any) -> P:
        """A copy with some fields changed; unknown names raise :class:`SimConfigError`."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise SimConfigError(f"unknown parameter(s) {', '.join(sorted(unknown))} for "
                                 f"{type(self).__name__}; known: {', '.join(sorted(known))}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for logs and provenance)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: the parameter class of one family (``RainFamily[SplashParams]``)
PT = TypeVar("PT", bound="FamilyParams")


class RainFamily(ABC, Generic[PT]):
    """One appearance model of rain, drawn for one clip (see the module docstring).

    Subclasses set ``name``, ``references`` (the literature the model follows) and
    ``Params`` (a :class:`FamilyParams` dataclass), and implement :meth:`sample_params`
    and :meth:`render`.
    """

    name: ClassVar[str]
    references: ClassVar[str]
    Params: ClassVar[type[FamilyParams]]

    def __init__(self, params: PT, *, width: int, height: int, fps: float,
                 exposure_s: float, rng: np.random.Generator,
                 focal_px: float | None = None) -> None:
        if width < 1 or height < 1:
            raise SimConfigError(f"image size must be positive, got {width}x{height}")
        if not (fps > 0 and 0 < exposure_s <= 1.0 / fps + 1e-12):
            raise SimConfigError(f"need fps > 0 and 0 < exposure <= 1/fps, got {fps}, "
                                 f"{exposure_s}")
        self.params = params
        self.width, self.height = int(width), int(height)
        self.fps, self.exposure_s = float(fps), float(exposure_s)
        self.focal_px = float(focal_px) if focal_px else self.width / 2.0 / math.tan(
            math.radians(30.0))

    @classmethod
    @abstractmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> PT:
        """Random parameters; ``intensity`` in [0, 1] (drizzle .. downpour) or None: drawn."""

    @classmethod
    def sample(cls, rng: np.random.Generator, *, width: int, height: int, fps: float = 30.0,
               exposure_s: float | None = None, focal_px: float | None = None,
               intensity: float | None = None, **overrides: Any) -> RainFamily[Any]:
        """Draw parameters (``overrides`` fix some by name) and build the family."""
        if intensity is not None and not 0.0 <= intensity <= 1.0:
            raise SimConfigError(f"intensity must be in [0, 1], got {intensity}")
        params = cls.sample_params(rng, intensity)
        if overrides:
            params = params.replace(**overrides)
        return cls(params, width=width, height=height, fps=fps,
                   exposure_s=exposure_s if exposure_s is not None else 1.0 / fps, rng=rng,
                   focal_px=focal_px)

    def scene(self, linear: np.ndarray, t_s: float) -> np.ndarray:
        """The clean scene this family rains on (identity; night darkens and adds lamps)."""
        return linear

    @abstractmethod
    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        """The rainy linear image over ``[t0_s, t1_s]`` (same shape as ``clean``).

        ``clean`` is linear (image white = 1), H x W or H x W x C, already passed through
        :meth:`scene`; ``environment`` is the scene's mean linear luminance. Must be
        safe to call from several threads at once (the pipeline renders sub-steps
        concurrently) and must depend only on its arguments and the drawn parameters.
        """

    def mask(self, t_s: float) -> np.ndarray | None:
        """Occlusion mask (H x W float32 in [0, 1]) at ``t_s``, or None (no occluders)."""
        return None

    @property
    def n_drops(self) -> int:
        """Discrete objects the family simulates (drops, splashes), for the summary."""
        return 0

    def describe(self) -> str:
        """One line: the family and its drawn parameters."""
        items = ", ".join(f"{k}={_short(v)}" for k, v in self.params.as_dict().items())
        return f"{self.name}({items})"


def _short(value: Any) -> str:
    if isinstance(value, FamilyParams):
        return "{" + ", ".join(f"{k}={_short(v)}" for k, v in value.as_dict().items()) + "}"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return str(value)


# --- shared helpers ---------------------------------------------------------------------

def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A log-uniform draw in [lo, hi]."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def lerp(intensity: float, lo: float, hi: float, *, log: bool = False) -> float:
    """``lo`` at intensity 0, ``hi`` at 1 (geometric when ``log``)."""
    if log:
        return float(lo * (hi / lo) ** intensity)
    return float(lo + (hi - lo) * intensity)


def luma_of(color: np.ndarray) -> float:
    """Linear luminance of an RGB triple."""
    return float(np.asarray(color, np.float32) @ _LUMA)


def per_channel(image: np.ndarray, rgb: np.ndarray) -> np.ndarray | np.float32:
    """``rgb`` (3,) as a broadcastable factor for ``image`` (luma: its luminance)."""
    if image.ndim == 2:
        return np.float32(luma_of(rgb))
    if image.shape[2] == 1:
        return np.array([luma_of(rgb)], np.float32)
    return np.asarray(rgb, np.float32)[: image.shape[2]]


def expand(layer: np.ndarray, like: np.ndarray) -> np.ndarray:
    """An H x W layer shaped to broadcast against ``like`` (H x W or H x W x C)."""
    return layer if like.ndim == 2 else layer[..., None]


def wrap_filter(texture: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``texture`` (periodic, H x W float32) correlated with ``kernel``, wrapping around."""
    kh, kw = kernel.shape
    py, px = kh // 2 + 1, kw // 2 + 1
    h, w = texture.shape
    if py >= h or px >= w:
        reps = (math.ceil(2 * py / h) + 1, math.ceil(2 * px / w) + 1)
        big = np.tile(texture, reps)
        ys, xs = (reps[0] // 2) * h, (reps[1] // 2) * w
        out = cv2.filter2D(big, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
        return np.ascontiguousarray(out[ys:ys + h, xs:xs + w])
    padded = np.pad(texture, ((py, py), (px, px)), mode="wrap")
    out = cv2.filter2D(padded, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(out[py:py + h, px:px + w])


def wrap_gaussian(texture: np.ndarray, sigma: float) -> np.ndarray:
    """A periodic texture blurred by a Gaussian of ``sigma`` px (wrapping around)."""
    if sigma <= 0.05:
        return texture.astype(np.float32)
    r = max(1, math.ceil(3.0 * sigma))
    g = cv2.getGaussianKernel(2 * r + 1, sigma).astype(np.float32)
    return wrap_filter(texture.astype(np.float32), g @ g.T)


def line_kernel(length_px: float, angle_rad: float) -> np.ndarray:
    """A segment of ``length_px`` along ``angle_rad`` (from vertical, + leaning right).

    Anti-aliased (bilinear splats every 0.25 px), sums to 1: correlating a moving point
    with it averages the point over its travel. Below 1 px it is a single tap.
    """
    dx, dy = math.sin(angle_rad), math.cos(angle_rad)
    half = 0.5 * max(length_px, 0.0)
    r = math.ceil(half) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    n = max(1, math.ceil(4 * length_px))
    f = (np.arange(n) + 0.5) / n - 0.5
    xs, ys = r + f * 2 * half * dx, r + f * 2 * half * dy
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (y0 + oy, x0 + ox), wy * wx)
    return k / k.sum()


def translate_wrap(texture: np.ndarray, dx: float, dy: float, width: int,
                   height: int) -> np.ndarray:
    """The ``width`` x ``height`` window of a periodic texture at offset (dx, dy) px.

    ``out[y, x] = texture[(y + dy) mod H, (x + dx) mod W]``, bilinear between pixels.
    """
    h, w = texture.shape[:2]
    m = np.array([[1, 0, dx % w], [0, 1, dy % h]], np.float32)
    return cv2.warpAffine(texture, m, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_WRAP)


class TimeCache:
    """A thread-safe memo for values computed once per key (e.g. per window length)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value for ``key``, made by ``make()`` the first time (under a lock)."""
        value = self._values.get(key)
        if value is not None:
            return value
        with self._lock:
            value = self._values.get(key)
            if value is None:
                value = make()
                self._values[key] = value
            return value


def check_ranges(params: FamilyParams, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Raise :class:`SimConfigError` when a numeric parameter leaves its range."""
    for name, (lo, hi) in ranges.items():
        value = getattr(params, name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if not (math.isfinite(v) and lo <= v <= hi):
                raise SimConfigError(f"{type(params).__name__}.{name} must be in "
                                     f"[{lo}, {hi}], got {value}")
