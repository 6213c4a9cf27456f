"""Inference speed of every network size: frames per second and latency at batch 1.

CPU: torch with 2 threads (the target machine's cores; ``BENCH_THREADS=N`` overrides),
float32, NCHW, at 346x260 (a DAVIS346) and 640x480 (a VGA colour camera); the tiny
sizes also through onnxruntime (2 intra-op threads) from the ONNX export, as an
alternative CPU runtime, and torch with 1 thread. CUDA (when a GPU exists): float32 and
fp16 autocast, channels-last.
Random clips (speed does not depend on content); each figure is the median of several
timed runs after warm-up, and the best run is shown too (the least disturbed by other
load on a shared machine; the load average is printed). Keeps to about 2 minutes on
2 cores.

Runtime back-ends (``derain_ros.runtime``): for derain_tiny and derain_base at both sizes,
one row per back-end through ``make_runner`` exactly as the node calls it (numpy out):
``torch`` (eager), ``torch_compile`` (its compile time apart), ``onnxruntime`` (CPU EP)
and ``onnxruntime`` at dtype int8 (the quantised graph, calibrated first on a synthetic
rainy clip as the node calibrates on its first frames: ``calibrate_int8``), 2 threads
each; on CUDA also torch fp16/bf16 channels-last and the onnxruntime CUDA and
TensorRT providers where installed. Each row: fps, latency p50/p99 and the ratio to torch
eager in the same run. ``--backends`` runs only this part (several minutes on 2 cores:
compiling derain_base takes a few), ``--no-backends`` skips it.

Run: ``.venv/bin/python bench/model_speed.py``. Last line: one JSON object
(``{"tiny_fps_346x260_cpu": .., "base_fps_640x480_cpu": .., "backends": [...], ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from derain_ros.model import create_model, export_onnx

CPU_THREADS = int(os.environ.get("BENCH_THREADS", "2"))
SIZES = [(346, 260), (640, 480)]  # (width, height) px
MODELS = ["derain_tiny", "derain_tiny_frames", "derain_base", "derain_base_frames"]
#: Timed runs stop at this many or after this many seconds per figure (at least 2 runs).
MAX_RUNS, MAX_SECONDS = 30, 4.0


def _repeat(fn) -> tuple[float, float]:
    """``(median, best)`` wall time of ``fn()`` in seconds, after warm-up."""

    def once() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    if once() < 1.0:
        once()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < 2 or (len(runs) < MAX_RUNS and time.perf_counter() - start < MAX_SECONDS):
        runs.append(once())
    return statistics.median(runs), min(runs)


def _time(model, frames, events, device: str, autocast_dtype=None) -> tuple[float, float]:
    """``(median, best)`` latency of the torch network in seconds."""
    ctx = (torch.autocast(device, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())

    def run() -> None:
        model(frames, events)
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode(), ctx:
        return _repeat(run)


def _time_onnxruntime(model, height: int, width: int, folder: Path) -> tuple[float, float] | None:
    """``(median, best)`` latency of the ONNX export in onnxruntime (CPU), or None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = export_onnx(model, folder / f"{model.config.name}_{width}x{height}.onnx", height, width)
    options = ort.SessionOptions()
    options.intra_op_num_threads = CPU_THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    frames, events = model.example_inputs(height, width)
    feeds = {"frames": frames.numpy()}
    if events is not None:
        feeds["events"] = events.numpy()
    return _repeat(lambda: session.run(None, feeds))


