"""Window cutting: :class:`FrameEventSynchronizer`, frames + event packets in, windows out.

The one synchroniser used live (the node) and on bags (:mod:`derain_ros.sync.bag`).
It ties the parts together: packets are decoded here (one stateful decoder per stream),
checked by :mod:`~derain_ros.sync.policy`, buffered by :mod:`~derain_ros.sync.buffer`;
frames are mapped into sensor time by :mod:`~derain_ros.sync.clock` and wait here until
their window can be cut:

- when an event later than the frame's time has arrived (all earlier events are in,
  packets being in order), or
- on a timeout: ``event_timeout_ns`` after the frame arrived (``events_incomplete``),
  ``silence_grace_ns`` after it arrived while the event topic is silent
  (``events_missing``: the frames-only fallback; the grace lets the first packet after a
  silence, which often arrives just after its frame, still land in its window), or when
  more than ``max_pending_frames`` wait.

Clock discontinuities (``docs/recovery.md``): time jumping backwards on either side is a
clock reset; the time line is re-founded on the other side (a resync) when the reset
proves to be the outlier. Both are counted and logged once each.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from derain_ros.errors import EventError
from derain_ros.events import Decoded, make_decoder
from derain_ros.records import EventBatch, TriggerBatch
from derain_ros.sync.buffer import EventBuffer
from derain_ros.sync.clock import ClockAlignment
from derain_ros.sync.config import SyncConfig
from derain_ros.sync.policy import PacketOrder, SyncCounters, Timeline, Verdict
from derain_ros.sync.records import FrameImage, FrameWindow, PendingFrame

__all__ = ["FrameEventSynchronizer"]

_log = logging.getLogger(__name__)


class FrameEventSynchronizer:
    """Cuts an event stream into per-frame windows; see :mod:`derain_ros.sync`.

    Not thread-safe: call it from one thread (the node guards it with a lock).
    ``clock`` gives "now" in ns for the timeouts: monotonic time live, the log time of
    the current message on bags (so a bag gives the same windows however fast it is read).
    """

    def __init__(self, config: SyncConfig | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.config = config or SyncConfig()
        self.clock = clock
        self.counters = SyncCounters()
        self._buffer = EventBuffer(self.config.max_buffer_bytes, self.counters)
        self._clock = ClockAlignment(self.config)
        self._order = PacketOrder(self.config, self.counters, clock)
        self._timeline = Timeline(self.config, self.counters)
        self._decoder: Any = None
        self._format: tuple[str, int, int] | None = None
        self._sensor_size: tuple[int, int] | None = None
        self._pending: collections.deque[PendingFrame] = collections.deque()
        self._index = 0
        self._prev_frame_t: int | None = None

    # ------------------------------------------------------------------ public API

    @property
    def offset_ns(self) -> int | None:
        """Current host - sensor clock offset estimate (ns), None before any packet."""
        return self._clock.offset_ns

    @property
    def pending_frames(self) -> int:
        """Frames waiting for their events."""
        return len(self._pending)

    @property
    def resyncing(self) -> bool:
        """True while one side's inputs are dropped as stale after a clock reset."""
        return self._timeline.resyncing

    @property
    def events_silent(self) -> bool:
        """True while no packet arrived for ``silence_timeout_ns`` (or none ever)."""
        return self._order.silent()

    def add_events(self, payload: Any, time_base: int, encoding: str, width: int, height: int,
                   stamp_ns: int, seq: int | None = None) -> list[FrameWindow]:
        """Feed one EventPacket; returns the windows this completes.

        Malformed packets (unknown encoding, truncated payload) are dropped and counted,
        never raised: one bad packet must not stop a stream.
        """
        c = self.counters
        c.packets_in += 1
        if self._order.is_repeat(seq, stamp_ns):
            return self._drain()
        out: list[FrameWindow] = []
        try:
            decoder = self._decoder_for(encoding, int(width), int(height), out)
            if self._order.restarted(seq):
                decoder.reset()  # not late, so the sequence restarted: a new stream
            back = decoder.stats.backwards
            decoded = decoder.decode(payload, int(time_base))
        except EventError as err:
            c.packets_malformed += 1
            _log.warning("dropped a malformed event packet (seq %s): %s", seq, err)
            return out + self._drain()
        self._commit(seq, stamp_ns)
        return out + self._accept(decoded, stamp_ns, ordered=decoder.stats.backwards == back)

    def add_decoded(self, events: EventBatch, stamp_ns: int,
                    triggers: TriggerBatch | None = None,
                    seq: int | None = None) -> list[FrameWindow]:
        """Feed events that arrive already decoded (e.g. dv_ros2_msgs/EventArray)."""
        c = self.counters
        c.packets_in += 1
        if self._order.is_repeat(seq, stamp_ns):
            return self._drain()
        size = (events.width, events.height)
        out: list[FrameWindow] = []
        if self._sensor_size is not None and self._sensor_size != size:
            self._format_change(f"sensor size {self._sensor_size} -> {size}", out)
        self._sensor_size = size
        if len(events) > 1 and np.any(events.t[1:] < events.t[:-1]):
            events = events[np.argsort(events.t, kind="stable")]
        self._commit(seq, stamp_ns)
        return out + self._accept(Decoded(events, triggers or TriggerBatch.empty()), stamp_ns,
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
        t, approx = self._clock.frame_times(stamp_ns, sensor_time_ns)
        out: list[FrameWindow] = []
        if approx is not None and not self._frame_time_ok(approx, out):
            return out + self._drain()
        self._pending.append(PendingFrame(img, int(stamp_ns), frame_id, now, t, approx))
        if approx is not None:
            self._timeline.last_frame_input = approx
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
        self._buffer.clear()
        self._pending.clear()
        if self._decoder is not None:
            self._decoder.reset()
        self._prev_frame_t = None
        self._order.reset()
        self._clock.reset()
        self._timeline.reset()

    # ------------------------------------------------------------------ events side

    def _commit(self, seq: int | None, stamp_ns: int) -> None:
        """Record a packet that decoded; a gap in ``seq`` makes the open window lossy."""
        if self._order.commit(seq, stamp_ns):
            self._buffer.lossy = True

    def _decoder_for(self, encoding: str, width: int, height: int,
                     out: list[FrameWindow]) -> Any:
        fmt = (str(encoding), width, height)
        # the sensor size may also have come from add_decoded (an EventArray topic)
        changed = (self._format is not None and fmt != self._format) or (
            self._sensor_size is not None and self._sensor_size != (width, height))
        if self._decoder is None or changed:
            decoder = make_decoder(fmt[0], width, height)  # raises for unknown encodings
            if changed:
                self._format_change(f"event format {self._format}, sensor size "
                                    f"{self._sensor_size} -> {fmt}", out)
            self._decoder, self._format = decoder, fmt
            self._sensor_size = (width, height)
        return self._decoder

    def _format_change(self, what: str, out: list[FrameWindow]) -> None:
        """The event format changed: the waiting frames go out (events incomplete)."""
        self.counters.format_changes += 1
        _log.warning("event stream changed (%s): resetting the synchroniser", what)
        self._flush_pending_into(out, incomplete=True)
        self._buffer.clear()

    def _accept(self, decoded: Decoded, stamp_ns: int, *, ordered: bool) -> list[FrameWindow]:
        """Buffer one decoded packet (``ordered``: its times do not go backwards)."""
        events, triggers = decoded
        out: list[FrameWindow] = []
        if not len(events) and not len(triggers):
            return self._drain()
        first_t = int(events.t[0]) if len(events) else int(triggers.t[0])
        last_t = int(events.t[-1]) if len(events) else int(triggers.t[-1])
        verdict = self._timeline.check_packet(first_t, last_t, self._buffer.newest_t_ns)
        if verdict is Verdict.DROP:
            return self._drain()
        if verdict is Verdict.RESET:
            self._clock_reset("events", first_t, out)
        elif verdict is Verdict.RESYNC:
            self._clock_reset("events", first_t, out, resync=True)
        if len(events):
            self._clock.observe(stamp_ns, first_t)
            self.counters.offset_ns = self.offset_ns
        self._buffer.push(decoded, ordered=ordered)
        out.extend(self._drain())
        return out

    # ------------------------------------------------------------------ frames side

    def _frame_time_ok(self, t: int, out: list[FrameWindow]) -> bool:
        """Check a new frame's (approximate) time; handles resets; False drops it."""
        verdict = self._timeline.check_frame(t, self._buffer.newest_t_ns)
        if verdict is Verdict.DROP:
            return False
        if verdict is Verdict.NEW_TIMELINE:
            self._prev_frame_t = None
        elif verdict is Verdict.RESET:
            self._clock_reset("frames", t, out)
        elif verdict is Verdict.RESYNC:
            self._clock_reset("frames", t, out, resync=True)
        return True

    def _clock_reset(self, side: str, t_new: int, out: list[FrameWindow],
                     resync: bool = False) -> None:
        """Time jumped backwards on ``side`` (or, ``resync``, the other side's reset was
        wrong and ``side`` keeps its time line): flush the old time line, start anew."""
        if resync:
            self.counters.clock_resyncs += 1
            other = "frames" if side == "events" else "events"
            _log.warning("the %s disagree with the time line the %s reset to: re-founding "
                         "it on the %s (at %d ns)", side, other, side, t_new)
        else:
            self.counters.clock_resets += 1
            _log.warning("time jumped backwards on the %s side (to %d ns): resetting",
                         side, t_new)
        self._flush_pending_into(out, incomplete=True)
        self._buffer.clear()
        self._clock.reset()
        self._prev_frame_t = None
        self._timeline.on_reset(side, t_new)

    # ------------------------------------------------------------------ cutting

    def _resolve_time(self, frame: PendingFrame, now: int, force: bool) -> bool:
        return self._clock.resolve(frame, now, force, self._buffer, self._order.silent)

    def _drain(self, force: bool = False) -> list[FrameWindow]:
        """Cut the waiting frames whose windows are complete (all of them if ``force``)."""
        out: list[FrameWindow] = []
        cfg = self.config
        now = self.clock()
        silent = self.events_silent
        while self._pending:
            frame = self._pending[0]
            if frame.t_ns is None and not self._resolve_time(frame, now, force):
                break
            assert frame.t_ns is not None  # (_resolve_time gave it one)
            wm = self._buffer.newest_t_ns
            if wm is not None and wm > frame.t_ns:
                self._emit(out, incomplete=False)
            elif force or now - frame.arrival_ns >= min(
                    cfg.event_timeout_ns, cfg.silence_grace_ns if silent else cfg.event_timeout_ns):
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
        """Cut the oldest waiting frame's window and append it to ``out``."""
        frame = self._pending.popleft()
        c = self.counters
        assert frame.t_ns is not None  # (only resolved frames are emitted)
        t = int(frame.t_ns)
        prev = self._prev_frame_t
        if prev is not None and t <= prev:  # an estimated time landed behind: keep order
            t = prev + 1
        width, height = self._sensor_size or (frame.image.width, frame.image.height)
        events, triggers = self._buffer.cut(prev, t, width, height, self.config.first_window_ns)
        missing = incomplete and len(events) == 0
        lost = self._buffer.take_lossy()
        lossy = (incomplete or lost) and not missing
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
