"""Runtime back-ends: the deraining network behind one call, in torch or onnxruntime.

Contract (what the engine codes against)::

    runner = make_runner(backend, net, device, dtype, height, width, cache_dir,
                         checkpoint_sha, *, spec=None, threads=0, ...)
    background, rain = runner(frames, events)

- ``frames``: ``[1, 3, C, H, W]`` float in [0, 1] (previous, target, next), numpy or a
  torch tensor on any device; ``events``: ``[1, 2, bins, H, W]`` voxel grids, or None
  for a frames-only network. Batch 1 (one frame at a time, as the node runs).
- Returns **numpy** float32 ``[1, C, H, W]`` host arrays, always, from every back-end:
  ``background`` clamped to [0, 1] (ready to publish), ``rain`` unclamped (clamp it for
  display). numpy because the node publishes host memory anyway, and because the
  onnxruntime runner must work without torch.
- ``runner.name`` (e.g. ``onnxruntime/CPUExecutionProvider/fp32``), ``runner.backend``,
  ``runner.reason`` (why it was chosen: log it), ``runner.rebuilds`` (sessions or
  compilations redone for a new frame size), ``runner.prepare(height, width)`` (build or
  compile for a size now, e.g. in a warm-up).

Back-ends (:data:`BACKENDS`), chosen by name:

- ``torch``: eager mode, fp32/bf16 on CPU, fp32/fp16/bf16 on CUDA, optional
  channels-last; any frame size.
- ``torch_compile``: ``torch.compile`` of the same (compiles at the first frame of each
  size: tens of seconds on a small CPU, call ``prepare`` before data arrives).
- ``onnxruntime``: the exported float32 graph in onnxruntime, CPU execution provider on
  ``cpu``, CUDA execution provider on ``cuda``.
- ``tensorrt``: onnxruntime's TensorRT execution provider (CUDA only; fp32 or fp16;
  engine and timing caches on disk next to the graph).
- ``auto``: :func:`choose_backend`: on CPU onnxruntime when it is importable (about 2x
  torch eager for ``derain_tiny`` on a 2-core CPU, see bench/RESULTS.md), else torch; on
  CUDA TensorRT EP > CUDA EP (fp32 only) > torch.

dtype ``int8`` (``onnxruntime`` or ``auto``, CPU only; anything else is refused with a
:class:`ConfigError`, :func:`check_int8`): :class:`~derain_ros.runtime.int8.Int8Runner`
runs the fp32 graph for its first ``int8_calibration_frames`` inputs, quantises a copy
statically in a background thread (``onnxruntime.quantization``, which needs the ``onnx``
package; no torch), checks it against fp32 on held-back inputs, then runs it; the
quantised graph is cached beside the fp32 one. ``auto`` never picks int8.

The onnxruntime runners export a graph per frame size into a cache keyed by the weights'
hash, the configuration, the size, the opset and the export format
(:mod:`derain_ros.runtime.cache`), and rebuild their session for a new size. With the
graph for a size already in the cache they run with numpy and onnxruntime only: pass
``net`` as a loader (a zero-argument callable) or None together with ``spec`` and
``checkpoint_sha`` (:func:`spec_from_checkpoint` reads both from a checkpoint's JSON
without torch), and torch is imported only if an export turns out to be needed.
Importing this package imports neither torch nor onnxruntime.

Threads: ``threads`` > 0 sets onnxruntime's intra-op threads for the session, or
``torch.set_num_threads`` (process-wide: torch has one intra-op pool) for torch.

Tolerances (``test/test_runtime.py``, ``derain_tiny`` and its frames-only twin at 64x48
with random weights, compared with torch eager fp32): onnxruntime CPU and
``torch_compile`` fp32 agree within 2e-3 (max abs) on both outputs; measured ~1e-6.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from derain_ros.errors import ConfigError
from derain_ros.runtime.cache import (
    DEFAULT_OPSET,
    EXPORT_VERSION,
    CacheKey,
    CheckpointExport,
    ModelSpec,
    clear_cache,
    default_cache_dir,
    ensure_onnx,
    export_count,
    onnx_path,
    spec_from_checkpoint,
    state_dict_sha256,
    tensorrt_dir,
)
from derain_ros.runtime.errors import (
    BackendUnavailableError,
    RunnerInputError,
    UnknownBackendError,
)
from derain_ros.runtime.int8 import (
    DEFAULT_CALIBRATION_FRAMES,
    DEFAULT_MIN_PSNR_DB,
    Int8Runner,
    QuantSettings,
    quantisation_count,
)
from derain_ros.runtime.onnx_runner import OnnxRuntimeRunner


@runtime_checkable
class Runner(Protocol):
    """One network on one back-end; see the module docstring for the contract."""

    name: str
    backend: str
    reason: str
    rebuilds: int

    def __call__(self, frames: Any, events: Any | None) -> tuple[np.ndarray, np.ndarray]: ...

    def prepare(self, height: int, width: int) -> None: ...


#: Back-end names and what each is; ``auto`` picks one of the others.
BACKENDS: dict[str, str] = {
    "torch": "torch eager mode",
    "torch_compile": "torch.compile (inductor)",
    "onnxruntime": "onnxruntime: CPU execution provider on cpu, CUDA execution provider on cuda",
    "tensorrt": "onnxruntime's TensorRT execution provider (CUDA only)",
    "auto": "the fastest installed for the device (see choose_backend)",
}

_DTYPE_NAMES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "int8": "int8", "qint8": "int8",
    "auto": "auto",
}


def _device(device: Any) -> tuple[str, int]:
    """``(type, index)`` from ``cpu``, ``cuda``, ``cuda:N``, ``auto`` or a torch.device."""
    text = str(device)
    if text == "auto":
        return ("cuda", 0) if _cuda_present() else ("cpu", 0)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ConfigError(f"unknown device {text!r} (use auto, cpu, cuda, cuda:N)")
    return kind, int(index or 0)


def _dtype(dtype: Any) -> str:
    name = _DTYPE_NAMES.get(str(dtype))
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, fp32, fp16, bf16, int8")
    return name


def _cuda_present() -> bool:
    """Whether a CUDA device is usable: torch's answer when torch is installed.

    Without an NVIDIA driver (no ``/proc/driver/nvidia``, ``/dev/nvidia0``, WSL's
    ``/dev/dxg``) the answer is no without asking torch, so choosing a CPU back-end does
    not load torch.
    """
    if not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/dxg")):
        return False
    if importlib.util.find_spec("torch") is not None:
        import torch

        return bool(torch.cuda.is_available())
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def choose_backend(device: Any = "cpu", dtype: Any = "auto") -> tuple[str, str]:
    """``(backend, reason)``: what ``auto`` runs on ``device`` at ``dtype``, and why.

    CPU: ``onnxruntime`` when it is importable and the dtype is fp32/auto, else
    ``torch``. CUDA: ``tensorrt`` (onnxruntime's TensorRT EP; fp16 for dtype auto/fp16)
    when present, else ``onnxruntime`` (CUDA EP) at fp32, else ``torch``. int8:
    ``onnxruntime`` (the only back-end with an int8 path; :func:`check_int8` refuses it
    off the CPU).
    """
    kind, _ = _device(device)
    dt = _dtype(dtype)
    providers = _ort_providers()
    if dt == "int8":
        if kind != "cpu":
            return "onnxruntime", f"{kind} at int8: only onnxruntime's CPU EP runs int8"
        return "onnxruntime", ("cpu at int8: onnxruntime's CPU EP runs a statically quantised "
                               "copy of the fp32 graph (calibrated on the first frames)")
    if kind == "cpu":
        if dt not in ("auto", "fp32"):
            return "torch", f"cpu at {dt}: onnxruntime runs the fp32 graph, so torch"
        if "CPUExecutionProvider" in providers:
            return "onnxruntime", ("cpu: onnxruntime is installed (CPU EP; about 2x torch "
                                   "eager for derain_tiny on CPU)")
        return "torch", "cpu: onnxruntime is not installed, so torch eager"
    if "TensorrtExecutionProvider" in providers and dt in ("auto", "fp16", "fp32"):
        precision = "fp32" if dt == "fp32" else "fp16"
        return "tensorrt", f"cuda: onnxruntime has the TensorRT EP ({precision})"
    if "CUDAExecutionProvider" in providers and dt == "fp32":
        return "onnxruntime", "cuda: onnxruntime has the CUDA EP (no TensorRT EP) at fp32"
    have = ", ".join(providers) if providers else "onnxruntime not installed"
    return "torch", f"cuda at {dt}: no usable TensorRT/CUDA EP ({have}), so torch eager"


def _net_loader(net: Any) -> Callable[[], Any] | None:
    if net is None or isinstance(net, CheckpointExport):  # the latter: exports in a child
        return net
    if callable(net) and not hasattr(net, "state_dict"):
        cached: list[Any] = []

        def load() -> Any:
            if not cached:
                cached.append(net())
            return cached[0]

        return load
    return lambda: net


def make_runner(backend: str, net: Any, device: Any = "cpu", dtype: Any = "auto",
                height: int | None = None, width: int | None = None,
                cache_dir: str | os.PathLike[str] | None = None,
                checkpoint_sha: str | None = None, *, spec: Any = None, threads: int = 0,
                opset: int = DEFAULT_OPSET, channels_last: bool = False,
                compile_mode: str | None = None,
                int8_calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
                int8_min_psnr_db: float = DEFAULT_MIN_PSNR_DB) -> Runner:
    """Build the runner for ``backend`` (a :data:`BACKENDS` name).

    Args:
        backend: ``torch``, ``torch_compile``, ``onnxruntime``, ``tensorrt`` or ``auto``.
        net: the :class:`~derain_ros.model.DerainNet`; for the onnxruntime back-ends also
            a zero-argument callable returning it (called only to export) or None (then
            every needed graph must be in the cache).
        device: ``cpu``, ``cuda``, ``cuda:N``, ``auto`` (asks torch) or a torch.device.
        dtype: ``auto`` (torch: fp32 on CPU, bf16/fp16 on CUDA; onnxruntime: fp32;
            tensorrt: fp16), ``fp32``, ``fp16``, ``bf16``, a torch dtype, or ``int8``
            (onnxruntime on the CPU only: :class:`~derain_ros.runtime.int8.Int8Runner`,
            fp32 until it has calibrated and checked the quantised graph).
        height, width: onnxruntime back-ends: the frame size to build the session for
            now (exporting its graph if missing); None: at the first call. torch
            back-ends do nothing ahead (``runner.prepare(h, w)`` compiles/warms).
        cache_dir: the cache root (default :func:`default_cache_dir`).
        checkpoint_sha: the checkpoint JSON's ``weights_sha256`` for the cache key;
            None: the hash of ``net``'s weights (imports torch).
        spec: the network's configuration (a ModelConfig, its dict or a
            :class:`ModelSpec`) when ``net`` is not a network.
        threads: intra-op threads (0: the library's default).
        opset: ONNX opset of exported graphs.
        channels_last: torch back-ends: channels-last weights.
        compile_mode: ``torch_compile``: ``torch.compile``'s mode.
        int8_calibration_frames: dtype int8: inputs run on fp32 and kept to calibrate.
        int8_min_psnr_db: dtype int8: the guard (int8 vs fp32 background PSNR, dB).

    Raises:
        UnknownBackendError: ``backend`` is not a known name (the message lists them).
        BackendUnavailableError: the package or the device is missing here (e.g.
            ``device="cuda"`` without CUDA), raised at once.
        ConfigError: a dtype the back-end cannot run (int8 anywhere but onnxruntime on
            the CPU), a missing graph and no network.
    """
    if backend not in BACKENDS:
        raise UnknownBackendError(f"unknown runtime back-end {backend!r}; known: "
                                  + ", ".join(BACKENDS))
    kind, index = _device(device)
    if kind == "cuda" and not _cuda_present():
        raise BackendUnavailableError(f"device {device!s} requested but CUDA is not available "
                                      "here; use device cpu (or auto)")
    dt = _dtype(dtype)
    if dt == "int8":
        check_int8(backend, kind)
    reason = f"asked for by name ({backend})"
    if backend == "auto":
        backend, reason = choose_backend(f"{kind}:{index}" if kind == "cuda" else kind, dt)
    if dt == "int8":
        return Int8Runner(
            _spec(net, spec), checkpoint_sha if checkpoint_sha is not None else _net_sha(net),
            _net_loader(net),
            Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            threads=threads, opset=opset, height=height, width=width, reason=reason,
            calibration_frames=int8_calibration_frames, min_psnr_db=int8_min_psnr_db)
    if backend in ("torch", "torch_compile"):
        return _torch_runner(backend, net, kind, index, dt, threads=threads,
                             channels_last=channels_last, compile_mode=compile_mode,
                             reason=reason)
    if backend == "tensorrt" and kind != "cuda":
        raise BackendUnavailableError("the tensorrt back-end needs device cuda")
    if dt == "bf16" or (dt == "fp16" and backend != "tensorrt"):
        raise ConfigError(f"the {backend} back-end runs the float32 graph"
                          + (" (or fp16)" if backend == "tensorrt" else "")
                          + f"; dtype {dt} needs the torch back-end")
    precision = "fp16" if backend == "tensorrt" and dt in ("auto", "fp16") else "fp32"
    model_spec = _spec(net, spec)
    sha = checkpoint_sha if checkpoint_sha is not None else _net_sha(net)
    provider = "cpu" if kind == "cpu" else ("tensorrt" if backend == "tensorrt" else "cuda")
    return OnnxRuntimeRunner(
        model_spec, sha, _net_loader(net),
        Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        provider=provider, device_index=index, precision=precision, threads=threads,
        opset=opset, height=height, width=width, reason=reason)


def fastest_dtype(backend: str, device: Any) -> tuple[str, str]:
    """``(dtype, reason)`` that dtype ``fastest`` means for ``backend`` on ``device``.

    ``int8`` where it can run (the CPU, backend ``onnxruntime`` or ``auto``, onnxruntime
    with its ``quantization`` package): on 2 cores it runs derain_tiny at 346x260 in 26
    ms against 34 ms for fp32 and lifts the node from 24.2 to 27.8 fps (bench/RESULTS.md,
    "Node on both cores"); its guard keeps the fp32 graph when the quantised one strays
    (under 40 dB from fp32 on held-back frames). Elsewhere ``auto`` (fp16/bf16 on CUDA,
    fp32 on a CPU with torch). The launch's parameters file asks for ``fastest``; the
    engine's and the node's own default stays ``auto``, whose numbers do not depend on a
    calibration.
    """
    kind = device if device in ("cpu", "cuda") else _device(device)[0]
    if kind != "cpu":
        return "auto", f"fastest on {kind}: auto (int8 runs only on the CPU)"
    if backend not in ("onnxruntime", "auto"):
        return "auto", f"fastest with backend {backend}: auto (int8 needs onnxruntime)"
    if "CPUExecutionProvider" not in _ort_providers():
        return "auto", "fastest: auto (onnxruntime is not installed)"
    if (importlib.util.find_spec("onnx") is None
            or importlib.util.find_spec("onnxruntime.quantization") is None):
        return "auto", "fastest: auto (onnxruntime.quantization or onnx is not installed)"
    return "int8", "fastest on the CPU: int8 (onnxruntime, calibrated on the first frames)"


def check_int8(backend: str, device: Any) -> None:
    """Refuse dtype int8 where it cannot run: :class:`ConfigError` unless ``backend`` is
    ``onnxruntime`` or ``auto`` and ``device`` is the CPU.

    Why refuse rather than fall back: int8 is a promise of the quantised CPU graph's speed
    (and its small quality cost); silently running fp32 or another device would break it.
    """
    kind = device if device in ("cpu", "cuda") else _device(device)[0]
    if backend in ("onnxruntime", "auto") and kind == "cpu":
        return
    where = f"backend {backend}" + ("" if kind == "cpu" else f" on device {device}")
    raise ConfigError(
        f"dtype int8 runs only on onnxruntime's CPU execution provider (a statically "
        f"quantised copy of the fp32 graph); {where} cannot run it: use backend "
        "onnxruntime (or auto) with device cpu, or another dtype")


def _spec(net: Any, spec: Any) -> ModelSpec:
    if spec is not None:
        return ModelSpec.from_config(spec)
    if net is not None and hasattr(net, "config"):
        return ModelSpec.from_config(net.config)
    raise ConfigError("make_runner: pass spec= (the model configuration) when net is not a "
                      "network")


def _net_sha(net: Any) -> str:
    if net is None or not hasattr(net, "state_dict"):
        raise ConfigError("make_runner: pass checkpoint_sha= (the checkpoint's weights_sha256) "
                          "when net is not a network")
    return state_dict_sha256(net)


def _torch_runner(backend: str, net: Any, kind: str, index: int, dt: str, *, threads: int,
                  channels_last: bool, compile_mode: str | None, reason: str) -> Runner:
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailableError(f"the {backend} back-end needs torch, not installed here")
    import torch

    from derain_ros.runtime.torch_runner import TorchRunner

    if net is not None and not hasattr(net, "state_dict") and callable(net):
        net = net()
    if net is None:
        raise ConfigError(f"the {backend} back-end needs the network (net=None)")
    dev = torch.device(kind, index) if kind == "cuda" else torch.device("cpu")
    if dt == "auto":
        dt = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if kind == "cuda" else "fp32"
    if kind == "cpu" and dt == "fp16":
        raise ConfigError("fp16 is not supported on the CPU; use fp32 or bf16")
    return TorchRunner(net, dev, dt, threads=threads, channels_last=channels_last,
                       compile=backend == "torch_compile", compile_mode=compile_mode,
                       reason=reason)


def describe(runner: Runner) -> str:
    """One log line: the runner's name and why it was chosen."""
    return f"runtime back-end {runner.name}: {runner.reason}"


def loaded_modules() -> dict[str, bool]:
    """Whether torch and onnxruntime are loaded in this process (diagnostics, tests)."""
    return {name: name in sys.modules for name in ("torch", "onnxruntime")}


__all__ = [
    "BACKENDS",
    "DEFAULT_CALIBRATION_FRAMES",
    "DEFAULT_MIN_PSNR_DB",
    "DEFAULT_OPSET",
    "EXPORT_VERSION",
    "BackendUnavailableError",
    "CacheKey",
    "CheckpointExport",
    "Int8Runner",
    "ModelSpec",
    "OnnxRuntimeRunner",
    "QuantSettings",
    "Runner",
    "RunnerInputError",
    "UnknownBackendError",
    "check_int8",
    "choose_backend",
    "clear_cache",
    "default_cache_dir",
    "describe",
    "ensure_onnx",
    "export_count",
    "fastest_dtype",
    "loaded_modules",
    "make_runner",
    "onnx_path",
    "quantisation_count",
    "spec_from_checkpoint",
    "state_dict_sha256",
    "tensorrt_dir",
]
