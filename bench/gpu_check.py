"""GPU speed check of the deraining networks: one self-contained script for a lent GPU.

For ``derain_tiny`` and ``derain_base`` (random weights: speed does not depend on them)
at 346x260 (DAVIS346) and 640x480 (VGA), one clip at a time (batch 1, as the node runs),
it measures frames per second and latency p50/p99 of:

- ``fp32``, ``fp16``, ``bf16``: torch eager, weights and inputs in that dtype, NCHW;
- ``fp16_cl``, ``bf16_cl``: the same with channels-last weights;
- ``cudagraph_bf16_cl``: the bf16 channels-last network captured once in a
  ``torch.cuda.CUDAGraph`` and replayed (inputs copied into the static buffers);
  ``cudagraph_bf16_cl_io`` adds what the node adds per frame: the clip copied from
  pinned host memory and both outputs copied back;
- ``compile_bf16_cl``: ``torch.compile`` (mode ``--compile-mode``, default
  ``reduce-overhead``: inductor kernels replayed as CUDA graphs) of the bf16
  channels-last network; its compile time is reported apart;
- ``ort_cuda``, ``ort_trt_fp16``: the ONNX export in onnxruntime's CUDA and TensorRT
  execution providers, where the installed onnxruntime has them.

Every variant is guarded (one failing does not stop the rest: its row says why) and
timed for about ``--seconds`` (1.5 s) after warm-up, with a CUDA synchronise per frame
(latency, not pipelined throughput); inputs are already on the GPU except in ``_io``.
``max_abs_diff`` is the largest difference of the clamped background from fp32 eager
on the same clip. cuDNN benchmark mode is on (the node's frame size is fixed); TF32
convolutions are torch's default. No variant starts after ``--budget`` seconds
(default 105), and the compile variants run last, most useful configuration first
(tiny at 346x260, then base at 640x480), each only while ``COMPILE_RESERVE_S`` (35 s)
are left: skipped ones say so. Expect about 2 minutes in all.

Imports only torch and ``derain_ros.model`` (checked: not rosbags, rclpy or numba);
where ``safetensors`` is not installed a stub stands in (random weights need no file).

Run from the repository root: ``python bench/gpu_check.py``. ``--smoke`` runs a tiny
size for 2 iterations on whatever device there is (the test suite runs it on the CPU).
Prints a table, then one JSON line; with ``$OUT`` set, writes it to
``$OUT/gpu_check.json`` too.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAVY = ("rosbags", "rclpy", "numba", "cv2")
MODELS = ["derain_tiny", "derain_base"]
SIZES = [(346, 260), (640, 480)]  # (width, height) px
COMPILE_RESERVE_S = 35.0  # start a compile only with this much budget left


def _stub_safetensors() -> bool:
    """Stand-in ``safetensors`` where it is missing (only checkpoint files need it)."""
    try:
        import safetensors  # noqa: F401

        return False
    except ImportError:
        pass

    class SafetensorError(Exception):
        pass

    def _missing(*_args, **_kwargs):
        raise RuntimeError("safetensors is not installed (gpu_check uses random weights)")

    root = types.ModuleType("safetensors")
    root.SafetensorError = SafetensorError  # type: ignore[attr-defined]
    sub = types.ModuleType("safetensors.torch")
    sub.load = sub.save = sub.load_file = sub.save_file = _missing  # type: ignore[attr-defined]
    root.torch = sub  # type: ignore[attr-defined]
    sys.modules["safetensors"], sys.modules["safetensors.torch"] = root, sub
    return True


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = min(len(sorted_values) - 1, max(0, round(q / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[pos]


class Timer:
    def __init__(self, torch, device, seconds: float, max_iters: int, warmup: int) -> None:
        self.torch, self.device = torch, device
        self.seconds, self.max_iters, self.warmup = seconds, max_iters, warmup

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def run(self, step) -> dict:
        t0 = time.perf_counter()
        step()
        self.sync()
        first_s = time.perf_counter() - t0
        for _ in range(self.warmup):
            step()
        self.sync()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < self.max_iters and (
                len(times) < 2 or time.perf_counter() - start < self.seconds):
            t = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - t)
        times.sort()
        return {"fps": round(len(times) / sum(times), 2),
                "p50_ms": round(1e3 * _percentile(times, 50), 3),
                "p99_ms": round(1e3 * _percentile(times, 99), 3),
                "n": len(times), "first_call_s": round(first_s, 3)}


def _eager_variant(torch, base, dtype, channels_last: bool):
    net = copy.deepcopy(base).to(dtype=dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny size, 2 iterations, no compile: checks the script runs")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per variant")
    parser.add_argument("--budget", type=float, default=105.0,
                        help="seconds; no variant starts after it, no compile within "
                             f"{COMPILE_RESERVE_S:.0f} s of it")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode (reduce-overhead, max-autotune-no-cudagraphs)")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    stubbed = _stub_safetensors()
    import torch

    from derain_ros.model import create_model

    heavy = sorted(m for m in HEAVY if m in sys.modules)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    models = args.models.split(",")
    sizes = [(48, 32)] if args.smoke else SIZES
    if args.smoke:
        models = [models[0]]
    timer = Timer(torch, device, 0.0 if args.smoke else args.seconds,
                  2 if args.smoke else 100_000, 0 if args.smoke else 3)
    if cuda:
        torch.backends.cudnn.benchmark = True
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, list(ort.get_available_providers())
    except Exception:  # not installed, or a broken install: no onnxruntime rows
        ort, ort_version, providers = None, None, []

    rows: list[dict] = []
    notes: list[str] = []
    if stubbed:
        notes.append("safetensors not installed: stubbed (random weights)")

    def record(model: str, size: str, variant: str, fn) -> None:
        row = {"model": model, "size": size, "variant": variant}
        try:
            row.update(fn())
            row["status"] = "ok"
        except Exception as err:  # one failing variant must not stop the rest
            row["status"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            if os.environ.get("GPU_CHECK_TRACE"):
                traceback.print_exc()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        rows.append(row)
        print(f"  {model:12s} {size:>8s} {variant:22s} {row.get('fps', float('nan')):9.1f} fps "
              f"{row['status'] if row['status'] != 'ok' else ''}", flush=True)

    def skipped(model: str, size: str, variant: str, why: str) -> None:
        rows.append({"model": model, "size": size, "variant": variant, "status": f"skipped: {why}"})

    configs = []
    for name in models:
        torch.manual_seed(0)
        base = create_model(name).eval().to(device)
        for p in base.parameters():
            p.requires_grad_(False)
        for width, height in sizes:
            frames, events = base.example_inputs(height, width, device=device)
            with torch.inference_mode():
                ref = base(frames, events).background.float().clamp(0, 1)
            configs.append((name, base, width, height, frames, events, ref))

    def diff(out_bg, ref) -> float:
        return round(float((out_bg.float().clamp(0, 1) - ref).abs().max()), 5)

    def eager(base, frames, events, ref, dtype, cl):
        def fn():
            net = _eager_variant(torch, base, dtype, cl)
            f, e = frames.to(dtype), None if events is None else events.to(dtype)
            with torch.inference_mode():
                d = diff(net(f, e).background, ref)
                out = timer.run(lambda: net(f, e))
            return {**out, "max_abs_diff": d}
        return fn

    def cudagraph(base, frames, events, ref, io: bool):
        def fn():
            net = _eager_variant(torch, base, torch.bfloat16, True)
            f = frames.to(torch.bfloat16).clone()
            e = None if events is None else events.to(torch.bfloat16).clone()
            host_f = frames.cpu().pin_memory()
            host_e = None if events is None else events.cpu().pin_memory()
            with torch.inference_mode():
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        net(f, e)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static = net(f, e)
                    bg = static.background.float().clamp(0, 1)
                    rain = static.rain.float()
                graph.replay()
                d = diff(bg, ref)
                host_bg = torch.empty(bg.shape, dtype=torch.float32, pin_memory=True)
                host_rain = torch.empty(rain.shape, dtype=torch.float32, pin_memory=True)

                def step():
                    if io:
                        f.copy_(host_f, non_blocking=True)
                        if e is not None:
                            e.copy_(host_e, non_blocking=True)
                    graph.replay()
                    if io:
                        host_bg.copy_(bg, non_blocking=True)
                        host_rain.copy_(rain, non_blocking=True)

                out = timer.run(step)
            return {**out, "max_abs_diff": d}
        return fn

    def compiled(base, frames, events, ref):
        def fn():
            net = _eager_variant(torch, base, torch.bfloat16, True)
            module = torch.compile(net, mode=args.compile_mode, dynamic=False)
            f, e = frames.to(torch.bfloat16), None if events is None else events.to(torch.bfloat16)
            with torch.inference_mode():
                t0 = time.perf_counter()
                for _ in range(3):  # reduce-overhead records its graphs on the later calls
                    out = module(f, e)
                d = diff(out.background, ref)
                timer.sync()
                compile_s = time.perf_counter() - t0
                res = timer.run(lambda: module(f, e))
            return {**res, "compile_s": round(compile_s, 1), "max_abs_diff": d}
        return fn

    def onnx(base, frames, events, ref, provider: str, height: int, width: int):
        def fn():
            import tempfile

            import numpy as np

            from derain_ros.model import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(base, Path(tmp) / "net.onnx", height, width)
                options = ort.SessionOptions()
                options.log_severity_level = 3
                prov: list = [provider, "CPUExecutionProvider"]
                if provider == "TensorrtExecutionProvider":
                    prov = [(provider, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                        "trt_engine_cache_path": tmp}),
                            "CUDAExecutionProvider", "CPUExecutionProvider"]
                t0 = time.perf_counter()
                session = ort.InferenceSession(str(path), options, providers=prov)
                if session.get_providers()[0] != provider:
                    raise RuntimeError(f"{provider} did not start ({session.get_providers()})")
                feeds = {"frames": frames.cpu().numpy()}
                if events is not None:
                    feeds["events"] = events.cpu().numpy()
                bg = session.run(["background"], feeds)[0]
                build_s = time.perf_counter() - t0
                d = round(float(np.abs(bg - ref.cpu().numpy()).max()), 5)
                res = timer.run(lambda: session.run(None, feeds))
            return {**res, "compile_s": round(build_s, 1), "max_abs_diff": d,
                    "note": "host numpy in and out (includes the copies)"}
        return fn

    eager_variants = [("fp32", torch.float32, False), ("fp16", torch.float16, False),
                      ("bf16", torch.bfloat16, False), ("fp16_cl", torch.float16, True),
                      ("bf16_cl", torch.bfloat16, True)]
    print(f"gpu_check: {device} "
          f"{torch.cuda.get_device_name(device) if cuda else platform.machine()}, "
          f"torch {torch.__version__}, onnxruntime {ort_version} {providers}", flush=True)
    for name, base, width, height, frames, events, ref in configs:
        size = f"{width}x{height}"
        for variant, dtype, cl in eager_variants:
            if device.type == "cpu" and dtype == torch.float16:
                skipped(name, size, variant, "fp16 is for CUDA")
                continue
            if time.perf_counter() - t_start > args.budget:
                skipped(name, size, variant, "time budget spent")
                continue
            record(name, size, variant, eager(base, frames, events, ref, dtype, cl))
        for variant, io in (("cudagraph_bf16_cl", False), ("cudagraph_bf16_cl_io", True)):
            if not cuda:
                skipped(name, size, variant, "needs CUDA")
            elif time.perf_counter() - t_start > args.budget:
                skipped(name, size, variant, "time budget spent")
            else:
                record(name, size, variant, cudagraph(base, frames, events, ref, io))
        for variant, provider in (("ort_cuda", "CUDAExecutionProvider"),
                                  ("ort_trt_fp16", "TensorrtExecutionProvider")):
            if not cuda or provider not in providers:
                skipped(name, size, variant, f"onnxruntime here has no {provider}"
                        if cuda else "needs CUDA")
            elif time.perf_counter() - t_start > args.budget - 10:
                skipped(name, size, variant, "time budget spent")
            else:
                record(name, size, variant, onnx(base, frames, events, ref, provider, height,
                                                 width))
    # Compiles last, most useful configurations first, while the budget lasts.
    order = sorted(configs, key=lambda c: (c[0] != "derain_tiny" or c[2] != 346,
                                           c[0] != "derain_base" or c[2] != 640))
    for name, base, width, height, frames, events, ref in order:
        size = f"{width}x{height}"
        left = args.budget - (time.perf_counter() - t_start)
        if args.smoke:
            skipped(name, size, "compile_bf16_cl", "smoke run (compiling takes tens of seconds)")
        elif left < COMPILE_RESERVE_S:
            skipped(name, size, "compile_bf16_cl", f"time budget: {left:.0f} s left")
        else:
            record(name, size, "compile_bf16_cl", compiled(base, frames, events, ref))

    fp32 = {(r["model"], r["size"]): r.get("fps") for r in rows if r["variant"] == "fp32"}
    for r in rows:
        ref_fps = fp32.get((r["model"], r["size"]))
        if r.get("fps") and ref_fps:
            r["x_fp32"] = round(r["fps"] / ref_fps, 2)
    cpu_name = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "onnxruntime": ort_version, "providers": providers, "smoke": args.smoke,
        "compile_mode": args.compile_mode, "cudnn_benchmark": bool(cuda),
        "heavy_modules": heavy, "notes": notes, "rows": rows,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    print()
    print(f"{'model':12s} {'size':>8s} {'variant':22s} {'fps':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'x fp32':>7s} {'diff':>8s} status")
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['model']:12s} {r['size']:>8s} {r['variant']:22s} {r['fps']:8.1f} "
                  f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r.get('x_fp32', float('nan')):7.2f} "
                  f"{r['max_abs_diff']:8.4f} ok"
                  + (f" (compile {r['compile_s']} s)" if "compile_s" in r else ""))
        else:
            print(f"{r['model']:12s} {r['size']:>8s} {r['variant']:22s} {'':>8s} {'':>8s} "
                  f"{'':>8s} {'':>7s} {'':>8s} {r['status']}")
    if heavy:
        print(f"WARNING: importing derain_ros.model pulled in {heavy}")
    line = json.dumps(result, separators=(",", ":"))
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_check.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(line)
    return result


if __name__ == "__main__":
    main()
