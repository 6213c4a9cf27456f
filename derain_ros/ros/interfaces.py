"""Message packages imported only when a setting asks for them, with the fix when missing.

Why: ``dv_ros2_msgs`` (iniVation's per-event ``EventArray``) is in no ROS 2
distribution, so derain_ros cannot declare it in package.xml; importing it when the
node module loaded stopped every node where it was not built, although only
``event_msg_type: EventArray`` needs it. Each event interface is now imported when a
node selects it, and a missing one is refused as a :class:`ConfigError` that names the
package and how to get it (the distribution's package, or the mirror in ``msg/``).
"""

from __future__ import annotations

import importlib
from typing import Any

from derain_ros.errors import ConfigError

__all__ = ["EVENT_MESSAGES", "INSTALL_HINTS", "event_message_class", "message_class"]

#: ``event_msg_type`` -> (interface package, message name).
EVENT_MESSAGES: dict[str, tuple[str, str]] = {
    "EventPacket": ("event_camera_msgs", "EventPacket"),
    "EventArray": ("dv_ros2_msgs", "EventArray"),
}

#: How to get each optional interface package (README, "In a ROS 2 workspace").
INSTALL_HINTS: dict[str, str] = {
    "event_camera_msgs": (
        "install the distribution's package (sudo apt install "
        "ros-$ROS_DISTRO-event-camera-msgs), or build the mirror in "
        "msg/event_camera_msgs: in a colcon workspace `ln -s derain_ros/msg/event_camera_msgs "
        "src/event_camera_msgs`, colcon build, source install/setup.bash"),
    "dv_ros2_msgs": (
        "it is in no ROS 2 distribution: build the mirror in msg/dv_ros2_msgs (in a colcon "
        "workspace `ln -s derain_ros/msg/dv_ros2_msgs src/dv_ros2_msgs`, colcon build, "
        "source install/setup.bash) or iniVation's dv-ros2 from source; or, with a driver that "
        "publishes event_camera_msgs/EventPacket, set event_msg_type: EventPacket"),
}


def message_class(package: str, name: str, *, needed_for: str) -> Any:
    """The rclpy class ``package/msg/name``; ConfigError naming the fix when missing.

    ``needed_for`` says which setting asked for it, so the error tells the user what to
    install or what to change instead.
    """
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError as err:
        hint = INSTALL_HINTS.get(package, f"install the ROS 2 package {package}")
        raise ConfigError(
            f"{needed_for} needs the interface package {package}, which this Python cannot "
            f"import ({err}). To fix: {hint}") from err
    try:
        return getattr(module, name)
    except AttributeError as err:
        raise ConfigError(f"{needed_for} needs {package}/msg/{name}, but the installed "
                          f"{package} ({module.__file__}) has no such message") from err


def event_message_class(event_msg_type: str) -> Any:
    """The message class the node subscribes to for ``event_msg_type``."""
    if event_msg_type not in EVENT_MESSAGES:
        raise ConfigError(f"event_msg_type {event_msg_type!r} is not one of "
                          f"{', '.join(EVENT_MESSAGES)}")
    package, name = EVENT_MESSAGES[event_msg_type]
    return message_class(package, name, needed_for=f"event_msg_type {event_msg_type}")
