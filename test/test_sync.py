"""The frame/event synchroniser: windows are exact, and every fault is handled and counted.

ROS-free. Event streams are synthetic, encoded with the project's own encoders (so the
synchroniser decodes real driver payloads); frames are small arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from derain_ros.errors import SyncError
from derain_ros.events import make_encoder
from derain_ros.records import EventBatch, TriggerBatch
from derain_ros.sync import FrameEventSynchronizer, FrameImage, SyncConfig

W, H = 64, 48
MS = 1_000_000
T0 = 1_700_000_000_000_000_000  # a realistic absolute sensor time (ns)
T1 = 2_000_000_000  # evt3 times stay below 2^32 µs from the sensor's zero


class FakeClock:
    """Monotonic time the test controls (ns)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def random_events(t_start: int, t_end: int, n: int, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    # µs resolution: libcaer and evt3 carry µs stamps
    t = np.sort(rng.integers(t_start // 1000, t_end // 1000, n)) * 1000
    return EventBatch(t, rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n), W, H)


def packets(events: EventBatch, period_ns: int, encoding: str = "libcaer",
            triggers: TriggerBatch | None = None):
    """Split into packets of ``period_ns``: yields (payload, time_base, last_t, seq)."""
    enc = make_encoder(encoding, W, H)
    start = int(events.t[0]) - int(events.t[0]) % period_ns
    for seq, lo in enumerate(range(start, int(events.t[-1]) + 1, period_ns)):
        sel = (events.t >= lo) & (events.t < lo + period_ns)
        trig = None
        if triggers is not None:
            m = (triggers.t >= lo) & (triggers.t < lo + period_ns)
            trig = TriggerBatch(triggers.t[m], triggers.edge[m], triggers.id[m])
        payload, tb = enc.encode(events[sel], trig)
        yield payload, tb, lo + period_ns - 1, seq, int(events.t[sel][0]) if sel.any() else lo


def frame(value: int = 7) -> np.ndarray:
    return np.full((H, W), value, np.uint8)


def run_stream(sync, events, frame_times, period_ns=10 * MS, clock=None, encoding="libcaer",
               stamp_offset=0):
    """Interleave packets and frames in arrival order; returns the windows."""
    out = []
    pk = list(packets(events, period_ns, encoding))
    fi = 0
    for payload, tb, last_t, seq, first_t in pk:
        while fi < len(frame_times) and frame_times[fi] <= last_t - period_ns:
            out += sync.add_frame(frame(), "mono8", frame_times[fi] + stamp_offset, "cam")
            fi += 1
        if clock is not None:
            clock.now = last_t
        out += sync.add_events(payload, tb, encoding, W, H, first_t + stamp_offset, seq)
    for t in frame_times[fi:]:
        out += sync.add_frame(frame(), "mono8", t + stamp_offset, "cam")
    return out + sync.flush()


def test_windows_hold_exactly_the_events_between_frames() -> None:
    events = random_events(T0, T0 + 500 * MS, 20000)
    frame_times = [T0 + 40 * MS + i * 33 * MS for i in range(12)]
    sync = FrameEventSynchronizer()
    windows = run_stream(sync, events, frame_times)
    assert [w.t_ns for w in windows] == frame_times
    assert [w.index for w in windows] == list(range(12))
    for prev, w in zip([None, *frame_times], windows, strict=False):
        assert w.t_prev_ns == prev
        if prev is None:
            continue
        expect = events[(events.t > prev) & (events.t <= w.t_ns)]
        assert w.events.equals(expect), w.index
        assert w.events_ok
        assert w.frame_id == "cam" and w.stamp_ns == w.t_ns
    first = windows[0]
    assert first.events.t.min() >= frame_times[0] - sync.config.first_window_ns
    assert sync.counters.windows_out == 12 and sync.counters.clock_resets == 0


def test_window_waits_for_events_past_the_frame() -> None:
    clock = FakeClock()
    sync = FrameEventSynchronizer(clock=clock)
    events = random_events(T0, T0 + 100 * MS, 2000)
    pk = list(packets(events, 10 * MS))
    for payload, tb, _, seq, first in pk[:5]:  # events up to T0 + 50 ms
        assert sync.add_events(payload, tb, "libcaer", W, H, first, seq) == []
    assert sync.add_frame(frame(), "mono8", T0 + 60 * MS) == []  # needs events past 60 ms
    assert sync.pending_frames == 1
    out = []
    for payload, tb, _, seq, first in pk[5:]:
        out += sync.add_events(payload, tb, "libcaer", W, H, first, seq)
    assert len(out) == 1 and out[0].events_ok


def test_event_topic_silent_gives_frames_only_windows() -> None:
    clock = FakeClock()
    sync = FrameEventSynchronizer(SyncConfig(silence_timeout_ns=200 * MS), clock=clock)
    clock.now = 1
    assert sync.add_frame(frame(), "mono8", T0) == []  # start-up: waits for events a while
    clock.now = 300 * MS
    out = sync.poll()
    assert len(out) == 1 and out[0].events_missing and len(out[0].events) == 0
    clock.now += 1
    # silent now: passes after the short grace a first packet gets (not event_timeout)
    assert sync.add_frame(frame(), "mono8", T0 + 33 * MS) == []
    clock.now += SyncConfig.silence_grace_ns
    out = sync.poll()
    assert len(out) == 1 and out[0].events_missing
    assert sync.counters.windows_events_missing == 2
    assert out[0].image.to_network().shape == (H, W, 1)


def test_timeout_cuts_an_incomplete_window() -> None:
    clock = FakeClock()
    sync = FrameEventSynchronizer(SyncConfig(event_timeout_ns=50 * MS), clock=clock)
    events = random_events(T0, T0 + 30 * MS, 500)
    for payload, tb, _, seq, first in packets(events, 10 * MS):
        sync.add_events(payload, tb, "libcaer", W, H, first, seq)
    assert sync.add_frame(frame(), "mono8", T0 + 40 * MS) == []
    clock.now += 60 * MS
    out = sync.poll()
    assert len(out) == 1 and out[0].events_incomplete and not out[0].events_missing
    assert len(out[0].events) == 500


def test_buffer_cap_drops_and_counts() -> None:
    cap = 13 * 1000  # 1000 events
    sync = FrameEventSynchronizer(SyncConfig(max_buffer_bytes=cap))
    events = random_events(T0, T0 + 100 * MS, 10000)  # a burst, ~1000 a packet
    for payload, tb, _, seq, first in packets(events, 10 * MS):
        sync.add_events(payload, tb, "libcaer", W, H, first, seq)
    c = sync.counters
    assert c.packets_buffer_full >= 8
    assert c.events_dropped_buffer_full + c.events_in - c.events_dropped_buffer_full >= 9000
    assert c.buffer_bytes <= cap
    out = sync.add_frame(frame(), "mono8", T0 + 50 * MS)
    assert len(out) == 1 and out[0].events_incomplete  # events inside it were dropped


def test_duplicate_late_gap_and_malformed_packets() -> None:
    sync = FrameEventSynchronizer()
    events = random_events(T0, T0 + 100 * MS, 3000)
    pk = list(packets(events, 10 * MS))
    p0, p1, p2, p3 = pk[:4]
    sync.add_events(p0[0], p0[1], "libcaer", W, H, p0[4], 0)
    sync.add_events(p0[0], p0[1], "libcaer", W, H, p0[4], 0)  # duplicate
    sync.add_events(p2[0], p2[1], "libcaer", W, H, p2[4], 2)  # p1 lost: gap
    sync.add_events(p1[0], p1[1], "libcaer", W, H, p1[4], 1)  # p1 arrives late
    sync.add_events(b"\x01\x02\x03", p3[1], "libcaer", W, H, p3[4], 3)  # truncated payload
    sync.add_events(p3[0], p3[1], "no_such_encoding", W, H, p3[4], 3)  # unknown encoding
    sync.add_events(p3[0], p3[1], "libcaer", W, H, p3[4], 3)
    c = sync.counters
    assert (c.packets_duplicate, c.packets_late, c.packet_gaps, c.packets_malformed) == (1, 1, 1, 2)
    assert c.events_in == sum(len(events[(events.t >= T0 + i * 10 * MS)
                                         & (events.t < T0 + (i + 1) * 10 * MS)]) for i in (0, 2, 3))


@pytest.mark.parametrize("events_first", [True, False])
def test_bag_loop_resets_once_and_windows_continue(events_first: bool) -> None:
    """Time jumps back (a looped bag): one reset, no garbage windows, windows resume."""
    events = random_events(T0, T0 + 300 * MS, 6000)
    frame_times = [T0 + 40 * MS + i * 33 * MS for i in range(7)]
    sync = FrameEventSynchronizer()
    first = run_stream(sync, events, frame_times)
    assert len(first) == 7
    pk = list(packets(events, 10 * MS))
    out = []
    if events_first:  # the loop shows first on the event topic, a stale frame straggles in
        payload, tb, _, _, ft = pk[0]
        out += sync.add_events(payload, tb, "libcaer", W, H, ft, 0)
        out += sync.add_frame(frame(), "mono8", frame_times[-1] + 33 * MS)
    out += run_stream(sync, events, frame_times)
    assert sync.counters.clock_resets == 1
    assert [w.t_ns for w in out if not w.events_incomplete][-5:] == frame_times[-5:]
    for w in out:
        if w.t_prev_ns is not None and w.events_ok:
            expect = events[(events.t > w.t_prev_ns) & (events.t <= w.t_ns)]
            assert w.events.equals(expect)
    assert sync.counters.frames_stale == int(events_first)


def test_duplicate_and_out_of_order_frames_dropped() -> None:
    sync = FrameEventSynchronizer(SyncConfig(silence_timeout_ns=1), clock=FakeClock())
    sync.add_frame(frame(), "mono8", T0 + 100 * MS)
    sync.add_frame(frame(), "mono8", T0 + 100 * MS)
    sync.add_frame(frame(), "mono8", T0 + 90 * MS)
    c = sync.counters
    assert (c.frames_duplicate, c.frames_out_of_order, c.clock_resets) == (1, 1, 0)


def test_offset_mode_maps_host_stamps_to_sensor_time() -> None:
    offset = 5_000_000_000 + 123_456  # host clock ahead of the sensor
    events = random_events(T0, T0 + 300 * MS, 8000)
    frame_times = [T0 + 40 * MS + i * 33 * MS for i in range(7)]
    sync = FrameEventSynchronizer(SyncConfig(clock_mode="offset"))
    windows = run_stream(sync, events, frame_times, stamp_offset=offset)
    assert [w.stamp_ns for w in windows] == [t + offset for t in frame_times]
    # packets' host stamps are exact here, so the estimate is exact after the first packet
    assert [w.t_ns for w in windows[1:]] == frame_times[1:]
    assert abs(sync.offset_ns - offset) < MS


def test_trigger_mode_takes_frame_times_from_trigger_edges() -> None:
    offset = 2_000_000_000
    events = random_events(T1, T1 + 300 * MS, 8000)
    exposure = [T1 + 40 * MS + i * 33 * MS + 1234_000 for i in range(7)]
    trig = TriggerBatch(exposure, np.ones(7), np.zeros(7))
    sync = FrameEventSynchronizer(SyncConfig(clock_mode="trigger"))
    out = []
    fi = 0
    for payload, tb, last_t, seq, first_t in packets(events, 10 * MS, "evt3", trig):
        while fi < 7 and exposure[fi] + 5 * MS <= last_t - 10 * MS:
            # host stamp: exposure + offset + 5 ms of camera latency (within the tolerance)
            out += sync.add_frame(frame(), "mono8", exposure[fi] + offset + 5 * MS)
            fi += 1
        out += sync.add_events(payload, tb, "evt3", W, H, first_t + offset, seq)
    out += sync.flush()
    assert [w.t_ns for w in out[:fi]] == exposure[:fi]
    assert fi >= 6 and not any(w.time_estimated for w in out[:fi])


def test_frame_image_accepts_frameimage_and_colour() -> None:
    clock = FakeClock()
    sync = FrameEventSynchronizer(SyncConfig(silence_timeout_ns=1, silence_grace_ns=0),
                                  clock=clock)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 2] = 255
    sync.add_frame(FrameImage(rgb, "bgr8"), None, T0)
    clock.now = 10
    (w,) = sync.add_frame(rgb, "bgr8", T0 + 33 * MS)[-1:]
    net = w.image.to_network()
    assert net.shape == (H, W, 3) and net[0, 0, 0] == 1.0 and net[0, 0, 2] == 0.0


def test_bad_settings_rejected() -> None:
    with pytest.raises(SyncError, match="clock_mode"):
        SyncConfig(clock_mode="gps")
    with pytest.raises(SyncError, match="max_buffer_bytes"):
        SyncConfig(max_buffer_bytes=0)


def _write_bag(path, with_frames: bool = True) -> list[int]:
    """A small DAVIS-like bag: mono frames, libcaer packets, ground truth of each frame."""
    from derain_ros.bag import BagWriter, typestore

    store = typestore()
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    Image = store.types["sensor_msgs/msg/Image"]
    Packet = store.types["event_camera_msgs/msg/EventPacket"]

    def header(t: int) -> object:
        return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="davis")

    events = random_events(T0, T0 + 200 * MS, 4000)
    frame_times = [T0 + 40 * MS + i * 33 * MS for i in range(5)]
    with BagWriter(path) as bag:
        bag.add_topic("/event_camera/events", "event_camera_msgs/msg/EventPacket")
        if with_frames:
            bag.add_topic("/event_camera/image_raw", "sensor_msgs/msg/Image")
            bag.add_topic("/ground_truth/clean", "sensor_msgs/msg/Image")
        fi = 0
        for payload, tb, last_t, seq, first_t in packets(events, 10 * MS):
            while with_frames and fi < len(frame_times) and frame_times[fi] <= last_t - 10 * MS:
                t = frame_times[fi]
                for topic, val in (("/event_camera/image_raw", 7), ("/ground_truth/clean", fi)):
                    img = Image(header=header(t), height=H, width=W, encoding="mono8",
                                is_bigendian=0, step=W, data=frame(val).reshape(-1))
                    bag.write(topic, t + 2 * MS, img)
                fi += 1
            msg = Packet(header=header(first_t), height=H, width=W, seq=seq, time_base=tb,
                         encoding="libcaer", is_bigendian=False,
                         events=np.frombuffer(payload, np.uint8))
            bag.write("/event_camera/events", last_t + MS, msg)
    return frame_times, events


