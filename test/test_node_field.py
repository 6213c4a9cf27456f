"""Field faults through a real node process over DDS (issue #15, part A).

Each test drives one fault, then normal traffic, and checks that output recovers, that
/diagnostics says what happened, and that the frames add up (frames in = published +
every kind of drop + in flight). One node process serves the module; the last test ends
it with SIGTERM during a long inference. The ROS-free twins are in test_sync_recovery.py.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
import test_node as tn
from test_node import MS, PERIOD, Rig, get_param, node_command

from conftest import ros_env

pytestmark = pytest.mark.ros

DOMAIN_ID = 43
NODE = "derain_field_node"
IMAGE_TOPIC = "/rig43/image_raw"
EVENT_TOPIC = "/rig43/events"
HOUR = 3600 * 1000 * MS
BIG_W, BIG_H = 1000, 750  # a frame whose first inference takes seconds here


class FieldRig(Rig):
    """The test_node rig with a frame period of choice and faults to inject."""

    def step_at(self, frames: int, period: int, events: int = 300) -> list[int]:
        stamps = []
        for _ in range(frames):
            t0, t1 = self.t, self.t + period
            if events:
                edges = np.linspace(t0, t1 + 2 * MS, 4).astype(np.int64)
                for a, b in itertools.pairwise(edges):
                    self.pub_events.publish(self.events_packet(int(a), int(b), events // 3))
            self.pub_image.publish(self.frame_msg(t1))
            stamps.append(t1)
            self.t = t1
            self.spin_for(0.03)
        return stamps

    def garbage_packet(self, t0: int) -> None:
        """One packet with its own time base (a garbage libcaer packet)."""
        from derain_ros.events import make_encoder

        encoder, self.encoder = self.encoder, make_encoder("libcaer", tn.W, tn.H)
        try:
            self.pub_events.publish(self.events_packet(t0, t0 + MS, 50))
        finally:
            self.encoder = encoder


def _start(log, **params) -> subprocess.Popen:
    cmd = node_command(NODE, IMAGE_TOPIC, EVENT_TOPIC, **params)
    return subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def node_proc(tmp_path_factory) -> Iterator[subprocess.Popen]:
    tmp = tmp_path_factory.mktemp("field")
    log = tmp / "node.log"
    proc = _start(log, image_width=0, image_height=0, max_frame_pixels=6_000_000,
                  shutdown_timeout_s=0.5, degraded_error_s=1.5, stall_timeout_s=0.5,
                  runtime_cache_dir=str(tmp / "cache"))
    proc.log_path = log  # type: ignore[attr-defined]
    proc.tmp = tmp  # type: ignore[attr-defined]
    yield proc
    tn.stop_node(proc)


@pytest.fixture(scope="module")
def rig(node_proc) -> Iterator[FieldRig]:
    rig = FieldRig(NODE, IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
    rig.log_path = node_proc.log_path
    ok = rig.spin_until(lambda: len(rig.diagnostics) > 0 or node_proc.poll() is not None, 90)
    if not ok or node_proc.poll() is not None:
        rig.close()
        pytest.fail(f"node did not start:\n{node_proc.log_path.read_text()}")
    assert rig.wait_matched(), "the node never subscribed to the rig's topics"
    rig.step(3)
    assert rig.wait_outputs(rig.step(3)[:2]), "no output from the node"
    yield rig
    rig.close()


def delta(after: dict, before: dict, key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def accounted(rig: FieldRig) -> dict:
    """Once nothing is in flight, frames in == published + every kind of drop."""
    d: dict = {}

    def settled() -> bool:
        d.update(rig.diag())
        return d.get("frames_in_flight") == "0"

    assert rig.spin_until(settled, 20), d
    assert d["frames_unaccounted"] == "0", {k: v for k, v in d.items()
                                            if k.startswith(("frames", "dropped", "errors"))}
    assert int(d["frames_received"]) == (int(d["frames_published"])
                                         + int(d["frames_dropped"]))
    return d


def recovers(rig: FieldRig, period: int = PERIOD, within: int = 3) -> list[int]:
    """Normal traffic after a fault: frames from ``within`` on come out, with events."""
    before = rig.diag()
    stamps = rig.step_at(8, period)
    rig.step_at(1, period)
    assert rig.wait_outputs(stamps[within:])
    d = accounted(rig)
    # frames after the recovery carry their events again
    assert delta(d, before, "sync_windows_events_missing") <= within
    return stamps


def test_startup_warns_when_a_frame_can_exceed_the_shm_segment(rig, node_proc) -> None:
    d = rig.diag()
    assert d["shm_segment_bytes"] == str(32 * 1024 * 1024)
    assert int(d["max_frame_bytes"]) > int(d["shm_segment_bytes"])
    assert "shared-memory segment" in node_proc.log_path.read_text()


@pytest.mark.parametrize("jump", [HOUR, -HOUR], ids=["hour_ahead", "hour_behind"])
def test_one_garbage_event_packet_then_normal_traffic(rig, node_proc, jump) -> None:
    before = rig.diag()
    rig.step(2)
    rig.garbage_packet(rig.t + jump)
    recovers(rig)
    d = rig.diag()
    assert delta(d, before, "sync_clock_resets") + delta(d, before, "sync_clock_resyncs") >= 1
    assert delta(d, before, "sync_frames_stale") < 3 and d["resyncing"] == "False"


def test_sensor_clock_restart_at_20_fps(rig, node_proc) -> None:
    before = rig.diag()
    start = len(node_proc.log_path.read_text())
    rig.step(2)
    rig.t -= 10 * HOUR  # the DAVIS restarted: both streams from a new zero
    rig.encoder.reset()
    rig.seq = 0
    recovers(rig, period=50 * MS)
    d = rig.diag()
    assert delta(d, before, "sync_clock_resets") == 1
    assert any("clock reset" in m.status[0].message for m in rig.diagnostics[-30:])
    # logged once, not once per frame until the streams agree again
    assert node_proc.log_path.read_text()[start:].count("time jumped backwards") == 1


def test_one_frame_from_the_past_does_not_disable_events(rig, node_proc) -> None:
    before = rig.diag()
    rig.step(2)
    rig.pub_image.publish(rig.frame_msg(rig.t - 80 * MS))  # one frame 80 ms in the past
    rig.spin_for(0.05)
    recovers(rig)
    mid = rig.diag()
    assert delta(mid, before, "sync_clock_resets") == 1
    recovers(rig, within=0)  # events are not disabled: no stale packets any more
    assert delta(rig.diag(), mid, "sync_packets_stale") == 0


def test_oversized_frame_is_dropped_before_conversion(rig, node_proc) -> None:
    from sensor_msgs.msg import Image

    from derain_ros.ros import header_from

    before = rig.diag()
    # 4000 x 3000 mono8 declared, only a few bytes sent: refused from the fields alone
    # (converting it would fail as a bad image; inferring on it would cost gigabytes)
    big = Image(header=header_from(rig.t + PERIOD // 2, "camera"), height=3000, width=4000,
                encoding="mono8", step=4000)
    big.data = bytes(16)
    rig.pub_image.publish(big)
    rig.spin_for(0.1)
    recovers(rig, within=0)
    d = rig.diag()
    assert delta(d, before, "dropped_too_large") == 1
    assert delta(d, before, "dropped_bad_image") == 0


def test_format_change_with_a_waiting_frame_adds_up(rig, node_proc) -> None:
    from derain_ros.events import make_encoder
    from derain_ros.records import EventBatch
    from derain_ros.ros import header_from

    before = rig.diag()
    rig.step(2)
    waiting = rig.t + PERIOD
    rig.pub_image.publish(rig.frame_msg(waiting))  # waits for its events ...
    rig.spin_for(0.02)
    from event_camera_msgs.msg import EventPacket

    w2, h2 = tn.W * 2, tn.H * 2  # ... when the event camera changes format
    batch = EventBatch(np.array([waiting + MS]), np.array([1]), np.array([1]), np.array([1]),
                       w2, h2)
    payload, tb = make_encoder("libcaer", w2, h2).encode(batch)
    msg = EventPacket(header=header_from(waiting + MS, "davis"), height=h2, width=w2,
                      seq=rig.seq + 1, time_base=tb, encoding="libcaer")
    msg.events = payload
    rig.seq += 1
    rig.pub_events.publish(msg)
    rig.t = waiting
    assert rig.wait_outputs([waiting])
    rig.encoder = make_encoder("libcaer", tn.W, tn.H)  # back to the usual camera
    rig.seq = 0
    recovers(rig)
    assert delta(rig.diag(), before, "sync_format_changes") == 2


def test_first_frame_after_a_silence_keeps_its_events(rig, node_proc) -> None:
    rig.step(2)
    rig.spin_for(0.6)  # longer than silence_timeout_ms
    before = rig.diag()
    assert before["events_silent"] == "True"
    t0, t1 = rig.t, rig.t + PERIOD
    rig.pub_image.publish(rig.frame_msg(t1))  # the frame first, its packets just after
    for a, b in ((t0, t0 + 17 * MS), (t0 + 17 * MS, t1 + 2 * MS)):
        rig.pub_events.publish(rig.events_packet(a, b, 100))
    rig.t = t1
    assert rig.wait_outputs([t1])
    d = rig.diag()
    assert delta(d, before, "sync_windows_events_missing") == 0
    recovers(rig, within=0)


def test_frames_only_warns_then_errors_and_clears(rig, node_proc) -> None:
    rig.step(2)
    levels = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # frames without events for 3 s (> degraded_error_s)
        rig.step(1, events=0, pause=0.1)
        if rig.diagnostics:
            levels.append(rig.diag(fresh=False)["_level"])
    assert 1 in levels and levels[-1] == 2, levels  # WARN, then ERROR once it lasts
    d = rig.diag()
    assert d["frames_only"] == "True" and float(d["degraded_for_s"]) > 1.5
    assert "frames-only" in d["_message"]
    recovers(rig, within=1)
    d = rig.diag()
    assert d["frames_only"] == "False" and d["_level"] != 2


def test_model_parameter_follows_a_swap_to_another_size(rig, node_proc) -> None:
    from derain_ros.model import create_model, save_checkpoint

    ckpt = node_proc.tmp / "base"
    save_checkpoint(create_model("derain_base"), ckpt, provenance={"test": "field"})
    result = _set_param(rig, "checkpoint", str(ckpt.with_suffix(".safetensors")))
    assert result.successful, result.reason
    # (its graph is exported in a child process first: seconds, more on a loaded machine)
    assert rig.spin_until(lambda: get_param(rig, "model", NODE) == "derain_base", 90)
    assert rig.diag()["model"].startswith("derain_base")
    recovers(rig, within=1)


def test_a_second_node_of_the_same_name_is_reported(rig, node_proc, tmp_path) -> None:
    log = tmp_path / "twin.log"
    twin = _start(log, image_width=tn.W, image_height=tn.H)
    try:
        assert rig.spin_until(lambda: "another node named" in log.read_text()
                              or twin.poll() is not None, 90), log.read_text()
        assert "another node named" in log.read_text()
        # (both publish diagnostics now: either one's says so)
        assert rig.spin_until(lambda: rig.diag()["duplicate_node_name"] == "True", 10)
    finally:
        tn.stop_node(twin)
    assert rig.spin_until(lambda: rig.diag()["duplicate_node_name"] == "False", 10)


def _signal_during_a_long_inference(rig: FieldRig, proc: subprocess.Popen,
                                    signum: int) -> None:
    """A big frame in inference, more frames waiting, then ``signum``: exit 0 within
    ``shutdown_timeout_s`` (+ the exit itself), no publish error on the way out."""
    rig.step(2)
    big = rig.t + PERIOD
    rig.pub_image.publish(rig.frame_msg(big, width=BIG_W, height=BIG_H))
    rig.t = big
    rig.step(3, pause=0.1)  # frames keep coming while the big one is in inference
    assert rig.spin_until(lambda: rig.diag()["output_stalled"] == "True", 15)
    assert rig.diag(fresh=False)["_level"] >= 1
    start = time.monotonic()
    proc.send_signal(signum)
    rc = proc.wait(timeout=30)
    took = time.monotonic() - start
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert rc == 0, log[-3000:]
    assert took < 0.5 + 2.0, (took, log[-3000:])  # shutdown_timeout_s + the exit itself
    assert "publish_error" not in log and "Failed to publish" not in log, log[-3000:]


def test_sigterm_during_a_long_inference_ends_cleanly_and_soon(rig, node_proc) -> None:
    """SIGTERM: what systemd, docker and launch send. Ends the module's node."""
    _signal_during_a_long_inference(rig, node_proc, signal.SIGTERM)


