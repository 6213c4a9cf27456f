"""Two memory limits of a node in the field (#15 A.4, A.8), through a real node.

- An output larger than the DDS shared-memory segment: Fast DDS drops such a message
  without a trace, so the node checks each output against the segment of the profile it
  runs with: counted in /diagnostics (``errors_output_over_shm_segment``), logged, and the
  frames after it published as before. The node runs with a copy of the project's
  loopback profile whose segment is 256 kB, so a 400 x 300 rgb8 frame (360 kB) is "too
  large" without a frame of the real limit's size (32 MB: seconds of inference here).
- A burst of events: the buffer's high-water mark is handed back to the system once the
  burst has drained (``sync_buffer_releases``), not kept for the node's lifetime.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_node import PERIOD, node_command
from test_node_field import FieldRig

from conftest import ROOT, ros_env, stop_node

pytestmark = pytest.mark.ros

DOMAIN_ID = 49
NODE = "derain_limits_node"
IMAGE_TOPIC = "/rig49/image_raw"
EVENT_TOPIC = "/rig49/events"
SEGMENT = 256 * 1024


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[FieldRig]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    profile = tmp / "small_segment.xml"
    text = (ROOT / "config" / "fastdds_localhost.xml").read_text()
    assert "<segment_size>33554432</segment_size>" in text
    profile.write_text(text.replace("<segment_size>33554432</segment_size>",
                                    f"<segment_size>{SEGMENT}</segment_size>"))
    env = ros_env(DOMAIN_ID)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    log = tmp / "node.log"
    cmd = node_command(NODE, IMAGE_TOPIC, EVENT_TOPIC, image_width=0, image_height=0,
                       publish_rain_layer=False, publish_events_image=False,
                       max_buffer_bytes=40_000_000, runtime_cache_dir=str(tmp / "cache"))
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    rig = FieldRig(NODE, IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
    rig.log_path = log
    rig.proc = proc  # type: ignore[attr-defined]
    try:
        assert rig.spin_until(lambda: bool(rig.diagnostics) or proc.poll() is not None, 90)
        assert proc.poll() is None and rig.wait_matched(), log.read_text()[-3000:]
        assert rig.wait_outputs(rig.step(3)[1:]), log.read_text()[-3000:]
        yield rig
    finally:
        rig.close()
        stop_node(proc)


def test_output_over_the_shm_segment_is_counted_logged_and_traffic_goes_on(rig) -> None:
    log: Path = rig.log_path
    d = rig.diag()
    assert d["shm_segment_bytes"] == str(SEGMENT)
    # errors_<kind> keys appear with their first count (docs/recovery.md)
    assert d.get("errors_output_over_shm_segment", "0") == "0"  # 64 x 48: 9 kB, inside
    # three 400 x 300 frames: each derained output is 360 kB, over the segment
    for _ in range(3):
        rig.t += PERIOD
        rig.pub_image.publish(rig.frame_msg(rig.t, width=400, height=300))
        rig.spin_for(0.05)
    assert rig.spin_until(
        lambda: int(rig.diag().get("errors_output_over_shm_segment", 0)) >= 1, 60), \
        log.read_text()[-3000:]
    over = int(rig.diag()["errors_output_over_shm_segment"])
    text = log.read_text()
    assert "output_over_shm_segment" in text and f"over the {SEGMENT}-byte DDS" in text
    # back to the rig's size: published again, nothing more counted
    rig.t += 10 * PERIOD
    assert any(rig.wait_outputs(rig.step(3)[1:], timeout=10) for _ in range(3)), \
        log.read_text()[-3000:]
    assert int(rig.diag()["errors_output_over_shm_segment"]) == over
    assert rig.proc.poll() is None


def test_event_buffer_memory_is_handed_back_after_a_burst(rig) -> None:
    before = rig.diag()
    rig.step(2)
    # a burst: 800 k events (10.4 MB decoded, over the 8 MB worth handing back) before
    # the frame that drains them
    t0, t1 = rig.t, rig.t + PERIOD
    for k in range(10):
        a = t0 + k * (t1 - t0) // 10
        rig.pub_events.publish(rig.events_packet(a, a + (t1 - t0) // 10, 80_000))
        rig.spin_for(0.02)
    rig.pub_image.publish(rig.frame_msg(t1))
    rig.t = t1
    assert rig.wait_outputs([t1], timeout=30), rig.log_path.read_text()[-3000:]
    assert rig.wait_outputs(rig.step(3)[1:])  # normal traffic after it
    d = rig.diag()
    assert int(d["sync_buffer_bytes_peak"]) >= 8_000_000, d
    assert int(d["sync_buffer_releases"]) - int(before["sync_buffer_releases"]) == 1, d
    assert int(d["sync_buffer_bytes"]) < 1_000_000, d
