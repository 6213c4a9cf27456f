"""``derain-ros eval``: score a replayed bag and write the report.

Input: the bag written by ``derain-ros replay`` (rainy input frames, the node's
``/<node>/image`` outputs and, for synthetic bags, the ground-truth topics, all in one
place), or any bag with the node's output plus ``--input-bag`` holding the rainy frames
and ground truth.

Frames are paired by ``header.stamp`` with :func:`derain_ros.sync.windows_from_bag` (the
project's one synchroniser: the output and ground-truth images ride along as the
window's ``extras``). Per frame (all images RGB float in [0, 1], full frames - the
published evaluation of the ICCV 2023 paper uses a centre 128 x 128 crop, we do not):

- with ground truth (``/ground_truth/clean``): PSNR (dB) and SSIM of the rainy input and
  of the derained output against the clean frame (:mod:`derain_ros.eval.metrics`);
- NIQE (:mod:`derain_ros.eval.noref`) of input and output, on every ``niqe_every``-th
  frame (all frames when there is no ground truth); skipped for frames too small. The
  input's NIQE is computed once per frame, and every row of the table (input, each
  baseline, the network) is averaged over the same frames (those with an output);
- latency (ms): the output's receive time minus the input frame's publish time, both
  log times of the replay bag; ``fps`` = outputs per second of replay wall time (None,
  shown "n/a", when the bag carries no replay timing).

What NIQE can and cannot tell: it measures how far an image's local statistics are from
those of pristine photographs. It does not know the scene, so it cannot tell rain
removed from detail removed: a temporal median that smears every moving thing away
(rain and scene alike) can score best. Without ground truth the report says so
(:data:`NIQE_NOTE`), and louder when a median baseline ranks best.

Baselines (:mod:`derain_ros.eval.baselines`) are scored the same way, so the report's
table reads: rainy input, temporal medians, the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from derain_ros.bag import BagReader
from derain_ros.conventions import EVENT_TOPIC, GT_CLEAN_TOPIC, IMAGE_TOPIC, OUT_IMAGE
from derain_ros.eval.baselines import BASELINES, run_baseline
from derain_ros.eval.errors import EvalError, NoFramesError, NoReferenceError
from derain_ros.eval.metrics import image_psnr, image_ssim, latency_summary
from derain_ros.eval.noref import brisque_available, niqe
from derain_ros.eval.replay import REPLAY_SUMMARY, check_frames, node_topic
from derain_ros.sync import stamp_to_ns, windows_from_bag

__all__ = ["NIQE_NOTE", "EvalResult", "FrameScore", "add_arguments", "evaluate_bag", "run"]

#: What NIQE can and cannot tell (in the report and the summary when there is no ground truth).
NIQE_NOTE = ("NIQE (no reference) measures how natural an image's local statistics look, "
             "not whether rain was removed or the scene kept: it cannot tell rain removed "
             "from detail removed, so a blurry or static image (e.g. a temporal median that "
             "erases everything that moves) can score best. Use it to compare methods on "
             "the same frames, and judge the pictures and the video; PSNR/SSIM need ground "
             "truth.")

#: a topic name no bag has: windows_from_bag then reads no events (eval needs none)
_NO_EVENTS = "/derain_eval/no_events"


@dataclass
class FrameScore:
    """Scores of one frame (NaN where not computed). ``stamp_ns``: header stamp (ns)."""

    index: int
    stamp_ns: int
    has_output: bool
    psnr_input: float = math.nan
    psnr_output: float = math.nan
    ssim_input: float = math.nan
    ssim_output: float = math.nan
    niqe_input: float = math.nan
    niqe_output: float = math.nan
    latency_ms: float = math.nan


@dataclass
class Clip:
    """The frames kept for baselines, pictures and the video (uint8 RGB H x W x 3)."""

    rainy: list[np.ndarray] = field(default_factory=list)
    derained: list[np.ndarray | None] = field(default_factory=list)
    clean: list[np.ndarray | None] = field(default_factory=list)
    fps: float = 30.0


@dataclass
class EvalResult:
    """The evaluation of one bag: per-frame scores, means, baselines, latency."""

    bag: str
    output_topic: str
    frames_in: int
    frames: int
    has_ground_truth: bool
    per_frame: list[FrameScore]
    means: dict[str, float]
    baselines: list[dict[str, Any]]
    latency_ms: dict[str, float]
    fps: float | None
    replay: dict[str, Any]
    notes: list[str]
    diagnostics: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    clip: Clip = field(default_factory=Clip, repr=False)

    def headline(self) -> dict[str, Any]:
        """The ``--json`` line (PSNR/SSIM keys only with ground truth)."""
        out: dict[str, Any] = {"frames": self.frames}
        keys = ("psnr_input", "psnr_output", "ssim_input", "ssim_output") if (
            self.has_ground_truth) else ()
        for key in (*keys, "niqe_input", "niqe_output"):
            if key in self.means and math.isfinite(self.means[key]):
                out[key] = round(self.means[key], 4)
        out["dropped"] = self.frames_in - self.frames
        for q in ("p50", "p99"):
            if q in self.latency_ms:
                out[f"latency_ms_{q}"] = round(self.latency_ms[q], 2)
        if self.fps is not None:
            out["fps"] = round(self.fps, 2)
        out["report"] = self.report
        return out

    def as_dict(self) -> dict[str, Any]:
        """Everything but the kept frames (JSON-ready)."""
        d = dataclasses.asdict(self)
        d.pop("clip", None)
        return d


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] H x W x C -> uint8 RGB H x W x 3."""
    arr = np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]


