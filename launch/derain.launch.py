"""Launch the deraining node: ``ros2 launch derain_ros derain.launch.py``.

Arguments: ``params_file`` (default: the package's config/derain.yaml), ``image_topic``
and ``event_topic`` (remappings of the node's relative inputs ``image`` and ``events``;
the defaults are the drivers' topics, relative so that ``namespace`` moves them with a
driver in the same namespace; camera_info is read next to the image), ``device``, ``model``,
``namespace``, ``node_name`` and ``log_level``; ``device`` and ``model`` override the
params file. A checkpoint is set in the params file, or at run time with
``ros2 param set /derain_node checkpoint PATH``. Without launch_ros (e.g. the PyPI
wheels), ``derain-ros run --params-file config/derain.yaml`` starts the same node with
the same parameters.
"""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _default_params() -> str:
    try:
        share = Path(get_package_share_directory("derain_ros"))
    except PackageNotFoundError:  # run from a source checkout
        share = Path(__file__).resolve().parents[1]
    return str(share / "config" / "derain.yaml")


#: launch argument -> (default, description)
ARGUMENTS = {
    "params_file": (_default_params(), "parameters YAML of the node"),
    "image_topic": ("event_camera/image_raw", "frame topic to derain (remaps `image`)"),
    "event_topic": ("event_camera/events", "event topic of the event camera (remaps `events`)"),
    "device": ("auto", "auto, cpu, cuda, cuda:N"),
    "model": ("derain_tiny", "network size: derain_tiny, derain_base, *_frames"),
    "namespace": ("", "namespace of the node"),
    "node_name": ("derain_node", "name of the node"),
    "log_level": ("info", "ROS log level"),
}


def generate_launch_description() -> LaunchDescription:
    """The node with the params file, topic remappings and overrides from the arguments."""
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in ARGUMENTS.items()]
    overrides = {name: LaunchConfiguration(name) for name in ("device", "model")}
    node = Node(
        package="derain_ros",
        executable="derain_node",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("events", LaunchConfiguration("event_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*args, node])
