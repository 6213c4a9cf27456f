"""Deraining quality on rain and scenes the networks never trained on: tables, then JSON.

    .venv/bin/python bench/quality.py                      # full: < 15 min on 2 CPU cores
    DERAIN_BENCH_QUICK=1 .venv/bin/python bench/quality.py # smoke run: < 2 min

Issue #13 ("restoration that holds on rain the network was never trained on").

Evaluation set (:func:`eval_specs`, written with :func:`derain_training.synthetic.write_clips`
and cached under ``runs/quality/``; the write is resumable): every rain family of
:data:`derain_ros.sim.families.RAIN_FAMILIES` on every available scene of the ``test``
split (``derain_ros.sim.sources.list_sources(split="test")``: scenes training never
uses), one seed each (:data:`EVAL_SEED`, not training's 7), at the DAVIS346 frame size,
:data:`FRAMES` frames per clip, colour, a random event-sensor model per clip as in
training; plus one **dry** clip (family ``none``, no rain) per scene.

Scoring (PSNR dB / SSIM in RGB against the clean topic, full frames, every frame that has
a previous and a next one, read through the node's own sync and voxel code; a number is
the mean over clips of the per-clip mean; a frame's PSNR is capped at 100 dB, which the
rainy input of a dry clip scores, being the clean frame itself):

- rows ``input`` (the rainy frame), ``median`` (per-pixel temporal median of the frame
  and its two neighbours, an offline baseline), and the shipped networks of
  ``derain_ros/model/weights/`` fed exactly as the node feeds them (each checkpoint's
  :class:`~derain_ros.model.InputBuilder`): ``tiny_frames``, ``tiny``, ``base_frames``,
  ``base``; a missing checkpoint gives a null row. Over all rainy clips.
- ``families``: per family, ``input``, ``tiny`` and ``base`` PSNR (gain = network - input;
  the table gives the mean and the worst-case gain over families).
- ``leave_one_out``: per family ``f``, ``bench/weights/loo/loo_<f>`` (a ``derain_tiny``
  trained without ``f``, ``bench/train_families.py``) on the clips of ``f``: the rain
  family it has never seen. Null where the checkpoint is missing.
- ``dry``: the dry clips (a network must pass dry frames through unchanged).
- events vs frames-only: ``tiny - tiny_frames`` and ``base - base_frames``.

``finetune_gain_db`` is null here: the test-time adaptation benchmark ``bench/adapt.py``
(issue #14) owns that measurement (it needs training bags and a fine-tuning run, too
costly for this benchmark's budget).

The per-family and leave-one-out tables are also printed as Markdown for
``bench/RESULTS.md``. Environment: ``DERAIN_BENCH_QUICK=1`` (2 families x 1 scene,
160x120, 4 frames), ``DERAIN_BENCH_WEIGHTS`` / ``DERAIN_BENCH_LOO`` (other folders for
the main / leave-one-out checkpoints), ``DERAIN_BENCH_DATA`` (another cache folder).

Note: the published ICCV 2023 numbers use a centre 128x128 crop; these are full frames.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
#: DERAIN_BENCH_QUICK=1: a smoke run (2 families x 1 scene, small frames).
QUICK = bool(os.environ.get("DERAIN_BENCH_QUICK"))
#: The evaluation's seed (training draws its clips from seed 7).
EVAL_SEED = 2026
#: Frames per evaluation clip (scored: all but the first and the last).
FRAMES = 4 if QUICK else 8
WEIGHTS = Path(os.environ.get("DERAIN_BENCH_WEIGHTS") or ROOT / "derain_ros" / "model" / "weights")
LOO_WEIGHTS = Path(os.environ.get("DERAIN_BENCH_LOO") or ROOT / "bench" / "weights" / "loo")
DATA = Path(os.environ.get("DERAIN_BENCH_DATA") or ROOT / "runs" / "quality")
MODELS = {"tiny_frames": "derain_tiny_frames", "tiny": "derain_tiny",
          "base_frames": "derain_base_frames", "base": "derain_base"}
ROWS = ("input", "median", *MODELS)
DRY = "none"
#: Per-frame PSNR cap (dB): a frame identical to its reference (a dry input) scores this.
PSNR_CAP = 100.0


def checkpoint_for(name: str, folder: Path | None = None) -> Path | None:
    """Where the weights ``name`` are (None: missing)."""
    p = (folder or WEIGHTS) / f"{name}.safetensors"
    return p if p.is_file() else None


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


def frame_scores(data: HeldOut, how, first: int = 0) -> tuple[list[float], list[float]]:
    """PSNR and SSIM of ``how(data, k) -> [C, H, W]`` against clean frame ``k``, per frame.

    Every row scores the same targets: frames ``k`` with a previous and a next frame
    (``max(first, 1) <= k < n - 1``), so the centred temporal median is defined. PSNR is
    capped at :data:`PSNR_CAP` (identical frames would give infinity).
    """
    from derain_ros.eval.metrics import psnr, ssim

    p, s = [], []
    with torch.no_grad():
        for k in range(max(first, 1), len(data.rainy) - 1):
            out = how(data, k).clamp(0, 1)[None]
            ref = data.clean[k][None]
            p.append(min(psnr(out, ref).item(), PSNR_CAP))
            s.append(ssim(out, ref).item())
    return p, s


def score(data: HeldOut, how, first: int = 0) -> dict[str, float]:
    """Mean PSNR/SSIM of ``how`` over the scored frames of ``data`` (see :func:`frame_scores`)."""
    p, s = frame_scores(data, how, first)
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
    the scored range always has). Prepared windows are kept for the current clip only.
    """
    from derain_ros.model import InputBuilder, load_checkpoint

    net = load_checkpoint(path).eval()
    builder = InputBuilder(net.input_contract)
    prepared: dict[tuple[int, int], tuple] = {}

    def window(data: HeldOut, k: int) -> tuple:
        key = (id(data), k)
        if key not in prepared:
            if any(other != id(data) for other, _ in prepared):
                prepared.clear()  # another clip: drop the previous one's windows
            w = data.windows[k]
            frame, voxel = builder.window(w)
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


