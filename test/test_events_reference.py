"""The real recordings are the ground truth: every reference figure of their README.

Each bag is read with the project's bag layer and decoded message by message, as a node
would; the figures (sums, counts, first/last times, decode-until) must match exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from derain_ros.bag import BagReader
from derain_ros.events import Decoder, EventStream, make_decoder
from derain_ros.records import EventBatch, TriggerBatch

TOPIC = "/event_camera/events"
M64 = 1 << 64


def _packets(bag: Path) -> list:
    with BagReader(bag) as reader:
        return [m.msg for m in reader.messages([TOPIC])]


def _decode_all(bag: Path):
    msgs = _packets(bag)
    first = msgs[0]
    dec = make_decoder(first.encoding, first.width, first.height)
    out = [dec.decode(m.events, m.time_base) for m in msgs]
    return msgs, dec, out


def _sum_t(t: np.ndarray) -> int:
    return int(t.astype(np.uint64).sum(dtype=np.uint64)) % M64


def test_evt3_trigger_sums(event_bags: Path) -> None:
    msgs, dec, out = _decode_all(event_bags / "prophesee_evt3_1280x720_trigger")
    assert len(msgs) == 105 and msgs[0].encoding == "evt3"
    ev = EventBatch.concatenate([o.events for o in out])
    tr = TriggerBatch.concatenate([o.triggers for o in out])
    assert _sum_t(ev.t) == 1222326831810000
    assert int(ev.x.sum(dtype=np.int64)) == 42078718
    assert int(ev.y.sum(dtype=np.int64)) == 31656267
    assert int(ev.p.sum(dtype=np.int64)) == 41439
    assert _sum_t(tr.t) == 29096982000
    assert int(tr.edge.sum()) == 1 and int(tr.id.sum()) == 0
    assert dec.stats.out_of_bounds == dec.stats.unknown_words == 0


def _push_packet(stream: EventStream, dec: Decoder, msg: Any) -> bool:
    """Decode one packet and queue it, as the synchroniser does (``ordered`` from the
    decoder's own count of time going backwards)."""
    back = dec.stats.backwards
    decoded = dec.decode(msg.events, msg.time_base)
    return stream.push_decoded(decoded, ordered=dec.stats.backwards == back)


def test_evt3_decode_until(event_bags: Path) -> None:
    msgs = _packets(event_bags / "prophesee_evt3_1280x720_trigger")
    stream, dec = EventStream(1280, 720), make_decoder("evt3", 1280, 720)
    for m in msgs:
        assert _push_packet(stream, dec, m)
    assert stream.packets == 105
    ev = stream.pop_until(14252072000).events
    assert _sum_t(ev.t) == 29004181874000
    assert int(ev.x.sum(dtype=np.int64)) == 897009
    assert int(ev.y.sum(dtype=np.int64)) == 773502
    assert int(ev.p.sum(dtype=np.int64)) == 1028
    assert int(ev.t[-1]) == 14252063000
    # the rest stays queued and starts exactly at the limit
    rest = stream.pop_all().events
    assert int(rest.t[0]) == 14252072000
    assert len(ev) + len(rest) == 82469


def test_dvxplorer_libcaer_rollover(event_bags: Path) -> None:
    msgs, dec, out = _decode_all(event_bags / "dvxplorer_libcaer_640x480")
    assert len(msgs) == 201 and msgs[0].encoding == "libcaer"
    ev = EventBatch.concatenate([o.events for o in out])
    assert _sum_t(ev.t) == 15762826572202229126
    assert int(ev.x.sum(dtype=np.int64)) == 111651612
    assert int(ev.y.sum(dtype=np.int64)) == 82801007
    assert int(ev.p.sum(dtype=np.int64)) == 181908
    first = out[0].events
    assert int(first.t[0]) == 1702309120762236018
    assert int(first.t[-1]) == 1702309120772213018
    assert int(np.count_nonzero(first.p == 0)) == 741
    assert int(np.count_nonzero(first.p == 1)) == 872
    assert int(out[1].events.t[0]) == 1702309120772229018
    assert dec.stats.backwards == 0  # the µs rollover inside the recording is unwrapped


def test_davis346_libcaer_cmp(event_bags: Path) -> None:
    msgs, dec, out = _decode_all(event_bags / "davis346_libcaer_cmp")
    assert len(msgs) == 100 and msgs[0].encoding == "libcaer_cmp"
    ev = EventBatch.concatenate([o.events for o in out])
    assert int(np.count_nonzero(ev.p == 0)) == 360223
    assert int(np.count_nonzero(ev.p == 1)) == 211043
    assert int(ev.t[0]) == 1744227144732712 * 1000
    assert dec.stats.unknown_words == 0


@pytest.mark.parametrize("name", ["prophesee_evt3_1280x720_trigger",
                                  "dvxplorer_libcaer_640x480", "davis346_libcaer_cmp"])
def test_pop_until_equals_full_decode(event_bags: Path, name: str) -> None:
    """Cutting a stream at arbitrary times loses and duplicates nothing."""
    msgs, _, out = _decode_all(event_bags / name)
    full = EventBatch.concatenate([o.events for o in out])
    first = msgs[0]
    stream = EventStream(first.width, first.height)
    dec = make_decoder(first.encoding, first.width, first.height)
    cuts = np.linspace(int(full.t[0]), int(full.t[-1]), 37).astype(np.int64)[1:]
    parts, ci = [], 0
    for m in msgs:
        assert _push_packet(stream, dec, m)
        # cut once the stream has passed the cut time, as the synchroniser does (events
        # behind a cut already made would be late)
        while ci < len(cuts) and (stream.newest_t_ns or -1) >= cuts[ci]:
            part = stream.pop_until(int(cuts[ci])).events
            assert not len(part) or int(part.t.max()) < cuts[ci]
            parts.append(part)
            ci += 1
    parts.append(stream.pop_all().events)
    assert EventBatch.concatenate(parts).equals(full) and stream.counters.late == 0
    assert stream.bytes_buffered == 0
