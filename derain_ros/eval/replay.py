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

The rclpy session (publishers, subscriptions, the node's parameters) is
:class:`derain_ros.ros.session.RosSession`, imported only when a replay starts, so this
module stays ROS-free (the layering test imports it with rclpy blocked).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
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
    EventsNotReceivedError,
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
    "EVENT_MSGTYPES",
    "REPLAY_SUMMARY",
    "ReplayResult",
    "add_arguments",
    "check_events",
    "check_frames",
    "events_fix",
    "events_lost_message",
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
    ``event_packets``: event packets published; ``events_delivered``: event packets the
    node counted during the replay (``sync_packets_in`` of its ``/diagnostics``, before
    and after; None when it published none); ``frames_without_events``: windows it cut
    with no events (``sync_windows_events_missing``, same way).
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
    events_delivered: int | None = None
    frames_without_events: int | None = None

    @property
    def events_lost(self) -> bool:
        """The bag's events were published but the node counted none of them."""
        return self.event_packets > 0 and self.events_delivered == 0

    @property
    def ok(self) -> bool:
        """The node got the bag's events, and every frame is accounted for (lossless
        mode: frames out == frames in)."""
        if self.events_lost:
            return False
        return self.dropped == 0 and self.unmatched_out == 0 if self.mode == "lossless" else True

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def headline(self) -> dict[str, Any]:
        """The ``--json`` line: frames in/out, dropped, the output bag."""
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "dropped": self.dropped, "event_packets": self.event_packets,
                "events_delivered": self.events_delivered, "output_bag": self.output_bag}

    def format(self) -> str:
        """A short human-readable summary."""
        lat = self.latency_ms
        return (f"replayed {self.frames_in} frames ({self.mode}"
                f"{f' x{self.rate:g}' if self.rate else ''}) through /{self.node}: "
                f"{self.frames_out} out, {self.dropped} dropped, "
                f"{self.event_packets} event packets ({_delivered(self.events_delivered)} "
                f"reached the node), {self.fps:.1f} fps, "
                f"latency p50 {lat.get('p50', float('nan')):.1f} ms / "
                f"p99 {lat.get('p99', float('nan')):.1f} ms -> {self.output_bag}")


def _delivered(n: int | None) -> str:
    return "unknown how many" if n is None else str(n)


def events_fix(event_topic: str, node_name: str) -> str:
    """How to make the node listen where the bag's events are."""
    return (f"remap the node's events with `-r events:={event_topic}` (e.g. `derain-ros run "
            f"--ros-args -r __node:={node_name.strip('/')} -r events:={event_topic}`), "
            f"or replay with --event-topic naming the node's topic")


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


#: message types of event topics (the node takes either)
EVENT_MSGTYPES = ("event_camera_msgs/msg/EventPacket", "dv_ros2_msgs/msg/EventArray")


def check_events(bag: str | Path, topics: dict[str, Any], event_topic: str) -> list[str]:
    """Refuse a replay that would leave the bag's events behind; warnings to keep.

    Raises :class:`EventsNotReceivedError` when ``event_topic`` is not in the bag but other
    event topics are (the node would get frames only); a bag without any events gives
    a warning (the node then runs frames-only, by design).
    """
    info = topics.get(event_topic)
    if info is not None and info.count > 0:
        return []
    others = sorted(t for t, i in topics.items() if i.msgtype in EVENT_MSGTYPES and i.count)
    if others:
        raise EventsNotReceivedError(
            f"{bag}: no events on {event_topic!r}, but the bag has events on "
            f"{', '.join(others)}: replay with --event-topic {others[0]} and start the node "
            f"remapped with `-r events:={others[0]}`; otherwise the node derains frames only")
    return [f"the bag has no events (no {' or '.join(EVENT_MSGTYPES)} topic): the node "
            f"runs FRAMES-ONLY (no event guidance)"]


