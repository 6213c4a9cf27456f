"""The lifecycle variant and ROS time, over real DDS: one ``derain_lifecycle_node``
process under ``use_sim_time``, driven by a test client through the standard lifecycle
services (``change_state``, ``get_state``) and a ``/clock`` publisher.

- unconfigured and inactive: nothing subscribed, nothing published, no output;
- configure loads the model, activate subscribes and derains, deactivate stops (the
  graph is empty again), cleanup lets go of the model;
- the node runs in a namespace with its inputs remapped to relative names
  (``-r __ns:=/rig45 -r image:=image_raw``): the namespace moves them and its outputs;
- the timeouts run on ROS time: with ``/clock`` frozen a frame without events waits,
  however long the wall clock runs; advancing ``/clock`` alone lets it through.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_node import PERIOD, Rig, node_command, stop_node

from conftest import ros_env

pytestmark = pytest.mark.ros

DOMAIN_ID = 45
NODE = "derain_lifecycle_test"
NAMESPACE = "/rig45"
FQN = f"{NAMESPACE}/{NODE}"
IMAGE_TOPIC = f"{NAMESPACE}/image_raw"  # what relative remappings resolve to there
EVENT_TOPIC = f"{NAMESPACE}/events"
#: what the ``derain_lifecycle_node`` entry point runs
LIFECYCLE_MAIN = ("import sys; from derain_ros.node import lifecycle_main; "
                  "sys.exit(lifecycle_main())")
T0 = 1_000 * 10**9  # simulated time /clock starts at (ns)
#: transition id -> the state it ends in (configure, cleanup, activate, deactivate)
GOAL = {1: "inactive", 2: "unconfigured", 3: "active", 4: "inactive"}


class LifecycleClient:
    """``ros2 lifecycle set/get`` from the test: the node's lifecycle services."""

    def __init__(self, rig: Rig) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self.rig = rig
        self.change = rig.node.create_client(ChangeState, f"{FQN}/change_state")
        self.get = rig.node.create_client(GetState, f"{FQN}/get_state")
        self.clock = rig.node.create_publisher(
            Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def _call(self, client: object, request: object, timeout: float) -> object | None:
        """The answer, or None when none came: a service response can be lost while
        DDS discovery of the client's reply reader is still under way (Fast DDS logs
        "failed to send response"), which a loaded machine makes likely."""
        assert self.rig.spin_until(client.service_is_ready, 60), "no lifecycle service"
        future = client.call_async(request)
        if not self.rig.spin_until(future.done, timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        for _ in range(5):  # idempotent: ask again when an answer was lost
            answer = self._call(self.get, GetState.Request(), 5.0)
            if answer is not None:
                return str(answer.current_state.label)
        raise AssertionError("get_state never answered")

    def transition(self, transition_id: int) -> bool:
        """Request a transition; when its answer is lost, the state says whether it ran."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        answer = self._call(self.change, request, 60.0)
        if answer is not None:
            return bool(answer.success)
        return self.state() == GOAL[transition_id]

    def set_time(self, t_ns: int) -> None:
        """Publish simulated time (a few times: the node's /clock subscription keeps 1)."""
        from rosgraph_msgs.msg import Clock

        from derain_ros.ros import stamp_msg

        for _ in range(5):
            self.clock.publish(Clock(clock=stamp_msg(t_ns)))
            self.rig.spin_for(0.04)


@pytest.fixture(scope="module")
def managed(tmp_path_factory) -> Iterator[tuple]:
    log = tmp_path_factory.mktemp("lifecycle") / "node.log"
    cmd = node_command(NODE, "image_raw", "events", use_sim_time=True)  # relative
    cmd[1:3] = ["-c", LIFECYCLE_MAIN]  # instead of -m derain_ros.node
    at = cmd.index("--ros-args") + 1
    cmd[at:at] = ["-r", f"__ns:={NAMESPACE}"]
    proc = subprocess_start(cmd, log)
    rig = Rig(FQN.strip("/"), IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
    rig.log_path = log
    client = LifecycleClient(rig)
    try:
        yield proc, rig, client
    finally:
        rig.close()
        stop_node(proc)


def subprocess_start(cmd: list[str], log: Path) -> subprocess.Popen:
    """The node process on this module's DDS domain."""
    return subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def _node_entities(rig: Rig) -> tuple[list, list]:
    subs = [i for i in rig.node.get_subscriptions_info_by_topic(IMAGE_TOPIC)
            if i.node_name == NODE]
    pubs = [i for i in rig.node.get_publishers_info_by_topic(f"{FQN}/image")
            if i.node_name == NODE]
    return subs, pubs


def test_configure_loads_activate_processes_nothing_before(managed) -> None:
    from lifecycle_msgs.msg import Transition

    proc, rig, client = managed
    assert client.state() == "unconfigured"
    client.set_time(T0)
    rig.step(2)
    assert client.transition(Transition.TRANSITION_CONFIGURE)
    assert client.state() == "inactive"
    assert "warm-up at" in rig.log_path.read_text()  # configure loaded the model
    rig.step(3)
    rig.spin_for(0.5)
    assert _node_entities(rig) == ([], []), "an inactive node subscribes or advertises"
    assert rig.outputs["image"] == [] and not rig.diagnostics  # nothing before activate
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    assert client.state() == "active"
    assert rig.wait_matched(), "activate did not subscribe"
    rig.step(3)
    stamps = rig.step(3)
    assert rig.wait_outputs(stamps[:2]), "no output once active"
    assert rig.diag()["_name"] == f"{FQN}: deraining"  # fully qualified, namespace too
    assert proc.poll() is None


def test_timeouts_follow_ros_time_not_the_wall_clock(managed) -> None:
    """A frame without events waits for them (event and silence timeouts): with /clock
    frozen it still waits after 1.5 s of wall time (10x the timeouts); advancing /clock
    by 2 s, and nothing else, lets it out frames-only."""
    _, rig, client = managed
    assert client.state() == "active"
    stamps = rig.step(3)
    assert rig.wait_outputs(stamps[:2])
    (waiting,) = rig.step(1, events=0)
    rig.spin_for(1.5)
    assert waiting not in rig.stamps_out(), "a wall-clock timeout let the frame out"
    client.set_time(T0 + 2 * 10**9)
    assert rig.wait_outputs([waiting], timeout=10), "advancing /clock did not time it out"
    assert waiting + PERIOD > rig.t  # and no other frame was needed to push it out


def test_deactivate_stops_and_cleanup_unloads(managed) -> None:
    from lifecycle_msgs.msg import Transition

    proc, rig, client = managed
    assert client.transition(Transition.TRANSITION_DEACTIVATE)
    assert client.state() == "inactive"
    assert rig.spin_until(lambda: _node_entities(rig) == ([], []), 10)
    n = len(rig.outputs["image"])
    rig.step(3)
    rig.spin_for(0.5)
    assert len(rig.outputs["image"]) == n, "output while inactive"
    assert client.transition(Transition.TRANSITION_CLEANUP)
    assert client.state() == "unconfigured"
    # and back: configure + activate again work on the same process
    assert client.transition(Transition.TRANSITION_CONFIGURE)
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    assert rig.wait_matched()
    rig.step(3)
    stamps = rig.step(3)
    assert rig.wait_outputs(stamps[:2])
    assert proc.poll() is None
