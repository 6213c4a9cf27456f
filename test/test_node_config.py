"""The node's parameters, params file, launch file, CLI and message conversions (no DDS)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from derain_ros.errors import ConfigError
from derain_ros.images import ENCODINGS, image_to_array, output_encoding

node = pytest.importorskip("derain_ros.node", reason="needs rclpy (ROS_AUTOMATIC_DISCOVERY_RANGE)")

ROOT = Path(__file__).resolve().parents[1]


def defaults() -> dict:
    return {name: spec.default for name, spec in node.PARAMETERS.items()}


def test_params_file_declares_every_parameter_with_its_default() -> None:
    data = yaml.safe_load((ROOT / "config" / "derain.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(node.PARAMETERS)
    # what the deployed file chooses on purpose, unlike the node's own default
    deployed = {"dtype": "fastest"}  # int8 on a CPU (1.15x the fps); the node's own: auto
    for name, value in params.items():
        assert value == deployed.get(name, node.PARAMETERS[name].default), name
    node.NodeConfig.from_values(params)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("drop_policy", "sometimes", "drop_policy must be one of newest, block"),
    ("image_qos_depth", 0, "image_qos_depth must be in"),
    ("event_msg_type", "EventStream", "event_msg_type must be one of"),
    ("clock_mode", "gps", "clock_mode must be one of"),
    ("in_chans", 2, "in_chans must be 1 or 3"),
    ("publish_rain_layer", "yes", "publish_rain_layer must be bool"),
    ("checkpoint", "/no/such/weights.safetensors", "does not exist"),
    ("device", "tpu", "device must be"),
    ("jpeg_quality", 0, "jpeg_quality must be in"),
])
def test_bad_values_are_rejected_with_a_reason(name: str, value: object, reason: str) -> None:
    cfg = node.NodeConfig.from_values(defaults())
    with pytest.raises(ConfigError, match=reason):
        cfg.replace(**{name: value})


def test_every_parameter_has_a_description_and_runtime_ones_are_few() -> None:
    for name, spec in node.PARAMETERS.items():
        assert len(spec.description) > 10, name
    runtime = {n for n, s in node.PARAMETERS.items() if s.runtime}
    assert runtime == {"checkpoint", "drop_policy", "publish_rain_layer", "publish_events_image"}


def test_launch_file_declares_the_arguments() -> None:
    """launch_ros is not installable here (not on PyPI): check the file's declarations
    statically, and build the launch description where launch_ros exists."""
    path = ROOT / "launch" / "derain.launch.py"
    tree = ast.parse(path.read_text())
    args = next(n for n in tree.body if isinstance(n, ast.AnnAssign | ast.Assign)
                and "ARGUMENTS" in ast.unparse(n))
    names = {ast.literal_eval(k) for k in args.value.keys}
    assert {"params_file", "image_topic", "event_topic", "device", "model"} <= names
    # the topic arguments remap the node's relative inputs, defaulting to the drivers'
    # topics exactly as `derain-ros run` does (conventions.DEFAULT_REMAPS)
    from derain_ros.conventions import DEFAULT_REMAPS, IN_EVENTS, IN_IMAGE

    defaults = {ast.literal_eval(k): ast.unparse(v.elts[0]).strip("'\"")
                for k, v in zip(args.value.keys, args.value.values, strict=True)}
    assert defaults["image_topic"] == DEFAULT_REMAPS[IN_IMAGE]
    assert defaults["event_topic"] == DEFAULT_REMAPS[IN_EVENTS]
    text = path.read_text()
    assert '("image", LaunchConfiguration("image_topic"))' in text
    assert '("events", LaunchConfiguration("event_topic"))' in text
    assert "generate_launch_description" in {n.name for n in tree.body
                                             if isinstance(n, ast.FunctionDef)}
    if importlib.util.find_spec("launch_ros") is None:
        return
    spec = importlib.util.spec_from_file_location("derain_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_run_builds_the_same_ros_arguments(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    node.add_arguments(parser)
    params = ROOT / "config" / "derain.yaml"
    args = parser.parse_args(["--params-file", str(params), "--device", "cpu",
                              "--ros-args", "-r", "/a:=/b"])
    argv = node.ros_argv(args)
    assert argv[argv.index("--params-file") + 1] == str(params)
    assert "device:=cpu" in argv and argv[argv.index("/a:=/b") - 1] == "-r"
    # the drivers' topics unless remapped; a user's remapping replaces the default
    assert argv[-4:] == ["-r", "image:=event_camera/image_raw",
                         "-r", "events:=event_camera/events"]
    args = parser.parse_args(["--ros-args", "-r", "image:=/cam/image_raw"])
    argv = node.ros_argv(args)
    assert [a for a in argv if a.startswith("image:=")] == ["image:=/cam/image_raw"]
    assert "events:=event_camera/events" in argv
    args = parser.parse_args(["--params-file", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="does not exist"):
        node.ros_argv(args)


def test_unknown_parameters_and_bad_params_files_are_refused_by_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"drop_polcy \(did you mean drop_policy\?\)"):
        node.refuse_unknown_parameters({"drop_polcy": "block", "device": "cpu"})
    node.refuse_unknown_parameters({"device": "cpu", "use_sim_time": True,
                                    "qos_overrides./event_camera/events.subscription.depth": 5})
    with pytest.raises(ConfigError, match=r"image_topic is not a parameter: topics are set by "
                       r"remapping, use remapping `--ros-args -r image:=/cam/image_raw`"):
        node.refuse_unknown_parameters({"image_topic": "/cam/image_raw"})
    with pytest.raises(ConfigError, match=r"use remapping `--ros-args -r events:="):
        node.refuse_unknown_parameters({"event_topic": "/cam/events"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters: {device: [cpu\n")
    with pytest.raises(ConfigError, match="is not YAML"):
        node.check_params_file(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("device: cpu\n")
    with pytest.raises(ConfigError, match="not a ROS 2 parameters file"):
        node.check_params_file(flat)
    node.check_params_file(ROOT / "config" / "derain.yaml")


@pytest.mark.ros
def test_node_refuses_to_start_with_a_misspelled_parameter(tmp_path) -> None:
    """Through a real node process: rclpy alone would ignore the unknown name silently."""
    import subprocess
    import sys

    from conftest import ros_env

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    drop_polcy: block\n")
    res = subprocess.run([sys.executable, "-m", "derain_ros.cli", "run", "--params-file",
                          str(params), "--allow-random-weights"], env=ros_env(44),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "unknown parameter(s): drop_polcy (did you mean drop_policy?)" in res.stderr
    # a topic parameter of earlier versions: one way to set a topic, remapping
    params.write_text("/**:\n  ros__parameters:\n    image_topic: /cam/image_raw\n")
    res = subprocess.run([sys.executable, "-m", "derain_ros.cli", "run", "--params-file",
                          str(params), "--allow-random-weights"], env=ros_env(44),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("image_topic is not a parameter: topics are set by remapping, use remapping "
            "`--ros-args -r image:=/cam/image_raw`") in res.stderr


def test_handover_newest_drops_stale_and_block_keeps_all() -> None:
    newest = node._HandOver("newest", 64)
    for i in range(5):
        newest.put(i)
    assert newest.get(0.01) == 4 and newest.dropped_stale == 4
    block = node._HandOver("block", 3)
    for i in range(4):
        block.put(i)
    assert [block.get(0.01) for _ in range(3)] == [0, 1, 2] and block.dropped_full == 1


def test_qos_defaults_to_sensor_data() -> None:
    from rclpy.qos import ReliabilityPolicy

    from derain_ros.ros import qos_profile

    assert qos_profile().reliability == ReliabilityPolicy.BEST_EFFORT
    with pytest.raises(ConfigError):
        qos_profile("sometimes")


CAMERA_ENCODINGS = [e for e in ENCODINGS if e not in ("8UC1", "8UC3")]


@pytest.mark.parametrize("encoding", CAMERA_ENCODINGS)
def test_messages_round_trip_every_encoding(encoding: str) -> None:
    from derain_ros.ros import frame_from_msg, header_from, image_msg, network_image_msg

    spec = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (6, 8) if spec.channels == 1 else (6, 8, spec.channels)
    arr = rng.integers(0, np.iinfo(spec.dtype).max, shape).astype(spec.dtype)
    msg = image_msg(arr, encoding, header_from(1_500_000_123, "cam"))
    frame = frame_from_msg(msg, use_cv_bridge=False)
    assert frame.encoding == encoding and np.array_equal(frame.array, arr)
    out = network_image_msg(frame.to_network(), encoding, msg.header)
    assert out.encoding == output_encoding(encoding)
    assert (out.width, out.height, out.header.frame_id) == (8, 6, "cam")
    assert out.header.stamp.nanosec == 500_000_123
    back = image_to_array(out.encoding, out.height, out.width, out.step, bytes(out.data))
    if encoding in ("rgba8", "bgra8"):  # alpha is not the network's: published opaque
        assert np.array_equal(back[..., :3], arr[..., :3]) and (back[..., 3] == 255).all()
    elif not encoding.startswith("bayer"):
        assert np.array_equal(back, arr)  # float [0, 1] and back is lossless


@pytest.mark.parametrize("encoding", CAMERA_ENCODINGS)
def test_cv_bridge_gives_the_same_arrays(encoding: str) -> None:
    """Where cv_bridge exists (a vehicle's ROS install; not the PyPI wheels here)."""
    pytest.importorskip("cv_bridge", reason="cv_bridge is not installable here")
    from derain_ros.ros import frame_from_msg, header_from, image_msg

    spec = ENCODINGS[encoding]
    shape = (6, 8) if spec.channels == 1 else (6, 8, spec.channels)
    arr = np.random.default_rng(1).integers(0, 200, shape).astype(spec.dtype)
    msg = image_msg(arr, encoding, header_from(0, "cam"))
    a = frame_from_msg(msg, use_cv_bridge=True)
    b = frame_from_msg(msg, use_cv_bridge=False)
    assert np.array_equal(a.array.reshape(b.array.shape), b.array)
    assert np.array_equal(a.to_network(), b.to_network())


def test_compressed_image_input() -> None:
    import cv2
    from sensor_msgs.msg import CompressedImage

    from derain_ros.ros import frame_from_msg

    bgr = np.random.default_rng(2).integers(0, 255, (6, 8, 3)).astype(np.uint8)
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", bgr)[1].tobytes()
    frame = frame_from_msg(msg)
    assert frame.encoding == "bgr8" and np.array_equal(frame.array, bgr)
    msg.data = b"not an image"
    with pytest.raises(Exception, match="cannot decode"):
        frame_from_msg(msg)


def test_lifecycle_entry_point_is_installed_beside_the_node() -> None:
    text = (ROOT / "setup.py").read_text()
    assert '"derain_lifecycle_node = derain_ros.node:lifecycle_main"' in text
    assert issubclass(node.DerainLifecycleNode, node.DerainCore)
    assert issubclass(node.DerainNode, node.DerainCore)
