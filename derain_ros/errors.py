"""The exception hierarchy of derain_ros.

Every error the package raises on purpose derives from :class:`DerainError`, so a
caller (the node, a CLI) can catch one root and report it. Each area of the package
has its own base class here; modules define specific subclasses of those bases next
to the code that raises them, and translate low-level errors with ``raise ... from``.
"""

from __future__ import annotations


class DerainError(Exception):
    """Root of every error raised on purpose by derain_ros."""


class ConfigError(DerainError):
    """A configuration (parameters, YAML, CLI arguments) is invalid."""


class EventError(DerainError):
    """Event data could not be decoded, encoded or converted."""


class BagError(DerainError):
    """A rosbag could not be opened, read or written."""


class SyncError(DerainError):
    """Frames and events could not be put into a consistent time order."""


class SimError(DerainError):
    """Rain or event synthesis failed (bad source video, bad parameters)."""


class ModelError(DerainError):
    """A network could not be built or run with the given configuration."""


class CheckpointError(ModelError):
    """A checkpoint is missing, corrupt, or does not match the network."""


__all__ = [
    "BagError",
    "CheckpointError",
    "ConfigError",
    "DerainError",
    "EventError",
    "ModelError",
    "SimError",
    "SyncError",
]
