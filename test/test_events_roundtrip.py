"""Encoders: decode(encode(events)) == events across packets, wraps and rollovers.

Hypothesis draws whole streams, cuts them into packets at random places, encodes the
packets in order with one encoder and decodes them in order with a fresh decoder.
The real recordings check byte compatibility with the drivers where the format is
canonical (libcaer) and event equality where it is not (evt3).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derain_ros.bag import BagReader
from derain_ros.events import (
    EncodingError,
    EventOutOfBoundsError,
    TimeOrderError,
    make_decoder,
    make_encoder,
)
from derain_ros.events.libcaer import ROLLOVER_US, LibcaerEncoder
from derain_ros.records import EventBatch, TriggerBatch

W, H = 1280, 720
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
WRAP_US = 1 << 24


@st.composite
def streams(draw, *, unit_ns: int, max_gap: int, big_gap: int, start_max: int):
    """A time-ordered stream of events (t in multiples of ``unit_ns``) and packet cuts."""
    n = draw(st.integers(1, 300))
    gaps = draw(st.lists(st.one_of(st.integers(0, max_gap), st.integers(0, big_gap)),
                         min_size=n, max_size=n))
    start = draw(st.integers(0, start_max))
    units = start + np.cumsum(np.asarray(gaps, np.int64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    events = EventBatch(units * unit_ns, rng.integers(0, W, n), rng.integers(0, H, n),
                        rng.integers(0, 2, n), W, H)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=8))) | {0, n})
    return events, cuts


def _roundtrip(encoding: str, events: EventBatch, cuts: list[int],
               triggers: TriggerBatch | None = None, encoder=None) -> None:
    enc = encoder or make_encoder(encoding, events.width, events.height)
    dec = make_decoder(encoding, events.width, events.height)
    got, got_tr = [], []
    for a, b in itertools.pairwise(cuts):
        tr = None
        if triggers is not None:  # a packet carries the triggers up to the next packet
            lo = int(events.t[a])
            sel = triggers.t >= lo
            if b < len(events):
                sel &= triggers.t < int(events.t[b])
            tr = TriggerBatch(triggers.t[sel], triggers.edge[sel], triggers.id[sel])
        payload, time_base = enc.encode(events[a:b], tr)
        out = dec.decode(payload, time_base)
        got.append(out.events)
        got_tr.append(out.triggers)
    assert EventBatch.concatenate(got, W, H).equals(events)
    assert dec.stats.out_of_bounds == dec.stats.unknown_words == dec.stats.invalid == 0
    if triggers is not None:
        all_tr = TriggerBatch.concatenate(got_tr)
        expect = triggers.t[(triggers.t >= events.t[0]) & (triggers.t <= events.t[-1])]
        assert np.array_equal(all_tr.t, expect)


@SETTINGS
@given(streams(unit_ns=1000, max_gap=3000, big_gap=3 * WRAP_US, start_max=5 * WRAP_US))
def test_evt3_roundtrip_across_wraps(case) -> None:
    events, cuts = case
    _roundtrip("evt3", events, cuts)


@SETTINGS
@given(streams(unit_ns=1000, max_gap=5000, big_gap=50_000, start_max=WRAP_US),
       st.integers(0, 2**32 - 1))
def test_evt3_roundtrip_with_triggers(case, seed) -> None:
    events, cuts = case
    rng = np.random.default_rng(seed)
    m = int(rng.integers(0, 20))
    t = np.sort(rng.integers(int(events.t[0]) // 1000, int(events.t[-1]) // 1000 + 1, m)) * 1000
    triggers = TriggerBatch(t, rng.integers(0, 2, m), rng.integers(0, 16, m))
    _roundtrip("evt3", events, cuts, triggers)


@SETTINGS
@given(streams(unit_ns=1000, max_gap=10_000, big_gap=5_000_000, start_max=2**40),
       st.integers(0, ROLLOVER_US - 1))
def test_libcaer_roundtrip_across_rollovers(case, start_us) -> None:
    events, cuts = case
    events = EventBatch(events.t + 1_702_306_974_272_224_018, events.x, events.y, events.p,
                        W, H)
    encoder = LibcaerEncoder(W, H, start_us=start_us)
    _roundtrip("libcaer", events, cuts, encoder=encoder)


@SETTINGS
@given(streams(unit_ns=1, max_gap=20_000, big_gap=4_000_000, start_max=2**62))
def test_mono_roundtrip(case) -> None:
    events, cuts = case
    # mono packets span < 2^32 ns: besides the drawn cuts, start a new packet wherever
    # one would span more, so every stream is encoded whole (none is skipped)
    drawn = set(cuts)
    ok = [0]
    for i in range(1, len(events)):
        if i in drawn or int(events.t[i]) - int(events.t[ok[-1]]) >= 1 << 32:
            ok.append(i)
    ok.append(len(events))
    _roundtrip("mono", events, ok)


def test_evt3_reencode_real_recording(event_bags: Path) -> None:
    """Same events back; bytes differ where the sensor adds redundancy (documented)."""
    with BagReader(event_bags / "prophesee_evt3_1280x720_trigger") as bag:
        msgs = [m.msg for m in bag.messages()]
    dec, dec2 = make_decoder("evt3", W, H), make_decoder("evt3", W, H)
    enc = make_encoder("evt3", W, H)
    real_words = ours_words = 0
    for m in msgs:
        ev, tr = dec.decode(m.events, m.time_base)
        payload, time_base = enc.encode(ev, tr)
        ev2, tr2 = dec2.decode(payload, time_base)
        assert ev2.equals(ev)
        assert np.array_equal(tr2.t, tr.t) and np.array_equal(tr2.edge, tr.edge)
        real_words += len(m.events) // 2
        ours_words += len(payload) // 2
    # the sensor repeats TIME_HIGH, emits ADDR_Y per event and housekeeping words
    assert ours_words < real_words


def test_libcaer_reencode_is_byte_identical(event_bags: Path) -> None:
    with BagReader(event_bags / "dvxplorer_libcaer_640x480") as bag:
        msgs = [m.msg for m in bag.messages()]
    first_stamp = int(np.frombuffer(bytes(msgs[0].events[4:8]), "<i4")[0])
    dec = make_decoder("libcaer", 640, 480)
    enc = LibcaerEncoder(640, 480, start_us=first_stamp)
    for m in msgs:
        payload, time_base = enc.encode(dec.decode(m.events, m.time_base).events)
        assert time_base == m.time_base
        assert payload == bytes(m.events)


def _batch(t, x=0, y=0, p=1, w=W, h=H) -> EventBatch:
    t = np.asarray(t, np.int64)
    n = len(t)
    return EventBatch(t, np.full(n, x), np.full(n, y), np.full(n, p), w, h)


@pytest.mark.parametrize("encoding", ["evt3", "libcaer"])
def test_encoders_refuse_sub_microsecond_times(encoding: str) -> None:
    with pytest.raises(EncodingError):
        make_encoder(encoding, W, H).encode(_batch([1000, 1500]))


@pytest.mark.parametrize("encoding", ["evt3", "libcaer"])
def test_encoders_refuse_time_going_backwards(encoding: str) -> None:
    with pytest.raises(TimeOrderError):
        make_encoder(encoding, W, H).encode(_batch([5000, 7000, 6000]))


def test_evt3_encoder_refuses_packet_before_previous() -> None:
    enc = make_encoder("evt3", W, H)
    enc.encode(_batch([5000]))
    with pytest.raises(TimeOrderError):
        enc.encode(_batch([4000]))


def test_encoder_checks_bounds_and_size() -> None:
    enc = make_encoder("mono", 10, 10)
    with pytest.raises(EncodingError):
        enc.encode(_batch([1], w=11, h=10))
    bad = EventBatch(np.array([1]), np.array([10]), np.array([0]), np.array([1]), 20, 20)
    with pytest.raises(EventOutOfBoundsError):
        make_encoder("mono", 20, 20).encode(EventBatch(bad.t, bad.x, bad.y + 25, bad.p, 20, 20))


def test_mono_refuses_packet_longer_than_2_32_ns() -> None:
    with pytest.raises(EncodingError):
        make_encoder("mono", W, H).encode(_batch([0, 1 << 32]))


def test_triggers_only_in_evt3() -> None:
    tr = TriggerBatch(np.array([1000]), np.array([1]), np.array([0]))
    with pytest.raises(EncodingError):
        make_encoder("libcaer", W, H).encode(_batch([1000]), tr)
