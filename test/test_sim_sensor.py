"""Event-sensor models: presets, determinism, and each non-ideality doing what it says.

The pixel array is driven directly (a few thousand pixels, log levels made by hand), so
each test runs in about a second.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from derain_ros.sim import (
    LABEL_NOISE,
    SENSOR_PRESETS,
    EsimConfig,
    EventSimulator,
    SimConfigError,
    SynthConfig,
    sample_sensor,
    synthesize_clip,
)
from derain_ros.sim.sensor import RANDOM_RANGES

W, H = 64, 48
STEP_NS = 33_333_000  # one frame interval, whole microseconds
QUIET = {"shot_noise_hz": 0.0, "leak_hz": 0.0, "threshold_sigma": 0.0}


def _run(config: EsimConfig, levels, seed: int = 0, substeps: int = 8):
    """Events of a scene whose linear intensity at time t (s) is ``levels(t)`` (H x W)."""
    sim = EventSimulator(config, W, H, np.random.default_rng(seed))
    eps = config.log_eps
    log0 = np.log(levels(0.0) + eps).astype(np.float32)
    sim.reset(log0, 0)
    t_prev, prev = 0, log0
    out = []
    for _ in range(round(1.0 / (STEP_NS * 1e-9))):  # 1 s
        times = np.array([t_prev + round(STEP_NS * j / substeps) for j in range(substeps + 1)],
                         np.int64)
        logs = np.stack([prev] + [np.log(levels(t * 1e-9) + eps) for t in times[1:]])
        logs = logs.astype(np.float32)
        batch, labels = sim.step(logs, np.zeros_like(logs), times)
        out.append((batch, labels))
        t_prev, prev = int(times[-1]), logs[-1]
    t = np.concatenate([b.t for b, _ in out])
    x = np.concatenate([b.x for b, _ in out])
    y = np.concatenate([b.y for b, _ in out])
    lab = np.concatenate([lab for _, lab in out])
    return sim, t, x.astype(np.int64), y.astype(np.int64), lab


def _flat(level: float):
    return lambda _t: np.full((H, W), level, np.float32)


# --- presets and the API ----------------------------------------------------------------

def test_presets_draw_in_their_ranges_and_repeat_per_seed():
    assert set(SENSOR_PRESETS) == {"clean", "noisy", "random"}
    draws = [sample_sensor(np.random.default_rng(s)).esim for s in range(40)]
    assert sample_sensor(np.random.default_rng(3)) == sample_sensor(np.random.default_rng(3))
    assert len({d.threshold for d in draws}) == 40
    for name in ("threshold_sigma", "refractory_s", "illuminance", "cutoff_hz",
                 "shot_noise_hz", "shot_noise_dark_hz", "leak_hz", "hot_pixel_fraction",
                 "hot_pixel_hz", "jitter_us"):
        lo, hi, _ = RANDOM_RANGES[name]
        values = [getattr(d, name) for d in draws]
        assert lo <= min(values) and max(values) <= hi, name
        assert max(values) - min(values) > 0.3 * (hi - lo) or name == "cutoff_hz", name
    assert all(0.1 <= d.threshold <= 0.5 and 0.1 <= d.c_off <= 0.5 for d in draws)
    assert any(abs(d.c_off / d.threshold - 1) > 0.15 for d in draws)  # ON/OFF asymmetry
    clean = sample_sensor(np.random.default_rng(0), "clean").esim
    noisy = sample_sensor(np.random.default_rng(0), "noisy").esim
    assert clean.hot_pixel_fraction == 0 and noisy.hot_pixel_fraction > 0
    assert noisy.shot_noise_dark_hz > clean.shot_noise_dark_hz
    rig = sample_sensor(np.random.default_rng(1), "clean", rig="evk4")
    assert rig.size == (1280, 720)
    assert sample_sensor(np.random.default_rng(1), rig="random").rig in {
        "davis346", "dvxplorer", "evk4"}
    with pytest.raises(SimConfigError, match="known: clean"):
        sample_sensor(np.random.default_rng(0), "foggy")
    with pytest.raises(SimConfigError):
        EsimConfig(threshold=0.2, threshold_off=0.01)
    with pytest.raises(SimConfigError):
        EsimConfig(jitter_us=-1)


def test_synth_sensor_model_is_deterministic_per_seed_and_reaches_the_cli():
    base = SynthConfig(source="skimage:astronaut", width=48, height=32, n_frames=3,
                       rain="heavy", sensor_model="random")

    def events(cfg):
        return [(f.events.t.tobytes(), f.events.x.tobytes(), f.labels.tobytes())
                for f in synthesize_clip(cfg)]

    assert events(base.replace(seed=5)) == events(base.replace(seed=5))
    assert base.replace(seed=5).esim_config() != base.replace(seed=6).esim_config()
    assert SynthConfig().esim_config() == EsimConfig(shot_noise_hz=0.1, leak_hz=0.05)
    with pytest.raises(SimConfigError, match="sensor model"):
        SynthConfig(sensor_model="foggy")
    from derain_ros.sim.cli import add_arguments, config_from_args
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["out", "--sensor-model", "noisy"])
    assert config_from_args(args).sensor_model == "noisy"


# --- each non-ideality ------------------------------------------------------------------

def _flash(t: float) -> np.ndarray:
    """Grey 0.1 with a 1 ms flash to 0.4 at t = 0.5 s (a drop passing, roughly)."""
    return np.full((H, W), 0.4 if 0.5 <= t < 0.501 else 0.1, np.float32)


def test_photoreceptor_low_pass_slows_responses_in_low_light():
    # No refractory period: it would cut the ideal pixel's burst of events short.
    base = EsimConfig(threshold=0.2, refractory_s=0.0, **QUIET)
    counts = {}
    for name, extra in (("ideal", {}), ("day", {"cutoff_hz": 500.0, "illuminance": 1.0}),
                        ("night", {"cutoff_hz": 500.0, "illuminance": 0.02})):
        # Sub-steps of 0.25 ms resolve the flash.
        _, t, *_ = _run(base.replace(**extra), _flash, substeps=132)
        counts[name] = len(t)
    assert counts["ideal"] == 12 * W * H          # log(0.41/0.11) / 0.2: 6 each way
    assert counts["ideal"] >= counts["day"] > counts["night"]
    assert counts["night"] < 0.2 * counts["ideal"]


def test_hot_pixels_fire_at_their_rate():
    cfg = EsimConfig(hot_pixel_fraction=2e-3, hot_pixel_hz=200.0, noise_refractory=True,
                     **QUIET)
    sim, t, x, y, lab = _run(cfg, _flat(0.3))
    assert len(sim.hot_pixels) >= 1
    assert np.all(lab == LABEL_NOISE)
    fired = np.unique(y * W + x)
    assert set(fired.tolist()) == set(sim.hot_pixels.tolist())
    per_pixel = len(t) / len(sim.hot_pixels)
    assert 100 < per_pixel < 400


@pytest.mark.parametrize("light, hz", [(1.0, 0.5), (5e-4, 4.0)])
def test_noise_rates_on_a_static_scene_are_as_configured(light, hz):
    cfg = EsimConfig(shot_noise_hz=0.5, shot_noise_dark_hz=4.0, leak_hz=0.1,
                     threshold_sigma=0.0, noise_refractory=True)
    _, t, _, _, lab = _run(cfg, _flat(light))
    assert np.all(lab == LABEL_NOISE)
    rate = len(t) / (W * H * 1.0)
    assert (hz + 0.1) / 2 < rate < 2 * (hz + 0.1)


def test_refractory_period_holds_for_signal_and_noise():
    rng = np.random.default_rng(7)
    frames = rng.uniform(0.05, 1.0, (40, H, W)).astype(np.float32)

    def flicker(t: float) -> np.ndarray:  # a new random image every 2 ms
        return frames[int(t / 2e-3) % len(frames)]

    cfg = EsimConfig(threshold=0.15, threshold_sigma=0.03, refractory_s=1e-3,
                     shot_noise_hz=20.0, leak_hz=1.0, hot_pixel_fraction=5e-3,
                     hot_pixel_hz=3000.0, noise_refractory=True)
    _, t, x, y, lab = _run(cfg, flicker, substeps=16)
    assert np.any(lab == LABEL_NOISE) and np.any(lab != LABEL_NOISE)
    pix = y * W + x
    order = np.lexsort((t, pix))
    same = pix[order][1:] == pix[order][:-1]
    gaps = np.diff(t[order])[same]
    assert gaps.min() >= 1e-3 * 1e9 - 1000  # whole-µs rounding


def test_time_stamp_jitter_is_bounded():
    # Each pixel crosses the threshold exactly once: a ramp of +0.3 over the first step.
    def ramp(t: float) -> np.ndarray:
        return np.full((H, W), 0.2 * math.exp(min(t, 0.02) / 0.02 * 0.3), np.float32)

    cfg = EsimConfig(threshold=0.2, **QUIET)
    _, t0, x0, y0, _ = _run(cfg, ramp)
    sigma_us = 30.0
    _, t1, x1, y1, _ = _run(cfg.replace(jitter_us=sigma_us), ramp)
    assert len(t0) == len(t1) == W * H
    a = t0[np.lexsort((t0, y0 * W + x0))]
    b = t1[np.lexsort((t1, y1 * W + x1))]
    d_us = (b - a) / 1e3
    assert np.abs(d_us).max() <= 3 * sigma_us + 1
    assert 0.7 * sigma_us < d_us.std() < 1.3 * sigma_us
