"""Synthetic training sets: many rainy rig bags drawn across rain families, sensors, scenes.

Why a planner: a network that has seen one renderer learns that renderer, not rain (the
first shipped network gained +4.6 dB on its own rain and +0.4 dB on an independent
generator). A training set here is a list of :class:`ClipSpec` drawn from a seed: each
clip takes one rain family (``derain_ros.sim.families``), a random event-sensor model
(``derain_ros.sim.sensor``), a scene of the ``train`` split (never a ``test`` scene),
a frame size and grey or colour. The family is recorded per clip, so leave-one-family-out
training is a filter on the same set (:func:`without_family`), and evaluation sets are
drawn the same way from the ``test`` scenes.

Bags are written by the project's simulator in parallel processes (numba and numpy
release little of the GIL). Writing is resumable: a bag that exists is kept (the
simulator writes atomically, so an existing bag is complete), and the manifest
(``manifest.json``) is rewritten as bags land. The size is bounded by the plan itself
(``count`` clips of ``frames`` frames), and the decoded cache by the training loader.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from derain_ros.fileio import atomic_write

__all__ = ["ClipSpec", "plan_clips", "read_manifest", "without_family", "write_clips"]

_log = logging.getLogger(__name__)

#: Manifest file written next to the bags.
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ClipSpec:
    """One synthetic clip: everything the simulator needs, and its file name."""

    name: str
    source: str
    family: str
    intensity: float | None
    sensor_model: str
    width: int
    height: int
    frames: int
    seed: int
    color: bool
    encoding: str = "libcaer"
    #: Camera speed over a still (px/s; None: the simulator's default, 20 px/s).
    camera_speed_px_s: float | None = None
    #: the source already shows the family's scene change (``SynthConfig.scene_applied``)
    scene_applied: bool = False

    def synth_config(self, threads: int = 1) -> Any:
        """The :class:`derain_ros.sim.SynthConfig` of this clip (family ``none``: dry)."""
        from derain_ros.sim import SynthConfig

        dry = self.family == "none"
        config = SynthConfig(source=self.source, width=self.width, height=self.height,
                             n_frames=self.frames, seed=self.seed, color=self.color,
                             family="particles" if dry else self.family,
                             family_intensity=self.intensity, sensor_model=self.sensor_model,
                             encoding=self.encoding, rain=None if dry else "random",
                             scene_applied=self.scene_applied, threads=threads)
        if self.camera_speed_px_s is None:
            return config
        return dataclasses.replace(config, camera_speed_px_s=self.camera_speed_px_s)


def plan_clips(count: int, seed: int, *, sources: Sequence[str], families: Sequence[str],
               sizes: Sequence[tuple[int, int]], frames: int, grey_fraction: float = 0.2,
               sensor_model: str = "random", dry_fraction: float = 0.0,
               prefix: str = "clip",
               camera_speed: tuple[float, float] | None = None) -> list[ClipSpec]:
    """``count`` clips drawn from ``seed`` (families in rotation so each gets its share).

    ``dry_fraction`` of the clips have no rain at all (family ``none``): most of a
    vehicle's hours are dry, and a network must pass those frames through unchanged.

    ``camera_speed`` ``(lo, hi)`` px/s draws each clip's camera speed over a still
    log-uniformly (a vehicle's camera moves from a crawl to tens of pixels a frame; a
    network that only saw the simulator's default 20 px/s, under a pixel a frame at
    30 fps, learns to average its neighbour frames and ghosts on real motion). The draws
    come from their own generator, so the rest of a plan is the same with or without them;
    the speed is in the clip's name. None: the simulator's default.
    """
    rng = np.random.default_rng(seed)
    speeds = None
    if camera_speed is not None:
        lo, hi = camera_speed
        if not 0 < lo <= hi:
            raise ValueError(f"camera_speed must be 0 < lo <= hi px/s, got {camera_speed}")
        speeds = np.exp(np.random.default_rng([seed, 1]).uniform(np.log(lo), np.log(hi), count))
    specs = []
    wet = 0  # families rotate over the rainy clips only, so each keeps its share
    for i in range(count):
        dry = rng.random() < dry_fraction
        family = "none" if dry else families[wet % len(families)]
        wet += not dry
        w, h = sizes[int(rng.integers(len(sizes)))]
        src = sources[int(rng.integers(len(sources)))]
        clip_seed = int(seed * 100_000 + i)
        speed = None if speeds is None else round(float(speeds[i]), 1)
        specs.append(ClipSpec(
            name=f"{prefix}{i:05d}_{family}_{src.replace(':', '-')}_{w}x{h}"
                 + ("" if speed is None else f"_v{speed:.0f}"),
            source=src, family=family, intensity=None, sensor_model=sensor_model,
            width=w, height=h, frames=frames, seed=clip_seed,
            color=bool(rng.random() >= grey_fraction), camera_speed_px_s=speed))
    return specs


def without_family(specs: Iterable[ClipSpec], family: str | None) -> list[ClipSpec]:
    """The clips of another family than ``family`` (all of them for None)."""
    return [s for s in specs if family is None or s.family != family]


def _write_one(spec: ClipSpec, out_dir: str) -> tuple[str, str | None]:
    """Simulate one clip in a worker process; ``(name, problem or None)``."""
    from derain_ros.sim import synthesize

    path = Path(out_dir) / f"{spec.name}.mcap"
    if path.exists():
        return spec.name, None
    try:
        synthesize(spec.synth_config(), path, progress=False)
    except Exception as err:  # one bad clip must not stop the set
        return spec.name, f"{type(err).__name__}: {err}"
    return spec.name, None


def write_clips(specs: Sequence[ClipSpec], out_dir: str | Path, *, workers: int | None = None,
                progress: bool = True) -> list[Path]:
    """Write every clip (skipping existing bags); returns the bags in plan order.

    Clips that fail are logged and left out (counted in the manifest's ``failed``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or (os.cpu_count() or 1))
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_write_one, s, str(out)) for s in specs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="synthesise",
                        unit="clip", disable=not progress):
            name, problem = fut.result()
            if problem:
                failed[name] = problem
                _log.warning("clip %s failed: %s", name, problem)
    bags = [out / f"{s.name}.mcap" for s in specs if (out / f"{s.name}.mcap").exists()]
    manifest = {"clips": [dataclasses.asdict(s) for s in specs], "failed": failed}
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    return bags


def read_manifest(out_dir: str | Path) -> list[ClipSpec]:
    """The clips a :func:`write_clips` folder holds (those written)."""
    out = Path(out_dir)
    data = json.loads((out / MANIFEST).read_text())
    return [ClipSpec(**c) for c in data["clips"]
            if (out / f"{c['name']}.mcap").exists()]
