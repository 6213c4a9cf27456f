"""The deraining node over real DDS: a node process, a rig publisher in this process.

One node process serves the module (starting one costs seconds: torch, numba, warm-up);
each test drives one case through it and reads the outcome from ``~/image`` and
``/diagnostics``. The network is ``derain_tiny`` (shipped weights, else random init) at
64 x 48 px (the weights do not matter for plumbing). Frames are stamped in sensor time (a DAVIS).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import domain, ros_env, stop_node
from derain_ros.model import default_checkpoint_path

pytestmark = pytest.mark.ros

DOMAIN_ID = 41
W, H = 64, 48
#: The node loads the shipped derain_tiny weights where they exist, else (allowed here)
#: a random-init network; the diagnostics must say which.
SHIPPED = default_checkpoint_path("derain_tiny").is_file()
MS = 1_000_000
PERIOD = 33 * MS
NODE = "derain_test_node"
IMAGE_TOPIC = "/rig41/image_raw"
EVENT_TOPIC = "/rig41/events"
MAX_BUFFER = 13 * 20_000  # 20k decoded events


def node_command(name: str, image_topic: str, event_topic: str, **params: object) -> list[str]:
    """``python -m derain_ros.node`` with test parameters (random tiny network, 64 x 48),
    its inputs remapped onto the rig's topics."""
    base = {
        "allow_random_weights": True,
        "warmup_width": W, "warmup_height": H, "image_width": W, "image_height": H,
        "num_threads": 1, "diagnostics_period": 0.2, "silence_timeout_ms": 400.0,
        "event_timeout_ms": 100.0, "max_buffer_bytes": MAX_BUFFER,
        "publish_rain_layer": True, "publish_events_image": True,
        "drop_policy": "block",  # every frame comes out: deterministic tests
    }
    base.update(params)
    cmd = [sys.executable, "-m", "derain_ros.node", "--ros-args", "-r", f"__node:={name}",
           "-r", f"image:={image_topic}", "-r", f"events:={event_topic}"]
    for key, value in base.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{key}:={text}"]
    return cmd


