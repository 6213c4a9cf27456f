"""The deraining node: ROS plumbing around the synchroniser and the engine.

Data flow: frame and event callbacks (one executor thread, so the synchroniser sees one
caller) feed the synchroniser; each completed window goes into a hand-over queue; one
worker thread runs the engine and publishes. Callbacks never wait for inference:

- ``drop_policy: newest`` (live): the queue holds one window; a newer one replaces a
  waiting one (counted as ``dropped_stale``), so latency stays bounded when the network
  is slower than the camera.
- ``drop_policy: block`` (replay): the queue holds up to ``block_queue_depth`` windows
  and drops none (only a full queue drops, counted as ``dropped_queue_full``); a replay
  tool paces itself on ``~/image`` so frames in == frames out.

Topics: subscribes ``image_topic`` (``sensor_msgs/Image``, or ``CompressedImage`` on
``<image_topic>/compressed`` with ``image_transport: compressed``) and ``event_topic``
(``event_camera_msgs/EventPacket``, or ``dv_ros2_msgs/EventArray``), sensor-data QoS by
default; publishes ``~/image`` (same header as the input frame), optionally
``~/rain_layer`` and ``~/events_image``, and ``/diagnostics``.

Parameters are declared with descriptions and ranges (:data:`PARAMETERS`), read once
into a frozen :class:`NodeConfig`, and validated again on every change. Only
``checkpoint`` (swapped without stopping the stream; a bad file is refused and the
running network kept), ``drop_policy``, ``publish_rain_layer`` and
``publish_events_image`` change at run time; the rest are read-only (restart the node).

Missing weights: with no trained weights for ``model`` and no ``checkpoint``, the node
refuses to start with a message saying so, unless ``allow_random_weights`` is true
(tests, benchmarks): then it runs the untrained network, logs a warning and reports
``random_weights: True`` with level WARN in diagnostics.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from dv_ros2_msgs.msg import EventArray
from event_camera_msgs.msg import EventPacket
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from derain_ros.conventions import (
    EVENT_QOS_DEPTH,
    EVENT_TOPIC,
    IMAGE_TOPIC,
    OUT_EVENTS_IMAGE,
    OUT_IMAGE,
    OUT_RAIN,
)
from derain_ros.engine import DerainEngine
from derain_ros.errors import ConfigError, DerainError, ModelError
from derain_ros.images import from_network
from derain_ros.model import default_checkpoint_path
from derain_ros.ros import (
    FrameCost,
    LatencyWindow,
    RateMeter,
    array_msg,
    frame_from_msg,
    header_from,
    image_msg,
    memory_mb,
    network_image_msg,
    qos_profile,
    status_msg,
)
from derain_ros.sync import (
    FrameEventSynchronizer,
    SyncConfig,
    event_array_msg_to_batch,
    stamp_to_ns,
)

__all__ = ["PARAMETERS", "DerainNode", "NodeConfig", "add_arguments", "main", "run"]

_log = logging.getLogger(__name__)

NODE_NAME = "derain_node"


@dataclass(frozen=True)
class Param:
    """One declared parameter: default, description, and its allowed values or range."""

    default: Any
    description: str
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    runtime: bool = False


#: Every parameter of the node (name -> declaration). Times in ms or s as named.
PARAMETERS: dict[str, Param] = {
    "image_topic": Param(IMAGE_TOPIC, "frame topic (sensor_msgs/Image); remappable"),
    "event_topic": Param(EVENT_TOPIC, "event topic; remappable"),
    "event_msg_type": Param("EventPacket", "event message type",
                            ("EventPacket", "EventArray")),
    "image_transport": Param("raw", "raw: Image on image_topic; compressed: CompressedImage "
                             "on image_topic/compressed", ("raw", "compressed")),
    "image_qos_reliability": Param("best_effort", "frame subscription reliability",
                                   ("best_effort", "reliable", "system_default")),
    "image_qos_depth": Param(5, "frame subscription keep-last depth", range=(1, 10000)),
    "event_qos_reliability": Param("best_effort", "event subscription reliability",
                                   ("best_effort", "reliable", "system_default")),
    "event_qos_depth": Param(EVENT_QOS_DEPTH, "event subscription keep-last depth",
                             range=(1, 100000)),
    "output_qos_reliability": Param("reliable", "output publishers' reliability",
                                    ("best_effort", "reliable", "system_default")),
    "output_qos_depth": Param(5, "output publishers' keep-last depth", range=(1, 10000)),
    "model": Param("derain_tiny", "network size (derain_tiny, derain_base, *_frames); its "
                   "shipped weights are used unless checkpoint is set"),
    "checkpoint": Param("", "checkpoint path (stem, .safetensors or .json); empty: the "
                        "model's shipped weights. Settable at run time: swapped without "
                        "stopping the stream, a bad file is refused", runtime=True),
    "in_chans": Param(3, "frame channels of the shipped weights to load: 3 colour, 1 grey",
                      range=(1, 3)),
    "allow_random_weights": Param(False, "run an untrained network when no weights exist "
                                  "(tests, benchmarks) instead of refusing to start"),
    "device": Param("auto", "auto (CUDA when present), cpu, cuda, cuda:N"),
    "dtype": Param("auto", "auto (bf16/fp16 on CUDA, fp32 on CPU)",
                   ("auto", "fp32", "fp16", "bf16")),
    "compile": Param(False, "wrap the network in torch.compile (backend torch)"),
    "backend": Param("auto", "runtime back-end; auto: the fastest installed for the device "
                     "(CPU: onnxruntime, else torch; CUDA: TensorRT EP, CUDA EP, torch); "
                     "the choice and its reason are logged",
                     ("auto", "torch", "torch_compile", "onnxruntime", "tensorrt")),
    "runtime_cache_dir": Param("", "where onnxruntime back-ends keep exported graphs "
                               "(empty: $XDG_CACHE_HOME/derain_ros or ~/.cache/derain_ros)"),
    "arrangement": Param("", "clip arrangement; empty: the checkpoint's (its input "
                         "contract); causal or centre must agree with the checkpoint, else "
                         "the node refuses to start (or the swap)", ("", "causal", "centre")),
    "dump_inputs_dir": Param("", "write the exact tensors handed to the network, one .npz "
                             "per frame, into this folder (checking a deployment against "
                             "training; slow); empty: off"),
    "num_threads": Param(0, "torch CPU threads (0: torch's default)", range=(0, 256)),
    "warmup_width": Param(346, "warm-up frame width in px (0: no warm-up)", range=(0, 8192)),
    "warmup_height": Param(260, "warm-up frame height in px (0: no warm-up)", range=(0, 8192)),
    "max_buffer_bytes": Param(SyncConfig.max_buffer_bytes,
                              "cap on buffered decoded events (bytes, 13 per event)",
                              range=(1000, 2_000_000_000)),
    "clock_mode": Param("sensor", "frame time: sensor (DAVIS, same clock), offset "
                        "(separate camera), trigger (trigger events)",
                        ("sensor", "offset", "trigger")),
    "event_timeout_ms": Param(100.0, "how long a frame waits for its events (ms)",
                              range=(1.0, 10000.0)),
    "silence_timeout_ms": Param(500.0, "no event packet this long = event topic silent: "
                                "frames-only fallback (ms)", range=(1.0, 60000.0)),
    "trigger_tolerance_ms": Param(25.0, "trigger mode: max distance frame - trigger (ms)",
                                  range=(0.001, 1000.0)),
    "image_width": Param(0, "expected frame width in px (0: any); others dropped",
                         range=(0, 16384)),
    "image_height": Param(0, "expected frame height in px (0: any); others dropped",
                          range=(0, 16384)),
    "publish_rain_layer": Param(False, "also publish ~/rain_layer", runtime=True),
    "publish_events_image": Param(False, "also publish ~/events_image", runtime=True),
    "diagnostics_period": Param(1.0, "period of /diagnostics (s)", range=(0.05, 60.0)),
    "drop_policy": Param("newest", "newest: keep the newest frame, drop stale ones (live); "
                         "block: queue without dropping (replay); settable at run time",
                         ("newest", "block"), runtime=True),
    "block_queue_depth": Param(64, "queue length in block mode (frames)", range=(1, 10000)),
    "use_cv_bridge": Param(True, "convert images with cv_bridge where it is installed"),
}


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters, read once (see :data:`PARAMETERS` for meanings)."""

    image_topic: str
    event_topic: str
    event_msg_type: str
    image_transport: str
    image_qos_reliability: str
    image_qos_depth: int
    event_qos_reliability: str
    event_qos_depth: int
    output_qos_reliability: str
    output_qos_depth: int
    model: str
    checkpoint: str
    in_chans: int
    allow_random_weights: bool
    device: str
    dtype: str
    compile: bool
    backend: str
    runtime_cache_dir: str
    arrangement: str
    dump_inputs_dir: str
    num_threads: int
    warmup_width: int
    warmup_height: int
    max_buffer_bytes: int
    clock_mode: str
    event_timeout_ms: float
    silence_timeout_ms: float
    trigger_tolerance_ms: float
    image_width: int
    image_height: int
    publish_rain_layer: bool
    publish_events_image: bool
    diagnostics_period: float
    drop_policy: str
    block_queue_depth: int
    use_cv_bridge: bool

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> NodeConfig:
        """Build and validate; :class:`ConfigError` lists every problem."""
        problems = problems_of(values)
        if problems:
            raise ConfigError("invalid parameters: " + "; ".join(problems))
        return cls(**{k: values[k] for k in PARAMETERS})

    def replace(self, **changes: Any) -> NodeConfig:
        """A validated copy with some parameters changed."""
        return NodeConfig.from_values({**dataclasses.asdict(self), **changes})


