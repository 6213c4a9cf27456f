"""Adapted weights into a running node (issue #14): the parameter client of
``derain_ros.ros.params`` sets ``checkpoint`` on a real node process while frames
stream in; the node swaps between two frames and drops none.

The frames are subscribed reliable with a deep history, as a lossless replay would: the
adapted file is new to the runtime cache, so the node loads torch to export its graph,
and that import holds the interpreter for a second or more. The node's own queue loses
nothing meanwhile (this test), but a keep-last-5 subscription (the default) overflows
during that stall and DDS drops frames (docs/adaptation.md, "Into the running node")."""

from __future__ import annotations

import threading

import pytest

from conftest import domain
from derain_ros.model import default_checkpoint_path

pytestmark = pytest.mark.ros

#: Low on purpose: DDS domain ids end at 232, and checkouts add DERAIN_TEST_DOMAIN_OFFSET
#: (up to 220) to it; no other suite uses 7.
DOMAIN_ID = 7
NODE = "derain_adapt_node"
IMAGE_TOPIC = "/rig7/image_raw"
EVENT_TOPIC = "/rig7/events"


def test_adapted_checkpoint_hot_swaps_into_a_running_node(tmp_path, monkeypatch) -> None:
    import test_node as tn

    from derain_ros.model import create_model, save_checkpoint

    monkeypatch.setattr(tn, "DOMAIN_ID", DOMAIN_ID)
    log = tmp_path / "node.log"
    proc = tn.start_node(tn.node_command(NODE, IMAGE_TOPIC, EVENT_TOPIC,
                                         image_qos_reliability="reliable",
                                         image_qos_depth=100,
                                         event_qos_reliability="reliable"), log)
    rig = None
    try:
        rig = tn.Rig(NODE, IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
        rig.log_path = log
        assert rig.spin_until(lambda: len(rig.diagnostics) > 0 or proc.poll() is not None, 90)
        assert proc.poll() is None, log.read_text()
        assert rig.wait_matched()
        rig.step(3)
        assert rig.wait_outputs(rig.step(3)[:2])
        # what `derain-train adapt --out X --node /derain_adapt_node` hands the node
        shipped = default_checkpoint_path("derain_tiny")
        adapted = tmp_path / "adapted"
        net = create_model("derain_tiny")
        if shipped.is_file():
            from derain_ros.model import load_checkpoint
            net = load_checkpoint(shipped)
        save_checkpoint(net, adapted, provenance={"adaptation": {"accepted": True}})
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain(DOMAIN_ID)))
        from derain_ros.ros.params import set_checkpoint

        answer: list = []
        worker = threading.Thread(target=lambda: answer.append(set_checkpoint(
            f"/{NODE}", str(adapted.with_suffix(".safetensors")), timeout_s=60)))
        stamps = rig.step(2)
        worker.start()
        while worker.is_alive():
            stamps += rig.step(1, pause=0.15)
        worker.join()
        stamps += rig.step(3)
        assert answer and answer[0][0], answer
        # lossless (drop_policy block): every frame comes out, before and after the swap
        assert rig.wait_outputs(stamps[:-1], timeout=90), "a frame was dropped around the swap"
        d = rig.diag()
        assert d["checkpoint_swaps"] == "1", d
        assert d["checkpoint"].endswith("adapted.safetensors")
        # a node that is not there: a clear answer, not a hang
        ok, reason = set_checkpoint("/no_such_node", str(adapted), timeout_s=2)
        assert not ok and "no node" in reason
    finally:
        if rig is not None:
            rig.close()
        tn.stop_node(proc)
