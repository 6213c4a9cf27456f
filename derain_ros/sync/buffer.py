"""The synchroniser's event buffer: decoded packets in, one window's events out.

A thin layer over :class:`derain_ros.events.EventStream` ("decode until"), which does
the queueing, the byte cap and the cut. Packets are decoded on arrival and queued with
``push_decoded`` (rather than kept encoded for a lazy decode) because the synchroniser
needs each packet's event times the moment it arrives: to know when a window is
complete, to estimate the clock offset, to match trigger edges and to see time jump
backwards. The byte cap applies to the decoded events (13 bytes an event).

What this layer adds: the stream is made on first use (its sensor size follows the
events pushed), the counters of :class:`~derain_ros.sync.policy.SyncCounters` that
concern the buffer, and the ``lossy`` mark: events of the open window were dropped or
lost, so the window will be flagged ``events_incomplete``.

Memory after a burst: the decoded packets are many mid-sized numpy arrays; once freed,
glibc keeps their pages (RSS stays at the burst's high-water mark, up to
``max_buffer_bytes``). When the buffer has drained to an eighth of a high-water mark of
at least :data:`RELEASE_MIN_BYTES`, the pages are handed back (``malloc_trim``; a no-op
where the C library has none) and ``buffer_releases`` counts it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import numpy as np

from derain_ros.events import Decoded, EventStream
from derain_ros.records import EventBatch
from derain_ros.sync.policy import SyncCounters

__all__ = ["RELEASE_MIN_BYTES", "EventBuffer", "release_memory"]

#: A buffer high-water mark (bytes) worth handing back once drained.
RELEASE_MIN_BYTES = 8_000_000


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return None
    return None if trim is None else (lambda: trim(0))


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; else nothing)."""
    if _TRIM is not None:
        _TRIM()


class EventBuffer:
    """Decoded events waiting to be cut into windows, under ``max_buffer_bytes``."""

    def __init__(self, max_buffer_bytes: int, counters: SyncCounters, *,
                 release: Callable[[], None] = release_memory,
                 release_min_bytes: int = RELEASE_MIN_BYTES) -> None:
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.counters = counters
        self.lossy = False  # events of the open window were dropped or lost
        self._stream: EventStream | None = None  # made at the first window or packet
        self._release = release
        self._release_min = int(release_min_bytes)
        self._high = 0  # bytes held at most since the last release

    def stream(self, width: int, height: int) -> EventStream:
        """The event queue, made on first use (its size follows the events pushed)."""
        if self._stream is None:
            self._stream = EventStream(width, height,
                                       max_buffer_bytes=self.max_buffer_bytes)
        return self._stream

    @property
    def newest_t_ns(self) -> int | None:
        """Time (ns) of the newest event (or trigger) buffered so far; None when none."""
        return None if self._stream is None else self._stream.newest_t_ns

    def rising_edges(self, channel: int) -> np.ndarray:
        """Times (ns) of the buffered rising trigger edges on ``channel`` (-1: any)."""
        if self._stream is None:
            return np.empty(0, np.int64)
        return self._stream.rising_edges(channel)

    def push(self, decoded: Decoded, *, ordered: bool) -> None:
        """Queue one decoded packet (``ordered``: its times do not go backwards).

        Events behind an already cut window are dropped (``events_late``); a packet that
        does not fit is dropped (``packets_buffer_full``), all but its trigger edges,
        which cost no buffer bytes and which trigger mode needs each of.
        """
        c = self.counters
        events, triggers = decoded
        stream = self.stream(events.width, events.height)
        late_before = stream.counters.late
        accepted = stream.push_decoded(decoded, ordered=ordered)
        late = stream.counters.late - late_before  # behind an already cut window
        c.events_late += late
        c.events_in += len(events) - late
        if not accepted:  # the buffer is full (logged by the stream)
            c.packets_buffer_full += 1
            c.events_dropped_buffer_full += len(events) - late
            self.lossy = True
            if len(triggers):
                stream.push_decoded(Decoded(EventBatch.empty(events.width, events.height),
                                            triggers))
        c.buffer_bytes = stream.bytes_buffered
        c.buffer_bytes_peak = max(c.buffer_bytes_peak, stream.bytes_buffered)
        self._high = max(self._high, stream.bytes_buffered)

    def cut(self, t_prev: int | None, t: int, width: int, height: int,
            first_window_ns: int) -> Decoded:
        """The events (and triggers) of the window ``(t_prev, t]`` (ns), removed.

        For the first window after a (re)start (``t_prev`` None) only the
        ``first_window_ns`` before ``t`` are kept. An empty result has the sensor size
        ``width`` x ``height`` (what frames-only windows have).
        """
        stream = self.stream(width, height)
        if t_prev is None:
            stream.drop_before(t - first_window_ns)
        events, triggers = stream.pop_until(t + 1)  # the events of (t_prev, t]
        if not len(events):
            events = EventBatch.empty(width, height)
        self.counters.buffer_bytes = stream.bytes_buffered
        self._release_after_burst(stream.bytes_buffered)
        return Decoded(events, triggers)

    def _release_after_burst(self, held: int) -> None:
        """Hand memory back once a burst (a high-water mark) has drained."""
        if self._high >= self._release_min and held <= self._high // 8:
            self._high = held
            self._release()
            self.counters.buffer_releases += 1

    def take_lossy(self) -> bool:
        """Whether events of the window being cut were lost; clears the mark."""
        lossy, self.lossy = self.lossy, False
        return lossy

    def clear(self) -> None:
        """Forget the buffered events, the newest event time and the cut (time line)."""
        if self._stream is not None:
            self._stream.reset()
        self.lossy = False
        self.counters.buffer_bytes = 0
        self._release_after_burst(0)
