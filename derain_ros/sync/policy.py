"""What counts as a fault in the inputs, and what the synchroniser then does.

The synchroniser must never stop on bad input (one bad packet, a bag played in a loop,
a driver restart), and must never degrade silently. So each rule lives here as a small
decision with a counter beside it (:class:`SyncCounters`), apart from the window
cutting that acts on the decisions:

- :class:`PacketOrder`: ``seq`` of event packets: duplicates (same ``seq`` and stamp)
  and late packets (``seq`` behind, within ``reorder_window``) are dropped, since the
  decoders are stateful; gaps are counted and mark the open window incomplete; a ``seq``
  far behind is a restarted stream. Also when the event topic last spoke (silence).
- :class:`Timeline`: event and frame times: duplicate and out-of-order frames are
  dropped; time jumping backwards by more than ``reset_threshold_ns`` is a clock reset,
  after which the other side's stragglers of the old time line are dropped as stale.
  Stale drops are bounded (``docs/recovery.md``): the other side is compared with the
  *moving* new time line (the newest input of the side that reset), and when it keeps
  disagreeing (``resync_frames`` frames, or stale packets covering ``resync_events_ns``)
  it was the reset that was wrong (one garbage packet or frame): the time line is
  re-founded on the other side (a resync, counted in ``clock_resyncs``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from derain_ros.sync.config import SyncConfig

__all__ = ["PacketOrder", "SyncCounters", "Timeline", "Verdict"]

_log = logging.getLogger(__name__)


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
    clock_resyncs: int = 0
    format_changes: int = 0
    buffer_bytes: int = 0
    buffer_bytes_peak: int = 0
    buffer_releases: int = 0
    offset_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (diagnostics, JSON)."""
        return dataclasses.asdict(self)

    @property
    def frames_dropped(self) -> int:
        """Frames taken in but never cut into a window (every kind of drop).

        The identity ``frames_in == windows_out + frames_dropped + pending`` holds at
        every moment (``pending``: frames waiting for their events).
        """
        return self.frames_duplicate + self.frames_out_of_order + self.frames_stale


class Verdict(enum.Enum):
    """What to do with an input whose time was checked by :class:`Timeline`."""

    OK = "ok"  # take it
    DROP = "drop"  # drop it (counted already)
    RESET = "reset"  # time jumped backwards: reset, then take it
    NEW_TIMELINE = "new_timeline"  # first of the new time line after a reset: take it
    RESYNC = "resync"  # the other side's reset was wrong: re-found the time line, take it


class PacketOrder:
    """Event packet ``seq`` bookkeeping and the event topic's silence.

    ``clock`` is the synchroniser's "now" (ns).
    """

    def __init__(self, config: SyncConfig, counters: SyncCounters,
                 clock: Callable[[], int]) -> None:
        self.config = config
        self.counters = counters
        self.clock = clock
        self.last_seq: int | None = None
        self.last_stamp: int | None = None
        self.last_clock: int | None = None  # clock at the last packet that decoded
        self._start_clock: int | None = None  # clock at the first silence check

    def is_repeat(self, seq: int | None, stamp_ns: int) -> bool:
        """True when the packet is a duplicate or a late one (to drop; counted)."""
        if seq is None or self.last_seq is None:
            return False
        c = self.counters
        seq, last = int(seq), self.last_seq
        if seq == last and int(stamp_ns) == self.last_stamp:
            c.packets_duplicate += 1
            return True
        last_stamp = self.last_stamp
        if seq < last and last - seq <= self.config.reorder_window and (
                last_stamp is None
                or last_stamp - self.config.reset_threshold_ns <= int(stamp_ns) <= last_stamp):
            c.packets_late += 1
            _log.debug("dropped a late event packet: seq %d after %d", seq, last)
            return True
        return False

    def restarted(self, seq: int | None) -> bool:
        """True when ``seq`` (not a repeat) is behind the last one: a new stream."""
        return seq is not None and self.last_seq is not None and int(seq) < self.last_seq

    def commit(self, seq: int | None, stamp_ns: int) -> bool:
        """Record a packet that decoded; True when a gap in ``seq`` lost packets (counted)."""
        gap = False
        if seq is not None:
            seq = int(seq)
            last = self.last_seq
            if last is not None and seq > last + 1:
                self.counters.packet_gaps += seq - last - 1
                gap = True
            self.last_seq = seq
        self.last_stamp = int(stamp_ns)
        self.last_clock = self.clock()
        return gap

    def silent(self) -> bool:
        """True while no packet arrived for ``silence_timeout_ns`` (or none ever)."""
        now = self.clock()
        if self._start_clock is None:
            self._start_clock = now
        last = self.last_clock
        ref = self._start_clock if last is None else last
        return now - ref >= self.config.silence_timeout_ns

    def reset(self) -> None:
        """Forget the sequence (the silence clock keeps running)."""
        self.last_seq = None
        self.last_stamp = None


