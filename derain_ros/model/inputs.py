"""The one input builder: decoded frames + event windows -> the network's tensors.

:class:`InputBuilder` is derived from a checkpoint's :class:`InputContract` and is the
only code that prepares network inputs. The engine (node, bag replay, ``derain-ros
run``), training data loading and caching, and the benchmarks all call it, so what the
network sees in use is bit for bit what it saw in training (a test checks this through
a real node).

Preparation happens per window, then clips are assembled from prepared windows:

- :meth:`InputBuilder.frame`: a frame as ``to_network`` gives it (H x W x C float32 in
  [0, 1], RGB or one channel) -> ``[C, H, W]`` float32 with the contract's channels
  (grey -> RGB by repetition, RGB -> grey by the mean), rounded to its precision.
- :meth:`InputBuilder.voxel`: the events of a window ``(t0, t1]`` ->
  ``[bins, H, W]`` float32 from :func:`derain_ros.events.voxel.voxel_grid` with the
  contract's normalisation, resized (bilinear) to the frame when the event sensor's size
  differs (a registered rig), zeros when the window has no events (the frames-only
  fallback), rounded to the precision; None for a frames-only network.
- :meth:`InputBuilder.window`: both of a synchronised window (``FrameWindow``).
- :meth:`InputBuilder.clip_at`: the 3-frame clip for target window ``t`` of a sequence
  of prepared windows, in the contract's arrangement:

  - ``causal`` (the node's default): the target is the *newest* frame ``f_t``, so no
    frame of latency is added. Clip ``(f_{t-1}, f_t, f_{t-1})`` with voxel grids
    ``(V_t, mirror(V_t))``: the sequence played back in time around ``f_t``.
    ``mirror(V) = -flip_bins(V)`` is exactly the voxel grid of the same events with time
    reversed, so the second interval is consistent with the third frame being ``f_{t-1}``.
  - ``centre`` (the paper's): clip ``(f_{t-1}, f_t, f_{t+1})`` with ``(V_t, V_{t+1})``;
    it needs the next window (one frame of latency).

  A missing previous neighbour (the first window of a stream) is replaced by the target
  frame itself.

No torch on this path: frames and voxel grids are numpy (the voxel grid from the numba
kernel, ``meanstd`` in numpy, float16 rounding by :func:`~derain_ros.model.half.
round_to_half_` in place), bit for bit what the torch path gave (tested), so a node on
the onnxruntime back-end never imports torch. :func:`build_clip`, :func:`mirror_voxel`
and :meth:`InputBuilder.clip_at` take numpy arrays or torch tensors (and return the
same kind). Only resizing a voxel grid to a differently sized frame (a registered rig)
imports torch, for its bilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from derain_ros.model.contract import InputContract, InputContractError

if TYPE_CHECKING:  # (the numba kernels load when a builder first prepares something)
    from torch import Tensor

    from derain_ros.records import EventBatch
    from derain_ros.sync import FrameWindow

#: numpy arrays or torch tensors (the clip helpers return the kind they are given)
Array = TypeVar("Array", np.ndarray, "Tensor")

__all__ = ["CLIP_TARGET", "InputBuilder", "build_clip", "build_clip_into", "mirror_voxel"]

#: Position of the target frame in the 3-frame clip, in every arrangement.
CLIP_TARGET = 1


def mirror_voxel(voxel: Array) -> Array:
    """The voxel grid of the same events with time reversed: bins flipped, sign negated.

    ``voxel`` is ``[..., bins, H, W]`` (signed polarity sums), numpy or torch.
    """
    if isinstance(voxel, np.ndarray):
        flipped: np.ndarray = np.negative(np.flip(voxel, axis=-3))
        return flipped
    import torch

    return -torch.flip(voxel, dims=(-3,))


def _stack(items: Sequence[Array]) -> Array:
    """``np.stack`` or ``torch.stack``, by the kind of the items."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(list(items))


