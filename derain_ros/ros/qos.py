"""QoS profiles from parameters: sensor-data (best effort) by default.

Why best effort: the event drivers and most camera drivers publish best effort, and a
reliable subscription to a best-effort publisher receives nothing - the most common
"no data" complaint about event-camera nodes. ``reliable`` is for replay tools and
recorded pipelines that want every message.

Every subscription and publication of the node can be changed at start-up with ROS 2's
standard ``qos_overrides.<topic>.<subscription|publisher>.<policy>`` parameters
(:func:`overridable`): history, depth, reliability and durability.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

from derain_ros.errors import ConfigError

__all__ = ["RELIABILITIES", "describe_qos", "overridable", "qos_profile"]

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


def overridable() -> QoSOverridingOptions:
    """Options that let ``qos_overrides.<topic>.<entity>.<policy>`` parameters set the
    history, depth, reliability and durability of one subscription or publisher (read
    once, when it is created), as every ROS 2 camera pipeline node allows."""
    return QoSOverridingOptions(policy_kinds=(
        QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY,
        QoSPolicyKind.DURABILITY))


def describe_qos(qos: QoSProfile) -> str:
    """``reliable, volatile, keep_last 5``: a profile in a log line."""
    history = qos.history.name.lower()
    if qos.history == HistoryPolicy.KEEP_LAST:
        history += f" {qos.depth}"
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, {history}"
