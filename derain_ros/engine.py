"""Inference on frame windows: input preparation, device and precision, checkpoint swap.

One :class:`DerainEngine` serves the node (live), bag replay and evaluation. It prepares
every input with the :class:`~derain_ros.model.InputBuilder` of the running checkpoint's
:class:`~derain_ros.model.InputContract` (arrangement, voxel bins and normalisation,
channels, precision): the same builder training uses, so the network sees in use exactly
what it saw in training. A request that contradicts the checkpoint (an ``arrangement``
argument or node parameter) is refused, not obeyed; a checkpoint swap re-derives the
builder from the new checkpoint.

Arrangements (see :mod:`derain_ros.model.inputs`): ``causal`` derains the newest frame
(no added latency); ``centre`` (the paper's) needs the next frame, so
:meth:`DerainEngine.process` returns the result for the *previous* window (stamped with
its header), and None for the first one. A window without events (``events_missing``:
event camera down) gets zero voxel grids - the frames-only fallback - and the result
says so.

Memory: with the ``onnxruntime`` back-end (``auto`` on a CPU) and a checkpoint on disk,
the engine never imports torch (about 200 MB of a small computer's memory): the
contract, configuration and weights hash come from the checkpoint's JSON, inputs are
prepared in numpy, and a graph missing from the runtime cache is exported by a child
process (:class:`~derain_ros.runtime.cache.CheckpointExport`), at start and on a
checkpoint swap alike.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from derain_ros.errors import CheckpointError, ConfigError, ModelError
from derain_ros.events import warm_up as warm_events
from derain_ros.events.render import render_events
from derain_ros.model import (
    ARRANGEMENTS,
    CheckpointNotFoundError,
    InputBuilder,
    InputContract,
    ModelConfig,
    default_checkpoint_path,
    list_models,
    read_checkpoint_info,
)
from derain_ros.model.checkpoint_info import checkpoint_config, checkpoint_contract
from derain_ros.records import EventBatch
from derain_ros.runtime import (
    DEFAULT_CALIBRATION_FRAMES,
    DEFAULT_MIN_PSNR_DB,
    Int8Runner,
    OnnxRuntimeRunner,
    Runner,
    check_int8,
    choose_backend,
    fastest_dtype,
    make_runner,
)
from derain_ros.sync import FrameWindow

if TYPE_CHECKING:
    import torch

    from derain_ros.model import DerainNet

__all__ = [
    "DerainEngine",
    "EngineResult",
    "resolve_device",
    "resolve_dtype",
]

_log = logging.getLogger(__name__)

_DTYPES = ("fp32", "fp16", "bf16")
_ONNX_BACKENDS = ("onnxruntime", "tensorrt")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else as torch names it."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA where supported (else fp16), fp32 on CPU."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    if device.type == "cpu" and dtype == "fp16":
        raise ConfigError("fp16 is not supported on the CPU; use fp32 or bf16")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def _cpu_without_torch(device: str, dtype: str, backend: str) -> bool:
    """Whether this request runs an onnxruntime back-end on the CPU: then the engine
    needs no torch (decided without importing it)."""
    from derain_ros.runtime import _device as runtime_device

    if dtype not in ("auto", "fp32", "int8"):
        return False
    try:
        kind, _ = runtime_device(device)
    except ConfigError:
        return False
    if kind != "cpu":
        return False
    if backend == "auto":
        backend = choose_backend("cpu", dtype)[0]
    return backend == "onnxruntime"


def _probe(runner: Runner, frames: Any, events: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run ``runner`` on made-up data (warm-up, a swap's test clip): never calibration."""
    if isinstance(runner, Int8Runner):
        return runner.run(frames, events, calibrate=False)
    return runner(frames, events)


def _weights_sha(path: str | Path) -> str | None:
    """The checkpoint JSON's weights hash (the runtime caches' key), None if unreadable."""
    try:
        return str(read_checkpoint_info(path)["weights_sha256"])
    except (CheckpointError, KeyError):
        return None


