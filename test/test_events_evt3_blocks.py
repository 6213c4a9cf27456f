"""The evt3 block decoder (long packets) against the scalar loop, which is the definition.

Random word streams mix every code at chosen rates: plain blocks, blocks with vectors,
triggers and unknown codes (which the block decoder hands to the scalar loop), TIME_HIGH
jitter and wraps inside blocks, rows and columns outside the sensor, and packet cuts
anywhere. Both decoders must give the same events, triggers, counters and carried state
after every packet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from derain_ros.bag import BagReader
from derain_ros.events import evt3, make_decoder
from derain_ros.events.evt3_kernels import BLOCK_MIN_WORDS


def _stream(seed: int, n: int, rare: float, wraps: bool) -> np.ndarray:
    """``n`` evt3 words shaped like a sensor's: time words, rows, columns, housekeeping,
    and a share ``rare`` of vector, base, trigger and unknown words."""
    rng = np.random.default_rng(seed)
    common = np.array([0, 2, 2, 6, 8, 7, 14, 15, 9])
    rare_codes = np.array([1, 3, 4, 5, 10, 11, 12, 13])
    codes = rng.choice(common, n)
    is_rare = rng.random(n) < rare
    codes[is_rare] = rng.choice(rare_codes, int(is_rare.sum()))
    payload = rng.integers(0, 1 << 12, n)
    # coordinates mostly inside a 640 x 480 sensor, some outside
    payload[codes == 0] = rng.integers(0, 520, int((codes == 0).sum()))
    xs = codes == 2
    payload[xs] = rng.integers(0, 700, int(xs.sum())) | (rng.integers(0, 2, int(xs.sum())) << 11)
    # TIME_HIGH: slowly rising, with jitter of a few steps back and, optionally, wraps
    highs = np.flatnonzero(codes == 8)
    steps = rng.choice([0, 0, 0, 1, -1, -3, -10, -11, 5], len(highs))
    if wraps:
        steps[rng.random(len(highs)) < 0.01] = -3000
    payload[highs] = np.cumsum(steps) % 4096
    return ((codes << 12) | payload).astype("<u2")


def _decode_packets(words: np.ndarray, cuts: list[int], *, blocks: bool,
                    monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.setattr(evt3, "BLOCK_MIN_WORDS", BLOCK_MIN_WORDS if blocks else 1 << 62)
    dec = make_decoder("evt3", 640, 480)
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True):
        ev, tr = dec.decode(words[a:b].tobytes(), 0)
        out.append((ev.t, ev.x, ev.y, ev.p, tr.t, tr.edge, tr.id, dec.stats.as_dict(),
                    dec._state.tolist()))
    monkeypatch.undo()
    return out


@pytest.mark.parametrize(("seed", "rare", "wraps"),
                         [(s, r, w) for s in range(6) for r in (0.0, 0.002, 0.05)
                          for w in (False, True)])
def test_block_decoder_equals_scalar_loop(seed: int, rare: float, wraps: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    words = _stream(seed, 60_000, rare, wraps)
    rng = np.random.default_rng(1000 + seed)
    cuts = sorted(rng.choice(np.arange(1, len(words)), 12, replace=False).tolist())
    fast = _decode_packets(words, cuts, blocks=True, monkeypatch=monkeypatch)
    slow = _decode_packets(words, cuts, blocks=False, monkeypatch=monkeypatch)
    assert sum(len(f[0]) for f in fast) > 1000  # the stream makes events
    for f, s in zip(fast, slow, strict=True):
        for a, b in zip(f, s, strict=True):
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b)
            else:
                assert a == b


def test_real_recording_as_one_payload(event_bags: Path) -> None:
    """The whole evt3 recording joined into one payload (the block decoder's case)
    decodes to exactly what message-by-message decoding gives."""
    with BagReader(event_bags / "prophesee_evt3_1280x720_trigger") as bag:
        msgs = [m.msg for m in bag.messages()]
    dec = make_decoder("evt3", 1280, 720)
    parts = [dec.decode(m.events, m.time_base) for m in msgs]
    whole = make_decoder("evt3", 1280, 720).decode(
        b"".join(bytes(m.events) for m in msgs), 0)
    for name in ("t", "x", "y", "p"):
        joined = np.concatenate([getattr(d.events, name) for d in parts])
        assert np.array_equal(getattr(whole.events, name), joined)
    assert np.array_equal(whole.triggers.t, np.concatenate([d.triggers.t for d in parts]))
    assert int(whole.events.x.astype(np.int64).sum()) == 42078718  # the README's figure
