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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from derain_ros.model.contract import InputContract, InputContractError

if TYPE_CHECKING:  # the voxel kernels (numba) load when a grid is first made
    from derain_ros.events.voxel import Normalize
    from derain_ros.records import EventBatch
    from derain_ros.sync import FrameWindow

__all__ = ["CLIP_TARGET", "InputBuilder", "build_clip", "mirror_voxel"]

#: Position of the target frame in the 3-frame clip, in every arrangement.
CLIP_TARGET = 1


def mirror_voxel(voxel: Tensor) -> Tensor:
    """The voxel grid of the same events with time reversed: bins flipped, sign negated.

    ``voxel`` is ``[..., bins, H, W]`` (signed polarity sums).
    """
    return -torch.flip(voxel, dims=(-3,))


def build_clip(frames: Sequence[Tensor], voxels: Sequence[Tensor | None],
               arrangement: str) -> tuple[Tensor, Tensor | None]:
    """Stack prepared neighbours into the network input (no batch dimension).

    Args:
        frames: ``causal``: ``(f_prev, f_t)``; ``centre``: ``(f_prev, f_t, f_next)``.
        voxels: ``causal``: ``(V_t,)``; ``centre``: ``(V_t, V_next)``; None entries for a
            frames-only network.
        arrangement: ``causal`` or ``centre``.

    Returns:
        ``frames [3, C, H, W]`` and ``events [2, bins, H, W]`` (None without voxels).
    """
    if arrangement == "causal":
        if len(frames) != 2 or len(voxels) != 1:
            raise InputContractError(
                "a causal clip takes 2 frames (previous, target) and 1 voxel grid")
        prev, cur = frames
        v = voxels[0]
        return torch.stack([prev, cur, prev]), (
            None if v is None else torch.stack([v, mirror_voxel(v)]))
    if arrangement == "centre":
        if len(frames) != 3 or len(voxels) != 2:
            raise InputContractError("a centre clip takes 3 frames and 2 voxel grids")
        va, vb = voxels
        return torch.stack(list(frames)), (
            None if va is None or vb is None else torch.stack([va, vb]))
    raise InputContractError(f"unknown arrangement {arrangement!r}; allowed: causal, centre")


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

    def _rounded(self, array: np.ndarray) -> np.ndarray:
        """``array`` as float32 holding values of the contract's precision.

        torch's conversion, not numpy's: it gives the same bits (IEEE round to nearest
        even) several times faster, which matters on the node's per-frame path.
        """
        out = np.ascontiguousarray(array, dtype=np.float32)
        if self._round is None:
            return out
        return torch.from_numpy(out).to(torch.float16).to(torch.float32).numpy()

    def frame(self, image: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` float32 from an H x W (x C) float32 image in [0, 1]."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise InputContractError(
                f"a frame must be H x W x 1 or H x W x 3, got shape {img.shape}")
        want = self.contract.frame_channels
        if img.shape[2] != want:
            img = (np.repeat(img, want, axis=2) if img.shape[2] == 1
                   else img.mean(axis=2, dtype=np.float32, keepdims=True))
        return self._rounded(img.transpose(2, 0, 1))

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
        # (the contract checked voxel_normalize against VOXEL_NORMALIZATIONS)
        from derain_ros.events.voxel import voxel_grid

        grid = voxel_grid(events, t0_ns, t1_ns, c.event_bins,
                          normalize=cast("Normalize", c.voxel_normalize))
        if tuple(grid.shape[-2:]) != (height, width):
            grid = F.interpolate(grid[None], size=(height, width), mode="bilinear",
                                 align_corners=False)[0]
        return self._rounded(grid.numpy())

    def window(self, window: FrameWindow) -> tuple[np.ndarray, np.ndarray | None]:
        """A synchronised window's prepared frame and voxel grid (``(frame, voxel)``).

        The events count only when the window has them (``events_missing``: the event
        camera was silent, so zeros: the frames-only fallback).
        """
        frame = self.frame(window.image.to_network())
        events = None if window.events_missing else window.events
        return frame, self.voxel(events, window.t0_ns, window.t_ns, int(frame.shape[1]),
                                 int(frame.shape[2]))

    def clip_at(self, frames: Sequence[Tensor], voxels: Sequence[Tensor | None],
                t: int) -> tuple[Tensor, Tensor | None]:
        """The clip whose target is window ``t`` of prepared windows ``frames``/``voxels``.

        ``frames[i]``/``voxels[i]`` are window ``i`` (tensors as :meth:`frame` and
        :meth:`voxel` made them, on any device). ``causal`` uses windows ``t-1, t``;
        ``centre`` uses ``t-1, t, t+1``. A missing ``t-1`` (``t == 0``) is replaced by the
        target frame.
        """
        if not 0 <= t < len(frames) or len(voxels) != len(frames):
            raise InputContractError(
                f"clip target {t} is outside the {len(frames)} prepared windows")
        prev = frames[t - 1] if t > 0 else frames[t]
        if self.contract.arrangement == "causal":
            return build_clip((prev, frames[t]), (voxels[t],), "causal")
        if t + 1 >= len(frames):
            raise InputContractError("a centre clip needs the window after its target")
        return build_clip((prev, frames[t], frames[t + 1]), (voxels[t], voxels[t + 1]),
                          "centre")
