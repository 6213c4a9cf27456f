"""Test-time adaptation to a recorded bag by re-rain self-training, with guards.

``derain-train adapt BAG [--out CKPT] [--init CKPT] [--rounds N] [--minutes M]
[--node /derain_node]`` (issue #14). No ground truth is needed:

1. **Read** the recording through the node's own sync code (``windows_from_bag``); a
   bag without frames or without events is refused (nothing to adapt to).
2. **Derain** chunks of it with the starting network through :class:`DerainEngine`
   (its checkpoint's :class:`InputBuilder`, causal as the contract says). The last
   ``heldout_fraction`` of the recording is held out: never fine-tuned on.
3. **Calibrate** the simulator's rain (family, intensity, sensor preset) so that
   re-rained derained frames match the recording's event/frame statistics
   (:mod:`derain_training.calibrate`); the fitted table is printed.
4. **Re-rain**: render fresh calibrated rain and events onto the derained chunks
   (``frames:`` sources, :class:`~derain_ros.sim.sources.FrameListSource`): pairs
   whose clean frame is the network's own output, plus a slice of synthetic clips of
   the ``train`` scenes (every family), so the network does not forget.
5. **Fine-tune** supervised on those pairs with the :class:`Trainer` from the starting
   weights (time budget, resumable).
6. **Guards** (:func:`evaluate_guards`): the new weights are accepted only if (a) on
   re-rained *held-out* chunks they beat the starting weights, (b) on a small
   synthetic validation set (``test`` scenes, several families) they lose at most
   ``guard_synthetic_db``, (c) on rain-free input (the held-out derained frames, dry
   events) their output stays as close to the input as the starting weights' did
   (``PSNR(output, input)`` drops by at most ``guard_dry_db``, or stays above
   ``guard_dry_floor_db``: no invented texture). When the fine-tune fails (b) or (c),
   blends of it with the starting weights (``start + alpha (new - start)``, WiSE-FT) are
   searched for the largest alpha that passes every guard (:func:`_judge`). Otherwise
   the starting weights are kept and the failing guard is named.
7. Optional further **rounds** (derain with the accepted weights, re-rain, fine-tune).

``--out`` always receives a usable checkpoint: the accepted weights, or the starting
weights unchanged when every round was refused; its provenance (``adaptation``) and
``<out>.adapt.json`` hold every decision and figure. ``--node`` sets a running node's
``checkpoint`` parameter to accepted weights (the node swaps between two frames).

Everything lands in ``<out>.work/`` and each stage skips what is already there, so an
interrupted run resumes where it stopped (the fine-tune through ``Trainer(resume=True)``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from derain_ros.errors import DerainError, SyncError
from derain_ros.runtime.int8 import psnr_db
from derain_training.calibrate import (
    Candidate,
    FitResult,
    RainStats,
    StatsAccumulator,
    fit_rain,
    fit_table,
)

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptReport",
    "adapt",
    "blend_weights",
    "evaluate_guards",
    "score_bag",
]

_log = logging.getLogger(__name__)

#: settings that only change how the fine-tune is judged: changing them re-judges the
#: work folder's fine-tune instead of starting the adaptation over
_JUDGING = frozenset({"blend_steps", "guard_heldout_db", "guard_synthetic_db", "guard_dry_db",
                      "guard_dry_floor_db"})


class AdaptError(DerainError):
    """The adaptation could not run (bad arguments, a broken work folder)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation (defaults: a 60 s 346x260 bag in < 30 min on 2 cores).

    Recording: at most ``max_frames`` frames are read; the last ``heldout_fraction`` is
    held out for guard (a). ``clip_frames``: frames per re-rained clip; ``max_clips``:
    re-rained clips per round (chunks spread evenly over the fine-tuning part);
    ``heldout_clips``: re-rained held-out clips; ``synthetic_clips``: clips of the
    ``train`` scenes mixed in; ``intensity_jitter``: +- around the fitted intensity
    per clip. Calibration: ``calib_frames`` frames per candidate, ``families`` (None:
    all), ``sensors`` (presets tried). Fine-tune: ``minutes`` is the whole run's budget
    (the fine-tunes get ``train_share`` of it), ``steps`` an upper bound per round,
    ``lr``, ``anchor`` (L1 to the starting network's output), ``batch_size``, ``crop``.
    ``blend_steps``: the search for a blend when the fine-tuned weights fail a guard.
    Guards: ``guard_heldout_db`` (margin the new weights must beat the start by on
    held-out chunks), ``guard_synthetic_db``, ``guard_dry_db``, ``guard_dry_floor_db``;
    ``val_families``, ``val_scenes``, ``val_size`` (w, h), ``val_frames`` of the
    synthetic validation set.
    """

    rounds: int = 1
    minutes: float = 25.0
    max_frames: int = 1800
    heldout_fraction: float = 0.25
    clip_frames: int = 10
    max_clips: int = 16
    heldout_clips: int = 3
    synthetic_clips: int = 4
    intensity_jitter: float = 0.1
    calib_frames: int = 6
    families: tuple[str, ...] | None = None
    sensors: tuple[str, ...] = ("clean", "noisy")
    train_share: float = 0.55
    steps: int = 2000
    lr: float = 1e-4
    #: weight of L1 to the starting network's output in each fine-tune (the supervised
    #: ``anchor`` term): against forgetting, which guard (b) refuses; bench/adapt.py with
    #: 0.5: +0.67 dB mean, 7 of 15 refused, against +0.42 dB and 10 without it
    anchor: float = 0.5
    batch_size: int = 4
    crop: int = 96
    warmup_steps: int = 10
    #: when the fine-tuned weights fail guard (b) or (c), blends ``start + alpha * (new -
    #: start)`` are judged (weight-space interpolation, as in WiSE-FT: most of the gain
    #: kept, most of the forgetting undone): a bisection of this many steps for the
    #: largest alpha that passes every guard (0: all or nothing)
    blend_steps: int = 4
    #: a gain on the held-out re-rained clips under this is within their noise (the
    #: bench/adapt.py run accepted at +0.13 dB there scored -0.07 dB on the truth)
    guard_heldout_db: float = 0.15
    guard_synthetic_db: float = 0.2
    guard_dry_db: float = 0.3
    guard_dry_floor_db: float = 45.0
    val_families: tuple[str, ...] = ("particles", "streak_layers", "veil")
    val_scenes: int = 1
    val_size: tuple[int, int] = (160, 120)
    val_frames: int = 5
    seed: int = 0
    threads: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise AdaptError(f"rounds must be >= 1, got {self.rounds}")
        if not 0.05 <= self.heldout_fraction <= 0.5:
            raise AdaptError(f"heldout_fraction must be in [0.05, 0.5], got "
                             f"{self.heldout_fraction}")
        if self.clip_frames < 4:
            raise AdaptError(f"clip_frames must be >= 4, got {self.clip_frames}")
        if self.minutes <= 0:
            raise AdaptError(f"minutes must be > 0, got {self.minutes}")
        if self.anchor < 0:
            raise AdaptError(f"anchor must be >= 0, got {self.anchor}")
        if not 0 <= self.blend_steps <= 10:
            raise AdaptError(f"blend_steps must be in [0, 10], got {self.blend_steps}")


@dataclass
class AdaptReport:
    """What an adaptation did: the decision of each round, figures, files."""

    bag: str
    init: str
    out: str
    accepted: bool
    reason: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    recording: dict[str, Any] | None = None
    seconds: float = 0.0
    node: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def score_bag(net: Any, bag: Path, reference: str = "clean", *, first: int = 0,
              last: int | None = None) -> dict[str, float]:
    """Mean PSNR of ``net`` on ``bag``, inputs prepared as the node prepares them.

    Every window goes through the checkpoint's :class:`InputBuilder`; the derained frame
    of window ``k`` (``1 <= k < n - 1``: a previous and, for ``centre``, a next window)
    is compared with the bag's clean ground truth (``reference="clean"``) or with the
    input frame itself (``"input"``: the rain-free guard); only ``first <= k < last``
    when given (a segment of the bag). Returns ``psnr`` (network)
    and ``input_psnr`` (the input frame against the same reference).
    """
    from derain_ros.conventions import GT_CLEAN_TOPIC
    from derain_ros.model import InputBuilder
    from derain_ros.sync import windows_from_bag

    builder = InputBuilder(net.input_contract)
    windows = list(windows_from_bag(bag))
    prepared: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
    lo = max(first, 1) - 1
    for i, w in enumerate(windows):
        if i < lo:
            prepared.append((None, None))
            continue
        frame, vox = builder.window(w)
        prepared.append((torch.from_numpy(frame),
                         None if vox is None else torch.from_numpy(vox)))
    out_p, in_p = [], []
    net.eval()
    with torch.no_grad():
        for k in range(max(first, 1), min(len(windows) - 1, last or len(windows))):
            ks = [k - 1, k, k + 1]
            seq = [prepared[j] for j in ks]
            # (cast: windows before ``lo`` are never in a scored clip)
            frames, events = builder.clip_at(cast(list[torch.Tensor], [f for f, _ in seq]),
                                             [v for _, v in seq], 1)
            b = net(frames[None], None if events is None else events[None]).background[0]
            b = b.clamp(0, 1).float().numpy().transpose(1, 2, 0)
            rainy = windows[k].image.to_network()
            ref = (windows[k].extras[GT_CLEAN_TOPIC].to_network() if reference == "clean"
                   else rainy)
            out_p.append(psnr_db(b, ref))
            in_p.append(psnr_db(rainy, ref))
    return {"psnr": round(float(np.mean(out_p)), 3),
            "input_psnr": round(float(np.mean(in_p)), 3), "frames": len(out_p)}


def _score_set(net: Any, bags: Sequence[Path], reference: str = "clean") -> dict[str, Any]:
    per = [score_bag(net, b, reference) for b in bags]
    return {"psnr": round(float(np.mean([p["psnr"] for p in per])), 3),
            "input_psnr": round(float(np.mean([p["input_psnr"] for p in per])), 3),
            "per_bag": [p["psnr"] for p in per]}


def _guard_scores(net: Any, heldout: Sequence[Path], synthetic: Sequence[Path],
                  dry: Sequence[Path]) -> tuple[dict[str, Any], ...]:
    """One network's scores on the three guard sets (held-out, synthetic, dry)."""
    return (_score_set(net, heldout), _score_set(net, synthetic),
            _score_set(net, dry, "input"))


def evaluate_guards(start: Any, new: Any, *, heldout: Sequence[Path],
                    synthetic: Sequence[Path], dry: Sequence[Path],
                    cfg: AdaptConfig,
                    start_scores: tuple[dict[str, Any], ...] | None = None) -> dict[str, Any]:
    """The three guards of the module docstring; ``accepted`` and ``failed`` (names).

    ``start_scores``: the starting network's :func:`_guard_scores`, when already known
    (the blend search judges several networks against the same start).
    """
    h0, s0, d0 = start_scores or _guard_scores(start, heldout, synthetic, dry)
    h1, s1, d1 = _guard_scores(new, heldout, synthetic, dry)
    guards = {
        "heldout": {"start_db": h0["psnr"], "new_db": h1["psnr"], "input_db": h0["input_psnr"],
                    "gain_db": round(h1["psnr"] - h0["psnr"], 3),
                    "rule": f"new > start + {cfg.guard_heldout_db} dB",
                    "passed": h1["psnr"] > h0["psnr"] + cfg.guard_heldout_db},
        "synthetic": {"start_db": s0["psnr"], "new_db": s1["psnr"],
                      "input_db": s0["input_psnr"],
                      "change_db": round(s1["psnr"] - s0["psnr"], 3),
                      "rule": f"new >= start - {cfg.guard_synthetic_db} dB",
                      "passed": s1["psnr"] >= s0["psnr"] - cfg.guard_synthetic_db},
        "dry": {"start_db": d0["psnr"], "new_db": d1["psnr"],
                "change_db": round(d1["psnr"] - d0["psnr"], 3),
                "rule": (f"PSNR(output, rain-free input): new >= start - {cfg.guard_dry_db} "
                         f"dB or new >= {cfg.guard_dry_floor_db} dB"),
                "passed": (d1["psnr"] >= d0["psnr"] - cfg.guard_dry_db
                           or d1["psnr"] >= cfg.guard_dry_floor_db)},
    }
    failed = [k for k, g in guards.items() if not g["passed"]]
    return {"guards": guards, "accepted": not failed, "failed": failed}


def blend_weights(start: Any, new: Any, alpha: float) -> Any:
    """A copy of ``new`` whose weights are ``start + alpha * (new - start)``.

    Weight-space interpolation between a network and its own fine-tune (WiSE-FT, Wortsman
    et al. CVPR 2022): both lie in one basin, so the blend keeps much of the fine-tune's
    gain while undoing much of its forgetting. Integer buffers are taken from ``new``.
    """
    import copy

    out = copy.deepcopy(new)
    s0 = start.state_dict()
    mixed = {k: (s0[k] + alpha * (v - s0[k])) if v.is_floating_point() else v
             for k, v in new.state_dict().items()}
    out.load_state_dict(mixed)
    return out


def _judge(start: Any, new: Any, *, heldout: Sequence[Path], synthetic: Sequence[Path],
           dry: Sequence[Path], cfg: AdaptConfig) -> tuple[dict[str, Any], Any]:
    """Guards on the fine-tune, then a search for the largest blend that passes them.

    A fine-tune that fails only guard (a) changed too little to help, and a blend
    changes less: refused as it is. One that fails (b) or (c) changed too much: blends
    ``start + alpha (new - start)`` are bisected over alpha in (0, 1) for
    ``cfg.blend_steps`` steps; a blend failing (b) or (c) moves the search down, one
    failing only (a) (too little gain left) moves it up; the largest alpha that passed
    every guard is accepted. Returns the decision (``blend``: the alpha accepted, 1.0 for
    the fine-tune itself; ``tried``: every alpha judged, its failed guards and held-out
    gain) and the network it accepted (or the fine-tune).
    """
    sets = {"heldout": heldout, "synthetic": synthetic, "dry": dry}
    start_scores = _guard_scores(start, heldout, synthetic, dry)  # once, for every judgement
    decision = evaluate_guards(start, new, cfg=cfg, start_scores=start_scores, **sets)
    decision["blend"] = 1.0
    tried: list[dict[str, Any]] = [{"blend": 1.0, "failed": decision["failed"]}]
    chosen = new
    if not decision["accepted"] and decision["failed"] != ["heldout"]:
        lo, hi = 0.0, 1.0
        for _ in range(cfg.blend_steps):
            alpha = round((lo + hi) / 2, 4)
            mixed = blend_weights(start, new, alpha)
            d = evaluate_guards(start, mixed, cfg=cfg, start_scores=start_scores, **sets)
            tried.append({"blend": alpha, "failed": d["failed"],
                          "heldout_gain_db": d["guards"]["heldout"]["gain_db"]})
            if d["accepted"]:
                decision, chosen = d, mixed
                decision["blend"] = alpha
            if d["accepted"] or d["failed"] == ["heldout"]:
                lo = alpha
            else:
                hi = alpha
    decision["tried"] = tried
    return decision, chosen


# --------------------------------------------------------------------------- stages


@dataclass
class _Recording:
    """What the first pass over the bag found."""

    frames: int
    size: tuple[int, int]  # (w, h)
    color: bool
    events: int
    stats: RainStats
    fps: float


def _read_recording(bag: Path, cfg: AdaptConfig, progress: bool) -> _Recording:
    """Pass 1: count windows, measure the fine-tuning part's statistics."""
    from derain_ros.sync import windows_from_bag

    acc = StatsAccumulator()
    n = events = 0
    size: tuple[int, int] | None = None
    color = True
    stamps: list[int] = []
    bar = tqdm(desc="read recording", unit="frame", disable=not progress, leave=False)
    for w in windows_from_bag(bag, extra_topics=()):
        if n >= cfg.max_frames:
            break
        img = w.image.to_network()
        size = (w.image.width, w.image.height)
        color = img.shape[2] == 3
        events += len(w.events)
        stamps.append(int(w.t_ns))
        acc.add(w.events.x, w.events.y, img, w.image.height, w.image.width,
                has_prev=w.t_prev_ns is not None and not w.events_missing)
        n += 1
        bar.update(1)
    bar.close()
    if size is None:
        raise SyncError(f"{bag}: no frames")
    dt = np.diff(np.asarray(stamps, np.float64)) * 1e-9
    fps = float(1.0 / np.median(dt)) if len(dt) and np.median(dt) > 0 else 30.0
    return _Recording(n, size, color, events, acc.result(), fps)


def _chunks(start: int, stop: int, length: int, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping chunks of ``length`` frames spread over [start, stop)."""
    room = stop - start
    fit = room // length
    if fit <= 0:
        return []
    count = min(count, fit)
    starts = np.linspace(start, stop - length, count).round().astype(int)
    return [(int(s), int(s) + length) for s in starts]


def _derain_chunks(init: Path, bag: Path, chunks: Sequence[tuple[int, int]], out_dir: Path,
                   progress: bool) -> list[Path]:
    """Pass 2: derain the chunks' windows with ``init`` (DerainEngine, causal as its
    contract says); each chunk is written as a ``.npy`` of frames. Skips existing files."""
    from derain_ros.engine import DerainEngine
    from derain_ros.sim.sources import save_frames
    from derain_ros.sync import windows_from_bag

    paths = [out_dir / f"derained_{a:06d}_{b:06d}.npy" for a, b in chunks]
    todo = {c: p for c, p in zip(chunks, paths, strict=True) if not p.exists()}
    if not todo:
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = DerainEngine(str(init), device="cpu", dtype="fp32", backend="torch",
                          want_rain=False)
    total = sum(b - a for a, b in todo)
    bar = tqdm(total=total, desc="derain", unit="frame", disable=not progress, leave=False)
    current: list[np.ndarray] = []
    active: tuple[int, int] | None = None
    last = max(b for _, b in todo)
    for i, w in enumerate(windows_from_bag(bag, extra_topics=())):
        if i >= last:
            break
        hit = next((c for c in todo if c[0] <= i < c[1]), None)
        if hit is None:
            continue
        if hit != active:
            engine.reset()
            active, current = hit, []
        res = engine.process(w)
        if res is None:  # a centre network: the previous window's result comes later
            continue
        current.append(res.derained)
        bar.update(1)
        if i == hit[1] - 1:
            if len(current) < hit[1] - hit[0]:  # centre: the last frame repeats
                current += [current[-1]] * (hit[1] - hit[0] - len(current))
            save_frames(todo[hit], current)
    bar.close()
    return paths


def _model_overrides(init: Path) -> tuple[str, dict[str, Any]]:
    from derain_ros.model import read_checkpoint_info

    info = read_checkpoint_info(init)
    name = str(info.get("model") or info["config"]["name"])
    return name, {"in_chans": int(info.get("in_chans", info["config"].get("in_chans", 3)))}


class _Stages:
    """The outer progress bar: stages with their elapsed time and an ETA."""

    def __init__(self, total: int, progress: bool) -> None:
        self.bar = tqdm(total=total, desc="adapt", unit="stage", disable=not progress,
                        position=0, dynamic_ncols=True)
        self.t0 = time.monotonic()
        self.log: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.bar.set_postfix_str(name)
        t = time.monotonic()
        result = fn()
        self.log.append({"stage": name, "seconds": round(time.monotonic() - t, 1)})
        self.bar.update(1)
        return result

    def close(self) -> None:
        self.bar.close()


def adapt(bag: str | Path, out: str | Path, *, init: str | Path | None = None,
          cfg: AdaptConfig | None = None, node: str | None = None, progress: bool = True,
          train_overrides: dict[str, Any] | None = None,
          echo: Callable[[str], None] = print) -> AdaptReport:
    """Adapt ``init`` to the recording ``bag``; write ``out`` and its report (see module).

    ``train_overrides``: dotted training-config keys applied to each fine-tune (tests
    and experiments, e.g. ``{"optim.lr": 1.0}``). A recording that cannot be used (no
    frames, no events, too short) gives a refused report with the starting weights
    written unchanged; arguments that cannot work raise :class:`AdaptError`.
    """
    from derain_ros.model import default_checkpoint_path, load_checkpoint, save_checkpoint

    cfg = cfg or AdaptConfig()
    t_start = time.monotonic()
    bag = Path(bag)
    out = _stem(out)
    init_path = _stem(init) if init else _stem(default_checkpoint_path("derain_tiny"))
    if not init_path.with_suffix(".safetensors").is_file():
        raise AdaptError(f"no starting weights at {init_path}.safetensors (pass --init)")
    if not bag.exists():
        raise AdaptError(f"{bag} does not exist")
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    report = AdaptReport(str(bag), str(init_path), str(out), False, "",
                         config=dataclasses.asdict(cfg))
    start_net = load_checkpoint(init_path)
    start_info = _read_info(init_path)
    key = {"bag": str(bag.resolve()), "init_sha": _sha(init_path.with_suffix(".safetensors")),
           "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _JUDGING},
           "overrides": train_overrides or {}}
    state_file = work / "state.json"
    if state_file.exists() and json.loads(state_file.read_text()).get("key") != json.loads(
            json.dumps(key, default=str)):
        _log.warning("%s belongs to another adaptation: starting it over", work)
        shutil.rmtree(work)
        work.mkdir(parents=True)
    _write_json(state_file, {"key": key})
    stages = _Stages(3 + 3 * cfg.rounds, progress)

    def finish(accepted_net: Any, accepted: bool, reason: str) -> AdaptReport:
        report.accepted, report.reason = accepted, reason
        report.seconds = round(time.monotonic() - t_start, 1)
        report.config["stages"] = stages.log
        prov = dict(start_info.get("provenance") or {})
        prov["adaptation"] = {k: v for k, v in report.as_dict().items() if k != "node"}
        save_checkpoint(accepted_net, out, prov)
        if node and accepted:
            report.node = _set_node(node, out.with_suffix(".safetensors"))
        _write_json(out.with_name(out.name + ".adapt.json"), report.as_dict())
        stages.close()
        echo(f"adapt: {'ACCEPTED' if accepted else 'REFUSED'}: {reason}")
        echo(f"wrote {out}.safetensors and {out.name}.adapt.json "
             f"({report.seconds:.0f} s)")
        return report

    # 1. the recording
    try:
        rec = stages.run("read", lambda: _read_recording(bag, cfg, progress))
    except SyncError as err:
        return finish(start_net, False, f"the recording cannot be used: {err}")
    report.recording = {"frames": rec.frames, "width": rec.size[0], "height": rec.size[1],
                        "color": rec.color, "events": rec.events, "fps": round(rec.fps, 2),
                        "stats": rec.stats.as_dict()}
    if rec.events == 0:
        return finish(start_net, False, "the recording has frames but no events: nothing "
                      "to calibrate the rain with (weights unchanged)")
    n_fit = int(rec.frames * (1 - cfg.heldout_fraction))
    L = cfg.clip_frames
    train_chunks = _chunks(0, n_fit, L, cfg.max_clips)
    held_chunks = _chunks(n_fit, rec.frames, L, cfg.heldout_clips)
    if not train_chunks or not held_chunks:
        return finish(start_net, False, f"the recording is too short: {rec.frames} frames; "
                      f"adaptation needs at least {math.ceil(L / cfg.heldout_fraction)} "
                      f"(weights unchanged)")
    # Fine-tuning part's statistics only (pass 1 measured all frames read; re-measure
    # the fine-tuning part when a held-out tail exists).
    from derain_training.calibrate import measure_bag

    rec_stats = measure_bag(bag, max_frames=n_fit)
    report.recording["stats"] = rec_stats.as_dict()
    current = init_path
    current_net = start_net
    synth_dir = work / "synthetic"
    val_dir = work / "val"

    # the fixed evaluation sets: synthetic validation (test scenes)
    def make_val() -> list[Path]:
        from derain_ros.sim.sources import list_sources
        from derain_training.synthetic import plan_clips, write_clips

        scenes = [s.name for s in list_sources(split="test", available_only=True)]
        specs = []
        for j, scene in enumerate(scenes[:cfg.val_scenes]):
            specs += plan_clips(len(cfg.val_families), 4242 + j, sources=[scene],
                                families=list(cfg.val_families), sizes=[cfg.val_size],
                                frames=cfg.val_frames, grey_fraction=0.0 if rec.color else 1.0,
                                prefix=f"val{j}_")
        return write_clips(specs, val_dir, workers=cfg.workers, progress=False)

    val_bags = stages.run("validation set", make_val)
    fit: FitResult | None = None
    rounds: list[dict[str, Any]] = []
    for r in range(cfg.rounds):
        rdir = work / f"round{r}"
        rdir.mkdir(exist_ok=True)
        derained = stages.run(f"derain r{r}", functools.partial(
            _derain_chunks, current, bag, [*train_chunks, *held_chunks], rdir / "derained",
            progress))
        train_np, held_np = derained[:len(train_chunks)], derained[len(train_chunks):]
        if fit is None:
            calib_file = work / "calibration.json"

            calibrate = functools.partial(
                fit_rain, rec_stats, f"frames:{train_np[0]}", n_frames=min(cfg.calib_frames, L),
                families=cfg.families, sensors=cfg.sensors, color=rec.color,
                progress=progress, seed=cfg.seed + 11)

            if calib_file.exists():
                data = json.loads(calib_file.read_text())
                best = Candidate(data["family"], data["intensity"], data["sensor_model"])
                fit = FitResult(best, data["distance"], rec_stats, [])
                fit_dict = data
            else:
                fit = stages.run("calibrate", calibrate)
                fit_dict = fit.as_dict()
                _write_json(calib_file, fit_dict)
                echo("rain calibration (recording vs re-rained derained frames):")
                echo(fit_table(fit))
            report.calibration = fit_dict
            # held-out guard sets, rendered once from the first round's derained frames
            held_bags, dry_bags = _render_heldout(held_np, fit.best, rec, work / "heldout",
                                                  cfg)
        best = fit.best
        pair_bags = _render_pairs(train_np, best, rec, rdir / "pairs", cfg, r)
        synth_bags = _synthetic_slice(synth_dir, rec, cfg)
        budget = _train_budget(cfg, t_start, r)
        try:
            result = stages.run(f"fine-tune r{r}", functools.partial(
                _finetune, current, [*pair_bags, *synth_bags], rdir / "train", cfg, budget,
                progress, train_overrides))
            new_net = load_checkpoint(result)
            failure = None
        except (DerainError, RuntimeError) as err:
            new_net, failure = None, f"fine-tune failed: {err}"
        if new_net is None:
            decision = {"round": r, "accepted": False, "failed": ["fine-tune"],
                        "reason": failure}
        else:
            decision, new_net = stages.run(f"guards r{r}", functools.partial(
                _judge, current_net, new_net, heldout=held_bags, synthetic=val_bags,
                dry=dry_bags, cfg=cfg))
            decision["round"] = r
            decision["train_seconds"] = round(budget, 1)
            if decision["accepted"] and decision["blend"] < 1.0:
                result = rdir / "blend" / "accepted"
                save_checkpoint(new_net, result, {"blend": decision["blend"]})
        rounds.append(decision)
        report.rounds = rounds
        _print_round(decision, echo)
        if not decision["accepted"] or new_net is None:
            break
        current, current_net = result, new_net
    report.rounds = rounds
    accepted_any = any(d["accepted"] for d in rounds)
    if accepted_any:
        n_acc = sum(d["accepted"] for d in rounds)
        g = rounds[n_acc - 1]["guards"]["heldout"]
        reason = (f"{n_acc} round(s) accepted; held-out re-rained PSNR "
                  f"{rounds[0]['guards']['heldout']['start_db']:.2f} -> {g['new_db']:.2f} dB")
        blends = [d["blend"] for d in rounds[:n_acc] if d.get("blend", 1.0) < 1.0]
        if blends:
            reason += (f" (weights blended with the start at "
                       f"{', '.join(f'{b:g}' for b in blends)}: the full fine-tune failed a "
                       f"guard)")
        if n_acc < len(rounds):
            reason += f"; round {n_acc} refused ({_why(rounds[n_acc])}), its weights dropped"
    else:
        reason = f"weights unchanged: {_why(rounds[0])}"
    return finish(current_net, accepted_any, reason)


def _why(decision: dict[str, Any]) -> str:
    if decision.get("reason"):
        return str(decision["reason"])
    parts = []
    for name in decision.get("failed", []):
        g = decision["guards"][name]
        parts.append(f"guard {name} failed ({g['rule']}: start {g['start_db']:.2f}, "
                     f"new {g['new_db']:.2f} dB)")
    return "; ".join(parts) or "?"


def _print_round(d: dict[str, Any], echo: Callable[[str], None]) -> None:
    if "guards" not in d:
        echo(f"round {d['round']}: refused: {d.get('reason')}")
        return
    blend = d.get("blend", 1.0)
    how = "" if blend == 1.0 else f" (blend {blend:g} of the fine-tune)"
    echo(f"round {d['round']}: {'accepted' if d['accepted'] else 'REFUSED'}{how}")
    echo(f"  {'guard':10s} {'start dB':>9s} {'new dB':>9s} {'change':>8s}  passed  rule")
    for name, g in d["guards"].items():
        echo(f"  {name:10s} {g['start_db']:9.2f} {g['new_db']:9.2f} "
             f"{g['new_db'] - g['start_db']:+8.2f}  {g['passed']!s:6s}  {g['rule']}")


def _read_info(path: Path) -> dict[str, Any]:
    from derain_ros.model import read_checkpoint_info

    return read_checkpoint_info(path)


def _clip_specs(frames_npys: Sequence[Path], cand: Candidate, rec: _Recording, prefix: str,
                seed: int, jitter: float, *, dry: bool = False) -> list[Any]:
    from derain_training.synthetic import ClipSpec

    rng = np.random.default_rng(seed)
    specs = []
    for i, npy in enumerate(frames_npys):
        n = int(np.load(npy, mmap_mode="r").shape[0])
        inten = float(np.clip(cand.intensity + rng.uniform(-jitter, jitter), 0.02, 1.0))
        specs.append(ClipSpec(
            name=f"{prefix}{i:03d}", source=f"frames:{npy}",
            family="none" if dry else cand.family, intensity=None if dry else inten,
            sensor_model=cand.sensor_model, width=rec.size[0], height=rec.size[1],
            frames=n, seed=seed * 1000 + i, color=rec.color, scene_applied=True))
    return specs


def _render_pairs(npys: Sequence[Path], cand: Candidate, rec: _Recording, out: Path,
                  cfg: AdaptConfig, round_: int) -> list[Path]:
    from derain_training.synthetic import write_clips

    specs = _clip_specs(npys, cand, rec, "rerain", 100 + round_ + cfg.seed,
                        cfg.intensity_jitter)
    return write_clips(specs, out, workers=cfg.workers, progress=False)


def _render_heldout(npys: Sequence[Path], cand: Candidate, rec: _Recording, out: Path,
                    cfg: AdaptConfig) -> tuple[list[Path], list[Path]]:
    from derain_training.synthetic import write_clips

    wet = _clip_specs(npys, cand, rec, "held", 900 + cfg.seed, 0.0)
    dry = _clip_specs(npys, cand, rec, "dry", 950 + cfg.seed, 0.0, dry=True)
    bags = write_clips([*wet, *dry], out, workers=cfg.workers, progress=False)
    return bags[:len(wet)], bags[len(wet):]


def _synthetic_slice(out: Path, rec: _Recording, cfg: AdaptConfig) -> list[Path]:
    """Clips of the ``train`` scenes, every family, at the recording's size."""
    from derain_ros.sim.families import RAIN_FAMILIES
    from derain_ros.sim.sources import list_sources
    from derain_training.synthetic import plan_clips, write_clips

    if cfg.synthetic_clips <= 0:
        return []
    scenes = [s.name for s in list_sources(split="train", available_only=True)]
    specs = plan_clips(cfg.synthetic_clips, 7000 + cfg.seed, sources=scenes,
                       families=list(RAIN_FAMILIES), sizes=[rec.size],
                       frames=cfg.clip_frames, grey_fraction=0.0 if rec.color else 1.0,
                       prefix="keep")
    return write_clips(specs, out, workers=cfg.workers, progress=False)


def _train_budget(cfg: AdaptConfig, t_start: float, round_: int) -> float:
    """Seconds of fine-tuning for this round: its share of what is left of the budget."""
    total = cfg.minutes * 60.0
    left = total - (time.monotonic() - t_start)
    rounds_left = cfg.rounds - round_
    return max(20.0, cfg.train_share * left / rounds_left)


def _finetune(init: Path, bags: Sequence[Path], out: Path, cfg: AdaptConfig, seconds: float,
              progress: bool, overrides: dict[str, Any] | None) -> Path:
    """Supervised fine-tune from ``init`` (resumes a run interrupted in ``out``)."""
    from derain_training.config import load_config
    from derain_training.state import find_latest
    from derain_training.trainer import Trainer

    export = out / "export"
    done = sorted(export.glob("*.safetensors")) if export.exists() else []
    if done:
        return done[0].with_suffix("")
    name, model_over = _model_overrides(init)
    h = _min_side(bags)
    crop = min(cfg.crop, h - h % 8) if cfg.crop else 0
    settings = {
        "mode": "supervised", "model.name": name, "model.overrides": model_over,
        "run.steps": cfg.steps, "run.max_seconds": float(seconds), "run.seed": cfg.seed,
        "run.ckpt_every": 25, "run.val_every": 10 ** 9, "run.image_every": 10 ** 9,
        "run.device": "cpu", "run.threads": cfg.threads, "run.keep_ckpts": 2,
        "optim.lr": cfg.lr, "optim.warmup_steps": cfg.warmup_steps,
        "losses.supervised.anchor": cfg.anchor,
        "data.batch_size": cfg.batch_size, "data.crop": crop,
        "data.cache_dir": str(out.parent / "cache"),
    }
    settings.update(overrides or {})
    tcfg = load_config(None, **settings)
    resume = find_latest(out / "checkpoints") is not None
    trainer = Trainer(tcfg, list(bags), out, init=init, resume=resume, progress=progress)
    result = trainer.fit()
    if result.export is None:
        raise AdaptError(f"the fine-tune in {out} ended without exporting weights")
    return _stem(result.export)


def _min_side(bags: Sequence[Path]) -> int:
    from derain_ros.sync import windows_from_bag

    for w in windows_from_bag(bags[0], extra_topics=()):
        return min(w.image.height, w.image.width)
    return 0


def _set_node(node: str, checkpoint: Path) -> dict[str, Any]:
    """Set the running node's ``checkpoint`` parameter (the only rclpy use, in ros/)."""
    try:
        from derain_ros.ros.params import set_checkpoint
    except ImportError as err:
        return {"node": node, "ok": False, "reason": f"rclpy is not available: {err}"}
    ok, reason = set_checkpoint(node, str(checkpoint))
    return {"node": node, "ok": ok, "reason": reason, "checkpoint": str(checkpoint)}
