"""The configuration of a deraining network: one frozen dataclass per named size.

A :class:`ModelConfig` fully determines the architecture (and so the set of weight
names and shapes): two networks built from equal configs can exchange weights. It is
stored, field by field, in every checkpoint's JSON file, and a checkpoint is loaded by
rebuilding the network from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from derain_ros.errors import ModelError


class ModelConfigError(ModelError):
    """A model configuration is invalid (unknown field, bad value)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`~derain_ros.model.derain_net.DerainNet`.

    Attributes:
        name: registered size name (``derain_tiny``, ``derain_base``, ...).
        in_chans: channels of each frame: 3 (RGB) or 1 (grayscale, e.g. a DAVIS's APS).
        event_bins: voxel time bins per inter-frame interval (the network takes 2 such
            grids, so ``2 * event_bins`` event channels).
        use_events: False for the frames-only twin (same network without the event branch).
        widths: channels of the three U-Net levels (full, 1/2, 1/4 of the working grid).
        blocks: channel-attention residual blocks per level, in each encoder.
        decoder_blocks: the same for each decoder (None: as ``blocks``).
        head_chans: channels of each per-frame / per-voxel head.
        fusion_blocks: residual blocks after each cross-modal fusion (per stream, per scale).
        refine_blocks: residual blocks of the event-rain refinement (per scale).
        internal_scale: 1 works at full resolution; 2 works on a half-resolution grid
            (strided head convs in, depth-to-space out), so the output keeps full-res
            detail at about a quarter of the compute.
        reduction: channel-attention squeeze ratio.
        gate_kernels: kernel sizes of the multi-kernel event gate of the temporal fusion.

    How inputs are prepared is not architecture: it is the checkpoint's
    :class:`~derain_ros.model.contract.InputContract`.
    """

    name: str = "derain_base"
    in_chans: int = 3
    event_bins: int = 10
    use_events: bool = True
    widths: tuple[int, int, int] = (32, 64, 96)
    blocks: tuple[int, int, int] = (2, 2, 2)
    decoder_blocks: tuple[int, int, int] | None = None
    head_chans: int = 16
    fusion_blocks: int = 1
    refine_blocks: int = 1
    internal_scale: int = 1
    reduction: int = 4
    gate_kernels: tuple[int, ...] = (3, 5, 7)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable with tuples.
        for name in ("widths", "blocks", "decoder_blocks", "gate_kernels"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        problems = []
        if self.in_chans not in (1, 3):
            problems.append(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.event_bins < 1:
            problems.append(f"event_bins must be >= 1, got {self.event_bins}")
        if len(self.widths) != 3 or min(self.widths) < 1:
            problems.append(f"widths must be 3 positive ints, got {self.widths}")
        for name in ("blocks", "decoder_blocks"):
            value = getattr(self, name)
            if value is not None and (len(value) != 3 or min(value) < 0):
                problems.append(f"{name} must be 3 ints >= 0, got {value}")
        if self.internal_scale not in (1, 2, 4):
            problems.append(f"internal_scale must be 1, 2 or 4, got {self.internal_scale}")
        if self.head_chans < 1 or self.reduction < 1:
            problems.append("head_chans and reduction must be >= 1")
        if self.fusion_blocks < 0 or self.refine_blocks < 0:
            problems.append("fusion_blocks and refine_blocks must be >= 0")
        if not self.gate_kernels or any(k % 2 == 0 or k < 1 for k in self.gate_kernels):
            problems.append(f"gate_kernels must be odd sizes, got {self.gate_kernels}")
        if problems:
            raise ModelConfigError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def levels(self) -> int:
        """Number of U-Net levels (scales of the encoders, fusion and decoders)."""
        return len(self.widths)

    @property
    def decoder_depths(self) -> tuple[int, ...]:
        """Residual blocks per level of each decoder."""
        return self.blocks if self.decoder_blocks is None else self.decoder_blocks

    @property
    def pad_multiple(self) -> int:
        """Input H and W are padded internally up to a multiple of this (px)."""
        steps: int = 2 ** (self.levels - 1)  # (typeshed: int ** int may be a float)
        return self.internal_scale * steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        fields = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict`; unknown fields raise :class:`ModelConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**data)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed; unknown fields raise :class:`ModelConfigError`."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)

    def diff(self, other: ModelConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that differ: ``{field: (self_value, other_value)}``."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


__all__ = ["ModelConfig", "ModelConfigError"]
