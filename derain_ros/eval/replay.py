"""``derain-ros replay``: play a bag into the running node over DDS and record what comes out.

The node is a separate process (``derain-ros run``); replay talks to it only over real
DDS, as a camera driver and a recorder would. It publishes the bag's frame and event
messages as they are stored (raw CDR bytes: no re-serialisation, header stamps kept)
and records the node's outputs into a new bag, together with the input frames and the
ground-truth topics copied through, so :mod:`derain_ros.eval.evaluate` finds
everything in one place.

Two modes:

- *rate* (``--rate R``): messages go out on the bag's log-time schedule divided by
  ``R`` (for a synthetic bag log time is sensor time), like ``ros2 bag play``; the node
  may drop frames (its live ``newest`` policy), and replay counts them.
- *lossless* (``--lossless``): as fast as the node takes them, with back-pressure:
  frame ``k`` is published only after the output for frame ``k-1`` arrived (the event
  packets stored before frame ``k`` go out first, so the node can cut its window at
  once). Frames in must equal frames out; a difference fails loudly. Start the node
  with ``-p drop_policy:=block -p image_qos_reliability:=reliable
  -p event_qos_reliability:=reliable`` for a guarantee; replay warns otherwise.

Accounting (units: ns on the host's wall clock, ``time.time_ns``): every input frame is
matched by ``header.stamp`` to an output; ``latency`` is the output's receive time minus
the input frame's publish time. The output bag's log times are those host times (input
frames: publish time; outputs: receive time; ground truth: copy time), and
``replay.json`` beside its ``metadata.yaml`` keeps the summary.

rclpy is imported inside the functions that start ROS, so importing this module (e.g.
by the layering test) stays ROS-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from derain_ros.bag import BagReader
from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
    OUT_EVENTS_IMAGE,
    OUT_IMAGE,
    OUT_RAIN,
)
from derain_ros.errors import DerainError
from derain_ros.eval.errors import (
    FramesMismatchError,
    NodeNotFoundError,
    NoFramesError,
    ReplayError,
    RosEnvironmentError,
)
from derain_ros.eval.metrics import latency_summary
from derain_ros.sync import stamp_to_ns

__all__ = [
    "DIAGNOSTICS_TOPIC",
    "REPLAY_SUMMARY",
    "ReplayResult",
    "add_arguments",
    "check_frames",
    "node_topic",
    "replay_bag",
    "require_localhost",
    "run",
]

DIAGNOSTICS_TOPIC = "/diagnostics"
#: Summary file written into the output bag's folder.
REPLAY_SUMMARY = "replay.json"
_GT_TOPICS = (GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC)
_REQUIRED_RANGE = "LOCALHOST"


@dataclass
class ReplayResult:
    """What a replay did. Times in ms (latency) and s; counts of frames.

    ``frames_in``: frames published; ``frames_out``: those whose output arrived;
    ``held``: frames the node holds by design at the end (its last frame in the
    ``centre`` arrangement, which waits for a next frame that never comes);
    ``dropped``: ``frames_in - frames_out - held``; ``unmatched_out``: outputs whose stamp
    matched no published frame (should be 0); ``latency_ms``: percentiles of receive
    minus publish time; ``fps``: outputs per second of wall time.
    """

    input_bag: str
    output_bag: str
    node: str
    mode: str
    rate: float | None
    frames_in: int
    frames_out: int
    dropped: int
    unmatched_out: int
    event_packets: int
    seconds: float
    fps: float
    latency_ms: dict[str, float]
    outputs: dict[str, int] = field(default_factory=dict)
    held: int = 0
    node_parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every frame accounted for: in lossless mode frames out == frames in."""
        return self.dropped == 0 and self.unmatched_out == 0 if self.mode == "lossless" else True

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def headline(self) -> dict[str, Any]:
        """The ``--json`` line: frames in/out, dropped, the output bag."""
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "dropped": self.dropped, "output_bag": self.output_bag}

    def format(self) -> str:
        """A short human-readable summary."""
        lat = self.latency_ms
        return (f"replayed {self.frames_in} frames ({self.mode}"
                f"{f' x{self.rate:g}' if self.rate else ''}) through /{self.node}: "
                f"{self.frames_out} out, {self.dropped} dropped, {self.fps:.1f} fps, "
                f"latency p50 {lat.get('p50', float('nan')):.1f} ms / "
                f"p99 {lat.get('p99', float('nan')):.1f} ms -> {self.output_bag}")


