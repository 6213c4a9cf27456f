"""Frames + an event stream in, one :class:`FrameWindow` per frame out, in sensor time.

The one synchroniser used live (the node) and on bags (training, evaluation). ROS-free:
it takes packet payloads, image arrays and stamps, never messages.

Definitions (units: ns):

- A frame's *time* ``t_ns`` is its time in the event sensor's clock. How it is found
  depends on the clock mode (:data:`CLOCK_MODES`):

  * ``sensor``: the frame's stamp already is sensor time (a DAVIS: frames and events
    share one clock, frames stamped at mid-exposure);
  * ``offset``: a separate frame camera stamped in host time. Event packets give pairs
    (``header.stamp`` = host arrival of the first event, first event's sensor time);
    the offset host - sensor is their moving average over the last
    ``offset_window`` packets, and ``t_ns = stamp - offset``;
  * ``trigger``: the rig wires the camera's exposure signal to the event sensor's
    trigger input; a frame takes the rising trigger edge nearest its offset-mapped
    time (within ``trigger_tolerance_ns``), later than the previous frame's.

- The window of frame ``i`` holds the events with ``t_prev < t <= t_i`` (``t_prev``:
  the previous frame's time), the same half-open interval ``(t0, t1]`` as the voxel
  grids of :mod:`derain_ros.events.voxel`.
- A window is cut when an event later than ``t_i`` has arrived (all earlier events
  are in, packets being in order), or on a timeout: ``event_timeout_ns`` after the
  frame arrived (``events_incomplete``), or at once while the event topic is silent
  (no packet for ``silence_timeout_ns``: ``events_missing``, the frames-only fallback).

Events are buffered and cut by :class:`derain_ros.events.EventStream` ("decode until"):
window ``(t_prev, t]`` is ``pop_until(t + 1)``. The packets are decoded on arrival and
queued with ``push_decoded`` (rather than kept encoded for a lazy decode) because the
synchroniser needs each packet's event times the moment it arrives - to know when a
window is complete, to estimate the clock offset, to match trigger edges and to see time
jump backwards. The byte cap applies to the decoded events (13 bytes an event).

Faults handled and counted (:class:`SyncCounters`): duplicate packets (same ``seq``
and stamp), late packets (``seq`` behind, dropped: decoders are stateful), gaps in
``seq``, malformed packets, a full buffer (packet dropped), events behind an already
cut window, duplicate / out-of-order frames, and clock resets (time jumping backwards
by more than ``reset_threshold_ns``, e.g. a bag played in a loop or a driver restart):
state is reset and stragglers of the old time line are dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
)
from derain_ros.errors import DerainError, EventError, SyncError
from derain_ros.events import Decoded, EventStream, dv_arrays_to_batch, make_decoder
from derain_ros.images import image_to_array, to_network
from derain_ros.records import EventBatch, TriggerBatch

__all__ = [
    "CLOCK_MODES",
    "FrameEventSynchronizer",
    "FrameImage",
    "FrameWindow",
    "SyncConfig",
    "SyncCounters",
    "event_array_msg_to_batch",
    "image_from_msg",
    "stamp_to_ns",
    "windows_from_bag",
]

_log = logging.getLogger(__name__)

#: How frame stamps map into the event sensor clock (see the module docstring).
CLOCK_MODES = ("sensor", "offset", "trigger")
_DEFAULT_GT_TOPICS = (GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, eq=False)
class FrameImage:
    """An image in its encoding's own layout (H x W or H x W x C, uint8/uint16)."""

    array: np.ndarray
    encoding: str

    @property
    def height(self) -> int:
        """Rows (px)."""
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        """Columns (px)."""
        return int(self.array.shape[1])

    def to_network(self) -> np.ndarray:
        """Float32 H x W x C in [0, 1] (RGB, or 1 channel for mono): the network's view."""
        return to_network(self.array, self.encoding)


