"""The decoder and encoder interfaces, their registry, and the two factories.

One stateful decoder per encoding of ``event_camera_msgs/EventPacket`` behind one small
interface, picked from a mapping by the packet's ``encoding`` string (as the
ros-event-camera codecs do), so that the node, bag replay and training decode through the
same code. Decoders take raw payload bytes, never ROS messages.

Units: event times ``t`` are int64 nanoseconds of sensor time; ``time_base`` is the
packet's ``time_base`` field as published (its meaning depends on the encoding, see each
decoder). Coordinates are pixels, polarity is 1 for ON and 0 for OFF.

Bad input never crashes a decoder: a payload whose size is not a whole number of words
raises :class:`TruncatedPacketError`, one above the cap :class:`PacketTooLargeError`;
events outside ``width`` x ``height`` are dropped and counted in :attr:`Decoder.stats`
(or raise :class:`EventOutOfBoundsError` with ``strict=True``); words with codes the
format does not define are skipped and counted.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar, NamedTuple, TypeVar

import numpy as np

from derain_ros.events.errors import (
    EncodingError,
    EventOutOfBoundsError,
    PacketTooLargeError,
    TimeBaseError,
    TruncatedPacketError,
    UnknownEncodingError,
)
from derain_ros.records import EventBatch, TriggerBatch

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "Buffers",
    "Decoded",
    "Decoder",
    "DecoderStats",
    "Encoder",
    "Payload",
    "Plan",
    "decoder_encodings",
    "encoder_encodings",
    "make_decoder",
    "make_encoder",
    "register_decoder",
    "register_encoder",
]

_log = logging.getLogger(__name__)

#: Default cap on one packet's payload, in bytes (64 MiB; drivers send kB to a few MB).
DEFAULT_MAX_PACKET_BYTES = 64 * 1024 * 1024
_INT64_MAX = (1 << 63) - 1

Payload = bytes | bytearray | memoryview | np.ndarray
_ITEMSIZE = {"<u2": 2, "<u4": 4, "<u8": 8}


class Decoded(NamedTuple):
    """What decoding gives: contrast-detection events and external trigger events."""

    events: EventBatch
    triggers: TriggerBatch


@dataclass
class DecoderStats:
    """Running counters of one decoder (since construction or :meth:`Decoder.reset`).

    ``out_of_bounds``: events dropped for lying outside ``width`` x ``height``.
    ``invalid``: events dropped because the format marks them invalid (libcaer's valid
    bit clear, or a negative µs stamp). ``unknown_words``: words whose code the format
    does not define, skipped. ``backwards``: events earlier than the event before them
    (kept; a count of time going backwards, e.g. after a sensor reset).
    """

    packets: int = 0
    bytes: int = 0
    events: int = 0
    triggers: int = 0
    out_of_bounds: int = 0
    invalid: int = 0
    unknown_words: int = 0
    backwards: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and JSON)."""
        return asdict(self)


def as_words(payload: Payload, dtype: str, max_bytes: int) -> np.ndarray:
    """View ``payload`` as little-endian words of ``dtype`` without copying.

    Raises :class:`PacketTooLargeError` above ``max_bytes`` and
    :class:`TruncatedPacketError` when the byte count is not a whole number of words.
    """
    if type(payload) is bytes:  # the common case, fast: no copy, one view
        n = len(payload)
        size = _ITEMSIZE[dtype]
        if n <= max_bytes and not n % size:
            return np.frombuffer(payload, dtype)
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8 or payload.ndim != 1:
            raise TruncatedPacketError(
                f"payload arrays must be 1-D uint8, got {payload.dtype} {payload.shape}")
        buf = np.ascontiguousarray(payload)
    elif isinstance(payload, bytes | bytearray | memoryview):
        buf = np.frombuffer(payload, np.uint8)
    else:
        raise TruncatedPacketError(f"payload must be bytes-like, got {type(payload).__name__}")
    n = buf.nbytes
    if n > max_bytes:
        raise PacketTooLargeError(f"packet of {n} bytes exceeds the cap of {max_bytes} bytes")
    size = np.dtype(dtype).itemsize
    if n % size:
        raise TruncatedPacketError(
            f"packet of {n} bytes is not a whole number of {size}-byte words "
            f"({n % size} trailing bytes)")
    return buf.view(dtype)


def check_time_base(time_base: int) -> int:
    """``time_base`` as a Python int in [0, 2^63) ns, else :class:`TimeBaseError`."""
    if type(time_base) is int and 0 <= time_base <= _INT64_MAX:
        return time_base
    try:
        tb = int(time_base)
    except (TypeError, ValueError) as err:
        raise TimeBaseError(f"time_base must be an integer, got {time_base!r}") from err
    if not 0 <= tb <= _INT64_MAX:
        raise TimeBaseError(f"time_base {tb} ns is outside [0, 2^63)")
    return tb


