"""The event-guided video deraining network (ICCV 2023 design, written from its description).

Data flow, for a clip of 3 frames (centre = target) and the 2 voxel grids between them:

1. heads: a grouped conv per frame and per voxel grid (strided onto a half-resolution
   working grid when ``internal_scale`` is 2; the voxels are first compressed by
   :func:`compress_events`);
2. temporal fusion: event features gate the neighbour frames' features, then one conv
   fuses the 3 frames (:class:`~derain_ros.model.blocks.TemporalFusion`);
3. asymmetric separation: two frame U-Net encoders (rain, background) on the fused
   feature; one event encoder whose per-scale features are split by a refinement into
   event rain and event background = event - event rain;
4. cross-modal fusion at each of the 3 scales (positive enhancement, negative suppression);
5. two U-Net decoders: the rain layer ``R`` and a correction ``D`` of the centre frame,
   giving the background ``B = centre + D`` (with ``internal_scale`` 2 the decoders
   end in depth-to-space, so ``R`` and ``D`` have full-resolution detail).

``B`` is a residual of the centre frame so that a fresh network starts at "output =
input" and learning only has to remove the rain. ``B`` and ``R`` are *not* clamped
(clamping kills gradients; the reconstruction loss ``L1(R + B, rainy)`` needs both
raw); clamp ``B`` to [0, 1] for display (the engine and the ONNX export do).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain_ros.errors import ModelError
from derain_ros.model.blocks import (
    CrossModalFusion,
    Decoder,
    Encoder,
    EventRainRefine,
    TemporalFusion,
    act,
    conv3x3,
)
from derain_ros.model.config import ModelConfig
from derain_ros.model.contract import InputContract

#: Frames per clip (previous, centre, next) and voxel grids per clip (the 2 intervals).
CLIP_FRAMES = 3
CLIP_INTERVALS = 2


def compress_events(voxels: Tensor) -> Tensor:
    """Signed square-root-like compression ``v / sqrt(1 + |v|)`` of voxel values.

    Near-linear for small counts, ~``sign(v) * sqrt(|v|)`` for large ones (a dense rain
    burst, a sensor with a higher event rate), so weights trained at one event rate
    transfer to another. Chosen over ``asinh``/``log1p`` (similar curves) because those
    are 2-20x slower on CPU (``asinh`` ~25 ms per 346x260 clip, this ~1.5 ms).
    """
    return voxels * torch.rsqrt(1.0 + torch.abs(voxels))


def _head_conv(cin: int, cout: int, scale: int, groups: int) -> nn.Conv2d:
    """Grouped head conv (one group per frame or interval) onto the working grid."""
    if scale == 1:
        return conv3x3(cin, cout, groups=groups)
    return nn.Conv2d(cin, cout, scale + 2, stride=scale, padding=1, groups=groups)


class ModelInputError(ModelError):
    """The tensors given to the network have the wrong rank, shape or presence."""


class ScaleFeatures(NamedTuple):
    """Encoder features at one scale, for the cross-modal contrastive losses.

    All four are ``[N, widths[s], Hp / (internal_scale * 2**s), Wp / (...)]`` on the
    padded grid (``Hp``, ``Wp``: H, W rounded up to ``config.pad_multiple``).
    """

    frame_rain: Tensor
    frame_background: Tensor
    event_rain: Tensor
    event_background: Tensor


class DerainOutput(NamedTuple):
    """What :meth:`DerainNet.forward` returns.

    Attributes:
        background: ``B`` [N, C, H, W], the derained centre frame; unclamped.
        rain: ``R`` [N, C, H, W], the rain layer; unclamped. ``R + B`` should
            reconstruct the rainy centre frame.
        features: one :class:`ScaleFeatures` per scale (full, 1/2, 1/4 of the working
            grid), or None for a frames-only network.
    """

    background: Tensor
    rain: Tensor
    features: tuple[ScaleFeatures, ...] | None


class DerainNet(nn.Module):
    """Event-guided deraining network; build it with :func:`derain_ros.model.create_model`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        #: How this network's inputs are prepared (timm's ``pretrained_cfg``): the default
        #: for a fresh network, replaced by the checkpoint's when weights are loaded.
        self.input_contract = InputContract.for_config(config)
        c, s, h = config.in_chans, config.internal_scale, config.head_chans
        w, r = config.widths, config.reduction
        # Per-frame head: grouped conv, one group per frame of the clip; with
        # internal_scale s > 1 it is strided (kernel s + 2 sees every input pixel).
        self.frame_head = nn.Sequential(
            _head_conv(CLIP_FRAMES * c, CLIP_FRAMES * h, s, CLIP_FRAMES), act()
        )
        self.temporal = TemporalFusion(h, config.gate_kernels, config.use_events)
        self.rain_encoder = Encoder(h, w, config.blocks, r)
        self.background_encoder = Encoder(h, w, config.blocks, r)
        if config.use_events:
            bins = config.event_bins
            self.event_head = nn.Sequential(
                _head_conv(CLIP_INTERVALS * bins, CLIP_INTERVALS * h, s, CLIP_INTERVALS), act()
            )
            self.event_encoder = Encoder(CLIP_INTERVALS * h, w, config.blocks, r)
            self.event_refine = nn.ModuleList(
                EventRainRefine(width, config.refine_blocks, r) for width in w
            )
        self.fusion = nn.ModuleList(CrossModalFusion(width, config.fusion_blocks, r) for width in w)
        self.rain_decoder = Decoder(w, config.decoder_depths, r, c * s * s)
        self.background_decoder = Decoder(w, config.decoder_depths, r, c * s * s)

    # -- helpers -------------------------------------------------------------------
    def _check_inputs(self, frames: Tensor, events: Tensor | None) -> None:
        cfg = self.config
        if frames.dim() != 5 or frames.shape[1] != CLIP_FRAMES or frames.shape[2] != cfg.in_chans:
            raise ModelInputError(
                f"{cfg.name}: frames must be [N, {CLIP_FRAMES}, {cfg.in_chans}, H, W], "
                f"got {list(frames.shape)}"
            )
        if not cfg.use_events:
            if events is not None:
                raise ModelInputError(
                    f"{cfg.name} is a frames-only network: pass events=None "
                    f"(use the {cfg.name.removesuffix('_frames')} model for events)"
                )
            return
        if events is None:
            raise ModelInputError(
                f"{cfg.name} needs events: [N, {CLIP_INTERVALS}, {cfg.event_bins}, H, W] voxel "
                "grids (use a *_frames model for frames only)"
            )
        expected = (frames.shape[0], CLIP_INTERVALS, cfg.event_bins, *frames.shape[3:])
        if tuple(events.shape) != expected:
            raise ModelInputError(
                f"{cfg.name}: events must be {list(expected)} (N, intervals, bins, H, W), "
                f"got {list(events.shape)}"
            )

    def _head(self, head: nn.Sequential, x: Tensor) -> Tensor:
        """Apply a head to ``[N, K, H, W]``, giving features padded to the working grid.

        Padding (edge replicate, bottom and right) is split in two: at full resolution
        only up to a multiple of ``internal_scale`` (none for even sizes), the rest on
        the 4x smaller feature map; full-resolution passes dominate the CPU cost of the
        tiny network's input. The head conv runs in channels-last layout (2-3x faster
        on CPU for these few-channel, large inputs; what cuDNN prefers for fp16 too);
        the result comes back in the layout of the head's weights, so an NCHW network
        stays NCHW and a channels-last network stays channels-last. The ``if`` s depend
        on shapes only, never on values (``torch.compile`` guards on shapes).
        """
        s = self.config.internal_scale
        height, width = x.shape[-2:]
        pad_h, pad_w = (s - height % s) % s, (s - width % s) % s
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y: Tensor = head(x.contiguous(memory_format=torch.channels_last))
        # (cast: torch types a submodule's attribute as Tensor | Module)
        weight = cast(Tensor, head[0].weight)
        if not weight.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous()
        m = self.config.pad_multiple // s
        pad_h, pad_w = (m - y.shape[-2] % m) % m, (m - y.shape[-1] % m) % m
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
        return y

    def _from_grid(self, x: Tensor, height: int, width: int) -> Tensor:
        s = self.config.internal_scale
        if s > 1:
            x = F.pixel_shuffle(x, s)
        return x[:, :, :height, :width]

    # -- forward -------------------------------------------------------------------
    def forward(self, frames: Tensor, events: Tensor | None = None) -> DerainOutput:
        """Derain the centre frame of each clip.

        Args:
            frames: ``[N, 3, C, H, W]`` float in [0, 1]: previous, centre (target), next.
            events: ``[N, 2, bins, H, W]`` voxel grids of the intervals previous->centre
                and centre->next (prepared as ``self.input_contract`` says; the network
                squashes them by ``v / sqrt(1 + |v|)`` itself), or None for a
                frames-only network. Any H, W: padded internally, cropped back.

        Returns:
            :class:`DerainOutput` (background, rain, features).
        """
        self._check_inputs(frames, events)
        cfg = self.config
        n, t, c, height, width = frames.shape
        centre = frames[:, 1]
        frame_feats = self._head(self.frame_head, frames.reshape(n, t * c, height, width))

        event_feats = None
        if cfg.use_events and events is not None:
            flat_events = events.reshape(n, CLIP_INTERVALS * cfg.event_bins, height, width)
            # Channels-last before the element-wise ops: one layout copy, not two.
            voxels = compress_events(flat_events.contiguous(memory_format=torch.channels_last))
            event_feats = self._head(self.event_head, voxels)

        fused = self.temporal(frame_feats, event_feats)
        frame_rain = self.rain_encoder(fused)
        frame_bg = self.background_encoder(fused)

        event_levels = None if event_feats is None else self.event_encoder(event_feats)
        rain_feats, bg_feats, scales = [], [], []
        for level, fusion in enumerate(self.fusion):
            ev_rain = ev_bg = None
            if event_levels is not None:
                ev_rain, ev_bg = self.event_refine[level](event_levels[level])
                scales.append(ScaleFeatures(frame_rain[level], frame_bg[level], ev_rain, ev_bg))
            r_feat, b_feat = fusion(frame_rain[level], frame_bg[level], ev_rain, ev_bg)
            rain_feats.append(r_feat)
            bg_feats.append(b_feat)
        features = tuple(scales) if event_levels is not None else None

        # Outputs in the frames' dtype (under autocast the decoders give fp16/bf16).
        rain = self._from_grid(self.rain_decoder(rain_feats), height, width).to(frames.dtype)
        correction = self._from_grid(self.background_decoder(bg_feats), height, width)
        background = centre + correction.to(frames.dtype)
        return DerainOutput(background=background, rain=rain, features=features)

    # -- conveniences ----------------------------------------------------------------
    def example_inputs(self, height: int, width: int, batch: int = 1, *,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> tuple[Tensor, Tensor | None]:
        """Random ``(frames, events)`` of the right shapes (events None for frames-only)."""
        gen = torch.Generator().manual_seed(seed)
        cfg = self.config
        frames = torch.rand(batch, CLIP_FRAMES, cfg.in_chans, height, width, generator=gen)
        events = None
        if cfg.use_events:
            shape = (batch, CLIP_INTERVALS, cfg.event_bins, height, width)
            events = torch.randn(shape, generator=gen)
        frames = frames.to(device=device, dtype=dtype)
        events = None if events is None else events.to(device=device, dtype=dtype)
        return frames, events

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"name={self.config.name!r}, use_events={self.config.use_events}"


__all__ = [
    "CLIP_FRAMES",
    "CLIP_INTERVALS",
    "DerainNet",
    "DerainOutput",
    "ModelInputError",
    "ScaleFeatures",
    "compress_events",
]
