"""ROS messages <-> the core's records, at the edge of the node (and of replay tools).

Images go through ``cv_bridge`` where the system has it (a vehicle's ROS install) and
through :mod:`derain_ros.images` otherwise; both give the same arrays (a test checks it
where cv_bridge exists). Published images keep the input's header (stamp and frame_id).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from derain_ros.images import (
    ImageEncodingError,
    array_to_image,
    from_network,
    image_to_array,
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
    "camera_info_like",
    "compressed_msg",
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




def compressed_msg(msg: Image, jpeg_quality: int = 95) -> CompressedImage:
    """``msg`` as image_transport's ``compressed`` plugin publishes it.

    8-bit mono or 3-channel colour: JPEG at ``jpeg_quality``; anything else (16-bit,
    alpha) PNG, which keeps the bit depth. ``format`` is written as the plugin writes it,
    ``"<encoding>; jpeg compressed <bgr8|mono8>"`` (or ``png compressed`` with
    ``bgr8``/``bgr16``/``mono8``/``mono16``), so image_transport subscribers (rqt,
    ``republish``) decode it; colour is stored BGR as OpenCV writes it.
    """
    import cv2  # here: only a node with a compressed subscriber loads OpenCV for it

    arr = image_to_array(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                         bytes(msg.data), bool(msg.is_bigendian))
    color = is_color(msg.encoding)
    if color:
        code = {"rgb": cv2.COLOR_RGB2BGR, "rgba": cv2.COLOR_RGBA2BGR,
                "bgra": cv2.COLOR_BGRA2BGR}.get(msg.encoding.rstrip("0123456789"))
        arr = cv2.cvtColor(arr, code) if code is not None else arr
    deep = arr.dtype == np.uint16
    target = ("bgr" if color else "mono") + ("16" if deep else "8")
    if deep or (arr.ndim == 3 and arr.shape[2] != 3):
        kind, ok, buf = "png", *cv2.imencode(".png", np.ascontiguousarray(arr))
    else:
        kind, ok, buf = "jpeg", *cv2.imencode(".jpg", np.ascontiguousarray(arr),
                                              [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ImageEncodingError(f"OpenCV cannot {kind}-encode a {msg.encoding} image")
    out = CompressedImage(header=msg.header, format=f"{msg.encoding}; {kind} compressed {target}")
    out.data = buf.tobytes()
    return out


def camera_info_like(info: CameraInfo, header: Header) -> CameraInfo:
    """A copy of ``info`` with ``header`` (the derained image's): the calibration of the
    input camera passes through unchanged, since the network keeps the image geometry."""
    return CameraInfo(header=header, height=info.height, width=info.width,
                      distortion_model=info.distortion_model, d=list(info.d), k=info.k,
                      r=info.r, p=info.p, binning_x=info.binning_x,
                      binning_y=info.binning_y, roi=info.roi)