class Timeline:
    """Checks event and frame times against the time line; recognises clock resets.

    After a reset by one side, the other side's inputs far *ahead* of the new time line
    (its start, or the newest input of the side that reset, whichever is later) are
    stragglers of the old one and dropped as stale. The drops are bounded: a run of
    ``resync_frames`` stale frames, or of stale packets covering ``resync_events_ns`` of
    sensor time, returns :attr:`Verdict.RESYNC` (the reset was the outlier).
    """

    def __init__(self, config: SyncConfig, counters: SyncCounters) -> None:
        self.config = config
        self.counters = counters
        self.last_frame_input: int | None = None  # latest frame time accepted (ns)
        # After a clock reset triggered by one side, the other side's stragglers of the old
        # time line are recognised by being far from the new time line's start.
        self.expect_events_near: int | None = None
        self.expect_frames_near: int | None = None
        self._stale_frames = 0  # frames dropped as stale in a row
        self._stale_events_from: int | None = None  # first time of a run of stale packets
        self._stale_events_last: int | None = None

    def check_packet(self, first_t: int, last_t: int, newest: int | None) -> Verdict:
        """A packet with events (or triggers) from ``first_t`` to ``last_t`` (ns);
        ``newest``: the newest event time buffered. Stale packets are counted."""
        thr = self.config.reset_threshold_ns
        if self.expect_events_near is not None:
            line = max(self.expect_events_near, self.last_frame_input or self.expect_events_near)
            if last_t > line + thr:  # a straggler of the old time line
                start, prev = self._stale_events_from, self._stale_events_last
                if start is None or prev is None or first_t < prev - thr:
                    start = first_t  # a new run (or one that jumped back)
                self._stale_events_from, self._stale_events_last = start, last_t
                if last_t - start >= self.config.resync_events_ns:
                    return Verdict.RESYNC  # taken, so not counted as stale
                self.counters.packets_stale += 1
                return Verdict.DROP
            self._end_expectations()
        elif newest is not None and first_t < newest - thr:
            return Verdict.RESET
        return Verdict.OK

    def check_frame(self, t: int, newest_event: int | None = None) -> Verdict:
        """A new frame's (approximate) time ``t`` (ns); drops are counted.

        ``newest_event``: the newest event time buffered (the events' moving time line).
        """
        c = self.counters
        thr = self.config.reset_threshold_ns
        if self.expect_frames_near is not None:
            line = max(self.expect_frames_near, newest_event or self.expect_frames_near)
            if t > line + thr:
                self._stale_frames += 1
                if self._stale_frames >= self.config.resync_frames:
                    return Verdict.RESYNC  # taken, so not counted as stale
                c.frames_stale += 1
                return Verdict.DROP
            self._end_expectations()
            self.last_frame_input = None
            return Verdict.NEW_TIMELINE
        last = self.last_frame_input
        if last is None or t > last:
            return Verdict.OK
        if t == last:
            c.frames_duplicate += 1
            return Verdict.DROP
        if t >= last - thr:
            c.frames_out_of_order += 1
            return Verdict.DROP
        return Verdict.RESET

    def on_reset(self, side: str, t_new: int) -> None:
        """Time jumped backwards on ``side`` ("events" or "frames") to ``t_new`` (ns), or
        the time line was re-founded on ``side`` (a resync).

        Only in ``sensor`` mode do both sides share one clock, so only there can the
        other side's old time line be told apart by its times.
        """
        self.last_frame_input = None
        self._end_expectations()
        near = t_new if self.config.clock_mode == "sensor" else None
        if side == "events":
            self.expect_frames_near = near
        else:
            self.expect_events_near = near

    def _end_expectations(self) -> None:
        self.expect_events_near = None
        self.expect_frames_near = None
        self._stale_frames = 0
        self._stale_events_from = None
        self._stale_events_last = None

    @property
    def resyncing(self) -> bool:
        """True while one side's inputs are being dropped as stale after a reset."""
        return self.expect_events_near is not None or self.expect_frames_near is not None

    def reset(self) -> None:
        """Forget the time line."""
        self.last_frame_input = None
        self._end_expectations()