def events_lost_message(result: ReplayResult, event_topic: str) -> str:
    """What to say when the node counted none of the bag's event packets."""
    return (f"NO EVENTS REACHED THE NODE: {result.event_packets} event packets were "
            f"published on {event_topic}, the node /{result.node} counted none (its "
            f"/diagnostics sync_packets_in did not move): it derained frames only. "
            f"Fix: {events_fix(event_topic, result.node)}")


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
    from derain_ros.ros.session import RosSession  # the ROS edge: only when replaying

    if not lossless and not rate > 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    topics = check_frames(bag, image_topic, event_topic)
    warnings = check_events(bag, topics, event_topic)
    require_localhost()
    out_bag = Path(out_bag)
    plan = _Plan(bag=bag, topics=topics, image_topic=image_topic, event_topic=event_topic,
                 node_name=node_name, lossless=lossless, rate=rate,
                 frame_timeout_s=frame_timeout_s, warnings=warnings)
    session = RosSession(node_name, abort)
    try:
        pubs = _Publishers.open(session, plan)
        _wait_for_node(session, pubs, plan, timeout_s)
        params = session.parameters(["drop_policy", "arrangement", "image_qos_reliability",
                                     "event_qos_reliability", "model", "checkpoint",
                                     "in_chans", "diagnostics_period"])
        _check_node_events(session, pubs, plan, params)
        in_flight = _check_node_parameters(params, lossless, plan.warnings)
        with BagWriter(out_bag, overwrite=overwrite) as writer:
            rec = _Recorder(writer, plan.out_image)
            rec.subscribe(session, _output_topics(node_name), timeout_s)
            period = float(params.get("diagnostics_period", 1.0))
            session.wait_until(lambda: rec.diag_first is not None, period + 1.0)
            _play(session, pubs, rec, plan, in_flight, progress)
            end = max(rec.received.values(), default=time.time_ns())
            # one report of the node's counters from after the last output
            session.wait_until(lambda: rec.diag_last_ns > end, period + 1.0)
    finally:
        session.close()
    result = _result(plan, rec, params, str(out_bag), end, in_flight)
    (out_bag / REPLAY_SUMMARY).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if strict and result.events_lost:
        raise EventsNotReceivedError(events_lost_message(result, event_topic))
    if lossless and strict and not result.ok:
        raise FramesMismatchError(
            f"lossless replay lost frames: {result.frames_in} in, {result.frames_out} out "
            f"({result.dropped} missing, {result.unmatched_out} unmatched); recorded in "
            f"{out_bag}" + (f"; {'; '.join(plan.warnings)}" if plan.warnings else ""))
    return result


@dataclass
class _Plan:
    """What one replay plays and how (the arguments of :func:`replay_bag`)."""

    bag: str | Path
    topics: dict[str, Any]
    image_topic: str
    event_topic: str
    node_name: str
    lossless: bool
    rate: float
    frame_timeout_s: float
    warnings: list[str] = field(default_factory=list)
    packets: int = 0  # event packets published
    start_ns: int = 0  # host time playing started (ns)

    @property
    def out_image(self) -> str:
        """The node's derained image topic: each input frame is matched on it."""
        return node_topic(self.node_name, OUT_IMAGE)


def _output_topics(node_name: str) -> dict[str, str]:
    """The node's outputs that replay records: topic -> message type."""
    return {node_topic(node_name, OUT_IMAGE): "sensor_msgs/msg/Image",
            node_topic(node_name, OUT_RAIN): "sensor_msgs/msg/Image",
            node_topic(node_name, OUT_EVENTS_IMAGE): "sensor_msgs/msg/Image",
            DIAGNOSTICS_TOPIC: "diagnostic_msgs/msg/DiagnosticArray"}


@dataclass
class _Publishers:
    """The replay's publishers of the bag's frames and (if it has them) events."""

    image: Any
    events: Any | None

    @classmethod
    def open(cls, session: Any, plan: _Plan) -> _Publishers:
        topics = plan.topics
        image = session.publisher(topics[plan.image_topic].msgtype, plan.image_topic, 10)
        events = (session.publisher(topics[plan.event_topic].msgtype, plan.event_topic, 1000)
                  if plan.event_topic in topics else None)
        return cls(image, events)


def _wait_for_node(session: Any, pubs: _Publishers, plan: _Plan, timeout_s: float) -> None:
    """Wait until the node subscribes to the inputs and publishes its output."""
    def node_ready() -> bool:
        return (session.publishers_reliable(plan.out_image) is not None
                and pubs.image.get_subscription_count() > 0)

    if not session.wait_until(node_ready, timeout_s):
        raise NodeNotFoundError(
            f"no node /{session.target} subscribed to {plan.image_topic} and publishing "
            f"{plan.out_image} within {timeout_s:.0f} s. Start it first, e.g. `derain_node "
            f"--ros-args -r image:={plan.image_topic} -r events:={plan.event_topic} "
            f"--params-file config/derain.yaml -p drop_policy:=block "
            f"-p image_qos_reliability:=reliable -p event_qos_reliability:=reliable` "
            f"(same ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)")


