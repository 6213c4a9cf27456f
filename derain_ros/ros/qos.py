"""QoS profiles from parameters: sensor-data (best effort) by default.

Why best effort: the event drivers and most camera drivers publish best effort, and a
reliable subscription to a best-effort publisher receives nothing - the most common
"no data" complaint about event-camera nodes. ``reliable`` is for replay tools and
recorded pipelines that want every message.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from derain_ros.errors import ConfigError

__all__ = ["RELIABILITIES", "qos_profile"]

#: parameter value -> rclpy policy
RELIABILITIES = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "system_default": ReliabilityPolicy.SYSTEM_DEFAULT,
}


def qos_profile(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """Keep-last ``depth``, volatile, with the named reliability (sensor-data by default)."""
    if reliability not in RELIABILITIES:
        raise ConfigError(f"unknown QoS reliability {reliability!r}; use one of "
                          f"{', '.join(RELIABILITIES)}")
    if depth < 1:
        raise ConfigError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=RELIABILITIES[reliability],
                      durability=DurabilityPolicy.VOLATILE)
