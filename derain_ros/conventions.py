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

#: Output topics of the node, relative to its name (``~/image``).
OUT_IMAGE = "~/image"
OUT_RAIN = "~/rain_layer"
OUT_EVENTS_IMAGE = "~/events_image"

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