def test_windows_from_bag_with_ground_truth(tmp_path) -> None:
    from derain_ros.sync import windows_from_bag

    frame_times, events = _write_bag(tmp_path / "rig")
    windows = list(windows_from_bag(tmp_path / "rig"))
    assert [w.t_ns for w in windows] == frame_times
    for i, w in enumerate(windows):
        assert w.frame_id == "davis"
        assert int(w.extras["/ground_truth/clean"].array[0, 0]) == i
        if w.t_prev_ns is not None:
            assert w.events.equals(events[(events.t > w.t_prev_ns) & (events.t <= w.t_ns)])
            assert w.events_ok


def test_bag_without_frames_is_a_clear_error(tmp_path) -> None:
    from derain_ros.sync import windows_from_bag

    _write_bag(tmp_path / "events_only", with_frames=False)
    with pytest.raises(SyncError, match=r"has events .* but no frames"):
        list(windows_from_bag(tmp_path / "events_only"))


def test_real_recording_without_frames_is_a_clear_error(event_bags) -> None:
    from derain_ros.sync import windows_from_bag

    with pytest.raises(SyncError, match="but no frames"):
        next(windows_from_bag(event_bags / "davis346_libcaer_cmp"))


def test_real_davis_recording_windows_keep_every_event(event_bags) -> None:
    """Real libcaer_cmp packets through the synchroniser (offset mode, host-stamped frames):
    the windows hold every event of the recording once (reference: 360223 OFF, 211043 ON)."""
    from derain_ros.bag import BagReader
    from derain_ros.sync import stamp_to_ns

    sync = FrameEventSynchronizer(SyncConfig(clock_mode="offset", max_buffer_bytes=10**9))
    windows = []
    with BagReader(event_bags / "davis346_libcaer_cmp") as bag:
        for i, rec in enumerate(bag.messages(["/event_camera/events"])):
            msg = rec.msg
            stamp = stamp_to_ns(msg.header.stamp)
            windows += sync.add_events(msg.events, msg.time_base, msg.encoding, msg.width,
                                       msg.height, stamp, msg.seq)
            if i % 5 == 0:
                windows += sync.add_frame(np.zeros((4, 4), np.uint8), "mono8", stamp)
    windows += sync.add_frame(np.zeros((4, 4), np.uint8), "mono8", stamp + 10**9)
    windows += sync.flush()
    on = sum(int(w.events.p.sum()) for w in windows)
    total = sum(len(w.events) for w in windows)
    assert (total - on, on) == (360223, 211043)
    assert sync.counters.packets_malformed == 0 and sync.counters.clock_resets == 0


