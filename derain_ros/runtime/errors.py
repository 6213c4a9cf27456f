"""The runtime back-ends' errors (see :mod:`derain_ros.errors` for the hierarchy)."""

from __future__ import annotations

from derain_ros.errors import ConfigError, ModelError


class UnknownBackendError(ConfigError):
    """A back-end name that is not in :data:`derain_ros.runtime.BACKENDS`."""


class BackendUnavailableError(ConfigError):
    """The back-end or device asked for cannot run here (package, provider or GPU missing)."""


class Int8GuardError(ModelError):
    """The int8 graph's output strayed too far from the fp32 graph's (or was not finite)
    on the held-back calibration clips: the runner stays on fp32."""


class RunnerInputError(ModelError):
    """The arrays given to a runner have the wrong rank, shape or presence."""


__all__ = ["BackendUnavailableError", "Int8GuardError", "RunnerInputError", "UnknownBackendError"]
