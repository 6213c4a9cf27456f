"""ROS messages <-> the core's records, at the edge of the node (and of replay tools).

Images go through ``cv_bridge`` where the system has it (a vehicle's ROS install) and
through :mod:`derain_ros.images` otherwise; both give the same arrays (a test checks it
where cv_bridge exists). Published images keep the input's header (stamp and frame_id).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from derain_ros.images import (
    ImageEncodingError,
    array_to_image,
    from_network,
    is_color,
    output_encoding,
)
from derain_ros.sync import FrameImage, image_from_msg

try:  # a vehicle's ROS install has it; the PyPI wheels here do not
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # pragma: no cover - depends on the install
    _CvBridge = None

__all__ = [
    "HAVE_CV_BRIDGE",
    "frame_from_msg",
    "frame_pixels",
    "header_from",
    "image_msg",
    "network_image_msg",
    "stamp_msg",
]

HAVE_CV_BRIDGE = _CvBridge is not None
_bridge = _CvBridge() if _CvBridge is not None else None


def stamp_msg(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` for ``stamp_ns`` (ns)."""
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header_from(stamp_ns: int, frame_id: str) -> Header:
    """A header with ``stamp_ns`` and ``frame_id``."""
    return Header(stamp=stamp_msg(stamp_ns), frame_id=frame_id)


def frame_pixels(msg: Image | CompressedImage) -> int | None:
    """Pixels (width x height) an Image declares in its fields, read before any
    conversion (so an oversized frame is refused without allocating it); None for a
    CompressedImage, whose size is known only once decoded."""
    if not hasattr(msg, "width") or not hasattr(msg, "height"):
        return None
    return int(msg.width) * int(msg.height)


def frame_from_msg(msg: Image | CompressedImage, *, use_cv_bridge: bool = True) -> FrameImage:
    """An Image or CompressedImage as a :class:`FrameImage` (a copy of the pixels).

    Raises :class:`~derain_ros.images.ImageEncodingError` (or ``SyncError`` for an
    undecodable CompressedImage) for input that cannot be an image.
    """
    if isinstance(msg, Image) and use_cv_bridge and _bridge is not None:
        try:
            arr = _bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
        except Exception as err:  # cv_bridge raises its own CvBridgeError
            raise ImageEncodingError(f"cv_bridge cannot convert the image: {err}") from err
        return FrameImage(np.array(arr, copy=True), msg.encoding)
    return image_from_msg(msg)


def image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image of ``array`` (in ``encoding``'s layout) with ``header``."""
    fields = array_to_image(array, encoding)
    msg = Image()
    msg.header = header
    msg.height, msg.width, msg.step = fields.height, fields.width, fields.step
    msg.encoding = fields.encoding
    msg.is_bigendian = 0
    msg.data = fields.data
    return msg


def network_image_msg(image: np.ndarray, like_encoding: str, header: Header) -> Image:
    """A float H x W x C [0, 1] network output as an Image in the input's encoding.

    Colour results of colour input keep its encoding (Bayer input gives rgb8/rgb16);
    mono input gives mono (a 3-channel result is averaged); a 1-channel result of a
    colour input is published as mono of the same bit depth.
    """
    out_enc = output_encoding(like_encoding)
    channels = image.shape[2] if image.ndim == 3 else 1
    if not is_color(out_enc) and channels == 3:
        image = image.mean(axis=2, keepdims=True)
    elif is_color(out_enc) and channels == 1:
        out_enc = "mono16" if out_enc.endswith("16") else "mono8"
    return image_msg(from_network(image, out_enc), out_enc, header)


