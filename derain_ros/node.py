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

Topics (ROS 2 camera-pipeline conventions; README "The node"): subscribes the relative
names ``image`` (``sensor_msgs/Image``, or ``CompressedImage`` on ``<image>/compressed``
with ``image_transport: compressed``, as an image_transport subscriber), ``camera_info``
next to the image (image_transport's camera convention) and ``events``
(``event_camera_msgs/EventPacket``, or ``dv_ros2_msgs/EventArray``), sensor-data QoS by
default. Topics are set by remapping only (``-r image:=/cam/image_raw``; the former
``image_topic``/``event_topic`` parameters are refused saying so), and a namespace moves
them. Publishes ``~/image`` (same header as the input frame), ``~/camera_info`` (the
input's, with that header), ``~/image/compressed`` (image_transport's compressed
layout, encoded only while subscribed), optionally ``~/rain_layer`` and
``~/events_image`` (not advertised while off), and ``/diagnostics``. Every subscription
and publisher takes ``qos_overrides.<topic>.<entity>.<policy>`` parameters; the resolved
names, types and QoS are logged once at start-up.

:class:`DerainNode` does everything at construction; :class:`DerainLifecycleNode`
(``derain_lifecycle_node``) loads the model on ``configure`` and processes only while
active. Both are :class:`DerainCore`.

Parameters are declared with descriptions and ranges (:data:`PARAMETERS`), read once
into a frozen :class:`NodeConfig`, and validated again on every change. Only
``checkpoint`` (swapped without stopping the stream; a bad file is refused and the
running network kept), ``drop_policy``, ``publish_rain_layer`` and
``publish_events_image`` change at run time; the rest are read-only (restart the node).
Timeouts run on the node's clock (ROS time: ``/clock`` under ``use_sim_time``).

Field faults (``docs/recovery.md``): clock discontinuities on either stream are
recovered by the synchroniser within a few frames and counted; frames over
``max_frame_pixels`` are dropped from the message fields before any conversion;
/diagnostics goes WARN while output is stalled or frames-only and ERROR when that
lasts ``degraded_error_s``; SIGINT/SIGTERM end the node within ``shutdown_timeout_s``
even while a long inference runs. The /diagnostics keys and levels are listed there.

Missing weights: with no trained weights for ``model`` and no ``checkpoint``, the node
refuses to start with a message saying so, unless ``allow_random_weights`` is true
(tests, benchmarks): then it runs the untrained network, logs a warning and reports
``random_weights: True`` with level WARN in diagnostics.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from derain_ros.conventions import (
    DEFAULT_REMAPS,
    EVENT_QOS_DEPTH,
    IN_EVENTS,
    IN_IMAGE,
    OUT_CAMERA_INFO,
    OUT_COMPRESSED,
    OUT_EVENTS_IMAGE,
    OUT_IMAGE,
    OUT_RAIN,
    camera_info_topic,
    remap_args,
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
    camera_info_like,
    compressed_msg,
    describe_qos,
    frame_from_msg,
    frame_pixels,
    header_from,
    image_msg,
    max_encoded_bytes,
    memory_mb,
    network_image_msg,
    overridable,
    qos_profile,
    shm_segment_bytes,
    status_msg,
)
from derain_ros.ros.interfaces import event_message_class
from derain_ros.sync import (
    FrameEventSynchronizer,
    SyncConfig,
    event_array_msg_to_batch,
    stamp_to_ns,
)

__all__ = ["PARAMETERS", "DerainCore", "DerainLifecycleNode", "DerainNode", "NodeConfig",
           "add_arguments", "lifecycle_main", "main", "run"]

_log = logging.getLogger(__name__)

NODE_NAME = "derain_node"

#: Default cap on a frame's pixels: 1920 x 1200, the largest camera of the rigs.
MAX_FRAME_PIXELS = 1920 * 1200

#: How often the graph is checked for another node of this node's name (s).
NAME_CHECK_S = 2.0


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
    "event_msg_type": Param("EventPacket", "event message type",
                            ("EventPacket", "EventArray")),
    "image_transport": Param("raw", "input transport, as image_transport's parameter: raw: "
                             "sensor_msgs/Image on the image topic (remap image:=TOPIC); "
                             "compressed: CompressedImage on TOPIC/compressed",
                             ("raw", "compressed")),
    "image_qos_reliability": Param("best_effort", "frame (and camera_info) subscription "
                                   "reliability; qos_overrides.TOPIC.subscription.reliability "
                                   "overrides it", ("best_effort", "reliable", "system_default")),
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
    "dtype": Param("auto", "auto (bf16/fp16 on CUDA, fp32 on CPU); int8: onnxruntime on the "
                   "CPU only, fp32 until the first int8_calibration_frames frames have "
                   "calibrated a quantised graph that agrees with fp32 (cached per weights "
                   "and size; delete the -int8- file in runtime_cache_dir to recalibrate); "
                   "fastest: int8 where it can run (CPU, onnxruntime), else auto",
                   ("auto", "fp32", "fp16", "bf16", "int8", "fastest")),
    "int8_calibration_frames": Param(24, "dtype int8: frames run on fp32 whose inputs "
                                     "calibrate the quantised graph (1 in 4 held back to "
                                     "check it)", range=(2, 1000)),
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
    "num_threads": Param(0, "CPU threads of the back-end's operators (0: its default, "
                         "one per core)", range=(0, 256)),
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
    "max_frame_pixels": Param(MAX_FRAME_PIXELS, "largest frame taken (width x height, px); "
                              "larger ones are dropped and counted before any conversion "
                              "(default 1920 x 1200)", range=(1, 100_000_000)),
    "silence_grace_ms": Param(20.0, "while the event topic is silent a frame still waits "
                              "this long for a first packet before it passes frames-only (ms)",
                              range=(0.0, 1000.0)),
    "degraded_error_s": Param(5.0, "output stalled or frames-only this long makes "
                              "/diagnostics ERROR (WARN before)", range=(0.1, 3600.0)),
    "stall_timeout_s": Param(1.0, "a frame received but nothing published for this long "
                             "is a stalled output (s)", range=(0.05, 600.0)),
    "shutdown_timeout_s": Param(3.0, "on SIGINT/SIGTERM, how long to wait for the frame "
                                "in inference before exiting without it (s)",
                                range=(0.0, 600.0)),
    "publish_rain_layer": Param(False, "also publish ~/rain_layer (not advertised when off)",
                                runtime=True),
    "publish_events_image": Param(False, "also publish ~/events_image (not advertised when "
                                  "off)", runtime=True),
    "publish_compressed": Param(True, "also offer ~/image/compressed as image_transport's "
                                "compressed plugin does (JPEG; PNG for 16-bit), encoded only "
                                "while someone subscribes; false: not advertised"),
    "jpeg_quality": Param(95, "JPEG quality of ~/image/compressed", range=(1, 100)),
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
    int8_calibration_frames: int
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
    max_frame_pixels: int
    silence_grace_ms: float
    degraded_error_s: float
    stall_timeout_s: float
    shutdown_timeout_s: float
    publish_rain_layer: bool
    publish_events_image: bool
    publish_compressed: bool
    jpeg_quality: int
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
        self.in_worker = 0  # taken by the worker and not done yet
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
        """The next item (then :meth:`done` when finished with it), None on timeout."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self.in_worker += 1
            return self._items.popleft()

    def done(self) -> None:
        """The worker finished the item it took (published or counted as dropped)."""
        with self._cond:
            self.in_worker -= 1

    def discard(self) -> int:
        """Drop every waiting item (shutdown); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Take windows again (a lifecycle node activated after a deactivation)."""
        with self._cond:
            self.closed = False


#: synchroniser counters that make a diagnostics report WARN when they grew
_SYNC_WARNINGS = {
    "clock_resets": "clock reset(s): time went backwards",
    "packets_buffer_full": "event packet(s) dropped: buffer full",
    "packets_malformed": "malformed event packet(s) dropped",
    "packet_gaps": "event packet(s) lost upstream (seq gaps)",
    "packets_late": "late event packet(s) dropped",
    "frames_out_of_order": "out-of-order frame(s) dropped",
    "frames_stale": "frame(s) of an old time line dropped (clock discontinuity)",
    "packets_stale": "event packet(s) of an old time line dropped (clock discontinuity)",
    "clock_resyncs": "time line re-founded after a wrong clock reset",
    "format_changes": "event format change(s)",
}

#: node drop kinds (``dropped_*``) that lose a frame, for the frame accounting
_FRAME_DROPS = ("bad_image", "bad_image_size", "too_large", "shutdown")
#: node error kinds (``errors_*``) that lose a frame
_FRAME_ERRORS = ("inference_error", "publish_error")


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


#: Parameters every rclpy node may be given besides ours (and ``qos_overrides.*``).
_ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")

#: Former parameters -> the name to remap instead (one way to set a topic: remapping).
REMOVED_TOPIC_PARAMETERS = {"image_topic": IN_IMAGE, "event_topic": IN_EVENTS}


def refuse_unknown_parameters(given: Any) -> None:
    """Refuse parameters (from a params file or ``-p``) that this node does not have.

    Why: rclpy silently ignores a parameter nobody declares, so a misspelled one (say
    ``drop_polcy: block``) would leave the default running without a word. The message
    names each unknown parameter and the closest known names.
    """
    import difflib

    removed = sorted(n for n in given if n in REMOVED_TOPIC_PARAMETERS)
    if removed:
        raise ConfigError("; ".join(
            f"{n} is not a parameter: topics are set by remapping, use remapping "
            f"`--ros-args -r {REMOVED_TOPIC_PARAMETERS[n]}:="
            f"{getattr(given[n], 'value', given[n]) or 'TOPIC'}` (launch: {n}:=TOPIC)"
            for n in removed))
    unknown = sorted(n for n in given if n not in PARAMETERS and n not in _ROS_PARAMETERS
                     and not n.startswith("qos_overrides."))
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, list(PARAMETERS), n=2)
            hints.append(n + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise ConfigError("unknown parameter(s): " + ", ".join(hints)
                          + "; every parameter with its description: config/derain.yaml")


def check_params_file(path: Path) -> None:
    """Refuse a params file that does not exist or is not a ROS 2 parameters YAML."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"params file {path} is not YAML: {err}") from err
    if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)
            for v in data.values()):
        raise ConfigError(f"params file {path} is not a ROS 2 parameters file: expected "
                          "NODE_NAME (or /**): ros__parameters: {name: value, ...}")


