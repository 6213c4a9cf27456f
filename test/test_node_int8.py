"""The node at dtype int8 over real DDS (#16): fp32 while it calibrates on its first
frames, then int8, reported in /diagnostics, and not one frame lost across the switch.

A node process and the rig of ``test_node`` (this process), on their own domain and
with a fresh runtime cache, so the node exports, calibrates and quantises here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from test_node import Rig, node_command, stop_node

from conftest import ros_env

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.ros

DOMAIN_ID = 44
NODE = "derain_int8_node"
IMAGE_TOPIC = "/rig44/image_raw"
EVENT_TOPIC = "/rig44/events"
CALIBRATION = 6


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("int8_node")
    log = tmp / "node.log"
    cmd = node_command(NODE, IMAGE_TOPIC, EVENT_TOPIC, dtype="int8", backend="onnxruntime",
                       device="cpu", int8_calibration_frames=CALIBRATION,
                       runtime_cache_dir=str(tmp / "cache"),
                       image_qos_reliability="reliable", event_qos_reliability="reliable",
                       image_qos_depth=100)
    proc = subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    rig = Rig(NODE, IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
    rig.log_path = log
    try:
        ok = rig.spin_until(lambda: len(rig.diagnostics) > 0 or proc.poll() is not None, 120)
        if not ok or proc.poll() is not None:
            pytest.fail(f"node did not start:\n{log.read_text()}")
        assert rig.wait_matched(), "the node never subscribed to the rig's topics"
        rig.proc = proc  # type: ignore[attr-defined]
        yield rig
    finally:
        rig.close()
        stop_node(proc)


def test_int8_node_switches_after_calibration_without_losing_a_frame(rig: Rig) -> None:
    d = rig.diag()
    assert d["dtype"] == "int8" and d["backend"].endswith("/fp32"), d
    assert d["int8_state"].startswith("fp32, calibrating int8: 0/6"), d["int8_state"]
    sent = rig.step(CALIBRATION)
    assert rig.wait_outputs(sent[:-1]), "no output while calibrating"
    for _ in range(60):  # quantising in the background: frames keep flowing meanwhile
        d = rig.diag()
        if d["backend"].endswith("/int8"):
            break
        sent += rig.step(1, pause=0.2)
    assert d["backend"].endswith("/int8"), (d, rig.log_path.read_text()[-3000:])
    assert d["int8_state"].startswith("int8 at 64x48 (calibrated"), d["int8_state"]
    assert d["int8_calibrations"] == "1" and d["int8_failures"] == "0", d
    assert float(d["int8_guard_psnr_db"]) >= 40.0
    assert "int8" not in d["_message"]  # no refusal reported
    sent += rig.step(4)
    assert rig.wait_outputs(sent, timeout=30.0), "frames lost around the int8 switch"
    assert rig.spin_until(lambda: rig.diag()["frames_published"] == str(len(sent)), 10)
    d = rig.diag()
    assert d["frames_received"] == d["frames_published"] == str(len(sent)), d
    assert d["frames_dropped"] == "0" and d["frames_unaccounted"] == "0", d
    assert sorted(rig.stamps_out()) == sorted(sent)  # each exactly once
    assert rig.proc.poll() is None  # type: ignore[attr-defined]