def _same_channels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compare grey with grey: a 1-channel image against RGB uses the RGB mean."""
    if a.shape[2] == b.shape[2]:
        return a, b
    if a.shape[2] == 1:
        return a, b.mean(axis=2, keepdims=True)
    return a.mean(axis=2, keepdims=True), b


def _find_output_topic(topics: Sequence[str], node_name: str | None) -> str:
    if node_name:
        topic = node_topic(node_name, OUT_IMAGE)
        if topic not in topics:
            raise EvalError(f"the bag has no {topic} (topics: {', '.join(sorted(topics))})")
        return topic
    candidates = sorted(t for t in topics if t.endswith("/image") and t != IMAGE_TOPIC
                        and not t.startswith("/ground_truth/"))
    if not candidates:
        raise EvalError(
            "the bag has no node output (no /<node>/image topic): replay it through the "
            "node first (`derain-ros replay BAG --out OUT --lossless`), then evaluate OUT")
    if len(candidates) > 1:
        raise EvalError(f"several output topics {candidates}: pick one with --node-name")
    return candidates[0]


def _log_times(bag: str | Path, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """topic -> header stamp -> log time (ns), for latency."""
    out: dict[str, dict[int, int]] = {t: {} for t in topics}
    with BagReader(bag) as reader:
        present = [t for t in topics if t in reader.topics]
        for rec in reader.messages(present):
            out[rec.topic].setdefault(stamp_to_ns(rec.msg.header.stamp), rec.log_time_ns)
    return out


def _node_diagnostics(bag: str | Path, output_topic: str) -> dict[str, str]:
    """Key/values of the node's last ``/diagnostics`` status in the bag (empty if none)."""
    node = output_topic.rsplit("/", 2)[-2] if output_topic.count("/") >= 2 else ""
    values: dict[str, str] = {}
    with BagReader(bag) as reader:
        if "/diagnostics" not in reader.topics:
            return values
        for rec in reader.messages(["/diagnostics"]):
            for status in rec.msg.status:
                if status.name.split(":")[0].strip("/ ") == node:
                    values = {kv.key: kv.value for kv in status.values}
    return values


