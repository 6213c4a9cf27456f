"""Training clips straight from rosbags, through the node's own sync and input builder.

A bag is read once with :func:`derain_ros.sync.windows_from_bag` (decode + sync, the
same code the node runs) and each window is prepared by the
:class:`~derain_ros.model.InputBuilder` of the network's
:class:`~derain_ros.model.InputContract` (the engine's own builder); the result is cached
on disk (``.npy`` arrays, memory-mapped when read back) under a key made of the bag's
path, size and modification time, the topics and the whole contract, so later epochs
and runs never decode again and a cache written with another contract is never reused.
Cached values are in the contract's precision (float16 by default: the builder rounds
to it, so the cache holds exactly what the node would hand the network).

A *clip* starting at frame ``s`` covers windows ``s, s+1, s+2`` (time order; window ``i``
holds frame ``i`` and the events since frame ``i-1``). The network input is assembled by
:meth:`InputBuilder.clip_at`, the node's own code, in the contract's arrangement:
``causal`` (the node's default) derains frame ``s+2`` from windows ``s+1, s+2``;
``centre`` derains frame ``s+1`` from all three.
Samples are random crops with flips drawn from a generator seeded by
``(seed, epoch, index)``, so every rank, worker and a resumed run sees the same data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from derain_ros import sync as _sync
from derain_ros.errors import SyncError
from derain_ros.model import InputBuilder, InputContract
from derain_training.config import DataConfig
from derain_training.errors import DatasetError, TrainConfigError

__all__ = [
    "CACHE_VERSION",
    "BagArrays",
    "CleanFramePool",
    "ClipDataset",
    "DecodeSettings",
    "load_bag",
]

_log = logging.getLogger(__name__)

#: Bump when the cached layout or its meaning changes (old caches are then ignored).
CACHE_VERSION = 2
#: Frames and voxel grids per clip.
CLIP_FRAMES = 3


@dataclass(frozen=True)
class DecodeSettings:
    """What the cached arrays of a bag depend on (besides the bag file itself)."""

    image_topic: str
    event_topic: str
    clean_topic: str
    rain_topic: str
    contract: InputContract
    max_frames: int | None = None

    @classmethod
    def from_config(cls, cfg: DataConfig, contract: InputContract) -> DecodeSettings:
        """Settings of a :class:`DataConfig` for a network of ``contract``."""
        return cls(cfg.image_topic, cfg.event_topic, cfg.clean_topic, cfg.rain_topic,
                   contract, cfg.max_frames)


@dataclass
class BagArrays:
    """The decoded content of one bag.

    Attributes:
        path: the bag.
        frames: ``[T, C, H, W]`` prepared frames (the contract's channels and precision).
        voxels: ``[T, bins, H, W]`` prepared voxel grids: window ``i`` holds the events
            between frame ``i-1`` and frame ``i``; None for a frames-only contract.
        clean, rain: ground truth ``[T, C, H, W]`` (None when the bag has none).
        stamps: ``[T]`` int64 frame times in sensor time (ns).
        events: total events in the windows (0: the bag has no usable events).
        from_cache: True when read from the cache (no decoding happened).
    """

    path: Path
    frames: np.ndarray
    voxels: np.ndarray | None
    clean: np.ndarray | None
    rain: np.ndarray | None
    stamps: np.ndarray
    events: int
    from_cache: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in px."""
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    @property
    def num_frames(self) -> int:
        """Frames in the bag."""
        return int(self.frames.shape[0])


def _cache_key(path: Path, settings: DecodeSettings) -> str:
    st = path.stat()
    if path.is_dir():  # a rosbag2 folder: its files decide
        parts = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                       for p in path.iterdir() if p.is_file())
    else:
        parts = [(path.name, st.st_size, st.st_mtime_ns)]
    blob = json.dumps({"v": CACHE_VERSION, "path": str(path), "files": parts,
                       "settings": dataclasses.asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def decode_bag(path: Path, settings: DecodeSettings, *, progress: bool = True) -> BagArrays:
    """Decode, synchronise and prepare a bag (no cache). See :func:`load_bag`."""
    builder = InputBuilder(settings.contract)
    store = builder.store_dtype
    frames: list[np.ndarray] = []
    voxels: list[np.ndarray] = []
    truth: dict[str, list[np.ndarray]] = {settings.clean_topic: [], settings.rain_topic: []}
    stamps: list[int] = []
    n_events = 0
    shape: tuple[int, ...] | None = None
    windows = _sync.windows_from_bag(path, settings.image_topic, settings.event_topic,
                                     extra_topics=(settings.clean_topic, settings.rain_topic))
    try:
        for w in tqdm(windows, desc=f"decode {path.name}", unit="frame", leave=False,
                      disable=not progress):
            frame, grid = builder.window(w)
            if shape is None:
                shape = frame.shape  # (C, H, W)
            elif frame.shape != shape:
                raise DatasetError(
                    f"{path}: frame {w.index} is {w.image.width}x{w.image.height} px, earlier "
                    f"frames are {shape[2]}x{shape[1]}: mismatched resolutions inside one bag")
            _, h, wd = shape
            n_events += len(w.events)
            if grid is not None:
                voxels.append(grid.astype(store))
            frames.append(frame.astype(store))
            stamps.append(int(w.t_ns))
            for topic, kept in truth.items():
                gt = w.extras.get(topic)
                if gt is None:
                    continue
                if (gt.height, gt.width) != (h, wd):
                    raise DatasetError(
                        f"{path}: {topic} image is {gt.width}x{gt.height} px but frames "
                        f"are {wd}x{h}: mismatched resolutions")
                kept.append(builder.frame(gt.to_network()).astype(store))
            if settings.max_frames and len(frames) >= settings.max_frames:
                break
    except SyncError as err:
        raise DatasetError(f"{path} cannot be used for training: {err}") from err
    if not frames:
        raise DatasetError(f"{path}: no frames on {settings.image_topic!r}")
    stacked: dict[str, np.ndarray | None] = {}
    for topic, kept in truth.items():
        if kept and len(kept) != len(frames):
            _log.warning("%s: %s covers %d of %d frames: ignored", path, topic, len(kept),
                         len(frames))
        stacked[topic] = np.stack(kept) if len(kept) == len(frames) else None
    return BagArrays(path, np.stack(frames), np.stack(voxels) if voxels else None,
                     stacked[settings.clean_topic], stacked[settings.rain_topic],
                     np.asarray(stamps, np.int64), n_events)


_ARRAYS = ("frames", "voxels", "clean", "rain", "stamps")


def _write_cache(target: Path, arrays: BagArrays, settings: DecodeSettings) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in _ARRAYS:
            value = getattr(arrays, name)
            if value is not None:
                np.save(tmp / f"{name}.npy", value)
        (tmp / "meta.json").write_text(json.dumps(
            {"version": CACHE_VERSION, "bag": str(arrays.path), "events": arrays.events,
             "input_contract": settings.contract.to_dict()}))
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(target: Path, path: Path, settings: DecodeSettings) -> BagArrays | None:
    """The cached arrays, or None when absent, unreadable or prepared another way."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        if meta.get("input_contract") != settings.contract.to_dict():
            _log.info("%s: cache prepared with another input contract: rebuilding", path)
            return None
        loaded = {name: np.load(target / f"{name}.npy", mmap_mode="r")
                  if (target / f"{name}.npy").is_file() else None for name in _ARRAYS}
    except (OSError, ValueError):
        return None
    if loaded["frames"] is None or loaded["stamps"] is None or (
            settings.contract.use_events and loaded["voxels"] is None):
        return None
    return BagArrays(path, loaded["frames"], loaded["voxels"], loaded["clean"], loaded["rain"],
                     np.asarray(loaded["stamps"]), int(meta["events"]), from_cache=True)


def load_bag(path: str | Path, settings: DecodeSettings, cache_dir: str | Path | None, *,
             progress: bool = True) -> BagArrays:
    """A bag's arrays, from the cache when present, else decoded (and cached).

    Raises :class:`DatasetError` for a missing bag, a bag without frames, or
    resolutions that do not match (frames vs events vs ground truth).
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DatasetError(f"bag {p} not found")
    if cache_dir is None:
        return decode_bag(p, settings, progress=progress)
    target = Path(cache_dir).expanduser() / _cache_key(p, settings)
    cached = _read_cache(target, p, settings)
    if cached is not None:
        return cached
    arrays = decode_bag(p, settings, progress=progress)
    _write_cache(target, arrays, settings)
    fresh = _read_cache(target, p, settings)  # memory-mapped, like every later read
    return arrays if fresh is None else dataclasses.replace(fresh, from_cache=False)


def _crop_origin(rng: np.random.Generator, size: tuple[int, int], crop: int) -> tuple[int, int]:
    h, w = size
    if crop <= 0:
        return 0, 0
    return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))


