"""Dependencies point one way: the core never needs rclpy or message packages.

Only the ROS edge, ``derain_ros.node`` and the ``derain_ros.ros`` package, may import
rclpy or message packages. Two checks: every other module of derain_ros and
derain_training is imported in a fresh interpreter in which ``rclpy`` and all message
packages are made unimportable (no allow-list beyond the edge); and no source file
outside the edge imports them at all, not even inside a function (a lazy import passes
the first check but still ties the module to ROS).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Top-level packages of ROS itself; the core must import none of them.
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "event_camera_msgs",
                "dv_ros2_msgs", "diagnostic_msgs", "builtin_interfaces", "launch",
                "launch_ros", "cv_bridge")

PROBE = f"BLOCKED = {ROS_PACKAGES!r}\n" + r"""
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the core must not import ROS")
sys.meta_path.insert(0, Block())
import derain_ros, derain_training
def edge(name):
    return name == "derain_ros.node" or name == "derain_ros.ros" or name.startswith(
        "derain_ros.ros.")
names = []
for pkg in (derain_ros, derain_training):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not edge(info.name):
            importlib.import_module(info.name)
            names.append(info.name)
print(len(names), "modules imported without ROS")
"""

_ROS_IMPORT = re.compile(
    r"^\s*(?:import|from)\s+(?:" + "|".join(re.escape(p) for p in ROS_PACKAGES) + r")\b",
    re.MULTILINE)


def test_core_imports_without_ros():
    env = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules imported without ROS" in result.stdout


def _is_edge(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return rel == "derain_ros/node.py" or rel.startswith("derain_ros/ros/")


def test_no_ros_imports_outside_the_edge():
    files = [p for d in ("derain_ros", "training") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20  # the walk found the sources
    offenders = []
    for path in files:
        if _is_edge(path):
            continue
        for match in _ROS_IMPORT.finditer(path.read_text(encoding="utf-8")):
            line = path.read_text(encoding="utf-8").count("\n", 0, match.start()) + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()}")
    assert not offenders, ("ROS imports outside derain_ros/node.py and derain_ros/ros/:\n"
                           + "\n".join(offenders))


def test_the_static_check_sees_an_import():
    """The pattern catches the forms it must (so an empty result above means something)."""
    for src in ("import rclpy", "    from rclpy.qos import QoSProfile",
                "from sensor_msgs.msg import Image", "import dv_ros2_msgs.msg as m"):
        assert _ROS_IMPORT.search(src), src
    for src in ("import rclpyx", "from derain_ros.ros import qos", "# rclpy is not imported"):
        assert not _ROS_IMPORT.search(src), src
