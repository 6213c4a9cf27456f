"""The ROS edge of the node: messages <-> records, QoS from parameters, diagnostics.

Only this package and :mod:`derain_ros.node` import rclpy and message packages; the
core (sync, events, model, engine) stays ROS-free.
"""

from derain_ros.ros.dds import max_encoded_bytes, shm_segment_bytes
from derain_ros.ros.diagnostics import (
    FrameCost,
    LatencyWindow,
    RateMeter,
    array_msg,
    memory_mb,
    status_msg,
)
from derain_ros.ros.messages import (
    HAVE_CV_BRIDGE,
    camera_info_like,
    compressed_msg,
    frame_from_msg,
    frame_pixels,
    header_from,
    image_msg,
    network_image_msg,
    stamp_msg,
)
from derain_ros.ros.qos import RELIABILITIES, describe_qos, overridable, qos_profile

__all__ = [
    "HAVE_CV_BRIDGE",
    "RELIABILITIES",
    "FrameCost",
    "LatencyWindow",
    "RateMeter",
    "array_msg",
    "camera_info_like",
    "compressed_msg",
    "describe_qos",
    "frame_from_msg",
    "frame_pixels",
    "header_from",
    "image_msg",
    "max_encoded_bytes",
    "memory_mb",
    "network_image_msg",
    "overridable",
    "qos_profile",
    "shm_segment_bytes",
    "stamp_msg",
    "status_msg",
]
