"""Training-set plans (derain_training.synthetic.plan_clips): families, dry share, motion.

Why motion matters: a network that only saw the simulator's default camera speed over a
still (20 px/s, under a pixel a frame) learns to average its neighbour frames, and ghosts
on real video (bench/RESULTS.md, "Quality across rain families").
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from derain_training.synthetic import plan_clips, without_family

FAMILIES = ["particles", "veil"]
SOURCES = ["skimage:camera", "skimage:coffee"]


def _plan(**kw: object) -> list:
    args: dict = {"sources": SOURCES, "families": FAMILIES, "sizes": [(64, 48)], "frames": 4}
    return plan_clips(40, 3, **{**args, **kw})


def test_camera_speeds_are_log_uniform_and_leave_the_rest_of_the_plan_alone() -> None:
    still = _plan()
    moving = _plan(camera_speed=(10.0, 720.0))
    assert all(s.camera_speed_px_s is None for s in still)
    speeds = np.array([s.camera_speed_px_s for s in moving])
    assert speeds.min() >= 10.0 and speeds.max() <= 720.0
    # log-uniform: about half the clips below the geometric mean (~85 px/s)
    assert 10 <= int((speeds < np.sqrt(10.0 * 720.0)).sum()) <= 30
    assert speeds.max() / speeds.min() > 10
    for a, b in zip(still, moving, strict=True):
        assert b.name == f"{a.name}_v{b.camera_speed_px_s:.0f}"
        assert replace(b, name=a.name, camera_speed_px_s=None) == a
    assert _plan(camera_speed=(10.0, 720.0)) == moving  # same seed, same plan
    with pytest.raises(ValueError, match="camera_speed"):
        _plan(camera_speed=(0.0, 10.0))


def test_dry_share_and_leaving_a_family_out() -> None:
    specs = _plan(dry_fraction=0.5)
    dry = [s for s in specs if s.family == "none"]
    assert 10 <= len(dry) <= 30
    wet = [s.family for s in specs if s.family != "none"]
    assert abs(wet.count("particles") - wet.count("veil")) <= 1  # families in rotation
    assert {s.family for s in without_family(specs, "veil")} == {"particles", "none"}


@pytest.mark.slow
def test_a_fast_clip_moves_and_a_default_one_barely_does() -> None:
    """The speed reaches the simulator: frame-to-frame change grows with it."""
    from derain_ros.sim import synthesize_clip

    base = _plan(dry_fraction=1.0)[0]

    def mean_step(speed: float | None) -> float:
        spec = replace(base, camera_speed_px_s=speed, frames=4)
        frames = [f.clean for f in synthesize_clip(spec.synth_config())]
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(frames)]))

    assert mean_step(600.0) > 3 * mean_step(None)