# --------------------------------------------------------------------------- data


def eval_families() -> list[str]:
    """The rain families evaluated (quick: the first two)."""
    from derain_ros.sim.families import RAIN_FAMILIES

    names = list(RAIN_FAMILIES)
    return names[:2] if QUICK else names


def eval_scenes() -> list[str]:
    """The available ``test`` scenes (quick: the first)."""
    from derain_ros.sim.sources import list_sources

    names = [s.name for s in list_sources(split="test", available_only=True)]
    if not names:
        raise SystemExit("no test-split scene is available on this machine")
    return names[:1] if QUICK else names


def eval_size() -> tuple[int, int]:
    """Frame size of the evaluation clips (DAVIS346; quick: 160x120)."""
    from derain_ros.conventions import SENSOR_SIZES

    return (160, 120) if QUICK else SENSOR_SIZES["davis346"]


def eval_specs(families: list[str], scenes: list[str], size: tuple[int, int]) -> list:
    """Every family x every scene (one seed each), then one dry clip per scene."""
    from derain_training.synthetic import plan_clips

    specs = []
    for j, scene in enumerate(scenes):
        specs += plan_clips(len(families), EVAL_SEED + j, sources=[scene], families=families,
                            sizes=[size], frames=FRAMES, grey_fraction=0.0,
                            prefix=f"eval{j}_")
    for j, scene in enumerate(scenes):
        specs += plan_clips(1, EVAL_SEED + 1000 + j, sources=[scene], families=families,
                            sizes=[size], frames=FRAMES, grey_fraction=0.0, dry_fraction=1.0,
                            prefix=f"dry{j}_")
    return specs


def eval_folder(size: tuple[int, int]) -> Path:
    """Cache folder of one evaluation set."""
    return DATA / f"{'quick' if QUICK else 'eval'}_{size[0]}x{size[1]}_f{FRAMES}_s{EVAL_SEED}"


# --------------------------------------------------------------------------- tables


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _r(value: float | None, nd: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, nd)


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _gain(out: float | None, base: float | None) -> float | None:
    return None if out is None or base is None else out - base


