"""Event-sensor models drawn per clip, so that a network meets many sensors in training.

Real event cameras differ from unit to unit and from day to night: contrast thresholds,
their mismatch across the array, the refractory period, noise, the photoreceptor's
bandwidth, hot pixels, time-stamp jitter. :func:`sample_sensor` returns a
:class:`SensorModel` (a rig's size and an :class:`~derain_ros.sim.esim.EsimConfig`),
fixed for the presets ``clean`` and ``noisy`` and drawn from :data:`RANDOM_RANGES` for
``random``. The pixel model behind each parameter is in :mod:`derain_ros.sim.esim`.

Ranges of ``random`` (``U``: uniform, ``logU``: uniform in the logarithm), per clip:

============================  =======================  =================================
parameter                     range                    note
============================  =======================  =================================
``threshold`` (ON C)          U(0.1, 0.5) log units    DVS biases in use span this
``threshold_off`` (OFF C)     ON C x logU(0.7, 1.4)    ON/OFF asymmetry, kept in 0.1-0.5
``threshold_sigma``           U(0.02, 0.05)            per-pixel mismatch of both
``refractory_s``              logU(0.1, 1) ms
``illuminance``               logU(0.02, 1)            night (street light) .. daylight
``cutoff_hz``                 logU(200, 1000) Hz       white pixel in daylight; a grey
                                                       pixel at night: a few to tens of Hz
``shot_noise_hz`` (bright)    logU(0.1, 1) Hz/pixel
``shot_noise_dark_hz``        logU(1, 5) Hz/pixel      at 1e-3 of daylight white
``leak_hz``                   logU(0.05, 0.2) Hz/pixel ~0.1 Hz
``hot_pixel_fraction``        U(0, 5e-4)               up to a few per 10k pixels
``hot_pixel_hz``              logU(50, 500) Hz         per hot pixel
``jitter_us``                 U(0, 50) µs              standard deviation
``noise_refractory``          True
============================  =======================  =================================

Rigs (:data:`~derain_ros.conventions.SENSOR_SIZES`): ``davis346`` 346 x 260,
``dvxplorer`` 640 x 480, ``evk4`` 1280 x 720 (a Prophesee window). ``rig="random"``
draws one; ``rig=None`` leaves the size to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from derain_ros.conventions import SENSOR_SIZES
from derain_ros.sim.errors import SimConfigError
from derain_ros.sim.esim import EsimConfig

__all__ = [
    "RANDOM_RANGES",
    "SENSOR_PRESETS",
    "SensorModel",
    "sample_sensor",
]


@dataclass(frozen=True, slots=True)
class SensorModel:
    """One event sensor: its rig (None: any size) and its pixel model."""

    preset: str
    rig: str | None
    esim: EsimConfig

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) in px of the rig, or None."""
        return SENSOR_SIZES[self.rig] if self.rig is not None else None


#: (low, high, "lin" or "log") of every drawn parameter of the ``random`` preset.
RANDOM_RANGES: dict[str, tuple[float, float, str]] = {
    "threshold": (0.1, 0.5, "lin"),
    "off_on_ratio": (0.7, 1.4, "log"),
    "threshold_sigma": (0.02, 0.05, "lin"),
    "refractory_s": (1e-4, 1e-3, "log"),
    "illuminance": (0.02, 1.0, "log"),
    "cutoff_hz": (200.0, 1000.0, "log"),
    "shot_noise_hz": (0.1, 1.0, "log"),
    "shot_noise_dark_hz": (1.0, 5.0, "log"),
    "leak_hz": (0.05, 0.2, "log"),
    "hot_pixel_fraction": (0.0, 5e-4, "lin"),
    "hot_pixel_hz": (50.0, 500.0, "log"),
    "jitter_us": (0.0, 50.0, "lin"),
}
_C_RANGE = (0.1, 0.5)


def _clean(_rng: np.random.Generator) -> EsimConfig:
    """A good sensor in daylight: the quiet end of every range."""
    return EsimConfig(threshold=0.2, threshold_off=0.2, threshold_sigma=0.02,
                      refractory_s=1e-4, illuminance=1.0, cutoff_hz=1000.0,
                      shot_noise_hz=0.1, shot_noise_dark_hz=1.0, leak_hz=0.05,
                      hot_pixel_fraction=0.0, hot_pixel_hz=0.0, jitter_us=0.0,
                      noise_refractory=True)


def _noisy(_rng: np.random.Generator) -> EsimConfig:
    """A worn sensor at dusk: asymmetric, mismatched, slow, noisy, some hot pixels."""
    return EsimConfig(threshold=0.25, threshold_off=0.3, threshold_sigma=0.05,
                      refractory_s=5e-4, illuminance=0.05, cutoff_hz=300.0,
                      shot_noise_hz=1.0, shot_noise_dark_hz=5.0, leak_hz=0.2,
                      hot_pixel_fraction=4e-4, hot_pixel_hz=300.0, jitter_us=40.0,
                      noise_refractory=True)


def _draw(rng: np.random.Generator, name: str) -> float:
    lo, hi, scale = RANDOM_RANGES[name]
    if scale == "log":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def _random(rng: np.random.Generator) -> EsimConfig:
    """Every parameter drawn from :data:`RANDOM_RANGES` (in the order of the table)."""
    v = {name: _draw(rng, name) for name in RANDOM_RANGES}
    c_on = v["threshold"]
    c_off = min(max(c_on * v["off_on_ratio"], _C_RANGE[0]), _C_RANGE[1])
    return EsimConfig(threshold=c_on, threshold_off=c_off,
                      threshold_sigma=v["threshold_sigma"], refractory_s=v["refractory_s"],
                      illuminance=v["illuminance"], cutoff_hz=v["cutoff_hz"],
                      shot_noise_hz=v["shot_noise_hz"],
                      shot_noise_dark_hz=v["shot_noise_dark_hz"], leak_hz=v["leak_hz"],
                      hot_pixel_fraction=v["hot_pixel_fraction"],
                      hot_pixel_hz=v["hot_pixel_hz"], jitter_us=v["jitter_us"],
                      noise_refractory=True)


SENSOR_PRESETS: dict[str, Callable[[np.random.Generator], EsimConfig]] = {
    "clean": _clean,
    "noisy": _noisy,
    "random": _random,
}


def sample_sensor(rng: np.random.Generator, preset: str = "random",
                  rig: str | None = None, *, log_eps: float = 0.01) -> SensorModel:
    """A sensor of ``preset`` (:data:`SENSOR_PRESETS`) for ``rig``.

    ``rig``: a key of ``SENSOR_SIZES``, ``"random"`` (drawn, after the pixel model), or
    None. ``log_eps`` is the ``eps`` of ``log(I + eps)``: the caller's, not drawn. The
    same generator state gives the same sensor.
    """
    if preset not in SENSOR_PRESETS:
        raise SimConfigError(f"unknown sensor preset {preset!r}; known: "
                             f"{', '.join(SENSOR_PRESETS)}")
    if rig is not None and rig != "random" and rig not in SENSOR_SIZES:
        raise SimConfigError(f"unknown rig {rig!r}; known: {', '.join(SENSOR_SIZES)}, random")
    esim = SENSOR_PRESETS[preset](rng).replace(log_eps=log_eps)
    if rig == "random":
        rigs = sorted(SENSOR_SIZES)
        rig = rigs[int(rng.integers(len(rigs)))]
    return SensorModel(preset, rig, esim)