def test_sigint_during_a_long_inference_ends_cleanly_and_soon(rig, node_proc,
                                                              tmp_path) -> None:
    """SIGINT (Ctrl-C) the same way, on a fresh node of the same name (the module's
    ended in the test above) that the rig finds again."""
    assert node_proc.poll() is not None  # runs after the SIGTERM test
    log = tmp_path / "node.log"
    proc = _start(log, image_width=0, image_height=0, max_frame_pixels=6_000_000,
                  shutdown_timeout_s=0.5, stall_timeout_s=0.5,
                  runtime_cache_dir=str(node_proc.tmp / "cache"))
    proc.log_path = log  # type: ignore[attr-defined]
    try:
        n = len(rig.diagnostics)
        assert rig.spin_until(lambda: len(rig.diagnostics) > n or proc.poll() is not None,
                              90), log.read_text()[-3000:]
        assert proc.poll() is None and rig.wait_matched(), log.read_text()[-3000:]
        rig.t += 10 * PERIOD  # a clean gap after the other node's last frame
        # the rig's output subscription discovers the new publisher on its own time:
        # outputs published before that are gone (volatile), so step until one arrives
        assert any(rig.wait_outputs(rig.step(3)[1:], timeout=5) for _ in range(6)), \
            log.read_text()[-3000:]
        _signal_during_a_long_inference(rig, proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            tn.stop_node(proc)


def _set_param(rig: FieldRig, name: str, value: str) -> object:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = rig.node.create_client(SetParameters, f"/{NODE}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=10)
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter(name=name, value=pv)]))
        assert rig.spin_until(future.done, 30)
        return future.result().results[0]
    finally:
        rig.node.destroy_client(client)