def problems_of(values: dict[str, Any]) -> list[str]:
    """What is wrong with a set of parameter values (empty when nothing)."""
    problems = []
    for name, spec in PARAMETERS.items():
        if name not in values:
            problems.append(f"{name} is missing")
            continue
        value = values[name]
        if type(value) is not type(spec.default) and not (
                isinstance(spec.default, float) and type(value) is int):
            problems.append(f"{name} must be {type(spec.default).__name__}, got {value!r}")
            continue
        if spec.choices and value not in spec.choices:
            problems.append(f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
        if spec.range and not spec.range[0] <= value <= spec.range[1]:
            problems.append(f"{name} must be in [{spec.range[0]}, {spec.range[1]}], got {value}")
    if not problems:
        if values["in_chans"] not in (1, 3):
            problems.append(f"in_chans must be 1 or 3, got {values['in_chans']}")
        for topic in ("image_topic", "event_topic"):
            if not values[topic]:
                problems.append(f"{topic} must not be empty")
        if values["device"] != "auto" and not values["device"].startswith(("cpu", "cuda")):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {values['device']!r}")
        ckpt = values["checkpoint"]
        if ckpt and not _checkpoint_exists(ckpt):
            problems.append(f"checkpoint {ckpt!r} does not exist")
    return problems


def _checkpoint_exists(path: str) -> bool:
    p = Path(path)
    return any(q.is_file() for q in (p, p.with_suffix(".safetensors"), p.with_suffix(".json")))


class _HandOver:
    """Windows from the callbacks to the worker: newest-wins slot, or a bounded FIFO."""

    def __init__(self, policy: str, depth: int) -> None:
        self.policy = policy
        self.depth = 1 if policy == "newest" else depth
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.dropped_stale = 0
        self.dropped_full = 0
        self.closed = False

    def put(self, item: Any) -> None:
        """Never blocks."""
        with self._cond:
            if len(self._items) >= self.depth:
                if self.policy == "newest":
                    self._items.popleft()
                    self.dropped_stale += 1
                else:
                    self.dropped_full += 1
                    return
            self._items.append(item)
            self._cond.notify()

    def set_policy(self, policy: str, depth: int) -> None:
        """Switch policy at run time (waiting items are kept, the oldest dropped if too many)."""
        with self._cond:
            self.policy = policy
            self.depth = 1 if policy == "newest" else depth
            while len(self._items) > self.depth:
                self._items.popleft()
                self.dropped_stale += 1

    def get(self, timeout: float) -> Any | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


#: synchroniser counters that make a diagnostics report WARN when they grew
_SYNC_WARNINGS = {
    "clock_resets": "clock reset(s): time went backwards",
    "packets_buffer_full": "event packet(s) dropped: buffer full",
    "packets_malformed": "malformed event packet(s) dropped",
    "packet_gaps": "event packet(s) lost upstream (seq gaps)",
    "packets_late": "late event packet(s) dropped",
    "frames_out_of_order": "out-of-order frame(s) dropped",
}


def descriptor(name: str, spec: Param) -> ParameterDescriptor:
    """The ROS parameter descriptor of ``spec``: description, range, read-only."""
    del name
    text = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices
                               else "")
    d = ParameterDescriptor(description=text, read_only=not spec.runtime)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                         to_value=float(hi), step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    if spec.choices:
        d.additional_constraints = f"one of: {', '.join(spec.choices)}"
    return d


