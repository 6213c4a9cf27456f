"""Compressed libcaer (``libcaer_cmp``, the default of ``libcaer_driver``): decoder.

Format, as ``libcaer_driver`` writes it and the ros-event-camera decoder reads it:
little-endian 16-bit tokens, the top 4 bits a code, the low 12 bits its payload:

==== ============ ===========================================================
code name         payload
==== ============ ===========================================================
0    TIME_HIGH    bits 12-23 of the µs offset from ``time_base``
1    TIME_LOW     bits 0-11 of the µs offset
2    ADDR_X       x (bits 0-10): sets the current column
3    ADDR_Y       y (bits 0-10), polarity (bit 11): one event at (column, y)
4    VECT_BASE_Y  y (bits 0-10), polarity (bit 11): base of the next vector
5    VECT_8       8 valid bits: events at (column, base+0..7), then base += 8
6-15              not defined (a 12-bit vector is reserved): skipped and counted
==== ============ ===========================================================

Time: ``t = time_base + ((high << 12) | low) * 1000`` ns. The offset restarts at 0 with
every packet (``time_base`` is the packet's first sensor time), so no wrap is carried;
the current column, vector base and vector polarity do carry over between packets.
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import KInt, njit
from derain_ros.events.base import Buffers, Decoder, Plan, register_decoder

__all__ = ["LibcaerCmpDecoder"]

_S_X, _S_BASE_Y, _S_POL = range(3)


@njit
def _cmp_count(words: np.ndarray) -> KInt:
    """Upper bound of the events in ``words``: one pass, vectorised."""
    single = 0
    v8 = 0
    for i in range(words.shape[0]):
        c = words[i] >> 12
        single += c == 3
        v8 += c == 5
    return single + 8 * v8


@njit
def _cmp_kernel(words: np.ndarray, state: np.ndarray, time_base: KInt, width: KInt,
                height: KInt, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                counts: np.ndarray) -> None:
    n = words.shape[0]
    cap = t.shape[0]
    ex = state[_S_X]
    base_y = state[_S_BASE_Y]
    pol = state[_S_POL]
    high = np.int64(0)
    low = np.int64(0)
    now = time_base
    k = 0
    oob = 0
    unknown = 0
    back = 0
    last = counts[7]
    counts[:7] = 0
    for i in range(n):
        w = np.int64(words[np.uint64(i)])
        c = w >> 12
        v = w & 0xFFF
        if c == 3:
            ey = v & 0x7FF
            if ex < width and ey < height:
                t[np.uint64(k)] = now
                x[np.uint64(k)] = ex
                y[np.uint64(k)] = ey
                p[np.uint64(k)] = v >> 11
                k += 1
                back += now < last
                last = now
            else:
                oob += 1
        elif c <= 2:
            # ADDR_X, TIME_LOW and TIME_HIGH share one branch and pick with selects:
            # whether a time word follows an event is the sensor's whim, and a
            # mispredicted branch per event cost a third of the decoder's time
            ex = (v & 0x7FF) if c == 2 else ex
            low = v if c == 1 else low
            high = (v << 12) if c == 0 else high
            now = time_base + (high | low) * 1000
        elif c == 4:
            base_y = v & 0x7FF
            pol = v >> 11
        elif c == 5:
            if k + 8 > cap:
                counts[6] = 1  # no room: the capacity bound is wrong (the caller raises)
                return
            for b in range(8):
                if (v >> b) & 1:
                    ey = (base_y + b) & 0xFFFF
                    if ex < width and ey < height:
                        t[np.uint64(k)] = now
                        x[np.uint64(k)] = ex
                        y[np.uint64(k)] = ey
                        p[np.uint64(k)] = pol
                        k += 1
                        back += now < last
                        last = now
                    else:
                        oob += 1
            base_y = (base_y + 8) & 0xFFFF
        else:
            unknown += 1
    state[_S_X] = ex
    state[_S_BASE_Y] = base_y
    state[_S_POL] = pol
    counts[0] = k
    counts[2] = oob
    counts[4] = unknown
    counts[5] = back
    counts[7] = last


@register_decoder
class LibcaerCmpDecoder(Decoder):
    """Decoder of ``libcaer_cmp`` payloads (absolute sensor time from ``time_base``)."""

    encoding = "libcaer_cmp"
    word_dtype = "<u2"

    def _reset_state(self) -> None:
        self._state = np.zeros(3, np.int64)

    def _plan(self, words: np.ndarray) -> Plan:
        return Plan(_cmp_count(words) + 9)  # + room for the kernel's vector guard

    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers, plan: Plan) -> None:
        _cmp_kernel(words, self._state, np.int64(time_base), self.width, self.height,
                    out.t, out.x, out.y, out.p, counts)