def start_node(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


class Rig:
    """A camera + event camera on DDS, and a listener for the node's outputs."""

    def __init__(self, node_name: str, image_topic: str, event_topic: str,
                 event_type: str = "EventPacket", domain_id: int = DOMAIN_ID,
                 compressed: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from dv_ros2_msgs.msg import EventArray
        from event_camera_msgs.msg import EventPacket
        from rclpy.context import Context
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from derain_ros.events import make_encoder

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain(domain_id))
        self.node = rclpy.create_node("derain_test_rig", context=self.context)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.compressed = compressed
        if compressed:
            from sensor_msgs.msg import CompressedImage

            self.pub_image = self.node.create_publisher(CompressedImage,
                                                        image_topic + "/compressed", reliable)
        else:
            self.pub_image = self.node.create_publisher(Image, image_topic, reliable)
        msg_type = EventArray if event_type == "EventArray" else EventPacket
        self.pub_events = self.node.create_publisher(msg_type, event_topic, reliable)
        self.event_type = event_type
        self.outputs: dict[str, list] = {"image": [], "rain_layer": [], "events_image": []}
        for name in self.outputs:
            self.node.create_subscription(Image, f"/{node_name}/{name}",
                                          self.outputs[name].append, reliable)
        self.diagnostics: list = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append,
                                      10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.encoder = make_encoder("libcaer", W, H)
        self.t = 1_700_000_000_000_000_000  # sensor time (ns)
        self.seq = 0
        self.rng = np.random.default_rng(0)
        self.log_path: Path | None = None

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def spin_until(self, cond: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return cond()

    def wait_matched(self, timeout: float = 30.0) -> bool:
        """True once the node subscribes to the rig's topics (DDS discovery is done)."""
        return self.spin_until(lambda: self.pub_image.get_subscription_count() > 0
                               and self.pub_events.get_subscription_count() > 0, timeout)

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    # ---------------------------------------------------------------- publishing

    def events_packet(self, t0: int, t1: int, n: int) -> object:
        """Random events in [t0, t1) as one EventPacket (libcaer) or EventArray."""
        from derain_ros.records import EventBatch
        from derain_ros.ros import header_from

        t = np.sort(self.rng.integers(t0 // 1000, t1 // 1000, n)) * 1000
        batch = EventBatch(t, self.rng.integers(0, W, n), self.rng.integers(0, H, n),
                           self.rng.integers(0, 2, n), W, H)
        self.seq += 1
        if self.event_type == "EventArray":
            from dv_ros2_msgs.msg import Event, EventArray

            msg = EventArray(header=header_from(int(t[0]), "davis"), height=H, width=W)
            msg.events = [Event(x=int(e_x), y=int(e_y), polarity=bool(e_p),
                                ts=header_from(int(e_t), "").stamp)
                          for e_t, e_x, e_y, e_p in zip(t, batch.x, batch.y, batch.p,
                                                        strict=True)]
            return msg
        from event_camera_msgs.msg import EventPacket

        payload, time_base = self.encoder.encode(batch)
        msg = EventPacket(header=header_from(int(t[0]), "davis"), height=H, width=W,
                          seq=self.seq, time_base=time_base, encoding="libcaer")
        msg.events = payload
        return msg

    def frame_msg(self, stamp: int, encoding: str = "rgb8", value: int | None = None,
                  width: int = W, height: int = H) -> object:
        from derain_ros.images import ENCODINGS
        from derain_ros.ros import header_from, image_msg

        spec = ENCODINGS[encoding]
        shape = (height, width) if spec.channels == 1 else (height, width, spec.channels)
        peak = np.iinfo(spec.dtype).max
        arr = (self.rng.integers(0, peak, shape) if value is None
               else np.full(shape, value)).astype(spec.dtype)
        if self.compressed:  # a PNG of the frame (colour frames as bgr8)
            import cv2
            from sensor_msgs.msg import CompressedImage

            msg = CompressedImage(header=header_from(stamp, "camera"), format="png")
            msg.data = cv2.imencode(".png", arr)[1].tobytes()
            return msg
        return image_msg(arr, encoding, header_from(stamp, "camera"))

    def step(self, frames: int = 1, encoding: str = "rgb8", events: int = 300,
             packets_per_frame: int = 3, pause: float = 0.03) -> list[int]:
        """Advance ``frames`` frame periods: event packets, then the frame. Returns stamps."""
        stamps = []
        for _ in range(frames):
            t0, t1 = self.t, self.t + PERIOD
            if events:
                edges = np.linspace(t0, t1 + 2 * MS, packets_per_frame + 1).astype(np.int64)
                for a, b in itertools.pairwise(edges):
                    self.pub_events.publish(self.events_packet(int(a), int(b),
                                                               events // packets_per_frame))
            self.pub_image.publish(self.frame_msg(t1, encoding))
            stamps.append(t1)
            self.t = t1
            self.spin_for(pause)
        return stamps

    # ---------------------------------------------------------------- reading

    def stamps_out(self, name: str = "image") -> list[int]:
        from derain_ros.sync import stamp_to_ns

        return [stamp_to_ns(m.header.stamp) for m in self.outputs[name]]

    def wait_outputs(self, stamps: list[int], name: str = "image", timeout: float = 20.0) -> bool:
        want = set(stamps)
        ok = self.spin_until(lambda: want <= set(self.stamps_out(name)), timeout)
        if not ok:  # say what came instead
            got = set(self.stamps_out(name))
            print(f"missing on {name}: {sorted(want - got)}; last out {sorted(got)[-8:]}; "
                  f"diagnostics {self.diag(fresh=False) if self.diagnostics else None}")
            if self.log_path is not None:
                print(self.log_path.read_text()[-4000:])
        return ok

    def diag(self, fresh: bool = True, timeout: float = 10.0) -> dict[str, str]:
        """Key/values of the node's latest diagnostics (waits for a new message)."""
        n = len(self.diagnostics)
        if fresh:
            self.spin_until(lambda: len(self.diagnostics) > n + 1, timeout)
        msg = self.diagnostics[-1]
        (status,) = [s for s in msg.status if "deraining" in s.name]
        values = {kv.key: kv.value for kv in status.values}
        values["_level"] = int.from_bytes(status.level, "little") if isinstance(
            status.level, bytes) else int(status.level)
        values["_message"] = status.message
        values["_name"], values["_hardware_id"] = status.name, status.hardware_id
        return values


#: Standard ROS 2 QoS overrides the module's node starts with (see test_qos_overrides_...):
#: the frame subscription made reliable (best-effort by the parameters), the output
#: publisher transient-local (volatile by default).
QOS_OVERRIDES = {
    f"qos_overrides.{IMAGE_TOPIC}.subscription.reliability": "reliable",
    f"qos_overrides./{NODE}/image.publisher.durability": "transient_local",
}


@pytest.fixture(scope="module")
def node_proc(tmp_path_factory) -> Iterator[subprocess.Popen]:
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = start_node(node_command(NODE, IMAGE_TOPIC, EVENT_TOPIC, **QOS_OVERRIDES), log)
    proc.log_path = log  # type: ignore[attr-defined]
    yield proc
    stop_node(proc)


@pytest.fixture(scope="module")
def rig(node_proc) -> Iterator[Rig]:
    rig = Rig(NODE, IMAGE_TOPIC, EVENT_TOPIC)
    rig.log_path = node_proc.log_path
    ok = rig.spin_until(lambda: len(rig.diagnostics) > 0 or node_proc.poll() is not None, 90)
    if not ok or node_proc.poll() is not None:
        rig.close()
        pytest.fail(f"node did not start:\n{node_proc.log_path.read_text()}")
    assert rig.wait_matched(), "the node never subscribed to the rig's topics"
    rig.step(3)  # prime the stream
    assert rig.wait_outputs(rig.step(3)[:2]), "no output from the node"
    yield rig
    rig.close()


def alive(rig: Rig, node_proc: subprocess.Popen) -> None:
    """The node still runs and still derains a fresh frame."""
    assert node_proc.poll() is None, node_proc.log_path.read_text()
    stamps = rig.step(3)
    assert rig.wait_outputs(stamps[:2]), "node stopped producing output"


def test_frames_and_events_in_derained_frames_out(rig: Rig, node_proc) -> None:
    stamps = rig.step(6)
    assert rig.wait_outputs(stamps[:5])
    by_stamp = {}
    for m in rig.outputs["image"]:
        by_stamp[m.header.stamp.sec * 10**9 + m.header.stamp.nanosec] = m
    for s in stamps[:5]:
        m = by_stamp[s]
        assert (m.header.frame_id, m.encoding, m.width, m.height) == ("camera", "rgb8", W, H)
        assert len(m.data) == W * H * 3
    assert rig.wait_outputs(stamps[:5], "rain_layer")
    assert rig.wait_outputs(stamps[:5], "events_image")
    d = rig.diag()
    assert float(d["frames_out_hz"]) > 0 and d["model"].startswith("derain_tiny")
    assert d["random_weights"] == str(not SHIPPED) and int(d["sync_events_in"]) > 0
    assert float(d["latency_p99_ms"]) > 0
    assert d["device"] == "cpu" and d["dtype"] == "float32"
    # the node's own cost outside inference, by stage, and its memory
    for key in ("overhead_cpu_ms_p50", "overhead_wall_ms_p50", "infer_ms_p50",
                "receive_cpu_ms_p50", "prepare_cpu_ms_p50", "publish_cpu_ms_p50"):
        assert 0 < float(d[key]) < 10_000, (key, d[key])
    assert float(d["overhead_wall_ms_p50"]) < float(d["latency_p99_ms"])
    assert 50 < float(d["rss_peak_mb"]) < 100_000 and float(d["rss_mb"]) > 50


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "bayer_rggb8",
             "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "bayer_rggb16", "bgr16"]


def test_every_camera_encoding_end_to_end(rig: Rig) -> None:
    from derain_ros.images import output_encoding

    sent = {}
    for enc in ENCODINGS:
        (stamp,) = rig.step(1, encoding=enc, pause=0.08)
        sent[stamp] = enc
    rig.step(1)
    assert rig.wait_outputs(list(sent))
    for m in rig.outputs["image"]:
        stamp = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        if stamp in sent:
            assert m.encoding == output_encoding(sent[stamp]), sent[stamp]
            assert (m.width, m.height) == (W, H)


def test_wrong_encoding_and_wrong_size_are_dropped_and_reported(rig: Rig, node_proc) -> None:
    before = rig.diag()
    bad = rig.frame_msg(rig.t + PERIOD // 2)
    bad.encoding = "yuv422_yuy2"  # no camera encoding we know
    rig.pub_image.publish(bad)
    short = rig.frame_msg(rig.t + PERIOD // 2 + 1)
    short.data = bytes(10)  # data does not fit width x height
    rig.pub_image.publish(short)
    rig.pub_image.publish(rig.frame_msg(rig.t + PERIOD // 2 + 2, width=32, height=24))
    rig.spin_for(0.3)
    alive(rig, node_proc)
    d = rig.diag()
    assert int(d.get("dropped_bad_image", 0)) - int(before.get("dropped_bad_image", 0)) == 2
    assert int(d["dropped_bad_image_size"]) - int(before.get("dropped_bad_image_size", 0)) == 1


def test_event_burst_fills_the_buffer_and_drops_are_counted(rig: Rig, node_proc) -> None:
    before = rig.diag()
    # 10x the normal rate, with frames held back so that events pile up in the buffer
    for i in range(12):
        t0 = rig.t + i * 3 * MS
        rig.pub_events.publish(rig.events_packet(t0, t0 + 3 * MS, 3000))
        rig.spin_for(0.005)
    rig.t += 36 * MS
    rig.spin_for(0.3)
    d = rig.diag()
    assert int(d["sync_packets_buffer_full"]) > int(before["sync_packets_buffer_full"])
    assert float(d["buffer_fill"]) <= 1.0
    alive(rig, node_proc)


def test_event_topic_silent_gives_frames_only_output_and_a_warning(rig: Rig, node_proc) -> None:
    rig.step(2)
    rig.spin_for(0.6)  # longer than silence_timeout_ms
    before = rig.diag()
    stamps = rig.step(4, events=0, pause=0.05)
    assert rig.wait_outputs(stamps), "frames must flow without events"
    d = rig.diag()
    assert d["events_silent"] == "True"
    assert "frames-only" in d["_message"] and d["_level"] == 1  # WARN
    # the first silent window still holds the tail of the last packet
    missing = int(d["sync_windows_events_missing"]) - int(before["sync_windows_events_missing"])
    assert missing >= 3
    stamps = rig.step(4)  # events back: windows with events again
    assert rig.wait_outputs(stamps[:3])
    after = rig.diag()
    # (the first frame may beat its packets to the node and still pass frames-only)
    assert int(after["sync_windows_events_missing"]) - int(d["sync_windows_events_missing"]) <= 1


def test_time_jumping_backwards_resets_and_continues(rig: Rig, node_proc) -> None:
    before = rig.diag()
    rig.step(3)
    rig.t -= 5_000_000_000  # the bag looped: 5 s back, the packet sequence restarts
    rig.encoder.reset()
    rig.seq = 0
    stamps = rig.step(5)
    assert rig.wait_outputs(stamps[1:4])
    d = rig.diag()
    assert int(d["sync_clock_resets"]) == int(before["sync_clock_resets"]) + 1
    assert any("clock reset" in m.status[0].message for m in rig.diagnostics[-20:])


def test_malformed_event_packets_are_counted(rig: Rig, node_proc) -> None:
    before = rig.diag()
    truncated = rig.events_packet(rig.t, rig.t + MS, 30)
    truncated.events = bytes(7)  # not a whole number of 8-byte libcaer events
    unknown = rig.events_packet(rig.t + MS, rig.t + 2 * MS, 30)
    unknown.encoding = "nonsense"
    rig.pub_events.publish(truncated)
    rig.pub_events.publish(unknown)
    rig.spin_for(0.2)
    alive(rig, node_proc)
    d = rig.diag()
    assert int(d["sync_packets_malformed"]) - int(before["sync_packets_malformed"]) == 2


def test_newest_policy_drops_stale_frames_and_keeps_the_last(rig: Rig, node_proc) -> None:
    """Live mode: a camera faster than the network; stale frames go, the newest comes out."""
    before = rig.diag()
    assert _set_param(rig, "drop_policy", "newest").successful
    try:
        stamps = rig.step(12, pause=0.0)  # a burst far faster than inference
        stamps += rig.step(1)  # its packets complete the last burst frame's window
        last = set(stamps[-2:])  # the newest work always comes out
        assert rig.spin_until(lambda: bool(last & set(rig.stamps_out())), 20)
        d = rig.diag()
        assert int(d["dropped_stale"]) > int(before["dropped_stale"])
        assert not _set_param(rig, "drop_policy", "sometimes").successful
    finally:
        assert _set_param(rig, "drop_policy", "block").successful
    alive(rig, node_proc)


def get_param(rig: Rig, name: str, node: str | None = None) -> object:
    """A string parameter of the node (``node``: its name, default this module's)."""
    from rcl_interfaces.srv import GetParameters

    client = rig.node.create_client(GetParameters, f"/{node or NODE}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(GetParameters.Request(names=[name]))
        assert rig.spin_until(future.done, 10)
        return future.result().values[0].string_value
    finally:
        rig.node.destroy_client(client)


def _set_param(rig: Rig, name: str, value: object) -> object:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = rig.node.create_client(SetParameters, f"/{NODE}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=10)
        pv = ParameterValue()
        if isinstance(value, bool):
            pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
        else:
            pv.type, pv.string_value = ParameterType.PARAMETER_STRING, str(value)
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter(name=name, value=pv)]))
        assert rig.spin_until(future.done, 30)
        return future.result().results[0]
    finally:
        rig.node.destroy_client(client)


def stream_until_swapped(rig: Rig, swaps: int, stamps: list[int], limit: int = 400) -> None:
    """Stream frames (their stamps appended to ``stamps``) until /diagnostics counts
    ``swaps`` checkpoint swaps: new weights swap in once a child process has exported
    their graph, seconds after the parameter was set."""
    while rig.diag().get("checkpoint_swaps") != str(swaps):
        stamps += rig.step(1, pause=0.15)
        assert len(stamps) < limit, "the swap never landed"


def test_checkpoint_swap_corrupt_is_refused_valid_is_taken(rig: Rig, node_proc, tmp_path) -> None:
    from derain_ros.model import create_model, save_checkpoint

    good = tmp_path / "tuned"
    save_checkpoint(create_model("derain_tiny"), good, provenance={"test": "swap"})
    bad = tmp_path / "broken"
    for suffix in (".safetensors", ".json"):
        data = (good.with_suffix(suffix)).read_bytes()
        if suffix == ".safetensors":
            data = data[: len(data) // 2]  # truncated on copy
        bad.with_suffix(suffix).write_bytes(data)
    running = rig.diag()["checkpoint"]
    result = _set_param(rig, "checkpoint", str(bad.with_suffix(".safetensors")))
    assert not result.successful and "refused" in result.reason
    d = rig.diag()
    assert int(d["checkpoint_swap_failures"]) == 1 and d["checkpoint"] == running
    assert "checkpoint_swap_failed" in d["last_problem"]
    alive(rig, node_proc)
    # a read-only parameter cannot change at run time
    assert not _set_param(rig, "model", "derain_base").successful
    # the good one is taken without interrupting the stream
    stamps = rig.step(2)
    result = _set_param(rig, "checkpoint", str(good.with_suffix(".safetensors")))
    assert result.successful, result.reason
    stream_until_swapped(rig, 1, stamps)
    stamps += rig.step(3)
    assert rig.wait_outputs(stamps[:-1])
    d = rig.diag()
    assert d["checkpoint_swaps"] == "1" and d["random_weights"] == "False"
    assert d["checkpoint"].endswith("tuned.safetensors")


def test_a_swap_that_fails_in_its_export_is_counted_and_set_back(rig: Rig, node_proc,
                                                                  tmp_path,
                                                                  monkeypatch) -> None:
    """Weights whose file and JSON agree (so the quick checks pass and the parameter is
    set) but lack a tensor: the child process's strict load refuses them, the node counts
    and logs the failure, sets ``checkpoint`` back and streams on with the old weights."""
    from derain_ros.model import create_model
    from derain_ros.model.checkpoint import write_checkpoint

    net = create_model("derain_tiny")
    tensors = dict(net.state_dict())
    tensors.pop(sorted(tensors)[0])
    partial = tmp_path / "partial"
    write_checkpoint(tensors, net.config, partial)
    before = rig.diag()
    stamps = rig.step(2)
    result = _set_param(rig, "checkpoint", str(partial.with_suffix(".safetensors")))
    assert result.successful, result.reason  # accepted for the export ...
    failures = int(before["checkpoint_swap_failures"]) + 1
    while int(rig.diag()["checkpoint_swap_failures"]) < failures:  # ... which fails
        stamps += rig.step(1, pause=0.15)
        assert len(stamps) < 400, "the failed swap was never counted"
    stamps += rig.step(3)
    assert rig.wait_outputs(stamps[:-1])
    d = rig.diag()
    assert d["checkpoint"] == before["checkpoint"] and d["checkpoint_swaps"] == \
        before["checkpoint_swaps"] and d["checkpoint_swap_pending"] == "False"
    assert "checkpoint_swap_failed" in d["last_problem"]
    assert rig.spin_until(lambda: get_param(rig, "checkpoint") == before["checkpoint"], 10)
    alive(rig, node_proc)
    # the tool's client (derain-train adapt --node) waits for that outcome and reports it
    from derain_ros.ros.params import set_checkpoint

    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain(DOMAIN_ID)))
    ok, reason = set_checkpoint(f"/{NODE}", str(partial.with_suffix(".safetensors")))
    assert not ok and "could not load the weights" in reason, reason
    # (the rig's queue holds statuses from while the client waited: wait for a new one)
    assert rig.spin_until(lambda: int(rig.diag(fresh=False)["checkpoint_swap_failures"])
                          == failures + 1, 10)
    assert rig.diag()["checkpoint"] == before["checkpoint"]


# ---------------------------------------------------------------- ROS 2 camera conventions


def test_resolved_names_are_logged_once_at_start_up(rig: Rig, node_proc) -> None:
    """Relative inputs remapped (``-r image:=/rig41/image_raw``): the log says where each
    topic really is, once, with its type and QoS after overrides."""
    lines = [ln for ln in node_proc.log_path.read_text().splitlines() if "topic: " in ln]
    text = "\n".join(lines)
    for want in (f"subscribes {IMAGE_TOPIC} [sensor_msgs/Image] (reliable,",
                 "subscribes /rig41/camera_info [sensor_msgs/CameraInfo] (best_effort,",
                 f"subscribes {EVENT_TOPIC} [event_camera_msgs/EventPacket] (best_effort,",
                 f"publishes /{NODE}/image [sensor_msgs/Image] (reliable, transient_local,",
                 f"publishes /{NODE}/camera_info [sensor_msgs/CameraInfo]",
                 f"publishes /{NODE}/image/compressed [sensor_msgs/CompressedImage]",
                 f"publishes /{NODE}/rain_layer [sensor_msgs/Image]",
                 "publishes /diagnostics [diagnostic_msgs/DiagnosticArray]"):
        assert sum(want in ln for ln in lines) == 1, (want, text)


def test_qos_overrides_change_the_qos_seen_on_the_graph(rig: Rig) -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    def node_side(infos: list) -> list:
        return [i.qos_profile for i in infos if i.node_name == NODE]

    (image_sub,) = node_side(rig.node.get_subscriptions_info_by_topic(IMAGE_TOPIC))
    (event_sub,) = node_side(rig.node.get_subscriptions_info_by_topic(EVENT_TOPIC))
    (out_pub,) = node_side(rig.node.get_publishers_info_by_topic(f"/{NODE}/image"))
    (info_pub,) = node_side(rig.node.get_publishers_info_by_topic(f"/{NODE}/camera_info"))
    assert image_sub.reliability == ReliabilityPolicy.RELIABLE  # overridden
    assert event_sub.reliability == ReliabilityPolicy.BEST_EFFORT  # the parameter's
    assert out_pub.durability == DurabilityPolicy.TRANSIENT_LOCAL  # overridden
    assert info_pub.durability == DurabilityPolicy.VOLATILE


def test_camera_info_of_the_input_is_published_beside_the_clean_image(rig: Rig) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    from derain_ros.ros import header_from

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pub = rig.node.create_publisher(CameraInfo, "/rig41/camera_info", reliable)
    got: list = []
    sub = rig.node.create_subscription(CameraInfo, f"/{NODE}/camera_info", got.append,
                                       reliable)
    try:
        assert rig.spin_until(lambda: pub.get_subscription_count() > 0
                              and sub.get_publisher_count() > 0, 10)
        k = [500.0, 0.0, 32.0, 0.0, 500.0, 24.0, 0.0, 0.0, 1.0]
        stamps = []
        for _ in range(3):
            stamp = rig.t + PERIOD  # the next frame's
            pub.publish(CameraInfo(header=header_from(stamp, "camera_optical"), width=W,
                                   height=H, distortion_model="plumb_bob",
                                   d=[0.1, 0.0, 0.0, 0.0, 0.0], k=k))
            stamps += rig.step(1)
        assert rig.wait_outputs(stamps)
        assert rig.spin_until(lambda: {i.header.stamp.nanosec for i in got}
                              >= {s % 10**9 for s in stamps}, 10), got
        info = next(i for i in got if i.header.stamp.nanosec == stamps[-1] % 10**9)
        # the output image's header (frame_id "camera"), the input's calibration
        assert info.header.frame_id == "camera" and (info.width, info.height) == (W, H)
        assert list(info.k) == k and info.d[0] == 0.1
    finally:
        rig.node.destroy_subscription(sub)
        rig.node.destroy_publisher(pub)


def test_compressed_output_as_image_transport_writes_it(rig: Rig) -> None:
    import cv2
    from sensor_msgs.msg import CompressedImage

    got: list = []
    sub = rig.node.create_subscription(CompressedImage, f"/{NODE}/image/compressed",
                                       got.append, 10)
    try:
        assert rig.spin_until(lambda: sub.get_publisher_count() > 0, 10)
        rig.spin_for(0.3)  # the node sees the subscriber too
        stamps = rig.step(4)
        assert rig.wait_outputs(stamps[:3])
        assert rig.spin_until(lambda: len(got) >= 2, 10)
        msg = got[-1]
        assert msg.format == "rgb8; jpeg compressed bgr8"
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        raw = next(m for m in rig.outputs["image"] if m.header.stamp == msg.header.stamp)
        rgb = np.frombuffer(bytes(raw.data), np.uint8).reshape(H, W, 3)
        assert bgr.shape == (H, W, 3) and msg.header.frame_id == "camera"
        # the JPEG (quality 95) of the same picture, colours in BGR order
        ok, want = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok and np.array_equal(bgr, cv2.imdecode(want, cv2.IMREAD_COLOR))
    finally:
        rig.node.destroy_subscription(sub)


def test_diagnostics_have_a_fully_qualified_name_and_the_camera_as_hardware_id(
        rig: Rig) -> None:
    rig.step(2)
    d = rig.diag()
    assert d["_name"] == f"/{NODE}: deraining"
    assert d["_hardware_id"] == "camera" == d["hardware_id"]  # the frames' frame_id


def test_optional_publishers_are_advertised_only_while_on(rig: Rig, node_proc) -> None:
    topic = f"/{NODE}/rain_layer"

    def advertised() -> bool:
        return any(i.node_name == NODE for i in rig.node.get_publishers_info_by_topic(topic))

    assert advertised()
    assert _set_param(rig, "publish_rain_layer", False).successful
    assert rig.spin_until(lambda: not advertised(), 10), "still advertised when off"
    assert _set_param(rig, "publish_rain_layer", True).successful
    assert rig.spin_until(advertised, 10)
    alive(rig, node_proc)
