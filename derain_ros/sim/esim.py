"""An ESIM-style event simulator: log intensity, per-pixel thresholds, refractory, noise.

Why hand-written: no usable simulator installs here (v2e and esim are not on PyPI;
evlib's stamps every event of a frame with the frame's time, which destroys exactly
the sub-frame timing rain events carry). The pixel model is the usual DVS one:

- Each pixel keeps a reference log intensity ``L_ref``. The sensor sees
  ``L = log(I + eps)`` of linear irradiance ``I`` (image white = 1).
- ``L`` is known at sub-step times ``t_0 < t_1 < ... < t_K``; between two of them it
  is linear in time. When ``L - L_ref`` reaches ``+C_on`` an ON event fires at the
  interpolated crossing time and ``L_ref`` moves by ``C_on`` (OFF likewise with
  ``-C_off``). ``C_on`` and ``C_off`` are drawn per pixel from ``N(C, sigma)``
  (clipped to at least ``C / 4``): the fixed-pattern mismatch of a real array.
- Refractory period: after an event a pixel is blind for ``refractory_s``; a change
  that builds up meanwhile fires as soon as the pixel is released and the reference
  resets to the level at that moment (as a pixel's reset does), so a fast rain drop
  gives fewer events than its contrast alone would.
- Noise (optional): shot noise (random ON/OFF events, ``shot_noise_hz`` per pixel)
  and leak events (ON, ``leak_hz`` per pixel), independent of the signal.

Sensor non-idealities, each off by default (so existing seeds give the same events);
:mod:`~derain_ros.sim.sensor` draws them per clip:

- ON/OFF asymmetry: ``threshold_off`` (None: equal to ``threshold``, the ON one).
- Photoreceptor bandwidth: the pixel sees its log intensity through a first-order
  low-pass whose 3 dB cutoff is ``f = cutoff_hz (1 + E_h) E / (E + E_h)`` with
  ``E = illuminance * I`` (``I`` linear, white = 1; ``illuminance`` the scene's light
  relative to daylight; ``E_h`` = :data:`BANDWIDTH_HALF_LIGHT`): ``cutoff_hz`` for a
  white pixel in daylight, proportional to the light in the dark (tens of Hz at
  night). The filter is solved exactly for the linear input between two sub-steps;
  each pixel's cutoff is set once per :meth:`EventSimulator.step` from the brightest
  input it sees in that step (a drop passing speeds the photoreceptor up, as light does).
- Shot noise that grows in the dark: ``shot_noise_dark_hz`` is the rate at ``E`` = 1e-3
  and below, ``shot_noise_hz`` at ``E`` = 1, interpolated linearly in ``log10 E``.
- Hot pixels: a fraction ``hot_pixel_fraction`` of the array (fixed per simulator)
  fires at ``hot_pixel_hz`` each (Poisson), each hot pixel with its own ON/OFF bias.
- ``noise_refractory``: noise and hot-pixel events obey the refractory period too (a
  noise event within ``refractory_s`` of another event of its pixel is not emitted;
  emitted ones blind the pixel like signal events).
- Time-stamp jitter: Gaussian, ``jitter_us`` standard deviation, cut at 3 sigma, added
  after everything else (so two events of a pixel may end up to 6 sigma closer than
  the refractory period, as the arbiter's jitter does on a real sensor).
- Labels: each pixel remembers how much of its reference level was rain; an event is
  ``LABEL_RAIN`` when the rain's share of the log intensity changed by more than
  ``C / 4`` since the pixel's previous event (rain made a real part of the change:
  a drop arriving, leaving, or the last bit of a change a drop left behind),
  ``LABEL_NOISE`` for noise events and ``LABEL_BACKGROUND`` otherwise.

Times inside the simulator are float64 nanoseconds; events leave it on whole
microseconds (the resolution of the DAVIS/Prophesee clocks and of the encodings), as
int64 ns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from derain_ros.records import EventBatch
from derain_ros.sim.errors import SimConfigError

__all__ = [
    "BANDWIDTH_HALF_LIGHT",
    "LABEL_BACKGROUND",
    "LABEL_NOISE",
    "LABEL_RAIN",
    "EsimConfig",
    "EventSimulator",
]

LABEL_BACKGROUND = 0
LABEL_RAIN = 1
LABEL_NOISE = 2
#: Light level ``E`` (relative to a white pixel in daylight) at which the photoreceptor's
#: cutoff is half its bright-light value: below it the cutoff is proportional to light.
BANDWIDTH_HALF_LIGHT = 0.1
_CUTOFF_FLOOR_HZ = 0.5
_DARK_LIGHT = 1e-3  # E at and below which shot noise runs at shot_noise_dark_hz


@dataclass(frozen=True, slots=True)
class EsimConfig:
    """Pixel model: thresholds (log units), refractory (s), noise rates (Hz per pixel).

    ``threshold``/``threshold_off``: ON/OFF contrast thresholds C (log units; OFF None:
    same as ON), ``threshold_sigma`` their per-pixel spread; ``refractory_s``;
    ``shot_noise_hz`` (in bright light) and ``shot_noise_dark_hz`` (in the dark; None:
    the same everywhere), ``leak_hz``: per pixel; ``cutoff_hz``: photoreceptor 3 dB
    cutoff of a white pixel in daylight (0: infinitely fast); ``illuminance``: scene
    light relative to daylight (bandwidth and dark noise only); ``hot_pixel_fraction``
    of pixels firing at ``hot_pixel_hz``; ``noise_refractory``: noise obeys the
    refractory period; ``jitter_us``: time-stamp jitter (standard deviation, µs).
    The model of each is in the module docstring.
    """

    threshold: float = 0.2
    threshold_sigma: float = 0.03
    refractory_s: float = 1e-4
    shot_noise_hz: float = 0.0
    leak_hz: float = 0.0
    log_eps: float = 0.01
    threshold_off: float | None = None
    cutoff_hz: float = 0.0
    illuminance: float = 1.0
    shot_noise_dark_hz: float | None = None
    hot_pixel_fraction: float = 0.0
    hot_pixel_hz: float = 0.0
    noise_refractory: bool = False
    jitter_us: float = 0.0

    def __post_init__(self) -> None:
        for name, c in (("threshold", self.threshold), ("threshold_off", self.c_off)):
            if not (0 < c < 5 and math.isfinite(c)):
                raise SimConfigError(f"event {name} C must be in (0, 5), got {c}")
        if not (0 <= self.threshold_sigma < min(self.threshold, self.c_off)):
            raise SimConfigError(
                f"threshold sigma must be in [0, min(C_on, C_off)), got {self.threshold_sigma}")
        if not (0 <= self.refractory_s < 0.1):
            raise SimConfigError(f"refractory must be in [0, 0.1) s, got {self.refractory_s}")
        if self.shot_noise_hz < 0 or self.leak_hz < 0 or (self.shot_noise_dark_hz or 0) < 0:
            raise SimConfigError("noise rates must be >= 0")
        if not (0 < self.log_eps < 1):
            raise SimConfigError(f"log_eps must be in (0, 1), got {self.log_eps}")
        if not (0 <= self.cutoff_hz <= 1e6 and math.isfinite(self.cutoff_hz)):
            raise SimConfigError(f"cutoff_hz must be in [0, 1e6] (0: no low-pass), "
                                 f"got {self.cutoff_hz}")
        if not (0 < self.illuminance <= 100 and math.isfinite(self.illuminance)):
            raise SimConfigError(f"illuminance must be in (0, 100], got {self.illuminance}")
        if not (0 <= self.hot_pixel_fraction <= 0.1):
            raise SimConfigError(
                f"hot_pixel_fraction must be in [0, 0.1], got {self.hot_pixel_fraction}")
        if not (0 <= self.hot_pixel_hz <= 1e5):
            raise SimConfigError(f"hot_pixel_hz must be in [0, 1e5], got {self.hot_pixel_hz}")
        if not (0 <= self.jitter_us <= 1e4 and math.isfinite(self.jitter_us)):
            raise SimConfigError(f"jitter_us must be in [0, 1e4], got {self.jitter_us}")

    @property
    def c_off(self) -> float:
        """The OFF threshold (``threshold_off``, or ``threshold`` when that is None)."""
        return self.threshold if self.threshold_off is None else self.threshold_off

    def replace(self, **changes: Any) -> EsimConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def _legacy_noise(self) -> bool:
        """Uniform noise without hot pixels or refractory: the original draw sequence."""
        return (self.shot_noise_dark_hz is None and not self.noise_refractory
                and (self.hot_pixel_fraction == 0 or self.hot_pixel_hz == 0))


@njit(cache=True, nogil=True)
def _simulate(logs: np.ndarray, rain: np.ndarray, times: np.ndarray, l_ref: np.ndarray,
              t_last: np.ndarray, r_ref: np.ndarray, c_on: np.ndarray, c_off: np.ndarray,
              refractory: float,
              label_thr: float, pixels: np.ndarray, start: int, out_t: np.ndarray,
              out_x: np.ndarray, out_y: np.ndarray, out_p: np.ndarray,
              out_l: np.ndarray) -> tuple[int, int]:
    """Events of the pixels ``pixels[start:]`` (flat indices, raster order) over the
    sub-steps in ``logs`` (K+1 x H x W).

    ``logs[0]`` is the level at ``times[0]`` (already seen). Returns (number of events
    written, next entry of ``pixels`` to do); it stops early, before a pixel whose
    worst case would not fit the output buffers, so the caller can grow them and go on.
    Hand-written (numba): the per-pixel crossing loop with refractory state has no
    vectorised form in numpy.
    """
    kp1, _h, w = logs.shape
    cap = out_t.shape[0]
    n = 0
    for ip in range(start, pixels.shape[0]):
        pix = pixels[ip]
        y = pix // w
        x = pix - y * w
        con = c_on[y, x]
        coff = c_off[y, x]
        # Worst case for this pixel: every threshold crossing plus one delayed fire per step.
        travel = 0.0
        for k in range(1, kp1):
            travel += abs(logs[k, y, x] - logs[k - 1, y, x])
        if n + int(travel / min(con, coff)) + 2 * kp1 > cap:
            return n, ip
        ref = l_ref[y, x]
        last = t_last[y, x]
        rref = r_ref[y, x]
        for k in range(1, kp1):
            la = logs[k - 1, y, x]
            lb = logs[k, y, x]
            # Fast path: the segment is linear, so no event unless an end is past a threshold.
            if max(la, lb) - ref < con and ref - min(la, lb) < coff:
                continue
            ta = times[k - 1]
            tb = times[k]
            ra = rain[k - 1, y, x]
            rb = rain[k, y, x]
            t = ta
            while True:
                free = last + refractory
                t = max(t, free)
                if t >= tb:
                    break
                lt = la + (lb - la) * (t - ta) / (tb - ta)
                if lt - ref >= con:          # built up during the refractory period
                    fire_t = t
                    pol = 1
                    ref = lt
                elif ref - lt >= coff:
                    fire_t = t
                    pol = 0
                    ref = lt
                elif lb - lt > 0 and lb - ref >= con:
                    target = ref + con
                    fire_t = t + (target - lt) / (lb - lt) * (tb - t)
                    pol = 1
                    ref = target
                elif lt - lb > 0 and ref - lb >= coff:
                    target = ref - coff
                    fire_t = t + (lt - target) / (lt - lb) * (tb - t)
                    pol = 0
                    ref = target
                else:
                    break
                out_t[n] = fire_t
                out_x[n] = x
                out_y[n] = y
                out_p[n] = pol
                # Rain's part of the change since the reference was set decides the label.
                share = ra + (rb - ra) * (fire_t - ta) / (tb - ta)
                out_l[n] = 1 if abs(share - rref) > label_thr else 0
                rref = share
                n += 1
                last = fire_t
                t = fire_t
        l_ref[y, x] = ref
        t_last[y, x] = last
        r_ref[y, x] = rref
    return n, pixels.shape[0]


@njit(cache=True, nogil=True)
def _time_order(t_rel: np.ndarray, n_buckets: int) -> np.ndarray:
    """Stable counting sort by whole-µs time: O(n), unlike a comparison sort.

    Events arrive pixel by pixel (raster order), so equal times stay in raster order.
    """
    start = np.zeros(n_buckets + 1, np.int64)
    for v in t_rel:
        start[v + 1] += 1
    for b in range(n_buckets):
        start[b + 1] += start[b]
    order = np.empty(t_rel.shape[0], np.int64)
    for i in range(t_rel.shape[0]):
        v = t_rel[i]
        order[start[v]] = i
        start[v] += 1
    return order


@njit(cache=True, nogil=True)
def _active_pixels(logs: np.ndarray, l_ref: np.ndarray, c_on: np.ndarray,
                   c_off: np.ndarray) -> np.ndarray:
    """Flat indices (raster order) of pixels whose level leaves [ref - C_off, ref + C_on]."""
    kp1, h, w = logs.shape
    hi = logs[0].copy()
    lo = logs[0].copy()
    for k in range(1, kp1):
        plane = logs[k]
        for y in range(h):
            for x in range(w):
                v = plane[y, x]
                hi[y, x] = max(hi[y, x], v)
                lo[y, x] = min(lo[y, x], v)
    out = np.empty(h * w, np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            r = l_ref[y, x]
            if hi[y, x] - r >= c_on[y, x] or r - lo[y, x] >= c_off[y, x]:
                out[n] = y * w + x
                n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def _lowpass(logs: np.ndarray, rain: np.ndarray, dt_s: float, state: np.ndarray,
             state_rain: np.ndarray, cutoff_hz: float, illuminance: float, eps: float,
             out: np.ndarray, out_rain: np.ndarray) -> None:
    """The photoreceptor: ``logs`` (K+1 x H x W, sub-steps ``dt_s`` apart) through a
    first-order low-pass, into ``out`` (``out[0]`` = ``state``; ``state`` then = ``out[K]``).

    Exact for an input linear between sub-steps: with ``a = exp(-dt/tau)`` and
    ``g = (1 - a) tau / dt``, ``y_b = L_b + (y_a - L_a) a - (L_b - L_a) g``. The rain's
    share goes through the same filter (it is linear), so the labels stay consistent.
    Plane by plane (contiguous rows), which keeps it a small part of a step.
    """
    kp1, h, w = logs.shape
    half = BANDWIDTH_HALF_LIGHT
    top = logs[0].copy()
    for k in range(1, kp1):
        for y in range(h):
            for x in range(w):
                top[y, x] = max(top[y, x], logs[k, y, x])
    coef_a = np.empty((h, w), np.float32)
    coef_g = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            e = illuminance * max(math.exp(top[y, x]) - eps, 0.0)
            f = max(cutoff_hz * (1.0 + half) * e / (e + half), _CUTOFF_FLOOR_HZ)
            r = 2.0 * math.pi * f * dt_s          # dt / tau
            coef_a[y, x] = math.exp(-r)
            coef_g[y, x] = -math.expm1(-r) / r
    out[0] = state
    out_rain[0] = state_rain
    for k in range(1, kp1):
        for y in range(h):
            for x in range(w):
                la = logs[k - 1, y, x]
                lb = logs[k, y, x]
                out[k, y, x] = lb + (out[k - 1, y, x] - la) * coef_a[y, x] - (lb - la) * coef_g[
                    y, x]
                qa = rain[k - 1, y, x]
                qb = rain[k, y, x]
                out_rain[k, y, x] = qb + (out_rain[k - 1, y, x] - qa) * coef_a[y, x] - (
                    qb - qa) * coef_g[y, x]
    state[...] = out[kp1 - 1]
    state_rain[...] = out_rain[kp1 - 1]


@njit(cache=True, nogil=True)
def _noise_keep(sig_t: np.ndarray, sig_pix: np.ndarray, t: np.ndarray, pix: np.ndarray,
                order: np.ndarray, t_before: np.ndarray, t_last: np.ndarray,
                refractory: float) -> np.ndarray:
    """Which noise events survive when noise obeys the refractory period.

    ``sig_pix`` (flat pixel index of the signal events) is non-decreasing and each
    pixel's signal events are in time order (as :func:`_simulate` writes them); they
    are already refractory-clean. ``order`` sorts the noise events by (pixel, time).
    A noise event is kept when it is at least ``refractory`` after its pixel's previous
    kept event (``t_before``: the last before this step) and before its next signal
    event; a kept one moves ``t_last`` (flat) like a signal event.
    """
    n = order.shape[0]
    keep = np.zeros(pix.shape[0], np.bool_)
    i = 0
    while i < n:
        p = pix[order[i]]
        s = np.searchsorted(sig_pix, p)
        s_end = np.searchsorted(sig_pix, p, side="right")
        last = t_before[p]
        while i < n and pix[order[i]] == p:
            e = order[i]
            while s < s_end and sig_t[s] <= t[e]:
                last = max(last, sig_t[s])
                s += 1
            nxt = sig_t[s] if s < s_end else 1e300
            if t[e] - last >= refractory and nxt - t[e] >= refractory:
                keep[e] = True
                last = t[e]
                t_last[p] = max(t_last[p], t[e])
            i += 1
    return keep


def _simulate_chunk(pixels: np.ndarray, *args: Any) -> tuple[np.ndarray, ...]:
    """Run :func:`_simulate` over ``pixels``, growing the output buffers as needed."""
    parts = []
    cap = max(1 << 14, 8 * len(pixels))
    start = 0
    # (typed loosely: mypy cannot match the *args unpacking to the kernel's parameters)
    simulate: Callable[..., tuple[int, int]] = _simulate
    while True:
        bufs = (np.empty(cap, np.float64), np.empty(cap, np.uint16), np.empty(cap, np.uint16),
                np.empty(cap, np.uint8), np.empty(cap, np.uint8))
        n, start = simulate(*args, pixels, start, *bufs)
        parts.append(tuple(b[:n] for b in bufs))
        if start >= len(pixels):
            break
        cap *= 4
    return tuple(np.concatenate(f) for f in zip(*parts, strict=True))


class EventSimulator:
    """Stateful DVS pixel array: feed log-intensity sub-steps, get time-ordered events.

    ``reset(log0, t0_ns)`` sets every pixel's reference to ``log0`` at time ``t0_ns``;
    :meth:`step` then takes the next sub-steps and returns the events in
    ``(times[0], times[-1]]`` (int64 ns on whole microseconds, so window ends should be
    whole microseconds too) with their labels.
    """

    def __init__(self, config: EsimConfig, width: int, height: int,
                 rng: np.random.Generator, *, executor: Executor | None = None,
                 chunks: int = 1) -> None:
        self.config = config
        self.width = int(width)
        self.height = int(height)
        shape = (self.height, self.width)
        c, s = config.threshold, config.threshold_sigma
        self.c_on = np.maximum(c + s * rng.standard_normal(shape), c / 4.0).astype(np.float32)
        c = config.c_off
        self.c_off = np.maximum(c + s * rng.standard_normal(shape), c / 4.0).astype(np.float32)
        self._noise_rng = np.random.default_rng(rng.integers(0, 2**63))
        # Draws for the optional non-idealities come after (and only when they are on),
        # so a configuration without them gives the events it always gave.
        npix = self.width * self.height
        self.hot_pixels = np.empty(0, np.int64)
        self._hot_on = np.empty(0, np.float64)
        if config.hot_pixel_fraction > 0:
            hot_rng = np.random.default_rng(rng.integers(0, 2**63))
            n_hot = min(int(hot_rng.binomial(npix, config.hot_pixel_fraction)), npix)
            self.hot_pixels = np.sort(hot_rng.choice(npix, n_hot, replace=False))
            self._hot_on = hot_rng.random(n_hot)  # each hot pixel's chance of ON
        self._jitter_rng = (np.random.default_rng(rng.integers(0, 2**63))
                            if config.jitter_us > 0 else None)
        self._l_ref = np.zeros(shape, np.float32)
        self._t_last = np.full(shape, -1e30, np.float64)
        self._r_ref = np.zeros(shape, np.float32)
        self._lp = np.zeros(shape, np.float32)       # photoreceptor output (log)
        self._lp_rain = np.zeros(shape, np.float32)  # ... and the rain's share of it
        self._lp_out: tuple[np.ndarray, np.ndarray] | None = None
        self._t0 = 0
        self._executor = executor
        self._chunks = max(1, int(chunks))

    def log_intensity(self, linear: np.ndarray) -> np.ndarray:
        """``log(I + eps)`` as float32 (``I`` linear irradiance, white = 1)."""
        return np.log(np.maximum(linear, 0.0) + self.config.log_eps).astype(np.float32)

    def reset(self, log0: np.ndarray, t0_ns: int, rain_log0: np.ndarray | None = None) -> None:
        """Start over: references at ``log0`` (H x W; ``rain_log0`` of it is rain)."""
        self._l_ref[...] = log0
        self._r_ref[...] = 0.0 if rain_log0 is None else rain_log0
        self._lp[...] = log0
        self._lp_rain[...] = self._r_ref
        self._t_last.fill(-1e30)
        self._t0 = int(t0_ns)

    def _photoreceptor(self, logs: np.ndarray, rain_log: np.ndarray,
                       times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``logs`` and ``rain_log`` through the photoreceptor's low-pass."""
        cfg = self.config
        if self._lp_out is None or self._lp_out[0].shape != logs.shape:
            self._lp_out = (np.empty(logs.shape, np.float32), np.empty(logs.shape, np.float32))
        out, out_rain = self._lp_out
        dt_s = float(times[-1] - times[0]) * 1e-9 / (len(times) - 1)
        _lowpass(logs, rain_log, dt_s, self._lp, self._lp_rain, cfg.cutoff_hz,
                 cfg.illuminance, cfg.log_eps, out, out_rain)
        return out, out_rain

    def step(self, logs: np.ndarray, rain_log: np.ndarray,
             times_ns: np.ndarray) -> tuple[EventBatch, np.ndarray]:
        """Events while the log intensity goes through ``logs`` (K+1 x H x W).

        ``logs[0]`` is the last level of the previous call, at ``times_ns[0]``;
        ``rain_log`` (same shape) is how much of each level is due to rain (for the
        labels). Returns the events with ``times_ns[0] <= t < times_ns[-1]``, ordered by
        time (then row, then column), and a uint8 label per event.
        """
        if logs.shape != rain_log.shape or logs.shape[0] != len(times_ns) or len(times_ns) < 2:
            raise SimConfigError("logs, rain_log and times_ns do not fit together")
        cfg = self.config
        times = (np.asarray(times_ns, np.int64) - self._t0).astype(np.float64)
        light = logs[-1]  # the scene's level (for the dark noise), before the photoreceptor
        if cfg.cutoff_hz > 0:
            logs, rain_log = self._photoreceptor(logs, rain_log, times)
        t_before = self._t_last.copy() if cfg.noise_refractory else None
        # Only pixels whose level leaves the threshold band at some sub-step can fire
        # (levels are linear in between); a cheap pre-pass finds them.
        pixels = _active_pixels(logs, self._l_ref, self.c_on, self.c_off)
        # Contiguous chunks of pixels run concurrently (pixels are independent); the
        # chunks are joined in raster order, so the result never depends on threading.
        chunks = np.array_split(pixels, min(self._chunks, max(1, len(pixels) // 4096)))
        args = (logs, rain_log, times, self._l_ref, self._t_last, self._r_ref, self.c_on,
                self.c_off,
                cfg.refractory_s * 1e9, 0.25 * cfg.threshold)
        if self._executor is not None and len(chunks) > 1:
            results = list(self._executor.map(lambda c: _simulate_chunk(c, *args), chunks))
        else:
            results = [_simulate_chunk(c, *args) for c in chunks]
        t, x, y, p, lab = (np.concatenate(f) for f in zip(*results, strict=True))
        if cfg._legacy_noise:
            t, x, y, p, lab = self._add_noise(t, x, y, p, lab, times[0], times[-1])
        else:
            t, x, y, p, lab = self._sensor_noise(t, x, y, p, lab, times[0], times[-1], light,
                                                 t_before)
        if self._jitter_rng is not None and len(t):
            sigma = cfg.jitter_us * 1e3
            t = t + np.clip(self._jitter_rng.normal(0.0, sigma, len(t)), -3 * sigma, 3 * sigma)
        # Nearest whole microsecond, kept inside the window (t_a, t_b] (whole
        # microseconds at both ends); then time order, ties in raster order.
        r = self._t0 % 1000
        t_us = np.rint((t + r) / 1000.0).astype(np.int64)
        first_us = int(times[0] + r) // 1000 + 1
        last_us = int(times[-1] + r) // 1000
        np.clip(t_us, first_us, max(first_us, last_us), out=t_us)
        order = _time_order(t_us - first_us, max(last_us - first_us + 1, 1))
        t_ns = (t_us[order] * 1000) + (self._t0 - r)
        batch = EventBatch(t_ns, x[order], y[order], p[order], self.width, self.height)
        return batch, lab[order]

    def _add_noise(self, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                   lab: np.ndarray, t_a: float, t_b: float) -> tuple[np.ndarray, ...]:
        cfg = self.config
        rate = cfg.shot_noise_hz + cfg.leak_hz
        if rate <= 0:
            return t, x, y, p, lab
        rng = self._noise_rng
        npix = self.width * self.height
        n = int(rng.poisson(rate * npix * (t_b - t_a) * 1e-9))
        pix = rng.integers(0, npix, n)
        nt = t_a + rng.random(n) * (t_b - t_a)
        # Leak events are ON; shot noise is ON or OFF with equal odds.
        on = (rng.random(n) < cfg.leak_hz / rate) | (rng.random(n) < 0.5)
        return (np.concatenate([t, nt]),
                np.concatenate([x, (pix % self.width).astype(np.uint16)]),
                np.concatenate([y, (pix // self.width).astype(np.uint16)]),
                np.concatenate([p, on.astype(np.uint8)]),
                np.concatenate([lab, np.full(n, LABEL_NOISE, np.uint8)]))

    def _sensor_noise(self, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                      lab: np.ndarray, t_a: float, t_b: float, light: np.ndarray,
                      t_before: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Shot noise (more in the dark), leak and hot pixels; refractory if asked."""
        cfg = self.config
        rng = self._noise_rng
        npix = self.width * self.height
        span_s = (t_b - t_a) * 1e-9
        bright = cfg.shot_noise_hz
        dark = bright if cfg.shot_noise_dark_hz is None else cfg.shot_noise_dark_hz
        r_max = max(bright, dark) + cfg.leak_hz
        # Thinning: candidates at the highest rate, each kept with its pixel's rate.
        n = int(rng.poisson(r_max * npix * span_s)) if r_max > 0 else 0
        pix = rng.integers(0, npix, n)
        nt = t_a + rng.random(n) * (t_b - t_a)
        u = rng.random(n) * r_max
        heads = rng.random(n) < 0.5
        shot = np.full(n, bright)
        if dark != bright and n:
            e = cfg.illuminance * np.maximum(np.exp(light.ravel()[pix].astype(np.float64))
                                             - cfg.log_eps, 0.0)
            w = np.clip(np.log10(np.maximum(e, 1e-12)) / math.log10(_DARK_LIGHT), 0.0, 1.0)
            shot = bright + (dark - bright) * w
        leak = u < cfg.leak_hz
        keep = leak | (u < cfg.leak_hz + shot)
        pix, nt, on = pix[keep], nt[keep], (leak | heads)[keep]
        if len(self.hot_pixels) and cfg.hot_pixel_hz > 0:
            counts = rng.poisson(cfg.hot_pixel_hz * span_s, len(self.hot_pixels))
            hot = np.repeat(np.arange(len(self.hot_pixels)), counts)
            pix = np.concatenate([pix, self.hot_pixels[hot]])
            nt = np.concatenate([nt, t_a + rng.random(len(hot)) * (t_b - t_a)])
            on = np.concatenate([on, rng.random(len(hot)) < self._hot_on[hot]])
        if t_before is not None and len(pix):
            sig_pix = y.astype(np.int64) * self.width + x
            order = np.lexsort((nt, pix))
            ok = _noise_keep(t, sig_pix, nt, pix, order, t_before.ravel(),
                             self._t_last.ravel(), cfg.refractory_s * 1e9)
            pix, nt, on = pix[ok], nt[ok], on[ok]
        n = len(pix)
        return (np.concatenate([t, nt]),
                np.concatenate([x, (pix % self.width).astype(np.uint16)]),
                np.concatenate([y, (pix // self.width).astype(np.uint16)]),
                np.concatenate([p, on.astype(np.uint8)]),
                np.concatenate([lab, np.full(n, LABEL_NOISE, np.uint8)]))