@dataclass(frozen=True, eq=False)
class EngineResult:
    """The derained frame of one window, with what the node publishes alongside.

    Attributes:
        window: the window the result is *for* (its stamp/frame_id stamp the outputs;
            in ``centre`` arrangement the previous one).
        derained: float32 H x W x C in [0, 1] (C = 3 RGB, or 1).
        rain: the rain layer, float32 H x W x C clamped to [0, 1], or None.
        events_image: H x W x 3 float32 in [0, 1] (ON blue, OFF red, on black), or None.
        frames_only: True when no events went in (missing, or a frames-only network).
        timings_ms: ``prepare`` (frame and voxel grid), ``infer``, ``total`` wall time in
            milliseconds, and ``prepare_cpu``, ``infer_cpu``, ``total_cpu``: the calling
            thread's CPU time over the same stages.
        model: name of the network that produced it.
    """

    window: FrameWindow
    derained: np.ndarray
    rain: np.ndarray | None
    events_image: np.ndarray | None
    frames_only: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    model: str = ""


@dataclass
class _Step:
    """One prepared window (as the :class:`InputBuilder` made it), kept for the next clips."""

    window: FrameWindow
    frame: Any  # [C, H, W]: numpy (onnxruntime) or a tensor on the device, in its dtype
    voxel: Any  # [bins, H, W] of (t_prev, t], like frame; None for frames-only
    frames_only: bool


def events_image(events: EventBatch, height: int, width: int) -> np.ndarray:
    """The window's events as a picture (H x W x 3 float32): ON blue, OFF red, on black;
    the project's one renderer, :func:`derain_ros.events.render.render_events`."""
    return render_events(events, height, width)


def _check_weights_file(weights: Path, info: dict[str, Any]) -> None:
    """Size and SHA-256 of a weights file against its JSON, and a readable safetensors
    header (the torch-free half of the loader's checks)."""
    from derain_ros.model.checkpoint_info import CheckpointCorruptError, read_weights_blob

    blob = read_weights_blob(weights, info)
    size = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    try:
        header = json.loads(blob[8:8 + size]) if 0 < size <= len(blob) - 8 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise CheckpointCorruptError(f"{weights}: not a readable safetensors file")


