"""The interfaces over real DDS: two processes, loopback only.

The test process publishes ``sensor_msgs/Image``, ``event_camera_msgs/EventPacket`` and
``dv_ros2_msgs/EventArray`` messages; a second process (``peers/echo.py``) echoes
them back; every field must survive the round trip. The EventPacket type hash seen
on the DDS graph must equal the one real drivers and real bags carry.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import domain, ros_env

pytestmark = pytest.mark.ros

DOMAIN_ID = 12
EVENT_PACKET_HASH = "RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa"
PEER = Path(__file__).parent / "peers" / "echo.py"


@pytest.fixture(scope="module")
def echo_peer() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, str(PEER), "--seconds", "120"], env=ros_env(DOMAIN_ID),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # log lines may come first; the peer says when it is ready
            seen.append(line)
            if "echo ready" in line or len(seen) > 50:
                break
        assert seen and "echo ready" in seen[-1], f"echo peer failed to start: {''.join(seen)}"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def node():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=domain(DOMAIN_ID))
    node = rclpy.create_node("derain_test_driver", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def _round_trip(node, msg_type, name: str, msg, timeout: float = 20.0):
    """Publish ``msg`` until its echo comes back; return the echoed message."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received = []
    pub = node.create_publisher(msg_type, f"/derain_test/in/{name}", qos)
    sub = node.create_subscription(msg_type, f"/derain_test/out/{name}", received.append, qos)
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while not received and time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                pub.publish(msg)
                next_send = time.monotonic() + 0.5
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)
    assert received, f"no echo of {name} within {timeout} s"
    return received[0]


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_event_packet_type_hash_matches_real_drivers(node, echo_peer):
    topic = "/derain_test/out/events"
    _wait_for(lambda: bool(node.get_publishers_info_by_topic(topic)))
    infos = node.get_publishers_info_by_topic(topic)
    assert infos, "echo peer's EventPacket publisher not discovered"
    assert infos[0].topic_type == "event_camera_msgs/msg/EventPacket"
    assert str(infos[0].topic_type_hash) == EVENT_PACKET_HASH


def test_image_round_trip(node, echo_peer):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msg = Image(height=480, width=640, encoding="rgb8", is_bigendian=0, step=640 * 3,
                data=pixels.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg.header.frame_id = "camera"
    echo = _round_trip(node, Image, "image", msg)
    assert (echo.height, echo.width, echo.encoding, echo.step) == (480, 640, "rgb8", 1920)
    assert (echo.header.stamp.sec, echo.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert echo.header.frame_id == "camera"
    assert np.array_equal(np.frombuffer(bytes(echo.data), np.uint8).reshape(480, 640, 3), pixels)


def test_event_packet_round_trip_100k_events(node, echo_peer):
    from event_camera_msgs.msg import EventPacket

    payload = np.random.default_rng(2).integers(0, 256, 100_000 * 8, dtype=np.uint8)
    msg = EventPacket(height=480, width=640, seq=42, time_base=1_702_309_120_762_236_018,
                      encoding="libcaer", is_bigendian=False, events=payload.tobytes())
    msg.header.frame_id = "event_camera"
    echo = _round_trip(node, EventPacket, "events", msg)
    assert (echo.height, echo.width, echo.seq, echo.time_base) == (480, 640, 42, msg.time_base)
    assert (echo.encoding, echo.is_bigendian, echo.header.frame_id) == ("libcaer", False,
                                                                        "event_camera")
    assert np.array_equal(np.frombuffer(bytes(echo.events), np.uint8), payload)


def test_event_array_round_trip(node, echo_peer):
    from builtin_interfaces.msg import Time
    from dv_ros2_msgs.msg import Event, EventArray

    rng = np.random.default_rng(3)
    n = 2000
    xs, ys = rng.integers(0, 346, n), rng.integers(0, 260, n)
    ts = np.sort(rng.integers(0, 10**9, n))
    ps = rng.integers(0, 2, n).astype(bool)
    msg = EventArray(height=260, width=346, events=[
        Event(x=int(x), y=int(y), ts=Time(sec=5, nanosec=int(t)), polarity=bool(p))
        for x, y, t, p in zip(xs, ys, ts, ps, strict=True)
    ])
    echo = _round_trip(node, EventArray, "event_array", msg)
    assert (echo.height, echo.width, len(echo.events)) == (260, 346, n)
    got = np.array([(e.x, e.y, e.ts.sec, e.ts.nanosec, e.polarity) for e in echo.events])
    want = np.stack([xs, ys, np.full(n, 5), ts, ps.astype(int)], axis=1)
    assert np.array_equal(got, want)
