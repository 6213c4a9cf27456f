"""Deraining quality on held-out synthetic bags: a table, then one JSON line.

    .venv/bin/python bench/quality.py

Rows (PSNR dB / SSIM in RGB against the clean topic, full frames, every frame that has a
previous and a next one, read through the node's own sync and voxel code): the rainy
input; a classical baseline (per-pixel temporal median of the frame and its two
neighbours, which an offline method may use); the networks fed exactly as the node feeds
them (the :class:`~derain_ros.model.InputBuilder` of each checkpoint's input contract,
the engine's own): ``tiny_frames``, ``tiny``, ``base_frames``, ``base`` loaded
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
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class HeldOut:
    """A bag's windows as the node sees them (sync), with rainy and clean frames to score."""

    windows: list  # derain_ros.sync.FrameWindow, in order
    rainy: list[torch.Tensor]  # [C, H, W] each, as decoded (the scoring reference)
    clean: list[torch.Tensor]


def load_heldout(bag: Path) -> HeldOut:
    """Read ``bag`` through the node's own code (windows_from_bag)."""
    from derain_ros.conventions import GT_CLEAN_TOPIC
    from derain_ros.sync import windows_from_bag

    def chw(image) -> torch.Tensor:
        return torch.from_numpy(image.to_network().transpose(2, 0, 1).copy())

    windows = list(windows_from_bag(bag))
    return HeldOut(windows, [chw(w.image) for w in windows],
                   [chw(w.extras[GT_CLEAN_TOPIC]) for w in windows])


def score(data: HeldOut, how, first: int = 0) -> dict[str, float]:
    """Mean PSNR/SSIM of ``how(data, k) -> [C, H, W]`` against clean frame ``k``.

    Every row scores the same targets: frames ``k`` with a previous and a next frame
    (``max(first, 1) <= k < n - 1``), so the centred temporal median is defined.
    """
    from derain_ros.eval.metrics import psnr, ssim

    p, s = [], []
    with torch.no_grad():
        for k in range(max(first, 1), len(data.rainy) - 1):
            out = how(data, k).clamp(0, 1)[None]
            ref = data.clean[k][None]
            p.append(psnr(out, ref).item())
            s.append(ssim(out, ref).item())
    return {"psnr": round(float(np.mean(p)), 3), "ssim": round(float(np.mean(s)), 4)}


def rainy_input(data: HeldOut, k: int) -> torch.Tensor:
    """The rainy frame itself."""
    return data.rainy[k]


def temporal_median(data: HeldOut) -> Callable[[HeldOut, int], torch.Tensor]:
    """The evaluation's baseline: per-pixel median of frames ``k-1, k, k+1`` (offline: it
    uses the next frame), from :func:`derain_ros.eval.baselines.temporal_median`."""
    from derain_ros.eval.baselines import temporal_median as median

    medians = median([f.numpy() for f in data.rainy], 3)
    return lambda _data, k: torch.from_numpy(medians[k])


def network(path: Path):
    """``(data, k) -> background`` of a checkpoint, its inputs prepared as the node does.

    The checkpoint's :class:`~derain_ros.model.InputBuilder` prepares every window and
    assembles the clip of target ``k`` (a centre checkpoint reads window ``k+1``, which
    the scored range always has).
    """
    from derain_ros.model import InputBuilder, load_checkpoint

    net = load_checkpoint(path).eval()
    builder = InputBuilder(net.input_contract)
    prepared: dict[tuple[int, int], tuple] = {}

    def window(data: HeldOut, k: int) -> tuple:
        key = (id(data), k)
        if key not in prepared:
            w = data.windows[k]
            frame = builder.frame(w.image.to_network())
            voxel = builder.voxel(None if w.events_missing else w.events, w.t0_ns, w.t_ns,
                                  frame.shape[1], frame.shape[2])
            prepared[key] = (torch.from_numpy(frame),
                             None if voxel is None else torch.from_numpy(voxel))
        return prepared[key]

    def run(data: HeldOut, k: int) -> torch.Tensor:
        ks = [k - 1, k, k + 1] if k > 0 else [k, k + 1]
        seq = [window(data, j) for j in ks]
        frames, events = builder.clip_at([f for f, _ in seq], [v for _, v in seq],
                                         ks.index(k))
        return net(frames[None], None if events is None else events[None]).background[0]

    return run


def finetune_gain(start: Path, bag: Path, clean_bags: list[Path],
                  overrides: dict | None = None) -> tuple[float, dict, dict]:
    """Fine-tune ``start`` on the first half of ``bag`` (no ground truth); PSNR gain on the rest."""
    from derain_training.config import load_config
    from derain_training.trainer import Trainer

    half = FINETUNE_FRAMES // 2
    data = load_heldout(bag)
    before = score(data, network(start), first=half)
    cfg = load_config(plan.ROOT / "config" / "train.yaml", **{
        "mode": "unsupervised", "run.steps": FINETUNE_STEPS, "data.crop": 48 if QUICK else 96,
        "data.batch_size": 2 if QUICK else 4, "data.max_frames": half,
        "data.cache_dir": str(plan.DATA / "cache"),
        "data.clean_bags": [str(b) for b in clean_bags], "optim.lr": 5e-5,
        "optim.warmup_steps": 5, "run.val_every": 10**6, "run.ckpt_every": FINETUNE_STEPS,
        "losses.unsupervised.anchor": 1.0, "run.threads": 2, **(overrides or {}),
    })
    with tempfile.TemporaryDirectory() as tmp:
        result = Trainer(cfg, [bag], Path(tmp) / "ft", init=start, progress=False).fit()
        after = score(data, network(result.export), first=half)
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
    data = load_heldout(eval_bag)
    rows: dict[str, dict | None] = {
        "input": score(data, rainy_input),
        "median": score(data, temporal_median(data)),
    }
    for key, name in MODELS.items():
        ckpt = checkpoint_for(name)
        if ckpt is None:
            rows[key] = None
            continue
        rows[key] = score(data, network(ckpt))
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