def evaluate_bag(out_bag: str | Path, *, input_bag: str | Path | None = None,
                 report_dir: str | Path | None = None, node_name: str | None = None,
                 image_topic: str = IMAGE_TOPIC, niqe_every: int = 4,
                 max_frames: int | None = None, progress: bool = True) -> EvalResult:
    """Score ``out_bag`` (see the module docstring); write the report when ``report_dir``.

    Raises :class:`NoFramesError` for a bag without frames (an events-only recording)
    and :class:`EvalError` when there is no node output to score.
    """
    out_bag = Path(out_bag)
    source = Path(input_bag) if input_bag is not None else out_bag
    src_topics = check_frames(source, image_topic, EVENT_TOPIC)
    with BagReader(out_bag) as reader:
        out_topics = reader.topics
    output_topic = _find_output_topic(list(out_topics), node_name)
    has_gt = GT_CLEAN_TOPIC in src_topics
    notes = ["full frames are scored (the ICCV 2023 paper scores a centre 128x128 crop)",
             brisque_available()[1]]
    summary = out_bag / REPLAY_SUMMARY
    replay_info: dict[str, Any] = json.loads(summary.read_text()) if summary.is_file() else {}

    frames_total = src_topics[image_topic].count
    if max_frames is not None:
        frames_total = min(frames_total, max_frames)
    scoring = _Scoring(has_gt=has_gt, niqe_every=niqe_every, notes=notes)
    _score_frames(scoring, source, out_bag, image_topic, output_topic, max_frames,
                  tqdm(total=frames_total, desc="eval", unit="frame", disable=not progress,
                       file=sys.stderr))
    scores, clip = scoring.scores, scoring.clip
    if not scores:
        raise NoFramesError(f"{source}: no frames could be read on {image_topic}")

    latency = latency_summary(_latencies(scores, out_bag, image_topic, output_topic)
                              if source == out_bag else [])
    fps = float(replay_info["fps"]) if replay_info.get("fps") else None
    if not latency and replay_info.get("latency_ms"):
        latency = dict(replay_info["latency_ms"])

    scored = [s for s in scores if s.has_output]
    means = {key: _nanmean([getattr(s, key) for s in scored])
             for key in ("psnr_input", "psnr_output", "ssim_input", "ssim_output",
                         "niqe_input", "niqe_output")}
    baselines = _baselines(clip, scores, has_gt, scoring.niqe_ok)
    if not has_gt:
        notes.insert(0, NIQE_NOTE)
        best = _niqe_best(baselines)
        if best is not None and best["name"].startswith("median"):
            notes.insert(0, f"NIQE ranks the {best['label']} best ({best['niqe']:.2f}): "
                            "read this as a property of NIQE, not as the best deraining "
                            "(see the pictures and the video)")
    missing = len(scores) - len(scored)
    if missing:
        notes.append(f"{missing} of {len(scores)} frames have no output (dropped by the "
                     f"node or lost); means are over the {len(scored)} with output")
    notes.extend(f"replay: {w}" for w in replay_info.get("warnings", []))
    diagnostics = _node_diagnostics(out_bag, output_topic)
    if diagnostics.get("random_weights") == "True":
        notes.insert(0, "the node ran RANDOM weights (no trained weights were found): its "
                        "output is not derained, and the network's scores mean nothing yet")
    result = EvalResult(
        bag=str(out_bag), output_topic=output_topic, frames_in=len(scores),
        frames=len(scored), has_ground_truth=has_gt, per_frame=scores, means=means,
        baselines=baselines, latency_ms=latency, fps=fps, replay=replay_info,
        notes=notes, diagnostics=diagnostics, clip=clip)
    if report_dir is not None:
        from derain_ros.eval.report import write_report

        result.report = str(write_report(result, report_dir).markdown)
    return result


@dataclass
class _Scoring:
    """Scores and the clip collected frame by frame; NIQE is given up on at its first
    failure (``niqe_ok``), with a note."""

    has_gt: bool
    niqe_every: int
    notes: list[str]
    scores: list[FrameScore] = field(default_factory=list)
    clip: Clip = field(default_factory=Clip)
    stamps: list[int] = field(default_factory=list)
    niqe_ok: bool = True


def _outputs_by_stamp(out_bag: Path, output_topic: str) -> dict[int, Any]:
    """The node's outputs in ``out_bag`` by ``header.stamp`` (for a separate input bag)."""
    from derain_ros.sync import image_from_msg

    out: dict[int, Any] = {}
    with BagReader(out_bag) as reader:
        for rec in reader.messages([output_topic]):
            out[stamp_to_ns(rec.msg.header.stamp)] = image_from_msg(rec.msg)
    return out


