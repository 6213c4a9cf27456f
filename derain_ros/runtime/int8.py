"""dtype ``int8``: a statically quantised copy of the exported fp32 graph on onnxruntime's
CPU execution provider, calibrated on the runner's own first inputs.

Why: on a CPU with 8-bit dot products (AVX512-VNNI, AVX-VNNI, ARM dot-product) the
quantised graph runs faster than the fp32 one: ``derain_tiny`` at 346x260, 1 thread,
49.3 -> 35.9 ms per frame (1.37x), -0.03 dB on held-out rainy clips (bench/RESULTS.md).
Static quantisation needs activation ranges, and the best data for them are the inputs
the network gets in use; hence calibration on the node's own frames rather than on a
data set shipped with the weights.

How (:class:`Int8Runner`, one state per frame size):

1. No int8 graph for the size in the cache: the runner runs the fp32 graph exactly as
   dtype fp32 does, and keeps a copy of its first ``calibration_frames`` inputs. In the
   node these are the clips the engine prepared with the checkpoint's ``InputBuilder``,
   i.e. exactly the network's inputs (kept as float16, which is exact for float16 input
   contracts such as the shipped weights'; a clip that does not fit float16 stays fp32).
   Calls marked ``calibrate=False`` (warm-up, a swap's test clip: random data) are not kept.
2. A background thread, at a lower CPU priority (nice +10, so the frames keep the CPU),
   quantises with ``onnxruntime.quantization`` (no torch): ``quant_pre_process`` without
   symbolic shape inference (it fails on this graph), then ``quantize_static`` in QDQ
   format, per-channel int8 weights, uint8 activations, MinMax ranges
   (:class:`QuantSettings`), from 3 of every 4 kept clips, each also with its events
   times 8 (headroom for rain denser than during calibration:
   :attr:`QuantSettings.event_headroom`). The guard then runs the int8
   and the fp32 graph on the held-back clips (every 4th): the int8 background must be
   finite and within ``min_psnr_db`` (:data:`DEFAULT_MIN_PSNR_DB`, 40 dB) PSNR of the
   fp32 background on each of them.
3. Passed: the graph goes into the cache beside the fp32 graph and runs from the next
   call on. The call in progress finishes on fp32, and the int8 session is opened on the
   calling thread at the next call, so no frame is dropped or skipped. Failed (or
   quantisation raised): the size stays on fp32; counted (:attr:`Int8Runner.int8_failures`),
   logged once, and :meth:`Int8Runner.int8_status` says why. It is not retried until
   the size changes or a new runner starts (a checkpoint swap, a restart).
4. A runner for the same weights, size and settings later (the next start) loads the
   cached int8 graph when the size is first seen: int8 from the first frame; logged
   with when it was calibrated. Deleting the ``-int8-`` files recalibrates.

Cache files (:func:`int8_path`), beside the fp32 graph of :mod:`derain_ros.runtime.cache`::

    onnx/<name>-c<config8>-w<weights16>/<W>x<H>-opset<N>-v<V>-int8-q<settings8>.onnx
    onnx/<name>-c<config8>-w<weights16>/<W>x<H>-opset<N>-v<V>-int8-q<settings8>.json

``settings8`` hashes :class:`QuantSettings` (with :data:`QUANT_VERSION`); the JSON holds
the fp32 graph's key, the settings, when it was calibrated, the clip counts and the
guard's PSNR. A cached graph whose recorded PSNR is under the runner's ``min_psnr_db``
is not used (it is recalibrated).

Memory while calibrating: ``calibration_frames`` clips of (3 x C + 2 x bins) planes of
H x W float16: 24 clips of ``derain_tiny`` at 346x260 are about 125 MB, freed once the
quantisation is done.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derain_ros.errors import ConfigError, ModelError
from derain_ros.fileio import atomic_write
from derain_ros.runtime.cache import CacheKey, ModelSpec, onnx_path
from derain_ros.runtime.errors import BackendUnavailableError, Int8GuardError
from derain_ros.runtime.onnx_runner import (
    MAX_SESSIONS,
    PROVIDERS,
    OnnxRuntimeRunner,
    as_numpy,
    check_inputs,
)

_log = logging.getLogger(__name__)

#: Version of what :func:`quantize_graph` writes for the same fp32 graph and settings
#: (bump when the pre-processing or the quantiser's use changes).
QUANT_VERSION = 1
#: Frames run on fp32 and kept for calibration before quantising (node parameter
#: ``int8_calibration_frames``).
DEFAULT_CALIBRATION_FRAMES = 24
#: The guard: the int8 background's PSNR against the fp32 background on every held-back
#: clip must reach this (dB). Measured on the shipped derain_tiny (128x96 synthetic dry,
#: heavy-rain and storm clips, calibrated on each and run on each): 52-60 dB, so 40 dB
#: leaves a wide margin while still catching a broken quantisation (ranges that miss the
#: data gave 37 dB before the event headroom of :class:`QuantSettings`).
DEFAULT_MIN_PSNR_DB = 40.0
#: Every how many kept clips one is held back for the guard instead of calibrating.
HOLD_BACK_EVERY = 4
#: PSNR reported for identical outputs (JSON has no infinity).
PSNR_CAP_DB = 100.0

_QUANTISED = [0]  # int8 graphs this process calibrated and accepted (see quantisation_count)


def quantisation_count() -> int:
    """How many int8 graphs this process has calibrated and accepted (tests check reuse)."""
    return _QUANTISED[0]


@dataclass(frozen=True)
class QuantSettings:
    """How the int8 graph is made (part of its cache key).

    The defaults are onnxruntime's advice for x86 CPUs with VNNI and what the experiment
    of issue #16 measured: QDQ format (the CPU EP fuses QDQ pairs into integer kernels),
    per-channel int8 weights, uint8 activations without ``reduce_range``, MinMax ranges.
    """

    quant_format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    reduce_range: bool = False
    #: Each calibration clip also goes in with its event voxels times this (1: off), so
    #: the event path's ranges cover far denser events than the calibration frames had.
    #: Why: MinMax ranges are those seen; calibrated on a dry clip (~500 events/frame at
    #: 128x96) and run on heavy rain (~20 k), the int8 background fell to 37 dB PSNR
    #: from fp32's (-3 dB against the clean frames); with 8x it stays >= 52 dB in every
    #: pairing of dry, heavy and storm clips tried, for ~5 dB less agreement (57 -> 52 dB,
    #: invisible against the clean frames) when calibration and use match.
    event_headroom: float = 8.0
    version: int = QUANT_VERSION

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values."""
        return asdict(self)

    @property
    def tag(self) -> str:
        """``int8-q<8 hex digits>``: the file-name part naming these settings."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return f"int8-q{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def int8_path(cache_dir: Path, key: CacheKey, settings: QuantSettings) -> Path:
    """Where the int8 graph of ``key``'s fp32 graph lives (its JSON beside it)."""
    fp32 = onnx_path(cache_dir, key)
    return fp32.with_name(f"{key.stem}-{settings.tag}.onnx")


