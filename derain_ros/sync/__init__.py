"""Frames + an event stream in, one :class:`FrameWindow` per frame out, in sensor time.

The one synchroniser used live (the node) and on bags (training, evaluation). ROS-free:
it takes packet payloads, image arrays and stamps, never messages (message *fields* are
read duck-typed in :mod:`~derain_ros.sync.messages`).

Definitions (units: ns):

- A frame's *time* ``t_ns`` is its time in the event sensor's clock, found by the clock
  mode (:data:`CLOCK_MODES`; :mod:`~derain_ros.sync.clock`):

  * ``sensor``: the frame's stamp already is sensor time (a DAVIS: frames and events
    share one clock, frames stamped at mid-exposure);
  * ``offset``: a separate frame camera stamped in host time. Event packets give pairs
    (``header.stamp`` = host arrival of the first event, first event's sensor time);
    the offset host - sensor is their moving average over the last
    ``offset_window`` packets, and ``t_ns = stamp - offset``;
  * ``trigger``: the rig wires the camera's exposure signal to the event sensor's
    trigger input; a frame takes the rising trigger edge nearest its offset-mapped
    time (within ``trigger_tolerance_ns``), later than the previous frame's.

- The window of frame ``i`` holds the events with ``t_prev < t <= t_i`` (``t_prev``:
  the previous frame's time), the same half-open interval ``(t0, t1]`` as the voxel
  grids of :mod:`derain_ros.events.voxel`.
- A window is cut when an event later than ``t_i`` has arrived (all earlier events
  are in, packets being in order), or on a timeout: ``event_timeout_ns`` after the
  frame arrived (``events_incomplete``), or ``silence_grace_ns`` after it arrived while
  the event topic is silent (no packet for ``silence_timeout_ns``: ``events_missing``,
  the frames-only fallback).

Events are buffered and cut by :class:`derain_ros.events.EventStream` ("decode until"):
window ``(t_prev, t]`` is ``pop_until(t + 1)`` (:mod:`~derain_ros.sync.buffer`).

Faults handled and counted (:class:`SyncCounters`; :mod:`~derain_ros.sync.policy`):
duplicate packets (same ``seq`` and stamp), late packets (``seq`` behind, dropped:
decoders are stateful), gaps in ``seq``, malformed packets, a full buffer (packet
dropped), events behind an already cut window, duplicate / out-of-order frames, and clock
resets (time jumping backwards by more than ``reset_threshold_ns``, e.g. a bag played in
a loop or a driver restart): state is reset and stragglers of the old time line are
dropped, boundedly: when they keep coming the reset was wrong and the time line is
re-founded on them (a resync). The rules: ``docs/recovery.md``.

Modules, one job each: ``config`` (settings), ``records`` (what comes out), ``messages``
(message fields in), ``clock`` (clock alignment), ``buffer`` (the event buffer),
``policy`` (faults and counters), ``synchronizer`` (window cutting), ``bag`` (offline).
"""

from __future__ import annotations

from derain_ros.sync.bag import BAG_BUFFER_BYTES, windows_from_bag
from derain_ros.sync.config import CLOCK_MODES, SyncConfig
from derain_ros.sync.messages import event_array_msg_to_batch, image_from_msg, stamp_to_ns
from derain_ros.sync.policy import SyncCounters
from derain_ros.sync.records import FrameImage, FrameWindow
from derain_ros.sync.synchronizer import FrameEventSynchronizer

__all__ = [
    "BAG_BUFFER_BYTES",
    "CLOCK_MODES",
    "FrameEventSynchronizer",
    "FrameImage",
    "FrameWindow",
    "SyncConfig",
    "SyncCounters",
    "event_array_msg_to_batch",
    "image_from_msg",
    "stamp_to_ns",
    "windows_from_bag",
]
