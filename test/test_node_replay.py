"""The node as a replay tool uses it, started by ``derain-ros run --params-file``.

``drop_policy: block`` with reliable QoS: frames published as fast as possible all come
out (frames in == frames out). Also the other inputs: ``dv_ros2_msgs/EventArray``
events and ``CompressedImage`` frames. Real DDS, node in its own process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_node import H, Rig, W, stop_node

from conftest import ros_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 42
NODE = "derain_replay_node"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def replay_node(tmp_path_factory) -> Iterator[tuple]:
    import subprocess

    tmp = tmp_path_factory.mktemp("replay")
    params = yaml.safe_load((ROOT / "config" / "derain.yaml").read_text())
    params["/**"]["ros__parameters"].update(
        event_msg_type="EventArray", image_transport="compressed", publish_compressed=False,
        image_qos_reliability="reliable", image_qos_depth=100,
        event_qos_reliability="reliable", drop_policy="block", block_queue_depth=100,
        warmup_width=W, warmup_height=H, num_threads=1, diagnostics_period=0.2)
    params_file = tmp / "replay.yaml"
    params_file.write_text(yaml.safe_dump(params))
    log = tmp / "node.log"
    cmd = [sys.executable, "-m", "derain_ros.cli", "run", "--params-file", str(params_file),
           "--allow-random-weights", "--name", NODE,
           "--ros-args", "-r", "image:=/rig42/image_raw", "-r", "events:=/rig42/events"]
    proc = subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    rig = Rig(NODE, "/rig42/image_raw", "/rig42/events", event_type="EventArray",
              domain_id=DOMAIN_ID, compressed=True)
    rig.log_path = log
    ok = rig.spin_until(lambda: len(rig.diagnostics) > 0 or proc.poll() is not None, 90)
    try:
        if not ok or proc.poll() is not None:
            pytest.fail(f"node did not start:\n{log.read_text()}")
        assert rig.wait_matched(), "the node never subscribed to the rig's topics"
        yield proc, rig
    finally:
        rig.close()
        stop_node(proc)


def test_block_mode_loses_no_frame(replay_node) -> None:
    proc, rig = replay_node
    rig.step(2, events=60)  # let discovery settle
    assert rig.spin_until(lambda: len(rig.outputs["image"]) >= 1, 20)
    stamps = rig.step(20, events=60, pause=0.0)  # as fast as the rig can publish
    assert rig.wait_outputs(stamps, timeout=60)  # the last one after event_timeout
    d = rig.diag()
    assert d["dropped_stale"] == "0" and d["dropped_queue_full"] == "0"
    assert int(d["sync_events_in"]) > 0 and int(d["sync_packets_malformed"]) == 0
    out = [m for m in rig.outputs["image"] if m.header.frame_id == "camera"]
    assert all(m.encoding == "bgr8" for m in out)  # PNG colour frames decode as bgr8
    assert proc.poll() is None


def test_compressed_input_by_remapping_and_optional_outputs_not_advertised(
        replay_node) -> None:
    """image_transport's convention: ``image_transport: compressed`` subscribes to the
    remapped image topic + ``/compressed``; outputs that are off are not on the graph."""
    _, rig = replay_node
    graph = rig.node

    def node_subs(topic: str) -> list:
        return [i.topic_type for i in graph.get_subscriptions_info_by_topic(topic)
                if i.node_name == NODE]

    def node_pubs(topic: str) -> list:
        return [i.topic_type for i in graph.get_publishers_info_by_topic(topic)
                if i.node_name == NODE]

    assert node_subs("/rig42/image_raw/compressed") == ["sensor_msgs/msg/CompressedImage"]
    assert node_subs("/rig42/image_raw") == []
    assert node_subs("/rig42/camera_info") == ["sensor_msgs/msg/CameraInfo"]
    assert node_pubs(f"/{NODE}/image") == ["sensor_msgs/msg/Image"]
    assert node_pubs(f"/{NODE}/camera_info") == ["sensor_msgs/msg/CameraInfo"]
    for off in ("rain_layer", "events_image", "image/compressed"):
        assert node_pubs(f"/{NODE}/{off}") == [], off
