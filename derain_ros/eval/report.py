"""The evaluation report: Markdown and HTML with pictures, plots and a side-by-side video.

Written into one folder (paths inside are relative, so the folder can be moved):

- ``report.md`` and ``report.html``: the same content, built once as a list of blocks
  and rendered twice (no Markdown library needed to read the HTML);
- ``frames/frame_NNNN.png``: rainy | derained | clean (when there is ground truth) for a
  few frames spread over the clip;
- ``per_frame.png``: PSNR and SSIM per frame (input vs output), or NIQE without ground
  truth; ``latency.png``: latency per frame (ms);
- ``rainy_vs_derained.mp4``: rainy | derained side by side, at the clip's frame rate:
  H.264 (libx264, yuv420p, ``+faststart``) in MP4, which every current browser plays
  (MPEG-4 Part 2, OpenCV's ``mp4v``, plays in none). Encoded by the ffmpeg binary that
  the PyPI ``imageio-ffmpeg`` wheel bundles (nothing is downloaded at run time): the
  OpenCV wheel's ffmpeg has no H.264 encoder, and its VP9 is ~10x slower than libx264.

matplotlib runs with the Agg backend (no display).
"""

from __future__ import annotations

import contextlib
import html
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from derain_ros.eval.evaluate import EvalResult

__all__ = ["INCOMPLETE", "ReportPaths", "side_by_side", "write_report", "write_video"]

#: marker file in a report folder whose writing did not finish
INCOMPLETE = "INCOMPLETE.txt"
_SAMPLES = 3
_LABEL_H = 18  # px of label strip above each panel


@dataclass
class ReportPaths:
    """What :func:`write_report` wrote."""

    folder: Path
    markdown: Path
    html: Path
    frames: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    video: Path | None = None


