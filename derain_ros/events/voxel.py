"""Event voxel grids and count images: the one event-to-tensor conversion of the project.

The node, bag replay and training all call :func:`voxel_grid`, so preprocessing cannot
drift between them.

Definition of ``voxel_grid(events, t0_ns, t1_ns, bins)`` (``B = bins``, ``T = t1 - t0``):

* The window is ``(t0, t1]``: an event at exactly ``t0`` belongs to the previous window,
  one at ``t1`` to this one. Events outside it are ignored.
* Bin ``b`` (``0 <= b < B``) is centred at ``t0 + b * T / (B - 1)``: bin 0 at the window's
  open start, bin ``B - 1`` at its end ``t1`` (for ``B = 1`` every event lands in bin 0).
* An event at ``t`` has the fractional bin position ``tau = (B - 1) * (t - t0) / T``,
  rounded to a multiple of 1/4096: ``q = floor((t - t0) * (4096 * (B - 1) / T) + 1/2)``
  in float64, ``b = q // 4096``, ``f = (q % 4096) / 4096``. It adds ``s * (1 - f)`` to
  bin ``b`` and ``s * f`` to bin ``b + 1`` (bilinear in time), where ``s = +1`` for ON
  and ``-1`` for OFF, at its pixel ``(y, x)``. Each event's weights sum to 1.
* Why the 1/4096 rounding: every weight is then a multiple of 2^-12, so float32 sums are
  exact, in any order, while a cell holds fewer than 4096 events; the numba CPU path and
  the torch path (CPU or GPU, any scatter order) give bit-identical grids. The time
  resolution this costs is 1/4096 of a bin (1.6 µs for a 33 ms window of 5 bins).
* ``normalize="meanstd"``: over the non-zero cells only, subtract their mean and divide
  by their (population) standard deviation (by 1 where it is 0); zero cells stay 0. The
  statistics are taken in float64 from the exact float32 sums.

``count_image(events)`` is ``[2, H, W]`` float32: channel 0 counts OFF events, channel 1
ON events, per pixel.

Relation to ``tonic.functional.to_voxel_grid_numpy`` (checked in ``bench/events.py``):
tonic spans ``[t_first, t_last]`` of the given events with ``tau = B * (t - t_first) /
(t_last - t_first)``, drops the weight that would fall into bin ``B`` (so the last
event vanishes and the last bin is only partly filled) and keeps events at ``t_first``.
Ours with ``B + 1`` bins over ``(t_first, t_last]``, first ``B`` bins, plus the events at
``t_first`` in bin 0, equals tonic's grid up to the 1/4096 rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from derain_ros.events._jit import KFloat, KInt, njit
from derain_ros.events._scratch import thread_buffer
from derain_ros.events.errors import EventError
from derain_ros.records import EventBatch

if TYPE_CHECKING:
    import torch

__all__ = ["QUANTUM_BITS", "count_image", "count_image_numpy", "normalize_meanstd_numpy",
           "voxel_grid", "voxel_grid_numpy", "voxel_grid_torch", "warm_up"]

#: the bin position is rounded to multiples of 2^-QUANTUM_BITS of a bin
QUANTUM_BITS = 12
_Q = 1 << QUANTUM_BITS
_MASK = _Q - 1

Normalize = Literal["none", "meanstd"]


def _check(events: EventBatch, t0_ns: int, t1_ns: int, bins: int, normalize: str) -> float:
    if bins < 1:
        raise EventError(f"a voxel grid needs at least one bin, got {bins}")
    if int(t1_ns) <= int(t0_ns):
        raise EventError(f"voxel window ({t0_ns}, {t1_ns}] ns is empty")
    if normalize not in ("none", "meanstd"):
        raise EventError(f"normalize must be 'none' or 'meanstd', got {normalize!r}")
    del events
    return float(_Q * (bins - 1)) / float(int(t1_ns) - int(t0_ns))


@njit
def _voxel_kernel(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, t0: KInt,
                  t1: KInt, scale: KFloat, bins: KInt, width: KInt, height: KInt,
                  scratch: np.ndarray, grid: np.ndarray) -> None:
    """The plain per-event loop, for what the fast path does not take (see
    :func:`voxel_grid_numpy`). Accumulates pixel-major (the two bins of an event share a
    cache line), then transposes into ``grid`` ([bins, H, W] flat). ``scratch`` holds
    H*W*(bins+1) zeros and is left zeroed."""
    hw = width * height
    stride = bins + 1
    last = bins - 1
    for i in range(t.shape[0]):
        ti = t[i]
        if ti <= t0 or ti > t1:
            continue
        # floor(x + 1/2) as a truncation: the value is positive
        q = np.int64(np.float64(ti - t0) * scale + 0.5)
        b = min(q >> QUANTUM_BITS, last)
        f = np.float32(q & _MASK) * np.float32(1.0 / _Q) if b < last else np.float32(0.0)
        s = np.float32(2 * np.int32(p[i] != 0) - 1)
        base = (np.int64(y[i]) * width + np.int64(x[i])) * stride + b
        sf = s * f
        scratch[base] += s - sf
        scratch[base + 1] += sf  # bin B (padding) only ever gets 0
    for j in range(hw):
        for k in range(bins):
            grid[k * hw + j] = scratch[j * stride + k]
            scratch[j * stride + k] = 0.0
        scratch[j * stride + bins] = 0.0


# The fast path (see voxel_grid_numpy). Scratch layout: pixels in groups of _G = 8; cell
# (pixel, bin) at ((pixel // 8) * bins + bin) * 8 + pixel % 8, so an event's two cells are
# 8 apart and a group's bin row is 8 consecutive floats of the output plane. After the
# ceil(H*W / 8) groups come 16 spare cells: events outside the window add 0 to spare cell
# pixel % 8 (and + 8), which keeps the per-event passes free of branches.
_G = 8
_CHUNK = 2048  # events per chunk: the per-event buffers (32 KiB) stay in L1
_TWO52 = 4503599627370496.0  # 2**52; _TWO52_BITS is its bit pattern as a float64
_TWO52_BITS = 0x4330000000000000


@njit
def _fast_q(t: np.ndarray, start: KInt, m: KInt, t0: KInt, t1: KInt, scale: KFloat,
            qmax: KFloat, q: np.ndarray) -> KInt:
    """``q[i]`` = event ``start + i``'s q (module docstring), capped at ``qmax`` = 4096 *
    (B - 1), as float32 (exact: q < 2**24), or -1 outside the window; returns the number
    inside. ``t - t0`` (< 2**52 inside) becomes float64 via the bit pattern of 2**52 +
    dt, which vectorises (AVX2 has no int64 -> float64 instruction) and is exact."""
    tt = t[start:start + m]
    inside: KInt = 0
    for i in range(m):
        ti = tt[i]
        k = np.int64((ti > t0) & (ti <= t1))
        inside += k
        dt = np.int64(((ti - t0) & -k) | _TWO52_BITS).view(np.float64) - _TWO52
        qi: KFloat = np.float32(np.trunc(dt * scale + 0.5))  # the definition's float64 steps
        qi = qi if qi < qmax else qmax
        q[i] = qi if k != 0 else np.float32(-1.0)
    return inside


@njit
def _fast_cells(x: np.ndarray, y: np.ndarray, p: np.ndarray, start: KInt, m: KInt,
                q: np.ndarray, width: KInt, bins: KInt, spare: KFloat, cell: np.ndarray,
                lo: np.ndarray, hi: np.ndarray) -> None:
    """Per event: scratch cell of its lower bin, and the weights for it and for the bin
    above. All float32 arithmetic on integers < 2**24 and multiples of 2**-12 (exact), so
    the loop vectorises 8 wide. An event at q = 4096 * (B - 1) (time t1) gets b = B - 2,
    f = 1: it adds 0 to bin B - 2 and s to bin B - 1, the same sums as the definition
    (adding +-0 changes no cell: a cell never holds -0)."""
    xx = x[start:start + m]
    yy = y[start:start + m]
    pp = p[start:start + m]
    wf = np.float32(width)
    bf = np.float32(bins)
    bmax = np.float32(bins - 2)
    for i in range(m):
        qi = q[i]
        b = np.floor(qi * np.float32(1.0 / _Q))
        b = b if b < bmax else bmax
        f = (qi - b * np.float32(_Q)) * np.float32(1.0 / _Q)
        s = np.float32(1.0) if pp[i] != 0 else np.float32(-1.0)
        s = s if qi >= np.float32(0.0) else np.float32(0.0)
        sf = s * f
        lo[i] = s - sf
        hi[i] = sf
        pix = np.float32(yy[i]) * wf + np.float32(xx[i])
        g = np.floor(pix * np.float32(1.0 / _G))
        r = pix - g * np.float32(_G)
        c = (g * bf + b) * np.float32(_G) + r
        cell[i] = np.int32(c if qi >= np.float32(0.0) else spare + r)


@njit
def _fast_scatter(m: KInt, cell: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  scratch: np.ndarray) -> None:
    """The random read-modify-writes, in event order: every cell gets the same float32
    additions in the same order as in the plain loop, so the sums are identical even
    where a cell holds 4096 or more events. Unsigned indices: no negative-index checks."""
    for i in range(m):
        c = np.uint64(cell[i])
        scratch[c] += lo[i]
        scratch[c + np.uint64(_G)] += hi[i]


@njit
def _fast_unscramble(bins: KInt, hw: KInt, scratch: np.ndarray, grid: np.ndarray) -> None:
    """``grid`` ([bins, H, W] flat) from the grouped scratch, re-zeroing it. Each group's
    bin row is 8 floats, read into locals and then written: with unsigned indices (numba
    adds negative-index checks to signed ones) LLVM merges them into 32-byte SIMD
    copies."""
    full = hw // _G
    ub = np.uint64(bins)
    uhw = np.uint64(hw)
    u8 = np.uint64(_G)
    z = np.float32(0.0)
    for g in range(full):
        ug = np.uint64(g)
        for k in range(bins):
            uk = np.uint64(k)
            a: KInt = (ug * ub + uk) * u8
            d = uk * uhw + ug * u8
            v0 = scratch[a]
            v1 = scratch[a + np.uint64(1)]
            v2 = scratch[a + np.uint64(2)]
            v3 = scratch[a + np.uint64(3)]
            v4 = scratch[a + np.uint64(4)]
            v5 = scratch[a + np.uint64(5)]
            v6 = scratch[a + np.uint64(6)]
            v7 = scratch[a + np.uint64(7)]
            scratch[a] = z
            scratch[a + np.uint64(1)] = z
            scratch[a + np.uint64(2)] = z
            scratch[a + np.uint64(3)] = z
            scratch[a + np.uint64(4)] = z
            scratch[a + np.uint64(5)] = z
            scratch[a + np.uint64(6)] = z
            scratch[a + np.uint64(7)] = z
            grid[d] = v0
            grid[d + np.uint64(1)] = v1
            grid[d + np.uint64(2)] = v2
            grid[d + np.uint64(3)] = v3
            grid[d + np.uint64(4)] = v4
            grid[d + np.uint64(5)] = v5
            grid[d + np.uint64(6)] = v6
            grid[d + np.uint64(7)] = v7
    for k in range(bins):  # the last, partial group
        a = (full * bins + k) * _G
        for r in range(hw - full * _G):
            grid[k * hw + full * _G + r] = scratch[a + r]
    scratch[full * bins * _G:] = 0.0  # the partial group and the spare cells


@njit
def _voxel_kernel_fast(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, t0: KInt,
                       t1: KInt, scale: KFloat, bins: KInt, width: KInt, height: KInt,
                       scratch: np.ndarray, grid: np.ndarray) -> None:
    """The fast path: per chunk of events, two vectorised passes into small buffers, then
    the scalar scatter; finally the grouped scratch into ``grid``. ``scratch`` holds
    ceil(H*W / 8) * 8 * bins + 16 zeros and is left zeroed."""
    hw = width * height
    spare = np.float32(((hw + _G - 1) // _G) * _G * bins)
    qmax = np.float32((bins - 1) * _Q)
    q = np.empty(_CHUNK, np.float32)
    cell = np.empty(_CHUNK, np.int32)
    lo = np.empty(_CHUNK, np.float32)
    hi = np.empty(_CHUNK, np.float32)
    n = t.shape[0]
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        if _fast_q(t, start, m, t0, t1, scale, qmax, q):
            _fast_cells(x, y, p, start, m, q, width, bins, spare, cell, lo, hi)
            _fast_scatter(m, cell, lo, hi, scratch)
    _fast_unscramble(bins, hw, scratch, grid)


@njit
def _count_kernel(x: np.ndarray, y: np.ndarray, p: np.ndarray, width: KInt, height: KInt,
                  out: np.ndarray) -> None:
    hw = width * height
    for i in range(x.shape[0]):
        out[np.int64(p[i] != 0) * hw + np.int64(y[i]) * width + np.int64(x[i])] += 1.0


def voxel_grid_numpy(events: EventBatch, t0_ns: int, t1_ns: int, bins: int) -> np.ndarray:
    """The fast CPU path (numba): un-normalised grid as numpy ``[bins, H, W]`` float32.

    Why it is structured so: the cost is per event, and a plain loop (``_voxel_kernel``)
    mixes scalar int64/float64 conversions with random read-modify-writes into a scratch
    bigger than L2. The fast path splits each chunk of events into two branch-free passes
    that LLVM vectorises (bin position, weights, scratch cell) and one scalar pass that
    only does the read-modify-writes, in event order; the scratch groups 8 pixels so
    that turning it into ``[bins, H, W]`` is a run of 32-byte copies. Same numbers as the
    plain loop, bit for bit. The plain loop remains for what the fast path does not cover:
    one bin, windows of 2**52 ns or more, 4096 bins or more, and grids of about 2**24
    cells or more (its float32 index arithmetic is exact only below that).
    """
    scale = _check(events, t0_ns, t1_ns, bins, "none")
    hw = events.height * events.width
    grid = np.empty(bins * hw, np.float32)
    t0, t1 = np.int64(t0_ns), np.int64(t1_ns)
    size = -(-hw // _G) * _G * bins + 2 * _G
    if 2 <= bins < _Q and int(t1_ns) - int(t0_ns) < 2 ** 52 and size <= 2 ** 24:
        _voxel_kernel_fast(events.t, events.x, events.y, events.p, t0, t1, scale, bins,
                           events.width, events.height, _scratch(size), grid)
    else:
        size = hw * (bins + 1)
        _voxel_kernel(events.t, events.x, events.y, events.p, t0, t1, scale, bins,
                      events.width, events.height, _scratch(size), grid)
    return grid.reshape(bins, events.height, events.width)


def _scratch(size: int) -> np.ndarray:
    """A zeroed float32 buffer of ``size``, kept per thread (the kernels re-zero it)."""
    return thread_buffer("voxel_scratch", size, np.float32, zeroed=True)[:size]


def voxel_grid_torch(events: EventBatch, t0_ns: int, t1_ns: int, bins: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The torch path (any device): un-normalised ``[bins, H, W]`` float32, same numbers."""
    import torch

    scale = _check(events, t0_ns, t1_ns, bins, "none")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    w, h = events.width, events.height
    hw = w * h
    t = torch.as_tensor(events.t, device=dev)
    dt = t - int(t0_ns)
    keep = (dt > 0) & (dt <= int(t1_ns) - int(t0_ns))
    dt = dt[keep]
    q = torch.floor(dt.to(torch.float64) * scale + 0.5).to(torch.int64)
    b = torch.clamp(q >> QUANTUM_BITS, max=bins - 1)
    f = (q & _MASK).to(torch.float32) * (1.0 / _Q)
    f = torch.where(b >= bins - 1, torch.zeros_like(f), f)
    s = (torch.as_tensor(events.p, device=dev)[keep] != 0).to(torch.float32) * 2.0 - 1.0
    pix = (torch.as_tensor(events.y.astype(np.int64), device=dev)[keep] * w
           + torch.as_tensor(events.x.astype(np.int64), device=dev)[keep])
    grid = torch.zeros(bins * hw, dtype=torch.float32, device=dev)
    grid.index_add_(0, b * hw + pix, s * (1.0 - f))
    upper = b < bins - 1
    grid.index_add_(0, (b[upper] + 1) * hw + pix[upper], (s * f)[upper])
    return grid.reshape(bins, h, w)


