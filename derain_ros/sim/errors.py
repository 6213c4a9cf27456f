"""Errors of the simulator, all under :class:`derain_ros.errors.SimError`.

Each names one kind of bad input so that a caller (the CLI, a test, training) can
tell "your video is broken" from "your parameters are wrong" from "the disk failed".
"""

from __future__ import annotations

from derain_ros.errors import BagError, ConfigError, SimError

__all__ = [
    "EmptySourceError",
    "OutputExistsError",
    "ResolutionMismatchError",
    "SimConfigError",
    "SourceError",
    "SynthWriteError",
]


class SimConfigError(SimError, ConfigError):
    """A synthesis parameter is out of range or inconsistent (e.g. zero frames)."""


class SourceError(SimError):
    """A source cannot be opened or decoded: unknown name, missing or unreadable file."""


class EmptySourceError(SourceError):
    """A source opened but holds no frame at all."""


class ResolutionMismatchError(SimError):
    """A source's frame size does not fit the requested one (or changes mid-stream)."""


class OutputExistsError(SimError, BagError):
    """The output bag path exists and overwriting was not asked for."""


class SynthWriteError(SimError, BagError):
    """Writing the bag failed part-way (e.g. a full disk); no bag was left behind."""
