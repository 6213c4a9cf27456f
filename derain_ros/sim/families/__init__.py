"""Rain families: independent appearance models of rain, drawn per clip.

A network trained on one rain renderer learns that renderer (background.md section 5:
+4.6 dB on its own rain, +0.4 dB on an independent generator's). So the simulator has
several families, each its own model with its own references and parameter ranges:

=================  ======================================================================
``particles``      3-D drops with exposure-dependent motion blur and camera pan (rain.py)
``streak_layers``  Rain100H/Rain800-style texture layers, blended add/screen/alpha/max
``veil``           heavy rain: ``T (B + R) + (1 - T) A`` (Li et al. CVPR 2019)
``lens_drops``     refracting, defocused drops on the lens that slide and land (lens.py)
``splash``         road splashes (ballistic droplets) and vehicle spray plumes
``night``          dark scene, lamps and headlights with bloom, lamp-lit streaks, glare
=================  ======================================================================

API::

    family = make_rain(name, rng, width, height, fps, exposure_s, intensity=None, **fixed)
    rainy = family.render(family.scene(clean_linear, t), t0_s, t1_s, environment)
    name = sample_family(rng, exclude=("night",))     # one family per clip, for training

Everything is deterministic for a given ``numpy.random.Generator`` state. The synthesis
pipeline (:class:`~derain_ros.sim.synth.SynthConfig` ``family``) renders a family at the
frame's exposure for the frames and at every sub-step for the event simulator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from derain_ros.sim.errors import SimConfigError
from derain_ros.sim.families.base import FamilyParams, RainFamily
from derain_ros.sim.families.lens_drops import LensDropParams, LensDropRain
from derain_ros.sim.families.night import NightParams, NightRain
from derain_ros.sim.families.particles import ParticleParams, ParticleRain
from derain_ros.sim.families.splash import SplashParams, SplashRain
from derain_ros.sim.families.streak_layers import StreakLayerParams, StreakLayerRain
from derain_ros.sim.families.veil import VeilParams, VeilRain

__all__ = [
    "FAMILY_MIX",
    "RAIN_FAMILIES",
    "FamilyParams",
    "LensDropParams",
    "LensDropRain",
    "NightParams",
    "NightRain",
    "ParticleParams",
    "ParticleRain",
    "RainFamily",
    "SplashParams",
    "SplashRain",
    "StreakLayerParams",
    "StreakLayerRain",
    "VeilParams",
    "VeilRain",
    "make_rain",
    "sample_family",
]

#: Name -> family class. The order is the draw order of :func:`sample_family`.
RAIN_FAMILIES: dict[str, type[RainFamily]] = {
    cls.name: cls for cls in (ParticleRain, StreakLayerRain, VeilRain, LensDropRain,
                              SplashRain, NightRain)
}

#: The pseudo-family that draws one of :data:`RAIN_FAMILIES` per clip.
FAMILY_MIX = "mix"


def family_class(name: str) -> type[RainFamily]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    try:
        return RAIN_FAMILIES[name]
    except KeyError:
        raise SimConfigError(f"unknown rain family {name!r}; known: "
                             f"{', '.join(RAIN_FAMILIES)} (or {FAMILY_MIX!r})") from None


def check_exclude(exclude: Iterable[str]) -> tuple[str, ...]:
    """``exclude`` as a tuple of known family names (raises for an unknown one)."""
    names = tuple(exclude)
    for name in names:
        family_class(name)
    if set(names) >= set(RAIN_FAMILIES):
        raise SimConfigError("every rain family is excluded; nothing left to draw")
    return names


def sample_family(rng: np.random.Generator, exclude: Iterable[str] = (),
                  weights: Mapping[str, float] | None = None) -> str:
    """One family name drawn from ``rng`` (uniform, or by ``weights``), never an excluded one.

    For leave-one-family-out training: ``sample_family(rng, exclude=("night",))``.
    """
    excluded = set(check_exclude(exclude))
    names = [n for n in RAIN_FAMILIES if n not in excluded]
    w = np.array([float((weights or {}).get(n, 1.0)) for n in names])
    if not (np.all(w >= 0) and w.sum() > 0):
        raise SimConfigError(f"family weights must be >= 0 with a positive sum, got {weights}")
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def make_rain(name: str, rng: np.random.Generator, width: int, height: int,
              fps: float = 30.0, exposure_s: float | None = None, *,
              focal_px: float | None = None, intensity: float | None = None,
              exclude: Iterable[str] = (), **fixed: Any) -> RainFamily:
    """A family with parameters drawn from ``rng`` for a ``width`` x ``height`` camera.

    ``name`` is a key of :data:`RAIN_FAMILIES`, or ``"mix"`` (a family drawn by
    :func:`sample_family` with ``exclude``). ``exposure_s`` defaults to 1/fps;
    ``focal_px`` to a 60 degree horizontal field of view; ``intensity`` in [0, 1]
    (drizzle .. downpour) is drawn when None; ``fixed`` sets parameters by name
    (the family's ``Params`` fields) instead of drawing them.
    """
    if name == FAMILY_MIX:
        name = sample_family(rng, exclude)
    elif exclude:
        check_exclude(exclude)
    return family_class(name).sample(rng, width=width, height=height, fps=fps,
                                     exposure_s=exposure_s, focal_px=focal_px,
                                     intensity=intensity, **fixed)