def gain_summary(table: dict[str, dict], key: str) -> tuple[float | None, float | None]:
    """Mean and worst-case (minimum) gain ``key - input`` over the families of ``table``."""
    gains = [_gain(r.get(key), r["input"]) for r in table.values()]
    gains = [g for g in gains if g is not None]
    return (float(np.mean(gains)), float(np.min(gains))) if gains else (None, None)


def family_table(families: dict[str, dict]) -> list[list[str]]:
    """Rows of the per-family table (header first)."""
    rows = [["family", "input dB", "tiny dB", "tiny gain", "base dB", "base gain"]]
    for f, r in families.items():
        rows.append([f, _f(r["input"]), _f(r["tiny"]), _f(_gain(r["tiny"], r["input"]), True),
                     _f(r["base"]), _f(_gain(r["base"], r["input"]), True)])
    tm, tw = gain_summary(families, "tiny")
    bm, bw = gain_summary(families, "base")
    rows.append(["mean gain", "", "", _f(tm, True), "", _f(bm, True)])
    rows.append(["worst gain", "", "", _f(tw, True), "", _f(bw, True)])
    return rows


def loo_table(loo: dict[str, dict | None]) -> list[list[str]]:
    """Rows of the leave-one-family-out table (header first)."""
    rows = [["held-out family", "input dB", "loo tiny dB", "gain"]]
    for f, r in loo.items():
        if r is None:
            rows.append([f, "n/a", "(no loo_" + f + ")", "n/a"])
        else:
            rows.append([f, _f(r["input"]), _f(r["tiny"]), _f(_gain(r["tiny"], r["input"]), True)])
    mean, worst = gain_summary({f: r for f, r in loo.items() if r is not None}, "tiny")
    rows.append(["mean gain", "", "", _f(mean, True)])
    rows.append(["worst gain", "", "", _f(worst, True)])
    return rows


