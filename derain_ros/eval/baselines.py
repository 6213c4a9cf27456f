"""Classical baselines for the quality table: what the network has to beat.

- ``rainy``: the rainy input itself (no processing).
- ``median_clip``: the per-pixel temporal median over the whole clip. Rain streaks
  cover a pixel in few frames, so the median removes them completely on a static
  scene; it also removes anything that moves (the scene's own motion), which is why it
  is a baseline and not an answer.
- ``median_5``: a centred sliding median over 5 frames (fewer at the clip's ends):
  keeps slow scene motion, removes streaks that stay under 3 frames at a pixel.

All work on float images (H x W x C, [0, 1]) and return one image per input frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["BASELINES", "Baseline", "run_baseline", "temporal_median"]

Baseline = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def temporal_median(frames: Sequence[np.ndarray], window: int | None = None) -> list[np.ndarray]:
    """Per-pixel median over time, one result per frame.

    Args:
        frames: images of one shape (H x W or H x W x C).
        window: ``None`` for the median of the whole clip (the same image for every
            frame), or an odd number of frames for a centred sliding median (clipped at
            the clip's ends).
    """
    if not frames:
        return []
    stack = np.stack([np.asarray(f, np.float32) for f in frames])
    n = len(stack)
    if window is None:
        med = np.median(stack, axis=0)
        return [med] * n
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the median window must be a positive odd number, got {window}")
    half = window // 2
    return [np.median(stack[max(0, i - half):i + half + 1], axis=0) for i in range(n)]


#: baseline name -> (label for reports, function)
BASELINES: dict[str, tuple[str, Baseline]] = {
    "rainy": ("rainy input", lambda frames: [np.asarray(f, np.float32) for f in frames]),
    "median_clip": ("temporal median (clip)", temporal_median),
    "median_5": ("temporal median (5 frames)", lambda frames: temporal_median(frames, 5)),
}


def run_baseline(name: str, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the baseline called ``name`` (a key of :data:`BASELINES`) on ``frames``."""
    try:
        _, fn = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None
    return fn(frames)
