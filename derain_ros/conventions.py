"""Topic names, clock conventions and QoS of the real drivers, in one place.

Why here: the simulator writes bags that must look like a real rig's, the node
subscribes to what real drivers publish, and evaluation reads the ground-truth
topics the simulator adds. All three read these names from this module.

- ``libcaer_driver`` (iniVation DAVIS/DVXplorer) and ``metavision_driver`` (Prophesee)
  publish ``event_camera_msgs/EventPacket`` on ``/event_camera/events``, best-effort,
  volatile, keep-last 1000. ``header.stamp`` is the host arrival time of the first
  event; ``time_base`` and the event times are sensor time.
- DAVIS APS frames come from the same sensor clock and are stamped at mid-exposure in
  sensor time, on ``/event_camera/image_raw``.
"""

from __future__ import annotations

EVENT_TOPIC = "/event_camera/events"
IMAGE_TOPIC = "/event_camera/image_raw"

#: Ground truth the simulator writes next to the rig's topics; the node ignores them.
GT_CLEAN_TOPIC = "/ground_truth/clean"
GT_RAIN_TOPIC = "/ground_truth/rain_layer"
GT_DROP_MASK_TOPIC = "/ground_truth/drop_mask"

#: Input topics of the node: relative names, set by remapping (``-r image:=/cam/image_raw``)
#: and moved by a namespace, as image_proc's nodes do. The camera_info is read next to
#: the image (image_transport's camera convention), compressed input on ``<image>/compressed``.
IN_IMAGE = "image"
IN_EVENTS = "events"

#: Where the node's inputs point unless remapped, in ``derain-ros run`` and the launch file:
#: the drivers' topics, relative so that a namespace moves them with the driver's.
DEFAULT_REMAPS = {IN_IMAGE: "event_camera/image_raw", IN_EVENTS: "event_camera/events"}

#: Output topics of the node, relative to its name (``~/image``). ``~/camera_info`` sits
#: next to ``~/image`` and ``~/image/compressed`` under it, as image_transport lays out a
#: camera publisher.
OUT_IMAGE = "~/image"
OUT_COMPRESSED = "~/image/compressed"
OUT_CAMERA_INFO = "~/camera_info"
OUT_RAIN = "~/rain_layer"
OUT_EVENTS_IMAGE = "~/events_image"


def camera_info_topic(image_topic: str) -> str:
    """The camera_info next to a resolved image topic, as image_transport derives it:
    ``/cam/image_raw`` -> ``/cam/camera_info``."""
    return image_topic.rpartition("/")[0] + "/camera_info"


def remap_args(remaps: dict[str, str]) -> list[str]:
    """``-r from:=to`` ROS arguments for each remapping."""
    out = []
    for name, target in remaps.items():
        out += ["-r", f"{name}:={target}"]
    return out

#: Keep-last depth the event drivers publish with.
EVENT_QOS_DEPTH = 1000

#: Supported event encodings of event_camera_msgs/EventPacket.
EVENT_ENCODINGS = ("evt3", "libcaer_cmp", "libcaer", "mono")

#: Sensor sizes of common rigs (width, height).
SENSOR_SIZES = {
    "davis346": (346, 260),
    "dvxplorer": (640, 480),
    "evk4": (1280, 720),
}