@dataclass(frozen=True, slots=True, eq=False)
class FrameWindow:
    """One frame and the events between the previous frame and it.

    Attributes:
        index: running number of windows since the synchroniser started (0-based).
        t_ns: the frame's time in the event sensor clock (ns).
        t_prev_ns: the previous frame's time (ns), or None for the first frame after a
            start or a clock reset (its events are those of the ``first_window_ns``
            before ``t_ns``).
        image: the frame as received (a copy, safe to keep).
        events: events with ``t_prev_ns < t <= t_ns``, time-ordered.
        triggers: trigger events of the same interval.
        stamp_ns: the frame message's ``header.stamp`` (ns), to stamp outputs with.
        frame_id: the frame message's ``header.frame_id``.
        events_missing: no event data covers this window (event topic silent or
            absent, or nothing arrived before the timeout): use the frames-only fallback.
        events_incomplete: the window was cut before all its events could have arrived
            (timeout, a dropped or lost packet inside it).
        time_estimated: trigger mode found no trigger edge; the time is offset-mapped.
        extras: other images with the frame's stamp (bags: ground truth), by topic.
    """

    index: int
    t_ns: int
    t_prev_ns: int | None
    image: FrameImage
    events: EventBatch
    triggers: TriggerBatch
    stamp_ns: int
    frame_id: str = ""
    events_missing: bool = False
    events_incomplete: bool = False
    time_estimated: bool = False
    extras: Mapping[str, FrameImage] = field(default_factory=dict)

    @property
    def t0_ns(self) -> int:
        """Start of the window (ns): the previous frame's time, or an estimate for the first."""
        if self.t_prev_ns is not None:
            return self.t_prev_ns
        if len(self.events):
            return min(int(self.events.t[0]) - 1, self.t_ns - 1)
        return self.t_ns - 1

    @property
    def events_ok(self) -> bool:
        """True when the window's events are complete."""
        return not (self.events_missing or self.events_incomplete)


@dataclass
class SyncCounters:
    """Running counts of everything the synchroniser saw, dropped and repaired."""

    packets_in: int = 0
    events_in: int = 0
    frames_in: int = 0
    windows_out: int = 0
    packets_duplicate: int = 0
    packets_late: int = 0
    packets_malformed: int = 0
    packets_buffer_full: int = 0
    packets_stale: int = 0
    packet_gaps: int = 0
    events_dropped_buffer_full: int = 0
    events_late: int = 0
    frames_duplicate: int = 0
    frames_out_of_order: int = 0
    frames_stale: int = 0
    frames_queue_full: int = 0
    windows_events_missing: int = 0
    windows_events_incomplete: int = 0
    windows_time_estimated: int = 0
    clock_resets: int = 0
    format_changes: int = 0
    buffer_bytes: int = 0
    buffer_bytes_peak: int = 0
    offset_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (diagnostics, JSON)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SyncConfig:
    """Settings of :class:`FrameEventSynchronizer` (times in ns, sizes in bytes).

    Attributes:
        clock_mode: one of :data:`CLOCK_MODES`.
        max_buffer_bytes: cap on decoded events held (13 bytes an event); a packet that
            does not fit is dropped and counted. 64 MB is about 4.9 M events: one frame
            interval of heavy rain at 640x480 (rain multiplies a sensor's event rate).
        event_timeout_ns: how long a frame waits for events past its time.
        silence_timeout_ns: no packet for this long means the event topic is silent:
            frames pass at once, flagged ``events_missing``.
        max_pending_frames: frames waiting for events beyond this are cut early.
        reset_threshold_ns: time going backwards by more than this is a clock reset
            (less is a late or out-of-order message, dropped).
        first_window_ns: events kept before the first frame after a (re)start.
        offset_window: packets averaged for the host - sensor offset (``offset`` mode).
        trigger_tolerance_ns: how far a trigger edge may be from a frame's offset-mapped
            time (``trigger`` mode).
        trigger_channel: trigger id to use, or -1 for any.
        reorder_window: a ``seq`` behind the last by at most this is a late packet;
            further behind is a stream restart.
    """

    clock_mode: str = "sensor"
    max_buffer_bytes: int = 64_000_000
    event_timeout_ns: int = 100_000_000
    silence_timeout_ns: int = 500_000_000
    max_pending_frames: int = 8
    reset_threshold_ns: int = 50_000_000
    first_window_ns: int = 100_000_000
    offset_window: int = 200
    trigger_tolerance_ns: int = 25_000_000
    trigger_channel: int = -1
    reorder_window: int = 1000

    def __post_init__(self) -> None:
        problems = []
        if self.clock_mode not in CLOCK_MODES:
            problems.append(f"clock_mode must be one of {CLOCK_MODES}, got {self.clock_mode!r}")
        for name in ("max_buffer_bytes", "event_timeout_ns", "silence_timeout_ns",
                     "max_pending_frames", "reset_threshold_ns", "first_window_ns",
                     "offset_window", "trigger_tolerance_ns", "reorder_window"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if problems:
            raise SyncError("invalid synchroniser settings: " + "; ".join(problems))


# --------------------------------------------------------------------------- messages


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags object) in ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_from_msg(msg: Any) -> FrameImage:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags) as a FrameImage.

    Duck-typed on the fields so both message flavours share one path; the array is a
    copy (message buffers get reused). CompressedImage is decoded with OpenCV (colour
    as ``bgr8``/``bgra8``, grey as ``mono8``/``mono16``).
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        buf = np.frombuffer(bytes(msg.data), np.uint8)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
        if arr is None:
            raise SyncError(f"cannot decode a CompressedImage (format {msg.format!r})")
        if arr.ndim == 2:
            enc = "mono16" if arr.dtype == np.uint16 else "mono8"
        elif arr.shape[2] == 4:
            enc = "bgra8"
        else:
            enc = "bgr8"
        if arr.dtype not in (np.uint8, np.uint16) or (arr.ndim == 3 and arr.dtype != np.uint8):
            raise SyncError(f"unsupported CompressedImage pixel type {arr.dtype} {arr.shape}")
        return FrameImage(arr, enc)
    arr = image_to_array(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                         _as_bytes(msg.data), bool(msg.is_bigendian))
    return FrameImage(np.array(arr, copy=True), msg.encoding)