def _check_node_events(session: Any, pubs: _Publishers, plan: _Plan,
                       params: dict[str, Any]) -> None:
    """Refuse at once when the node does not subscribe to the bag's event topic (with this
    type); otherwise wait until the replay's event publisher has matched it."""
    if pubs.events is None:
        return
    msgtype = plan.topics[plan.event_topic].msgtype
    subscribed: dict[str, list[str]] = {}

    def listening() -> bool:
        nonlocal subscribed
        subscribed = session.subscribed_topics()
        return msgtype in subscribed.get(plan.event_topic, [])

    if not session.wait_until(listening, 5.0):
        theirs = ", ".join(f"{t} ({'/'.join(ty)})" for t, ty in sorted(subscribed.items())
                           if t != plan.image_topic and not t.startswith("/parameter"))
        raise EventsNotReceivedError(
            f"the node /{session.target} does not subscribe to {plan.event_topic} "
            f"({msgtype}), where the bag's {plan.topics[plan.event_topic].count} event "
            f"packets are"
            + (f" (it subscribes to {theirs})" if theirs else "")
            + ". It would derain frames only. Fix: "
            + events_fix(plan.event_topic, plan.node_name))
    events_pub = pubs.events
    session.wait_until(lambda: events_pub.get_subscription_count() > 0, 5.0)


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


def _check_node_parameters(params: dict[str, Any], lossless: bool,
                           warnings: list[str]) -> int:
    """Warn about node settings that defeat a lossless replay; the frames that may be in
    flight at once (2 for the ``centre`` arrangement: output k-1 needs frame k)."""
    in_flight = 1
    if not lossless:
        return in_flight
    if params.get("drop_policy", "block") != "block":
        warnings.append(f"node drop_policy is {params['drop_policy']!r}; lossless "
                        f"replay wants 'block'")
    for key in ("image_qos_reliability", "event_qos_reliability"):
        if params.get(key, "reliable") == "best_effort":
            warnings.append(f"node {key} is best_effort: a lost message shows up as "
                            f"a dropped frame; start it with -p {key}:=reliable")
    if node_arrangement(params) == "centre":
        in_flight = 2
        warnings.append("node arrangement is 'centre': its last frame stays inside "
                        "the node (one frame of latency)")
    return in_flight


class _Recorder:
    """Writes inputs and the node's outputs to the output bag; matches frames to outputs.

    Times are host wall-clock ns (``time.time_ns``): ``published`` and ``received`` map a
    frame's stamp to when it went out and when its output came back; ``lost`` holds the
    stamps given up on (no output in time).
    """

    def __init__(self, writer: Any, out_image: str) -> None:
        self.writer = writer
        self.out_image = out_image
        self.published: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.lost: set[int] = set()
        self.counts: dict[str, int] = {}
        self.unmatched = 0
        self._added: set[str] = set()
        # the node's /diagnostics values: the first report and the newest (host ns)
        self.diag_first: dict[str, str] | None = None
        self.diag_last: dict[str, str] | None = None
        self.diag_last_ns = 0

    def record(self, topic: str, msgtype: str, raw: bytes, when: int) -> None:
        """Write one raw message at log time ``when`` (ns)."""
        if topic not in self._added:
            self.writer.add_topic(topic, msgtype,
                                  "reliable" if topic == DIAGNOSTICS_TOPIC else "sensor_data")
            self._added.add(topic)
        self.writer.write(topic, when, raw)

    def subscribe(self, session: Any, outputs: dict[str, str], timeout_s: float) -> None:
        """Subscribe to every output (matching each publisher's reliability) and wait
        until the matches have settled both ways."""
        self.counts = dict.fromkeys(outputs, 0)
        subs = []
        for topic, msgtype in outputs.items():
            reliable = bool(session.publishers_reliable(topic)) and topic != DIAGNOSTICS_TOPIC
            subs.append(session.subscription(msgtype, topic,
                                             self._on_output(session, topic, msgtype), reliable))
        session.wait_until(lambda: subs[0].get_publisher_count() > 0, timeout_s)
        session.spin(0.2)  # let the matches settle both ways

    def _on_output(self, session: Any, topic: str, msgtype: str) -> Callable[[bytes], None]:
        def callback(raw: bytes) -> None:
            now = time.time_ns()
            self.counts[topic] += 1
            self.record(topic, msgtype, raw, now)
            if topic == DIAGNOSTICS_TOPIC:
                values = session.diagnostic_values(raw)
                if values is not None:
                    if self.diag_first is None:
                        self.diag_first = values
                    self.diag_last, self.diag_last_ns = values, now
            elif topic == self.out_image:
                stamp = session.header_stamp_ns(raw, msgtype)
                if stamp in self.published and stamp not in self.received:
                    self.received[stamp] = now
                else:
                    self.unmatched += 1
        return callback

    def outstanding(self) -> int:
        """Frames published whose output has neither arrived nor been given up on."""
        return len(self.published) - len(self.received) - len(self.lost - self.received.keys())


