"""The input contract: what a network was trained to take, carried by its checkpoint.

Why it exists: a network trained on one input and served another loses quality with no
error anywhere. So every checkpoint's JSON holds an :class:`InputContract` (as data,
under ``"input_contract"``), and :class:`derain_ros.model.inputs.InputBuilder`, the one
code path that turns decoded frames and event windows into network tensors, is built
from it. The engine (node, replay, ``derain-ros run``), training data loading and every
benchmark use that builder; nothing else prepares inputs. This follows timm's
``pretrained_cfg`` -> ``resolve_data_config`` -> ``create_transform`` pattern.

Every enumerated field is checked when the contract is built (from a config, a
checkpoint or node parameters): an unknown value raises :class:`InputContractError`
naming the allowed ones. Checkpoints written before the contract existed (format 1
without ``input_contract``) load through :func:`migrate_checkpoint_info`, the one
place that knows what they were trained with.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from derain_ros.errors import ConfigError

__all__ = [
    "ARRANGEMENTS",
    "CONTRACT_VERSION",
    "FRAME_RANGES",
    "POLARITIES",
    "PRECISIONS",
    "VOXEL_KINDS",
    "VOXEL_NORMALIZATIONS",
    "InputContract",
    "InputContractError",
    "check_choice",
    "migrate_checkpoint_info",
]

_log = logging.getLogger(__name__)

#: Layout version of the contract's JSON form (bump on an incompatible change).
CONTRACT_VERSION: Final = 1
#: How a 3-frame clip is built around its target (see :mod:`derain_ros.model.inputs`).
ARRANGEMENTS: Final = ("causal", "centre")
#: Frame values: ``unit`` = float in [0, 1] (uint8 / 255, uint16 / 65535), RGB order.
FRAME_RANGES: Final = ("unit",)
#: Voxel construction: ``bilinear`` = :func:`derain_ros.events.voxel.voxel_grid`
#: (events of ``(t0, t1]``, bilinear in time over ``bins``, one grid per interval).
VOXEL_KINDS: Final = ("bilinear",)
#: Normalisation applied to each voxel grid before the network (the network itself
#: further squashes by ``v / sqrt(1 + |v|)``, part of its weights' meaning).
VOXEL_NORMALIZATIONS: Final = ("none", "meanstd")
#: Polarity handling: ``signed`` = ON adds +1, OFF adds -1 (a decoder's p != 0 is ON).
POLARITIES: Final = ("signed",)
#: Precision the prepared values are rounded to (then held as float32 or the network's
#: dtype). ``float16``: training caches store float16, and serving rounds the same way,
#: so that both hand the network bit-identical tensors.
PRECISIONS: Final = ("float16", "float32")
#: Frames per clip and voxel grids per clip (the network's fixed temporal window).
CLIP_LENGTH: Final = 3


class InputContractError(ConfigError):
    """An input contract is invalid, or a request contradicts a checkpoint's contract."""