def _panel(image: np.ndarray | None, label: str, shape: tuple[int, int]) -> np.ndarray:
    """One labelled RGB panel; a missing image is drawn black with its label."""
    h, w = shape
    body = np.zeros((h, w, 3), np.uint8) if image is None else image
    strip = np.full((_LABEL_H, w, 3), 32, np.uint8)
    cv2.putText(strip, label, (4, _LABEL_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([strip, body])


def side_by_side(images: list[np.ndarray | None], labels: list[str]) -> np.ndarray:
    """Labelled RGB uint8 panels next to each other, 2 px apart."""
    ref = next(i for i in images if i is not None)
    shape = ref.shape[:2]
    gap = np.full((shape[0] + _LABEL_H, 2, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for img, label in zip(images, labels, strict=True):
        if parts:
            parts.append(gap)
        parts.append(_panel(img, label, shape))
    return np.hstack(parts)


def _imwrite(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def _ffmpeg_exe() -> str:
    """The ffmpeg binary bundled by the ``imageio-ffmpeg`` wheel (has libx264)."""
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise OSError("writing the report's H.264 video needs the imageio-ffmpeg wheel "
                      "(requirements/python.txt; `make setup` installs it)") from err
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def write_video(path: str | Path, rainy: list[np.ndarray],
                derained: list[np.ndarray | None], fps: float) -> Path:
    """An H.264 MP4 of rainy | derained that browsers play; frames without output are black.

    Frames are RGB uint8; the side-by-side picture is padded to even width and height
    (yuv420p needs them). Raises :class:`OSError` when ffmpeg fails (its message included).
    """
    path = Path(path)
    first = side_by_side([rainy[0], derained[0]], ["rainy", "derained"])
    h, w = first.shape[:2]
    ph, pw = h + h % 2, w + w % 2
    cmd = [_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{pw}x{ph}",
           "-r", f"{max(1.0, float(fps)):.6g}", "-i", "pipe:0",
           "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stdin = proc.stdin
    if stdin is None:  # pragma: no cover - Popen with PIPE always has one
        raise OSError("cannot start ffmpeg")
    try:
        for r, d in zip(rainy, derained, strict=True):
            frame = side_by_side([r, d], ["rainy", "derained" if d is not None else "dropped"])
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)))
            stdin.write(np.ascontiguousarray(frame).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg stopped early: its exit status and message below say why
    except BaseException:  # interrupted (Ctrl-C) or failed: no half-written video
        proc.kill()
        proc.wait()
        path.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        path.unlink(missing_ok=True)
        raise OSError(f"ffmpeg could not write {path} (exit {code}): {err.strip()[-500:]}")
    return path


def _plots(result: EvalResult, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    idx = [s.index for s in result.per_frame]
    series = ([("psnr", "PSNR (dB)"), ("ssim", "SSIM")] if result.has_ground_truth
              else [("niqe", "NIQE (lower is better)")])
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.6 * len(series)), squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], series, strict=True):
        for which, style in (("input", "o--"), ("output", "o-")):
            vals = [getattr(s, f"{key}_{which}") for s in result.per_frame]
            pts = [(i, v) for i, v in zip(idx, vals, strict=True) if math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, ms=3, label="rainy input" if which == "input"
                        else "derained")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    path = folder / "per_frame.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(path)
    lat = [(s.index, s.latency_ms) for s in result.per_frame if math.isfinite(s.latency_ms)]
    if lat:
        fig, ax = plt.subplots(figsize=(8, 2.4))
        xs, ys = zip(*lat, strict=True)
        ax.plot(xs, ys, "o-", ms=3)
        ax.set_xlabel("frame")
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / "latency.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    """A table cell: ``n/a`` for unknown (None or NaN)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else ("inf" if math.isinf(value) else
                                               f"{value:.{digits}f}")
    return str(value)


def _blocks(result: EvalResult, paths: ReportPaths) -> list[tuple[Any, ...]]:
    rel = paths.folder
    m = result.means
    blocks: list[tuple[Any, ...]] = [("h", 1, "derain_ros evaluation")]
    blocks.append(("p", f"Bag `{result.bag}`, output `{result.output_topic}`: "
                        f"{result.frames} of {result.frames_in} frames have an output."))
    rows = []
    if result.has_ground_truth:
        rows += [["PSNR (dB)", _fmt(m["psnr_input"]), _fmt(m["psnr_output"])],
                 ["SSIM", _fmt(m["ssim_input"], 4), _fmt(m["ssim_output"], 4)]]
    if math.isfinite(m.get("niqe_input", math.nan)):
        rows.append(["NIQE (lower is better)", _fmt(m["niqe_input"]), _fmt(m["niqe_output"])])
    blocks += [("h", 2, "Headline"), ("table", ["measure", "rainy input", "derained"], rows)]
    lat = result.latency_ms
    if lat:
        blocks.append(("table", ["latency p50 (ms)", "p90", "p99", "max", "fps"],
                       [[_fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")),
                         _fmt(lat.get("max")), _fmt(result.fps, 1)]]))
    diag = result.diagnostics
    if diag.get("latency_p50_ms"):
        blocks.append(("p", f"Node-reported latency (frame arrival to publish, from "
                            f"/diagnostics): p50 {diag['latency_p50_ms']} ms, p99 "
                            f"{diag.get('latency_p99_ms', 'n/a')} ms, inference p50 "
                            f"{diag.get('inference_p50_ms', 'n/a')} ms on "
                            f"{diag.get('device', '?')} ({diag.get('model', '?')})."))
    cols = ["method"] + (["PSNR (dB)", "SSIM"] if result.has_ground_truth else ["NIQE"])
    brows = [[b["label"]] + ([_fmt(b.get("psnr", math.nan)), _fmt(b.get("ssim", math.nan), 4)]
                             if result.has_ground_truth else [_fmt(b.get("niqe", math.nan))])
             for b in result.baselines]
    blocks += [("h", 2, "Baselines"), ("table", cols, brows)]
    if paths.frames:
        blocks.append(("h", 2, "Frames"))
        for f in paths.frames:
            blocks.append(("img", f.relative_to(rel).as_posix(), f.stem))
    if paths.plots:
        blocks.append(("h", 2, "Per frame"))
        for f in paths.plots:
            blocks.append(("img", f.relative_to(rel).as_posix(), f.stem))
    if paths.video is not None:
        blocks += [("h", 2, "Video"), ("video", paths.video.relative_to(rel).as_posix())]
    if result.notes:
        blocks += [("h", 2, "Notes"), ("list", result.notes)]
    return blocks


def _markdown(blocks: list[tuple[Any, ...]]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out.append("|" + "---|" * len(b[1]))
            out += ["| " + " | ".join(r) + " |" for r in b[2]]
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "video":
            out.append(f"Side by side, rainy | derained: [{b[1]}]({b[1]})")
        elif kind == "list":
            out += [f"- {item}" for item in b[1]]
        out.append("")
    return "\n".join(out)


def _html(blocks: list[tuple[Any, ...]]) -> str:
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            body.append(f"<h{b[1]}>{esc(b[2])}</h{b[1]}>")
        elif kind == "p":
            body.append(f"<p>{esc(b[1]).replace('`', '')}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(c)}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                           for r in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img":
            body.append(f'<p><img src="{esc(b[1])}" alt="{esc(b[2])}"></p>')
        elif kind == "video":
            # muted + playsinline: browsers allow a muted video to start by itself
            body.append(f'<p><video controls loop muted playsinline preload="auto">'
                        f'<source src="{esc(b[1])}" type="video/mp4"></video><br>'
                        f'<a href="{esc(b[1])}">{esc(b[1])}</a> (rainy | derained)</p>')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b[1]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #aaa;padding:4px 10px;text-align:right}"
             "img,video{max-width:100%}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>derain_ros "
            f"evaluation</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(result: EvalResult, folder: str | Path, *, video: bool = True) -> ReportPaths:
    """Write the report of ``result`` into ``folder`` (created); returns what was written.

    While it writes, and if it is interrupted, the folder holds :data:`INCOMPLETE`
    (``report.md``/``report.html`` are only there when the report is complete).
    """
    folder = Path(folder)
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    marker = folder / INCOMPLETE
    marker.write_text("This report is being written, or its writing was interrupted: "
                      "run `derain-ros eval ... --report` again.\n")
    try:
        paths = _write_report(result, folder, video)
    except BaseException:
        (folder / "report.md").unlink(missing_ok=True)
        (folder / "report.html").unlink(missing_ok=True)
        raise
    marker.unlink()
    return paths


def _write_report(result: EvalResult, folder: Path, video: bool = True) -> ReportPaths:
    paths = ReportPaths(folder, folder / "report.md", folder / "report.html")
    clip = result.clip
    n = len(clip.rainy)
    if n:
        picks = sorted({min(n - 1, round(n * (k + 1) / (_SAMPLES + 1)))
                        for k in range(_SAMPLES)})
        for i in picks:
            images: list[np.ndarray | None] = [clip.rainy[i], clip.derained[i]]
            labels = ["rainy", "derained" if clip.derained[i] is not None else "no output"]
            if clip.clean and clip.clean[i] is not None:
                images.append(clip.clean[i])
                labels.append("clean (ground truth)")
            path = folder / "frames" / f"frame_{i:04d}.png"
            _imwrite(path, side_by_side(images, labels))
            paths.frames.append(path)
        if video:
            paths.video = write_video(folder / "rainy_vs_derained.mp4", clip.rainy,
                                      clip.derained, clip.fps)
    paths.plots = _plots(result, folder)
    blocks = _blocks(result, paths)
    paths.markdown.write_text(_markdown(blocks))
    paths.html.write_text(_html(blocks))
    return paths