def plain(rows: list[list[str]]) -> str:
    """A table in aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def markdown(rows: list[list[str]]) -> str:
    """A table in Markdown (numbers right-aligned)."""
    head, *body = rows
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(c if c else " " for c in r) + " |" for r in body]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def evaluate(bags: dict[str, Path], specs: list, nets: dict, loo_nets: dict) -> dict:
    """Score every clip; returns per-clip results ``{clip: {row: (psnr, ssim)}}``."""
    from tqdm import tqdm

    frames_per_clip = max(0, FRAMES - 2)
    work = {}
    for s in specs:
        if s.name not in bags:
            continue
        rows = ["input"]
        if s.family == DRY:
            rows += [k for k in ("tiny", "base") if nets.get(k)]
        else:
            rows += ["median"] + [k for k in MODELS if nets.get(k)]
            if loo_nets.get(s.family):
                rows.append("loo")
        work[s.name] = rows
    per_clip: dict[str, dict[str, tuple[float, float]]] = {}
    total = sum(len(r) for r in work.values()) * frames_per_clip
    with tqdm(total=total, desc="score", unit="frame") as bar:
        for s in specs:
            if s.name not in work:
                continue
            data = load_heldout(bags[s.name])
            res = {}
            for row in work[s.name]:
                bar.set_postfix_str(f"{s.family}/{row}")
                if row == "input":
                    how = rainy_input
                elif row == "median":
                    how = temporal_median(data)
                elif row == "loo":
                    how = loo_nets[s.family]
                else:
                    how = nets[row]
                p, q = frame_scores(data, how)
                res[row] = (float(np.mean(p)), float(np.mean(q)))
                bar.update(frames_per_clip)
            per_clip[s.name] = res
            del data
    return per_clip


def summarise(specs: list, per_clip: dict, families: list[str], nets: dict,
              loo_nets: dict) -> dict:
    """The JSON result from the per-clip scores."""
    rainy = [s for s in specs if s.family != DRY and s.name in per_clip]
    dry = [s for s in specs if s.family == DRY and s.name in per_clip]

    def mean_of(clips: list, row: str, i: int = 0) -> float | None:
        vals = [per_clip[s.name][row][i] for s in clips if row in per_clip[s.name]]
        return _mean(vals) if len(vals) == len(clips) and clips else None

    result: dict = {}
    for row in ROWS:
        p, q = mean_of(rainy, row, 0), mean_of(rainy, row, 1)
        result[row] = None if p is None else {"psnr": _r(p), "ssim": _r(q, 4)}
    result["families"] = {}
    result["leave_one_out"] = {}
    for f in families:
        clips = [s for s in rainy if s.family == f]
        result["families"][f] = {"input": _r(mean_of(clips, "input")),
                                 "tiny": _r(mean_of(clips, "tiny")),
                                 "base": _r(mean_of(clips, "base"))}
        result["leave_one_out"][f] = None if not loo_nets.get(f) else {
            "input": _r(mean_of(clips, "input")), "tiny": _r(mean_of(clips, "loo"))}
    result["dry"] = {"input": _r(mean_of(dry, "input")), "tiny": _r(mean_of(dry, "tiny")),
                     "base": _r(mean_of(dry, "base"))}
    result["finetune_gain_db"] = None  # owned by bench/adapt.py (issue #14)
    return result


def report(result: dict, scenes: list[str], size: tuple[int, int], n_rainy: int,
           n_dry: int, seconds: float) -> None:
    """Print the tables (plain, then Markdown) and the JSON line last."""
    print(f"\nheld-out set: {n_rainy} rainy + {n_dry} dry clips, {size[0]}x{size[1]}, "
          f"{FRAMES} frames ({FRAMES - 2} scored), seed {EVAL_SEED}, test scenes: "
          f"{', '.join(scenes)} (full frames, RGB)")
    print(f"{'row':14s} {'PSNR dB':>9s} {'SSIM':>7s}")
    for key in ROWS:
        r = result[key]
        if r is None:
            print(f"{key:14s} {'(no checkpoint)':>17s}")
        else:
            print(f"{key:14s} {r['psnr']:9.2f} {r['ssim']:7.4f}")
    fam = family_table(result["families"])
    loo = loo_table(result["leave_one_out"])
    print("\nper family (PSNR dB, gain over the rainy input):")
    print(plain(fam))
    print("\nleave one family out (loo_<family> never trained on that family):")
    print(plain(loo))
    d = result["dry"]
    print(f"\ndry clips (no rain; the input is the clean frame, {_f(d['input'])} dB = the "
          f"cap): tiny {_f(d['tiny'])} dB, base {_f(d['base'])} dB (higher: closer to a "
          f"pass-through)")

    def ev(a: str, b: str) -> str:
        ra, rb = result[a], result[b]
        return "n/a" if ra is None or rb is None else f"{ra['psnr'] - rb['psnr']:+.2f} dB"

    print(f"events vs frames-only: tiny - tiny_frames = {ev('tiny', 'tiny_frames')}, "
          f"base - base_frames = {ev('base', 'base_frames')}")
    print("fine-tuning gain: n/a here (bench/adapt.py, issue #14)")
    print("\nMarkdown (bench/RESULTS.md):\n")
    print(markdown(fam))
    print()
    print(markdown(loo))
    print(f"\ntook {seconds:.0f} s")
    print(json.dumps(result))


def main() -> int:
    """Run the benchmark; the last line is JSON."""
    from derain_training.synthetic import write_clips

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.monotonic()
    families, scenes, size = eval_families(), eval_scenes(), eval_size()
    specs = eval_specs(families, scenes, size)
    folder = eval_folder(size)
    written = write_clips(specs, folder, workers=min(2, os.cpu_count() or 1))
    bags = {p.stem: p for p in written}
    if len(bags) < len(specs):
        print(f"warning: {len(specs) - len(bags)} of {len(specs)} clips failed to synthesise",
              file=sys.stderr)
    print(f"data ready after {time.monotonic() - started:.0f} s ({folder})", flush=True)
    nets = {k: (network(p) if (p := checkpoint_for(name)) else None)
            for k, name in MODELS.items()}
    loo_nets = {f: (network(p) if (p := checkpoint_for(f"loo_{f}", LOO_WEIGHTS)) else None)
                for f in families}
    per_clip = evaluate(bags, specs, nets, loo_nets)
    result = summarise(specs, per_clip, families, nets, loo_nets)
    n_dry = sum(1 for s in specs if s.family == DRY and s.name in per_clip)
    report(result, scenes, size, len(per_clip) - n_dry, n_dry, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