def _latencies(fn) -> list[float]:
    """Sorted wall times of ``fn()`` in seconds after warm-up (at least 3 timed runs)."""
    fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < 3 or (len(runs) < 4 * MAX_RUNS and
                            time.perf_counter() - start < MAX_SECONDS):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return sorted(runs)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def backend_rows() -> list[dict]:
    """One row per runtime back-end, model and size (see the module docstring)."""
    import derain_ros.runtime as rt

    setups: list[tuple[str, str, str, bool]] = [
        ("torch", "cpu", "fp32", False), ("torch_compile", "cpu", "fp32", False),
        ("onnxruntime", "cpu", "fp32", False), ("onnxruntime", "cpu", "int8", False)]
    if torch.cuda.is_available():
        setups += [("torch", "cuda", "fp32", False), ("torch", "cuda", "fp16", True),
                   ("torch", "cuda", "bf16", True), ("torch_compile", "cuda", "bf16", True),
                   ("onnxruntime", "cuda", "fp32", False), ("tensorrt", "cuda", "fp16", False)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as cache:
        for name in ("derain_tiny", "derain_base"):
            for backend, device, dtype, cl in setups:
                torch.manual_seed(0)
                try:
                    runner = rt.make_runner(backend, create_model(name).eval(), device, dtype,
                                            cache_dir=cache, threads=CPU_THREADS,
                                            channels_last=cl)
                except Exception as err:  # a back-end missing here: say so, go on
                    print(f"  {name} {backend} {device}/{dtype}: unavailable ({err})")
                    continue
                for width, height in SIZES:
                    frames, events = runner_inputs(name, height, width, backend)
                    t0 = time.perf_counter()
                    runner.prepare(height, width)
                    prepare_s = time.perf_counter() - t0
                    calibrate_s = (calibrate_int8(runner, name, height, width)
                                   if isinstance(runner, rt.Int8Runner) else 0.0)
                    times = _latencies(lambda r=runner, f=frames, e=events: r(f, e))
                    row = {"model": name, "size": f"{width}x{height}", "backend": backend,
                           "device": device, "dtype": dtype + ("/cl" if cl else ""),
                           "fps": round(len(times) / sum(times), 2),
                           "fps_p50": round(1.0 / _pct(times, 50), 2),
                           "p50_ms": round(1e3 * _pct(times, 50), 1),
                           "p99_ms": round(1e3 * _pct(times, 99), 1), "runs": len(times),
                           "prepare_s": round(prepare_s, 1), "runner": runner.name}
                    if isinstance(runner, rt.Int8Runner):
                        row["calibrate_s"] = round(calibrate_s, 1)
                        row["int8_state"] = runner.int8_status()["int8_state"]
                    rows.append(row)
                    print(f"  {name:12s} {width}x{height} {runner.name:40s} {row['fps']:7.1f} fps"
                          f" p50 {row['p50_ms']:7.1f} ms p99 {row['p99_ms']:7.1f} ms "
                          f"(prepare {prepare_s:.1f} s"
                          + (f", calibrate {calibrate_s:.1f} s: {row['int8_state']}"
                             if "int8_state" in row else "") + ")", flush=True)
    # Ratio of medians (like the rest of this bench: the median is the figure least
    # disturbed by other load on a shared machine).
    eager = {(r["model"], r["size"], r["device"]): r["fps_p50"] for r in rows
             if r["backend"] == "torch" and r["dtype"] == "fp32"}
    for r in rows:
        base = eager.get((r["model"], r["size"], r["device"]))
        r["x_eager"] = round(r["fps_p50"] / base, 2) if base else None
    return rows


def calibrate_int8(runner, name: str, height: int, width: int,
                   seed: int = 0) -> float:
    """Feed a dtype-int8 runner the clips of a synthetic rainy recording, prepared as the
    engine prepares them (the network's InputBuilder, the engine's clip order), until it
    has kept its calibration frames; wait for its background quantisation and guard.
    Returns the seconds taken, synthesis included. Whether the guard accepted the graph
    shows in ``runner.name`` (``.../int8``, else still ``.../fp32``)."""
    from derain_ros.images import from_network
    from derain_ros.model import InputBuilder
    from derain_ros.records import TriggerBatch
    from derain_ros.sim import SynthConfig, synthesize_clip
    from derain_ros.sync import FrameImage, FrameWindow

    start = time.perf_counter()
    builder = InputBuilder(create_model(name).input_contract)
    config = SynthConfig(source="skimage:astronaut@pan", width=width, height=height,
                         n_frames=runner.calibration_frames + 2, rain="heavy", seed=seed,
                         threads=CPU_THREADS)
    steps: list = []
    for f in synthesize_clip(config):
        window = FrameWindow(f.index, f.t_ns, f.t_prev_ns,
                             FrameImage(from_network(f.rainy, "rgb8"), "rgb8"), f.events,
                             TriggerBatch.empty(), f.t_ns, "rig")
        steps = [*steps[-(2 if builder.needs_next else 1):], builder.window(window)]
        if builder.needs_next and len(steps) < 2:
            continue
        target = len(steps) - 1 - int(builder.needs_next)
        frames, events = builder.clip_at([s[0] for s in steps], [s[1] for s in steps], target)
        runner(frames[None], None if events is None else events[None])
    runner.wait(1800)
    runner.prepare(height, width)  # opens the accepted int8 graph (else stays fp32)
    return time.perf_counter() - start


def runner_inputs(name: str, height: int, width: int, backend: str):
    """A random clip as the node would hand it: numpy for onnxruntime, torch otherwise."""
    frames, events = create_model(name).example_inputs(height, width)
    if backend in ("onnxruntime", "tensorrt"):
        return frames.numpy(), None if events is None else events.numpy()
    return frames, events


def print_backend_rows(rows: list[dict]) -> None:
    print(f"{'model':12s} {'size':>8s} {'back-end':40s} {'fps':>7s} {'1/p50':>7s} {'p50 ms':>8s} "
          f"{'p99 ms':>8s} {'x eager':>7s} {'runs':>5s}  (x eager: ratio of medians)")
    for r in rows:
        ratio = f"{r['x_eager']:7.2f}" if r["x_eager"] is not None else f"{'':7s}"
        print(f"{r['model']:12s} {r['size']:>8s} {r['runner']:40s} {r['fps']:7.1f} "
              f"{r['fps_p50']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {ratio} {r['runs']:5d}")


def _load() -> float:
    """1-minute load average (other processes' demand for the cores), or -1 where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="network speed, batch 1")
    parser.add_argument("--backends", action="store_true", help="only the runtime back-ends")
    parser.add_argument("--no-backends", action="store_true", help="skip the back-ends")
    args = parser.parse_args(argv)
    torch.set_num_threads(CPU_THREADS)
    torch.manual_seed(0)
    load_before = _load()
    if args.backends:
        rows = backend_rows()
        print()
        print(f"torch {torch.__version__}, {CPU_THREADS} threads, batch 1; load average "
              f"{load_before} before, {_load()} after")
        print_backend_rows(rows)
        print(json.dumps({"backends": rows, "cpu_threads": CPU_THREADS,
                          "loadavg_before": load_before, "loadavg_after": _load()}))
        return
    rows: list[tuple[str, str, str, int, float, float]] = []
    figures: dict[str, float] = {}
    setups: list[tuple[str, str, torch.dtype | None]] = [("cpu", "fp32", None)]
    if torch.cuda.is_available():
        setups += [("cuda", "fp32", None), ("cuda", "fp16", torch.float16)]
    for device, precision, amp in setups:
        for name in MODELS:
            model = create_model(name).eval().to(device)
            if device == "cuda":
                model = model.to(memory_format=torch.channels_last)
            short = name.removeprefix("derain_")
            for width, height in SIZES:
                frames, events = model.example_inputs(height, width, device=device)
                median, best = _time(model, frames, events, device, amp)
                rows.append((short, f"{width}x{height}", f"{device}/{precision}",
                             model.num_parameters(), median, best))
                suffix = device if precision == "fp32" else f"{device}_{precision}"
                figures[f"{short}_fps_{width}x{height}_{suffix}"] = round(1.0 / median, 2)
                figures[f"{short}_ms_{width}x{height}_{suffix}"] = round(1000.0 * median, 2)
                print(f"  {short:12s} {width}x{height} {device}/{precision}: "
                      f"{1000 * median:8.1f} ms", flush=True)
    # torch with one thread: far less hurt than two when other processes want the cores
    # (each of the ~200 parallel regions of a forward waits for both threads).
    torch.set_num_threads(1)
    for name in ("derain_tiny", "derain_tiny_frames"):
        model = create_model(name).eval()
        short = name.removeprefix("derain_")
        width, height = SIZES[0]
        frames, events = model.example_inputs(height, width)
        median, best = _time(model, frames, events, "cpu")
        params = model.num_parameters()
        rows.append((short, f"{width}x{height}", "cpu-1t/fp32", params, median, best))
        figures[f"{short}_fps_{width}x{height}_cpu1t"] = round(1.0 / median, 2)
        print(f"  {short:12s} {width}x{height} cpu, 1 thread: {1000 * median:8.1f} ms", flush=True)
    torch.set_num_threads(CPU_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("derain_tiny", "derain_tiny_frames"):
            model = create_model(name).eval()
            short = name.removeprefix("derain_")
            for width, height in SIZES:
                timed = _time_onnxruntime(model, height, width, Path(tmp))
                if timed is None:
                    break
                median, best = timed
                rows.append((short, f"{width}x{height}", "ort-cpu/fp32", model.num_parameters(),
                             median, best))
                figures[f"{short}_fps_{width}x{height}_ort"] = round(1.0 / median, 2)
                figures[f"{short}_ms_{width}x{height}_ort"] = round(1000.0 * median, 2)
                print(f"  {short:12s} {width}x{height} onnxruntime: {1000 * median:8.1f} ms",
                      flush=True)
    backends = [] if args.no_backends else backend_rows()
    load_after = _load()
    print()
    print(f"torch {torch.__version__}, CPU threads {CPU_THREADS}, batch 1; load average "
          f"{load_before} before, {load_after} after (above ~0.5 the CPU figures are disturbed)")
    print(f"{'model':12s} {'size':>8s} {'device':>12s} {'params':>10s} {'median ms':>10s} "
          f"{'best ms':>9s} {'fps':>7s}")
    for short, size, dev, params, median, best in rows:
        print(f"{short:12s} {size:>8s} {dev:>12s} {params:>10,d} {1000 * median:10.1f} "
              f"{1000 * best:9.1f} {1 / median:7.1f}")
    if backends:
        print()
        print_backend_rows(backends)
        figures["backends"] = backends  # type: ignore[assignment]
    figures["cpu_threads"] = CPU_THREADS
    figures["loadavg_before"], figures["loadavg_after"] = load_before, load_after
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