class DerainNode(Node):
    """See the module docstring."""

    def __init__(self, name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        for pname, spec in PARAMETERS.items():
            self.declare_parameter(pname, spec.default, descriptor(pname, spec))
        values = {p: self.get_parameter(p).value for p in PARAMETERS}
        self.config = NodeConfig.from_values(values)
        cfg = self.config
        source = cfg.checkpoint or cfg.model
        self.engine = DerainEngine(
            source, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile,
            backend=cfg.backend, cache_dir=cfg.runtime_cache_dir or None,
            threads=cfg.num_threads,
            arrangement=cfg.arrangement, in_chans=cfg.in_chans,
            allow_random_weights=cfg.allow_random_weights,
            want_rain=cfg.publish_rain_layer, want_events_image=cfg.publish_events_image,
            dump_inputs=cfg.dump_inputs_dir or None)
        if cfg.warmup_width and cfg.warmup_height:
            secs = self.engine.warm_up(cfg.warmup_height, cfg.warmup_width)
            self.get_logger().info(f"warm-up at {cfg.warmup_width}x{cfg.warmup_height} "
                                   f"took {secs * 1e3:.0f} ms")
        self.sync = FrameEventSynchronizer(SyncConfig(
            clock_mode=cfg.clock_mode, max_buffer_bytes=cfg.max_buffer_bytes,
            event_timeout_ns=int(cfg.event_timeout_ms * 1e6),
            silence_timeout_ns=int(cfg.silence_timeout_ms * 1e6),
            trigger_tolerance_ns=int(cfg.trigger_tolerance_ms * 1e6)))
        self._sync_lock = threading.Lock()
        self.handover = _HandOver(cfg.drop_policy, cfg.block_queue_depth)
        self.frames_in = RateMeter()
        self.frames_out = RateMeter()
        self.packets_in = RateMeter()
        self.latency = LatencyWindow()
        self.infer_ms = LatencyWindow()
        self.cost = FrameCost()  # the node's own per-frame cost outside inference
        self.drops: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_problem = ""
        self._last_problem_ns = 0
        self._arrivals: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._silent_reported = False
        self._reported: dict[str, int] = {}

        group = MutuallyExclusiveCallbackGroup()
        in_image = qos_profile(cfg.image_qos_reliability, cfg.image_qos_depth)
        in_events = qos_profile(cfg.event_qos_reliability, cfg.event_qos_depth)
        out_qos = qos_profile(cfg.output_qos_reliability, cfg.output_qos_depth)
        if cfg.image_transport == "compressed":
            self.create_subscription(CompressedImage, cfg.image_topic + "/compressed",
                                     self._on_image, in_image, callback_group=group)
        else:
            self.create_subscription(Image, cfg.image_topic, self._on_image, in_image,
                                     callback_group=group)
        if cfg.event_msg_type == "EventArray":
            self.create_subscription(EventArray, cfg.event_topic, self._on_event_array,
                                     in_events, callback_group=group)
        else:
            self.create_subscription(EventPacket, cfg.event_topic, self._on_packet,
                                     in_events, callback_group=group)
        self.pub_image = self.create_publisher(Image, OUT_IMAGE, out_qos)
        self.pub_rain = self.create_publisher(Image, OUT_RAIN, out_qos)
        self.pub_events = self.create_publisher(Image, OUT_EVENTS_IMAGE, out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(0.05, self._on_poll, callback_group=group)
        self.create_timer(cfg.diagnostics_period, self._on_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="derain_worker",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"deraining {cfg.image_topic} with {cfg.event_topic} ({cfg.event_msg_type}) "
            f"using {self.engine.model_name} on {self.engine.device_name} "
            f"({self.engine.dtype_name}), drop_policy "
            f"{cfg.drop_policy}; runtime {self.engine.backend_name} "
            f"({self.engine.backend_reason}); input contract {self.engine.contract}")

    # -------------------------------------------------------------- problems

    def _problem(self, kind: str, counter: collections.Counter[str], text: str) -> None:
        counter[kind] += 1
        self.last_problem = f"{kind}: {text}"
        self._last_problem_ns = time.monotonic_ns()
        self.get_logger().warning(f"{kind}: {text}", throttle_duration_sec=2.0)

    # -------------------------------------------------------------- callbacks

    def _enqueue(self, windows: list[Any]) -> None:
        for w in windows:
            if w.events_missing and not self._silent_reported and self.sync.events_silent:
                self._silent_reported = True
                self.get_logger().warning(
                    "event topic silent: frames pass through the frames-only fallback")
            elif not w.events_missing:
                self._silent_reported = False
            self.handover.put(w)

    def _on_image(self, msg: Any) -> None:
        arrival = time.monotonic_ns()
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        self.frames_in.tick(arrival)
        try:
            frame = frame_from_msg(msg, use_cv_bridge=self.config.use_cv_bridge)
        except DerainError as err:
            self._problem("bad_image", self.drops, str(err))
            return
        cfg = self.config
        if (cfg.image_width and frame.width != cfg.image_width) or (
                cfg.image_height and frame.height != cfg.image_height):
            self._problem("bad_image_size", self.drops,
                          f"frame of {frame.width}x{frame.height} px, expected "
                          f"{cfg.image_width or 'any'}x{cfg.image_height or 'any'}")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        with self._sync_lock:
            self._arrivals[stamp] = arrival
            while len(self._arrivals) > 256:
                self._arrivals.popitem(last=False)
            windows = self.sync.add_frame(frame, None, stamp, msg.header.frame_id)
        self.cost.charge(c0, w0)
        self.cost.frame_received(stamp)
        self._enqueue(windows)

    def _on_packet(self, msg: Any) -> None:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        self.packets_in.tick()
        with self._sync_lock:
            windows = self.sync.add_events(
                memoryview(msg.events), msg.time_base, msg.encoding, msg.width, msg.height,
                stamp_to_ns(msg.header.stamp), msg.seq)
        self._enqueue(windows)
        self.cost.charge(c0, w0)

    def _on_event_array(self, msg: Any) -> None:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        self.packets_in.tick()
        try:
            batch = event_array_msg_to_batch(msg)
        except DerainError as err:
            self.sync.counters.packets_malformed += 1
            self._problem("bad_event_array", self.errors, str(err))
            return
        with self._sync_lock:
            windows = self.sync.add_decoded(batch, stamp_to_ns(msg.header.stamp))
        self._enqueue(windows)
        self.cost.charge(c0, w0)

    def _on_poll(self) -> None:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        with self._sync_lock:
            windows = self.sync.poll()
        self._enqueue(windows)
        self.cost.charge(c0, w0)

    # -------------------------------------------------------------- worker

    def _work(self) -> None:
        while not self._stop.is_set():
            window = self.handover.get(timeout=0.1)
            if window is None:
                continue
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            try:
                result = self.engine.process(window)
            except (ModelError, DerainError) as err:
                self._problem("inference_error", self.errors, str(err))
                continue
            except Exception as err:  # the worker must survive anything one frame does
                self._problem("inference_error", self.errors, repr(err))
                continue
            if result is None:
                continue
            try:
                self._publish(result)
            except Exception as err:
                self._problem("publish_error", self.errors, repr(err))
                continue
            self.cost.frame_done(result.window.stamp_ns, time.thread_time_ns() - c0,
                                 time.perf_counter_ns() - w0, result.timings_ms)

    def _publish(self, result: Any) -> None:
        w = result.window
        header = header_from(w.stamp_ns, w.frame_id)
        self.pub_image.publish(network_image_msg(result.derained, w.image.encoding, header))
        done = time.monotonic_ns()
        self.frames_out.tick(done)
        with self._sync_lock:
            arrival = self._arrivals.pop(w.stamp_ns, None)
        if arrival is not None:
            self.latency.add((done - arrival) / 1e6)
        self.infer_ms.add(result.timings_ms.get("infer", float("nan")))
        if self.config.publish_rain_layer and result.rain is not None:
            self.pub_rain.publish(network_image_msg(result.rain, w.image.encoding, header))
        if self.config.publish_events_image and result.events_image is not None:
            self.pub_events.publish(image_msg(from_network(result.events_image, "rgb8"),
                                              "rgb8", header))

    # -------------------------------------------------------------- parameters

    def _on_set_parameters(self, params: list[Any]) -> Any:
        changes = {p.name: p.value for p in params}
        try:
            candidate = self.config.replace(**changes)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        new_ckpt = changes.get("checkpoint")
        if new_ckpt is not None and new_ckpt != self.config.checkpoint:
            path = new_ckpt
            if not path:
                path = str(default_checkpoint_path(candidate.model, candidate.in_chans))
            try:
                self.engine.swap_checkpoint(path)
            except DerainError as err:
                self._problem("checkpoint_swap_failed", self.errors, str(err))
                return SetParametersResult(
                    successful=False,
                    reason=f"checkpoint refused, still running {self.engine.source}: {err}")
            self.get_logger().info(f"switched to checkpoint {path}")
        if candidate.drop_policy != self.config.drop_policy:
            self.handover.set_policy(candidate.drop_policy, candidate.block_queue_depth)
        self.engine.want_rain = candidate.publish_rain_layer
        self.engine.want_events_image = candidate.publish_events_image
        self.config = candidate
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------- diagnostics

    def diagnostics_values(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as a flat dict."""
        sc = self.sync.counters.as_dict()
        values: dict[str, Any] = {
            "frames_in_hz": self.frames_in.rate(),
            "frames_out_hz": self.frames_out.rate(),
            "event_packets_hz": self.packets_in.rate(),
            "frames_received": self.frames_in.total,
            "frames_published": self.frames_out.total,
            "latency_p50_ms": self.latency.percentile(50),
            "latency_p99_ms": self.latency.percentile(99),
            "inference_p50_ms": self.infer_ms.percentile(50),
            "infer_ms_p50": self.infer_ms.percentile(50),
            "dropped_stale": self.handover.dropped_stale,
            "dropped_queue_full": self.handover.dropped_full,
            "queue_length": len(self.handover),
            "buffer_fill": sc["buffer_bytes"] / self.config.max_buffer_bytes,
            "events_silent": self.sync.events_silent,
            "device": self.engine.device_name,
            "dtype": self.engine.dtype_name,
            "backend": self.engine.backend_name,
            "backend_reason": self.engine.backend_reason,
            "model": self.engine.model_name,
            "checkpoint": self.engine.source,
            "arrangement": self.engine.arrangement,
            "input_contract": json.dumps(self.engine.contract.to_dict(), sort_keys=True),
            "random_weights": self.engine.random_weights,
            "checkpoint_swaps": self.engine.swaps,
            "checkpoint_swap_failures": self.engine.swap_failures,
            "last_problem": self.last_problem,
        }
        for kind, n in sorted(self.drops.items()):
            values[f"dropped_{kind}"] = n
        for kind, n in sorted(self.errors.items()):
            values[f"errors_{kind}"] = n
        values.update({f"sync_{k}": v for k, v in sc.items()})
        values.update(self.cost.values())  # overhead_cpu_ms_p50, overhead_wall_ms_p50, ...
        values.update(memory_mb())  # rss_mb, rss_peak_mb
        return values

    def _on_diagnostics(self) -> None:
        values = self.diagnostics_values()
        recent = time.monotonic_ns() - self._last_problem_ns < 10e9 and self.last_problem
        warnings = []
        for key, text in _SYNC_WARNINGS.items():  # faults since the last report
            n = int(values[f"sync_{key}"]) - self._reported.get(key, 0)
            self._reported[key] = int(values[f"sync_{key}"])
            if n > 0:
                warnings.append(f"{n} {text}")
        if values["events_silent"] and values["frames_received"]:
            warnings.append("event topic silent: frames-only fallback")
        if values["random_weights"]:
            warnings.append("running random weights")
        if recent:
            warnings.append(self.last_problem)
        level = "WARN" if warnings else "OK"
        if self.errors.get("inference_error") and recent and "inference" in self.last_problem:
            level = "ERROR"
        message = "; ".join(warnings) if warnings else (
            f"{values['frames_out_hz']:.1f} fps, p99 {values['latency_p99_ms']:.1f} ms")
        status = status_msg(f"{self.get_name()}: deraining", self.engine.model_name,
                            level, message[:500], values)
        self.pub_diag.publish(array_msg(self.get_clock().now().to_msg(), [status]))

    # -------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Stop the worker thread (waits for the frame in progress)."""
        self._stop.set()
        self.handover.close()
        self._worker.join(timeout=10.0)



def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``derain_node``: ROS arguments as for any node (``--ros-args ...``)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node = None
    try:
        try:
            node = DerainNode()
        except DerainError as err:
            print(f"derain_node: cannot start: {err}", file=sys.stderr)
            return 1
        # One executor thread: rclpy's multi-threaded executor costs the worker ~20 % of
        # its throughput in GIL contention (bench/node.py); a checkpoint swap then holds
        # the callbacks for its load (tens of ms), which the subscriptions' queues absorb.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
        return 0
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``derain-ros run``."""
    parser.add_argument("--params-file", type=Path, default=None,
                        help="ROS parameters YAML (e.g. config/derain.yaml)")
    parser.add_argument("--model", help="network size (overrides the params file)")
    parser.add_argument("--checkpoint", help="checkpoint path (overrides the params file)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the params file)")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="run an untrained network when no weights exist")
    parser.add_argument("--name", default=NODE_NAME, help="node name")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                        help="everything after it goes to ROS (-r remappings, -p params)")


def ros_argv(args: argparse.Namespace) -> list[str]:
    """The ``--ros-args`` list that :func:`run` gives rclpy for these arguments."""
    argv = ["derain_node", "--ros-args", "-r", f"__node:={args.name}"]
    if args.params_file is not None:
        if not Path(args.params_file).is_file():
            raise ConfigError(f"params file {args.params_file} does not exist")
        argv += ["--params-file", str(args.params_file)]
    for name in ("model", "checkpoint", "device"):
        if getattr(args, name):
            argv += ["-p", f"{name}:={getattr(args, name)}"]
    if args.allow_random_weights:
        argv += ["-p", "allow_random_weights:=true"]
    extra = [a for a in (args.ros_args or []) if a != "--ros-args"]
    return argv + extra


def run(args: argparse.Namespace) -> int:
    """``derain-ros run``: the same node as ``ros2 launch``, without launch_ros."""
    return main(ros_argv(args))


if __name__ == "__main__":
    sys.exit(main())
