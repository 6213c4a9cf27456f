"""``EventStream`` fed with decoded batches (``push_decoded``), the way the synchroniser
uses it: windows, byte accounting, late events, newest time, triggers, drop_before.

The same stream fed packets of real recordings is pinned in test_events_reference.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derain_ros.errors import EventError
from derain_ros.events import Decoded, EventStream, make_decoder, make_encoder
from derain_ros.events.stream import EVENT_BYTES
from derain_ros.records import EventBatch, TriggerBatch

W, H = 32, 24
NO_TRIG = TriggerBatch.empty()


def batch(t, width: int = W, height: int = H) -> EventBatch:
    t = np.asarray(t, np.int64)
    n = len(t)
    return EventBatch(t, np.arange(n) % width, np.arange(n) % height, np.arange(n) % 2,
                      width, height)


def decoded(t, triggers: TriggerBatch = NO_TRIG, **size) -> Decoded:
    return Decoded(batch(t, **size), triggers)


def test_windows_of_integer_times_and_bytes_released_event_by_event() -> None:
    s = EventStream(W, H)
    assert s.push_decoded(decoded([10, 20, 30]), ordered=True)
    assert s.push_decoded(decoded([40, 50]), ordered=True)
    assert s.bytes_buffered == 5 * EVENT_BYTES and s.packets == 2
    # window (prev, t] = pop_until(t + 1): an event at exactly t belongs to it
    assert s.pop_until(20 + 1).events.t.tolist() == [10, 20]
    assert s.bytes_buffered == 3 * EVENT_BYTES  # released per event, not per packet
    assert s.pop_until(45 + 1).events.t.tolist() == [30, 40]
    assert s.bytes_buffered == 1 * EVENT_BYTES
    rest = s.pop_all().events
    assert rest.t.tolist() == [50] and s.bytes_buffered == 0
    empty = s.pop_until(1000).events
    assert len(empty) == 0 and (empty.width, empty.height) == (W, H)


def test_full_buffer_refuses_the_whole_packet() -> None:
    s = EventStream(W, H, max_buffer_bytes=4 * EVENT_BYTES)
    assert s.push_decoded(decoded([1, 2, 3]))
    trig = TriggerBatch([4], [1], [0])
    assert not s.push_decoded(decoded([4, 5], trig))  # 5 events > 4: refused, counted
    assert (s.drops, s.packets, s.bytes_buffered) == (1, 1, 3 * EVENT_BYTES)
    assert s.newest_t_ns == 5  # a refused packet's time passed all the same
    assert len(s.rising_edges()) == 0  # ... but nothing of it is kept
    assert s.push_decoded(decoded([6]))
    out = s.pop_until(100)
    assert out.events.t.tolist() == [1, 2, 3, 6] and len(out.triggers) == 0


def test_events_behind_a_cut_are_dropped_and_counted() -> None:
    s = EventStream(W, H)
    s.push_decoded(decoded([10, 20]), ordered=True)
    assert s.pop_until(25).events.t.tolist() == [10, 20]
    # a packet straddling the cut: its events before 25 would come out of order
    assert s.push_decoded(decoded([22, 24, 25, 30]), ordered=True)
    assert s.counters.late == 2 and s.bytes_buffered == 2 * EVENT_BYTES
    assert s.pop_until(31).events.t.tolist() == [25, 30]
    s.reset()  # a new time line: nothing is late any more
    s.push_decoded(decoded([1, 2]))
    assert s.counters.late == 2 and s.pop_until(3).events.t.tolist() == [1, 2]


def test_newest_time_follows_events_then_triggers() -> None:
    s = EventStream(W, H)
    assert s.newest_t_ns is None
    s.push_decoded(decoded([5, 9]))
    assert s.newest_t_ns == 9
    s.push_decoded(decoded([], TriggerBatch([15], [1], [0])))  # triggers only
    assert s.newest_t_ns == 15
    s.push_decoded(decoded([12, 13], TriggerBatch([20], [0], [0])))  # last *event* counts
    assert s.newest_t_ns == 15  # and it never goes back
    s.pop_all()
    assert s.newest_t_ns == 15  # popping does not forget what arrived
    s.reset()
    assert s.newest_t_ns is None


def test_rising_edges_and_trigger_cut() -> None:
    s = EventStream(W, H)
    s.push_decoded(decoded([1], TriggerBatch([10, 12], [1, 0], [0, 0])))
    s.push_decoded(decoded([2], TriggerBatch([30, 31, 40], [1, 1, 0], [0, 1, 1])))
    assert s.rising_edges().tolist() == [10, 30, 31]
    assert s.rising_edges(1).tolist() == [31]
    assert s.rising_edges(0).tolist() == [10, 30]
    out = s.pop_until(30 + 1)
    assert out.triggers.t.tolist() == [10, 12, 30] and out.triggers.edge.tolist() == [1, 0, 1]
    assert s.rising_edges().tolist() == [31]


def test_drop_before_forgets_old_events_but_sets_no_cut() -> None:
    s = EventStream(W, H)
    s.push_decoded(decoded([1, 2, 3, 8, 9], TriggerBatch([2, 9], [1, 1], [0, 0])), ordered=True)
    s.drop_before(8)
    assert s.bytes_buffered == 2 * EVENT_BYTES and s.rising_edges().tolist() == [9]
    s.push_decoded(decoded([5]))  # not late: drop_before is no cut
    assert s.counters.late == 0
    assert s.pop_all().events.t.tolist() == [8, 9, 5]


def test_unordered_batches_stop_at_the_first_late_event() -> None:
    """Without ``ordered`` the rule is pop_until's: stream order up to the first t >= T."""
    s = EventStream(W, H)
    s.push_decoded(decoded([10, 30, 20, 40]))
    assert s.pop_until(25).events.t.tolist() == [10]
    assert s.pop_until(35).events.t.tolist() == [30, 20]
    # the decoder's own count of time going backwards is what gives ``ordered``
    dec = make_decoder("mono", W, H)
    s = EventStream(W, H)
    s.push_decoded(dec.decode(*make_encoder("mono", W, H).encode(batch([10, 30, 20, 40]))),
                   ordered=dec.stats.backwards == 0)
    assert dec.stats.backwards == 1
    assert s.pop_until(25).events.t.tolist() == [10]


