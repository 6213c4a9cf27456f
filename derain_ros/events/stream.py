"""``EventStream``: a per-topic event queue with "decode until" for frame synchronisation.

Why: one frame needs *all* events of its interval, and event packets arrive on their own
schedule (1-10 ms each) while frames are slower. The stream buffers packets under a byte
cap (dropping, counted and logged, when full, as the existing frame+event ROS nodes do),
and :meth:`EventStream.pop_until` returns every event before a time, keeping the rest of
a packet for the next call.

Packets come in decoded (:meth:`EventStream.push_decoded`), because its one user, the
frame synchroniser, must see each packet's times on arrival (window completeness, clock
offset, triggers, time going backwards). The cap counts :data:`EVENT_BYTES` per event,
released event by event. Events behind an earlier ``pop_until`` limit would come out of
order: they are dropped and counted (``late``).

Rule: ``pop_until(T)`` returns the queued events in stream order up to, not including,
the first event with ``t >= T`` (for a time-ordered stream: exactly the events with
``t < T``); trigger events likewise.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from derain_ros.events.base import Decoded
from derain_ros.events.errors import EventError
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["EVENT_BYTES", "EventStream", "StreamCounters"]

_log = logging.getLogger(__name__)
_max = np.maximum.reduce

#: Bytes one decoded event takes (t int64, x, y uint16, p uint8): the cap's unit.
EVENT_BYTES = 13


@dataclass
class StreamCounters:
    """Counters of an :class:`EventStream`.

    ``packets``: packets accepted by :meth:`EventStream.push_decoded`; ``drops``: packets
    refused because the byte cap was full; ``late``: events dropped for lying before an
    earlier ``pop_until`` limit; ``bytes_buffered``: bytes held (:data:`EVENT_BYTES` per
    event held).
    """

    packets: int = 0
    drops: int = 0
    late: int = 0
    bytes_buffered: int = 0


class EventStream:
    """Queue of one event topic's decoded packets with "decode until".

    ``max_buffer_bytes`` caps the bytes held (default 10 MB). The sensor size follows the
    batches pushed while the stream holds no events (``width``/``height`` only size empty
    results until then).
    """

    def __init__(self, width: int, height: int, *, max_buffer_bytes: int = 10_000_000) -> None:
        self.width = int(width)
        self.height = int(height)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.counters = StreamCounters()
        # not yet returned: (events, whether their times are known to be non-decreasing:
        # then cutting is a binary search)
        self._ready: deque[tuple[EventBatch, bool]] = deque()
        self._triggers: deque[TriggerBatch] = deque()
        self._newest: int | None = None
        self._limit: int | None = None  # highest pop_until limit since the last reset

    # ------------------------------------------------------------------ queue side
    @property
    def packets(self) -> int:
        """Packets accepted so far."""
        return self.counters.packets

    @property
    def drops(self) -> int:
        """Packets dropped because the buffer was full."""
        return self.counters.drops

    @property
    def bytes_buffered(self) -> int:
        """Bytes held: see :class:`StreamCounters`."""
        return self.counters.bytes_buffered

    @property
    def newest_t_ns(self) -> int | None:
        """Time (ns) of the last event of the newest packet pushed (of its last trigger
        when it has no events), the highest so far; None before any or after a reset.

        Packets arrive in order, so every event before it has arrived (or was lost).
        Packets refused for a full buffer count: their time passed all the same.
        """
        return self._newest

    def push_decoded(self, decoded: Decoded, *, ordered: bool = False) -> bool:
        """Queue one packet decoded already; False (a counted, logged drop) when full.

        Events before the highest :meth:`pop_until` limit so far are dropped first and
        counted in ``counters.late`` (trigger events are kept: they are few and are
        matched by time). A refused packet keeps nothing. ``ordered=True`` promises
        non-decreasing event times (e.g. the decoder counted no event going backwards):
        cutting then needs a binary search, not a scan of every event. Raises
        :class:`EventError` for events of another sensor size than the events held.
        """
        events, triggers = decoded
        c = self.counters
        t = events.t
        n = len(t)
        if n:
            self._saw(int(t[-1]))
            if (events.width, events.height) != (self.width, self.height):
                if self._ready:
                    raise EventError(f"events of a {events.width}x{events.height} sensor "
                                     f"pushed into a {self.width}x{self.height} stream")
                self.width, self.height = events.width, events.height
            limit = self._limit
            if limit is not None and t[0] < limit:
                late = t < limit
                k = int(np.count_nonzero(late))
                c.late += k
                n -= k
                events = events[~late]
        elif len(triggers.t):
            self._saw(int(triggers.t[-1]))
        nbytes = n * EVENT_BYTES
        if c.bytes_buffered + nbytes > self.max_buffer_bytes:
            self._count_drop()
            return False
        if n:
            self._ready.append((events, ordered))
            c.bytes_buffered += nbytes
        if len(triggers.t):
            self._triggers.append(triggers)
        c.packets += 1
        return True

    def _count_drop(self) -> None:
        """Count (and now and then log) a packet refused because the buffer is full."""
        c = self.counters
        c.drops += 1
        if c.drops == 1 or c.drops % 100 == 0:
            _log.warning("event buffer full (%d of %d bytes): packet dropped (%d drops)",
                         c.bytes_buffered, self.max_buffer_bytes, c.drops)

    def _saw(self, t_ns: int) -> None:
        """Note the last time of a packet decoded (see :attr:`newest_t_ns`)."""
        if self._newest is None or t_ns > self._newest:
            self._newest = t_ns

    def reset(self) -> None:
        """Drop everything queued (e.g. time went backwards).

        Also forgets the newest time and the ``pop_until`` limit (counters are kept).
        """
        self._ready.clear()
        self._triggers.clear()
        self._newest = None
        self._limit = None
        self.counters.bytes_buffered = 0

    # ------------------------------------------------------------------ cut side
    def _take(self, limit: int) -> list[EventBatch]:
        """Remove the queued events before the first one at or after ``limit``; in order."""
        c = self.counters
        out: list[EventBatch] = []
        while self._ready:
            ev, ordered = self._ready[0]
            cut = _cut_index(ev.t, limit, ordered)
            if cut == len(ev):
                self._ready.popleft()
                c.bytes_buffered -= cut * EVENT_BYTES
                out.append(ev)
                continue
            if cut:
                out.append(ev[:cut])
                c.bytes_buffered -= cut * EVENT_BYTES
                self._ready[0] = (ev[cut:], ordered)
            break
        return out

    def pop_until(self, t_ns: int) -> Decoded:
        """Every queued event before the first one at or after ``t_ns`` (ns), in order.

        For the ``(t0, t1]`` windows of integer ns times: ``pop_until(t1 + 1)``.
        """
        limit = int(t_ns)
        events = self._take(limit)
        if self._limit is None or limit > self._limit:
            self._limit = limit
        return Decoded(EventBatch.concatenate(events, self.width, self.height),
                       self._pop_triggers(limit))

    def drop_before(self, t_ns: int) -> None:
        """Forget the events and triggers :meth:`pop_until` would return for ``t_ns``.

        For a start or restart: events too old for the first window. Unlike ``pop_until``
        this sets no limit, so later packets' events before ``t_ns`` are still taken.
        """
        limit = int(t_ns)
        self._take(limit)
        self._pop_triggers(limit)

    def rising_edges(self, channel: int = -1) -> np.ndarray:
        """Times (ns, int64) of the queued rising trigger edges on ``channel`` (-1: any),
        for matching frames to exposure triggers."""
        if not self._triggers:
            return np.empty(0, np.int64)
        if len(self._triggers) > 1:  # join once, not on every query
            joined = TriggerBatch.concatenate(list(self._triggers))
            self._triggers.clear()
            self._triggers.append(joined)
        trig = self._triggers[0]
        mask = trig.edge == 1
        if channel >= 0:
            mask &= trig.id == channel
        rising: np.ndarray = trig.t[mask]
        return rising

    def _pop_triggers(self, limit: int | None) -> TriggerBatch:
        if not self._triggers:
            return TriggerBatch.empty()
        pending = TriggerBatch.concatenate(list(self._triggers))
        self._triggers.clear()
        cut = len(pending) if limit is None else _first_at_or_after(pending.t, limit)
        if cut < len(pending):
            self._triggers.append(TriggerBatch(pending.t[cut:], pending.edge[cut:],
                                               pending.id[cut:]))
        return TriggerBatch(pending.t[:cut], pending.edge[:cut], pending.id[:cut])

    def pop_all(self) -> Decoded:
        """Every queued event and trigger."""
        events = [e for e, _ in self._ready]
        self._ready.clear()
        self.counters.bytes_buffered = 0
        return Decoded(EventBatch.concatenate(events, self.width, self.height),
                       self._pop_triggers(None))


def _cut_index(t: np.ndarray, limit: int, ordered: bool) -> int:
    """:func:`_first_at_or_after`, by binary search when ``t`` is known non-decreasing."""
    if not ordered:
        return _first_at_or_after(t, limit)
    n = len(t)
    return n if not n or t[-1] < limit else int(t.searchsorted(limit))


def _first_at_or_after(t: np.ndarray, limit: int) -> int:
    """Index of the first element ``>= limit`` (``len(t)`` if none): stop-at-first."""
    n = len(t)
    if not n or _max(t) < limit:  # the common case, a whole packet: no mask to allocate
        return n
    mask = t >= limit
    i = int(np.argmax(mask))
    return i if mask[i] else len(t)