def _play(session: Any, pubs: _Publishers, rec: _Recorder, plan: _Plan, in_flight: int,
          progress: bool) -> None:
    """Publish the bag's frames and events (rate mode: on its log-time schedule; lossless:
    frame k after the output of frame k-1) and copy the ground truth into the output."""
    topics, image_topic, event_topic = plan.topics, plan.image_topic, plan.event_topic
    lossless, rate, warnings = plan.lossless, plan.rate, plan.warnings
    plan.packets = 0
    plan.start_ns = time.time_ns()
    bar = tqdm(total=topics[image_topic].count, desc="replay", unit="frame",
               disable=not progress, file=sys.stderr)
    with BagReader(plan.bag) as reader:
        wanted = [t for t in (image_topic, event_topic, *_GT_TOPICS) if t in topics]
        first_log: int | None = None
        wall0 = time.monotonic_ns()
        for msg in reader.messages(wanted):
            if first_log is None:
                first_log = msg.log_time_ns
            if not lossless and msg.topic in (image_topic, event_topic):
                due = wall0 + (msg.log_time_ns - first_log) / rate
                session.spin(max(0.0, (due - time.monotonic_ns()) / 1e9))
            if msg.topic == event_topic:
                if pubs.events is not None:
                    pubs.events.publish(msg.raw)
                plan.packets += 1
            elif msg.topic == image_topic:
                if lossless:
                    _wait_outputs(session, rec, in_flight - 1, plan.frame_timeout_s, warnings)
                stamp = stamp_to_ns(msg.msg.header.stamp)
                if stamp in rec.published:
                    warnings.append(f"duplicate frame stamp {stamp} in the input")
                now = time.time_ns()
                pubs.image.publish(msg.raw)
                rec.published[stamp] = now
                rec.record(msg.topic, msg.msgtype, msg.raw, now)
                bar.update(1)
            else:
                rec.record(msg.topic, msg.msgtype, msg.raw, time.time_ns())
            session.spin(0.0)
    # The node holds in_flight - 1 frames by design (centre: the last one).
    _wait_outputs(session, rec, in_flight - 1,
                  plan.frame_timeout_s if lossless else max(2.0, plan.frame_timeout_s / 3),
                  warnings, final=True)
    session.spin(0.1)
    bar.close()


def _result(plan: _Plan, rec: _Recorder, params: dict[str, Any], out_bag: str,
            end_ns: int, in_flight: int) -> ReplayResult:
    """The :class:`ReplayResult` of a finished replay (``end_ns``: the last output)."""
    latencies = [(rec.received[s] - rec.published[s]) / 1e6 for s in rec.received]
    frames_in, frames_out = len(rec.published), len(rec.received)
    held = min(in_flight - 1, frames_in - frames_out)
    elapsed = max(1e-9, (end_ns - plan.start_ns) / 1e9)
    return ReplayResult(
        input_bag=str(plan.bag), output_bag=out_bag, node=plan.node_name.strip("/"),
        mode="lossless" if plan.lossless else "rate",
        rate=None if plan.lossless else plan.rate,
        frames_in=frames_in, frames_out=frames_out, dropped=frames_in - frames_out - held,
        held=held,
        unmatched_out=rec.unmatched, event_packets=plan.packets, seconds=elapsed,
        fps=frames_out / elapsed, latency_ms=latency_summary(latencies),
        outputs={t: n for t, n in rec.counts.items() if n}, node_parameters=params,
        warnings=plan.warnings,
        events_delivered=_counter_delta(rec, "sync_packets_in"),
        frames_without_events=_counter_delta(rec, "sync_windows_events_missing"))


def _counter_delta(rec: _Recorder, key: str) -> int | None:
    """How much the node's ``/diagnostics`` counter ``key`` grew during the replay."""
    if rec.diag_first is None or rec.diag_last is None:
        return None
    try:
        return int(float(rec.diag_last[key])) - int(float(rec.diag_first[key]))
    except (KeyError, ValueError):
        return None


def _wait_outputs(session: Any, rec: _Recorder, allowed: int, timeout_s: float,
                  warnings: list[str], final: bool = False) -> None:
    """Spin until at most ``allowed`` published frames await their output, or none came
    for ``timeout_s``; the outstanding ones then go to ``rec.lost`` (counted as dropped)."""
    while rec.outstanding() > allowed:
        before = len(rec.received)
        if not session.wait_until(lambda before=before: len(rec.received) > before, timeout_s):
            waiting = [s for s in rec.published if s not in rec.received and s not in rec.lost]
            rec.lost.update(waiting)
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
    if result.events_lost:
        print(f"derain-ros replay: {events_lost_message(result, args.event_topic)}",
              file=sys.stderr)
        status = 1
    elif result.event_packets and result.events_delivered is None:
        print("warning: the node published no /diagnostics during the replay: cannot "
              "check that its events arrived", file=sys.stderr)
    if result.mode == "lossless" and not (result.dropped == 0 and result.unmatched_out == 0):
        print(f"derain-ros replay: LOSSLESS CHECK FAILED: {result.frames_in} frames in, "
              f"{result.frames_out} out", file=sys.stderr)
        status = 1
    if args.json:
        print(json.dumps(result.headline()))
    return status
