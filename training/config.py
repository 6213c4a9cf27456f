"""The training configuration: frozen dataclasses read strictly from YAML.

``config/train.yaml`` holds every setting with its default; a run's YAML may give any
subset. Unknown keys anywhere raise :class:`~derain_training.errors.TrainConfigError`
naming each one with its dotted path (a typo must never silently fall back to a
default). Values are type-checked; YAML 1.1's ``2e-4`` (read as a string) is accepted
for float fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from derain_ros.conventions import EVENT_TOPIC, GT_CLEAN_TOPIC, GT_RAIN_TOPIC, IMAGE_TOPIC
from derain_ros.model.contract import ARRANGEMENTS, VOXEL_NORMALIZATIONS
from derain_training.errors import TrainConfigError

__all__ = [
    "MODES",
    "DataConfig",
    "DiscriminatorConfig",
    "LossConfig",
    "ModelSection",
    "NLCLConfig",
    "OnlineLosses",
    "OptimConfig",
    "RunConfig",
    "SupervisedLosses",
    "TrainConfig",
    "UnsupervisedLosses",
    "load_config",
]

#: Training modes (see ``derain_training.objective``).
MODES = ("supervised", "unsupervised", "online")


@dataclass(frozen=True)
class ModelSection:
    """Which network: a registered name (``derain_ros.model``) and config overrides."""

    name: str = "derain_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Bags, topics, voxelisation, clips and augmentation.

    ``voxel_normalize`` (``none`` | ``meanstd``) and ``arrangement`` (``causal`` | ``centre``)
    become the trained network's :class:`~derain_ros.model.InputContract` (with the model's
    channels and ``event_bins``), which its checkpoint carries and from which the node,
    training and the benchmarks build their inputs with one
    :class:`~derain_ros.model.InputBuilder`. Empty (null) takes the starting
    checkpoint's value with ``--init`` (a value that contradicts it is refused), else
    ``none`` / ``causal``. The network squashes raw voxel counts itself, hence ``none``;
    ``causal`` derains the newest frame (no added delay), ``centre`` the middle of three.
    ``crop`` is the square training crop (px); ``clean_bags`` give unpaired clean frames
    (their ground-truth clean topic if present, else their image topic) for the GAN
    prior and must not be training bags.
    """

    image_topic: str = IMAGE_TOPIC
    event_topic: str = EVENT_TOPIC
    clean_topic: str = GT_CLEAN_TOPIC
    rain_topic: str = GT_RAIN_TOPIC
    voxel_normalize: str | None = None
    arrangement: str | None = None
    clip_stride: int = 1
    crop: int = 128
    hflip: bool = True
    vflip: bool = False
    batch_size: int = 8
    num_workers: int = 0
    cache_dir: str = "~/.cache/derain_ros/training"
    clean_bags: list[str] = field(default_factory=list)
    val_bags: list[str] = field(default_factory=list)
    val_max_clips: int = 4
    max_frames: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Adam and the learning-rate schedule (linear warm-up, then cosine to ``min_lr_ratio``)."""

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 0.0
    disc_lr: float = 2e-4


@dataclass(frozen=True)
class RunConfig:
    """Length, seeding, logging and checkpointing (all counts in optimiser steps).

    ``max_seconds`` > 0 makes a run time-budgeted (a lent GPU for minutes, a session of
    hours): it ends, exported, after that much training time summed over resumes, and
    the cosine schedule follows the larger of the step and the time fractions; ``steps``
    is then an upper bound.
    """

    steps: int = 2000
    max_seconds: float = 0.0
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    image_every: int = 200
    ckpt_every: int = 200
    keep_ckpts: int = 3
    device: str = "auto"
    threads: int = 0
    find_unused_parameters: bool = False


@dataclass(frozen=True)
class SupervisedLosses:
    """Weights of the supervised terms (0 switches a term off)."""

    charbonnier: float = 1.0
    ssim: float = 0.2
    rain: float = 0.5
    reconstruction: float = 0.0
    #: L1 to the starting network's output (needs --init): keeps a fine-tune near its
    #: start, e.g. adaptation, whose guard refuses weights that forget (docs/adaptation.md).
    anchor: float = 0.0
    charbonnier_eps: float = 1e-3


@dataclass(frozen=True)
class UnsupervisedLosses:
    """Weights of the ICCV 2023 recipe (all 1 in the paper) plus NLCL.

    ``adversarial`` and ``nlcl`` default to 0 (off): with the PatchGAN prior and a
    random-init NLCL head, unsupervised fine-tuning lowered PSNR by ~4 dB (issue #14;
    docs/adaptation.md). Set them to 1 for the paper's recipe.
    """

    reconstruction: float = 1.0
    adversarial: float = 0.0
    frame_rain_event_rain: float = 1.0
    frame_rain_event_background: float = 1.0
    frame_rain_frame_background: float = 1.0
    event_rain_event_background: float = 1.0
    nlcl: float = 0.0
    nlcl_rain: float = 0.0
    #: L1 to the starting network's output (0 in the paper; keeps a fine-tune near its start).
    anchor: float = 0.0


@dataclass(frozen=True)
class OnlineLosses:
    """The AAAI 2022 online update: rounds of pseudo-labels, L1 to them, KL rain prior."""

    pseudo_l1: float = 1.0
    kl_rain: float = 8e-5
    reconstruction: float = 0.0
    rounds: int = 20
    steps_per_round: int = 50
    lr_decay: float = 0.8


@dataclass(frozen=True)
class LossConfig:
    """One block of weights per mode; ``--mode`` picks the block."""

    supervised: SupervisedLosses = field(default_factory=SupervisedLosses)
    unsupervised: UnsupervisedLosses = field(default_factory=UnsupervisedLosses)
    online: OnlineLosses = field(default_factory=OnlineLosses)


@dataclass(frozen=True)
class NLCLConfig:
    """Non-local contrast settings (NLCL defaults: 16 px patches, 40 px window, k = 8)."""

    patch: int = 16
    window: int = 40
    positives: int = 8
    negatives: int = 128
    dim: int = 256
    hidden: int = 256
    temperature: float = 0.07
    anchors: int = 16
    stride: int = 4


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN critic of the unsupervised mode."""

    width: int = 32
    layers: int = 3
    spectral_norm: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the bag paths."""

    mode: str = "supervised"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    nlcl: NLCLConfig = field(default_factory=NLCLConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        d = self.data
        if d.arrangement is not None and d.arrangement not in ARRANGEMENTS:
            problems.append(f"data.arrangement must be one of {list(ARRANGEMENTS)}, "
                            f"got {d.arrangement!r}")
        if d.voxel_normalize is not None and d.voxel_normalize not in VOXEL_NORMALIZATIONS:
            problems.append(f"data.voxel_normalize must be one of {list(VOXEL_NORMALIZATIONS)}, "
                            f"got {d.voxel_normalize!r}")
        if d.crop < 16 and d.crop != 0:
            problems.append(f"data.crop must be >= 16 px (0: full frames), got {d.crop}")
        if d.batch_size < 1 or d.clip_stride < 1:
            problems.append("data.batch_size and data.clip_stride must be >= 1")
        if len(self.optim.betas) != 2:
            problems.append(f"optim.betas must be 2 numbers, got {self.optim.betas}")
        if self.run.steps < 1:
            problems.append(f"run.steps must be >= 1, got {self.run.steps}")
        if self.losses.online.rounds < 1 or self.losses.online.steps_per_round < 1:
            problems.append("losses.online.rounds and steps_per_round must be >= 1")
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (sections as dataclasses)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready data."""
        return dataclasses.asdict(self)


# -- strict parsing ----------------------------------------------------------------------
def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except TrainConfigError as err:
                errors.append(str(err))
        raise TrainConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise TrainConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise TrainConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TrainConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TrainConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TrainConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TrainConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        named = ", ".join(f"{where}.{k}" if where else str(k) for k in unknown)
        raise TrainConfigError(
            f"unknown config key(s): {named}; known keys"
            f"{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any] | None) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested mappings, strictly (see module docstring)."""
    return _build(TrainConfig, data or {}, "")


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Read a YAML file (None: all defaults) and apply top-level ``overrides``.

    ``overrides`` are dotted keys (``{"run.steps": 10, "mode": "online"}``) applied on
    top of the file before validation, so the command line goes through the same checks.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise TrainConfigError(f"cannot read training config {p}: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise TrainConfigError(f"{p}: the top level must be a mapping")
        data = loaded or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f"cannot set {dotted}: {key} is not a mapping")
        node[leaf] = value
    return config_from_dict(data)