def require_localhost() -> None:
    """Refuse to start ROS unless DDS discovery is limited to this machine."""
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != _REQUIRED_RANGE:
        raise RosEnvironmentError(
            "refusing to start ROS: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (and "
            "FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_localhost.xml), e.g. run it "
            "through `make demo`; without it DDS multicasts off this machine")


def node_topic(node_name: str, relative: str) -> str:
    """A node's private topic: ``node_topic("derain_node", "~/image") == "/derain_node/image"``."""
    base = "/" + node_name.strip("/")
    return base + "/" + relative.removeprefix("~/")


def check_frames(bag: str | Path, image_topic: str = IMAGE_TOPIC,
                 event_topic: str = EVENT_TOPIC) -> dict[str, Any]:
    """The bag's topics; :class:`NoFramesError` when it has no frames on ``image_topic``."""
    with BagReader(bag) as reader:
        topics = reader.topics
    info = topics.get(image_topic)
    if info is None or info.count == 0:
        kind = (f"it has events ({event_topic}, {topics[event_topic].count} packets) but no "
                f"camera frames" if event_topic in topics else "it has no camera frames")
        raise NoFramesError(
            f"{bag}: nothing to derain: {kind} on {image_topic!r} (topics: "
            f"{', '.join(sorted(topics)) or 'none'}). Deraining needs frames; an events-only "
            f"recording can be inspected with `derain-ros events-info {bag}`")
    return topics


def _msg_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise ReplayError(f"message type {msgtype} is not available to rclpy: {err}") from err


