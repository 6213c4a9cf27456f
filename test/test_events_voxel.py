"""Voxel grids and count images: the definition pinned on a hand-worked example, the fast
CPU path equal to the torch path, and the relation to tonic's voxel grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from derain_ros.errors import EventError
from derain_ros.events.voxel import count_image, voxel_grid, voxel_grid_numpy, voxel_grid_torch
from derain_ros.records import EventBatch


def _hand_events() -> EventBatch:
    #            t     x  y  p
    rows = [(250, 0, 0, 1),    # tau = 0.5: half to bin 0, half to bin 1
            (1000, 1, 0, 0),   # tau = 2 (t1 is inside): all -1 to bin 2
            (0, 2, 0, 1),      # t0 is outside (the window is open there)
            (1001, 2, 1, 1),   # after t1: outside
            (600, 0, 1, 1),    # tau = 1.2 -> q = 4915 -> f = 819/4096
            (1, 1, 1, 0)]      # tau = 0.002 -> q = 8 -> f = 8/4096
    t, x, y, p = (np.array(c) for c in zip(*rows, strict=True))
    return EventBatch(t, x, y, p, 3, 2)


def _hand_expected() -> np.ndarray:
    g = np.zeros((3, 2, 3), np.float32)
    g[0, 0, 0] += 0.5
    g[1, 0, 0] += 0.5
    g[2, 0, 1] -= 1.0
    f = 819 / 4096
    g[1, 1, 0] += 1 - f
    g[2, 1, 0] += f
    f = 8 / 4096
    g[0, 1, 1] -= 1 - f
    g[1, 1, 1] -= f
    return g


def test_hand_worked_example_both_paths() -> None:
    ev = _hand_events()
    expected = _hand_expected()
    assert np.array_equal(voxel_grid(ev, 0, 1000, 3).numpy(), expected)
    assert np.array_equal(voxel_grid_torch(ev, 0, 1000, 3).numpy(), expected)
    # one bin: every event in the window counts +-1
    one = voxel_grid(ev, 0, 1000, 1).numpy()[0]
    assert one.tolist() == [[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]]


def test_meanstd_over_nonzero_cells() -> None:
    ev = _hand_events()
    raw = _hand_expected().astype(np.float64)
    nz = raw != 0
    mean, std = raw[nz].mean(), raw[nz].std()
    expected = np.where(nz, (raw - mean) / std, 0).astype(np.float32)
    got = voxel_grid(ev, 0, 1000, 3, normalize="meanstd").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(got != 0, nz)
    empty = EventBatch.empty(3, 2)
    assert not voxel_grid(empty, 0, 10, 2, normalize="meanstd").any()


def test_count_image() -> None:
    c = count_image(_hand_events())
    assert c.shape == (2, 2, 3) and c.dtype == torch.float32
    assert c[1].sum() == 4 and c[0].sum() == 2 and c[0, 0, 1] == 1


@pytest.mark.parametrize("bins", [1, 2, 5, 10])
def test_numba_equals_torch_on_random_streams(bins: int) -> None:
    rng = np.random.default_rng(bins)
    n = 20000
    ev = EventBatch(np.sort(rng.integers(0, 33_000_000, n)), rng.integers(0, 64, n),
                    rng.integers(0, 48, n), rng.integers(0, 2, n), 64, 48)
    for t0, t1 in [(0, 33_000_000), (1_000_003, 20_000_017)]:
        a = voxel_grid_numpy(ev, t0, t1, bins)
        b = voxel_grid_torch(ev, t0, t1, bins).numpy()
        assert np.array_equal(a, b)
        inside = (ev.t > t0) & (ev.t <= t1)
        signed = np.where(ev.p[inside] == 1, 1.0, -1.0).sum()
        assert a.sum(dtype=np.float64) == pytest.approx(signed, abs=1e-3)


def _plain_loop(ev: EventBatch, t0: int, t1: int, bins: int) -> np.ndarray:
    """The per-event loop the fast path must equal bit for bit."""
    from derain_ros.events.voxel import _check, _voxel_kernel

    scale = _check(ev, t0, t1, bins, "none")
    grid = np.empty(bins * ev.width * ev.height, np.float32)
    scratch = np.zeros(ev.width * ev.height * (bins + 1), np.float32)
    _voxel_kernel(ev.t, ev.x, ev.y, ev.p, np.int64(t0), np.int64(t1), scale, bins,
                  ev.width, ev.height, scratch, grid)
    return grid.reshape(bins, ev.height, ev.width)


@pytest.mark.parametrize("case", range(12))
def test_fast_path_equals_plain_loop(case: int) -> None:
    """The chunked, vectorised CPU path against the plain per-event loop: unsorted
    times, events at t0 and t1 and outside, sizes not a multiple of its 8-pixel groups,
    a hot pixel past 4096 events (float32 order matters there), several chunks."""
    rng = np.random.default_rng(100 + case)
    w, h = int(rng.integers(1, 41)), int(rng.integers(1, 31))
    bins = int(rng.integers(2, 12))
    n = int(rng.integers(0, 9000))
    t0, t1 = 1_000, 1_000 + int(rng.integers(1, 50_000_000))
    t = rng.integers(t0 - 5_000, t1 + 5_000, n)
    t[: n // 10] = t0
    t[n // 10: n // 5] = t1
    if case % 2:
        t = np.sort(t)
    x, y = rng.integers(0, w, n), rng.integers(0, h, n)
    if case % 3 == 0:
        x[: n // 2], y[: n // 2] = 0, 0  # a hot pixel
    ev = EventBatch(t, x, y, rng.integers(0, 2, n), w, h)
    fast = voxel_grid_numpy(ev, t0, t1, bins)
    assert np.array_equal(fast, _plain_loop(ev, t0, t1, bins))
    assert np.array_equal(fast, voxel_grid_numpy(ev, t0, t1, bins))  # scratch left zeroed


def test_bad_arguments() -> None:
    ev = _hand_events()
    with pytest.raises(EventError):
        voxel_grid(ev, 10, 10, 3)
    with pytest.raises(EventError):
        voxel_grid(ev, 0, 10, 0)
    with pytest.raises(EventError):
        voxel_grid(ev, 0, 10, 2, normalize="minmax")  # type: ignore[arg-type]


def test_relation_to_tonic() -> None:
    """tonic's grid == ours with B+1 bins over (t_first, t_last], first B bins, plus the
    events at t_first in bin 0 (up to our 1/4096 rounding of the bin position)."""
    tonic = pytest.importorskip("tonic.functional")
    rng = np.random.default_rng(3)
    n, w, h, bins = 5000, 32, 24, 5
    t = np.sort(rng.integers(0, 10_000_000, n))
    ev = EventBatch(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), w, h)
    arr = np.zeros(n, dtype=[("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
    arr["x"], arr["y"], arr["t"], arr["p"] = ev.x, ev.y, ev.t, ev.p
    theirs = tonic.to_voxel_grid_numpy(arr, (w, h, 2), bins).reshape(bins, h, w)
    ours = voxel_grid_numpy(ev, int(t[0]), int(t[-1]), bins + 1)[:bins].astype(np.float64)
    first = ev.t == t[0]
    np.add.at(ours[0], (ev.y[first], ev.x[first]), np.where(ev.p[first] == 1, 1.0, -1.0))
    assert np.abs(ours - theirs).max() <= 1e-3