def build_clip(frames: Sequence[Array], voxels: Sequence[Array | None],
               arrangement: str) -> tuple[Array, Array | None]:
    """Stack prepared neighbours into the network input (no batch dimension).

    Args:
        frames: ``causal``: ``(f_prev, f_t)``; ``centre``: ``(f_prev, f_t, f_next)``.
        voxels: ``causal``: ``(V_t,)``; ``centre``: ``(V_t, V_next)``; None entries for a
            frames-only network.
        arrangement: ``causal`` or ``centre``.

    Returns:
        ``frames [3, C, H, W]`` and ``events [2, bins, H, W]`` (None without voxels),
        numpy or torch as the inputs.
    """
    if arrangement == "causal":
        if len(frames) != 2 or len(voxels) != 1:
            raise InputContractError(
                "a causal clip takes 2 frames (previous, target) and 1 voxel grid")
        prev, cur = frames
        v = voxels[0]
        return _stack([prev, cur, prev]), (
            None if v is None else _stack([v, mirror_voxel(v)]))
    if arrangement == "centre":
        if len(frames) != 3 or len(voxels) != 2:
            raise InputContractError("a centre clip takes 3 frames and 2 voxel grids")
        va, vb = voxels
        return _stack(list(frames)), (
            None if va is None or vb is None else _stack([va, vb]))
    raise InputContractError(f"unknown arrangement {arrangement!r}; allowed: causal, centre")