def check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else :class:`InputContractError` listing them."""
    if value not in allowed:
        raise InputContractError(
            f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return str(value)


@dataclass(frozen=True)
class InputContract:
    """What the network's inputs are, exactly (see the module docstring).

    Attributes:
        frame_channels: 3 (RGB) or 1 (grey, e.g. a DAVIS's APS frames). Frames of the
            other kind are converted: grey -> RGB by repetition, RGB -> grey by the mean.
        frame_range: see :data:`FRAME_RANGES`.
        event_bins: voxel time bins per inter-frame interval.
        use_events: False for a frames-only network (no voxel grids at all).
        voxel: see :data:`VOXEL_KINDS`.
        voxel_normalize: see :data:`VOXEL_NORMALIZATIONS`.
        polarity: see :data:`POLARITIES`.
        clip_length: frames per clip (3).
        arrangement: see :data:`ARRANGEMENTS`.
        precision: see :data:`PRECISIONS`.
        version: :data:`CONTRACT_VERSION` of the layout.
    """

    frame_channels: int = 3
    frame_range: str = "unit"
    event_bins: int = 10
    use_events: bool = True
    voxel: str = "bilinear"
    voxel_normalize: str = "none"
    polarity: str = "signed"
    clip_length: int = CLIP_LENGTH
    arrangement: str = "causal"
    precision: str = "float16"
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        check_choice("frame_range", self.frame_range, FRAME_RANGES)
        check_choice("voxel", self.voxel, VOXEL_KINDS)
        check_choice("voxel_normalize", self.voxel_normalize, VOXEL_NORMALIZATIONS)
        check_choice("polarity", self.polarity, POLARITIES)
        check_choice("arrangement", self.arrangement, ARRANGEMENTS)
        check_choice("precision", self.precision, PRECISIONS)
        if self.frame_channels not in (1, 3):
            raise InputContractError(
                f"frame_channels must be 1 or 3, got {self.frame_channels!r}")
        if not isinstance(self.event_bins, int) or self.event_bins < 1:
            raise InputContractError(f"event_bins must be an int >= 1, got {self.event_bins!r}")
        if self.clip_length != CLIP_LENGTH:
            raise InputContractError(
                f"clip_length must be {CLIP_LENGTH} (the network's window), got "
                f"{self.clip_length!r}")
        if self.version != CONTRACT_VERSION:
            raise InputContractError(
                f"input contract version {self.version!r} is not supported (this derain_ros "
                f"reads {CONTRACT_VERSION})")

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputContract:
        """Rebuild from :meth:`to_dict`; unknown or missing fields are errors."""
        if not isinstance(data, Mapping):
            raise InputContractError(f"an input contract must be an object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(known - set(data))
        if unknown or missing:
            raise InputContractError(
                f"input contract fields do not match: unknown {unknown}, missing {missing}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> InputContract:
        """A copy with some fields changed (validated like a new one)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputContractError(f"unknown input contract field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_config(cls, config: Any, **fields: Any) -> InputContract:
        """The contract of a fresh network of ``config`` (a ModelConfig) plus ``fields``."""
        return cls(frame_channels=int(config.in_chans), event_bins=int(config.event_bins),
                   use_events=bool(config.use_events), **fields)

    def check_matches(self, config: Any, source: str = "checkpoint") -> None:
        """Raise :class:`InputContractError` unless ``config`` (a ModelConfig) agrees."""
        diffs = []
        for mine, theirs in (("frame_channels", "in_chans"), ("event_bins", "event_bins"),
                             ("use_events", "use_events")):
            if getattr(self, mine) != getattr(config, theirs):
                diffs.append(f"{mine}={getattr(self, mine)!r} vs network "
                             f"{theirs}={getattr(config, theirs)!r}")
        if diffs:
            raise InputContractError(
                f"{source}: input contract contradicts its network: " + "; ".join(diffs))

    def refuse_overrides(self, source: str = "checkpoint", **requested: Any) -> None:
        """Refuse requests (e.g. node parameters) that contradict this contract.

        A requested value of None or ``""`` means "as the checkpoint says". Why refuse
        rather than obey: serving an input the weights were not trained on degrades the
        output silently.
        """
        clashes = [f"{k}={v!r} (the checkpoint was trained with {getattr(self, k)!r})"
                   for k, v in requested.items() if v not in (None, "") and
                   getattr(self, k) != v]
        if clashes:
            raise InputContractError(
                f"{source}: requested input settings contradict the checkpoint's input "
                "contract: " + "; ".join(clashes)
                + "; leave them empty to follow the checkpoint")


def migrate_checkpoint_info(info: Mapping[str, Any], source: str = "checkpoint",
                            ) -> dict[str, Any]:
    """A checkpoint description with an ``input_contract``, migrating older ones.

    Checkpoints written before the contract (no ``input_contract``) were all trained the
    one way the code of that time prepared inputs: frames in [0, 1] and voxel grids
    from ``voxel_grid`` with ``normalize="none"`` (the only value the training default
    and the engine used), cached as float16, in the arrangement their provenance
    records (``causal`` when absent). Their prose ``voxel_normalization`` config field
    (always the same text, naming no normalisation) is dropped: the contract
    replaces it. Returns a new dict; the input is unchanged.
    """
    out = dict(info)
    config = dict(out.get("config") or {})
    config.pop("voxel_normalization", None)
    out["config"] = config
    if "input_contract" in out:
        out["input_contract"] = InputContract.from_dict(out["input_contract"]).to_dict()
        return out
    provenance = out.get("provenance") or {}
    contract = InputContract(
        frame_channels=int(config.get("in_chans", out.get("in_chans", 3))),
        event_bins=int(config.get("event_bins", out.get("event_bins", 10))),
        use_events=bool(config.get("use_events", out.get("use_events", True))),
        voxel_normalize="none",
        arrangement=check_choice("arrangement", provenance.get("arrangement", "causal"),
                                 ARRANGEMENTS),
        precision="float16")
    _log.info("%s: no input contract recorded (written before contracts); migrated as %s",
              source, contract)
    out["input_contract"] = contract.to_dict()
    out["input_contract_migrated"] = True
    return out
