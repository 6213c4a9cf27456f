"""The synchroniser's settings: one frozen dataclass, validated once on construction.

Kept apart so the node can build and check a :class:`SyncConfig` from its parameters
(and training from its config file) without touching the synchroniser's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from derain_ros.errors import SyncError

__all__ = ["CLOCK_MODES", "SyncConfig"]

#: How frame stamps map into the event sensor clock (see :mod:`derain_ros.sync`).
CLOCK_MODES = ("sensor", "offset", "trigger")


@dataclass(frozen=True)
class SyncConfig:
    """Settings of :class:`~derain_ros.sync.FrameEventSynchronizer` (times in ns, sizes in bytes).

    Attributes:
        clock_mode: one of :data:`CLOCK_MODES`.
        max_buffer_bytes: cap on decoded events held (13 bytes an event); a packet that
            does not fit is dropped and counted. 64 MB is about 4.9 M events: one frame
            interval of heavy rain at 640x480 (rain multiplies a sensor's event rate).
        event_timeout_ns: how long a frame waits for events past its time.
        silence_timeout_ns: no packet for this long means the event topic is silent:
            frames pass at once, flagged ``events_missing``.
        max_pending_frames: frames waiting for events beyond this are cut early.
        reset_threshold_ns: time going backwards by more than this is a clock reset
            (less is a late or out-of-order message, dropped).
        first_window_ns: events kept before the first frame after a (re)start.
        offset_window: packets averaged for the host - sensor offset (``offset`` mode).
        trigger_tolerance_ns: how far a trigger edge may be from a frame's offset-mapped
            time (``trigger`` mode).
        trigger_channel: trigger id to use, or -1 for any.
        reorder_window: a ``seq`` behind the last by at most this is a late packet;
            further behind is a stream restart.
        resync_frames: after a clock reset, this many frames in a row that disagree with
            the new time line (dropped as ``frames_stale``) prove the frames right: the
            synchroniser re-founds the time line on them (``clock_resyncs``).
        resync_events_ns: the same for event packets: dropped ``packets_stale`` covering
            this much of their own sensor time re-found the time line on the events.
        silence_grace_ns: while the event topic is silent a frame still waits this long
            for a packet before it passes frames-only (the first packet after a silence
            often arrives just after its frame).
    """

    clock_mode: str = "sensor"
    max_buffer_bytes: int = 64_000_000
    event_timeout_ns: int = 100_000_000
    silence_timeout_ns: int = 500_000_000
    max_pending_frames: int = 8
    reset_threshold_ns: int = 50_000_000
    first_window_ns: int = 100_000_000
    offset_window: int = 200
    trigger_tolerance_ns: int = 25_000_000
    trigger_channel: int = -1
    reorder_window: int = 1000
    resync_frames: int = 3
    resync_events_ns: int = 100_000_000
    silence_grace_ns: int = 20_000_000

    def __post_init__(self) -> None:
        problems = []
        if self.clock_mode not in CLOCK_MODES:
            problems.append(f"clock_mode must be one of {CLOCK_MODES}, got {self.clock_mode!r}")
        for name in ("max_buffer_bytes", "event_timeout_ns", "silence_timeout_ns",
                     "max_pending_frames", "reset_threshold_ns", "first_window_ns",
                     "offset_window", "trigger_tolerance_ns", "reorder_window",
                     "resync_frames", "resync_events_ns"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if int(self.silence_grace_ns) < 0:
            problems.append(f"silence_grace_ns must be >= 0, got {self.silence_grace_ns}")
        if problems:
            raise SyncError("invalid synchroniser settings: " + "; ".join(problems))