def _score_frames(scoring: _Scoring, source: Path, out_bag: Path, image_topic: str,
                  output_topic: str, max_frames: int | None, bar: Any) -> None:
    """Score every frame of ``source`` against its output (in ``source`` itself, or by
    stamp in ``out_bag``) and the ground truth; sets the clip's frame rate."""
    # outputs live in out_bag; with a separate input bag, load them by stamp
    separate: dict[int, Any] = {}
    extras = [GT_CLEAN_TOPIC] if scoring.has_gt else []
    if source == out_bag:
        extras.append(output_topic)
    else:
        separate = _outputs_by_stamp(out_bag, output_topic)
    for window in windows_from_bag(source, image_topic, _NO_EVENTS, extra_topics=extras):
        if max_frames is not None and len(scoring.scores) >= max_frames:
            break
        out_img = window.extras.get(output_topic) if source == out_bag else (
            separate.get(window.stamp_ns))
        _score_one(scoring, window, out_img)
        bar.update(1)
    bar.close()
    stamps = scoring.stamps
    if len(stamps) > 1:
        dt = float(np.median(np.diff(np.asarray(stamps, np.int64)))) / 1e9
        scoring.clip.fps = float(1.0 / dt) if dt > 0 else 30.0


def _score_one(scoring: _Scoring, window: Any, out_img: Any) -> None:
    """PSNR/SSIM against the ground truth, NIQE (every ``niqe_every``-th frame with
    ground truth, every frame without); the frame joins the clip."""
    i = len(scoring.scores)
    rainy = window.image.to_network()
    score = FrameScore(i, window.stamp_ns, out_img is not None)
    derained = out_img.to_network() if out_img is not None else None
    clean = window.extras[GT_CLEAN_TOPIC].to_network() if (
        GT_CLEAN_TOPIC in window.extras) else None
    if clean is not None:
        score.psnr_input = image_psnr(*_same_channels(rainy, clean))
        score.ssim_input = image_ssim(*_same_channels(rainy, clean))
        if derained is not None:
            score.psnr_output = image_psnr(*_same_channels(derained, clean))
            score.ssim_output = image_ssim(*_same_channels(derained, clean))
    if scoring.niqe_ok and (not scoring.has_gt or i % max(1, scoring.niqe_every) == 0):
        try:
            score.niqe_input = niqe(rainy)
            if derained is not None:
                score.niqe_output = niqe(derained)
        except NoReferenceError as err:
            scoring.niqe_ok = False
            scoring.notes.append(f"NIQE skipped: {err}")
    scoring.scores.append(score)
    scoring.stamps.append(window.stamp_ns)
    clip = scoring.clip
    clip.rainy.append(_to_uint8(rainy))
    clip.derained.append(_to_uint8(derained) if derained is not None else None)
    clip.clean.append(_to_uint8(clean) if clean is not None else None)


def _latencies(scores: list[FrameScore], out_bag: Path, image_topic: str,
               output_topic: str) -> list[float]:
    """Latency (ms) per frame from the replay's log times (input publish -> output
    receive), also set on each score."""
    latencies: list[float] = []
    times = _log_times(out_bag, [image_topic, output_topic])
    for s in scores:
        t_in, t_out = times[image_topic].get(s.stamp_ns), times[output_topic].get(s.stamp_ns)
        if t_in is not None and t_out is not None:
            s.latency_ms = (t_out - t_in) / 1e6
            latencies.append(s.latency_ms)
    return latencies


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], float)
    if arr.size == 0:
        return math.nan
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else float(arr.mean())