class DerainEngine:
    """Windows in, derained frames out; see the module docstring.

    Args:
        model: a :class:`DerainNet`, a checkpoint path (stem, ``.safetensors`` or
            ``.json``), or a registered name; a name loads its shipped weights, or
            random weights when ``allow_random_weights`` (tests, benchmarks, first runs).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``, or
            ``int8``: the onnxruntime CPU back-end only (else :class:`ConfigError`), fp32
            for the first ``int8_calibration_frames`` frames, whose prepared clips then
            calibrate a quantised copy of the graph in the background; it replaces fp32
            between two frames once it agrees with fp32 on held-back clips
            (:mod:`derain_ros.runtime.int8`). A checkpoint swap or a new frame size starts
            over (from the runtime cache when it has that int8 graph). ``fastest``:
            int8 where it can run, else auto (:func:`~derain_ros.runtime.fastest_dtype`;
            what it became and why in ``dtype_reason``).
        compile: wrap the network in ``torch.compile``.
        arrangement: None (or ``""``) follows the checkpoint's input contract; ``causal``
            or ``centre`` must agree with it, else :class:`InputContractError` (a
            network served another arrangement than it was trained on loses quality
            silently, so this is refused rather than obeyed).
        in_chans: for a name: 1 for grayscale frames (DAVIS), 3 for colour.
        dump_inputs: a folder: write the exact tensors handed to the network for every
            frame (checking a deployment against training; slow, off by default).
        backend: the runtime back-end (:data:`derain_ros.runtime.BACKENDS`): ``torch``,
            ``torch_compile``, ``onnxruntime``, ``tensorrt`` or ``auto`` (the fastest
            installed for the device; the choice and its reason are logged and kept in
            ``backend_reason``). ``compile=True`` with ``torch`` means ``torch_compile``.
        cache_dir: where the onnxruntime back-ends keep their exported graphs (None: the
            runtime's default cache).
        threads: intra-op threads of the back-end (0: its default).
        int8_calibration_frames: dtype int8: frames run on fp32 and kept to calibrate.
        int8_min_psnr_db: dtype int8: the guard's threshold (int8 vs fp32 background
            PSNR on held-back clips, dB); internal, tests force a refusal with it.

    Thread-safety: :meth:`process` runs on one worker thread; :meth:`swap_checkpoint` may
    be called from another (the new network replaces the old one between two frames).
    """

    def __init__(self, model: DerainNet | str | Path = "derain_tiny", *, device: str = "auto",
                 dtype: str = "auto", compile: bool = False, arrangement: str | None = None,
                 in_chans: int = 3, allow_random_weights: bool = False,
                 want_rain: bool = True, want_events_image: bool = False,
                 dump_inputs: str | Path | None = None, backend: str = "torch",
                 cache_dir: str | Path | None = None, threads: int = 0,
                 int8_calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
                 int8_min_psnr_db: float = DEFAULT_MIN_PSNR_DB) -> None:
        if arrangement not in (None, "", *ARRANGEMENTS):
            raise ConfigError(f"unknown clip arrangement {arrangement!r}; use one of "
                              f"{', '.join(ARRANGEMENTS)} (or leave it empty to follow the "
                              "checkpoint)")
        self.requested_arrangement = arrangement or None
        self.compile = bool(compile)
        self.backend = "torch_compile" if compile and backend == "torch" else backend
        #: what dtype ``fastest`` became, and why ("" for any other dtype)
        self.dtype_reason = ""
        if dtype == "fastest":
            dtype, self.dtype_reason = fastest_dtype(self.backend, device)
            _log.info("dtype %s", self.dtype_reason)
        #: "int8" when asked for: the runtime's dtype (the network itself stays fp32)
        self.runtime_dtype = "int8" if dtype == "int8" else None
        if self.runtime_dtype is not None:
            check_int8(self.backend, device)  # before any loading: a clear refusal
            dtype = "fp32"
        self.int8_calibration_frames = int(int8_calibration_frames)
        self.int8_min_psnr_db = float(int8_min_psnr_db)
        self._int8_failures_before = 0  # refusals of runners replaced by a swap
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        self.device_name, self.dtype_name = "cpu", "float32"
        light = (isinstance(model, (str, Path))
                 and _cpu_without_torch(device, dtype, self.backend))
        if not light:
            self._device = resolve_device(device)
            self._dtype = resolve_dtype(dtype, self._device)
            self.device_name = str(self._device)
            self.dtype_name = str(self._dtype).removeprefix("torch.")
        if self.runtime_dtype is not None:
            self.dtype_name = self.runtime_dtype
        self.cache_dir = cache_dir
        self.threads = int(threads)
        self.backend_reason = ""
        self.want_rain = want_rain
        self.want_events_image = want_events_image
        self.dump_inputs = Path(dump_inputs) if dump_inputs else None
        self.random_weights = False
        self._lock = threading.Lock()
        self.source = ""
        self._sha: str | None = None  # the loaded checkpoint's weights hash (cache key)
        self._net: DerainNet | None = None  # None: not loaded (onnxruntime from its cache)
        described = (self._describe(model, in_chans)
                     if light and isinstance(model, (str, Path)) else None)
        if described is not None:  # no torch: the checkpoint's JSON and a lazy loader
            path, config, contract = described
            contract.refuse_overrides(self.source, arrangement=self.requested_arrangement)
            self._config = config
            self._builder = InputBuilder(contract)
            self._runner = self._make_runner(self._lazy_net(path), self._sha, spec=config)
        else:
            if self._device is None:  # random weights or a mismatch: the torch path
                self._device = resolve_device(device)
                self._dtype = resolve_dtype(dtype, self._device)
                self.device_name = str(self._device)
                self.dtype_name = self.runtime_dtype or str(self._dtype).removeprefix("torch.")
            if self.threads > 0:
                import torch

                torch.set_num_threads(self.threads)  # also the loading and warm-up
            net = self._load(model, in_chans, allow_random_weights)
            net.input_contract.refuse_overrides(self.source,
                                                arrangement=self.requested_arrangement)
            self._config = net.config
            self._builder = InputBuilder(net.input_contract)
            self._net = self._prepare(net)
            self._runner = self._make_runner(self._net, self._sha)
        _log.info("runtime back-end %s: %s", self._runner.name, self.backend_reason)
        self._history: collections.deque[_Step] = collections.deque(maxlen=2)
        self._buffers: tuple[np.ndarray, np.ndarray | None] | None = None
        self.swaps = 0
        self.swap_failures = 0

    # ------------------------------------------------------------------ models

    @property
    def device(self) -> torch.device:
        """The torch device (imports torch; :attr:`device_name` does not)."""
        if self._device is None:
            self._device = resolve_device(self.device_name)
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype (imports torch; :attr:`dtype_name` does not)."""
        if self._dtype is None:
            self._dtype = resolve_dtype("fp32", self.device)
        return self._dtype

    def _describe(self, model: str | Path, in_chans: int
                  ) -> tuple[Path, ModelConfig, InputContract] | None:
        """Checkpoint path, configuration and contract from its JSON, without torch; None
        where the torch path must load it (random weights, a configuration that differs
        from the registered name's: the loader then raises or warns as usual)."""
        from derain_ros.model import model_config
        from derain_ros.model.checkpoint_info import checkpoint_paths

        text = str(model)
        path = default_checkpoint_path(text, in_chans) if text in list_models() else Path(text)
        weights, description = checkpoint_paths(path)
        if not (weights.is_file() and description.is_file()):
            return None
        info = read_checkpoint_info(path)
        config = checkpoint_config(info, str(description))
        if text in list_models() and config != model_config(text, in_chans=in_chans):
            return None
        self.source = str(path)
        self._sha = str(info["weights_sha256"])
        return path, config, checkpoint_contract(info, str(description))

    def _lazy_net(self, path: Path) -> Any:
        """The checkpoint as the runners' network loader: a graph it lacks is exported
        in a child process (:class:`~derain_ros.runtime.cache.CheckpointExport`), so
        this process stays without torch (no stalled callbacks around a swap)."""
        from derain_ros.runtime.cache import CheckpointExport

        return CheckpointExport(Path(path))

    def _load(self, model: DerainNet | str | Path, in_chans: int,
              allow_random: bool) -> DerainNet:
        from derain_ros.model import DerainNet, create_model, load_checkpoint

        if isinstance(model, DerainNet):
            self.source = f"<{model.config.name} instance>"
            return model
        text = str(model)
        if text in list_models():
            path = default_checkpoint_path(text, in_chans)
            try:
                net = create_model(text, checkpoint=path, in_chans=in_chans)
                self.source = str(path)
                self._sha = _weights_sha(path)
                return net
            except CheckpointNotFoundError:
                if not allow_random:
                    raise CheckpointNotFoundError(
                        f"no trained weights for {text!r} at {path}; train them "
                        "(derain-train) or pass a checkpoint, or allow random weights "
                        "(allow_random_weights) to run an untrained network") from None
                _log.warning("no trained weights for %s at %s: running RANDOM weights "
                             "(output is not derained)", text, path)
                self.random_weights = True
                self.source = "random"
                return create_model(text, in_chans=in_chans)
        net = load_checkpoint(text)  # raises CheckpointError subclasses
        self.source = text
        self._sha = _weights_sha(text)
        return net

    def _make_runner(self, net: Any, sha: str | None,
                     size: tuple[int, int] | None = None, spec: Any = None) -> Runner:
        """The runtime back-end running ``net`` (a network, or a loader with ``spec``),
        built for ``size`` (H, W) when given."""
        height, width = size if size is not None else (None, None)
        device: Any = self._device if self._device is not None else self.device_name
        dtype: Any = self._dtype if self._dtype is not None else "fp32"
        if self.runtime_dtype is not None:
            dtype = self.runtime_dtype
        runner = make_runner(self.backend, net, device, dtype, height, width,
                             self.cache_dir, sha, spec=spec, threads=self.threads,
                             int8_calibration_frames=self.int8_calibration_frames,
                             int8_min_psnr_db=self.int8_min_psnr_db)
        self.backend_reason = runner.reason
        # onnxruntime takes numpy: prepared windows stay numpy (no torch on the path)
        self._numpy_inputs = isinstance(runner, OnnxRuntimeRunner)
        return runner

    def _inference(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.inference_mode()`` for the torch back-ends, nothing for onnxruntime."""
        if self._numpy_inputs:
            return contextlib.nullcontext()
        import torch

        return torch.inference_mode()

    def _prepare(self, net: DerainNet) -> DerainNet:
        """``net`` frozen in eval mode on the engine's device and dtype."""
        net = net.to(device=self.device, dtype=self.dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    @property
    def config(self) -> ModelConfig:
        """The :class:`~derain_ros.model.ModelConfig` of the current network."""
        return self._config

    @property
    def contract(self) -> InputContract:
        """The input contract of the current network (how its inputs are prepared)."""
        return self._builder.contract

    @property
    def backend_name(self) -> str:
        """The runtime back-end running now (e.g. ``onnxruntime/CPUExecutionProvider/fp32``)."""
        return self._runner.name

    def _retire(self, runner: Runner) -> None:
        """Keep the int8 refusals of a runner a swap replaces (the count stays monotonic)."""
        if isinstance(runner, Int8Runner):
            self._int8_failures_before += runner.int8_failures

    def int8_status(self) -> dict[str, Any]:
        """dtype int8: the runner's state line, counters (refusals over every runner this
        engine had) and guard PSNR, for /diagnostics; ``{"int8_state": "off"}`` otherwise."""
        runner = self._runner
        if not isinstance(runner, Int8Runner):
            return {"int8_state": "off"}
        status = runner.int8_status()
        status["int8_failures"] += self._int8_failures_before
        return status

    @property
    def arrangement(self) -> str:
        """The clip arrangement of the current network's contract."""
        return self._builder.contract.arrangement

    @property
    def model_name(self) -> str:
        """Name of the current network (``random`` weights noted)."""
        return self._config.name + (" (random weights)" if self.random_weights else "")

    def swap_checkpoint(self, path: str | Path) -> None:
        """Replace the network with a checkpoint's, validating it fully first.

        The new checkpoint is loaded (hash, tensor names and shapes checked), must take
        the same frames (``in_chans``), must not contradict an explicitly requested
        arrangement, and must give finite output on a test clip; only then does it
        replace the current one, between two frames, with an input builder derived from
        its own contract. On any failure the current network stays and
        :class:`CheckpointError` says why.
        """
        if self._net is None:  # no torch here so far: validate and swap without it
            self._swap_without_torch(Path(path))
            return
        import torch

        from derain_ros.model import load_checkpoint

        try:
            net = load_checkpoint(path)
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
        old = self._config
        if net.config.in_chans != old.in_chans:
            self.swap_failures += 1
            raise CheckpointError(
                f"checkpoint {path} takes {net.config.in_chans}-channel frames, the running "
                f"network {old.in_chans}-channel ones")
        try:
            net.input_contract.refuse_overrides(str(path),
                                                arrangement=self.requested_arrangement)
        except ConfigError as err:
            self.swap_failures += 1
            raise CheckpointError(str(err)) from err
        try:
            new_net = self._prepare(net)
            frames, events = new_net.example_inputs(32, 32, device=self.device, dtype=self.dtype)
            with torch.inference_mode():
                out = new_net(frames, events)
            if not bool(torch.isfinite(out.background).all()):
                raise CheckpointError(f"checkpoint {path} gives non-finite output")
            with self._lock:
                last = self._history[-1].frame if self._history else None
            size = None if last is None else (int(last.shape[-2]), int(last.shape[-1]))
            runner = self._make_runner(new_net, _weights_sha(path), size)
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"checkpoint {path} does not run: {err}") from err
        with self._lock:
            if net.input_contract != self._builder.contract:
                self._history.clear()  # prepared windows no longer fit the new contract
            self._builder = InputBuilder(net.input_contract)
            self._retire(self._runner)
            self._net, self._runner, self._config = new_net, runner, new_net.config
            self.random_weights = False
            self.source = str(path)
            self.swaps += 1
        _log.info("switched to checkpoint %s (%s)", path, net.config.name)

    def validate_checkpoint(self, path: str | Path
                            ) -> tuple[dict[str, Any], ModelConfig, InputContract]:
        """The checks of a swap that need neither torch nor a graph: the checkpoint's
        JSON (contract, configuration), its weights file (size, SHA-256, a readable
        safetensors header), the frames it takes and the arrangement asked for. Returns
        its description, configuration and contract; raises :class:`CheckpointError`
        and counts a failure."""
        from derain_ros.model.checkpoint_info import checkpoint_paths

        path = Path(path)

        try:
            info = read_checkpoint_info(path)
            config = checkpoint_config(info, str(path))
            contract = checkpoint_contract(info, str(path))
            weights, _ = checkpoint_paths(path)
            _check_weights_file(weights, info)
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
        if config.in_chans != self._config.in_chans:
            self.swap_failures += 1
            raise CheckpointError(
                f"checkpoint {path} takes {config.in_chans}-channel frames, the running "
                f"network {self._config.in_chans}-channel ones")
        try:
            contract.refuse_overrides(str(path), arrangement=self.requested_arrangement)
        except ConfigError as err:
            self.swap_failures += 1
            raise CheckpointError(str(err)) from err
        return info, config, contract

    def _running_size(self) -> tuple[int, int]:
        with self._lock:
            last = self._history[-1].frame if self._history else None
        return (32, 32) if last is None else (int(last.shape[-2]), int(last.shape[-1]))

    def swap_needs_export(self, path: str | Path) -> bool:
        """Whether :meth:`swap_checkpoint` to ``path`` would first export a graph.

        True only for an engine running onnxruntime without torch whose cache lacks the
        new weights' graph at the running frame size: the export then takes seconds (in
        a child process), and a caller with a stream to serve (the node) validates with
        :meth:`validate_checkpoint` and swaps off its callback thread. An unreadable
        description gives False (the swap itself then says why).
        """
        if self._net is not None or not isinstance(self._runner, OnnxRuntimeRunner):
            return False
        from derain_ros.runtime.cache import CacheKey, has_graph, spec_from_checkpoint

        try:
            spec, sha = spec_from_checkpoint(path)
        except ConfigError:
            return False
        height, width = self._running_size()
        key = CacheKey(spec, sha, height, width, self._runner.opset)
        return not has_graph(self._runner.cache_dir, key)

    def _swap_without_torch(self, path: Path) -> None:
        """:meth:`swap_checkpoint` for an engine running onnxruntime without torch.

        :meth:`validate_checkpoint`'s checks; then the runner for the new weights at the
        running frame size (its graph from the cache, or exported in a child process,
        which loads the network with torch and checks every tensor name and shape) must
        give finite output on a random clip. Why: importing torch for a swap stalls the
        node's callbacks for seconds (frames lost around the swap) and brings ~250 MB
        back into a process that did without.
        """
        from derain_ros.model.checkpoint_info import CheckpointCorruptError

        info, config, contract = self.validate_checkpoint(path)
        try:
            height, width = self._running_size()
            runner = self._make_runner(self._lazy_net(path), str(info["weights_sha256"]),
                                       (height, width), spec=config)
            rng = np.random.default_rng(0)
            frames = rng.random((1, 3, config.in_chans, height, width), np.float32)
            events = (rng.standard_normal((1, 2, config.event_bins, height, width),
                                          np.float32) if config.use_events else None)
            background, _ = _probe(runner, frames, events)
            if not np.isfinite(background).all():
                raise CheckpointCorruptError(f"checkpoint {path} gives non-finite output")
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"checkpoint {path} does not run: {err}") from err
        with self._lock:
            if contract != self._builder.contract:
                self._history.clear()
            self._builder = InputBuilder(contract)
            self._retire(self._runner)
            self._runner, self._config = runner, config
            self._sha = str(info["weights_sha256"])
            self.random_weights = False
            self.source = str(path)
            self.swaps += 1
        _log.info("switched to checkpoint %s (%s)", path, config.name)

    # ------------------------------------------------------------------ inference

    def warm_up(self, height: int, width: int, runs: int = 2) -> float:
        """Run the network ``runs`` times at ``height`` x ``width``; returns seconds taken.

        Why: the first passes allocate memory, pick kernels (and compile with
        ``torch.compile``); doing that before data arrives keeps the first frames' latency
        in line with the rest.
        """
        start = time.perf_counter()
        warm_events()  # numba kernels: decoders and voxel grid
        with self._lock:
            net, runner, config = self._net, self._runner, self._config
        runner.prepare(height, width)
        frames: Any
        events: Any
        if self._numpy_inputs or net is None:
            rng = np.random.default_rng(0)
            frames = rng.random((1, 3, config.in_chans, height, width), np.float32)
            events = (rng.standard_normal((1, 2, config.event_bins, height, width),
                                          np.float32) if config.use_events else None)
        else:
            frames, events = net.example_inputs(height, width, device=self.device,
                                                dtype=self.dtype)
        with self._inference():
            for _ in range(max(1, runs)):
                _probe(runner, frames, events)
        if self._device is not None and self._device.type == "cuda":
            import torch

            torch.cuda.synchronize(self._device)
        return time.perf_counter() - start

    def reset(self) -> None:
        """Forget the frame history (a new stream)."""
        with self._lock:
            self._history.clear()

    def _clip_buffers(self, frame: np.ndarray, voxel: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """``[1, 3, C, H, W]`` and ``[1, 2, bins, H, W]`` float32 buffers for the clip of
        windows shaped like ``frame``/``voxel``, reused from frame to frame (the worker
        is the only caller, and the back-end is done with them when it returns)."""
        f_shape = (1, 3, *frame.shape)
        e_shape = None if voxel is None else (1, 2, *voxel.shape)
        bufs = self._buffers
        if bufs is None or bufs[0].shape != f_shape or (
                None if bufs[1] is None else bufs[1].shape) != e_shape:
            bufs = (np.empty(f_shape, np.float32),
                    None if e_shape is None else np.empty(e_shape, np.float32))
            self._buffers = bufs
        return bufs

    def _tensor(self, array: np.ndarray) -> Any:
        """A prepared array as the runner takes it: as is (onnxruntime), or a tensor."""
        if self._numpy_inputs:
            return array
        import torch

        return torch.from_numpy(array).to(device=self.device, dtype=self.dtype)

    def _dump(self, window: FrameWindow, frames: Any, events: Any) -> None:
        """Write the exact tensors handed to the network (``dump_inputs``), one file each.

        Why: the only way to check, on a deployed node, that it feeds the network what
        training fed it (the bit-identity test reads these). Files are
        ``<stamp_ns>.npz`` with ``frames`` and, for event networks, ``events``.
        """
        if self.dump_inputs is None:
            return
        def host(x: Any) -> np.ndarray:
            out: np.ndarray = (np.asarray(x, np.float32) if isinstance(x, np.ndarray)
                               else x.float().cpu().numpy())
            return out

        arrays: dict[str, Any] = {"frames": host(frames)}
        if events is not None:
            arrays["events"] = host(events)
        self.dump_inputs.mkdir(parents=True, exist_ok=True)
        np.savez(self.dump_inputs / f"{int(window.t_ns)}.npz", **arrays)

    def process(self, window: FrameWindow) -> EngineResult | None:
        """Derain one window's frame (``centre``: the previous window's; None at the start).

        Raises :class:`ModelError` when the network fails on this input (e.g. a frame of a
        size it cannot take); the history is left as it was.
        """
        t_start, c_start = time.perf_counter(), time.thread_time()
        with self._lock:
            if window.t_prev_ns is None:  # a new stream (start, clock reset)
                self._history.clear()
            builder, runner = self._builder, self._runner
            history = list(self._history)
        image, grid = builder.window(window)
        frame = self._tensor(image)
        voxel = None if grid is None else self._tensor(grid)
        height, width = frame.shape[-2:]
        if history and tuple(history[-1].frame.shape) != tuple(frame.shape):
            history = []  # the frame size changed: a new stream
        t_prep, c_prep = time.perf_counter(), time.thread_time()
        step = _Step(window, frame, voxel, frames_only=voxel is None or window.events_missing)
        if builder.needs_next and not history:
            with self._lock:
                self._history.append(step)
            return None
        # The prepared windows around the target, oldest first: causal (prev, target),
        # centre (prev, target, next) where the newest window is the "next" one.
        keep = 1 if not builder.needs_next else 2
        seq = [*history[-keep:], step]
        t = len(seq) - 1 - int(builder.needs_next)
        target = seq[t]
        frames_only = any(s.frames_only for s in seq[t:])
        try:
            frames_in = [s.frame for s in seq]
            voxels_in = [s.voxel for s in seq]
            if self._numpy_inputs:  # into buffers kept between frames: no stacking copies
                buf_frames, buf_events = self._clip_buffers(frames_in[-1], voxels_in[-1])
                clip, ev = builder.clip_into(frames_in, voxels_in, t, buf_frames[0],
                                             None if buf_events is None else buf_events[0])
                batch_frames = buf_frames
                batch_events = None if ev is None else buf_events
            else:
                clip, ev = builder.clip_at(frames_in, voxels_in, t)
                batch_frames, batch_events = clip[None], None if ev is None else ev[None]
            if self.dump_inputs is not None:
                self._dump(target.window, clip, ev)
            with self._inference():
                background, rain = runner(batch_frames, batch_events)
            derained = background[0].transpose(1, 2, 0)  # clamped to [0, 1] by the runner
            rain_np = (np.clip(rain[0].transpose(1, 2, 0), 0.0, 1.0) if self.want_rain
                       else None)
        except ModelError:
            raise
        except Exception as err:  # torch's RuntimeError, onnxruntime's own exceptions
            raise ModelError(f"inference failed on a {width}x{height} frame: {err}") from err
        t_inf, c_inf = time.perf_counter(), time.thread_time()
        if not np.isfinite(derained).all():
            derained = np.nan_to_num(derained, nan=0.0, posinf=1.0, neginf=0.0)
        ev_img = None
        if self.want_events_image:
            ev_img = events_image(target.window.events, int(height), int(width))
        with self._lock:
            self._history.append(step)
        t_end, c_end = time.perf_counter(), time.thread_time()
        timings = {
            "prepare": (t_prep - t_start) * 1e3,
            "infer": (t_inf - t_prep) * 1e3, "total": (t_end - t_start) * 1e3,
            # CPU time of the calling thread (a back-end's own pool threads not counted)
            "prepare_cpu": (c_prep - c_start) * 1e3, "infer_cpu": (c_inf - c_prep) * 1e3,
            "total_cpu": (c_end - c_start) * 1e3,
        }
        return EngineResult(target.window, derained, rain_np, ev_img, frames_only, timings,
                            self.model_name)
