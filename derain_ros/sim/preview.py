"""Pictures of a synthesised frame: clean | rainy | rain layer | events, side by side.

Used by ``derain-ros synth --preview PNG`` (and for the figures in ``docs/``), so that a
user can see at a glance what a configuration makes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from derain_ros.events.render import render_events, to_uint8
from derain_ros.records import EventBatch
from derain_ros.sim.errors import SimError
from derain_ros.sim.esim import LABEL_RAIN
from derain_ros.sim.synth import SynthFrame

__all__ = ["event_image", "montage", "write_png"]

_RAIN_TINT = np.array([0, 170, 170], np.uint8)


def event_image(events: EventBatch, labels: np.ndarray | None = None,
                by_label: bool = False) -> np.ndarray:
    """RGB uint8 H x W x 3: ON blue, OFF red, on black (the project's one convention,
    :func:`derain_ros.events.render.render_events`; brighter with more events).

    With ``by_label``, rain events are drawn cyan and the others grey instead (on black).
    """
    if by_label and labels is not None:
        img = np.zeros((events.height, events.width, 3), np.uint8)
        rain = labels == LABEL_RAIN
        img[events.y[~rain], events.x[~rain]] = 120
        img[events.y[rain], events.x[rain]] = _RAIN_TINT
        return img
    return to_uint8(render_events(events))


def _u8(image: np.ndarray) -> np.ndarray:
    arr = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def montage(frame: SynthFrame, rain_gain: float = 4.0) -> np.ndarray:
    """RGB uint8: clean | rainy | rain layer (x ``rain_gain``) | events, captioned."""
    tiles = [("clean", _u8(frame.clean)), ("rainy", _u8(frame.rainy)),
             (f"rain layer x{rain_gain:g}", _u8(frame.rain * rain_gain)),
             (f"events ({len(frame.events)}: ON blue, OFF red)", event_image(frame.events))]
    if frame.drop_mask.any():
        tiles.insert(3, ("lens-drop mask", _u8(frame.drop_mask)))
    h, w = tiles[0][1].shape[:2]
    scale = max(1, round(320 / w))
    bar = 22
    out = []
    for caption, tile in tiles:
        big = cv2.resize(tile, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        head = np.full((bar, big.shape[1], 3), 255, np.uint8)
        cv2.putText(head, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        out.append(np.vstack([head, big]))
        out.append(np.full((h * scale + bar, 4, 3), 255, np.uint8))
    return np.hstack(out[:-1])


def write_png(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (raises SimError when it cannot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise SimError(f"cannot write {path}")
