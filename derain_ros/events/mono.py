"""The deprecated ``mono`` encoding: decoder and encoder.

Format (ros-event-camera, deprecated upstream but still found in old bags): one
little-endian 64-bit word per event: bit 63 polarity, bits 48-62 y (15 bits), bits
32-47 x (16 bits), bits 0-31 the event's offset in ns from ``time_base``:
``t = time_base + offset`` ns. No state is carried between packets.
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import KInt, njit
from derain_ros.events.base import (
    Buffers,
    Decoder,
    Encoder,
    Plan,
    register_decoder,
    register_encoder,
)
from derain_ros.events.errors import EncodingError, TimeBaseError
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["MonoDecoder", "MonoEncoder"]


@njit
def _mono_kernel(words: np.ndarray, time_base: KInt, width: KInt, height: KInt, t: np.ndarray,
                 x: np.ndarray, y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> None:
    n = words.shape[0]
    k = 0
    oob = 0
    back = 0
    last = counts[7]
    counts[:7] = 0
    for i in range(n):
        w = words[np.uint64(i)]
        ex = (w >> 32) & 0xFFFF
        ey = (w >> 48) & 0x7FFF
        if ex < width and ey < height:
            now = time_base + np.int64(w & 0xFFFFFFFF)
            t[np.uint64(k)] = now
            x[np.uint64(k)] = ex
            y[np.uint64(k)] = ey
            p[np.uint64(k)] = w >> 63
            k += 1
            if now < last:
                back += 1
            last = now
        else:
            oob += 1
    counts[0] = k
    counts[2] = oob
    counts[5] = back
    counts[7] = last


@register_decoder
class MonoDecoder(Decoder):
    """Decoder of ``mono`` payloads."""

    encoding = "mono"
    word_dtype = "<u8"

    def _reset_state(self) -> None:
        pass

    def _check_words(self, words: np.ndarray, time_base: int) -> None:
        if time_base > (1 << 63) - 1 - 0xFFFFFFFF:
            raise TimeBaseError("mono time_base too close to 2^63 ns")

    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers, plan: Plan) -> None:
        _mono_kernel(words, np.int64(time_base), self.width, self.height, out.t, out.x,
                     out.y, out.p, counts)


@register_encoder
class MonoEncoder(Encoder):
    """Encoder of events into ``mono`` payloads.

    ``time_base`` of a packet is its earliest event time; every event must lie less than
    2^32 ns (about 4.29 s) after it. Any ns time and any order within that span is kept.
    """

    encoding = "mono"

    def _reset_state(self) -> None:
        pass

    def _encode(self, events: EventBatch, triggers: TriggerBatch) -> tuple[bytes, int]:
        if len(triggers):
            raise EncodingError("mono packets carry no trigger events")
        if not len(events):
            return b"", 0
        if self.width > 0x10000 or self.height > 0x8000:
            raise EncodingError("mono addresses are 16 bits (x) and 15 bits (y)")
        base = int(events.t.min())
        off = events.t - base
        if int(off.max()) > 0xFFFFFFFF:
            raise EncodingError("a mono packet spans at most 2^32 ns after its first event")
        words = (off.astype(np.uint64) | (events.x.astype(np.uint64) << np.uint64(32))
                 | (events.y.astype(np.uint64) << np.uint64(48))
                 | ((events.p.astype(np.uint64) & np.uint64(1)) << np.uint64(63)))
        return words.astype("<u8").tobytes(), base
