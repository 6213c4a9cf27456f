"""Inference on frame windows: clip assembly, device and precision, warm-up, checkpoint swap.

One :class:`DerainEngine` serves the node (live), bag replay and evaluation; training
builds its clips with the same :func:`build_clip`, so the network sees the same
arrangement in training and in use.

Clip arrangement (the network takes 3 frames and the 2 voxel grids between them and
restores the centre one; see :mod:`derain_ros.model`):

- ``causal`` (default, the node's): the target is the *newest* frame ``f_t``, so no
  frame of latency is added. Clip ``(f_{t-1}, f_t, f_{t-1})`` with voxel grids
  ``(V, mirror(V))``, ``V`` the events of ``(t-1, t]``: the sequence played back in
  time around ``f_t``. ``mirror(V) = -flip_bins(V)`` is exactly the voxel grid of the
  same events with time reversed (bins reversed, brightness changes negated), so the
  second interval is physically consistent with the third frame being ``f_{t-1}``.
- ``centre`` (the paper's): the target is ``f_{t-1}`` and ``f_t`` is its future
  neighbour: clip ``(f_{t-2}, f_{t-1}, f_t)`` with ``(V_{t-1}, V_t)``. One frame of
  latency: :meth:`DerainEngine.process` returns the result for the *previous*
  window (stamped with its header), and None for the first one.

The first frame after a start (no previous frame) uses ``f_t`` in place of the missing
neighbours and zero voxel grids. A window without events (``events_missing``: event
camera down) gets zero voxel grids - the frames-only fallback - and the result says so.

Voxel grids come from :func:`derain_ros.events.voxel.voxel_grid` (window ``(t0, t1]``,
``bins`` from the checkpoint, normalisation as its config records); when the event
sensor's size differs from the frame's, the grid is resized to the frame (bilinear),
which assumes the rig's two images are registered.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain_ros.errors import CheckpointError, ConfigError, ModelError
from derain_ros.events import warm_up as warm_events
from derain_ros.events.voxel import count_image, voxel_grid
from derain_ros.model import (
    CheckpointNotFoundError,
    DerainNet,
    create_model,
    default_checkpoint_path,
    list_models,
    load_checkpoint,
)
from derain_ros.records import EventBatch
from derain_ros.sync import FrameWindow

__all__ = [
    "ARRANGEMENTS",
    "CLIP_TARGET",
    "DerainEngine",
    "EngineResult",
    "build_clip",
    "mirror_voxel",
    "resolve_device",
    "resolve_dtype",
]

_log = logging.getLogger(__name__)

#: Clip arrangements (see the module docstring).
ARRANGEMENTS = ("causal", "centre")

#: Position of the target frame in the 3-frame clip, in every arrangement.
CLIP_TARGET = 1
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else as torch names it."""
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
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    if device.type == "cpu" and dtype == "fp16":
        raise ConfigError("fp16 is not supported on the CPU; use fp32 or bf16")
    return _DTYPES[dtype]


def mirror_voxel(voxel: Tensor) -> Tensor:
    """The voxel grid of the same events with time reversed: bins flipped, sign negated.

    ``voxel`` is ``[..., bins, H, W]`` (signed polarity sums).
    """
    return -torch.flip(voxel, dims=(-3,))


def build_clip(frames: Sequence[Tensor], voxels: Sequence[Tensor | None],
               arrangement: str = "causal") -> tuple[Tensor, Tensor | None]:
    """The network input for one target frame (no batch dimension).

    Args:
        frames: ``causal``: ``(f_prev, f_t)``; ``centre``: ``(f_prev, f_centre, f_next)``;
            each ``[C, H, W]``. For the first frame of a stream pass the target again in
            place of a missing neighbour.
        voxels: ``causal``: ``(V,)``, the grid of ``(t-1, t]``; ``centre``:
            ``(V_prev, V_next)``; each ``[bins, H, W]``, or None for a frames-only network.
        arrangement: one of :data:`ARRANGEMENTS`.

    Returns:
        ``frames [3, C, H, W]`` and ``events [2, bins, H, W]`` (None without voxels).
    """
    if arrangement == "causal":
        if len(frames) != 2 or len(voxels) != 1:
            raise ModelError("a causal clip takes 2 frames (previous, target) and 1 voxel grid")
        prev, cur = frames
        v = voxels[0]
        return torch.stack([prev, cur, prev]), (
            None if v is None else torch.stack([v, mirror_voxel(v)]))
    if arrangement == "centre":
        if len(frames) != 3 or len(voxels) != 2:
            raise ModelError("a centre clip takes 3 frames and 2 voxel grids")
        va, vb = voxels
        return torch.stack(list(frames)), (
            None if va is None or vb is None else torch.stack([va, vb]))
    raise ConfigError(f"unknown clip arrangement {arrangement!r}; use one of {ARRANGEMENTS}")


