"""The ROS edge of the node: messages <-> records, QoS from parameters, diagnostics.

Only this package and :mod:`derain_ros.node` import rclpy and message packages; the
core (sync, events, model, engine) stays ROS-free.
"""

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
    frame_from_msg,
    header_from,
    image_msg,
    network_image_msg,
    stamp_msg,
)
from derain_ros.ros.qos import RELIABILITIES, qos_profile

__all__ = [
    "HAVE_CV_BRIDGE",
    "RELIABILITIES",
    "FrameCost",
    "LatencyWindow",
    "RateMeter",
    "array_msg",
    "frame_from_msg",
    "header_from",
    "image_msg",
    "memory_mb",
    "network_image_msg",
    "qos_profile",
    "stamp_msg",
    "status_msg",
]
