"""The project's one picture of events: **ON blue, OFF red, on black**.

Every event picture is drawn here, with one colour convention:

- ON events (brightness went up, ``p == 1``) light the **blue** channel,
- OFF events (brightness went down, ``p == 0``) light the **red** channel,
- pixels without events stay **black**; a pixel with both is magenta.

Each channel saturates with the amount of events: ``1 - exp(-n / gain)`` for ``n``
events (or a non-negative event mass) at the pixel, ``gain`` = 2 by default (one event:
0.39, two: 0.63, five: 0.92).

Users: the node's ``~/events_image`` (:func:`derain_ros.engine.events_image`), the
simulator's preview (:mod:`derain_ros.sim.preview`) and TensorBoard
(:func:`derain_training.trainer.events_to_rgb`, from voxel grids: positive mass is ON,
negative OFF). numpy only: no torch, no OpenCV.
"""

from __future__ import annotations

import numpy as np

from derain_ros.records import EventBatch

__all__ = ["BACKGROUND_RGB", "OFF_RGB", "ON_RGB", "event_counts", "polarity_rgb",
           "render_events", "to_uint8"]

#: colours of the convention (RGB, [0, 1])
ON_RGB = (0.0, 0.0, 1.0)
OFF_RGB = (1.0, 0.0, 0.0)
BACKGROUND_RGB = (0.0, 0.0, 0.0)
#: events per pixel that light a channel to 1 - 1/e
DEFAULT_GAIN = 2.0


def event_counts(events: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel counts ``(on, off)``, each float32 ``height x width``."""
    h, w = events.height, events.width
    idx = (np.asarray(events.p).astype(np.int64).clip(max=1) * (h * w)
           + np.asarray(events.y).astype(np.int64) * w + np.asarray(events.x).astype(np.int64))
    counts = np.bincount(idx, minlength=2 * h * w)[:2 * h * w].astype(np.float32)
    counts = counts.reshape(2, h, w)
    return counts[1], counts[0]


def polarity_rgb(on: np.ndarray, off: np.ndarray, gain: float = DEFAULT_GAIN) -> np.ndarray:
    """ON and OFF amounts (``H x W``, >= 0) -> float32 RGB ``H x W x 3`` in [0, 1]:
    ON blue, OFF red, black where both are 0 (see the module docstring)."""
    on = np.asarray(on, np.float32)
    off = np.asarray(off, np.float32)
    img = np.zeros((*on.shape, 3), np.float32)
    on_level = 1.0 - np.exp(-np.maximum(on, 0.0) / gain)
    off_level = 1.0 - np.exp(-np.maximum(off, 0.0) / gain)
    for level, colour in ((on_level, ON_RGB), (off_level, OFF_RGB)):
        for c, weight in enumerate(colour):
            if weight:
                img[..., c] += weight * level
    return np.clip(img, 0.0, 1.0, out=img)


def render_events(events: EventBatch, height: int | None = None, width: int | None = None,
                  gain: float = DEFAULT_GAIN) -> np.ndarray:
    """Events as float32 RGB ``H x W x 3`` in [0, 1] (ON blue, OFF red, on black).

    ``height``/``width`` (px): scale the sensor-sized picture to this size (nearest
    neighbour), e.g. to lay it over a camera frame of another size.
    """
    img = polarity_rgb(*event_counts(events), gain=gain)
    h, w = height or events.height, width or events.width
    if (h, w) != img.shape[:2]:
        rows = np.arange(h) * events.height // h
        cols = np.arange(w) * events.width // w
        img = img[rows[:, None], cols[None, :]]
    return img


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 (rounded)."""
    out: np.ndarray = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255)
    return out.astype(np.uint8)
