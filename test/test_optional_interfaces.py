"""Optional interface packages are imported only when asked for (issue #15 B.1).

``dv_ros2_msgs`` is in no ROS 2 distribution, so package.xml cannot declare it; the node
imported it unconditionally, so a workspace without it had no node at all. Here it is
made unimportable (``None`` in ``sys.modules``, as if never built): the node module still
imports, an EventPacket node is unaffected, and asking for EventArray is refused at
start-up, before the network loads, with the package to install and how.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import ROOT, ros_env

pytestmark = pytest.mark.ros

DOMAIN_ID = 48
#: As if dv_ros2_msgs were never built: importing it raises ModuleNotFoundError.
WITHOUT_DV = ("import sys\n"
              "sys.modules['dv_ros2_msgs'] = sys.modules['dv_ros2_msgs.msg'] = None\n")

PROBE = WITHOUT_DV + """
import derain_ros.node  # imports without dv_ros2_msgs
from derain_ros.errors import ConfigError
from derain_ros.ros.interfaces import event_message_class
print(event_message_class("EventPacket").__name__)
try:
    event_message_class("EventArray")
except ConfigError as err:
    print("refused:", err)
"""

START = WITHOUT_DV + """
from derain_ros.node import main
sys.exit(main(["derain_node", "--ros-args", "-p", "event_msg_type:=EventArray",
               "-p", "allow_random_weights:=true"]))
"""


def test_node_module_imports_without_dv_ros2_msgs() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], env=ros_env(DOMAIN_ID), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "EventPacket"
    assert lines[1].startswith("refused: event_msg_type EventArray needs the interface "
                               "package dv_ros2_msgs"), lines[1]
    assert "msg/dv_ros2_msgs" in lines[1] and "event_msg_type: EventPacket" in lines[1]


def test_an_eventarray_node_without_the_package_refuses_to_start_saying_why() -> None:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", START], env=ros_env(DOMAIN_ID), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "derain_node: cannot start: event_msg_type EventArray needs the interface " \
           "package dv_ros2_msgs" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    # refused before the network and the event kernels load (a full start takes ~10 s)
    assert "warm-up" not in out.stdout + out.stderr
    print(f"refused after {time.monotonic() - t0:.1f} s")


def test_replay_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from derain_ros.eval.errors import ReplayError
    from derain_ros.ros.session import msg_class

    monkeypatch.setitem(sys.modules, "dv_ros2_msgs", None)
    monkeypatch.setitem(sys.modules, "dv_ros2_msgs.msg", None)
    with pytest.raises(ReplayError, match=r"needs the interface package dv_ros2_msgs.*"
                                          r"msg/dv_ros2_msgs"):
        msg_class("dv_ros2_msgs/msg/EventArray")
    assert msg_class("event_camera_msgs/msg/EventPacket").__name__ == "EventPacket"
