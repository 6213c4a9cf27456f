"""Prophesee EVT 3.0 (``evt3``): decoder with external triggers, and an encoder.

Format (Prophesee's public EVT 3.0 page): little-endian 16-bit words, the top 4 bits a
code, the low 12 bits its payload:

==== ============= ==========================================================
code name          payload
==== ============= ==========================================================
0x0  EVT_ADDR_Y    y (bits 0-10), system type (bit 11): sets the current row
0x2  EVT_ADDR_X    x (bits 0-10), polarity (bit 11): one event at (x, row)
0x3  VECT_BASE_X   x (bits 0-10), polarity (bit 11): base of the next vectors
0x4  VECT_12       12 valid bits: events at base+0..11, then base += 12
0x5  VECT_8        8 valid bits (0-7): events at base+0..7, then base += 8
0x6  EVT_TIME_LOW  low 12 bits of the µs time stamp
0x8  EVT_TIME_HIGH high 12 bits of the µs time stamp (24 bits in all)
0xA  EXT_TRIGGER   edge (bit 0, 1 = rising), channel id (bits 8-11)
0x7, 0xE, 0xF      CONTINUED_4, OTHERS, CONTINUED_12: housekeeping, skipped
0x9                padding (seen on some cameras), skipped
==== ============= ==========================================================

Time, exactly as the ros-event-camera decoder defines it (the reference figures depend
on it): ``t = ((wraps << 24) | (high << 12) | low) * 1000`` ns, where ``wraps`` counts
24-bit wraps, detected when a TIME_HIGH is more than 10 below the previous one (a
smaller step back is sensor jitter, not a wrap). ``time_base`` is not used. Nothing is
emitted before the stream has a valid time: a TIME_HIGH followed, in the same packet, by
a TIME_LOW. Events take the time of the last time words seen.

Why hand-written: no maintained Python library decodes the EventPacket form of evt3
with stream state across packets (the ``evt3`` PyPI package decodes whole files); the
bench compares speed and results with it.

The decoding loops live in :mod:`derain_ros.events.evt3_kernels`: a scalar state machine
(the definition, used for short packets) and a block decoder for packets of
``BLOCK_MIN_WORDS`` words and more, tested to give identical results.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from derain_ros.events._jit import KInt, njit
from derain_ros.events._scratch import thread_buffer
from derain_ros.events.base import (
    Buffers,
    Decoder,
    Encoder,
    Plan,
    register_decoder,
    register_encoder,
)
from derain_ros.events.errors import EncodingError, TimeOrderError
from derain_ros.events.evt3_kernels import (
    _S_VALID,
    BLOCK,
    BLOCK_MIN_WORDS,
    _evt3_block_kernel,
    _evt3_count,
    _evt3_kernel,
    _evt3_scan,
)
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["Evt3Decoder", "Evt3Encoder"]

@register_decoder
class Evt3Decoder(Decoder):
    """Decoder of ``evt3`` payloads; see the module docstring for the exact time rule."""

    encoding = "evt3"
    word_dtype = "<u2"

    def _reset_state(self) -> None:
        self._state = np.zeros(6, np.int64)

    def _plan(self, words: np.ndarray) -> Plan:
        # + 13: room for the scalar loop's vector guard
        if words.shape[0] < BLOCK_MIN_WORDS:
            events, triggers = _evt3_count(words)
            return Plan(int(events) + 13, int(triggers))
        # long packets: the block decoder's first pass gives the bounds and its table
        table = _block_table(words.shape[0] // BLOCK + 1)
        start, blocks, events, triggers = _evt3_scan(words, self._state[_S_VALID], table)
        return Plan(int(events) + 13, int(triggers), (table, start, blocks))

    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers, plan: Plan) -> None:
        del time_base  # evt3 carries its own time; time_base is unused by definition
        scan = plan.scan
        if scan is None:
            _evt3_kernel(words, self._state, self.width, self.height, out.t, out.x, out.y,
                         out.p, out.tt, out.te, out.ti, counts)
        else:
            table, start, blocks = cast("tuple[np.ndarray, int, int]", scan)
            _evt3_block_kernel(words, table, start, blocks, self._state, self.width,
                               self.height, out.t, out.x, out.y, out.p, out.tt, out.te,
                               out.ti, counts)


def _block_table(rows: int) -> np.ndarray:
    """The block decoder's table (at least ``rows`` x 6), kept per thread: see
    ``events._scratch`` (the kernels use only the rows of the packet's blocks)."""
    return thread_buffer("evt3_block_table", rows, np.int64, width=6)


#: gaps of the high counter up to this are written one step per TIME_HIGH, as the sensor
#: does; longer gaps in half-wrap strides (2 words per 16.78 s), which the decoder still
#: unwraps exactly
_STEP_LIMIT = 64


@njit
def _evt3_encode_kernel(ts_us: np.ndarray, xs: np.ndarray, ys: np.ndarray, ps: np.ndarray,
                        trig_us: np.ndarray, trig_code: np.ndarray, state: np.ndarray,
                        out: np.ndarray) -> KInt:
    """Write words for events merged with triggers; returns the word count.

    ``state``: [high counter (µs >> 12, with wraps), low, y, started]; ``out`` is big
    enough (see :meth:`Evt3Encoder._encode`).
    """
    k = 0
    ne = ts_us.shape[0]
    ntr = trig_us.shape[0]
    i = 0
    j = 0
    high = state[0]
    low = state[1]
    cur_y = state[2]
    started = state[3]
    first = True
    while i < ne or j < ntr:
        take_trig = j < ntr and (i >= ne or trig_us[j] <= ts_us[i])
        tus = trig_us[j] if take_trig else ts_us[i]
        th = tus >> 12
        wrote_high = False
        if th - high > _STEP_LIMIT:
            while th - high > 2048:
                high += 2048
                out[k] = 0x8000 | (high & 0xFFF)
                k += 1
            high = th
            out[k] = 0x8000 | (high & 0xFFF)
            k += 1
            wrote_high = True
        else:
            while high < th:
                high += 1
                out[k] = 0x8000 | (high & 0xFFF)
                k += 1
                wrote_high = True
        if started == 0:
            # the decoder needs a TIME_HIGH then a TIME_LOW before its first event
            if not wrote_high:
                out[k] = 0x8000 | (high & 0xFFF)
                k += 1
            started = 1
            cur_y = -1
            low = -1
        if (tus & 0xFFF) != low or first:
            low = tus & 0xFFF
            out[k] = 0x6000 | low
            k += 1
        first = False
        if take_trig:
            out[k] = 0xA000 | trig_code[j]
            k += 1
            j += 1
        else:
            if ys[i] != cur_y:
                cur_y = ys[i]
                out[k] = cur_y
                k += 1
            out[k] = 0x2000 | (ps[i] << 11) | xs[i]
            k += 1
            i += 1
    state[0] = high
    state[1] = low
    state[2] = cur_y
    state[3] = started
    return k


@register_encoder
class Evt3Encoder(Encoder):
    """Encoder of events (and triggers) into ``evt3`` payloads.

    Representable streams: times are whole µs (``t % 1000 == 0``), non-decreasing over
    the whole stream (events and triggers each), counted from the sensor's zero (the
    decoder has no time base, so the first packet walks the clock up from 0).

    Words written: per event, TIME_HIGH words while the high counter (µs >> 12) moves
    (one per step for steps up to 64, as the sensor does; in half-wrap strides of 2048
    for longer gaps, which the decoder unwraps exactly), a TIME_LOW when the low 12 bits
    change (and at the start of each packet), an ADDR_Y when the row changes and an
    ADDR_X with the polarity; a trigger is its time words then EXT_TRIGGER (edge bit 0,
    id bits 8-11). No vectors and no housekeeping words: real
    sensors also repeat TIME_HIGH and interleave OTHERS/CONTINUED words, which carry no
    events, so re-encoding a real packet gives the same events but not the same bytes.
    """

    encoding = "evt3"

    def _reset_state(self) -> None:
        self._state = np.zeros(4, np.int64)
        self._last_us = -1

    def _encode(self, events: EventBatch, triggers: TriggerBatch) -> tuple[bytes, int]:
        if self.width > 2048 or self.height > 2048:
            raise EncodingError("evt3 addresses are 11 bits: sensors up to 2048 x 2048 px")
        ts_us = _to_us(events.t)
        trig_us = _to_us(triggers.t)
        for name, arr in (("event", ts_us), ("trigger", trig_us)):
            if len(arr) and np.any(arr[1:] < arr[:-1]):
                raise TimeOrderError(f"evt3 needs non-decreasing {name} times")
        first = min([a[0] for a in (ts_us, trig_us) if len(a)], default=None)
        last = max([a[-1] for a in (ts_us, trig_us) if len(a)], default=None)
        if first is None or last is None:  # (both or neither)
            return b"", 0
        if first < self._last_us:
            raise TimeOrderError(f"packet starts at {first} µs, before the previous "
                                 f"packet's end at {self._last_us} µs")
        n = len(ts_us) + len(trig_us)
        size = 4 + (5 + _STEP_LIMIT) * n + ((int(last) >> 12) - int(self._state[0])) // 2048
        trig_code = ((triggers.edge.astype(np.int64) & 1)
                     | ((triggers.id.astype(np.int64) & 0xF) << 8))
        out = np.empty(size, np.uint16)
        k = _evt3_encode_kernel(ts_us, events.x.astype(np.int64), events.y.astype(np.int64),
                                events.p.astype(np.int64) & 1, trig_us, trig_code,
                                self._state, out)
        self._last_us = int(last)
        return out[:k].astype("<u2").tobytes(), 0


def _to_us(t: np.ndarray) -> np.ndarray:
    us, rest = np.divmod(t.astype(np.int64), 1000)
    if np.any(rest):
        raise EncodingError("evt3 times are whole microseconds: t % 1000 must be 0")
    return us