class _Session:
    """One rclpy context with the replay node, publishers and recording subscriptions."""

    def __init__(self, node_name: str, abort: Callable[[], str | None] | None = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"derain_replay_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.target = node_name.strip("/")
        self.abort = abort

    def spin(self, seconds: float = 0.0) -> None:
        """Handle callbacks for ``seconds`` (at least one round)."""
        end = time.monotonic() + seconds
        while True:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.005, end - time.monotonic())))
            if time.monotonic() >= end:
                return

    def wait_until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() >= end:
                return False
            if self.abort is not None and (why := self.abort()):
                raise ReplayError(why)
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def publisher(self, msgtype: str, topic: str, depth: int) -> Any:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        return self.node.create_publisher(_msg_class(msgtype), topic, qos)

    def subscription(self, msgtype: str, topic: str, callback: Callable[[bytes], None],
                     reliable: bool) -> Any:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=(ReliabilityPolicy.RELIABLE if reliable
                                      else ReliabilityPolicy.BEST_EFFORT),
                         durability=DurabilityPolicy.VOLATILE)
        return self.node.create_subscription(_msg_class(msgtype), topic, callback, qos,
                                             raw=True)

    def publishers_reliable(self, topic: str) -> bool | None:
        """Whether every publisher of ``topic`` is reliable (None: no publisher yet)."""
        from rclpy.qos import ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        return all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    def parameters(self, names: Sequence[str], timeout_s: float = 3.0) -> dict[str, Any]:
        """The target node's parameters (empty when its parameter service does not answer)."""
        from rcl_interfaces.srv import GetParameters

        client = self.node.create_client(GetParameters, f"/{self.target}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return {}
            future = client.call_async(GetParameters.Request(names=list(names)))
            if not self.wait_until(future.done, timeout_s) or future.result() is None:
                return {}
            out = {}
            for name, value in zip(names, future.result().values, strict=False):
                for attr in ("string_value", "bool_value", "integer_value", "double_value"):
                    kind = {"string_value": 4, "bool_value": 1, "integer_value": 2,
                            "double_value": 3}[attr]
                    if value.type == kind:
                        out[name] = getattr(value, attr)
            return out
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            self.rclpy.try_shutdown(context=self.context)


def node_arrangement(params: dict[str, Any]) -> str:
    """The clip arrangement a node runs, from its parameters.

    An empty ``arrangement`` parameter means "the checkpoint's": read it from the
    checkpoint's input contract (the node's files are on this machine when replaying),
    ``causal`` when it cannot be read.
    """
    if params.get("arrangement"):
        return str(params["arrangement"])
    from derain_ros.model import default_checkpoint_path, read_checkpoint_info

    try:
        path = params.get("checkpoint") or default_checkpoint_path(
            str(params.get("model", "derain_tiny")), int(params.get("in_chans", 3)))
        return str(read_checkpoint_info(path)["input_contract"]["arrangement"])
    except (DerainError, OSError, KeyError, ValueError):
        return "causal"


def replay_bag(bag: str | Path, out_bag: str | Path, *, rate: float = 1.0,
               lossless: bool = False, node_name: str = "derain_node",
               timeout_s: float = 30.0, frame_timeout_s: float = 30.0,
               image_topic: str = IMAGE_TOPIC, event_topic: str = EVENT_TOPIC,
               overwrite: bool = False, strict: bool = True, progress: bool = True,
               abort: Callable[[], str | None] | None = None) -> ReplayResult:
    """Replay ``bag`` through the running node ``node_name`` and record into ``out_bag``.

    Args:
        rate: playback speed factor in rate mode (1.0: sensor time).
        lossless: back-pressured mode (see the module docstring); ``rate`` is ignored.
        timeout_s: how long to wait for the node to appear on the DDS graph (s).
        frame_timeout_s: lossless mode: how long to wait for one output (s) before
            counting the frame as lost and going on; rate mode: how long to wait for
            outstanding outputs at the end.
        strict: in lossless mode raise :class:`FramesMismatchError` when frames out !=
            frames in (the bag is written first).
        abort: called while waiting; a returned message stops the replay with
            :class:`ReplayError` (the demo passes "the node process exited").

    Raises:
        NoFramesError: the bag has no frames (checked before ROS starts).
        RosEnvironmentError: DDS discovery is not limited to localhost.
        NodeNotFoundError: the node did not appear within ``timeout_s``.
    """
    from derain_ros.bag import BagWriter

    if not lossless and not rate > 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    topics = check_frames(bag, image_topic, event_topic)
    require_localhost()
    out_bag = Path(out_bag)
    have_events = event_topic in topics
    frames_total = topics[image_topic].count
    outputs = {node_topic(node_name, OUT_IMAGE): "sensor_msgs/msg/Image",
               node_topic(node_name, OUT_RAIN): "sensor_msgs/msg/Image",
               node_topic(node_name, OUT_EVENTS_IMAGE): "sensor_msgs/msg/Image",
               DIAGNOSTICS_TOPIC: "diagnostic_msgs/msg/DiagnosticArray"}
    out_image = node_topic(node_name, OUT_IMAGE)
    warnings: list[str] = []

    session = _Session(node_name, abort)
    try:
        from rclpy.serialization import deserialize_message

        image_cls = _msg_class("sensor_msgs/msg/Image")
        pub_image = session.publisher(topics[image_topic].msgtype, image_topic, 10)
        pub_events = (session.publisher(topics[event_topic].msgtype, event_topic, 1000)
                      if have_events else None)

        # -- find the node ------------------------------------------------------------
        def node_ready() -> bool:
            return (session.publishers_reliable(out_image) is not None
                    and pub_image.get_subscription_count() > 0
                    and (pub_events is None or pub_events.get_subscription_count() > 0))

        if not session.wait_until(node_ready, timeout_s):
            raise NodeNotFoundError(
                f"no node /{session.target} subscribed to {image_topic} and publishing "
                f"{out_image} within {timeout_s:.0f} s. Start it first, e.g. `derain_node "
                f"--ros-args --params-file config/derain.yaml -p drop_policy:=block "
                f"-p image_qos_reliability:=reliable -p event_qos_reliability:=reliable` "
                f"(same ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)")
        params = session.parameters(["drop_policy", "arrangement", "image_qos_reliability",
                                     "event_qos_reliability", "model", "checkpoint",
                                     "in_chans"])
        in_flight = 1
        if lossless:
            if params.get("drop_policy", "block") != "block":
                warnings.append(f"node drop_policy is {params['drop_policy']!r}; lossless "
                                f"replay wants 'block'")
            for key in ("image_qos_reliability", "event_qos_reliability"):
                if params.get(key, "reliable") == "best_effort":
                    warnings.append(f"node {key} is best_effort: a lost message shows up as "
                                    f"a dropped frame; start it with -p {key}:=reliable")
            if node_arrangement(params) == "centre":
                in_flight = 2  # output k-1 needs frame k
                warnings.append("node arrangement is 'centre': its last frame stays inside "
                                "the node (one frame of latency)")

        # -- record -------------------------------------------------------------------
        published: dict[int, int] = {}   # stamp -> publish time
        received: dict[int, int] = {}    # stamp -> receive time
        lost: set[int] = set()           # stamps given up on (no output in time)
        counts = dict.fromkeys(outputs, 0)
        unmatched = [0]

        with BagWriter(out_bag, overwrite=overwrite) as writer:
            added: set[str] = set()

            def record(topic: str, msgtype: str, raw: bytes, when: int) -> None:
                if topic not in added:
                    writer.add_topic(topic, msgtype,
                                     "reliable" if topic == DIAGNOSTICS_TOPIC else "sensor_data")
                    added.add(topic)
                writer.write(topic, when, raw)

            def on_output(topic: str, msgtype: str) -> Callable[[bytes], None]:
                def callback(raw: bytes) -> None:
                    now = time.time_ns()
                    counts[topic] += 1
                    record(topic, msgtype, raw, now)
                    if topic == out_image:
                        stamp = stamp_to_ns(deserialize_message(raw, image_cls).header.stamp)
                        if stamp in published and stamp not in received:
                            received[stamp] = now
                        else:
                            unmatched[0] += 1
                return callback

            subs = []
            for topic, msgtype in outputs.items():
                reliable = bool(session.publishers_reliable(topic)) and topic != DIAGNOSTICS_TOPIC
                subs.append(session.subscription(msgtype, topic, on_output(topic, msgtype),
                                                 reliable))
            session.wait_until(lambda: subs[0].get_publisher_count() > 0, timeout_s)
            session.spin(0.2)  # let the matches settle both ways

            packets = 0
            start = time.time_ns()
            bar = tqdm(total=frames_total, desc="replay", unit="frame", disable=not progress,
                       file=sys.stderr)
            with BagReader(bag) as reader:
                wanted = [t for t in (image_topic, event_topic, *_GT_TOPICS) if t in topics]
                first_log: int | None = None
                wall0 = time.monotonic_ns()
                for rec in reader.messages(wanted):
                    if first_log is None:
                        first_log = rec.log_time_ns
                    if not lossless and rec.topic in (image_topic, event_topic):
                        due = wall0 + (rec.log_time_ns - first_log) / rate
                        session.spin(max(0.0, (due - time.monotonic_ns()) / 1e9))
                    if rec.topic == event_topic:
                        if pub_events is not None:
                            pub_events.publish(rec.raw)
                        packets += 1
                    elif rec.topic == image_topic:
                        if lossless:
                            _wait_outputs(session, published, received, lost, in_flight - 1,
                                          frame_timeout_s, warnings)
                        stamp = stamp_to_ns(rec.msg.header.stamp)
                        if stamp in published:
                            warnings.append(f"duplicate frame stamp {stamp} in the input")
                        now = time.time_ns()
                        pub_image.publish(rec.raw)
                        published[stamp] = now
                        record(rec.topic, rec.msgtype, rec.raw, now)
                        bar.update(1)
                    else:
                        record(rec.topic, rec.msgtype, rec.raw, time.time_ns())
                    session.spin(0.0)
            # The node holds in_flight - 1 frames by design (centre: the last one).
            _wait_outputs(session, published, received, lost, in_flight - 1,
                          frame_timeout_s if lossless else max(2.0, frame_timeout_s / 3),
                          warnings, final=True)
            session.spin(0.1)
            bar.close()
            end = max(received.values(), default=time.time_ns())
    finally:
        session.close()

    latencies = [(received[s] - published[s]) / 1e6 for s in received]
    frames_in, frames_out = len(published), len(received)
    held = min(in_flight - 1, frames_in - frames_out)
    elapsed = max(1e-9, (end - start) / 1e9)
    result = ReplayResult(
        input_bag=str(bag), output_bag=str(out_bag), node=node_name.strip("/"),
        mode="lossless" if lossless else "rate", rate=None if lossless else rate,
        frames_in=frames_in, frames_out=frames_out, dropped=frames_in - frames_out - held,
        held=held,
        unmatched_out=unmatched[0], event_packets=packets, seconds=elapsed,
        fps=frames_out / elapsed, latency_ms=latency_summary(latencies),
        outputs={t: n for t, n in counts.items() if n}, node_parameters=params,
        warnings=warnings)
    (out_bag / REPLAY_SUMMARY).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if lossless and strict and not result.ok:
        raise FramesMismatchError(
            f"lossless replay lost frames: {frames_in} in, {frames_out} out "
            f"({result.dropped} missing, {result.unmatched_out} unmatched); recorded in "
            f"{out_bag}" + (f"; {'; '.join(warnings)}" if warnings else ""))
    return result


def _wait_outputs(session: _Session, published: dict[int, int], received: dict[int, int],
                  lost: set[int], allowed: int, timeout_s: float, warnings: list[str],
                  final: bool = False) -> None:
    """Spin until at most ``allowed`` published frames await their output, or none came
    for ``timeout_s``; the outstanding ones then go to ``lost`` (counted as dropped)."""
    def outstanding() -> int:
        return len(published) - len(received) - len(lost - received.keys())

    while outstanding() > allowed:
        before = len(received)
        if not session.wait_until(lambda before=before: len(received) > before, timeout_s):
            waiting = [s for s in published if s not in received and s not in lost]
            lost.update(waiting)
            warnings.append(f"no output for {timeout_s:.1f} s with {len(waiting)} frame(s) "
                            f"outstanding{' at the end' if final else ''}; counted as dropped")
            return


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``derain-ros replay``."""
    parser.add_argument("bag", type=Path, help="input bag (frames + events, e.g. from synth)")
    parser.add_argument("--out", type=Path, required=True, help="output bag to write")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, default=1.0,
                      help="playback speed factor in sensor time (default 1.0)")
    mode.add_argument("--lossless", action="store_true",
                      help="as fast as the node takes frames, none dropped (checked)")
    parser.add_argument("--node-name", default="derain_node", help="the running node's name")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the node (and, lossless, for each output)")
    parser.add_argument("--image-topic", default=IMAGE_TOPIC)
    parser.add_argument("--event-topic", default=EVENT_TOPIC)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON line: frames_in, frames_out, dropped, output_bag")


def run(args: argparse.Namespace) -> int:
    """``derain-ros replay``: exit 0 when every frame is accounted for (lossless: in == out)."""
    try:
        result = replay_bag(args.bag, args.out, rate=args.rate, lossless=args.lossless,
                            node_name=args.node_name, timeout_s=args.timeout,
                            frame_timeout_s=args.timeout, image_topic=args.image_topic,
                            event_topic=args.event_topic, overwrite=args.overwrite,
                            strict=False, progress=not args.json)
    except NoFramesError as err:
        print(f"derain-ros replay: {err}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.format())
    status = 0
    if not result.ok:
        print(f"derain-ros replay: LOSSLESS CHECK FAILED: {result.frames_in} frames in, "
              f"{result.frames_out} out", file=sys.stderr)
        status = 1
    if args.json:
        print(json.dumps(result.headline()))
    return status