def _normalize_meanstd(grid: torch.Tensor) -> torch.Tensor:
    import torch

    nonzero = grid != 0
    n = int(nonzero.sum())
    if n == 0:
        return grid
    v = grid.to(torch.float64)
    mean = v.sum() / n
    var = torch.clamp((v * v).sum() / n - mean * mean, min=0.0)
    std = torch.sqrt(var)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(nonzero, (v - mean) / std, torch.zeros_like(v)).to(torch.float32)


def normalize_meanstd_numpy(grid: np.ndarray) -> np.ndarray:
    """``meanstd`` normalisation in numpy: the same bits as the torch path's.

    The non-zero cells get ``(v - mean) / std`` over the non-zero cells, computed in
    float64 and rounded once to float32; zeros stay zero. Same operations in the same
    precision as :func:`_normalize_meanstd`. The two float64 sums are exact whenever
    the sum of squares stays below 2**29 (cells are float32 multiples of 2**-12, their
    squares multiples of 2**-24), e.g. a million cells of magnitude up to 20: then
    their order does not matter and the results are the torch path's bit for bit
    (tested); beyond that they may differ in the last bit.
    """
    nonzero = grid != 0
    n = int(np.count_nonzero(nonzero))
    if n == 0:
        return grid
    v = grid.astype(np.float64)
    mean = v.sum() / n
    var = max(float(np.dot(v.ravel(), v.ravel())) / n - mean * mean, 0.0)
    std = float(np.sqrt(var))
    std = std if std > 0 else 1.0
    out: np.ndarray = ((v - mean) / std).astype(np.float32)
    out[~nonzero] = 0.0
    return out


