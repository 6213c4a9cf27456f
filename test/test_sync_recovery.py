"""Field faults on the synchroniser (ROS-free): each fault, then normal traffic, and the
windows recover within a bounded number of frames; the frame counters always add up.

The node-level twins of these tests (a real node over DDS) are in test_node_field.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from derain_ros.events import Decoded, make_encoder
from derain_ros.records import EventBatch, TriggerBatch
from derain_ros.sync import FrameEventSynchronizer, SyncConfig
from derain_ros.sync.buffer import EventBuffer
from derain_ros.sync.policy import SyncCounters

W, H = 64, 48
MS = 1_000_000
HOUR = 3600 * 1000 * MS
T0 = 1_700_000_000_000_000_000


class Live:
    """A DAVIS in sensor time with a fake monotonic clock: packets, then the frame."""

    def __init__(self, period_ns: int = 33 * MS, stamp_offset: int = 0,
                 **config: object) -> None:
        self.now = 1
        self.stamp_offset = stamp_offset  # host - sensor (offset mode)
        self.sync = FrameEventSynchronizer(SyncConfig(**config), clock=lambda: self.now)
        self.enc = make_encoder("libcaer", W, H)
        self.period = period_ns
        self.t = T0
        self.seq = 0
        self.rng = np.random.default_rng(0)
        self.windows: list = []

    def batch(self, t0: int, t1: int, n: int = 100) -> EventBatch:
        t = np.sort(self.rng.integers(t0 // 1000, t1 // 1000, n)) * 1000
        return EventBatch(t, self.rng.integers(0, W, n), self.rng.integers(0, H, n),
                          self.rng.integers(0, 2, n), W, H)

    def packet(self, t0: int, t1: int, n: int = 100, garbage: bool = False) -> None:
        batch = self.batch(t0, t1, n)
        # a garbage packet: its own time base (an encoder of its own)
        payload, tb = (make_encoder("libcaer", W, H) if garbage else self.enc).encode(batch)
        self.seq += 1
        stamp = (self.t if garbage else int(batch.t[0])) + self.stamp_offset  # host arrival
        self.windows += self.sync.add_events(payload, tb, "libcaer", W, H, stamp, self.seq)

    def frame(self, t: int) -> None:
        self.windows += self.sync.add_frame(np.zeros((H, W), np.uint8), "mono8",
                                            t + self.stamp_offset, "cam")

    def step(self, frames: int = 1, events: bool = True) -> list[int]:
        stamps = []
        for _ in range(frames):
            t0, t1 = self.t, self.t + self.period
            if events:
                edges = np.linspace(t0, t1 + 2 * MS, 4).astype(np.int64)
                for a, b in itertools.pairwise(edges):
                    self.packet(int(a), int(b))
            self.frame(t1)
            self.t = t1
            stamps.append(t1)
            self.now += self.period
            self.windows += self.sync.poll()
        return stamps

    def out(self, stamps: list[int]) -> list:
        by = {w.stamp_ns - self.stamp_offset: w for w in self.windows}
        return [by.get(s) for s in stamps]

    def accounted(self) -> bool:
        c = self.sync.counters
        return (c.frames_in == c.windows_out + c.frames_dropped + self.sync.pending_frames
                and c.windows_out == len(self.windows))


def recovered(live: Live, frames: int = 6, within: int = 3) -> None:
    """Normal traffic after the fault: from frame ``within`` on, every window has events."""
    stamps = live.step(frames)
    live.step(1)  # its packets complete the last frame
    got = live.out(stamps)
    assert all(w is not None for w in got[within:]), [w is not None for w in got]
    assert all(w.events_ok and len(w.events) for w in got[within:]), [
        (w.events_ok, len(w.events)) if w else None for w in got]
    assert live.accounted()


@pytest.mark.parametrize("jump", [HOUR, -HOUR], ids=["hour_ahead", "hour_behind"])
def test_one_packet_with_garbage_time_stamps_then_normal_traffic(jump: int) -> None:
    live = Live()
    live.step(4)
    live.packet(live.t + jump, live.t + jump + MS, garbage=True)  # one garbage packet
    recovered(live)
    c = live.sync.counters
    assert c.clock_resets + c.clock_resyncs >= 1 and c.frames_stale <= 3
    assert not live.sync.resyncing


@pytest.mark.parametrize("jump", [HOUR, -HOUR], ids=["hour_ahead", "hour_behind"])
def test_offset_mode_one_garbage_packet_does_not_move_the_offset(jump: int) -> None:
    """A separate camera (host stamps): a packet with garbage sensor times, stamped on
    arrival as usual, must not drag the host - sensor offset by (a share of) an hour."""
    live = Live(stamp_offset=5_000_000_000, clock_mode="offset")
    live.step(4)
    garbage = live.t + jump
    live.packet(garbage, garbage + MS, garbage=True)
    live.windows += live.sync.poll()
    recovered(live)
    assert abs(live.sync.offset_ns - 5_000_000_000) < 5 * MS


@pytest.mark.parametrize("fps", [30, 20, 10])
def test_sensor_clock_restart_at_low_frame_rates(fps: int) -> None:
    live = Live(period_ns=1000 * MS // fps)
    live.step(4)
    live.t = T0 - 10 * HOUR  # the DAVIS restarted: both streams from a new zero
    live.enc.reset()
    recovered(live)
    assert live.sync.counters.clock_resets == 1


def test_one_frame_from_the_past_does_not_disable_events() -> None:
    live = Live()
    live.step(4)
    live.frame(live.t - 80 * MS)  # one frame stamped 80 ms in the past
    recovered(live)
    c = live.sync.counters
    assert c.clock_resets == 1 and not live.sync.resyncing
    before = c.packets_stale
    live.step(10)
    assert c.packets_stale == before  # not forever


def test_stale_drops_are_bounded_when_the_reset_side_goes_quiet() -> None:
    """An events-side reset, then no events: frames are not dropped as stale forever."""
    live = Live()
    live.step(4)
    # the time base runs backwards, then the events go quiet
    live.packet(live.t - HOUR, live.t - HOUR + MS, garbage=True)
    stamps = live.step(8, events=False)
    live.now += SyncConfig.event_timeout_ns
    live.windows += live.sync.poll()
    got = live.out(stamps)
    c = live.sync.counters
    assert c.frames_stale < SyncConfig.resync_frames and c.clock_resyncs == 1
    assert all(w is not None for w in got[SyncConfig.resync_frames:])
    assert live.accounted()


def test_stale_packets_resync_on_the_events() -> None:
    """A frames-side reset to a wrong time line, then frames stop: events re-found it."""
    live = Live()
    live.step(4)
    live.frame(live.t - HOUR)  # one frame an hour behind, then only events
    for _ in range(10):
        t0 = live.t
        live.packet(t0, t0 + 20 * MS)
        live.t += 20 * MS
    c = live.sync.counters
    assert c.clock_resyncs == 1 and c.packets_stale * 20 * MS <= 2 * SyncConfig.resync_events_ns
    recovered(live, within=1)


def test_format_change_emits_the_waiting_frame_and_counters_add_up() -> None:
    live = Live()
    live.step(3)
    live.frame(live.t + 33 * MS)  # waits for its events
    assert live.sync.pending_frames == 1
    enc = make_encoder("libcaer", W * 2, H * 2)
    batch = EventBatch(np.array([live.t + 40 * MS]), np.array([1]), np.array([1]),
                       np.array([1]), W * 2, H * 2)
    payload, tb = enc.encode(batch)
    live.windows += live.sync.add_events(payload, tb, "libcaer", W * 2, H * 2, live.t, 99)
    c = live.sync.counters
    assert c.format_changes == 1 and live.sync.pending_frames == 0
    assert live.windows[-1].stamp_ns == live.t + 33 * MS and live.windows[-1].events_incomplete
    assert live.accounted()


def test_first_packet_after_a_silence_lands_in_its_frame() -> None:
    """The race: after a silence the frame arrives a few ms before its first packet."""
    live = Live(silence_timeout_ns=400 * MS)
    live.step(3)
    live.now += 1000 * MS  # silence
    live.windows += live.sync.poll()
    assert live.sync.events_silent
    t0, t1 = live.t + 1000 * MS, live.t + 1033 * MS
    live.frame(t1)  # the frame first ...
    live.now += 5 * MS
    live.windows += live.sync.poll()
    live.packet(t0, t1 + 2 * MS)  # ... its packet 5 ms later
    (w,) = live.out([t1])
    assert w is not None and not w.events_missing and len(w.events) >= 100
    assert live.accounted()


def test_buffer_hands_memory_back_after_a_burst() -> None:
    released = []
    counters = SyncCounters()
    buf = EventBuffer(10**9, counters, release=lambda: released.append(1),
                      release_min_bytes=13 * 10_000)
    live = Live()
    for i in range(20):  # a burst: 20 x 1000 events held
        batch = live.batch(T0 + i * MS, T0 + (i + 1) * MS, 1000)
        buf.push(Decoded(batch, TriggerBatch.empty()), ordered=True)
    assert counters.buffer_bytes_peak >= 13 * 20_000 and not released
    buf.cut(None, T0 + 19 * MS, W, H, 10**12)  # most of it drained
    assert released == [1] and counters.buffer_releases == 1
    buf.cut(T0 + 19 * MS, T0 + 20 * MS, W, H, 10**12)
    assert released == [1]  # once per burst
