"""How often does the adaptation's rain calibration name the recording's true family?

    .venv/bin/python bench/calibration.py                       # 6 families x 5 scenes
    DERAIN_BENCH_QUICK=1 .venv/bin/python bench/calibration.py  # 2 families x 2 scenes

``derain-train adapt`` fits the simulator's rain to a recording without ground truth
(:func:`derain_training.calibrate.fit_rain`): it renders candidate rains onto the
starting network's derained frames and keeps the one whose event and frame statistics
come closest to the recording's. This benchmark measures that fit on recordings whose
rain is known: every family on the held-out scenes of ``bench/adapt.py`` (its
:func:`recording`, at its size and seed-drawn intensity and sensor), derained by the
shipped ``derain_tiny`` exactly as the adaptation does (its first chunks, its
``frames:`` sources, its fine-tuning part's statistics).

Printed: a row per recording (true rain, fitted rain, distance), then a confusion table
(true family x fitted family) and the share fitted right; last line, JSON:
``{"calibration_family_accuracy": share, "intensity_mae": ..., "runs": n, ...}``
(``intensity_mae`` over the recordings whose family was fitted right).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import adapt as adapt_bench  # noqa: E402  (bench/adapt.py: the same recordings)

QUICK = adapt_bench.QUICK
FAMILIES = ("particles", "streak_layers") if QUICK else (
    "particles", "streak_layers", "veil", "lens_drops", "splash", "night")


def fit_one(scene: str, seed: int, family: str, init: Path) -> dict:
    """Calibrate against one recording as ``derain-train adapt`` does (same settings)."""
    from derain_training.adapt import AdaptConfig, _chunks, _derain_chunks
    from derain_training.calibrate import fit_rain, measure_bag

    bag, meta = adapt_bench.recording(scene, seed, family)
    cfg = AdaptConfig()
    n_fit = int(adapt_bench.REC * 0.6)  # bench/adapt.py's heldout_fraction 0.4
    clip = 6 if QUICK else 8
    chunks = _chunks(0, n_fit, clip, 4)
    npys = _derain_chunks(init, bag, chunks, adapt_bench.DATA / "calibration" / bag.stem,
                          progress=False)
    fit = fit_rain(measure_bag(bag, max_frames=n_fit), f"frames:{npys[0]}",
                   n_frames=min(cfg.calib_frames, clip), sensors=cfg.sensors,
                   progress=False, seed=seed + 11)
    return {**meta, "fitted_family": fit.best.family, "fitted_intensity": fit.best.intensity,
            "fitted_sensor": fit.best.sensor_model, "distance": round(fit.distance, 3)}


def main() -> int:
    from tqdm.auto import tqdm

    from derain_ros.model import default_checkpoint_path

    init = default_checkpoint_path("derain_tiny").with_suffix("")
    scenes = adapt_bench.SCENES
    print(f"calibration benchmark: {len(FAMILIES)} families x {len(scenes)} scenes, "
          f"{adapt_bench.SIZE[0]}x{adapt_bench.SIZE[1]}, derained by the shipped derain_tiny"
          f"{' (QUICK)' if QUICK else ''}", flush=True)
    jobs = [(f, s) for f in FAMILIES for s in scenes]
    rows = []
    for family, scene in tqdm(jobs, desc="calibrate", unit="recording",
                              disable=not sys.stderr.isatty()):
        rows.append(fit_one(scene, 0, family, init))
    print(f"{'scene':24s} {'true rain':>24s} {'fitted':>26s} {'distance':>8s}")
    for r in rows:
        true = f"{r['family']}@{r['intensity']:.2f}/{r['sensor_model']}"
        got = f"{r['fitted_family']}@{r['fitted_intensity']:.2f}/{r['fitted_sensor']}"
        print(f"{r['scene']:24s} {true:>24s} {got:>26s} {r['distance']:8.3f}")
    fitted = sorted({r["fitted_family"] for r in rows} | set(FAMILIES))
    print("\nconfusion (rows: true family, columns: fitted)")
    print(f"{'':14s}" + "".join(f"{f[:10]:>11s}" for f in fitted))
    for fam in FAMILIES:
        counts = [sum(r["family"] == fam and r["fitted_family"] == g for r in rows)
                  for g in fitted]
        print(f"{fam:14s}" + "".join(f"{c:11d}" for c in counts))
    right = [r for r in rows if r["fitted_family"] == r["family"]]
    acc = len(right) / len(rows)
    mae = (float(np.mean([abs(r["fitted_intensity"] - r["intensity"]) for r in right]))
           if right else None)
    print(f"\nfamily fitted right: {len(right)}/{len(rows)} ({100 * acc:.0f} %); "
          f"chance: {100 / len(FAMILIES):.0f} %"
          + (f"; intensity error where right: {mae:.2f}" if mae is not None else ""))
    print(json.dumps({"calibration_family_accuracy": round(acc, 3),
                      "intensity_mae": None if mae is None else round(mae, 3),
                      "runs": len(rows), "families": list(FAMILIES), "quick": QUICK,
                      "per_family": {f: sum(r["family"] == f for r in right)
                                     for f in FAMILIES}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