def _as_bytes(data: Any) -> bytes | memoryview | np.ndarray:
    if isinstance(data, bytes | bytearray | memoryview | np.ndarray):
        return data
    return memoryview(data).cast("B") if hasattr(data, "tobytes") else bytes(data)


# --------------------------------------------------------------------------- internals


@dataclass
class _PendingFrame:
    image: FrameImage
    stamp_ns: int
    frame_id: str
    arrival_ns: int
    t_ns: int | None
    approx_ns: int | None
    time_estimated: bool = False


# --------------------------------------------------------------------------- synchroniser


class FrameEventSynchronizer:
    """Cuts an event stream into per-frame windows; see the module docstring.

    Not thread-safe: call it from one thread (the node guards it with a lock).
    ``clock`` gives "now" in ns for the timeouts: monotonic time live, the log time of
    the current message on bags (so a bag gives the same windows however fast it is read).
    """

    def __init__(self, config: SyncConfig | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.config = config or SyncConfig()
        self.clock = clock
        self.counters = SyncCounters()
        self._stream: EventStream | None = None  # made at the first window or packet
        self._lossy = False  # events of the open window were dropped or lost
        self._decoder: Any = None
        self._format: tuple[str, int, int] | None = None
        self._sensor_size: tuple[int, int] | None = None
        self._pending: collections.deque[_PendingFrame] = collections.deque()
        self._index = 0
        self._prev_frame_t: int | None = None
        self._last_frame_input: int | None = None  # latest frame time accepted (ns)
        self._last_seq: int | None = None
        self._last_packet_stamp: int | None = None
        self._last_packet_clock: int | None = None
        self._start_clock: int | None = None  # clock at the first message
        self._offsets: collections.deque[int] = collections.deque(maxlen=self.config.offset_window)
        self._last_trigger_t: int | None = None
        # After a clock reset triggered by one side, the other side's stragglers of the old
        # time line are recognised by being far from the new time line's start.
        self._expect_events_near: int | None = None
        self._expect_frames_near: int | None = None

    # ------------------------------------------------------------------ public API

    @property
    def offset_ns(self) -> int | None:
        """Current host - sensor clock offset estimate (ns), None before any packet."""
        return round(sum(self._offsets) / len(self._offsets)) if self._offsets else None

    @property
    def pending_frames(self) -> int:
        """Frames waiting for their events."""
        return len(self._pending)

    @property
    def events_silent(self) -> bool:
        """True while no packet arrived for ``silence_timeout_ns`` (or none ever)."""
        now = self.clock()
        if self._start_clock is None:
            self._start_clock = now
        last = self._last_packet_clock
        ref = self._start_clock if last is None else last
        return now - ref >= self.config.silence_timeout_ns

    def add_events(self, payload: Any, time_base: int, encoding: str, width: int, height: int,
                   stamp_ns: int, seq: int | None = None) -> list[FrameWindow]:
        """Feed one EventPacket; returns the windows this completes.

        Malformed packets (unknown encoding, truncated payload) are dropped and counted,
        never raised: one bad packet must not stop a stream.
        """
        c = self.counters
        c.packets_in += 1
        if self._check_seq(seq, stamp_ns):
            return self._drain()
        try:
            decoder = self._decoder_for(encoding, int(width), int(height))
            if seq is not None and self._last_seq is not None and int(seq) < self._last_seq:
                decoder.reset()  # not late, so the sequence restarted: a new stream
            back = decoder.stats.backwards
            decoded = decoder.decode(payload, int(time_base))
        except EventError as err:
            c.packets_malformed += 1
            _log.warning("dropped a malformed event packet (seq %s): %s", seq, err)
            return self._drain()
        self._commit_seq(seq, stamp_ns)
        return self._accept(decoded, stamp_ns, ordered=decoder.stats.backwards == back)

    def add_decoded(self, events: EventBatch, stamp_ns: int,
                    triggers: TriggerBatch | None = None,
                    seq: int | None = None) -> list[FrameWindow]:
        """Feed events that arrive already decoded (e.g. dv_ros2_msgs/EventArray)."""
        c = self.counters
        c.packets_in += 1
        if self._check_seq(seq, stamp_ns):
            return self._drain()
        size = (events.width, events.height)
        if self._sensor_size is not None and self._sensor_size != size:
            self._format_change(f"sensor size {self._sensor_size} -> {size}")
        self._sensor_size = size
        if len(events) > 1 and np.any(events.t[1:] < events.t[:-1]):
            events = events[np.argsort(events.t, kind="stable")]
        self._commit_seq(seq, stamp_ns)
        return self._accept(Decoded(events, triggers or TriggerBatch.empty()), stamp_ns,
                            ordered=True)

    def add_frame(self, image: np.ndarray | FrameImage, encoding: str | None, stamp_ns: int,
                  frame_id: str = "", sensor_time_ns: int | None = None) -> list[FrameWindow]:
        """Feed one frame; returns the windows now complete (this one, or earlier ones).

        ``image`` is the array in ``encoding``'s layout (copied by the caller or not
        reused afterwards) or a :class:`FrameImage`. ``sensor_time_ns`` overrides the
        stamp in ``sensor`` mode.
        """
        c = self.counters
        c.frames_in += 1
        img = image if isinstance(image, FrameImage) else FrameImage(np.asarray(image),
                                                                      str(encoding))
        now = self.clock()
        mode = self.config.clock_mode
        t: int | None
        approx: int | None = None
        if mode == "sensor":
            t = int(sensor_time_ns if sensor_time_ns is not None else stamp_ns)
            approx = t
        else:  # before the first packet there is no offset: the frame waits for one
            off = self.offset_ns
            approx = None if off is None else int(stamp_ns) - off
            t = approx if mode == "offset" else None
        out: list[FrameWindow] = []
        if approx is not None and not self._frame_time_ok(approx, out):
            return out + self._drain()
        self._pending.append(_PendingFrame(img, int(stamp_ns), frame_id, now, t, approx))
        if approx is not None:
            self._last_frame_input = approx
        out.extend(self._drain())
        return out

    def poll(self) -> list[FrameWindow]:
        """Cut frames whose timeout passed; call it from a timer when nothing arrives."""
        return self._drain()

    def flush(self) -> list[FrameWindow]:
        """Cut every pending frame with the events at hand (end of a bag)."""
        return self._drain(force=True)

    def reset(self) -> None:
        """Forget all state (counters are kept)."""
        self._clear_events()
        self._pending.clear()
        if self._decoder is not None:
            self._decoder.reset()
        self._prev_frame_t = None
        self._last_frame_input = None
        self._last_seq = None
        self._last_packet_stamp = None
        self._offsets.clear()
        self._last_trigger_t = None
        self._expect_events_near = None
        self._expect_frames_near = None

    # ------------------------------------------------------------------ events side

    def _check_seq(self, seq: int | None, stamp_ns: int) -> bool:
        """True when the packet is a duplicate or a late one (dropped, counted)."""
        if seq is None or self._last_seq is None:
            return False
        c = self.counters
        seq, last = int(seq), self._last_seq
        if seq == last and int(stamp_ns) == self._last_packet_stamp:
            c.packets_duplicate += 1
            return True
        last_stamp = self._last_packet_stamp
        if seq < last and last - seq <= self.config.reorder_window and (
                last_stamp is None
                or last_stamp - self.config.reset_threshold_ns <= int(stamp_ns) <= last_stamp):
            c.packets_late += 1
            _log.debug("dropped a late event packet: seq %d after %d", seq, last)
            return True
        return False

    def _commit_seq(self, seq: int | None, stamp_ns: int) -> None:
        """Record a packet that decoded: count gaps in ``seq``, note a restarted stream."""
        if seq is not None:
            seq = int(seq)
            last = self._last_seq
            if last is not None and seq > last + 1:
                self.counters.packet_gaps += seq - last - 1
                self._lossy = True
            self._last_seq = seq
        self._last_packet_stamp = int(stamp_ns)
        self._last_packet_clock = self.clock()

    def _decoder_for(self, encoding: str, width: int, height: int) -> Any:
        fmt = (str(encoding), width, height)
        # the sensor size may also have come from add_decoded (an EventArray topic)
        changed = (self._format is not None and fmt != self._format) or (
            self._sensor_size is not None and self._sensor_size != (width, height))
        if self._decoder is None or changed:
            decoder = make_decoder(fmt[0], width, height)  # raises for unknown encodings
            if changed:
                self._format_change(f"event format {self._format}, sensor size "
                                    f"{self._sensor_size} -> {fmt}")
            self._decoder, self._format = decoder, fmt
            self._sensor_size = (width, height)
        return self._decoder

    def _format_change(self, what: str) -> None:
        self.counters.format_changes += 1
        _log.warning("event stream changed (%s): resetting the synchroniser", what)
        self._flush_pending_into([], incomplete=True)
        self._clear_events()

    def _clear_events(self) -> None:
        """Forget the buffered events, the newest event time and the cut (time line)."""
        if self._stream is not None:
            self._stream.reset()
        self._lossy = False

    def _events_stream(self, width: int, height: int) -> EventStream:
        """The event buffer, made on first use (its size follows the events pushed)."""
        if self._stream is None:
            self._stream = EventStream(None, width, height,
                                       max_buffer_bytes=self.config.max_buffer_bytes)
        return self._stream

    @property
    def _newest_t_ns(self) -> int | None:
        return None if self._stream is None else self._stream.newest_t_ns

    def _accept(self, decoded: Decoded, stamp_ns: int, *, ordered: bool) -> list[FrameWindow]:
        """Buffer one decoded packet (``ordered``: its times do not go backwards)."""
        c = self.counters
        events, triggers = decoded
        out: list[FrameWindow] = []
        if not len(events) and not len(triggers):
            return self._drain()
        first_t = int(events.t[0]) if len(events) else int(triggers.t[0])
        last_t = int(events.t[-1]) if len(events) else int(triggers.t[-1])
        thr = self.config.reset_threshold_ns
        newest = self._newest_t_ns
        if self._expect_events_near is not None:
            if last_t > self._expect_events_near + thr:  # a straggler of the old time line
                c.packets_stale += 1
                return self._drain()
            self._expect_events_near = None
        elif newest is not None and first_t < newest - thr:
            self._clock_reset("events", first_t, out)
        if len(events):
            self._offsets.append(int(stamp_ns) - first_t)
            c.offset_ns = self.offset_ns
        stream = self._events_stream(events.width, events.height)
        late_before = stream.counters.late
        accepted = stream.push_decoded(decoded, ordered=ordered)
        late = stream.counters.late - late_before  # behind an already cut window
        c.events_late += late
        c.events_in += len(events) - late
        if not accepted:  # the buffer is full (logged by the stream)
            c.packets_buffer_full += 1
            c.events_dropped_buffer_full += len(events) - late
            self._lossy = True
            if len(triggers):  # trigger edges cost no buffer bytes; trigger mode needs each
                stream.push_decoded(Decoded(EventBatch.empty(events.width, events.height),
                                            triggers))
        c.buffer_bytes = stream.bytes_buffered
        c.buffer_bytes_peak = max(c.buffer_bytes_peak, stream.bytes_buffered)
        out.extend(self._drain())
        return out

    # ------------------------------------------------------------------ frames side

    def _frame_time_ok(self, t: int, out: list[FrameWindow]) -> bool:
        """Check a new frame's (approximate) time; handles resets; False drops it."""
        c = self.counters
        thr = self.config.reset_threshold_ns
        if self._expect_frames_near is not None:
            if t > self._expect_frames_near + thr:
                c.frames_stale += 1
                return False
            self._expect_frames_near = None
            self._prev_frame_t = None
            self._last_frame_input = None
            return True
        last = self._last_frame_input
        if last is None or t > last:
            return True
        if t == last:
            c.frames_duplicate += 1
            return False
        if t >= last - thr:
            c.frames_out_of_order += 1
            return False
        self._clock_reset("frames", t, out)
        return True

    def _clock_reset(self, side: str, t_new: int, out: list[FrameWindow]) -> None:
        """Time jumped backwards on ``side``: flush the old time line, start anew."""
        self.counters.clock_resets += 1
        _log.warning("time jumped backwards on the %s side (to %d ns): resetting", side, t_new)
        self._flush_pending_into(out, incomplete=True)
        self._clear_events()
        self._offsets.clear()
        self._prev_frame_t = None
        self._last_frame_input = None
        self._last_trigger_t = None
        if side == "events":
            self._expect_frames_near = t_new if self.config.clock_mode == "sensor" else None
            self._expect_events_near = None
        else:
            self._expect_events_near = t_new if self.config.clock_mode == "sensor" else None
            self._expect_frames_near = None

    # ------------------------------------------------------------------ cutting

    def _resolve_time(self, frame: _PendingFrame, now: int, force: bool) -> bool:
        """``offset``/``trigger`` mode: give ``frame`` its sensor time; False while waiting.

        Waits for the first offset estimate (an event packet), then, in trigger mode, for
        the trigger edge. Without either before the timeout (or with the event topic
        silent) the frame keeps its stamp as time, flagged ``time_estimated``.
        """
        cfg = self.config
        if frame.approx_ns is None:
            off = self.offset_ns
            if off is not None:
                frame.approx_ns = frame.stamp_ns - off
            elif force or self.events_silent or now - frame.arrival_ns >= cfg.event_timeout_ns:
                frame.approx_ns, frame.time_estimated = frame.stamp_ns, True
            else:
                return False
        if cfg.clock_mode == "offset":
            frame.t_ns = frame.approx_ns
            return True
        if self._resolve_trigger(frame, now):
            return True
        if force:
            frame.t_ns, frame.time_estimated = frame.approx_ns, True
        return force

    def _resolve_trigger(self, frame: _PendingFrame, now: int) -> bool:
        """Trigger mode: give ``frame`` its trigger edge's time; False while waiting."""
        cfg = self.config
        approx = int(frame.approx_ns)  # type: ignore[arg-type]
        edges = (np.empty(0, np.int64) if self._stream is None
                 else self._stream.rising_edges(cfg.trigger_channel))
        if self._last_trigger_t is not None:
            edges = edges[edges > self._last_trigger_t]
        near = edges[np.abs(edges - approx) <= cfg.trigger_tolerance_ns]
        if len(near):
            frame.t_ns = int(near[np.argmin(np.abs(near - approx))])
            self._last_trigger_t = frame.t_ns
            return True
        wm = self._newest_t_ns
        if (wm is not None and wm > approx + cfg.trigger_tolerance_ns) or (
                now - frame.arrival_ns >= cfg.event_timeout_ns) or self.events_silent:
            frame.t_ns = approx
            frame.time_estimated = True
            return True
        return False

    def _drain(self, force: bool = False) -> list[FrameWindow]:
        out: list[FrameWindow] = []
        cfg = self.config
        now = self.clock()
        silent = self.events_silent
        while self._pending:
            frame = self._pending[0]
            if frame.t_ns is None and not self._resolve_time(frame, now, force):
                break
            wm = self._newest_t_ns
            if wm is not None and wm > frame.t_ns:
                self._emit(out, incomplete=False)
            elif silent or force or now - frame.arrival_ns >= cfg.event_timeout_ns:
                self._emit(out, incomplete=True)
            elif len(self._pending) > cfg.max_pending_frames:
                self.counters.frames_queue_full += 1
                self._emit(out, incomplete=True)
            else:
                break
        return out

    def _flush_pending_into(self, out: list[FrameWindow], incomplete: bool) -> None:
        while self._pending:
            frame = self._pending[0]
            if frame.t_ns is None:
                self._resolve_time(frame, self.clock(), force=True)
            self._emit(out, incomplete=incomplete)

    def _emit(self, out: list[FrameWindow], incomplete: bool) -> None:
        frame = self._pending.popleft()
        c = self.counters
        t = int(frame.t_ns)  # type: ignore[arg-type]
        prev = self._prev_frame_t
        if prev is not None and t <= prev:  # an estimated time landed behind: keep order
            t = prev + 1
        width, height = self._sensor_size or (frame.image.width, frame.image.height)
        stream = self._events_stream(width, height)
        if prev is None:
            stream.drop_before(t - self.config.first_window_ns)
        events, triggers = stream.pop_until(t + 1)  # the events of (prev, t]
        if not len(events):
            events = EventBatch.empty(width, height)  # the size frames-only windows have
        missing = incomplete and len(events) == 0
        lossy = (incomplete or self._lossy) and not missing
        self._lossy = False
        c.buffer_bytes = stream.bytes_buffered
        window = FrameWindow(
            index=self._index, t_ns=t, t_prev_ns=prev, image=frame.image, events=events,
            triggers=triggers, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id,
            events_missing=missing, events_incomplete=lossy,
            time_estimated=frame.time_estimated,
        )
        self._index += 1
        self._prev_frame_t = t
        c.windows_out += 1
        c.windows_events_missing += int(missing)
        c.windows_events_incomplete += int(lossy)
        c.windows_time_estimated += int(frame.time_estimated)
        out.append(window)


# --------------------------------------------------------------------------- bags


#: Event buffer cap when reading a bag (bytes): bounded, but never reached in practice.
BAG_BUFFER_BYTES = 2_000_000_000


def windows_from_bag(path: str | Path, image_topic: str = IMAGE_TOPIC,
                     event_topic: str = EVENT_TOPIC, *,
                     extra_topics: Sequence[str] = _DEFAULT_GT_TOPICS,
                     config: SyncConfig | None = None,
                     counters_out: list[SyncCounters] | None = None) -> Iterator[FrameWindow]:
    """Every frame of a bag with the events since the previous frame, in bag order.

    Images on ``extra_topics`` (ground truth, by default) with the same ``header.stamp``
    as a frame are attached as ``window.extras[topic]``; topics absent from the bag are
    ignored. Timeouts run on the bag's log time, so the result does not depend on read
    speed. A bag is read offline, so by default nothing is dropped for memory: the event
    buffer cap is :data:`BAG_BUFFER_BYTES` (one frame interval of events is all it holds).
    Raises :class:`SyncError` for a bag without the image topic (e.g. a recording
    with events only). When ``counters_out`` is a list, the synchroniser's counters
    are appended to it at the end.
    """
    from derain_ros.bag import BagReader

    with BagReader(path) as bag:
        topics = _bag_topics(bag)
        if image_topic not in topics:
            events_note = (f"this bag has events ({event_topic}) but no frames"
                           if event_topic in topics else "this bag has no frames")
            raise SyncError(f"{path}: {events_note}: no {image_topic!r} topic "
                            f"(topics: {', '.join(sorted(topics)) or 'none'})")
        extras = [t for t in extra_topics if t in topics]
        now = [0]
        sync = FrameEventSynchronizer(config or SyncConfig(max_buffer_bytes=BAG_BUFFER_BYTES),
                                      clock=lambda: now[0])
        wanted = [image_topic, *extras] + ([event_topic] if event_topic in topics else [])
        waiting: collections.deque[FrameWindow] = collections.deque()
        extra_images: dict[str, dict[int, FrameImage]] = {t: {} for t in extras}
        extra_latest: dict[str, int] = {}

        def ready(done: bool) -> Iterator[FrameWindow]:
            while waiting:
                w = waiting[0]
                if not done and any(w.stamp_ns not in extra_images[t]
                                    and extra_latest.get(t, -1) < w.stamp_ns for t in extras):
                    return
                waiting.popleft()
                attached = {t: extra_images[t].pop(w.stamp_ns) for t in extras
                            if w.stamp_ns in extra_images[t]}
                for t in extras:  # forget ground truth older than this frame
                    for s in [s for s in extra_images[t] if s < w.stamp_ns]:
                        del extra_images[t][s]
                yield dataclasses.replace(w, extras=attached) if attached else w

        for rec in bag.messages(wanted):
            topic, msg = rec.topic, rec.msg
            now[0] = int(rec.log_time_ns)
            if topic == event_topic:
                new = _feed_event_msg(sync, msg)
            elif topic == image_topic:
                new = sync.add_frame(image_from_msg(msg), None, stamp_to_ns(msg.header.stamp),
                                     msg.header.frame_id)
            else:
                stamp = stamp_to_ns(msg.header.stamp)
                extra_images[topic][stamp] = image_from_msg(msg)
                extra_latest[topic] = max(extra_latest.get(topic, stamp), stamp)
                new = []
            waiting.extend(new)
            yield from ready(False)
        waiting.extend(sync.flush())
        yield from ready(True)
        if counters_out is not None:
            counters_out.append(sync.counters)


def _feed_event_msg(sync: FrameEventSynchronizer, msg: Any) -> list[FrameWindow]:
    """An EventPacket or dv_ros2_msgs EventArray (any flavour) into ``sync``."""
    stamp = stamp_to_ns(msg.header.stamp)
    if hasattr(msg, "encoding"):
        return sync.add_events(msg.events, int(msg.time_base), msg.encoding, int(msg.width),
                               int(msg.height), stamp, int(msg.seq))
    try:
        batch = event_array_msg_to_batch(msg)
    except DerainError as err:
        sync.counters.packets_malformed += 1
        _log.warning("dropped a malformed EventArray: %s", err)
        return []
    return sync.add_decoded(batch, stamp)


def event_array_msg_to_batch(msg: Any) -> EventBatch:
    """A ``dv_ros2_msgs/EventArray`` (rclpy or rosbags object) as an EventBatch.

    The slow legacy path: one Python object per event. Events outside the sensor or
    with bad stamps are dropped (logged) by :func:`derain_ros.events.dv_arrays_to_batch`.
    """
    evs = msg.events
    n = len(evs)
    x = np.fromiter((e.x for e in evs), np.int64, n)
    y = np.fromiter((e.y for e in evs), np.int64, n)
    sec = np.fromiter((e.ts.sec for e in evs), np.int64, n)
    nsec = np.fromiter((e.ts.nanosec for e in evs), np.int64, n)
    pol = np.fromiter((bool(e.polarity) for e in evs), np.uint8, n)
    return dv_arrays_to_batch(x, y, sec, nsec, pol, int(msg.width), int(msg.height)).events


def _bag_topics(bag: Any) -> Iterable[str]:
    topics = bag.topics
    return set(topics) if not isinstance(topics, Mapping) else set(topics.keys())
