"""Errors of bag replay and evaluation.

``derain_ros.errors`` has no area base for evaluation yet, so :class:`EvalError` is the
base here (derived from :class:`~derain_ros.errors.DerainError`, so the CLI reports it
as a plain message, not a traceback).
"""

from __future__ import annotations

from derain_ros.errors import DerainError

__all__ = [
    "EvalError",
    "EventsNotReceivedError",
    "FramesMismatchError",
    "NoFramesError",
    "NoReferenceError",
    "NodeNotFoundError",
    "ReplayError",
    "RosEnvironmentError",
]


class EvalError(DerainError):
    """Replay or evaluation failed."""


class NoFramesError(EvalError):
    """The bag has no camera frames (e.g. a recording with events only)."""


class ReplayError(EvalError):
    """A bag could not be replayed through the node."""


class NodeNotFoundError(ReplayError):
    """The deraining node did not appear on the DDS graph in time."""


class FramesMismatchError(ReplayError):
    """Lossless replay: frames out differ from frames in."""


class EventsNotReceivedError(ReplayError):
    """The bag has events, but none reached the node (an event topic or type mismatch:
    the node would derain frames only, silently)."""


class RosEnvironmentError(ReplayError):
    """ROS would start with DDS discovery not limited to this machine."""


class NoReferenceError(EvalError):
    """A no-reference score cannot be computed for this input (too small, unavailable)."""
