"""``dv_ros2_msgs/EventArray`` <-> :class:`EventBatch` (the slow legacy per-event path).

The ROS edge unpacks an EventArray message into numpy arrays (x, y, ts.sec, ts.nanosec,
polarity; one Python object per event, about 1000x slower than a packed EventPacket)
and passes them here. ``t = sec * 10^9 + nanosec`` ns. Events outside ``width`` x
``height`` or with ``nanosec >= 10^9`` are dropped, counted in the returned
:class:`DvConversion` and logged (or raise with ``strict=True``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from derain_ros.events.errors import EventError, EventOutOfBoundsError
from derain_ros.records import EventBatch

__all__ = [
    "DvArrays",
    "DvConversion",
    "batch_to_dv_arrays",
    "dv_arrays_to_batch",
    "event_array_msg_to_batch",
]

_log = logging.getLogger(__name__)


class DvConversion(NamedTuple):
    """Converted events and how many were dropped (outside the sensor or bad stamps)."""

    events: EventBatch
    dropped: int


class DvArrays(NamedTuple):
    """The per-event fields of an EventArray as arrays (for building a message)."""

    x: np.ndarray
    y: np.ndarray
    sec: np.ndarray
    nanosec: np.ndarray
    polarity: np.ndarray


def dv_arrays_to_batch(x: np.ndarray, y: np.ndarray, sec: np.ndarray, nanosec: np.ndarray,
                       polarity: np.ndarray, width: int, height: int, *,
                       strict: bool = False) -> DvConversion:
    """Events of one EventArray (fields as arrays; ``width``/``height`` from the message)."""
    arrays = [np.asarray(a) for a in (x, y, sec, nanosec, polarity)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise EventError("EventArray fields must be 1-D arrays of one length, got shapes "
                         f"{[a.shape for a in arrays]}")
    ax, ay, asec, ansec, apol = arrays
    if width <= 0 or height <= 0:
        raise EventError(f"EventArray sensor size must be positive, got {width}x{height}")
    ax64 = ax.astype(np.int64)
    ay64 = ay.astype(np.int64)
    ansec64 = ansec.astype(np.int64)
    ok = (ax64 >= 0) & (ax64 < width) & (ay64 >= 0) & (ay64 < height)
    ok &= (ansec64 >= 0) & (ansec64 < 1_000_000_000)
    dropped = int(len(ok) - np.count_nonzero(ok))
    if dropped:
        if strict:
            raise EventOutOfBoundsError(
                f"{dropped} EventArray events outside {width}x{height} or with bad stamps")
        _log.warning("dropped %d of %d EventArray events (outside %dx%d or bad stamps)",
                     dropped, len(ok), width, height)
    t = asec.astype(np.int64)[ok] * 1_000_000_000 + ansec64[ok]
    batch = EventBatch(t, ax64[ok], ay64[ok], (apol[ok] != 0).astype(np.uint8),
                       int(width), int(height))
    return DvConversion(batch, dropped)


def event_array_msg_to_batch(msg: Any) -> EventBatch:
    """A ``dv_ros2_msgs/EventArray`` (rclpy or rosbags object) as an EventBatch.

    The one place an EventArray message becomes events (the node, bag reading and
    ``events-info`` all call it). Duck-typed on the message's fields, so it needs no ROS
    import. The slow legacy path: one Python object per event. Events outside the sensor
    or with bad stamps are dropped (logged) by :func:`dv_arrays_to_batch`.
    """
    evs = msg.events
    n = len(evs)
    x = np.fromiter((e.x for e in evs), np.int64, n)
    y = np.fromiter((e.y for e in evs), np.int64, n)
    sec = np.fromiter((e.ts.sec for e in evs), np.int64, n)
    nsec = np.fromiter((e.ts.nanosec for e in evs), np.int64, n)
    pol = np.fromiter((bool(e.polarity) for e in evs), np.uint8, n)
    return dv_arrays_to_batch(x, y, sec, nsec, pol, int(msg.width), int(msg.height)).events


def batch_to_dv_arrays(events: EventBatch) -> DvArrays:
    """The fields an EventArray needs for ``events`` (sec/nanosec split of ``t``)."""
    sec, nsec = np.divmod(events.t, 1_000_000_000)
    return DvArrays(events.x.copy(), events.y.copy(), sec.astype(np.int32),
                    nsec.astype(np.uint32), events.p.astype(bool))