def cached_int8(cache_dir: Path, key: CacheKey, settings: QuantSettings,
                min_psnr_db: float) -> tuple[Path, dict[str, Any]] | None:
    """``(path, description)`` of a usable cached int8 graph, or None.

    Usable: both files exist, the JSON names the same fp32 key and settings, and the
    guard PSNR it passed is at least ``min_psnr_db``.
    """
    path = int8_path(cache_dir, key, settings)
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        ok = (meta["key"] == key.as_dict() and meta["int8"] == settings.as_dict()
              and float(meta["guard_psnr_db"]) >= min_psnr_db)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (path, meta) if ok else None


def require_quantization() -> None:
    """Raise :class:`BackendUnavailableError` naming the missing package when
    ``onnxruntime.quantization`` cannot work here (it rewrites graphs with ``onnx``)."""
    for package, why in (("onnxruntime", "runs the graphs"),
                         ("onnx", "onnxruntime.quantization rewrites the graph with it")):
        if importlib.util.find_spec(package) is None:
            raise BackendUnavailableError(
                f"dtype int8 needs the {package} package ({why}), not installed here: "
                f"pip install {package} (or pip install 'derain_ros[runtime]')")


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of ``a`` against ``b`` for data in [0, 1] (dB, capped at :data:`PSNR_CAP_DB`)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if not math.isfinite(mse):
        return float("nan")
    return PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10.0 * math.log10(mse)