def build_clip_into(frames: Sequence[np.ndarray], voxels: Sequence[np.ndarray | None],
                    arrangement: str, out_frames: np.ndarray, out_events: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`build_clip` for numpy, written into preallocated ``out_frames`` ``[3, C, H,
    W]`` and ``out_events`` ``[2, bins, H, W]`` (the node's per-frame path: one pass per
    value, no stacking copies); the same values bit for bit. Returns the two outputs
    (events None when the voxels are)."""
    if arrangement not in ("causal", "centre"):
        return build_clip(frames, voxels, arrangement)  # raises the usual error
    if len(frames) != (2 if arrangement == "causal" else 3) or len(voxels) != len(frames) - 1:
        return build_clip(frames, voxels, arrangement)
    seq = [frames[0], frames[1], frames[0]] if arrangement == "causal" else list(frames)
    for i, f in enumerate(seq):
        out_frames[i] = f
    if any(v is None for v in voxels) or out_events is None:
        return out_frames, None
    if arrangement == "causal":
        v = voxels[0]
        assert v is not None
        out_events[0] = v
        np.negative(np.flip(v, axis=-3), out=out_events[1])  # mirror_voxel, in place
    else:
        out_events[0] = voxels[0]
        out_events[1] = voxels[1]
    return out_frames, out_events


class InputBuilder:
    """Prepares frames, voxel grids and clips exactly as ``contract`` says.

    Args:
        contract: the checkpoint's :class:`InputContract`.
    """

    def __init__(self, contract: InputContract) -> None:
        self.contract = contract
        self._round = np.float16 if contract.precision == "float16" else None

    @property
    def needs_next(self) -> bool:
        """True when a clip needs the window after its target (``centre``)."""
        return self.contract.arrangement == "centre"

    @property
    def store_dtype(self) -> type[np.floating]:
        """The dtype that holds prepared values exactly (what a cache should store)."""
        return np.float16 if self._round is not None else np.float32

    def _rounded_(self, out: np.ndarray) -> np.ndarray:
        """``out`` (a float32 C-contiguous array this builder made) rounded in place to
        the contract's precision: float16 values as ``astype(float16)`` gives them (IEEE
        round to nearest even), in one pass without a copy (:func:`round_to_half_`)."""
        from derain_ros.model.half import round_to_half_

        return out if self._round is None else round_to_half_(out)

    def frame(self, image: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` float32 from an H x W (x C) float32 image in [0, 1]."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise InputContractError(
                f"a frame must be H x W x 1 or H x W x 3, got shape {img.shape}")
        want = self.contract.frame_channels
        if img.shape[2] != want and img.shape[2] == 3:
            img = img.mean(axis=2, dtype=np.float32, keepdims=True)
        out = np.empty((want, img.shape[0], img.shape[1]), np.float32)
        out[...] = img.transpose(2, 0, 1)  # one copy: layout (and grey -> RGB repetition)
        return self._rounded_(out)

    def voxel(self, events: EventBatch | None, t0_ns: int, t1_ns: int, height: int,
              width: int) -> np.ndarray | None:
        """``[bins, height, width]`` float32 of the events in ``(t0_ns, t1_ns]``.

        ``events`` None or empty gives zeros (no events reached this window). None is
        returned for a frames-only network.
        """
        c = self.contract
        if not c.use_events:
            return None
        if events is None or not len(events):
            return np.zeros((c.event_bins, height, width), np.float32)
        from derain_ros.events.voxel import normalize_meanstd_numpy, voxel_grid_numpy

        grid = voxel_grid_numpy(events, t0_ns, t1_ns, c.event_bins)
        if c.voxel_normalize == "meanstd":
            grid = normalize_meanstd_numpy(grid)
        elif c.voxel_normalize != "none":  # (the contract checked it already)
            raise InputContractError(f"unknown voxel normalisation {c.voxel_normalize!r}")
        if tuple(grid.shape[-2:]) != (height, width):
            import torch
            import torch.nn.functional as F

            grid = np.ascontiguousarray(F.interpolate(
                torch.from_numpy(grid)[None], size=(height, width), mode="bilinear",
                align_corners=False)[0].numpy())
        return self._rounded_(grid)

    def window(self, window: FrameWindow) -> tuple[np.ndarray, np.ndarray | None]:
        """A synchronised window's prepared frame and voxel grid (``(frame, voxel)``).

        The events count only when the window has them (``events_missing``: the event
        camera was silent, so zeros: the frames-only fallback).
        """
        frame = self.frame(window.image.to_network())
        events = None if window.events_missing else window.events
        return frame, self.voxel(events, window.t0_ns, window.t_ns, int(frame.shape[1]),
                                 int(frame.shape[2]))

    def clip_at(self, frames: Sequence[Array], voxels: Sequence[Array | None],
                t: int) -> tuple[Array, Array | None]:
        """The clip whose target is window ``t`` of prepared windows ``frames``/``voxels``.

        ``frames[i]``/``voxels[i]`` are window ``i`` (tensors as :meth:`frame` and
        :meth:`voxel` made them: numpy, or torch on any device). ``causal`` uses windows ``t-1, t``;
        ``centre`` uses ``t-1, t, t+1``. A missing ``t-1`` (``t == 0``) is replaced by the
        target frame.
        """
        prev, pick = self._neighbours(frames, voxels, t)
        if self.contract.arrangement == "causal":
            return build_clip((prev, frames[t]), (voxels[t],), "causal")
        return build_clip((prev, frames[t], frames[t + 1]), pick, "centre")

    def clip_into(self, frames: Sequence[np.ndarray], voxels: Sequence[np.ndarray | None],
                  t: int, out_frames: np.ndarray, out_events: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`clip_at` for numpy windows, into preallocated outputs
        (:func:`build_clip_into`)."""
        prev, pick = self._neighbours(frames, voxels, t)
        if self.contract.arrangement == "causal":
            return build_clip_into((prev, frames[t]), (voxels[t],), "causal", out_frames,
                                   out_events)
        return build_clip_into((prev, frames[t], frames[t + 1]), pick, "centre", out_frames,
                               out_events)

    def _neighbours(self, frames: Sequence[Array], voxels: Sequence[Array | None],
                    t: int) -> tuple[Array, tuple[Array | None, ...]]:
        """The previous frame of target ``t`` (itself at the start) and the voxel grids the
        arrangement uses; checks that they exist."""
        if not 0 <= t < len(frames) or len(voxels) != len(frames):
            raise InputContractError(
                f"clip target {t} is outside the {len(frames)} prepared windows")
        prev = frames[t - 1] if t > 0 else frames[t]
        if self.contract.arrangement == "causal":
            return prev, (voxels[t],)
        if t + 1 >= len(frames):
            raise InputContractError("a centre clip needs the window after its target")
        return prev, (voxels[t], voxels[t + 1])
