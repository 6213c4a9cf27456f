"""iniVation libcaer polarity events (``libcaer``): decoder and encoder.

Format (libcaer's ``polarity.h``, as ``libcaer_driver`` publishes it): 8 bytes per event,
little-endian: a 32-bit data word and a signed 32-bit µs time stamp. Data word: bit 0 the
valid mark, bit 1 the polarity, bits 2-16 y, bits 17-31 x.

Time: the stamp is the low 31 bits of the sensor's µs clock; the driver puts the rest in
``time_base``: ``time_base = t0 + overflows * 2^31 * 1000`` ns. So, as the
ros-event-camera decoder defines it, ``t = time_base + k * 2^31 * 1000 + stamp * 1000``
ns where ``k`` counts stamps smaller than the one before them *within the packet* (a
rollover inside a packet; across packets the driver has already moved ``time_base``).
Events with the valid bit clear or a negative stamp are dropped and counted
(``stats.invalid``): libcaer marks discarded events that way, and a negative stamp is
not a time.
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
from derain_ros.events.errors import (
    EncodingError,
    TimeBaseError,
    TimeOrderError,
    TruncatedPacketError,
)
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["ROLLOVER_US", "LibcaerDecoder", "LibcaerEncoder"]

#: the µs stamp wraps every 2^31 µs (about 35.8 minutes)
ROLLOVER_US = 1 << 31
_ROLLOVER_NS = ROLLOVER_US * 1000


@njit
def _libcaer_kernel(words: np.ndarray, time_base: KInt, width: KInt, height: KInt, t: np.ndarray,
                    x: np.ndarray, y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> None:
    n = words.shape[0] // 2
    high = time_base
    prev = np.int64(0)
    k = 0
    oob = 0
    invalid = 0
    back = 0
    last = counts[7]
    counts[:7] = 0
    for i in range(n):
        d = words[np.uint64(2 * i)]
        s = np.int64(np.int32(words[np.uint64(2 * i + 1)]))
        if s < 0:
            invalid += 1
            continue
        if s < prev:
            high += _ROLLOVER_NS
        prev = s
        if (d & 1) == 0:
            invalid += 1
            continue
        ex = (d >> 17) & 0x7FFF
        ey = (d >> 2) & 0x7FFF
        if ex < width and ey < height:
            now = high + s * 1000
            t[np.uint64(k)] = now
            x[np.uint64(k)] = ex
            y[np.uint64(k)] = ey
            p[np.uint64(k)] = (d >> 1) & 1
            k += 1
            if now < last:
                back += 1
            last = now
        else:
            oob += 1
    counts[0] = k
    counts[2] = oob
    counts[3] = invalid
    counts[5] = back
    counts[7] = last


@register_decoder
class LibcaerDecoder(Decoder):
    """Decoder of ``libcaer`` payloads (absolute sensor time from ``time_base``)."""

    encoding = "libcaer"
    word_dtype = "<u4"

    def _reset_state(self) -> None:
        pass  # the driver's time_base carries everything between packets

    def _check_words(self, words: np.ndarray, time_base: int) -> None:
        if words.shape[0] % 2:
            raise TruncatedPacketError("libcaer events are 8 bytes; the payload ends mid-event")
        if time_base >= (1 << 63) - 4 * _ROLLOVER_NS:
            raise TimeBaseError("libcaer time_base too close to 2^63 ns")

    def _plan(self, words: np.ndarray) -> Plan:
        return Plan(words.shape[0] // 2)  # 2 words per event

    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers, plan: Plan) -> None:
        _libcaer_kernel(words, np.int64(time_base), self.width, self.height, out.t,
                        out.x, out.y, out.p, counts)


@register_encoder
class LibcaerEncoder(Encoder):
    """Encoder of events into ``libcaer`` payloads, as ``libcaer_driver`` writes them.

    The sensor clock is ``t0 + us * 1000`` ns; ``t0`` is fixed by the first event as
    ``t_first - start_us * 1000`` (``start_us``, the sensor's µs counter at the first
    event, defaults to 0). Every event must then satisfy ``(t - t0) % 1000 == 0`` (whole
    µs), and times must be non-decreasing within a packet (the decoder reads a smaller
    stamp as a rollover). Each packet's ``time_base`` is ``t0`` plus the rollovers before
    its first event, times 2^31 µs; data words are ``x << 17 | y << 2 | p << 1 | 1``.
    """

    encoding = "libcaer"

    def __init__(self, width: int, height: int, *, start_us: int = 0) -> None:
        self.start_us = int(start_us)
        super().__init__(width, height)

    def _reset_state(self) -> None:
        self._t0: int | None = None

    def _encode(self, events: EventBatch, triggers: TriggerBatch) -> tuple[bytes, int]:
        if len(triggers):
            raise EncodingError("libcaer polarity packets carry no trigger events")
        if not len(events):
            return b"", self._t0 or 0
        if self.width > 0x8000 or self.height > 0x8000:
            raise EncodingError("libcaer addresses are 15 bits")
        if self._t0 is None:
            self._t0 = int(events.t[0]) - self.start_us * 1000
            if self._t0 < 0:
                raise EncodingError("start_us puts the sensor's zero before t = 0")
        us, rest = np.divmod(events.t - self._t0, 1000)
        if np.any(rest) or np.any(us < 0):
            raise EncodingError("libcaer stamps are whole µs after the stream's first event")
        if np.any(us[1:] < us[:-1]):
            raise TimeOrderError("libcaer needs non-decreasing times within a packet")
        overflows = int(us[0]) >> 31
        if (int(us[-1]) >> 31) - overflows > 1 or np.any(np.diff(us) >= ROLLOVER_US):
            raise EncodingError("a libcaer packet may span at most one rollover, with "
                                "consecutive events less than 2^31 µs apart")
        out = np.empty(2 * len(events), "<u4")
        out[0::2] = ((events.x.astype(np.uint32) << 17) | (events.y.astype(np.uint32) << 2)
                     | ((events.p.astype(np.uint32) & 1) << 1) | 1)
        out[1::2] = (us & (ROLLOVER_US - 1)).astype(np.uint32)
        return out.tobytes(), self._t0 + overflows * _ROLLOVER_NS