def test_sensor_size_and_wrong_use() -> None:
    s = EventStream(1, 1)
    s.push_decoded(decoded([1, 2]))  # an empty decoded-only stream takes the batch's size
    assert (s.width, s.height) == (W, H)
    with pytest.raises(EventError, match="sensor"):
        s.push_decoded(decoded([3], width=64, height=48))
    s.pop_all()
    s.push_decoded(decoded([3], width=64, height=48))  # empty again: a new size is fine
    assert (s.width, s.height) == (64, 48)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40),
       st.lists(st.integers(1, 12), min_size=1, max_size=12),
       st.lists(st.integers(0, 60), min_size=1, max_size=8),
       st.booleans())
def test_windows_hold_each_event_once(gaps, sizes, frames, ordered) -> None:
    """Any packetisation, any cut times: (prev, t] windows partition the stream exactly."""
    t = np.cumsum(gaps)
    bounds = np.unique(np.clip([*np.cumsum([0, *sizes]), len(t)], 0, len(t)))
    s = EventStream(W, H)
    for lo, hi in itertools.pairwise(bounds):
        assert s.push_decoded(decoded(t[lo:hi]), ordered=ordered)
    prev = None
    for f in sorted({int(x) * 10 for x in frames}):
        got = s.pop_until(f + 1).events.t
        lo = -1 if prev is None else prev
        assert got.tolist() == t[(t > lo) & (t <= f)].tolist()
        prev = f
    left = t[t > prev]
    assert s.bytes_buffered == len(left) * EVENT_BYTES
    assert s.pop_all().events.t.tolist() == left.tolist() and s.bytes_buffered == 0