def voxel_grid(events: EventBatch, t0_ns: int, t1_ns: int, bins: int, *,
               normalize: Normalize = "none",
               device: torch.device | str | None = None) -> torch.Tensor:
    """Voxel grid ``[bins, H, W]`` float32 of the events in ``(t0_ns, t1_ns]``.

    See the module docstring for the exact definition. On the CPU (``device`` None or
    cpu) the numba kernel fills the grid; elsewhere the torch path does; both give the
    same numbers.
    """
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        grid = torch.from_numpy(voxel_grid_numpy(events, t0_ns, t1_ns, bins))
    else:
        grid = voxel_grid_torch(events, t0_ns, t1_ns, bins, dev)
    if normalize == "meanstd":
        grid = _normalize_meanstd(grid)
    elif normalize != "none":
        raise EventError(f"normalize must be 'none' or 'meanstd', got {normalize!r}")
    return grid


def count_image(events: EventBatch, *, device: torch.device | str | None = None
                ) -> torch.Tensor:
    """Per-pixel event counts ``[2, H, W]`` float32: channel 0 OFF, channel 1 ON."""
    import torch

    w, h = events.width, events.height
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        return torch.from_numpy(count_image_numpy(events))
    idx = (torch.as_tensor(events.p, device=dev).to(torch.int64).clamp(max=1) * (h * w)
           + torch.as_tensor(events.y.astype(np.int64), device=dev) * w
           + torch.as_tensor(events.x.astype(np.int64), device=dev))
    counts = torch.bincount(idx, minlength=2 * h * w).to(torch.float32)
    return counts.reshape(2, h, w)


def count_image_numpy(events: EventBatch) -> np.ndarray:
    """:func:`count_image` on the CPU, as numpy (no torch)."""
    w, h = events.width, events.height
    out = np.zeros(2 * h * w, np.float32)
    _count_kernel(events.x, events.y, events.p, w, h, out)
    return out.reshape(2, h, w)


def warm_up() -> None:
    """Compile the voxel (fast and plain) and count kernels on a tiny input."""
    ev = EventBatch(np.array([1, 2], np.int64), np.array([0, 1]), np.array([0, 1]),
                    np.array([0, 1]), 2, 2)
    voxel_grid_numpy(ev, 0, 2, 2)
    voxel_grid_numpy(ev, 0, 2, 1)
    count_image_numpy(ev)