class CleanFramePool:
    """Unpaired clean frames from other recordings: the "real" side of the GAN prior.

    From each bag the ground-truth clean topic is used when present, else its frames
    (a recording without rain).
    """

    def __init__(self, bags: Sequence[BagArrays]) -> None:
        if not bags:
            raise TrainConfigError("the adversarial prior needs clean frames: set data.clean_bags")
        self.images = [b.clean if b.clean is not None else b.frames for b in bags]
        self.count = sum(int(i.shape[0]) for i in self.images)

    def sample(self, rng: np.random.Generator, crop: int, size: tuple[int, int]) -> np.ndarray:
        """A random clean crop ``[C, crop, crop]`` (``size`` (H, W) when crop is 0)."""
        k = int(rng.integers(0, len(self.images)))
        src = self.images[k]
        i = int(rng.integers(0, src.shape[0]))
        h, w = src.shape[2], src.shape[3]
        ch, cw = (crop, crop) if crop > 0 else size
        if ch > h or cw > w:
            raise DatasetError(f"clean frames of {w}x{h} px are smaller than the {cw}x{ch} crop")
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return np.asarray(src[i, :, y0:y0 + ch, x0:x0 + cw], dtype=np.float32)


class ClipDataset(Dataset):
    """3-frame clips (+ 2 voxel grids, + ground truth) from one or more bags.

    Args:
        bags: bag paths (mcap/sqlite3 files or rosbag2 folders).
        cfg: the ``data`` section of the training config.
        contract: the network's input contract (bins, arrangement, normalisation,
            channels, frames-only): inputs are prepared by its :class:`InputBuilder`.
        require_truth: every bag must carry the clean (and rain) ground truth.
        crop: square crop (px); None takes ``cfg.crop``; 0 gives full frames.
        augment: random crops and flips (False: the top-left crop, no flips).
        seed: seeds the per-sample generators (with the epoch and the index).
        clean_bags: bags of unpaired clean frames (adds ``unpaired`` to each sample).
        max_clips: keep this many clips, evenly spread (validation).
        progress: tqdm bars while decoding.

    Each sample is a dict of float32 tensors: ``frames [3, C, h, w]``, ``events
    [2, bins, h, w]`` (event networks), ``clean`` and ``rain`` ``[C, h, w]`` when the bags
    have ground truth, ``unpaired [C, h, w]`` with ``clean_bags``, ``pseudo_background`` and
    ``other_rain`` after :meth:`set_pseudo_labels`, and ``index``.
    """

    def __init__(self, bags: Sequence[str | Path], cfg: DataConfig, *,
                 contract: InputContract, require_truth: bool = False, crop: int | None = None,
                 augment: bool = True, seed: int = 0, clean_bags: Sequence[str | Path] = (),
                 max_clips: int | None = None, progress: bool = True) -> None:
        if not bags:
            raise TrainConfigError("no training bags given (--bags)")
        self.cfg = cfg
        self.contract = contract
        self.builder = InputBuilder(contract)
        self.settings = DecodeSettings.from_config(cfg, contract)
        self.crop = cfg.crop if crop is None else int(crop)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.use_events = contract.use_events
        cache = cfg.cache_dir or None
        self.bags = [load_bag(b, self.settings, cache, progress=progress) for b in bags]
        self.decoded = sum(not b.from_cache for b in self.bags)
        for b in self.bags:
            self._check_bag(b, require_truth)
        sizes = {b.size for b in self.bags}
        if self.crop == 0 and len(sizes) > 1:
            raise DatasetError(
                "full-frame clips from bags of different resolutions cannot be batched: "
                + ", ".join(f"{b.path.name} {b.size[1]}x{b.size[0]}" for b in self.bags))
        chans = {b.frames.shape[1] for b in self.bags}
        if len(chans) > 1:
            raise DatasetError(f"bags mix colour and grey frames (channels {sorted(chans)})")
        self.chans = chans.pop()
        self.has_truth = all(b.clean is not None for b in self.bags)
        self.has_rain = all(b.rain is not None for b in self.bags)
        stride = cfg.clip_stride
        self.clips = [(k, s) for k, b in enumerate(self.bags)
                      for s in range(0, b.num_frames - CLIP_FRAMES + 1, stride)]
        if max_clips is not None and len(self.clips) > max_clips:
            pick = np.linspace(0, len(self.clips) - 1, max_clips).round().astype(int)
            self.clips = [self.clips[i] for i in pick]
        if not self.clips:
            raise DatasetError(f"the bags give no {CLIP_FRAMES}-frame clip (too few frames)")
        self.pool: CleanFramePool | None = None
        if clean_bags:
            own = {b.path for b in self.bags}
            clean = [load_bag(b, self.settings, cache, progress=progress) for b in clean_bags]
            overlap = [str(c.path) for c in clean if c.path in own]
            if overlap:
                raise TrainConfigError(
                    f"data.clean_bags must be other recordings than the training bags: {overlap}")
            self.decoded += sum(not c.from_cache for c in clean)
            self.pool = CleanFramePool(clean)
        self._pseudo_bg: list[np.ndarray] | None = None
        self._pseudo_rain: list[np.ndarray] | None = None

    def _check_bag(self, b: BagArrays, require_truth: bool) -> None:
        if self.use_events and b.events == 0:
            raise DatasetError(
                f"{b.path}: no events on {self.settings.event_topic!r}; an event network needs "
                "them (train a *_frames model for frames-only bags)")
        if require_truth and b.clean is None:
            raise DatasetError(
                f"{b.path}: no ground truth on {self.settings.clean_topic!r}; supervised "
                "training and validation need synthetic bags with ground truth "
                "(use --mode unsupervised or online for real recordings)")
        if self.crop > 0 and min(b.size) < self.crop:
            raise DatasetError(
                f"{b.path}: frames of {b.size[1]}x{b.size[0]} px are smaller than the "
                f"{self.crop} px crop (data.crop)")

    # -- epoch / pseudo labels ----------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Reseeds the augmentation for ``epoch`` (call before each epoch's iterator)."""
        self.epoch = int(epoch)

    def set_pseudo_labels(self, background: Sequence[np.ndarray], rain: Sequence[np.ndarray],
                          ) -> None:
        """Full-frame targets per clip (online mode): ``[C, H, W]`` arrays in clip order."""
        if len(background) != len(self.clips) or len(rain) != len(self.clips):
            raise ValueError("one pseudo label per clip is needed")
        self._pseudo_bg, self._pseudo_rain = list(background), list(rain)

    # -- samples ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clips)

    def full_clip(self, index: int) -> dict[str, torch.Tensor]:
        """Clip ``index`` at full resolution without augmentation (batch dim added)."""
        k, s = self.clips[index]
        b = self.bags[k]
        out = self._arrays(b, s, (0, 0), b.size)
        return {key: torch.from_numpy(v)[None] for key, v in out.items()}

    def _arrays(self, b: BagArrays, s: int, origin: tuple[int, int], hw: tuple[int, int],
                ) -> dict[str, np.ndarray]:
        y0, x0 = origin
        ys, xs = slice(y0, y0 + hw[0]), slice(x0, x0 + hw[1])
        frames = [torch.from_numpy(np.asarray(f, np.float32))
                  for f in b.frames[s:s + CLIP_FRAMES, :, ys, xs]]
        voxels: list[torch.Tensor | None] = (
            [torch.from_numpy(np.asarray(v, np.float32))
             for v in b.voxels[s:s + CLIP_FRAMES, :, ys, xs]]
            if b.voxels is not None else [None] * CLIP_FRAMES)
        k = CLIP_FRAMES - 1 - int(self.builder.needs_next)  # the target within the clip
        t = s + k
        clip, events = self.builder.clip_at(frames, voxels, k)
        out = {"frames": clip.numpy()}
        if events is not None:
            out["events"] = events.numpy()
        if self.has_truth:
            assert b.clean is not None  # (has_truth: every bag has it)
            out["clean"] = np.asarray(b.clean[t, :, ys, xs], np.float32)
        if self.has_rain:
            assert b.rain is not None  # (has_rain: every bag has it)
            out["rain"] = np.asarray(b.rain[t, :, ys, xs], np.float32)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k, s = self.clips[index]
        b = self.bags[k]
        hw = (self.crop, self.crop) if self.crop > 0 else b.size
        origin = _crop_origin(rng, b.size, self.crop) if self.augment else (0, 0)
        out = self._arrays(b, s, origin, hw)
        if self._pseudo_bg is not None and self._pseudo_rain is not None:
            y0, x0 = origin
            out["pseudo_background"] = np.asarray(
                self._pseudo_bg[index][:, y0:y0 + hw[0], x0:x0 + hw[1]], np.float32)
            j = int(rng.integers(0, len(self.clips) - 1)) if len(self.clips) > 1 else 0
            j = j + 1 if len(self.clips) > 1 and j >= index else j  # another clip
            other = self._pseudo_rain[j]
            oy, ox = _crop_origin(rng, other.shape[1:], self.crop)
            out["other_rain"] = np.asarray(other[:, oy:oy + hw[0], ox:ox + hw[1]], np.float32)
        if self.pool is not None:
            out["unpaired"] = self.pool.sample(rng, self.crop, b.size)
        if self.augment:
            hflip = self.cfg.hflip and rng.random() < 0.5
            vflip = self.cfg.vflip and rng.random() < 0.5
            for key in out:
                if key in ("unpaired", "other_rain"):
                    continue  # independent images
                if hflip:
                    out[key] = out[key][..., ::-1]
                if vflip:
                    out[key] = out[key][..., ::-1, :]
        sample: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v))
                                  for k, v in out.items()}
        sample["index"] = int(index)
        return sample
