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
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import njit
from derain_ros.events.base import Buffers, Decoder, Encoder, register_decoder, register_encoder
from derain_ros.events.errors import EncodingError, TimeOrderError
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["Evt3Decoder", "Evt3Encoder"]

# state slots of the decoder (int64 array, carried across packets)
_S_HIGH, _S_LOW, _S_Y, _S_BASE_X, _S_POL, _S_VALID = range(6)
#: a TIME_HIGH this far below the previous one (or less) is jitter, not a wrap
_WRAP_MIN_DISTANCE = 10
_WRAP_US = 1 << 24
#: TIME_LOW and TIME_HIGH (bit masks of word codes)
_TIME_CODES = (1 << 6) | (1 << 8)
#: CONTINUED_4, padding, OTHERS, CONTINUED_12: carry no events, skipped
_SKIPPED_CODES = (1 << 7) | (1 << 9) | (1 << 14) | (1 << 15)


@njit
def _update_high(v: int, high: int) -> int:
    last = (high >> 12) & 0xFFF
    if v < last and last - v > _WRAP_MIN_DISTANCE:
        high += _WRAP_US
    return (high & ~0xFFFFFF) | (v << 12)


@njit
def _evt3_count(words):
    """Upper bounds of the events and triggers in ``words``: one pass, vectorised."""
    single = 0
    v12 = 0
    v8 = 0
    trig = 0
    for i in range(words.shape[0]):
        c = words[i] >> 12
        single += c == 2
        v12 += c == 4
        v8 += c == 5
        trig += c == 10
    return single + 12 * v12 + 8 * v8, trig


@njit
def _evt3_kernel(words, state, width, height, t, x, y, p, tt, te, ti, counts):
    n = words.shape[0]
    cap = t.shape[0]
    high = state[_S_HIGH]
    low = state[_S_LOW]
    ey = state[_S_Y]
    base_x = state[_S_BASE_X]
    pol = state[_S_POL]
    i = 0
    valid = state[_S_VALID]
    if valid == 0:
        has_high = False
        while i < n:
            w = np.int64(words[np.uint64(i)])
            c = w >> 12
            i += 1
            if c == 6:
                low = w & 0xFFF
                if has_high:
                    valid = 1
                    break
            elif c == 8:
                high = _update_high(w & 0xFFF, high)
                has_high = True
    k = 0
    m = 0
    oob = 0
    unknown = 0
    back = 0
    last = counts[7]  # time of the last event emitted (for the "backwards" count)
    counts[:7] = 0
    now = (high | low) * 1000
    wraps = high >> 24
    hi = (high >> 12) & 0xFFF
    row_ok = ey < height
    # Branches in order of frequency in real recordings: ADDR_X (an event), then the
    # time words, then ADDR_Y. TIME_HIGH and TIME_LOW share one branch whose body picks
    # with selects, not branches: after an event comes a HIGH or a LOW at the sensor's
    # whim, and a mispredicted branch per event cost a third of the decoder's time.
    while i < n:
        w = np.int64(words[np.uint64(i)])
        i += 1
        c = w >> 12
        v = w & 0xFFF
        if c == 2:
            ex = v & 0x7FF
            if ex < width and row_ok:
                t[np.uint64(k)] = now
                x[np.uint64(k)] = ex
                y[np.uint64(k)] = ey
                p[np.uint64(k)] = v >> 11
                k += 1
                back += now < last
                last = now
            else:
                oob += 1
        elif (_TIME_CODES >> c) & 1:
            # wraps, the 12 high bits and the low bits are kept apart so that each
            # depends only on its own last value (short dependency chains)
            is_high = c == 8
            wraps += is_high & (v < hi) & (hi - v > _WRAP_MIN_DISTANCE)
            hi = v if is_high else hi
            low = low if is_high else v
            now = ((wraps << 24) | (hi << 12) | low) * 1000
        elif c == 0:
            ey = v & 0x7FF
            row_ok = ey < height
        elif (_SKIPPED_CODES >> c) & 1:
            pass
        elif c == 3:
            base_x = v & 0x7FF
            pol = v >> 11
        elif c == 4 or c == 5:  # noqa: PLR1714 - numba-friendly
            if k + 12 > cap:
                counts[6] = 1  # no room: the capacity bound is wrong (the caller raises)
                return
            nbits = 12 if c == 4 else 8
            for b in range(nbits):
                if (v >> b) & 1:
                    ex = (base_x + b) & 0xFFFF
                    if ex < width and row_ok:
                        t[np.uint64(k)] = now
                        x[np.uint64(k)] = ex
                        y[np.uint64(k)] = ey
                        p[np.uint64(k)] = pol
                        k += 1
                        back += now < last
                        last = now
                    else:
                        oob += 1
            base_x = (base_x + nbits) & 0xFFFF
        elif c == 10:
            tt[np.uint64(m)] = now
            te[np.uint64(m)] = v & 1
            ti[np.uint64(m)] = (v >> 8) & 0xF
            m += 1
        else:
            unknown += 1
    state[_S_HIGH] = (wraps << 24) | (hi << 12)
    state[_S_LOW] = low
    state[_S_Y] = ey
    state[_S_BASE_X] = base_x
    state[_S_POL] = pol
    state[_S_VALID] = valid
    counts[0] = k
    counts[1] = m
    counts[2] = oob
    counts[4] = unknown
    counts[5] = back
    counts[7] = last


@register_decoder
class Evt3Decoder(Decoder):
    """Decoder of ``evt3`` payloads; see the module docstring for the exact time rule."""

    encoding = "evt3"
    word_dtype = "<u2"
    has_triggers = True

    def _reset_state(self) -> None:
        self._state = np.zeros(6, np.int64)

    def _capacity(self, words: np.ndarray) -> tuple[int, int]:
        events, triggers = _evt3_count(words)
        return events + 13, triggers  # + room for the kernel's vector guard

    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers) -> None:
        del time_base  # evt3 carries its own time; time_base is unused by definition
        _evt3_kernel(words, self._state, self.width, self.height, out.t, out.x, out.y,
                     out.p, out.tt, out.te, out.ti, counts)


#: gaps of the high counter up to this are written one step per TIME_HIGH, as the sensor
#: does; longer gaps in half-wrap strides (2 words per 16.78 s), which the decoder still
#: unwraps exactly
_STEP_LIMIT = 64


@njit
def _evt3_encode_kernel(ts_us, xs, ys, ps, trig_us, trig_code, state, out):
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
        if first is None:
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