def _niqe_best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the lowest (best) finite NIQE, other than the rainy input."""
    scored = [r for r in rows if r["name"] != "rainy" and math.isfinite(r.get("niqe", math.nan))]
    return min(scored, key=lambda r: r["niqe"]) if scored else None


def _baselines(clip: Clip, scores: list[FrameScore], has_gt: bool,
               niqe_ok: bool) -> list[dict[str, Any]]:
    """Rows of the quality table: each baseline, then the network.

    Every row is scored on the same frames: PSNR/SSIM on the frames with an output and
    ground truth; NIQE (without ground truth) on the frames with an output whose NIQE was
    computed. The rainy input's NIQE is the per-frame value computed once while scoring.
    """
    rows: list[dict[str, Any]] = []
    rainy = [f.astype(np.float32) / 255.0 for f in clip.rainy]
    with_out = [i for i, s in enumerate(scores) if s.has_output]
    niqe_idx = [i for i in with_out if math.isfinite(scores[i].niqe_output)
                and math.isfinite(scores[i].niqe_input)]
    for name, (label, _) in BASELINES.items():
        images = run_baseline(name, rainy)
        row: dict[str, Any] = {"name": name, "label": label}
        if has_gt:
            idx = [i for i in with_out if clip.clean[i] is not None]
            cleans = [c.astype(np.float32) / 255.0
                      for c in (clip.clean[i] for i in idx) if c is not None]
            row["psnr"] = _nanmean([image_psnr(images[i], c) for i, c in zip(idx, cleans,
                                                                           strict=True)])
            row["ssim"] = _nanmean([image_ssim(images[i], c) for i, c in zip(idx, cleans,
                                                                           strict=True)])
        if niqe_ok and not has_gt:
            row["niqe"] = _nanmean([scores[i].niqe_input if name == "rainy"
                                    else niqe(images[i]) for i in niqe_idx])
        rows.append(row)
    net: dict[str, Any] = {"name": "network", "label": "network (node output)"}
    scored = [s for s in scores if s.has_output]
    if has_gt:
        net["psnr"] = _nanmean([s.psnr_output for s in scored])
        net["ssim"] = _nanmean([s.ssim_output for s in scored])
    if niqe_ok and not has_gt:
        net["niqe"] = _nanmean([scores[i].niqe_output for i in niqe_idx])
    rows.append(net)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``derain-ros eval``."""
    parser.add_argument("bag", type=Path, help="the bag written by derain-ros replay")
    parser.add_argument("--input-bag", type=Path, default=None,
                        help="rainy frames + ground truth, when BAG holds only the outputs")
    parser.add_argument("--report", type=Path, default=None,
                        help="folder for report.md / report.html, images and the video")
    parser.add_argument("--node-name", default=None,
                        help="node whose ~/image to score (default: the one in the bag)")
    parser.add_argument("--image-topic", default=IMAGE_TOPIC)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON line: frames, psnr/ssim in and out, report")


def run(args: argparse.Namespace) -> int:
    """``derain-ros eval``."""
    try:
        result = evaluate_bag(args.bag, input_bag=args.input_bag, report_dir=args.report,
                              node_name=args.node_name, image_topic=args.image_topic,
                              max_frames=args.max_frames, progress=not args.json)
    except NoFramesError as err:
        print(f"derain-ros eval: {err}", file=sys.stderr)
        return 2
    print(format_summary(result))
    if args.json:
        print(json.dumps(result.headline()))
    return 0


def format_summary(result: EvalResult) -> str:
    """Human-readable headline numbers."""
    m, lines = result.means, [f"{result.frames}/{result.frames_in} frames scored "
                              f"({result.output_topic})"]
    if result.has_ground_truth:
        lines.append(f"PSNR {m['psnr_input']:.2f} dB -> {m['psnr_output']:.2f} dB, "
                     f"SSIM {m['ssim_input']:.4f} -> {m['ssim_output']:.4f}")
    if math.isfinite(m.get("niqe_input", math.nan)):
        lines.append(f"NIQE {m['niqe_input']:.2f} -> {m['niqe_output']:.2f} (lower is better)")
    if not result.has_ground_truth:
        rows = [f"{b['label']} {b['niqe']:.2f}" for b in result.baselines
                if math.isfinite(b.get("niqe", math.nan))]
        if rows:
            lines.append("NIQE by method: " + ", ".join(rows))
        lines.extend(f"note: {n}" for n in result.notes if "NIQE" in n)
    if result.latency_ms:
        lat = result.latency_ms
        lines.append(f"latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                     + (f"{result.fps:.1f} fps" if result.fps is not None else "fps n/a"))
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)
