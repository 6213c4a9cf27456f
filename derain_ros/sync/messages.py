"""Message fields -> the synchroniser's inputs (stamps, images, EventArray events).

Duck-typed on the fields, so the node's rclpy messages and a bag's rosbags messages take
the same path and this module needs no ROS import. The EventArray conversion itself lives
in :mod:`derain_ros.events.dv` (the one place it is done) and is re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from derain_ros.errors import SyncError
from derain_ros.events import event_array_msg_to_batch
from derain_ros.images import image_to_array
from derain_ros.sync.records import FrameImage

__all__ = ["event_array_msg_to_batch", "image_from_msg", "stamp_to_ns"]


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags object) in ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_from_msg(msg: Any) -> FrameImage:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags) as a FrameImage.

    Duck-typed on the fields so both message flavours share one path; the array is a
    copy (message buffers get reused). CompressedImage is decoded with OpenCV (colour
    as ``bgr8``/``bgra8``, grey as ``mono8``/``mono16``).
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        import cv2  # here: raw images never need OpenCV (see images._convert)

        buf = np.frombuffer(bytes(msg.data), np.uint8)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
        if arr is None:
            raise SyncError(f"cannot decode a CompressedImage (format {msg.format!r})")
        if arr.ndim == 2:
            enc = "mono16" if arr.dtype == np.uint16 else "mono8"
        elif arr.shape[2] == 4:
            enc = "bgra8"
        else:
            enc = "bgr8"
        if arr.dtype not in (np.uint8, np.uint16) or (arr.ndim == 3 and arr.dtype != np.uint8):
            raise SyncError(f"unsupported CompressedImage pixel type {arr.dtype} {arr.shape}")
        return FrameImage(arr, enc)
    arr = image_to_array(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                         _as_bytes(msg.data), bool(msg.is_bigendian))
    return FrameImage(np.array(arr, copy=True), msg.encoding)


def _as_bytes(data: Any) -> bytes | bytearray | memoryview | np.ndarray:
    if isinstance(data, bytes | bytearray | memoryview | np.ndarray):
        return data
    return memoryview(data).cast("B") if hasattr(data, "tobytes") else bytes(data)
