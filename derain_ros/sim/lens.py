"""Raindrops on the lens (as in ViMP-Net's data): static-ish blobs that refract the scene.

A drop sitting on the lens is far out of focus and acts as a small fish-eye lens:
inside its outline the camera sees a shrunken, inverted and blurred view of the
scene around it, darker towards the rim. Drops slide down slowly (a few px/s) and
re-appear at the top, so they change little from frame to frame. Each frame also
gets the drop mask (soft alpha in [0, 1]) as ground truth. Optionally a share of the
drops lands during the clip (``appear_frac`` of them, at uniform times in
``[0, appear_window_s]``) and grows to full size within ``grow_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from derain_ros.sim.errors import SimConfigError

__all__ = ["LensDrops", "LensView"]


@dataclass(frozen=True, slots=True, eq=False)
class LensView:
    """The lens drops at one instant: a remap (px) and an alpha mask (H x W float32)."""

    map_x: np.ndarray
    map_y: np.ndarray
    mask: np.ndarray
    shade: np.ndarray
    blur_sigma: float

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The image seen through the drops (H x W or H x W x C, float32, C <= 4)."""
        if not self.mask.any():
            return image
        src = np.ascontiguousarray(image, np.float32)
        blurred = cv2.GaussianBlur(src, (0, 0), self.blur_sigma, borderType=cv2.BORDER_REFLECT)
        seen = cv2.remap(blurred, self.map_x, self.map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
        seen = seen.reshape(src.shape)  # OpenCV drops a single trailing channel
        alpha = self.mask if image.ndim == 2 else self.mask[..., None]
        shade = self.shade if image.ndim == 2 else self.shade[..., None]
        return (src * (1.0 - alpha) + seen * shade * alpha).astype(np.float32)


class LensDrops:
    """``count`` drops of radius ``radius_frac`` x min(W, H) sliding at ``slide_px_s``."""

    def __init__(self, count: int, width: int, height: int, rng: np.random.Generator,
                 radius_frac: tuple[float, float] = (0.02, 0.07),
                 slide_px_s: tuple[float, float] = (0.0, 8.0), *, appear_frac: float = 0.0,
                 appear_window_s: float = 3.0, grow_s: float = 0.15) -> None:
        if count < 0:
            raise SimConfigError(f"lens drop count must be >= 0, got {count}")
        self.width, self.height = int(width), int(height)
        base = min(width, height)
        n = int(count)
        self._r = base * (radius_frac[0] + rng.random(n) * (radius_frac[1] - radius_frac[0]))
        self._aspect = 0.8 + 0.4 * rng.random(n)
        self._x = rng.random(n) * width
        self._y = rng.random(n) * height
        self._slide = slide_px_s[0] + rng.random(n) * (slide_px_s[1] - slide_px_s[0])
        # How much wider the scene patch a drop shows is than the drop itself.
        self._zoom = 2.5 + 2.5 * rng.random(n)
        self._blur = float(max(1.0, 0.15 * float(np.mean(self._r)))) if n else 1.0
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self._grid_x, self._grid_y = xs, ys
        # Drawn last, and only when asked, so that older clips keep their drops exactly.
        self._appear: np.ndarray | None = None
        self._grow_s = max(float(grow_s), 1e-3)
        if appear_frac > 0 and n:
            late = rng.random(n) < appear_frac
            self._appear = np.where(late, rng.random(n) * appear_window_s, -np.inf)

    @property
    def count(self) -> int:
        """Number of drops on the lens."""
        return len(self._r)

    def at(self, t_s: float) -> LensView:
        """The drops at time ``t_s`` (s from the clip start)."""
        map_x = self._grid_x.copy()
        map_y = self._grid_y.copy()
        mask = np.zeros((self.height, self.width), np.float32)
        shade = np.ones((self.height, self.width), np.float32)
        h, w = self.height, self.width
        for i in range(self.count):
            r = self._r[i]
            if self._appear is not None:
                age = t_s - self._appear[i]
                if age <= 0:
                    continue
                r = r * min(1.0, max(age / self._grow_s, 0.1))
            rx, ry = r, r * self._aspect[i]
            span = h + 2 * ry
            cy = (self._y[i] + self._slide[i] * t_s + ry) % span - ry
            cx = self._x[i]
            x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, w)
            y0, y1 = max(int(cy - ry) - 1, 0), min(int(cy + ry) + 2, h)
            if x0 >= x1 or y0 >= y1:
                continue
            qx = (self._grid_x[y0:y1, x0:x1] - cx) / rx
            qy = (self._grid_y[y0:y1, x0:x1] - cy) / ry
            q2 = qx * qx + qy * qy
            dist = np.sqrt(q2)
            alpha = np.clip((1.0 - dist) / 0.15, 0.0, 1.0).astype(np.float32)
            inside = alpha > 0
            # Inverted, widened view; the refraction grows towards the rim.
            bend = self._zoom[i] * (1.0 + 0.5 * q2)
            sx = cx - qx * rx * bend
            sy = cy - qy * ry * bend
            sub_mask = mask[y0:y1, x0:x1]
            take = inside & (alpha >= sub_mask)
            map_x[y0:y1, x0:x1][take] = sx[take]
            map_y[y0:y1, x0:x1][take] = sy[take]
            shade[y0:y1, x0:x1][take] = (1.0 - 0.35 * q2 * q2)[take]
            np.maximum(sub_mask, alpha, out=sub_mask)
        return LensView(map_x, map_y, mask, shade, self._blur)
