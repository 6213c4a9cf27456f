"""Errors of the events layer: every one derives from :class:`derain_ros.errors.EventError`.

A caller (the node, a CLI) can catch ``EventError`` for any bad event input, or a
subclass below to react to one kind of problem: a packet cut short, a packet too big for
the configured cap, an encoding nobody knows, coordinates outside the sensor.
"""

from __future__ import annotations

from collections.abc import Iterable

from derain_ros.errors import EventError

__all__ = [
    "EncodingError",
    "EventError",
    "EventOutOfBoundsError",
    "PacketTooLargeError",
    "TimeBaseError",
    "TimeOrderError",
    "TruncatedPacketError",
    "UnknownEncodingError",
]


class UnknownEncodingError(EventError):
    """The ``encoding`` string of a packet names no decoder or encoder we have.

    ``known`` lists the encodings that are supported, and the message names them.
    """

    def __init__(self, encoding: str, known: Iterable[str]) -> None:
        self.encoding = encoding
        self.known = tuple(sorted(known))
        shown = repr(encoding) if encoding else "an empty string"
        super().__init__(
            f"unknown event encoding {shown}; known encodings: {', '.join(self.known)}"
        )


class TruncatedPacketError(EventError):
    """A payload's byte count is not a whole number of the encoding's words."""


class PacketTooLargeError(EventError):
    """A payload is larger than the configured ``max_packet_bytes`` cap."""


class EventOutOfBoundsError(EventError):
    """Events lie outside ``width`` x ``height`` (raised in strict mode, else counted)."""


class TimeBaseError(EventError):
    """A ``time_base`` that cannot be a sensor time (negative, or past int64 ns)."""


class TimeOrderError(EventError):
    """An encoder was given events whose times its format cannot represent in that order."""


class EncodingError(EventError):
    """Events cannot be represented in an encoding (time resolution, range, field widths)."""
