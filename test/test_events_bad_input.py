"""Bad input: every decoder survives random and mutated real payloads (hypothesis fuzz),
and each kind of bad input gets its own exception type or a counted drop."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derain_ros.bag import BagReader
from derain_ros.errors import EventError
from derain_ros.events import (
    EventOutOfBoundsError,
    EventStream,
    PacketTooLargeError,
    TimeBaseError,
    TruncatedPacketError,
    UnknownEncodingError,
    decoder_encodings,
    make_decoder,
    make_encoder,
    warm_up,
)
from derain_ros.records import EventBatch

ROOT_BAGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "event_bags"
REAL = {"evt3": "prophesee_evt3_1280x720_trigger", "libcaer": "dvxplorer_libcaer_640x480",
        "libcaer_cmp": "davis346_libcaer_cmp"}
# the deadline catches a decoder that hangs; kernels are compiled before (see below)
FUZZ = settings(max_examples=600, deadline=2000, suppress_health_check=list(HealthCheck))
W, H = 346, 260  # small sensor: random words often land outside it


@pytest.fixture(autouse=True, scope="module")
def _compiled_kernels() -> None:
    """numba compiles a kernel at its first call (seconds with a cold cache, as on a
    fresh CI clone): do it before the fuzz, so the deadline measures decoding only."""
    warm_up(voxel=False)


@cache
def _real_payloads(encoding: str) -> list[bytes]:
    if encoding not in REAL or not (ROOT_BAGS / REAL[encoding]).is_dir():
        enc = make_encoder("mono", W, H)  # no recording of mono: encode some events
        rng = np.random.default_rng(1)
        ev = EventBatch(np.sort(rng.integers(0, 10**6, 500)), rng.integers(0, W, 500),
                        rng.integers(0, H, 500), rng.integers(0, 2, 500), W, H)
        return [enc.encode(ev)[0]]
    with BagReader(ROOT_BAGS / REAL[encoding]) as bag:
        return [bytes(m.msg.events[:4096]) for i, m in enumerate(bag.messages()) if i < 8]


def _check(encoding: str, payload: bytes, time_base: int) -> None:
    dec = make_decoder(encoding, W, H, max_packet_bytes=1 << 16)
    total = 0
    for _ in range(2):  # twice: the carried state must stay sane too
        try:
            ev, tr = dec.decode(payload, time_base)
        except EventError:
            return  # refusing bad input with the package's error is a pass
        total += len(ev)
        assert len(ev.t) == len(ev.x) == len(ev.y) == len(ev.p)
        if len(ev):
            assert int(ev.x.max()) < W and int(ev.y.max()) < H
            assert set(np.unique(ev.p).tolist()) <= {0, 1}
        assert len(tr.t) == len(tr.edge) == len(tr.id)
        assert dec.stats.events == total  # the counter counts what came out


ENCODINGS = sorted(decoder_encodings())


@pytest.mark.parametrize("encoding", ENCODINGS)
@FUZZ
@given(payload=st.binary(max_size=2048), time_base=st.integers(-5, 2**64))
def test_fuzz_random_bytes(encoding: str, payload: bytes, time_base: int) -> None:
    _check(encoding, payload, time_base)


@pytest.mark.parametrize("encoding", ENCODINGS)
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_real_payloads(encoding: str, data) -> None:
    payloads = _real_payloads(encoding)
    buf = bytearray(data.draw(st.sampled_from(payloads)))
    for _ in range(data.draw(st.integers(1, 16))):
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _check(encoding, bytes(buf[:cut]), data.draw(st.integers(0, 2**63 - 2**33)))


def test_unknown_and_empty_encoding_name_the_known_ones() -> None:
    for name in ("", "evt4", "EVT3"):
        with pytest.raises(UnknownEncodingError) as info:
            make_decoder(name, 10, 10)
        assert all(k in str(info.value) for k in ("evt3", "libcaer", "libcaer_cmp", "mono"))
    with pytest.raises(UnknownEncodingError, match="empty"):
        make_encoder("", 10, 10)


@pytest.mark.parametrize(("encoding", "size"), [("evt3", 3), ("libcaer_cmp", 5),
                                                 ("libcaer", 12), ("mono", 9)])
def test_truncated_payload(encoding: str, size: int) -> None:
    with pytest.raises(TruncatedPacketError):
        make_decoder(encoding, 10, 10).decode(b"\x00" * size, 0)


def test_packet_larger_than_cap() -> None:
    dec = make_decoder("mono", 10, 10, max_packet_bytes=64)
    with pytest.raises(PacketTooLargeError):
        dec.decode(b"\x00" * 72, 0)
    assert dec.stats.packets == 0


@pytest.mark.parametrize("time_base", [-1, 2**63, "x"])
def test_bad_time_base(time_base) -> None:
    with pytest.raises(TimeBaseError):
        make_decoder("libcaer", 10, 10).decode(b"", time_base)


def test_out_of_bounds_dropped_and_counted_or_raised() -> None:
    ev = EventBatch(np.array([10, 20, 30]), np.array([1, 9, 2]), np.array([1, 9, 2]),
                    np.array([1, 0, 1]), 10, 10)
    payload, tb = make_encoder("mono", 10, 10).encode(ev)
    dec = make_decoder("mono", 5, 5)
    out = dec.decode(payload, tb).events
    assert out.x.tolist() == [1, 2] and dec.stats.out_of_bounds == 1
    with pytest.raises(EventOutOfBoundsError):
        make_decoder("mono", 5, 5, strict=True).decode(payload, tb)


def test_time_going_backwards_is_counted() -> None:
    enc = make_encoder("mono", 10, 10)
    dec = make_decoder("mono", 10, 10)
    for t in ([100, 200], [50, 60]):
        ev = EventBatch(np.array(t), np.zeros(2), np.zeros(2), np.ones(2), 10, 10)
        dec.decode(*enc.encode(ev))
    assert dec.stats.backwards == 1


def test_unknown_words_skipped_and_counted() -> None:
    dec = make_decoder("libcaer_cmp", 10, 10)
    # code 9 is undefined in libcaer_cmp; ADDR_X 3, ADDR_Y 4 ON
    words = np.array([0x9123, 0x2003, 0x3804], "<u2")
    ev = dec.decode(words.tobytes(), 1000).events
    assert ev.x.tolist() == [3] and ev.y.tolist() == [4] and ev.p.tolist() == [1]
    assert dec.stats.unknown_words == 1
    # evt3: code 0x1 is undefined; TIME_HIGH 0, TIME_LOW 5 us, ADDR_Y 4, ADDR_X 3 ON
    dec = make_decoder("evt3", 10, 10)
    words = np.array([0x8000, 0x6005, 0x1000, 0x0004, 0x2803], "<u2")
    ev = dec.decode(words.tobytes(), 0).events
    assert ev.t.tolist() == [5000] and ev.x.tolist() == [3] and ev.y.tolist() == [4]
    assert dec.stats.unknown_words == 1


def test_stream_drops_when_full() -> None:
    s = EventStream(10, 10, max_buffer_bytes=40)
    three = make_decoder("mono", 10, 10).decode(
        *make_encoder("mono", 10, 10).encode(EventBatch(
            np.arange(3), np.arange(3), np.zeros(3), np.ones(3), 10, 10)))
    assert s.push_decoded(three)  # 39 bytes
    assert not s.push_decoded(three)
    assert s.drops == 1 and s.packets == 1 and s.bytes_buffered == 39
    s.reset()
    assert s.bytes_buffered == 0 and len(s.pop_all().events) == 0


def test_stream_keeps_rest_of_packet() -> None:
    ev = EventBatch(np.arange(10) * 100, np.arange(10), np.zeros(10), np.ones(10), 10, 10)
    s = EventStream(10, 10)
    s.push_decoded(make_decoder("mono", 10, 10).decode(*make_encoder("mono", 10, 10).encode(ev)))
    a = s.pop_until(450).events
    assert a.t.tolist() == [0, 100, 200, 300, 400]
    assert s.pop_until(450).events.t.tolist() == []
    assert s.pop_until(10_000).events.t.tolist() == [500, 600, 700, 800, 900]
    assert s.bytes_buffered == 0
