"""derain-train: train from rosbags, or export a trained network to ONNX.

::

    derain-train --config config/train.yaml --bags A.mcap B.mcap \\
        [--mode supervised|unsupervised|online] [--model derain_tiny] [--out runs/NAME] \\
        [--resume] [--init CKPT] [--steps N] [--export-to derain_ros/model/weights/derain_tiny]
    derain-train export --checkpoint X [--onnx out.onnx] [--height 260 --width 346]
    derain-train adapt BAG [--out CKPT] [--init CKPT] [--rounds N] [--minutes M] \\
        [--node /derain_node]

Subcommands: ``train`` (the default), ``export`` (ONNX), ``adapt`` (test-time adaptation
to a recorded bag by re-rain self-training, with guards; docs/adaptation.md).

Multi-GPU / multi-node: start the same command under torchrun
(``torchrun --nproc_per_node 2 -m derain_training.cli ...``): each rank reads
``RANK``/``WORLD_SIZE`` from the environment; rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from derain_ros.cli import EPILOG
from derain_ros.errors import DerainError
from derain_ros.exits import EXIT_FAILURE, interrupted, sigterm_as_interrupt, version_text

#: sub-commands besides training (the default, also "derain-train train ...")
COMMANDS = {"export": "export a trained network to ONNX (see derain-train export --help)",
            "adapt": "adapt weights to a recorded bag without ground truth: re-rain "
                     "self-training with guards (see derain-train adapt --help)"}

__all__ = ["COMMANDS", "build_adapt_parser", "build_export_parser", "build_train_parser",
           "main", "run_adapt", "run_export", "run_train"]


def build_train_parser() -> argparse.ArgumentParser:
    """Arguments of a training run."""
    p = argparse.ArgumentParser(
        prog="derain-train", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="other commands:\n"
               + "".join(f"  derain-train {name:8s} {text}\n" for name, text in COMMANDS.items())
               + "\n" + EPILOG)
    p.add_argument("--version", action="version", version=version_text("derain-train"))
    p.add_argument("--config", type=Path, default=None,
                   help="training YAML (default: every built-in default; see config/train.yaml)")
    p.add_argument("--bags", nargs="+", required=True, type=Path, help="training bags")
    p.add_argument("--mode", choices=("supervised", "unsupervised", "online"), default=None,
                   help="overrides the config's mode")
    p.add_argument("--model", default=None, help="registered model name (overrides the config)")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (a derain_ros.model checkpoint)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides config)")
    p.add_argument("--batch-size", type=int, default=None, help="per-rank batch (overrides)")
    p.add_argument("--val-bags", nargs="*", type=Path, default=None,
                   help="validation bags with ground truth (overrides the config)")
    p.add_argument("--clean-bags", nargs="*", type=Path, default=None,
                   help="unpaired clean recordings for the GAN prior (overrides the config)")
    p.add_argument("--export-to", type=Path, default=None,
                   help="also write the final network here (e.g. derain_ros/model/weights/NAME)")
    p.add_argument("--seed", type=int, default=None, help="overrides run.seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def build_export_parser() -> argparse.ArgumentParser:
    """Arguments of ``derain-train export``."""
    p = argparse.ArgumentParser(prog="derain-train export", description=COMMANDS["export"],
                                epilog=EPILOG)
    p.add_argument("--version", action="version", version=version_text("derain-train"))
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a derain_ros.model checkpoint (NAME.safetensors + NAME.json)")
    p.add_argument("--onnx", type=Path, default=None,
                   help="output .onnx (default: beside the checkpoint)")
    p.add_argument("--height", type=int, default=260, help="input height (px)")
    p.add_argument("--width", type=int, default=346, help="input width (px)")
    return p


def build_adapt_parser() -> argparse.ArgumentParser:
    """Arguments of ``derain-train adapt``."""
    p = argparse.ArgumentParser(
        prog="derain-train adapt",
        description="adapt a network to a recorded bag without ground truth: derain it, "
                    "calibrate the simulator's rain to its statistics, re-rain the derained "
                    "frames, fine-tune on those pairs; accept only if the guards pass "
                    "(docs/adaptation.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG + "\n  3   adapt: the guards refused the new weights (the old ones stay)")
    p.add_argument("--version", action="version", version=version_text("derain-train"))
    p.add_argument("bag", type=Path, help="the recording (frames and events)")
    p.add_argument("--out", type=Path, default=None,
                   help="adapted checkpoint (default: runs/adapt/<bag>_adapted)")
    p.add_argument("--init", type=Path, default=None,
                   help="starting weights (default: the shipped derain_tiny)")
    p.add_argument("--rounds", type=int, default=1, help="derain/re-rain/fine-tune rounds")
    p.add_argument("--minutes", type=float, default=25.0, help="time budget of the whole run")
    p.add_argument("--node", default=None,
                   help="a running node (e.g. /derain_node) whose checkpoint parameter is set "
                        "to the accepted weights")
    p.add_argument("--max-frames", type=int, default=None, help="frames read from the bag")
    p.add_argument("--families", nargs="*", default=None,
                   help="rain families the calibration may choose (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run_adapt(args: argparse.Namespace) -> int:
    """Run ``derain-train adapt``; exit 0 when the weights were accepted, 3 when refused."""
    from derain_training.adapt import AdaptConfig, adapt

    changes = {"rounds": args.rounds, "minutes": args.minutes, "seed": args.seed}
    if args.max_frames:
        changes["max_frames"] = args.max_frames
    if args.families:
        changes["families"] = tuple(args.families)
    cfg = AdaptConfig(**changes)
    out = args.out or Path("runs/adapt") / f"{Path(args.bag).stem}_adapted"
    report = adapt(args.bag, out, init=args.init, cfg=cfg, node=args.node,
                   progress=not args.no_progress)
    if report.node is not None:
        print(f"node {report.node['node']}: "
              f"{'swapped' if report.node['ok'] else 'NOT swapped'} ({report.node['reason']})")
    return 0 if report.accepted else 3


def run_train(args: argparse.Namespace) -> int:
    """Run one training job from parsed arguments."""
    from derain_training.config import load_config
    from derain_training.trainer import Trainer

    overrides = {
        "mode": args.mode,
        "model.name": args.model,
        "run.steps": args.steps,
        "run.seed": args.seed,
        "data.batch_size": args.batch_size,
        "data.val_bags": None if args.val_bags is None else [str(b) for b in args.val_bags],
        "data.clean_bags": None if args.clean_bags is None else [str(b) for b in args.clean_bags],
    }
    cfg = load_config(args.config, **overrides)
    trainer = Trainer(cfg, args.bags, args.out, init=args.init, resume=args.resume,
                      export_to=args.export_to, progress=not args.no_progress)
    result = trainer.fit()
    if trainer.dist.main:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.losses.items()))
        print(f"done: {result.step} steps in {result.seconds:.0f} s; {losses}")
        if result.val:
            print("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in result.val.items()))
        print(f"network: {result.export}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX through ``derain_ros.model.export_onnx``."""
    from derain_ros.model import export_onnx, load_checkpoint

    model = load_checkpoint(args.checkpoint)
    onnx_path = args.onnx or Path(args.checkpoint).with_suffix(".onnx")
    export_onnx(model, onnx_path, args.height, args.width)
    print(f"wrote {onnx_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``derain-train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with sigterm_as_interrupt():
            if argv and argv[0] == "export":
                return run_export(build_export_parser().parse_args(argv[1:]))
            if argv and argv[0] == "adapt":
                return run_adapt(build_adapt_parser().parse_args(argv[1:]))
            if argv and argv[0] == "train":
                argv = argv[1:]
            return run_train(build_train_parser().parse_args(argv))
    except DerainError as err:
        print(f"derain-train: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        code = interrupted("derain-train", err)
        print("derain-train: checkpoints are written atomically: continue from the newest "
              "with --resume (same --out)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
