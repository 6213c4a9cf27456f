"""``EventStream``: a per-topic packet queue with "decode until" for frame synchronisation.

Why: one frame needs *all* events of its interval, and event packets arrive on their own
schedule (1-10 ms each) while frames are slower. The stream buffers raw packets under a
byte cap (dropping, counted and logged, when full, as the existing frame+event ROS nodes
do), and :meth:`EventStream.pop_until` decodes just as far as needed to return every event
before a time, keeping the rest of a packet for the next call.

Rule: ``pop_until(T)`` returns the queued events in stream order up to, not including,
the first event with ``t >= T`` (for a time-ordered stream: exactly the events with
``t < T``); trigger events likewise, among the packets decoded so far. A packet that fails
to decode is skipped and counted (``decode_errors``) so one bad packet cannot stall a node.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from derain_ros.events.base import DEFAULT_MAX_PACKET_BYTES, Decoded, Payload, make_decoder
from derain_ros.events.errors import EventError
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["EventStream", "StreamCounters"]

_log = logging.getLogger(__name__)


@dataclass
class StreamCounters:
    """Counters of an :class:`EventStream`.

    ``packets``: packets accepted by :meth:`EventStream.push`; ``drops``: packets refused
    because the byte cap was full (or the packet alone exceeds it); ``decode_errors``:
    accepted packets skipped because they did not decode; ``bytes_buffered``: payload
    bytes of packets not yet fully returned.
    """

    packets: int = 0
    drops: int = 0
    decode_errors: int = 0
    bytes_buffered: int = 0


class EventStream:
    """Queue of one event topic's packets with "decode until".

    ``encoding``/``width``/``height`` as in the topic's EventPacket messages;
    ``max_buffer_bytes`` caps the payload bytes held (default 10 MB).
    """

    def __init__(self, encoding: str, width: int, height: int, *,
                 max_buffer_bytes: int = 10_000_000,
                 max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES, strict: bool = False) -> None:
        self.decoder = make_decoder(encoding, width, height,
                                    max_packet_bytes=max_packet_bytes, strict=strict)
        self.encoding = encoding
        self.width = int(width)
        self.height = int(height)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.counters = StreamCounters()
        self._raw: deque[tuple[Payload, int, int]] = deque()
        # decoded, not yet returned: (events, packet bytes), and trigger events
        self._ready: deque[tuple[EventBatch, int]] = deque()
        self._triggers: deque[TriggerBatch] = deque()

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
        """Payload bytes of packets not yet fully returned."""
        return self.counters.bytes_buffered

    def push(self, payload: Payload, time_base: int) -> bool:
        """Queue one packet's payload; False (a counted, logged drop) when the cap is full.

        The payload is referenced, not copied, when it is ``bytes`` (immutable); other
        buffers are copied since a caller may reuse them.
        """
        n = payload.nbytes if isinstance(payload, np.ndarray | memoryview) else len(payload)
        c = self.counters
        if n > self.decoder.max_packet_bytes:
            c.drops += 1
            _log.warning("event packet of %d bytes exceeds the %d-byte cap: dropped "
                         "(%d drops)", n, self.decoder.max_packet_bytes, c.drops)
            return False
        if c.bytes_buffered + n > self.max_buffer_bytes:
            c.drops += 1
            if c.drops == 1 or c.drops % 100 == 0:
                _log.warning("event buffer full (%d of %d bytes): packet dropped (%d drops)",
                             c.bytes_buffered, self.max_buffer_bytes, c.drops)
            return False
        if not isinstance(payload, bytes):
            payload = bytes(memoryview(payload).cast("B")) if not isinstance(
                payload, np.ndarray) else payload.tobytes()
        self._raw.append((payload, int(time_base), n))
        c.packets += 1
        c.bytes_buffered += n
        return True

    def reset(self) -> None:
        """Drop everything queued and restart the decoder (e.g. time went backwards)."""
        self._raw.clear()
        self._ready.clear()
        self._triggers.clear()
        self.counters.bytes_buffered = 0
        self.decoder.reset()

    # ------------------------------------------------------------------ decode side
    def _decode_next(self) -> bool:
        """Decode the oldest raw packet into the ready queue; False when none is left."""
        while self._raw:
            payload, time_base, n = self._raw.popleft()
            try:
                events, triggers = self.decoder.decode(payload, time_base)
            except EventError as err:
                self.counters.decode_errors += 1
                self.counters.bytes_buffered -= n
                _log.warning("event packet skipped: %s (%d decode errors)", err,
                             self.counters.decode_errors)
                continue
            self._ready.append((events, n))
            if len(triggers):
                self._triggers.append(triggers)
            return True
        return False

    def pop_until(self, t_ns: int) -> Decoded:
        """Every queued event before the first one at or after ``t_ns`` (ns), in order."""
        limit = int(t_ns)
        events: list[EventBatch] = []
        while self._ready or self._decode_next():
            ev, n = self._ready[0]
            cut = _first_at_or_after(ev.t, limit)
            events.append(ev[:cut])
            if cut < len(ev):
                self._ready[0] = (ev[cut:], n)
                break
            self._ready.popleft()
            self.counters.bytes_buffered -= n
        return Decoded(EventBatch.concatenate(events, self.width, self.height),
                       self._pop_triggers(limit))

    def _pop_triggers(self, limit: int | None) -> TriggerBatch:
        pending = TriggerBatch.concatenate(list(self._triggers))
        self._triggers.clear()
        cut = len(pending) if limit is None else _first_at_or_after(pending.t, limit)
        if cut < len(pending):
            self._triggers.append(TriggerBatch(pending.t[cut:], pending.edge[cut:],
                                               pending.id[cut:]))
        return TriggerBatch(pending.t[:cut], pending.edge[:cut], pending.id[:cut])

    def pop_all(self) -> Decoded:
        """Every queued event and trigger, decoding all queued packets."""
        while self._decode_next():
            pass
        events = [e for e, _ in self._ready]
        self._ready.clear()
        self.counters.bytes_buffered = 0
        return Decoded(EventBatch.concatenate(events, self.width, self.height),
                       self._pop_triggers(None))


def _first_at_or_after(t: np.ndarray, limit: int) -> int:
    """Index of the first element ``>= limit`` (``len(t)`` if none): stop-at-first."""
    if not len(t):
        return 0
    mask = t >= limit
    i = int(np.argmax(mask))
    return i if mask[i] else len(t)