class DerainCore:
    """The node's behaviour, shared by :class:`DerainNode` and :class:`DerainLifecycleNode`.

    A mixin over an rclpy ``Node`` (or ``LifecycleNode``), in four steps a plain node runs
    at once and a lifecycle node runs on its transitions: :meth:`_declare` (parameters,
    refused when unknown), :meth:`_load` (the engine with its model, warm-up, the
    synchroniser and counters: lifecycle ``configure``), :meth:`_start` (subscriptions,
    publishers, timers, the worker: ``activate``) and :meth:`_stop` (``deactivate``).
    Nothing is subscribed or published outside ``_start`` .. ``_stop``.

    Timeouts (event, silence, stall, degraded) run on the node's clock, so they follow
    ``/clock`` under ``use_sim_time`` (bag playback, simulators); rates and latencies are
    measurements of this process and stay on the monotonic clock.
    """

    config: NodeConfig
    engine: DerainEngine | None

    # rclpy Node methods the mixin uses (provided by the Node it is mixed into)
    if TYPE_CHECKING:
        get_logger: Any
        get_clock: Any
        get_name: Any
        get_namespace: Any
        get_fully_qualified_name: Any
        get_node_names_and_namespaces: Any
        resolve_topic_name: Any
        create_subscription: Any
        create_publisher: Any
        create_timer: Any
        destroy_subscription: Any
        destroy_publisher: Any
        destroy_timer: Any
        declare_parameter: Any
        get_parameter: Any
        describe_parameter: Any
        add_on_set_parameters_callback: Any
        _parameter_overrides: Any
        _set_parameters_atomically_common: Any

    def _declare(self) -> None:
        """Declare the parameters (refusing unknown ones) and read them."""
        refuse_unknown_parameters(self._parameter_overrides)
        for pname, spec in PARAMETERS.items():
            self.declare_parameter(pname, spec.default, descriptor(pname, spec))
        values = {p: self.get_parameter(p).value for p in PARAMETERS}
        self.config = NodeConfig.from_values(values)
        self.engine = None
        self._active = False
        self._entities: list[tuple[str, Any]] = []  # ("subscription"|"publisher"|"timer", x)
        self._optional: dict[str, Any] = {}  # optional output topic -> publisher
        self._optional_lock = threading.Lock()
        self._optional_dirty = False
        self._stop = threading.Event()
        self._stop.set()
        self._worker: threading.Thread | None = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _ros_now_ns(self) -> int:
        """The node's clock (ROS time: ``/clock`` under ``use_sim_time``), in ns."""
        return int(self.get_clock().now().nanoseconds)

    def _load(self) -> None:
        """The engine (model, weights, runtime back-end, warm-up), synchroniser, counters."""
        cfg = self.config
        # Before the network loads (seconds): a missing interface is refused at once.
        self._event_type = event_message_class(cfg.event_msg_type)
        source = cfg.checkpoint or cfg.model
        self.engine = DerainEngine(
            source, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile,
            backend=cfg.backend, cache_dir=cfg.runtime_cache_dir or None,
            threads=cfg.num_threads, int8_calibration_frames=cfg.int8_calibration_frames,
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
            silence_grace_ns=int(cfg.silence_grace_ms * 1e6),
            trigger_tolerance_ns=int(cfg.trigger_tolerance_ms * 1e6)),
            clock=self._ros_now_ns)
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
        self.held = 0  # windows the engine keeps for the next one (centre arrangement)
        self._last_frame_in_ns: int | None = None  # ROS time
        self._unpublished_since: int | None = None  # first frame in since the last output
        self._frames_only = False  # the newest window went out without events
        self._degraded_since: dict[str, int] = {}  # condition -> ROS time (ns) it began
        self.duplicate_name = False
        self._name_checked_ns = 0
        self._pending_model: str | None = None  # `model` to show after a swap
        # a swap whose graph is exported first (seconds, in a child process) runs on a
        # thread of its own, so the callbacks keep serving the stream meanwhile
        self._swap_thread: threading.Thread | None = None
        self._revert_checkpoint: str | None = None  # set back after a failed one
        self._infos: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._info_lock = threading.Lock()
        self.camera_frame_id = ""  # the input camera's frame_id: the diagnostics' hardware_id
        self.image_topic = self.resolve_topic_name(IN_IMAGE)
        self.shm_segment_bytes = shm_segment_bytes()
        self.max_frame_bytes = max_encoded_bytes(cfg.max_frame_pixels)
        if self.shm_segment_bytes is not None and self.max_frame_bytes > self.shm_segment_bytes:
            self.get_logger().warning(
                f"max_frame_pixels {cfg.max_frame_pixels} allows frames of up to "
                f"{self.max_frame_bytes} bytes, over the {self.shm_segment_bytes}-byte "
                "shared-memory segment of the Fast DDS profile: larger frames are dropped "
                "by DDS without a trace. Raise segment_size in the profile "
                "(docs/recovery.md) or lower max_frame_pixels")

    def _unload(self) -> None:
        """Let go of the engine (lifecycle ``cleanup``); :meth:`_load` builds a new one."""
        self.engine = None
        self._infos.clear()

    def _subscribe(self, msg_type: Any, topic: str, callback: Any, qos: Any,
                   group: Any) -> Any:
        # a copy each: rclpy applies qos_overrides to the profile it is given
        sub = self.create_subscription(msg_type, topic, callback, copy.copy(qos),
                                       callback_group=group,
                                       qos_overriding_options=overridable())
        self._entities.append(("subscription", sub))
        return sub

    def _new_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        # a copy each: rclpy applies qos_overrides to the profile it is given
        return self.create_publisher(msg_type, topic, copy.copy(qos),
                                     qos_overriding_options=overridable())

    def _advertise(self, msg_type: Any, topic: str, qos: Any) -> Any:
        pub = self._new_publisher(msg_type, topic, qos)
        self._entities.append(("publisher", pub))
        return pub

    def _start(self) -> None:
        """Subscribe, advertise, start the timers and the worker; log the resolved names."""
        cfg = self.config
        group = MutuallyExclusiveCallbackGroup()
        in_image = qos_profile(cfg.image_qos_reliability, cfg.image_qos_depth)
        in_events = qos_profile(cfg.event_qos_reliability, cfg.event_qos_depth)
        self._out_qos = qos_profile(cfg.output_qos_reliability, cfg.output_qos_depth)
        self.image_topic = self.resolve_topic_name(IN_IMAGE)
        if cfg.image_transport == "compressed":  # image_transport: <base topic>/compressed
            self._subscribe(CompressedImage, self.image_topic + "/compressed",
                            self._on_image, in_image, group)
        else:
            self._subscribe(Image, IN_IMAGE, self._on_image, in_image, group)
        self._subscribe(CameraInfo, camera_info_topic(self.image_topic), self._on_camera_info,
                        in_image, group)
        on_events = self._on_event_array if cfg.event_msg_type == "EventArray" else self._on_packet
        self._subscribe(self._event_type, IN_EVENTS, on_events, in_events, group)
        self.pub_image = self._advertise(Image, OUT_IMAGE, self._out_qos)
        self.pub_info = self._advertise(CameraInfo, OUT_CAMERA_INFO, self._out_qos)
        self.pub_diag = self._advertise(DiagnosticArray, "/diagnostics", 10)
        self._active = True
        self._sync_optional()
        # Steady timers: they only poll; the timeouts they check run on the node's clock,
        # and /diagnostics keeps coming while a bag is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        poll_s = max(0.005, min(0.05, cfg.silence_grace_ms / 1e3 or 0.05))
        self._entities.append(("timer", self.create_timer(
            poll_s, self._on_poll, callback_group=group, clock=steady)))
        self._entities.append(("timer", self.create_timer(
            cfg.diagnostics_period, self._on_diagnostics, clock=steady)))
        self._stop = threading.Event()
        self.handover.reopen()
        self._worker = threading.Thread(target=self._work, args=(self._stop,),
                                        name="derain_worker", daemon=True)
        self._worker.start()
        self._log_topics()
        engine = self._engine()
        self.get_logger().info(
            f"deraining {self.image_topic} with {self.resolve_topic_name(IN_EVENTS)} "
            f"({cfg.event_msg_type}) using {engine.model_name} on {engine.device_name} "
            f"({engine.dtype_name}{'; ' + engine.dtype_reason if engine.dtype_reason else ''}),"
            f" drop_policy "
            f"{cfg.drop_policy}; runtime {engine.backend_name} "
            f"({engine.backend_reason}); input contract {engine.contract}")

    def _log_topics(self) -> None:
        """One line per topic with its resolved name, type and QoS (after remapping,
        namespace and qos_overrides): what the node really reads and writes."""
        with self._optional_lock:
            entities = list(self._entities) + [("publisher", p) for p in
                                               self._optional.values()]
        for kind, entity in entities:
            if kind == "timer":
                continue
            direction = "subscribes" if kind == "subscription" else "publishes"
            type_name = getattr(entity, "msg_type", None)
            type_text = (f"{type_name.__module__.split('.')[0]}/{type_name.__name__}"
                         if type_name is not None else "?")
            self.get_logger().info(f"topic: {direction} {entity.topic_name} [{type_text}] "
                                   f"({describe_qos(entity.qos_profile)})")

    def _sync_optional(self) -> None:
        """Create the optional publishers that are on and destroy those that are off:
        an output nobody asked for is not advertised. Runs on the executor thread (from
        :meth:`_start` and the poll timer after a parameter change)."""
        cfg = self.config
        wanted = {OUT_RAIN: (Image, cfg.publish_rain_layer),
                  OUT_EVENTS_IMAGE: (Image, cfg.publish_events_image),
                  OUT_COMPRESSED: (CompressedImage, cfg.publish_compressed)}
        self._optional_dirty = False
        with self._optional_lock:
            for topic, (msg_type, on) in wanted.items():
                pub = self._optional.get(topic)
                if on and self._active and pub is None:
                    self._optional[topic] = self._new_publisher(msg_type, topic,
                                                                self._out_qos)
                elif pub is not None and not (on and self._active):
                    del self._optional[topic]
                    self.destroy_publisher(pub)

    def _publish_optional(self, topic: str, make: Callable[[], Any]) -> None:
        """Publish ``make()`` on an optional output if it is advertised. The compressed
        image is encoded only while someone subscribes (as image_transport does)."""
        with self._optional_lock:
            pub = self._optional.get(topic)
            if pub is None or (topic == OUT_COMPRESSED and pub.get_subscription_count() == 0):
                return
            pub.publish(make())

    def _stop_processing(self, *, leaving: bool = True) -> bool:
        """Stop the worker and destroy every subscription, publisher and timer; False
        when the frame in inference did not finish within ``shutdown_timeout_s``. Then,
        when the process is ``leaving``, the entities are left to the context; otherwise
        (lifecycle deactivate) they go anyway and the worker drops its frame when done."""
        if not self._active:
            return True
        self._stop.set()
        self.drops["shutdown"] += self.handover.discard()
        self.handover.close()
        finished = True
        if self._worker is not None:
            self._worker.join(timeout=self.config.shutdown_timeout_s)
            finished = not self._worker.is_alive()
        if not finished and leaving:
            return False
        self._active = False
        self._sync_optional()
        destroy = {"subscription": self.destroy_subscription,
                   "publisher": self.destroy_publisher, "timer": self.destroy_timer}
        for kind, entity in self._entities:
            destroy[kind](entity)
        self._entities.clear()
        return finished

    def _engine(self) -> DerainEngine:
        if self.engine is None:
            raise ConfigError("the node is not configured (no model loaded)")
        return self.engine

    # -------------------------------------------------------------- problems

    def _problem(self, kind: str, counter: collections.Counter[str], text: str) -> None:
        counter[kind] += 1
        self.last_problem = f"{kind}: {text}"
        self._last_problem_ns = time.monotonic_ns()
        if self._stop.is_set():  # the context may be gone: no rosout
            _log.warning("%s: %s", kind, text)
        else:
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
            self._frames_only = w.events_missing
            self.handover.put(w)

    def _on_image(self, msg: Any) -> None:
        arrival = time.monotonic_ns()
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        self.frames_in.tick(arrival)
        ros_now = self._ros_now_ns()
        self._last_frame_in_ns = ros_now
        if self._unpublished_since is None:
            self._unpublished_since = ros_now
        if msg.header.frame_id:
            self.camera_frame_id = msg.header.frame_id
        cfg = self.config
        pixels = frame_pixels(msg)  # from the fields: nothing allocated yet
        if pixels is not None and pixels > cfg.max_frame_pixels:
            self._too_large(int(msg.width), int(msg.height))
            return
        try:
            frame = frame_from_msg(msg, use_cv_bridge=self.config.use_cv_bridge)
        except DerainError as err:
            self._problem("bad_image", self.drops, str(err))
            return
        if frame.width * frame.height > cfg.max_frame_pixels:  # a CompressedImage
            self._too_large(frame.width, frame.height)
            return
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

    def _too_large(self, width: int, height: int) -> None:
        self._problem("too_large", self.drops,
                      f"frame of {width}x{height} px over max_frame_pixels "
                      f"{self.config.max_frame_pixels}: dropped")

    def _on_camera_info(self, msg: Any) -> None:
        """Keep the input camera's latest CameraInfos (by stamp) for the output's."""
        with self._info_lock:
            self._infos[stamp_to_ns(msg.header.stamp)] = msg
            while len(self._infos) > 64:
                self._infos.popitem(last=False)

    def _camera_info_for(self, header: Any) -> Any | None:
        """The input's CameraInfo for the frame stamped like ``header`` (else the latest),
        with the output's header; None before any arrived."""
        with self._info_lock:
            info = self._infos.get(stamp_to_ns(header.stamp))
            if info is None and self._infos:
                info = next(reversed(self._infos.values()))
        return None if info is None else camera_info_like(info, header)

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
        if self._revert_checkpoint is not None:
            self._show_checkpoint(self._revert_checkpoint)
        if self._pending_model is not None:
            self._show_model(self._pending_model)
        if self._optional_dirty:
            self._sync_optional()

    def _show_checkpoint(self, path: str) -> None:
        """Set ``checkpoint`` back to what runs after a background swap failed (the
        parameter said the new file while its graph was exported)."""
        self._revert_checkpoint = None
        self.config = dataclasses.replace(self.config, checkpoint=path)
        result = self._set_parameters_atomically_common([Parameter("checkpoint", value=path)])
        if not result.successful:
            self.get_logger().warning(f"cannot set checkpoint back to {path!r}: "
                                      f"{result.reason}")

    def _swap_in_background(self, path: str, previous: str) -> None:
        """The thread of a swap that exports a graph first (see ``_on_set_parameters``)."""
        engine = self._engine()
        try:
            engine.swap_checkpoint(path)
        except DerainError as err:
            self._problem("checkpoint_swap_failed", self.errors,
                          f"{err} (still running {engine.source})")
            self._revert_checkpoint = previous
            return
        self.get_logger().info(f"switched to checkpoint {path}")
        running = engine.model_name.removesuffix(" (random weights)")
        if running != self.config.model:
            self._pending_model = running  # the poll timer shows it (executor thread)

    def _show_model(self, name: str) -> None:
        """Set the read-only ``model`` parameter to the network now running."""
        self._pending_model = None
        self.config = dataclasses.replace(self.config, model=name)
        result = self._set_parameters_atomically_common(
            [Parameter("model", value=name)],
            descriptors={"model": self.describe_parameter("model")})  # read-only kept
        if not result.successful:
            self.get_logger().warning(f"cannot show model {name}: {result.reason}")

    # -------------------------------------------------------------- worker

    def _work(self, stop: threading.Event) -> None:
        """The worker thread; ``stop`` is its own (a lifecycle node re-activated while a
        stopped worker still finishes an inference must not get two workers)."""
        while not stop.is_set():
            window = self.handover.get(timeout=0.1)
            if window is None:
                continue
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            try:
                result = self._work_on(window)
            finally:
                self.handover.done()
            if result is not None:
                self.cost.frame_done(result.window.stamp_ns, time.thread_time_ns() - c0,
                                     time.perf_counter_ns() - w0, result.timings_ms)

    def _work_on(self, window: Any) -> Any:
        """Derain and publish one window; every way it can end is counted.

        Returns the published result (None when nothing was published)."""
        try:
            result = self._engine().process(window)
        except (ModelError, DerainError) as err:
            self._problem("inference_error", self.errors, str(err))
            return None
        except Exception as err:  # the worker must survive anything one frame does
            self._problem("inference_error", self.errors, repr(err))
            return None
        if result is None:
            self.held += 1
            return None
        if self._stop.is_set():  # shutting down: the publishers may be gone
            self.drops["shutdown"] += 1
            return None
        try:
            msg = network_image_msg(result.derained, result.window.image.encoding,
                                    header_from(result.window.stamp_ns,
                                                result.window.frame_id))
            self._check_shm(msg)
            self.pub_image.publish(msg)
        except Exception as err:
            self._problem("publish_error", self.errors, repr(err))
            return None
        try:
            self._published(result, msg)
        except Exception as err:  # the extra outputs; the frame itself is out
            self._problem("publish_extra_error", self.errors, repr(err))
        return result

    def _check_shm(self, msg: Any) -> None:
        """Count (and log) an output over the DDS shared-memory segment: it vanishes."""
        seg = self.shm_segment_bytes
        if seg is not None and len(msg.data) + 4096 > seg:
            self._problem("output_over_shm_segment", self.errors,
                          f"{len(msg.data)}-byte output over the {seg}-byte DDS "
                          "shared-memory segment: subscribers may never get it")

    def _published(self, result: Any, image: Any) -> None:
        """Book-keeping for a published frame, then its companions: camera_info,
        compressed image, rain layer, event picture."""
        w = result.window
        header = image.header
        done = time.monotonic_ns()
        self.frames_out.tick(done)
        self._unpublished_since = None  # (ROS time)
        with self._sync_lock:
            arrival = self._arrivals.pop(w.stamp_ns, None)
        if arrival is not None:
            self.latency.add((done - arrival) / 1e6)
        self.infer_ms.add(result.timings_ms.get("infer", float("nan")))
        if self._stop.is_set():
            return
        info = self._camera_info_for(header)
        if info is not None:
            self.pub_info.publish(info)
        self._publish_optional(OUT_COMPRESSED,
                               lambda: compressed_msg(image, self.config.jpeg_quality))
        rain, events_image = result.rain, result.events_image
        if rain is not None:
            self._publish_optional(OUT_RAIN, lambda: network_image_msg(
                rain, w.image.encoding, header))
        if events_image is not None:
            self._publish_optional(OUT_EVENTS_IMAGE, lambda: image_msg(
                from_network(events_image, "rgb8"), "rgb8", header))

    # -------------------------------------------------------------- parameters

    def _on_set_parameters(self, params: list[Any]) -> Any:
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changes:  # qos_overrides.* declared as entities are created, use_sim_time
            return SetParametersResult(successful=True)
        try:
            candidate = self.config.replace(**changes)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        new_ckpt = changes.get("checkpoint")
        if self.engine is None:  # lifecycle: not configured; configure loads what is set
            self.config = candidate
            return SetParametersResult(successful=True)
        if new_ckpt is not None and new_ckpt != self.config.checkpoint:
            if self._swap_thread is not None and self._swap_thread.is_alive():
                return SetParametersResult(
                    successful=False, reason="a checkpoint swap is still being prepared; "
                    "set checkpoint again once /diagnostics shows checkpoint_swap_pending "
                    "False")
            path = new_ckpt
            if not path:
                path = str(default_checkpoint_path(candidate.model, candidate.in_chans))
            background = False
            try:
                background = self.engine.swap_needs_export(path)
                if background:
                    # the checks that need no graph now (a bad file is refused here);
                    # the export and the swap on a thread: the stream goes on meanwhile
                    self.engine.validate_checkpoint(path)
                else:
                    self.engine.swap_checkpoint(path)
            except DerainError as err:
                self._problem("checkpoint_swap_failed", self.errors, str(err))
                return SetParametersResult(
                    successful=False,
                    reason=f"checkpoint refused, still running {self.engine.source}: {err}")
            if background:
                self._swap_thread = threading.Thread(
                    target=self._swap_in_background, args=(path, self.config.checkpoint),
                    name="checkpoint_swap", daemon=True)
                self._swap_thread.start()
                self.get_logger().info(
                    f"checkpoint {path}: exporting its graph in a child process; "
                    f"{self.engine.source} runs until it is ready")
            else:
                self.get_logger().info(f"switched to checkpoint {path}")
                running = self.engine.model_name.removesuffix(" (random weights)")
                candidate = dataclasses.replace(candidate, model=running)
                if running != self.config.model:
                    self._pending_model = running  # shown once this callback returns
        if candidate.drop_policy != self.config.drop_policy:
            self.handover.set_policy(candidate.drop_policy, candidate.block_queue_depth)
        self.engine.want_rain = candidate.publish_rain_layer
        self.engine.want_events_image = candidate.publish_events_image
        self.config = candidate
        self._optional_dirty = True  # the poll timer creates or destroys the publishers
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------- diagnostics

    def diagnostics_values(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as a flat dict."""
        sc = self.sync.counters.as_dict()
        engine = self._engine()
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
            "device": engine.device_name,
            "dtype": engine.dtype_name,
            "dtype_reason": engine.dtype_reason,
            "backend": engine.backend_name,
            "backend_reason": engine.backend_reason,
            "model": engine.model_name,
            "checkpoint": engine.source,
            "arrangement": engine.arrangement,
            "input_contract": json.dumps(engine.contract.to_dict(), sort_keys=True),
            "random_weights": engine.random_weights,
            "checkpoint_swaps": engine.swaps,
            "checkpoint_swap_failures": engine.swap_failures,
            "checkpoint_swap_pending": (self._swap_thread is not None
                                        and self._swap_thread.is_alive()),
            **engine.int8_status(),  # int8_state, int8_failures, ... (dtype int8)
            "last_problem": self.last_problem,
        }
        for kind, n in sorted(self.drops.items()):
            values[f"dropped_{kind}"] = n
        for kind, n in sorted(self.errors.items()):
            values[f"errors_{kind}"] = n
        values.update({f"sync_{k}": v for k, v in sc.items()})
        values.update(self._accounting())
        now = self._ros_now_ns()
        conditions = self._conditions(now)
        values["output_stalled"] = "output_stalled" in conditions
        values["frames_only"] = "frames_only" in conditions
        values["resyncing"] = "resyncing" in conditions
        values["degraded_for_s"] = max(
            ((now - self._degraded_since.get(k, now)) / 1e9 for k in conditions), default=0.0)
        values["max_frame_pixels"] = self.config.max_frame_pixels
        values["max_frame_bytes"] = self.max_frame_bytes
        values["shm_segment_bytes"] = self.shm_segment_bytes or 0
        values["duplicate_node_name"] = self.duplicate_name
        values["hardware_id"] = self.hardware_id()
        values.update(self.cost.values())  # overhead_cpu_ms_p50, overhead_wall_ms_p50, ...
        values.update(memory_mb())  # rss_mb, rss_peak_mb
        return values

    def _accounting(self) -> dict[str, int]:
        """Frames in = published + dropped (every kind) + in flight; see docs/recovery.md."""
        dropped = (sum(self.drops.get(k, 0) for k in _FRAME_DROPS)
                   + sum(self.errors.get(k, 0) for k in _FRAME_ERRORS)
                   + self.sync.counters.frames_dropped + self.handover.dropped_stale
                   + self.handover.dropped_full + self.held)
        in_flight = self.sync.pending_frames + len(self.handover) + self.handover.in_worker
        received, published = self.frames_in.total, self.frames_out.total
        return {"frames_dropped": dropped, "frames_held": self.held,
                "frames_in_flight": in_flight,
                "frames_unaccounted": received - published - dropped - in_flight}

    def hardware_id(self) -> str:
        """The diagnostics' ``hardware_id``: the input camera, by the ``frame_id`` of its
        frames (e.g. ``event_camera``); before the first frame, the resolved image topic."""
        return self.camera_frame_id or self.image_topic

    def _conditions(self, now: int) -> dict[str, str]:
        """The degraded states at ``now`` (ROS time, ns; name -> text); keeps when each
        began, logs each once."""
        cfg = self.config
        stall_ns = int(cfg.stall_timeout_s * 1e9)
        feeding = (self._last_frame_in_ns is not None
                   and now - self._last_frame_in_ns <= max(stall_ns, 1_000_000_000))
        conditions = {}
        since = self._unpublished_since
        if feeding and since is not None and now - since > stall_ns:
            conditions["output_stalled"] = (
                f"output stalled: frames arrive but none published for {(now - since) / 1e9:.1f} s")
        if feeding and self._frames_only:
            conditions["frames_only"] = ("event topic silent: frames-only fallback"
                                         if self.sync.events_silent else
                                         "frames-only: frames pass without events")
        if self.sync.resyncing:
            conditions["resyncing"] = "clock discontinuity: resynchronising frames and events"
        for name, text in conditions.items():
            if name not in self._degraded_since:
                self._degraded_since[name] = now
                self.get_logger().warning(text)
        for name in [n for n in self._degraded_since if n not in conditions]:
            began = self._degraded_since.pop(name)
            self.get_logger().info(f"{name} over after {(now - began) / 1e9:.1f} s")
        return conditions

    def _check_name(self) -> None:
        """Every :data:`NAME_CHECK_S`: warn (once) when the graph holds another node of
        this node's name (at start-up, or when a twin starts later)."""
        now = time.monotonic_ns()
        if now - self._name_checked_ns < NAME_CHECK_S * 1e9 and self._name_checked_ns:
            return
        self._name_checked_ns = now
        me = (self.get_name(), self.get_namespace())
        same = sum(1 for n in self.get_node_names_and_namespaces() if tuple(n) == me)
        was, self.duplicate_name = self.duplicate_name, same > 1
        if self.duplicate_name and not was:
            self.get_logger().error(
                f"another node named {self.get_fully_qualified_name()} is running: "
                "parameters, services and diagnostics of the two are mixed up; give each "
                "a unique name (-r __node:=NAME)")

    def _on_diagnostics(self) -> None:
        self._check_name()
        values = self.diagnostics_values()
        recent = time.monotonic_ns() - self._last_problem_ns < 10e9 and self.last_problem
        warnings = []
        for key, text in _SYNC_WARNINGS.items():  # faults since the last report
            n = int(values[f"sync_{key}"]) - self._reported.get(key, 0)
            self._reported[key] = int(values[f"sync_{key}"])
            if n > 0:
                warnings.append(f"{n} {text}")
        refused = int(values.get("int8_failures", 0)) - self._reported.get("int8_failures", 0)
        self._reported["int8_failures"] = int(values.get("int8_failures", 0))
        if refused > 0:  # logged once by the runtime; here counted and shown
            self.last_problem = f"int8_refused: {values['int8_state']}"
            self._last_problem_ns = time.monotonic_ns()
            recent = self.last_problem
        now = self._ros_now_ns()
        degraded = self._conditions(now)
        warnings.extend(degraded.values())
        if values["events_silent"] and values["frames_received"] and "frames_only" not in degraded:
            warnings.append("event topic silent: frames-only fallback")
        if values["random_weights"]:
            warnings.append("running random weights")
        if self.duplicate_name:
            warnings.append("another node has this name")
        if recent:
            warnings.append(self.last_problem)
        level = "WARN" if warnings else "OK"
        if self.errors.get("inference_error") and recent and "inference" in self.last_problem:
            level = "ERROR"
        lasting = [n for n in degraded
                   if now - self._degraded_since[n] > self.config.degraded_error_s * 1e9]
        if lasting:
            level = "ERROR"
            warnings.insert(0, f"degraded for over {self.config.degraded_error_s:g} s "
                            f"({', '.join(lasting)})")
        message = "; ".join(warnings) if warnings else (
            f"{values['frames_out_hz']:.1f} fps, p99 {values['latency_p99_ms']:.1f} ms")
        status = status_msg(f"{self.get_fully_qualified_name()}: deraining",
                            self.hardware_id(), level, message[:500], values)
        self.pub_diag.publish(array_msg(self.get_clock().now().to_msg(), [status]))

    # -------------------------------------------------------------- shutdown

    def close(self) -> bool:
        """Stop processing; False when the frame in inference did not finish within
        ``shutdown_timeout_s`` (the caller must then exit without waiting)."""
        return self._stop_processing()



class DerainNode(DerainCore, Node):
    """The deraining node (``derain_node``): loads its model and starts processing at
    construction. See the module docstring."""

    def __init__(self, name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._declare()
        self._load()
        self._start()


class DerainLifecycleNode(DerainCore, LifecycleNode):
    """The same node as a managed (lifecycle) node (``derain_lifecycle_node``).

    ``configure`` loads the model (engine, warm-up), ``activate`` subscribes, advertises
    and starts processing, ``deactivate`` stops it (nothing subscribed or published while
    inactive), ``cleanup`` lets go of the model, ``shutdown`` does both. A failing
    configure (missing weights, a bad checkpoint) logs why and leaves the node
    unconfigured.
    """

    def __init__(self, name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._declare()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model."""
        del state
        try:
            self._load()
        except DerainError as err:
            self.get_logger().error(f"configure failed: {err}")
            self._unload()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe, advertise and process."""
        self._start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing; the model stays loaded."""
        if not self._stop_processing(leaving=False):
            self.get_logger().warning("deactivate: the frame in inference did not finish "
                                      "within shutdown_timeout_s; it is dropped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Let go of the model."""
        del state
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop and let go of everything."""
        del state
        self._stop_processing(leaving=False)
        self._unload()
        return TransitionCallbackReturn.SUCCESS


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``derain_node``: ROS arguments as for any node (``--ros-args ...``)."""
    return _spin(DerainNode, args)


def lifecycle_main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``derain_lifecycle_node``: starts unconfigured; a lifecycle manager
    (or ``ros2 lifecycle set``) configures and activates it."""
    return _spin(DerainLifecycleNode, args)


def _spin(node_class: type[DerainNode] | type[DerainLifecycleNode],
          args: Sequence[str] | None) -> int:
    """Run one node of ``node_class`` until Ctrl-C/SIGTERM, then shut down cleanly."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: DerainCore | None = None
    try:
        try:
            node = node_class()
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
        if node is not None and not node.close():
            # torch cannot be interrupted, and tearing rclpy and the interpreter down
            # under a running inference aborts the process (SIGABRT): leave at once.
            _log.warning("shutting down: the frame in inference did not finish within "
                         "shutdown_timeout_s %.1f s; exiting without it",
                         node.config.shutdown_timeout_s)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if node is not None:
            node.destroy_node()  # type: ignore[attr-defined]
        rclpy.try_shutdown()
        _log.info("shut down")

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
        check_params_file(Path(args.params_file))
        argv += ["--params-file", str(args.params_file)]
    for name in ("model", "checkpoint", "device"):
        if getattr(args, name):
            argv += ["-p", f"{name}:={getattr(args, name)}"]
    if args.allow_random_weights:
        argv += ["-p", "allow_random_weights:=true"]
    extra = [a for a in (args.ros_args or []) if a != "--ros-args"]
    # The launch file's defaults: the drivers' topics, unless the user remaps the name
    # (rcl takes the first matching rule, so the user's, given earlier, win anyway).
    defaults = remap_args({name: target for name, target in DEFAULT_REMAPS.items()
                           if not any(a.startswith(f"{name}:=") for a in extra)})
    if "--" in extra:  # the end of the ROS arguments
        cut = extra.index("--")
        return argv + extra[:cut] + defaults + extra[cut:]
    return argv + extra + defaults


def run(args: argparse.Namespace) -> int:
    """``derain-ros run``: the same node as ``ros2 launch``, without launch_ros."""
    return main(ros_argv(args))


if __name__ == "__main__":
    sys.exit(main())
