"""Records shared by every layer: events and trigger events as struct-of-arrays.

This module depends on numpy only. Decoders produce these records, the synchroniser
cuts them into windows, voxel grids consume them, the simulator emits them and the
encoders turn them back into driver payloads. No layer passes ROS messages around.

Units and conventions (the same everywhere in the package):

- ``t``: sensor time in nanoseconds, ``int64``.
- ``x``, ``y``: pixel column and row, ``uint16``, ``0 <= x < width``, ``0 <= y < height``.
- ``p``: polarity, ``uint8``, 1 for ON (brightness increase), 0 for OFF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from derain_ros.errors import EventError

__all__ = ["EventBatch", "TriggerBatch"]


def _as(array: np.ndarray | Sequence[int], dtype: type[np.generic]) -> np.ndarray:
    out = np.asarray(array)
    if out.ndim != 1:
        raise EventError(f"event fields must be 1-D arrays, got shape {out.shape}")
    return out.astype(dtype, copy=False)


@dataclass(frozen=True, slots=True, eq=False)
class EventBatch:
    """Events of one sensor as parallel arrays (struct of arrays).

    The arrays are equal in length; events are in arrival order, which for a healthy
    stream is non-decreasing in ``t``. ``width`` and ``height`` give the sensor size in
    pixels; a batch never holds coordinates outside it.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", _as(self.t, np.int64))
        object.__setattr__(self, "x", _as(self.x, np.uint16))
        object.__setattr__(self, "y", _as(self.y, np.uint16))
        object.__setattr__(self, "p", _as(self.p, np.uint8))
        n = len(self.t)
        if not (len(self.x) == len(self.y) == len(self.p) == n):
            raise EventError(
                "event field lengths differ: "
                f"t={n} x={len(self.x)} y={len(self.y)} p={len(self.p)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise EventError(f"sensor size must be positive, got {self.width}x{self.height}")

    @classmethod
    def empty(cls, width: int, height: int) -> EventBatch:
        """A batch with no events for a ``width`` x ``height`` sensor."""
        z = np.empty(0, np.int64)
        return cls(z, z.astype(np.uint16), z.astype(np.uint16), z.astype(np.uint8), width, height)

    @classmethod
    def concatenate(cls, batches: Sequence[EventBatch], width: int | None = None,
                    height: int | None = None) -> EventBatch:
        """Join batches of the same sensor in the order given."""
        if not batches:
            if width is None or height is None:
                raise EventError("concatenating no batches needs width and height")
            return cls.empty(width, height)
        w, h = batches[0].width, batches[0].height
        for b in batches[1:]:
            if (b.width, b.height) != (w, h):
                raise EventError(f"cannot join batches of {w}x{h} and {b.width}x{b.height}")
        if len(batches) == 1:
            return batches[0]
        return cls(
            np.concatenate([b.t for b in batches]),
            np.concatenate([b.x for b in batches]),
            np.concatenate([b.y for b in batches]),
            np.concatenate([b.p for b in batches]),
            w,
            h,
        )

    @classmethod
    def _unchecked(cls, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                   width: int, height: int) -> EventBatch:
        """A batch from arrays a decoder kernel just made, without re-validating them.

        Only for producers that guarantee the invariants (dtypes int64/uint16/uint16/uint8,
        equal lengths, coordinates in bounds): the checks cost several µs per packet, a
        large share of decoding a 1 ms packet. Everyone else uses the constructor.
        """
        batch = object.__new__(cls)
        setattr_ = object.__setattr__  # the dataclass is frozen
        setattr_(batch, "t", t)
        setattr_(batch, "x", x)
        setattr_(batch, "y", y)
        setattr_(batch, "p", p)
        setattr_(batch, "width", width)
        setattr_(batch, "height", height)
        return batch

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, index: slice | np.ndarray) -> EventBatch:
        """Select events by slice, boolean mask or index array."""
        return EventBatch(self.t[index], self.x[index], self.y[index], self.p[index],
                          self.width, self.height)

    def split_at(self, t_ns: int) -> tuple[EventBatch, EventBatch]:
        """Split a time-ordered batch into the events before ``t_ns`` and the rest."""
        i = int(np.searchsorted(self.t, t_ns, side="left"))
        return self[:i], self[i:]

    def equals(self, other: EventBatch) -> bool:
        """True when both batches hold the same events for the same sensor size."""
        return (
            (self.width, self.height) == (other.width, other.height)
            and np.array_equal(self.t, other.t)
            and np.array_equal(self.x, other.x)
            and np.array_equal(self.y, other.y)
            and np.array_equal(self.p, other.p)
        )


@dataclass(frozen=True, slots=True, eq=False)
class TriggerBatch:
    """External trigger events: ``t`` in ns, ``edge`` 1 rising / 0 falling, ``id`` channel."""

    t: np.ndarray
    edge: np.ndarray
    id: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", _as(self.t, np.int64))
        object.__setattr__(self, "edge", _as(self.edge, np.uint8))
        object.__setattr__(self, "id", _as(self.id, np.uint8))
        if not (len(self.edge) == len(self.id) == len(self.t)):
            raise EventError("trigger field lengths differ")

    @classmethod
    def empty(cls) -> TriggerBatch:
        """A batch with no trigger events."""
        z = np.empty(0, np.int64)
        return cls(z, z.astype(np.uint8), z.astype(np.uint8))

    @classmethod
    def concatenate(cls, batches: Sequence[TriggerBatch]) -> TriggerBatch:
        """Join trigger batches in the order given."""
        if not batches:
            return cls.empty()
        return cls(
            np.concatenate([b.t for b in batches]),
            np.concatenate([b.edge for b in batches]),
            np.concatenate([b.id for b in batches]),
        )

    def __len__(self) -> int:
        return len(self.t)