@dataclass(frozen=True, eq=False)
class EngineResult:
    """The derained frame of one window, with what the node publishes alongside.

    Attributes:
        window: the window the result is *for* (its stamp/frame_id stamp the outputs;
            in ``centre`` arrangement the previous one).
        derained: float32 H x W x C in [0, 1] (C = 3 RGB, or 1).
        rain: the rain layer, float32 H x W x C clamped to [0, 1], or None.
        events_image: H x W x 3 float32 in [0, 1] (ON blue, OFF red), or None.
        frames_only: True when no events went in (missing, or a frames-only network).
        timings_ms: ``prepare``, ``voxel``, ``infer``, ``total`` in milliseconds.
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
    window: FrameWindow
    frame: Tensor  # [C, H, W] on the device, in the network's dtype
    voxel: Tensor | None  # [bins, H, W] of (t_prev, t]; None for frames-only
    frames_only: bool


def events_image(events: EventBatch, height: int, width: int) -> np.ndarray:
    """Count image as a picture: ON events blue, OFF events red, saturating (H x W x 3)."""
    counts = count_image(events)  # [2, H, W]: OFF, ON
    counts = counts.numpy() if isinstance(counts, Tensor) else np.asarray(counts)
    img = np.zeros((events.height, events.width, 3), np.float32)
    img[..., 0] = 1.0 - np.exp(-counts[0].astype(np.float32) / 2.0)
    img[..., 2] = 1.0 - np.exp(-counts[1].astype(np.float32) / 2.0)
    if (events.height, events.width) != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    return img


class DerainEngine:
    """Windows in, derained frames out; see the module docstring.

    Args:
        model: a :class:`DerainNet`, a checkpoint path (stem, ``.safetensors`` or
            ``.json``), or a registered name; a name loads its shipped weights, or
            random weights when ``allow_random_weights`` (tests, benchmarks, first runs).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``.
        compile: wrap the network in ``torch.compile``.
        arrangement: ``causal`` or ``centre``.
        in_chans: for a name: 1 for grayscale frames (DAVIS), 3 for colour.

    Thread-safety: :meth:`process` runs on one worker thread; :meth:`swap_checkpoint` may
    be called from another (the new network replaces the old one between two frames).
    """

    def __init__(self, model: DerainNet | str | Path = "derain_tiny", *, device: str = "auto",
                 dtype: str = "auto", compile: bool = False, arrangement: str = "causal",
                 in_chans: int = 3, allow_random_weights: bool = False,
                 want_rain: bool = True, want_events_image: bool = False) -> None:
        if arrangement not in ARRANGEMENTS:
            raise ConfigError(f"unknown clip arrangement {arrangement!r}; use one of "
                              f"{ARRANGEMENTS}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.compile = bool(compile)
        self.arrangement = arrangement
        self.want_rain = want_rain
        self.want_events_image = want_events_image
        self.random_weights = False
        self._lock = threading.Lock()
        self.source = ""
        net = self._load(model, in_chans, allow_random_weights)
        self._net, self._runner = self._prepare(net)
        self._history: collections.deque[_Step] = collections.deque(maxlen=2)
        self.swaps = 0
        self.swap_failures = 0

    # ------------------------------------------------------------------ models

    def _load(self, model: DerainNet | str | Path, in_chans: int,
              allow_random: bool) -> DerainNet:
        if isinstance(model, DerainNet):
            self.source = f"<{model.config.name} instance>"
            return model
        text = str(model)
        if text in list_models():
            path = default_checkpoint_path(text, in_chans)
            try:
                net = create_model(text, checkpoint=path, in_chans=in_chans)
                self.source = str(path)
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
        return net

    def _prepare(self, net: DerainNet) -> tuple[DerainNet, nn.Module]:
        net = net.to(device=self.device, dtype=self.dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        runner: nn.Module = net
        if self.compile:
            runner = torch.compile(net)  # type: ignore[assignment]
        return net, runner

    @property
    def config(self) -> Any:
        """The :class:`~derain_ros.model.ModelConfig` of the current network."""
        return self._net.config

    @property
    def model_name(self) -> str:
        """Name of the current network (``random`` weights noted)."""
        return self._net.config.name + (" (random weights)" if self.random_weights else "")

    def swap_checkpoint(self, path: str | Path) -> None:
        """Replace the network with a checkpoint's, validating it fully first.

        The new checkpoint is loaded (hash, tensor names and shapes checked), must take
        the same frames (``in_chans``), and must give finite output on a test clip; only
        then does it replace the current one, between two frames. On any failure the
        current network stays and :class:`CheckpointError` says why.
        """
        try:
            net = load_checkpoint(path)
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
        old = self._net.config
        if net.config.in_chans != old.in_chans:
            self.swap_failures += 1
            raise CheckpointError(
                f"checkpoint {path} takes {net.config.in_chans}-channel frames, the running "
                f"network {old.in_chans}-channel ones")
        try:
            new_net, runner = self._prepare(net)
            frames, events = new_net.example_inputs(32, 32, device=self.device, dtype=self.dtype)
            with torch.inference_mode():
                out = runner(frames, events)
            if not bool(torch.isfinite(out.background).all()):
                raise CheckpointError(f"checkpoint {path} gives non-finite output")
        except CheckpointError:
            self.swap_failures += 1
            raise
        except Exception as err:
            self.swap_failures += 1
            raise CheckpointError(f"checkpoint {path} does not run: {err}") from err
        with self._lock:
            if net.config.event_bins != old.event_bins or net.config.use_events != old.use_events:
                self._history.clear()  # stored voxel grids no longer fit
            self._net, self._runner = new_net, runner
            self.random_weights = False
            self.source = str(path)
            self.swaps += 1
        _log.info("switched to checkpoint %s (%s)", path, net.config.name)

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
            net, runner = self._net, self._runner
        frames, events = net.example_inputs(height, width, device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            for _ in range(max(1, runs)):
                runner(frames, events)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def reset(self) -> None:
        """Forget the frame history (a new stream)."""
        with self._lock:
            self._history.clear()

    def _frame_tensor(self, window: FrameWindow, in_chans: int) -> Tensor:
        img = window.image.to_network()  # H x W x C float32 [0, 1]
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if t.shape[0] != in_chans:
            t = t.mean(0, keepdim=True) if in_chans == 1 else t.expand(in_chans, -1, -1)
        return t.to(device=self.device, dtype=self.dtype)

    def _voxel(self, window: FrameWindow, bins: int, height: int, width: int) -> Tensor:
        if window.events_missing or not len(window.events):
            return torch.zeros(bins, height, width, device=self.device, dtype=self.dtype)
        normalize = "meanstd" if "meanstd" in self._net.config.voxel_normalization else "none"
        grid = voxel_grid(window.events, window.t0_ns, window.t_ns, bins, normalize=normalize)
        grid = torch.as_tensor(grid)
        if tuple(grid.shape[-2:]) != (height, width):
            grid = F.interpolate(grid[None].float(), size=(height, width), mode="bilinear",
                                 align_corners=False)[0]
        return grid.to(device=self.device, dtype=self.dtype)

    def process(self, window: FrameWindow) -> EngineResult | None:
        """Derain one window's frame (``centre``: the previous window's; None at the start).

        Raises :class:`ModelError` when the network fails on this input (e.g. a frame of a
        size it cannot take); the history is left as it was.
        """
        t_start = time.perf_counter()
        with self._lock:
            if window.t_prev_ns is None:  # a new stream (start, clock reset)
                self._history.clear()
            net, runner = self._net, self._runner
            history = list(self._history)
        cfg = net.config
        frame = self._frame_tensor(window, cfg.in_chans)
        height, width = frame.shape[-2:]
        if history and tuple(history[-1].frame.shape) != tuple(frame.shape):
            history = []  # the frame size changed: a new stream
        t_prep = time.perf_counter()
        voxel = self._voxel(window, cfg.event_bins, height, width) if cfg.use_events else None
        step = _Step(window, frame, voxel, frames_only=voxel is None or window.events_missing)
        t_vox = time.perf_counter()
        if self.arrangement == "causal":
            prev = history[-1].frame if history else frame
            target = step
            frames_in = (prev, frame)
            voxels_in: tuple[Tensor | None, ...] = (voxel,)
            frames_only = step.frames_only
        else:
            if not history:
                with self._lock:
                    self._history.append(step)
                return None
            target = history[-1]
            before = history[-2].frame if len(history) > 1 else target.frame
            frames_in = (before, target.frame, frame)
            voxels_in = (target.voxel, voxel)
            frames_only = target.frames_only or step.frames_only
        try:
            clip, ev = build_clip(frames_in, voxels_in, self.arrangement)
            with torch.inference_mode():
                out = runner(clip[None], None if ev is None else ev[None])
                background = out.background[0].float().clamp_(0.0, 1.0)
                rain = out.rain[0].float().clamp_(0.0, 1.0) if self.want_rain else None
                derained = background.permute(1, 2, 0).cpu().numpy()
                rain_np = rain.permute(1, 2, 0).cpu().numpy() if rain is not None else None
        except ModelError:
            raise
        except RuntimeError as err:
            raise ModelError(f"inference failed on a {width}x{height} frame: {err}") from err
        t_inf = time.perf_counter()
        if not np.isfinite(derained).all():
            derained = np.nan_to_num(derained, nan=0.0, posinf=1.0, neginf=0.0)
        ev_img = None
        if self.want_events_image:
            ev_img = events_image(target.window.events, int(height), int(width))
        with self._lock:
            self._history.append(step)
        t_end = time.perf_counter()
        timings = {
            "prepare": (t_prep - t_start) * 1e3, "voxel": (t_vox - t_prep) * 1e3,
            "infer": (t_inf - t_vox) * 1e3, "total": (t_end - t_start) * 1e3,
        }
        return EngineResult(target.window, derained, rain_np, ev_img, frames_only, timings,
                            self.model_name)