class Decoder(ABC):
    """Stateful decoder of one event stream in one encoding.

    Feed the packets of a stream in order to :meth:`decode`; the decoder keeps what the
    format carries from packet to packet (evt3 time-high and its 2^24 µs wrap, the last
    addresses). Call :meth:`reset` when the stream restarts (a new bag, time jumping
    backwards, a driver restart).
    """

    #: the ``encoding`` string of EventPacket this class decodes
    encoding: ClassVar[str]
    #: payload word: numpy dtype string (little-endian)
    word_dtype: ClassVar[str]

    def __init__(self, width: int, height: int, *,
                 max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES, strict: bool = False) -> None:
        if not (0 < int(width) <= 0xFFFF and 0 < int(height) <= 0xFFFF):
            raise EncodingError(f"sensor size must be within 1..65535 px, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self.max_packet_bytes = int(max_packet_bytes)
        self.strict = bool(strict)
        self.stats = DecoderStats()
        self._last_t = NO_TIME
        self._state = np.zeros(1, np.int64)
        self._counts = np.zeros(8, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the stream state (and the counters): the next packet starts a stream."""
        self.stats = DecoderStats()
        self._last_t = NO_TIME
        self._reset_state()

    def decode(self, payload: Payload, time_base: int) -> Decoded:
        """Decode one packet's payload; ``time_base`` is the packet's field (ns).

        Returns the packet's events (t in ns, in stream order) and trigger events. Raises
        :class:`TruncatedPacketError` / :class:`PacketTooLargeError` before touching the
        stream state, so a bad packet can be skipped and decoding continue.
        """
        words = as_words(payload, self.word_dtype, self.max_packet_bytes)
        tb = check_time_base(time_base)
        self._check_words(words, tb)
        plan = self._plan(words)
        out = Buffers.allocate(plan.events, plan.triggers)
        c = self._counts
        c[_C_LAST_T] = self._last_t
        self._kernel(words, tb, c, out, plan)
        if c[_C_MORE]:  # the capacity bound is a format's invariant: this is a bug
            raise RuntimeError(f"{self.encoding} decoder: output capacity {plan.events} too small")
        k, m, oob, invalid, unknown, back, _, self._last_t = c.tolist()
        st = self.stats
        st.packets += 1
        st.bytes += words.nbytes
        st.events += k
        st.triggers += m
        st.out_of_bounds += oob
        st.invalid += invalid
        st.unknown_words += unknown
        st.backwards += back
        if oob and self.strict:
            raise EventOutOfBoundsError(
                f"{oob} {self.encoding} events outside the {self.width}x{self.height} sensor")
        events = EventBatch._unchecked(_trim(out.t, k), _trim(out.x, k), _trim(out.y, k),
                                       _trim(out.p, k), self.width, self.height)
        if m:
            triggers = TriggerBatch(_trim(out.tt, m), _trim(out.te, m), _trim(out.ti, m))
        else:
            triggers = _NO_TRIGGERS
        return Decoded(events, triggers)

    def _plan(self, words: np.ndarray) -> Plan:
        """What decoding ``words`` needs (see :class:`Plan`). Formats with at most one
        event per word keep this default; formats with vector words count them."""
        return Plan(words.shape[0] + 1)

    def _check_words(self, words: np.ndarray, time_base: int) -> None:
        """Format-specific checks before decoding (raise an EventError subclass)."""
        del words, time_base  # nothing to check for most formats

    @abstractmethod
    def _reset_state(self) -> None:
        """Reset the format's carried state (``self._state``, an int64 array)."""

    @abstractmethod
    def _kernel(self, words: np.ndarray, time_base: int, counts: np.ndarray,
                out: Buffers, plan: Plan) -> None:
        """Decode ``words`` into ``out``, filling ``counts`` (see ``_C_*``)."""


class Plan(NamedTuple):
    """What one packet needs before its kernel runs: output sizes, each at least what the
    kernel may write, and whatever a format's first pass over the words found for its
    kernel (``scan``; evt3's block table), so no pass is made twice."""

    events: int
    triggers: int = 0
    scan: object = None


class Buffers(NamedTuple):
    """The fresh arrays one packet decodes into; the returned batches are their heads.

    Why fresh, not reused: the events are handed out without a copy, so a decoder
    writes straight into the arrays it returns (a copy of every event cost as much as
    decoding it). Sizes come from :meth:`Decoder._plan`.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    tt: np.ndarray
    te: np.ndarray
    ti: np.ndarray

    @classmethod
    def allocate(cls, n_events: int, n_triggers: int) -> Buffers:
        """Uninitialised buffers for ``n_events`` events and ``n_triggers`` triggers
        (with no triggers, shared empty arrays: kernels write none there)."""
        if n_triggers:
            tt, te, ti = (np.empty(n_triggers, np.int64), np.empty(n_triggers, np.uint8),
                          np.empty(n_triggers, np.uint8))
        else:
            tt, te, ti = _NO_TRIGGER_BUFFERS
        return cls(np.empty(n_events, np.int64), np.empty(n_events, np.uint16),
                   np.empty(n_events, np.uint16), np.empty(n_events, np.uint8), tt, te, ti)


_NO_TRIGGER_BUFFERS = (np.empty(0, np.int64), np.empty(0, np.uint8), np.empty(0, np.uint8))


def _trim(a: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` items of a buffer: a view when that is most of it, else a copy
    (so a packet of mostly dropped events does not pin its whole buffer)."""
    return a[:k] if 2 * k >= a.shape[0] else a[:k].copy()


# slots of the counts array a kernel fills (and _C_LAST_T it also reads)
_C_EVENTS, _C_TRIGGERS, _C_OOB, _C_INVALID, _C_UNKNOWN, _C_BACK, _C_MORE, _C_LAST_T = range(8)
#: "no previous event" for the backwards counter
NO_TIME = -(1 << 63)
_NO_TRIGGERS = TriggerBatch.empty()


class Encoder(ABC):
    """Stateful encoder of one event stream into one encoding's packet payloads.

    Encode the packets of a stream in order; decoding the payloads in the same order
    with a fresh decoder returns the events exactly (each format's docstring says which
    events it can represent, and :class:`EncodingError` says when an event cannot be).
    """

    encoding: ClassVar[str]

    def __init__(self, width: int, height: int) -> None:
        self.width = int(width)
        self.height = int(height)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the next packet is the first one)."""
        self._reset_state()

    def encode(self, events: EventBatch,
               triggers: TriggerBatch | None = None) -> tuple[bytes, int]:
        """One packet: ``(payload, time_base)`` for ``events`` (and ``triggers``)."""
        if (events.width, events.height) != (self.width, self.height):
            raise EncodingError(f"batch is {events.width}x{events.height}, encoder is "
                                f"{self.width}x{self.height}")
        if len(events) and (int(events.x.max()) >= self.width
                            or int(events.y.max()) >= self.height):
            raise EventOutOfBoundsError("events outside the sensor cannot be encoded")
        if len(events) and int(events.t.min()) < 0:
            raise EncodingError("event times must be >= 0 ns")
        if triggers is None:
            triggers = TriggerBatch.empty()
        return self._encode(events, triggers)

    @abstractmethod
    def _reset_state(self) -> None:
        """Reset the format's carried state."""

    @abstractmethod
    def _encode(self, events: EventBatch, triggers: TriggerBatch) -> tuple[bytes, int]:
        """Encode one validated packet."""


_DECODERS: dict[str, type[Decoder]] = {}
_ENCODERS: dict[str, type[Encoder]] = {}
D = TypeVar("D", bound=type[Decoder])
E = TypeVar("E", bound=type[Encoder])
_T = TypeVar("_T")


def register_decoder(cls: D) -> D:
    """Class decorator: make ``cls`` the decoder of ``cls.encoding``."""
    _DECODERS[cls.encoding] = cls
    return cls


def register_encoder(cls: E) -> E:
    """Class decorator: make ``cls`` the encoder of ``cls.encoding``."""
    _ENCODERS[cls.encoding] = cls
    return cls


def decoder_encodings() -> tuple[str, ...]:
    """The encodings :func:`make_decoder` knows."""
    return tuple(sorted(_DECODERS))


def encoder_encodings() -> tuple[str, ...]:
    """The encodings :func:`make_encoder` knows."""
    return tuple(sorted(_ENCODERS))


def _lookup(table: Mapping[str, _T], encoding: str) -> _T:
    if not isinstance(encoding, str) or encoding not in table:
        raise UnknownEncodingError(str(encoding) if encoding is not None else "", table)
    return table[encoding]


def make_decoder(encoding: str, width: int, height: int, *,
                 max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
                 strict: bool = False) -> Decoder:
    """A fresh decoder for ``encoding`` (an EventPacket ``encoding`` string).

    ``width``/``height`` in px bound the coordinates (events outside are dropped and
    counted, or raise with ``strict``); ``max_packet_bytes`` caps one payload. Raises
    :class:`UnknownEncodingError`, naming the known encodings, for anything else.
    """
    cls = _lookup(_DECODERS, encoding)
    return cls(width, height, max_packet_bytes=max_packet_bytes, strict=strict)


def make_encoder(encoding: str, width: int, height: int) -> Encoder:
    """A fresh encoder for ``encoding`` producing driver-compatible payloads."""
    cls = _lookup(_ENCODERS, encoding)
    return cls(width, height)
