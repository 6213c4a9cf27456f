"""Dependencies point one way: the core never needs rclpy or message packages.

Every module of derain_ros and derain_training, except the ROS edge (``node`` and
``ros``), is imported in a fresh interpreter in which ``rclpy`` and all message
packages are made unimportable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = ("rclpy", "sensor_msgs", "std_msgs", "event_camera_msgs", "dv_ros2_msgs",
           "diagnostic_msgs", "builtin_interfaces", "launch", "launch_ros", "cv_bridge")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the core must not import ROS")
sys.meta_path.insert(0, Block())
import derain_ros, derain_training
EDGE = ("derain_ros.node", "derain_ros.ros", "derain_ros.demo", "derain_ros.eval.replay",
        "derain_ros.doctor")
names = []
for pkg in (derain_ros, derain_training):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not info.name.startswith(EDGE):
            importlib.import_module(info.name)
            names.append(info.name)
print(len(names), "modules imported without ROS")
"""


def test_core_imports_without_ros():
    env = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules imported without ROS" in result.stdout