def test_offset_mode_frames_before_the_first_packet_wait_for_the_offset() -> None:
    offset = 3_000_000_000
    clock = FakeClock()
    sync = FrameEventSynchronizer(SyncConfig(clock_mode="offset"), clock=clock)
    events = random_events(T0, T0 + 200 * MS, 4000)
    pk = list(packets(events, 10 * MS))
    assert sync.add_frame(frame(), "mono8", T0 + 5 * MS + offset) == []  # no offset yet
    out = []
    for payload, tb, _, seq, first in pk:
        out += sync.add_events(payload, tb, "libcaer", W, H, first + offset, seq)
    out += sync.add_frame(frame(), "mono8", T0 + 38 * MS + offset)
    out += sync.flush()
    assert [w.t_ns for w in out] == [T0 + 5 * MS, T0 + 38 * MS]
    assert not any(w.time_estimated for w in out) and sync.counters.clock_resets == 0


def test_events_behind_a_cut_window_are_dropped_and_counted() -> None:
    """A window cut on timeout; its stragglers arrive later: counted, never in a window."""
    clock = FakeClock()
    sync = FrameEventSynchronizer(SyncConfig(event_timeout_ns=5 * MS), clock=clock)
    events = random_events(T0, T0 + 60 * MS, 3000, seed=4)
    pk = list(packets(events, 10 * MS))
    for payload, tb, _, seq, first in pk[:2]:  # events up to T0 + 20 ms
        sync.add_events(payload, tb, "libcaer", W, H, first, seq)
    sync.add_frame(frame(), "mono8", T0 + 25 * MS)
    clock.now += 6 * MS
    (cut,) = sync.poll()  # nothing past 25 ms yet: cut incomplete
    assert cut.events_incomplete and int(cut.events.t.max()) < T0 + 20 * MS
    out = []
    for payload, tb, _, seq, first in pk[2:]:
        out += sync.add_events(payload, tb, "libcaer", W, H, first, seq)
    out += sync.add_frame(frame(), "mono8", T0 + 45 * MS) + sync.flush()
    late = int(np.count_nonzero((events.t >= T0 + 20 * MS) & (events.t <= T0 + 25 * MS)))
    c = sync.counters
    assert late > 0 and c.events_late == late
    assert c.events_in == len(events) - late
    (w,) = out
    assert w.t_prev_ns == T0 + 25 * MS and w.events_ok
    assert w.events.equals(events[(events.t > T0 + 25 * MS) & (events.t <= T0 + 45 * MS)])


def test_sensor_size_change_between_message_types_resets_cleanly() -> None:
    """EventArray-style batches of one size, then packets of another: a format change."""
    sync = FrameEventSynchronizer()
    small = EventBatch([T0 + MS, T0 + 2 * MS], [1, 2], [1, 2], [0, 1], 8, 6)
    sync.add_decoded(small, T0)
    events = random_events(T0 + 10 * MS, T0 + 100 * MS, 2000)
    frame_times = [T0 + 40 * MS, T0 + 73 * MS]
    windows = run_stream(sync, events, frame_times)
    assert sync.counters.format_changes == 1
    assert [w.t_ns for w in windows] == frame_times
    assert windows[1].events.equals(events[(events.t > frame_times[0])
                                           & (events.t <= frame_times[1])])
