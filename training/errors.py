"""Errors of the training package, each under its area's base in :mod:`derain_ros.errors`."""

from __future__ import annotations

from derain_ros.errors import BagError, ConfigError, DerainError


class TrainingError(DerainError):
    """Training could not go on (a non-finite loss, a broken run folder)."""


class TrainConfigError(ConfigError):
    """The training YAML or the command line is invalid (unknown keys, bad values)."""


class DatasetError(BagError):
    """A bag cannot be used for training (no frames, no events, sizes that do not match)."""


class NonFiniteLossError(TrainingError):
    """A loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


__all__ = ["DatasetError", "NonFiniteLossError", "TrainConfigError", "TrainingError"]
