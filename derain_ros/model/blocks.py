"""Building blocks of the deraining network.

Plain ``nn.Module`` s built only from convolutions, element-wise ops, global average
pooling and depth/space shuffles, so that every block runs under autocast (fp16/bf16),
in channels-last layout, under ``torch.compile`` (no data-dependent Python branches)
and exports to ONNX. Written for this project from the ICCV 2023 paper's description
(see ``docs/background.md`` §1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Slope of the leaky ReLU used everywhere (cheap on CPU, no dead units at init).
NEG_SLOPE = 0.1


def conv3x3(cin: int, cout: int, *, stride: int = 1, groups: int = 1,
            bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with 'same' padding (stride 2 halves H and W)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def act() -> nn.LeakyReLU:
    """The activation of every block."""
    return nn.LeakyReLU(NEG_SLOPE, inplace=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention: per-channel weights from global pooling."""

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        hidden = max(chans // reduction, 4)
        self.squeeze = nn.Conv2d(chans, hidden, 1)
        self.excite = nn.Conv2d(hidden, chans, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.sigmoid(self.excite(torch.relu(self.squeeze(w))))
        return x * w


class CAResBlock(nn.Module):
    """Channel-attention residual block: ``x + CA(conv(act(conv(x))))``."""

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(chans, chans), act(), conv3x3(chans, chans), ChannelAttention(chans, reduction)
        )

    def forward(self, x: Tensor) -> Tensor:
        residual: Tensor = self.body(x)
        return x + residual


def res_stack(chans: int, count: int, reduction: int) -> nn.Sequential:
    """``count`` channel-attention residual blocks (an identity when ``count`` is 0)."""
    return nn.Sequential(*(CAResBlock(chans, reduction) for _ in range(count)))


class Upsample2x(nn.Module):
    """2x upsampling by a 1x1 conv and depth-to-space (cheap, ONNX ``DepthToSpace``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout * 4, 1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.shuffle(self.proj(x))
        return y


class Encoder(nn.Module):
    """U-Net encoder: one feature map per level, each level at half the previous size."""

    def __init__(self, cin: int, widths: tuple[int, ...], blocks: tuple[int, ...], reduction: int):
        super().__init__()
        stages = []
        prev = cin
        for level, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            entry = conv3x3(prev, width, stride=1 if level == 0 else 2)
            stages.append(nn.Sequential(entry, act(), res_stack(width, count, reduction)))
            prev = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """U-Net decoder: from the deepest feature up, adding each level's skip feature.

    The output convolution starts with small weights (x0.1 of the default init) so a
    fresh network predicts a near-zero layer: the background starts as the rainy centre
    frame and the rain layer near zero, a sane point for any of the training losses.
    """

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], reduction: int,
                 out_chans: int):
        super().__init__()
        levels = len(widths)
        self.stages = nn.ModuleList(
            res_stack(widths[i], blocks[i], reduction) for i in range(levels)
        )
        self.ups = nn.ModuleList(Upsample2x(widths[i + 1], widths[i]) for i in range(levels - 1))
        self.out = conv3x3(widths[0], out_chans)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            assert self.out.bias is not None  # conv3x3's default: with a bias
            self.out.bias.zero_()

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = self.stages[-1](feats[-1])
        for level in range(len(feats) - 2, -1, -1):
            x = self.stages[level](self.ups[level](x) + feats[level])
        y: Tensor = self.out(x)
        return y


class TemporalFusion(nn.Module):
    """Event-gated temporal fusion of the three per-frame features.

    Each neighbour frame's feature is multiplied by a gate computed from the event
    feature of the interval between it and the centre frame (a 1x1 conv per interval,
    then the sum of depthwise 3x3/5x5/7x7 convs, then a sigmoid: the multi-kernel gate
    in separable form, ~10x cheaper than dense 7x7 on a CPU): events say where things
    moved or rain fell, so they decide which neighbour pixels are trusted. The three
    features are then fused by a convolution over all of them: a 3D convolution with
    temporal extent 3 over 3 frames and no temporal padding, written as the equivalent
    2D convolution over the stacked channels (faster on CPU, ONNX friendly). Without events
    (frames-only twin) the gate is skipped.
    """

    def __init__(self, chans: int, kernels: tuple[int, ...], use_events: bool) -> None:
        super().__init__()
        self.use_events = use_events
        if use_events:
            # groups=2: one gate per interval (previous->centre, centre->next).
            self.gate_mix = nn.Conv2d(2 * chans, 2 * chans, 1, groups=2)
            self.gates = nn.ModuleList(
                nn.Conv2d(2 * chans, 2 * chans, k, padding=k // 2, groups=2 * chans)
                for k in kernels
            )
        self.fuse = nn.Sequential(conv3x3(3 * chans, chans), act())
        self.chans = chans

    def forward(self, frame_feats: Tensor, event_feats: Tensor | None) -> Tensor:
        c = self.chans
        prev, centre, nxt = frame_feats[:, :c], frame_feats[:, c:2 * c], frame_feats[:, 2 * c:]
        if self.use_events and event_feats is not None:
            mixed = self.gate_mix(event_feats)
            logits = self.gates[0](mixed)
            for gate in self.gates[1:]:
                logits = logits + gate(mixed)
            g = torch.sigmoid(logits)
            prev = prev * g[:, :c]
            nxt = nxt * g[:, c:]
        fused: Tensor = self.fuse(torch.cat([prev, centre, nxt], dim=1))
        return fused


class EventRainRefine(nn.Module):
    """Extracts the event *rain* feature from an event feature by a learnt soft mask.

    ``event_rain = feat * mask``, ``event_background = feat - event_rain``, so the two
    parts always add up to the event feature (the paper's asymmetric separation).
    """

    def __init__(self, chans: int, blocks: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(res_stack(chans, blocks, reduction), conv3x3(chans, chans))

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        rain = feat * torch.sigmoid(self.body(feat))
        return rain, feat - rain


class CrossModalFusion(nn.Module):
    """Cross-modal fusion at one scale: positive enhancement, negative suppression.

    ``rain = F_r(frame_rain + event_rain - event_background)`` and
    ``background = F_b(frame_background + event_background - event_rain)``, each ``F`` a
    conv plus residual blocks. The frames-only twin uses ``F_r(frame_rain)`` and
    ``F_b(frame_background)``.
    """

    def __init__(self, chans: int, blocks: int, reduction: int) -> None:
        super().__init__()
        self.rain = nn.Sequential(conv3x3(chans, chans), act(), res_stack(chans, blocks, reduction))
        self.background = nn.Sequential(
            conv3x3(chans, chans), act(), res_stack(chans, blocks, reduction)
        )

    def forward(self, frame_rain: Tensor, frame_bg: Tensor, event_rain: Tensor | None,
                event_bg: Tensor | None) -> tuple[Tensor, Tensor]:
        if event_rain is not None and event_bg is not None:
            frame_rain = frame_rain + event_rain - event_bg
            frame_bg = frame_bg + event_bg - event_rain
        return self.rain(frame_rain), self.background(frame_bg)


__all__ = [
    "CAResBlock",
    "ChannelAttention",
    "CrossModalFusion",
    "Decoder",
    "Encoder",
    "EventRainRefine",
    "TemporalFusion",
    "Upsample2x",
]
