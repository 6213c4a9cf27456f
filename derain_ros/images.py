"""sensor_msgs/Image <-> numpy, for every encoding camera drivers publish.

ROS-free on purpose: the node (rclpy messages), the bag layer (rosbags messages)
and the simulator all carry the same five fields (encoding, height, width, step,
data, plus is_bigendian), so one conversion serves them all. Where cv_bridge is
installed (a vehicle's ROS install) the node may use it; this module gives the same
arrays (cv_bridge's ``imgmsg_to_cv2`` with ``desired_encoding="passthrough"``), and the
same Bayer demosaicing codes, so results match.

Two layers:

- :func:`image_to_array` / :func:`array_to_image`: lossless, the encoding's own layout
  (H x W for mono/Bayer, H x W x C otherwise; uint8 or uint16), honouring ``step``
  padding and big-endian 16-bit data.
- :func:`to_network` / :func:`from_network`: the network's view, float32 in [0, 1],
  H x W x 3 RGB for colour encodings (Bayer is demosaiced) and H x W x 1 for mono.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from derain_ros.errors import DerainError
from derain_ros.events._jit import HAVE_NUMBA, njit

__all__ = [
    "ENCODINGS",
    "ImageEncodingError",
    "ImageFields",
    "array_to_image",
    "from_network",
    "image_to_array",
    "is_color",
    "output_encoding",
    "to_network",
]


class ImageEncodingError(DerainError):
    """An image has an unsupported encoding or fields that do not fit together."""


@dataclass(frozen=True, slots=True)
class _Encoding:
    channels: int
    dtype: type[np.integer[Any]]
    #: OpenCV conversion to RGB, by its ``cv2`` name (None: already RGB or mono).
    to_rgb: str | None
    #: OpenCV conversion from RGB back to this layout (None: not invertible, e.g. Bayer).
    from_rgb: str | None
    color: bool


# OpenCV names Bayer patterns by the second row's first two pixels; ROS by the first
# row's. Hence ROS bayer_rggb <-> OpenCV BayerBG (the same mapping cv_bridge uses).
ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, np.uint8, None, None, True),
    "bgr8": _Encoding(3, np.uint8, "COLOR_BGR2RGB", "COLOR_RGB2BGR", True),
    "rgba8": _Encoding(4, np.uint8, "COLOR_RGBA2RGB", "COLOR_RGB2RGBA", True),
    "bgra8": _Encoding(4, np.uint8, "COLOR_BGRA2RGB", "COLOR_RGB2BGRA", True),
    "rgb16": _Encoding(3, np.uint16, None, None, True),
    "bgr16": _Encoding(3, np.uint16, "COLOR_BGR2RGB", "COLOR_RGB2BGR", True),
    "mono8": _Encoding(1, np.uint8, None, None, False),
    "mono16": _Encoding(1, np.uint16, None, None, False),
    "8UC1": _Encoding(1, np.uint8, None, None, False),
    "8UC3": _Encoding(3, np.uint8, "COLOR_BGR2RGB", "COLOR_RGB2BGR", True),
    "bayer_rggb8": _Encoding(1, np.uint8, "COLOR_BayerBG2RGB", None, True),
    "bayer_bggr8": _Encoding(1, np.uint8, "COLOR_BayerRG2RGB", None, True),
    "bayer_gbrg8": _Encoding(1, np.uint8, "COLOR_BayerGR2RGB", None, True),
    "bayer_grbg8": _Encoding(1, np.uint8, "COLOR_BayerGB2RGB", None, True),
    "bayer_rggb16": _Encoding(1, np.uint16, "COLOR_BayerBG2RGB", None, True),
    "bayer_bggr16": _Encoding(1, np.uint16, "COLOR_BayerRG2RGB", None, True),
    "bayer_gbrg16": _Encoding(1, np.uint16, "COLOR_BayerGR2RGB", None, True),
    "bayer_grbg16": _Encoding(1, np.uint16, "COLOR_BayerGB2RGB", None, True),
}


@dataclass(frozen=True, slots=True)
class ImageFields:
    """The payload fields of a sensor_msgs/Image (header excluded)."""

    encoding: str
    height: int
    width: int
    step: int
    data: bytes
    is_bigendian: bool = False


def _convert(arr: np.ndarray, code: str) -> np.ndarray:
    """``cv2.cvtColor`` by the conversion's name. OpenCV is imported on the first
    conversion: an rgb8 or mono8 camera never needs it, and it is 17 MB of a node's RSS
    (bench/RESULTS.md, issue #16)."""
    import cv2

    converted: np.ndarray = cv2.cvtColor(arr, getattr(cv2, code))
    return converted


def _spec(encoding: str) -> _Encoding:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def is_color(encoding: str) -> bool:
    """True when the encoding carries colour (Bayer included), False for mono."""
    return _spec(encoding).color


def image_to_array(encoding: str, height: int, width: int, step: int,
                   data: bytes | bytearray | memoryview | np.ndarray,
                   is_bigendian: bool = False) -> np.ndarray:
    """The image in its own layout: H x W (1 channel) or H x W x C, uint8/uint16.

    ``step`` may include row padding; it is removed. The result is a view of ``data``
    where possible (so copy it before the message buffer is reused).
    """
    spec = _spec(encoding)
    itemsize = np.dtype(spec.dtype).itemsize
    row_bytes = width * spec.channels * itemsize
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image size must be positive, got {width}x{height}")
    if step < row_bytes:
        raise ImageEncodingError(
            f"step {step} is smaller than a row of {width} px in {encoding} ({row_bytes} bytes)"
        )
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else (
        data.reshape(-1).view(np.uint8))
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageEncodingError(
            f"image data has {buf.size} bytes, {encoding} {width}x{height} with step {step} "
            f"needs {step * (height - 1) + row_bytes}"
        )
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    dtype = np.dtype(spec.dtype).newbyteorder(">" if is_bigendian else "<")
    arr = rows.view(dtype) if step == row_bytes else np.ascontiguousarray(rows).view(dtype)
    if itemsize > 1:
        arr = arr.astype(spec.dtype, copy=False)
    shape = (height, width) if spec.channels == 1 else (height, width, spec.channels)
    return arr.reshape(shape)


def array_to_image(array: np.ndarray, encoding: str) -> ImageFields:
    """Pack an array in the encoding's own layout into Image fields (little-endian, no padding)."""
    spec = _spec(encoding)
    expected_ndim = 2 if spec.channels == 1 else 3
    arr = np.asarray(array)
    if arr.ndim == 3 and spec.channels == 1 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != spec.channels):
        raise ImageEncodingError(
            f"{encoding} needs an array of {spec.channels} channel(s), got shape {arr.shape}"
        )
    if arr.dtype != spec.dtype:
        raise ImageEncodingError(f"{encoding} needs dtype {np.dtype(spec.dtype)}, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    h, w = arr.shape[:2]
    return ImageFields(encoding, h, w, w * spec.channels * arr.itemsize, arr.tobytes(), False)


def to_network(array: np.ndarray, encoding: str) -> np.ndarray:
    """Float32 in [0, 1]: H x W x 3 RGB for colour encodings, H x W x 1 for mono."""
    spec = _spec(encoding)
    arr = array
    if spec.to_rgb is not None:
        arr = _convert(np.ascontiguousarray(arr), spec.to_rgb)
    scale = 1.0 / float(np.iinfo(spec.dtype).max)
    out = arr.astype(np.float32) * np.float32(scale)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


@njit
def _quantize_kernel(image: np.ndarray, peak: np.ndarray, out: np.ndarray) -> None:
    """``out = clip(rint(image * peak), 0, peak)`` for an H x W x C float32 ``image`` of
    any strides (the network's CHW output seen as HWC) into a C-contiguous ``out``.
    ``peak`` is a float32 0-d array. NaN gives 0."""
    p = peak[()]
    zero = np.float32(0.0)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            for c in range(image.shape[2]):
                v = np.rint(image[y, x, c] * p)
                v = v if v > zero else zero
                out[y, x, c] = v if v < p else p


def _quantize(image: np.ndarray, dtype: Any, peak: float) -> np.ndarray:
    """``np.clip(np.rint(image * peak), 0, peak).astype(dtype)`` (float32 arithmetic): the
    same values, for H x W x C float32 input in one numba pass into one C-contiguous
    array. Why: numpy's expression allocates four full-size temporaries, and on the
    node's publish path their allocation and first touch (page faults) cost several
    times the arithmetic (640 x 480: ~3.6 ms vs ~0.7 ms, bench/RESULTS.md)."""
    img = np.asarray(image, np.float32)
    if HAVE_NUMBA and img.ndim == 3:
        out = np.empty(img.shape, dtype)
        _quantize_kernel(img, np.array(peak, np.float32), out)
        return out
    quantized: np.ndarray = np.clip(np.rint(img * peak), 0, peak).astype(dtype)
    return quantized


def from_network(image: np.ndarray, encoding: str) -> np.ndarray:
    """Inverse of :func:`to_network` for publishing: float [0, 1] -> the encoding's layout.

    Bayer encodings cannot be re-mosaiced meaningfully; a colour result for a Bayer
    input is published as ``rgb8`` (see :func:`output_encoding`).
    """
    spec = _spec(encoding)
    if spec.to_rgb is not None and spec.from_rgb is None:
        raise ImageEncodingError(f"cannot encode back to {encoding}; publish as rgb8/rgb16")
    peak = float(np.iinfo(spec.dtype).max)
    arr = _quantize(image, spec.dtype, peak)
    if spec.channels == 1:
        return arr[:, :, 0] if arr.ndim == 3 else arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageEncodingError(f"{encoding} needs an H x W x 3 RGB image, got {arr.shape}")
    return _convert(arr, spec.from_rgb) if spec.from_rgb is not None else arr


def output_encoding(encoding: str) -> str:
    """The encoding a derained image is published in for an input of ``encoding``."""
    spec = _spec(encoding)
    if spec.to_rgb is not None and spec.from_rgb is None:  # Bayer
        return "rgb16" if spec.dtype is np.uint16 else "rgb8"
    return encoding
