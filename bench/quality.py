"""Deraining quality on held-out synthetic bags: a table, then one JSON line.

    .venv/bin/python bench/quality.py

Rows (PSNR dB / SSIM in RGB against the clean topic, full frames, every 3-frame clip of
the bag, the centre frame scored): the rainy input; a classical baseline (per-pixel
temporal median of the clip); ``tiny_frames``, ``tiny``, ``base_frames``, ``base`` loaded
from their trained checkpoints (``derain_ros/model/weights/`` for the shipped tiny,
``runs/default/weights/`` for the others, see ``bench/train_default.py``; a missing
checkpoint gives a null row). The evaluation bag uses a source clip and rain seed that
training never sees (:data:`train_default.EVAL_SOURCE`, heavy preset, seed 1000, the
DAVIS346 frame size).

Fine-tuning gain: a bag of another clip with another preset (storm); the tiny
checkpoint is fine-tuned on its first half without ground truth (``unsupervised`` mode,
unpaired clean frames from the training bags) and both networks are scored on the
second, held-out half; ``finetune_gain_db`` is the PSNR difference.

Note: the published ICCV 2023 numbers use a centre 128x128 crop; these are full frames.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_default as plan

from derain_ros.conventions import SENSOR_SIZES

EVAL_SEED = 1000
FINETUNE_SEED = 1001
#: DERAIN_BENCH_QUICK=1: a smoke run (tiny bags, 3 fine-tuning steps, quick weights).
QUICK = bool(os.environ.get("DERAIN_BENCH_QUICK"))
EVAL_FRAMES = 4 if QUICK else 12
FINETUNE_FRAMES = 8 if QUICK else 24
FINETUNE_STEPS = 3 if QUICK else 60
MODELS = {"tiny_frames": "derain_tiny_frames", "tiny": "derain_tiny",
          "base_frames": "derain_base_frames", "base": "derain_base"}


def checkpoint_for(name: str) -> Path | None:
    """Where the trained weights of ``name`` are (None: not trained yet)."""
    folders = [plan.RUNS / "quick" / "weights"] if QUICK else [plan.WEIGHTS, plan.RUNS / "weights"]
    for folder in folders:
        p = folder / f"{name}.safetensors"
        if p.is_file():
            return p
    return None


def clips(bag: Path, use_events: bool, first: int = 0):
    """Full-frame clips of ``bag`` starting at frame ``first`` (dataset of the training code)."""
    from derain_training.config import DataConfig
    from derain_training.data import ClipDataset

    ds = ClipDataset([bag], DataConfig(cache_dir=str(plan.DATA / "cache")), bins=10,
                     use_events=use_events, require_truth=True, crop=0, augment=False,
                     progress=False)
    for i, (_, start) in enumerate(ds.clips):
        if start >= first:
            yield ds.full_clip(i)


def score(bag: Path, how, use_events: bool = True, first: int = 0) -> dict[str, float]:
    """Mean PSNR/SSIM of ``how(clip) -> [1, C, H, W]`` against the clean centre frame."""
    from derain_ros.eval.metrics import psnr, ssim

    p, s = [], []
    with torch.no_grad():
        for clip in clips(bag, use_events, first):
            out = how(clip).clamp(0, 1)
            p.append(psnr(out, clip["clean"]).item())
            s.append(ssim(out, clip["clean"]).item())
    return {"psnr": round(float(np.mean(p)), 3), "ssim": round(float(np.mean(s)), 4)}


def network(path: Path):
    """``clip -> background`` of a checkpoint."""
    from derain_ros.model import load_checkpoint

    net = load_checkpoint(path)
    return lambda clip: net(clip["frames"], clip.get("events")).background, net.config.use_events


def finetune_gain(start: Path, bag: Path, clean_bags: list[Path]) -> tuple[float, dict, dict]:
    """Fine-tune ``start`` on the first half of ``bag`` (no ground truth); PSNR gain on the rest."""
    from derain_training.config import load_config
    from derain_training.trainer import Trainer

    half = FINETUNE_FRAMES // 2
    before_fn, use_events = network(start)
    before = score(bag, before_fn, use_events, first=half)
    cfg = load_config(plan.ROOT / "config" / "train.yaml", **{
        "mode": "unsupervised", "run.steps": FINETUNE_STEPS, "data.crop": 48 if QUICK else 96,
        "data.batch_size": 2 if QUICK else 4, "data.max_frames": half,
        "data.cache_dir": str(plan.DATA / "cache"),
        "data.clean_bags": [str(b) for b in clean_bags], "optim.lr": 5e-5,
        "optim.warmup_steps": 5, "run.val_every": 10**6, "run.ckpt_every": FINETUNE_STEPS,
        "losses.unsupervised.anchor": 1.0, "run.threads": 2,
    })
    with tempfile.TemporaryDirectory() as tmp:
        result = Trainer(cfg, [bag], Path(tmp) / "ft", init=start, progress=False).fit()
        after_fn, _ = network(result.export)
        after = score(bag, after_fn, use_events, first=half)
    return after["psnr"] - before["psnr"], before, after


def main() -> int:
    """Run the benchmark; the last line is JSON."""
    torch.set_num_threads(2)
    started = time.monotonic()
    w, h = (160, 120) if QUICK else SENSOR_SIZES["davis346"]
    out_dir = plan.DATA / "heldout"
    out_dir.mkdir(parents=True, exist_ok=True)
    eval_bag = plan.make_bag(plan.EVAL_SOURCE, "heavy", EVAL_SEED, EVAL_FRAMES, out_dir,
                             size=(w, h))
    rows: dict[str, dict | None] = {
        "input": score(eval_bag, lambda c: c["frames"][:, 1]),
        "median": score(eval_bag, lambda c: c["frames"].median(dim=1).values),
    }
    for key, name in MODELS.items():
        ckpt = checkpoint_for(name)
        if ckpt is None:
            rows[key] = None
            continue
        fn, use_events = network(ckpt)
        rows[key] = score(eval_bag, fn, use_events)
    gain = None
    tiny = checkpoint_for("derain_tiny")
    ft_note = "no derain_tiny checkpoint"
    if tiny is not None:
        ft_bag = plan.make_bag(plan.FINETUNE_SOURCE, "storm", FINETUNE_SEED, FINETUNE_FRAMES,
                               out_dir, size=(w, h))
        clean = (plan.training_bags(6, plan.DATA / "quick") if QUICK
                 else plan.training_bags(40, plan.DATA / "train"))[:2]
        gain, before, after = finetune_gain(tiny, ft_bag, clean)
        ft_note = f"held-out half: {before['psnr']:.2f} -> {after['psnr']:.2f} dB"
    print(f"held-out bag: {eval_bag.name} ({w}x{h}, full frames, RGB)")
    print(f"{'row':14s} {'PSNR dB':>9s} {'SSIM':>7s}")
    for key, r in rows.items():
        if r is None:
            print(f"{key:14s} {'(not trained)':>17s}")
        else:
            print(f"{key:14s} {r['psnr']:9.2f} {r['ssim']:7.4f}")
    print(f"fine-tuning gain (storm, {plan.FINETUNE_SOURCE}): "
          f"{'n/a' if gain is None else f'{gain:+.2f} dB'} ({ft_note})")
    print(f"took {time.monotonic() - started:.0f} s")
    print(json.dumps({**rows, "finetune_gain_db": None if gain is None else round(gain, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
