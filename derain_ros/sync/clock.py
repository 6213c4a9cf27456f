"""Clock alignment: a frame's stamp -> its time in the event sensor's clock (ns).

Frames and events come from different clocks unless the camera is a DAVIS. The windows
must be cut in one clock, the event sensor's, so every frame is mapped into it first;
how depends on the clock mode (:data:`~derain_ros.sync.config.CLOCK_MODES`):

- ``sensor``: the stamp already is sensor time;
- ``offset``: ``t = stamp - offset``, the offset host - sensor being the moving median
  over the last ``offset_window`` packets of (``header.stamp``, first event's time); a
  median, so that one packet with garbage times (an hour off) cannot move it;
- ``trigger``: the rising trigger edge nearest the offset-mapped time (within
  ``trigger_tolerance_ns``) and later than the previous frame's edge.

A frame that cannot be mapped in time (no packet yet, no edge before the timeout) keeps
its best estimate and is flagged ``time_estimated``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from derain_ros.sync.buffer import EventBuffer
from derain_ros.sync.config import SyncConfig
from derain_ros.sync.records import PendingFrame

__all__ = ["ClockAlignment"]


class ClockAlignment:
    """The host - sensor offset estimate and the trigger edge matching of one stream."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self._offsets: collections.deque[int] = collections.deque(maxlen=config.offset_window)
        self._last_trigger_t: int | None = None

    @property
    def offset_ns(self) -> int | None:
        """Current host - sensor clock offset estimate (ns), None before any packet."""
        return round(float(np.median(np.fromiter(self._offsets, np.int64)))) if self._offsets \
            else None

    def observe(self, stamp_ns: int, first_event_t: int) -> None:
        """A packet stamped ``stamp_ns`` (host) whose first event is at ``first_event_t``."""
        self._offsets.append(int(stamp_ns) - first_event_t)

    def frame_times(self, stamp_ns: int,
                    sensor_time_ns: int | None = None) -> tuple[int | None, int | None]:
        """``(t, approx)`` of a frame on arrival: its sensor time, if known yet, and its
        offset-mapped time, if an offset is known yet (ns). ``sensor_time_ns`` overrides
        the stamp in ``sensor`` mode."""
        mode = self.config.clock_mode
        if mode == "sensor":
            t = int(sensor_time_ns if sensor_time_ns is not None else stamp_ns)
            return t, t
        # before the first packet there is no offset: the frame waits for one
        off = self.offset_ns
        approx = None if off is None else int(stamp_ns) - off
        return (approx if mode == "offset" else None), approx

    def resolve(self, frame: PendingFrame, now: int, force: bool, buffer: EventBuffer,
                silent: Callable[[], bool]) -> bool:
        """``offset``/``trigger`` mode: give ``frame`` its sensor time; False while waiting.

        Waits for the first offset estimate (an event packet), then, in trigger mode, for
        the trigger edge. Without either before the timeout (or with the event topic
        ``silent()``) the frame keeps its stamp as time, flagged ``time_estimated``.
        """
        cfg = self.config
        if frame.approx_ns is None:
            off = self.offset_ns
            if off is not None:
                frame.approx_ns = frame.stamp_ns - off
            elif force or silent() or now - frame.arrival_ns >= cfg.event_timeout_ns:
                frame.approx_ns, frame.time_estimated = frame.stamp_ns, True
            else:
                return False
        if cfg.clock_mode == "offset":
            frame.t_ns = frame.approx_ns
            return True
        if self._resolve_trigger(frame, now, buffer, silent):
            return True
        if force:
            frame.t_ns, frame.time_estimated = frame.approx_ns, True
        return force

    def _resolve_trigger(self, frame: PendingFrame, now: int, buffer: EventBuffer,
                         silent: Callable[[], bool]) -> bool:
        """Trigger mode: give ``frame`` its trigger edge's time; False while waiting."""
        cfg = self.config
        assert frame.approx_ns is not None  # (resolve set it before calling)
        approx = int(frame.approx_ns)
        edges = buffer.rising_edges(cfg.trigger_channel)
        if self._last_trigger_t is not None:
            edges = edges[edges > self._last_trigger_t]
        near = edges[np.abs(edges - approx) <= cfg.trigger_tolerance_ns]
        if len(near):
            frame.t_ns = int(near[np.argmin(np.abs(near - approx))])
            self._last_trigger_t = frame.t_ns
            return True
        wm = buffer.newest_t_ns
        if (wm is not None and wm > approx + cfg.trigger_tolerance_ns) or (
                now - frame.arrival_ns >= cfg.event_timeout_ns) or silent():
            frame.t_ns = approx
            frame.time_estimated = True
            return True
        return False

    def reset(self) -> None:
        """Forget the offset estimate and the last matched edge (a new time line)."""
        self._offsets.clear()
        self._last_trigger_t = None