Clip = tuple[np.ndarray, "np.ndarray | None"]


def _feeds(clip: Clip) -> dict[str, np.ndarray]:
    frames, events = clip
    feeds = {"frames": np.ascontiguousarray(frames, np.float32)}
    if events is not None:
        feeds["events"] = np.ascontiguousarray(events, np.float32)
    return feeds


def _kept(x: np.ndarray) -> np.ndarray:
    """A copy of an input for calibration: float16 when that holds it, else float32."""
    half = x.astype(np.float16)
    return half if np.isfinite(half).all() else np.array(x, np.float32)


def quantize_graph(fp32_path: Path, out_path: Path, calibration: Sequence[Clip],
                   settings: QuantSettings, workdir: Path) -> None:
    """Write the statically quantised copy of the graph at ``fp32_path`` to ``out_path``.

    ``calibration``: the clips whose activation ranges set the quantisation (each
    ``(frames, events)`` as the graph takes them, events None for frames-only networks);
    each also goes in with its events times ``settings.event_headroom``.
    ``workdir`` holds the pre-processed graph. Imports ``onnxruntime.quantization``
    (and with it ``onnx``), never torch.
    """
    if not calibration:
        raise ModelError("int8: no calibration clips")
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise BackendUnavailableError(f"dtype int8 needs onnxruntime.quantization and the onnx "
                                      f"package (pip install onnx): {err}") from err

    class Reader(CalibrationDataReader):
        """The kept clips, one feed dict at a time (as float32, as the graph takes them)."""

        def __init__(self) -> None:
            self._feeds = self._all()

        @staticmethod
        def _all() -> Iterator[dict[str, np.ndarray]]:
            for clip in calibration:
                yield _feeds(clip)
            if settings.event_headroom != 1.0:
                for frames, events in calibration:
                    if events is not None:
                        yield _feeds((frames, np.asarray(events, np.float32)
                                      * np.float32(settings.event_headroom)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    pre = workdir / "preprocessed.onnx"
    # Symbolic shape inference fails on this graph (it is for transformer-like graphs);
    # onnx shape inference and onnxruntime's basic optimisation are kept.
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(out_path), Reader(),
        quant_format=getattr(QuantFormat, settings.quant_format),
        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        activation_type=getattr(QuantType, settings.activation_type),
        weight_type=getattr(QuantType, settings.weight_type),
        calibrate_method=getattr(CalibrationMethod, settings.calibrate_method))


def _remove_stale_work(folder: Path, age_s: float = 3600.0) -> None:
    """Remove work folders (``.int8-*``) older than ``age_s`` that a process killed while
    quantising left behind (its temporary folder is not cleaned up then)."""
    for stale in folder.glob(".int8-*"):
        try:
            if time.time() - stale.stat().st_mtime > age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _lower_priority() -> None:
    """Nice the calling thread by 10 (Linux nices threads one by one; the onnxruntime
    threads a session starts here inherit it): quantising must not take the CPU from
    the frames. Elsewhere, or where it is refused, nothing happens."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 10)
    except (AttributeError, OSError):
        pass


class _SizeState:
    """The int8 state of one frame size (see the module docstring's steps)."""

    def __init__(self) -> None:
        #: collecting -> quantising -> ready -> int8; or -> failed. Also ready from the cache.
        self.status = "collecting"
        self.clips: list[Clip] = []
        self.path: Path | None = None  # the accepted int8 graph (ready, int8)
        self.session: Any = None  # its session, opened on the inference thread (int8)
        self.meta: dict[str, Any] = {}
        self.from_cache = False
        self.detail = ""


class Int8Runner(OnnxRuntimeRunner):
    """The onnxruntime CPU runner for dtype ``int8``; see the module docstring.

    Args (beyond :class:`OnnxRuntimeRunner`'s, always on the CPU provider):
        calibration_frames: inputs run on fp32 and kept before quantising (>= 2).
        min_psnr_db: the guard's threshold (an internal knob: tests force a failure
            with an impossible value).
        settings: how to quantise (:class:`QuantSettings`).

    Attributes: ``precision``/``dtype`` and ``name`` say what runs now (``fp32`` until
    the int8 graph for the current size is in use, then ``int8``); ``calibrations``,
    ``int8_from_cache``, ``int8_failures`` count graphs accepted, loaded from the cache
    and refused; ``guard_psnr_db`` is the last guard's worst PSNR.
    """

    def __init__(self, spec: ModelSpec, weights_sha256: str, get_net: Callable[[], Any] | None,
                 cache_dir: Path, *, threads: int = 0, opset: int = 17,
                 height: int | None = None, width: int | None = None, reason: str = "",
                 calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
                 min_psnr_db: float = DEFAULT_MIN_PSNR_DB,
                 settings: QuantSettings | None = None) -> None:
        if int(calibration_frames) < 2:
            raise ConfigError(f"int8 calibration needs at least 2 frames (one to calibrate, "
                              f"one to check), got {calibration_frames}")
        require_quantization()
        super().__init__(spec, weights_sha256, get_net, cache_dir, provider="cpu",
                         precision="fp32", threads=threads, opset=opset, reason=reason)
        self.calibration_frames = int(calibration_frames)
        self.min_psnr_db = float(min_psnr_db)
        self.settings = settings or QuantSettings()
        self.calibrations = 0
        self.int8_from_cache = 0
        self.int8_failures = 0
        self.guard_psnr_db = float("nan")
        self._int8_lock = threading.Lock()
        self._states: collections.OrderedDict[tuple[int, int], _SizeState] = (
            collections.OrderedDict())
        self._current: tuple[int, int] | None = None
        self._jobs: list[threading.Thread] = []
        if height is not None and width is not None:
            self.prepare(int(height), int(width))

    # ------------------------------------------------------------------ states
    def _key(self, size: tuple[int, int]) -> CacheKey:
        return CacheKey(self.spec, self.weights_sha256, size[0], size[1], self.opset)

    def _state(self, size: tuple[int, int]) -> _SizeState:
        """The state of ``size``, created on first sight (from the cache when it has the
        graph). A new size starts over: clips kept for another one are dropped."""
        with self._int8_lock:
            state = self._states.get(size)
            if state is not None:
                self._states.move_to_end(size)
                return state
        state = _SizeState()
        found = cached_int8(self.cache_dir, self._key(size), self.settings, self.min_psnr_db)
        if found is not None:
            state.path, state.meta = found
            state.status, state.from_cache = "ready", True
            self.int8_from_cache += 1
            self.guard_psnr_db = float(state.meta.get("guard_psnr_db", float("nan")))
            _log.info("int8 graph for %s at %dx%d from the cache (%s, calibrated %s on %s "
                      "clips, guard %.1f dB); delete it to recalibrate", self.spec.name,
                      size[1], size[0], state.path, state.meta.get("calibrated", "?"),
                      state.meta.get("calibration_clips", "?"), self.guard_psnr_db)
        with self._int8_lock:
            for other in self._states.values():
                other.clips.clear()
            self._states[size] = state
            while len(self._states) > MAX_SESSIONS:
                self._states.popitem(last=False)
        return state

    def _int8_session(self, size: tuple[int, int], state: _SizeState) -> Any:
        """The int8 session of ``size``, opened here (the inference thread, at its CPU
        priority) once the graph is accepted; None while the size runs fp32."""
        if state.status == "int8":
            return state.session
        if state.status != "ready" or state.path is None:
            return None
        try:
            session = self._open(state.path, self._key(size))
        except ModelError as err:
            self._fail(state, f"cannot load the int8 graph {state.path}: {err}")
            return None
        state.session, state.status = session, "int8"
        _log.info("%s now runs int8 at %dx%d (%s)", self.spec.name, size[1], size[0],
                  "from the cache" if state.from_cache else "calibrated on this stream")
        return session

    def _fail(self, state: _SizeState, why: str) -> None:
        with self._int8_lock:
            state.status, state.detail = "failed", why
            state.clips.clear()
            self.int8_failures += 1
        _log.warning("int8 refused for %s, staying on fp32: %s", self.spec.name, why)

    def _set_precision(self, precision: str) -> None:
        if precision != self.precision:
            self.precision = self.dtype = precision
            self.name = f"{self.backend}/{PROVIDERS[self.provider]}/{precision}"

    # ------------------------------------------------------------------ inference
    def prepare(self, height: int, width: int) -> None:
        """Build the fp32 session for ``height`` x ``width`` and, when the cache has the
        int8 graph for it, open that too (int8 from the first frame)."""
        size = (int(height), int(width))
        self._session(*size)
        state = self._state(size)
        self._current = size
        self._set_precision("int8" if self._int8_session(size, state) is not None else "fp32")

    def __call__(self, frames: Any, events: Any | None) -> tuple[np.ndarray, np.ndarray]:
        """``(background, rain)``; the input is kept for calibration while calibrating."""
        return self.run(frames, events, calibrate=True)

    def run(self, frames: Any, events: Any | None, *,
            calibrate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(background, rain)`` from the int8 graph when it is in use for this size,
        else from the fp32 graph; ``calibrate=False``: never keep this input (random
        warm-up or test data)."""
        f = as_numpy(frames)
        e = None if events is None else as_numpy(events)
        check_inputs(self.spec, f, e)
        size = (int(f.shape[-2]), int(f.shape[-1]))
        fp32 = self._session(*size)
        state = self._state(size)
        self._current = size
        int8 = self._int8_session(size, state)
        feeds = {"frames": f} if e is None else {"frames": f, "events": e}
        try:
            background, rain = (int8 or fp32).run(["background", "rain"], feeds)
        except Exception as err:
            raise ModelError(f"onnxruntime ({'int8' if int8 else 'fp32'}) inference failed on "
                             f"a {size[1]}x{size[0]} frame: {err}") from err
        self._set_precision("int8" if int8 is not None else "fp32")
        if int8 is None and calibrate and state.status == "collecting":
            self._keep(size, state, f, e)
        return background, rain

    def _keep(self, size: tuple[int, int], state: _SizeState, frames: np.ndarray,
              events: np.ndarray | None) -> None:
        """Keep a copy of one input; with enough of them, start quantising."""
        clip = (_kept(frames), None if events is None else _kept(events))
        with self._int8_lock:
            state.clips.append(clip)
            if len(state.clips) < self.calibration_frames:
                return
            clips, state.clips = state.clips, []
            state.status = "quantising"
        fp32_path = self.onnx_paths[size]
        job = threading.Thread(target=self._quantise, name="derain_int8", daemon=True,
                               args=(state, self._key(size), fp32_path, clips))
        self._jobs = [j for j in self._jobs if j.is_alive()] + [job]
        _log.info("int8: %d frames at %dx%d kept, quantising %s in the background",
                  len(clips), size[1], size[0], self.spec.name)
        job.start()

    # ------------------------------------------------------------------ background
    def _quantise(self, state: _SizeState, key: CacheKey, fp32_path: Path,
                  clips: list[Clip]) -> None:
        """Quantise, guard, cache (the background thread; see the module docstring)."""
        _lower_priority()
        start = time.perf_counter()
        # every HOLD_BACK_EVERY-th clip (at least the last one) checks, the rest calibrate
        held_at = set(range(HOLD_BACK_EVERY - 1, len(clips), HOLD_BACK_EVERY)) or {len(clips) - 1}
        held = [c for i, c in enumerate(clips) if i in held_at]
        calibration = [c for i, c in enumerate(clips) if i not in held_at]
        del clips
        out = int8_path(self.cache_dir, key, self.settings)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_work(out.parent)
            with tempfile.TemporaryDirectory(prefix=".int8-", dir=out.parent) as tmp:
                graph = Path(tmp) / "int8.onnx"
                quantize_graph(fp32_path, graph, calibration, self.settings, Path(tmp))
                worst = self._guard(fp32_path, graph, held, key)
                meta = {"key": key.as_dict(), "int8": self.settings.as_dict(),
                        "fp32_graph": fp32_path.name,
                        "calibrated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "calibration_clips": len(calibration), "guard_clips": len(held),
                        "guard_psnr_db": round(worst, 2), "min_psnr_db": self.min_psnr_db,
                        "onnxruntime": self.ort.__version__,
                        "quantise_s": round(time.perf_counter() - start, 2)}
                os.replace(graph, out)
            atomic_write(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        except Exception as err:  # quantiser, guard or disk: all keep fp32
            self._fail(state, f"{type(err).__name__}: {err}")
            return
        with self._int8_lock:
            state.path, state.meta, state.status = out, meta, "ready"
            self.calibrations += 1
            self.guard_psnr_db = worst
        _QUANTISED[0] += 1
        _log.info("int8 graph for %s at %dx%d accepted: calibrated on %d frames, %.1f dB "
                  "from fp32 on %d held-back ones (guard %.0f dB), in %.1f s; cached at %s; "
                  "used from the next frame", self.spec.name, key.width, key.height,
                  len(calibration), worst, len(held), self.min_psnr_db,
                  time.perf_counter() - start, out)

    def _guard(self, fp32_path: Path, int8_graph: Path, held: Sequence[Clip],
               key: CacheKey) -> float:
        """The worst PSNR of the int8 background against the fp32 one on ``held``;
        :class:`Int8GuardError` when under :attr:`min_psnr_db` or not finite. Both
        sessions are opened here (this thread's priority) and closed after."""
        fp32, int8 = self._open(fp32_path, key), self._open(int8_graph, key)
        worst = PSNR_CAP_DB
        for clip in held:
            feeds = _feeds(clip)
            want = fp32.run(["background"], feeds)[0]
            got = int8.run(["background"], feeds)[0]
            if not np.isfinite(got).all():
                raise Int8GuardError("int8 background is not finite on a held-back clip")
            worst = min(worst, psnr_db(got, want))
        if not worst >= self.min_psnr_db:
            raise Int8GuardError(f"int8 background only {worst:.1f} dB PSNR from the fp32 one "
                                 f"on {len(held)} held-back clips (guard: >= "
                                 f"{self.min_psnr_db:g} dB)")
        return worst

    # ------------------------------------------------------------------ reporting
    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background quantisation to end; True when none is running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in list(self._jobs):
            job.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(j.is_alive() for j in self._jobs)

    def int8_status(self) -> dict[str, Any]:
        """What /diagnostics reports: ``int8_state`` (one line), the counters, the last
        guard PSNR and when the graph in use was calibrated."""
        size = self._current
        with self._int8_lock:
            state = None if size is None else self._states.get(size)
            kept = 0 if state is None else len(state.clips)
        if state is None or size is None:
            text = "fp32 until the first frame"
        else:
            where = f"{size[1]}x{size[0]}"
            text = {
                "collecting": f"fp32, calibrating int8: {kept}/{self.calibration_frames} "
                              f"frames at {where}",
                "quantising": f"fp32, quantising int8 at {where} in the background",
                "ready": f"int8 at {where} from the next frame",
                "int8": f"int8 at {where} ({'from the cache, ' if state.from_cache else ''}"
                        f"calibrated {state.meta.get('calibrated', '?')})",
                "failed": f"fp32: int8 refused at {where}: {state.detail}",
            }[state.status]
        return {"int8_state": text, "int8_calibrations": self.calibrations,
                "int8_from_cache": self.int8_from_cache, "int8_failures": self.int8_failures,
                "int8_guard_psnr_db": self.guard_psnr_db}


__all__ = [
    "DEFAULT_CALIBRATION_FRAMES",
    "DEFAULT_MIN_PSNR_DB",
    "QUANT_VERSION",
    "Int8Runner",
    "QuantSettings",
    "cached_int8",
    "int8_path",
    "psnr_db",
    "quantisation_count",
    "quantize_graph",
    "require_quantization",
]
