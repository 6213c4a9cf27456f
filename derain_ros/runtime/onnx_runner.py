"""onnxruntime runner: the exported graph in an InferenceSession, numpy in and out.

Needs no torch once the graph for a size is in the cache: torch is imported only to
export a missing one (see :mod:`derain_ros.runtime.cache`). The graph has a fixed size
(the network's padding to its ``pad_multiple`` is baked in at export, and the
TorchScript exporter cannot trace the shape-dependent padding as dynamic axes), so a
frame of another size loads (or exports) the graph for that size and builds a new
session: :attr:`OnnxRuntimeRunner.rebuilds` counts those, and each is logged. The
sessions of the last :data:`MAX_SESSIONS` sizes are kept, so a stream alternating
between two sizes does not rebuild every frame.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from derain_ros.errors import ConfigError, ModelError
from derain_ros.runtime.cache import CacheKey, ModelSpec, ensure_onnx, tensorrt_dir
from derain_ros.runtime.errors import BackendUnavailableError, RunnerInputError

_log = logging.getLogger(__name__)

#: Sessions kept for sizes seen recently.
MAX_SESSIONS = 2

#: Execution providers by the runner's ``provider`` argument.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def import_onnxruntime() -> Any:
    """``onnxruntime``, or :class:`BackendUnavailableError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailableError(
            "the onnxruntime back-end needs the onnxruntime package (pip install onnxruntime, "
            "or onnxruntime-gpu for the CUDA/TensorRT providers): " + str(err)) from err
    return onnxruntime


def as_numpy(x: Any) -> np.ndarray:
    """A float32 C-contiguous host array from numpy or a torch tensor (any device/dtype)."""
    if hasattr(x, "detach"):  # a torch tensor; torch itself is not imported here
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def check_inputs(spec: ModelSpec, frames: np.ndarray, events: np.ndarray | None) -> None:
    """Shapes ``[1, 3, C, H, W]`` and ``[1, 2, bins, H, W]`` (or None), as the graph takes."""
    if frames.ndim != 5 or frames.shape[:3] != (1, 3, spec.in_chans):
        raise RunnerInputError(f"{spec.name}: frames must be [1, 3, {spec.in_chans}, H, W], "
                               f"got {list(frames.shape)}")
    if not spec.use_events:
        if events is not None:
            raise RunnerInputError(f"{spec.name} is a frames-only network: pass events=None")
        return
    want = (1, 2, spec.event_bins, *frames.shape[3:])
    if events is None or tuple(events.shape) != want:
        got = None if events is None else list(events.shape)
        raise RunnerInputError(f"{spec.name}: events must be {list(want)}, got {got}")


class OnnxRuntimeRunner:
    """The network as an onnxruntime session on one execution provider.

    Args:
        spec: the network's :class:`ModelSpec`.
        weights_sha256: the weights' hash (cache key).
        get_net: returns the network to export from, called only when the cache has no
            graph for a size; None when there is none (then a missing graph is an error).
        cache_dir: the cache root.
        provider: ``cpu``, ``cuda`` or ``tensorrt`` (:data:`PROVIDERS`).
        device_index: the CUDA device for ``cuda``/``tensorrt``.
        precision: ``fp32``; ``fp16`` only with ``tensorrt`` (TensorRT builds fp16 kernels
            from the fp32 graph; inputs and outputs stay float32).
        threads: intra-op threads (0: onnxruntime's default, one per core).
        opset: ONNX opset of the export.
        height, width: build the session for this size now (else at the first call).
        reason: why this back-end was chosen (logged by the caller).
    """

    def __init__(self, spec: ModelSpec, weights_sha256: str, get_net: Callable[[], Any] | None,
                 cache_dir: Path, *, provider: str = "cpu", device_index: int = 0,
                 precision: str = "fp32", threads: int = 0, opset: int = 17,
                 height: int | None = None, width: int | None = None, reason: str = "") -> None:
        if provider not in PROVIDERS:
            raise ConfigError(f"unknown onnxruntime provider {provider!r}; use one of "
                              f"{sorted(PROVIDERS)}")
        if precision not in ("fp32", "fp16") or (precision == "fp16" and provider != "tensorrt"):
            raise ConfigError(f"onnxruntime on {provider} runs the float32 graph: use dtype fp32"
                              + ("" if provider == "tensorrt" else
                                 " (fp16 through the tensorrt back-end, bf16 through torch)"))
        self.ort = import_onnxruntime()
        available = self.ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise BackendUnavailableError(f"onnxruntime {self.ort.__version__} here has no "
                              f"{PROVIDERS[provider]} (it has {', '.join(available)})")
        self.spec = spec
        self.weights_sha256 = weights_sha256
        self._get_net = get_net
        self.cache_dir = Path(cache_dir)
        self.provider = provider
        self.device_index = device_index
        self.precision = precision
        self.threads = max(0, int(threads))
        self.opset = opset
        self.backend = "onnxruntime" if provider != "tensorrt" else "tensorrt"
        self.device = "cpu" if provider == "cpu" else f"cuda:{device_index}"
        self.dtype = precision
        self.name = f"{self.backend}/{PROVIDERS[provider]}/{precision}"
        self.reason = reason
        self.rebuilds = 0  # sessions built after the first (a frame size change)
        self.exports = 0  # graphs this runner had to export (cache misses)
        self.onnx_paths: dict[tuple[int, int], Path] = {}
        self._sessions: collections.OrderedDict[tuple[int, int], Any] = (
            collections.OrderedDict())
        self._built = 0
        if height is not None and width is not None:
            self._session(int(height), int(width))

    # ------------------------------------------------------------------ sessions
    def _providers(self, key: CacheKey) -> list[Any]:
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_index})
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        engines = tensorrt_dir(self.cache_dir, key, self.precision)
        engines.mkdir(parents=True, exist_ok=True)
        trt = {
            "device_id": self.device_index,
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engines),
        }
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]

    def _open(self, path: Path, key: CacheKey) -> Any:
        """An InferenceSession of the graph at ``path`` with this runner's options.

        Raises :class:`ModelError` when onnxruntime cannot load it, and
        :class:`BackendUnavailableError` when it silently fell back from a GPU provider.
        """
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the providers' warnings are noise here
        if self.provider == "cpu":
            # Memory patterns pre-plan one block per size for all activations: on the CPU
            # they bought no speed for derain_tiny and cost 16 MB at 346x260, 68 MB at
            # 640x480 of peak RSS (bench/RESULTS.md, "Node: its own cost").
            options.enable_mem_pattern = False
            # No spin-waiting between operators: a node never has the cores to itself
            # (its callbacks, the drivers, the publisher), and a spinning thread pool
            # that loses a core waits a whole time slice. derain_tiny 346x260, 2 threads,
            # 2 cores with 40 % of one core busy: 58 ms spinning, 37 ms not (quiet: 29
            # vs 34 ms); bench/RESULTS.md, "Node: its own cost".
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = self.ort.InferenceSession(str(path), options,
                                                providers=self._providers(key))
        except Exception as err:  # onnxruntime raises its own unrelated types
            raise ModelError(f"onnxruntime could not load {path} on {PROVIDERS[self.provider]}: "
                             f"{err}") from err
        # onnxruntime silently falls back to the CPU when a GPU provider fails to start.
        used = session.get_providers()
        if used[0] != PROVIDERS[self.provider]:
            raise BackendUnavailableError(f"onnxruntime did not start {PROVIDERS[self.provider]} "
                              f"(session providers: {', '.join(used)}): is the GPU present?")
        return session

    def _session(self, height: int, width: int) -> Any:
        size = (height, width)
        session = self._sessions.get(size)
        if session is not None:
            self._sessions.move_to_end(size)
            return session
        key = CacheKey(self.spec, self.weights_sha256, height, width, self.opset)
        start = time.perf_counter()
        path, exported = ensure_onnx(self.cache_dir, key, self._get_net)
        self.exports += int(exported)
        session = self._open(path, key)
        if self._built:
            self.rebuilds += 1
            _log.info("frame size %dx%d: %s the %s graph for it (graphs are per size) in "
                      "%.1f s", width, height, "exported" if exported else "loaded",
                      self.spec.name, time.perf_counter() - start)
        self._built += 1
        self.onnx_paths[size] = path
        self._sessions[size] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    # ------------------------------------------------------------------ inference
    def prepare(self, height: int, width: int) -> None:
        """Build (export if needed) the session for ``height`` x ``width`` now."""
        self._session(int(height), int(width))

    def __call__(self, frames: Any, events: Any | None) -> tuple[np.ndarray, np.ndarray]:
        """``(background, rain)``, float32 ``[1, C, H, W]`` numpy; see :mod:`derain_ros.runtime`."""
        f = as_numpy(frames)
        e = None if events is None else as_numpy(events)
        check_inputs(self.spec, f, e)
        session = self._session(int(f.shape[-2]), int(f.shape[-1]))
        feeds = {"frames": f} if e is None else {"frames": f, "events": e}
        try:
            background, rain = session.run(["background", "rain"], feeds)
        except Exception as err:
            raise ModelError(f"onnxruntime inference failed on a {f.shape[-1]}x{f.shape[-2]} "
                             f"frame: {err}") from err
        return background, rain


__all__ = ["MAX_SESSIONS", "PROVIDERS", "OnnxRuntimeRunner", "as_numpy", "check_inputs"]
