"""Rain calibration without ground truth: match the simulator to a recording's statistics.

The re-rain self-training of :mod:`derain_training.adapt` renders fresh synthetic rain onto
a network's derained frames. It helps only when that rain looks like the recording's
(an experiment: +1.9 dB when the density matched, calibrated by the event rate per
frame), so the simulator's ``family`` / ``family_intensity`` / ``sensor_model`` are
fitted to statistics that need no ground truth:

- ``rate``: events per pixel per frame interval (the density of rain in the events;
  size-free), the main term;
- ``rate_cv``: temporal spread, std / mean of the per-window event counts;
- ``spatial_cv``: spatial spread, std / mean of event counts summed over the windows in
  an 8 x 8 grid of cells;
- ``orientation`` (radians, [0, pi)) and ``coherence`` (0-1) of the streak-like
  structures: the structure tensor of each window's event count image (ON + OFF),
  summed; the streak direction is perpendicular to the dominant gradient direction;
- ``length``: how far (px) along that direction the count image stays correlated
  (normalised autocorrelation >= 0.5), a streak-length proxy;
- ``diff_energy``: mean squared difference of consecutive grey frames (rain flickers).

A recording is measured through the project's sync code (:func:`measure_bag`, the
node's ``windows_from_bag``); a candidate by rendering its rain onto the derained frames
with the simulator (:func:`measure_candidate`, the same ``(t_prev, t]`` windows).
:func:`fit_rain` runs a two-stage search (every family at three intensities, then the
best families at finer intensities and both sensor presets) and keeps the candidate
with the smallest :func:`stat_distance`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Candidate",
    "FitResult",
    "RainStats",
    "StatsAccumulator",
    "fit_rain",
    "fit_table",
    "measure_bag",
    "measure_candidate",
    "stat_distance",
]

_CELLS = 8
_MAX_LAG = 24


@dataclass(frozen=True)
class RainStats:
    """Statistics of a recording or a rendered candidate (see the module docstring)."""

    rate: float
    rate_cv: float
    spatial_cv: float
    orientation: float
    coherence: float
    length: float
    diff_energy: float
    windows: int

    def as_dict(self) -> dict[str, float]:
        """Rounded plain data."""
        return {k: (round(v, 6) if isinstance(v, float) else v)
                for k, v in dataclasses.asdict(self).items()}


def _grey(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    if frame.dtype == np.uint8:
        f = f / 255.0
    return f.mean(axis=2) if f.ndim == 3 else f


def _box3(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    out = np.zeros((h, w), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + h, dx:dx + w]
    return out / 9.0


class StatsAccumulator:
    """Streams windows in (events' x/y, the frame) and gives :class:`RainStats`."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.jxx = self.jyy = self.jxy = 0.0
        self.cells: np.ndarray | None = None
        self.acorr_sum: np.ndarray | None = None
        self.acorr_n = 0
        self.diff: list[float] = []
        self.prev: np.ndarray | None = None
        self.pixels = 1

    def add(self, x: np.ndarray, y: np.ndarray, frame: np.ndarray | None, height: int,
            width: int, has_prev: bool = True) -> None:
        """One window: its events' coordinates and its frame (H x W [x C])."""
        self.pixels = height * width
        if frame is not None:
            g = _grey(frame)
            if self.prev is not None and self.prev.shape == g.shape and has_prev:
                self.diff.append(float(np.mean((g - self.prev) ** 2)))
            self.prev = g
        if not has_prev:
            return
        n = len(x)
        self.counts.append(n)
        img = np.zeros((height, width), np.float32)
        if n:
            np.add.at(img, (y.astype(np.intp), x.astype(np.intp)), 1.0)
        ch, cw = max(height // _CELLS, 1), max(width // _CELLS, 1)
        cells = img[:ch * _CELLS, :cw * _CELLS].reshape(_CELLS, ch, _CELLS, cw).sum(axis=(1, 3))
        self.cells = cells if self.cells is None else self.cells + cells
        if n < 8:
            return
        s = _box3(img)
        gy, gx = np.gradient(s)
        self.jxx += float(np.sum(gx * gx))
        self.jyy += float(np.sum(gy * gy))
        self.jxy += float(np.sum(gx * gy))
        z = s - s.mean()
        f = np.fft.rfft2(z)
        ac = np.fft.irfft2(f * np.conj(f), s=z.shape)
        if ac[0, 0] > 0:
            ac = ac / ac[0, 0]
            self.acorr_sum = ac if self.acorr_sum is None else self.acorr_sum + ac
            self.acorr_n += 1

    def result(self) -> RainStats:
        """The statistics of every window added."""
        counts = np.asarray(self.counts, np.float64)
        mean = float(counts.mean()) if len(counts) else 0.0
        rate = mean / self.pixels
        rate_cv = float(counts.std() / mean) if mean > 0 else 0.0
        cells = self.cells if self.cells is not None else np.zeros(1)
        spatial_cv = float(cells.std() / cells.mean()) if cells.mean() > 0 else 0.0
        jxx, jyy, jxy = self.jxx, self.jyy, self.jxy
        trace = jxx + jyy
        coherence = (math.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / trace) if trace > 0 else 0.0
        grad_dir = 0.5 * math.atan2(2 * jxy, jxx - jyy)
        orientation = (grad_dir + math.pi / 2) % math.pi  # streaks run across the gradient
        length = 0.0
        if self.acorr_sum is not None and self.acorr_n:
            ac = self.acorr_sum / self.acorr_n
            h, w = ac.shape
            dx, dy = math.cos(orientation), math.sin(orientation)
            length = float(_MAX_LAG)
            for lag in range(1, _MAX_LAG + 1):
                yy = round(lag * dy) % h
                xx = round(lag * dx) % w
                if ac[yy, xx] < 0.5:
                    length = float(lag)
                    break
        diff = float(np.mean(self.diff)) if self.diff else 0.0
        return RainStats(rate, rate_cv, spatial_cv, orientation, coherence, length, diff,
                         len(self.counts))


def measure_bag(path: str | Path, *, max_frames: int | None = None,
                image_topic: str | None = None, event_topic: str | None = None,
                first: int = 0) -> RainStats:
    """Statistics of a recording's windows ``first .. max_frames`` (the node's sync code).

    Raises :class:`derain_ros.errors.SyncError` for a bag without frames.
    """
    from derain_ros.conventions import EVENT_TOPIC, IMAGE_TOPIC
    from derain_ros.sync import windows_from_bag

    acc = StatsAccumulator()
    for i, w in enumerate(windows_from_bag(path, image_topic or IMAGE_TOPIC,
                                           event_topic or EVENT_TOPIC, extra_topics=())):
        if max_frames is not None and i >= max_frames:
            break
        if i < first:
            continue
        ev = w.events
        acc.add(ev.x, ev.y, w.image.to_network(), w.image.height, w.image.width,
                has_prev=w.t_prev_ns is not None and not w.events_missing)
    return acc.result()


@dataclass(frozen=True)
class Candidate:
    """One setting of the simulator's rain."""

    family: str
    intensity: float
    sensor_model: str

    def label(self) -> str:
        """``family@intensity/sensor``."""
        return f"{self.family}@{self.intensity:.2f}/{self.sensor_model}"


def measure_candidate(frames_spec: str, cand: Candidate, *, n_frames: int, seed: int,
                      color: bool = True, fps: float = 30.0) -> RainStats:
    """Render ``cand``'s rain onto the frames of ``frames_spec`` (a ``frames:`` source) and
    measure the rendered clip as a recording would be measured. The frames are derained
    ones: they keep the recording's scene (a night stays dark), so a family's scene change
    is not applied again (``scene_applied``)."""
    from derain_ros.sim import SynthConfig, synthesize_clip

    cfg = SynthConfig(source=frames_spec, n_frames=n_frames, seed=seed, color=color, fps=fps,
                      family=cand.family, family_intensity=cand.intensity, rain="random",
                      sensor_model=cand.sensor_model, scene_applied=True, threads=1)
    acc = StatsAccumulator()
    for f in synthesize_clip(cfg):
        h, w = f.rainy.shape[:2]
        acc.add(f.events.x, f.events.y, f.rainy, h, w, has_prev=f.t_prev_ns is not None)
    return acc.result()


def stat_distance(a: RainStats, b: RainStats) -> float:
    """How far candidate ``a`` is from recording ``b`` (0: the same statistics).

    Log ratios for the scale-like statistics (rate weighted 3, the rest 0.5), the
    orientation difference weighted by how streak-like both are, and absolute
    differences of the spreads.
    """
    def lr(u: float, v: float, floor: float) -> float:
        return abs(math.log((u + floor) / (v + floor)))

    d = 3.0 * lr(a.rate, b.rate, 1e-4)
    d += 0.5 * abs(a.rate_cv - b.rate_cv) + 0.5 * lr(a.spatial_cv, b.spatial_cv, 0.05)
    dtheta = abs(a.orientation - b.orientation) % math.pi
    dtheta = min(dtheta, math.pi - dtheta)
    d += 1.0 * min(a.coherence, b.coherence) * dtheta
    d += 0.5 * abs(a.coherence - b.coherence)
    d += 0.5 * lr(a.length, b.length, 1.0) + 0.5 * lr(a.diff_energy, b.diff_energy, 1e-5)
    return float(d)


@dataclass
class FitResult:
    """The chosen rain and every candidate tried (label, distance, stats)."""

    best: Candidate
    distance: float
    recording: RainStats
    tried: list[tuple[Candidate, float, RainStats]]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report and the provenance."""
        return {"family": self.best.family, "intensity": round(self.best.intensity, 3),
                "sensor_model": self.best.sensor_model, "distance": round(self.distance, 4),
                "recording": self.recording.as_dict(),
                "tried": [{"candidate": c.label(), "distance": round(d, 4),
                           "stats": s.as_dict()} for c, d, s in self.tried]}


def fit_rain(recording: RainStats, frames_spec: str, *, n_frames: int = 6, seed: int = 11,
             families: Sequence[str] | None = None,
             intensities: Sequence[float] = (0.25, 0.5, 0.75),
             sensors: Sequence[str] = ("clean", "noisy"), refine: int = 2,
             color: bool = True, progress: bool = True) -> FitResult:
    """Search family / intensity / sensor so that re-rained clips match ``recording``.

    Stage 1: every family at ``intensities`` with the first sensor preset. Stage 2: the
    ``refine`` best families at +-0.125 around their best intensity (clipped to
    [0.05, 1]) with every sensor preset. One seed for all candidates (common random
    numbers), so the search compares rain settings, not seeds.
    """
    from tqdm.auto import tqdm

    from derain_ros.sim.families import RAIN_FAMILIES

    fams = list(families or RAIN_FAMILIES)
    tried: dict[Candidate, tuple[float, RainStats]] = {}

    def run(cands: Iterable[Candidate], desc: str) -> None:
        todo = [c for c in cands if c not in tried]
        for c in tqdm(todo, desc=desc, unit="cand", disable=not progress, leave=False):
            s = measure_candidate(frames_spec, c, n_frames=n_frames, seed=seed, color=color)
            tried[c] = (stat_distance(s, recording), s)

    run([Candidate(f, float(i), sensors[0]) for f in fams for i in intensities],
        "calibrate 1/2")
    best_per_family: dict[str, tuple[float, Candidate]] = {}
    for c, (d, _) in tried.items():
        if c.family not in best_per_family or d < best_per_family[c.family][0]:
            best_per_family[c.family] = (d, c)
    top = sorted(best_per_family.values(), key=lambda t: t[0])[:max(refine, 1)]
    stage2 = []
    for _, c in top:
        for di in (-0.125, 0.0, 0.125):
            i = float(min(max(c.intensity + di, 0.05), 1.0))
            stage2 += [Candidate(c.family, round(i, 3), s) for s in sensors]
    run(stage2, "calibrate 2/2")
    best = min(tried, key=lambda c: tried[c][0])
    ordered = sorted(tried.items(), key=lambda kv: kv[1][0])
    return FitResult(best, tried[best][0], recording,
                     [(c, d, s) for c, (d, s) in ordered])


def fit_table(fit: FitResult, rows: int = 8) -> str:
    """The recording's statistics and the best candidates, as an aligned table."""
    head = ["", "events/px/frame", "rate cv", "spatial cv", "orient deg", "coherence",
            "length px", "diff energy", "distance"]

    def row(name: str, s: RainStats, d: float | None) -> list[str]:
        return [name, f"{s.rate:.4f}", f"{s.rate_cv:.2f}", f"{s.spatial_cv:.2f}",
                f"{math.degrees(s.orientation):.0f}", f"{s.coherence:.2f}",
                f"{s.length:.0f}", f"{s.diff_energy:.2e}", "" if d is None else f"{d:.3f}"]

    table = [head, row("recording", fit.recording, None)]
    for c, d, s in fit.tried[:rows]:
        table.append(row(c.label() + (" *" if c == fit.best else ""), s, d))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in table)
