"""What the synchroniser hands out (:class:`FrameWindow`, :class:`FrameImage`) and the one
record it keeps per waiting frame (:class:`PendingFrame`).

Plain data, so the engine, training and evaluation can take windows without pulling in
the synchroniser's machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from derain_ros.images import to_network
from derain_ros.records import EventBatch, TriggerBatch

__all__ = ["FrameImage", "FrameWindow", "PendingFrame"]


@dataclass(frozen=True, slots=True, eq=False)
class FrameImage:
    """An image in its encoding's own layout (H x W or H x W x C, uint8/uint16)."""

    array: np.ndarray
    encoding: str

    @property
    def height(self) -> int:
        """Rows (px)."""
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        """Columns (px)."""
        return int(self.array.shape[1])

    def to_network(self) -> np.ndarray:
        """Float32 H x W x C in [0, 1] (RGB, or 1 channel for mono): the network's view."""
        return to_network(self.array, self.encoding)


@dataclass(frozen=True, slots=True, eq=False)
class FrameWindow:
    """One frame and the events between the previous frame and it.

    Attributes:
        index: running number of windows since the synchroniser started (0-based).
        t_ns: the frame's time in the event sensor clock (ns).
        t_prev_ns: the previous frame's time (ns), or None for the first frame after a
            start or a clock reset (its events are those of the ``first_window_ns``
            before ``t_ns``).
        image: the frame as received (a copy, safe to keep).
        events: events with ``t_prev_ns < t <= t_ns``, time-ordered.
        triggers: trigger events of the same interval.
        stamp_ns: the frame message's ``header.stamp`` (ns), to stamp outputs with.
        frame_id: the frame message's ``header.frame_id``.
        events_missing: no event data covers this window (event topic silent or
            absent, or nothing arrived before the timeout): use the frames-only fallback.
        events_incomplete: the window was cut before all its events could have arrived
            (timeout, a dropped or lost packet inside it).
        time_estimated: trigger mode found no trigger edge; the time is offset-mapped.
        extras: other images with the frame's stamp (bags: ground truth), by topic.
    """

    index: int
    t_ns: int
    t_prev_ns: int | None
    image: FrameImage
    events: EventBatch
    triggers: TriggerBatch
    stamp_ns: int
    frame_id: str = ""
    events_missing: bool = False
    events_incomplete: bool = False
    time_estimated: bool = False
    extras: Mapping[str, FrameImage] = field(default_factory=dict)

    @property
    def t0_ns(self) -> int:
        """Start of the window (ns): the previous frame's time, or an estimate for the first."""
        if self.t_prev_ns is not None:
            return self.t_prev_ns
        if len(self.events):
            return min(int(self.events.t[0]) - 1, self.t_ns - 1)
        return self.t_ns - 1

    @property
    def events_ok(self) -> bool:
        """True when the window's events are complete."""
        return not (self.events_missing or self.events_incomplete)


@dataclass
class PendingFrame:
    """A frame waiting for its events (internal to the synchroniser).

    ``approx_ns``: its offset-mapped time (None until an offset is known); ``t_ns``: its
    final sensor time (None until resolved: in trigger mode, the matched edge).
    ``arrival_ns`` is the synchroniser's clock when it arrived, for the timeouts.
    """

    image: FrameImage
    stamp_ns: int
    frame_id: str
    arrival_ns: int
    t_ns: int | None
    approx_ns: int | None
    time_estimated: bool = False
