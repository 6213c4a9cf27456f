"""The parts of a training run, each built by one small function (the Trainer wires them).

Why apart from :mod:`derain_training.trainer`: setting a run up (device, model, data,
objective, DDP wrappers, optimisers, sampler) is a sequence of independent decisions,
each readable and testable on its own; the trainer keeps the loop and the checkpoints.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from derain_ros.model import InputContract, InputContractError, create_model, load_weights
from derain_ros.model.derain_net import DerainNet
from derain_training.config import TrainConfig
from derain_training.data import ClipDataset
from derain_training.errors import TrainConfigError
from derain_training.losses import PatchDiscriminator
from derain_training.objective import Objective

__all__ = [
    "Optimisers",
    "ResumableSampler",
    "build_datasets",
    "build_model",
    "build_objective",
    "build_optimisers",
    "build_sampler",
    "lr_factor",
    "select_device",
    "training_contract",
    "wrap_for_ddp",
]

_log = logging.getLogger(__name__)


def lr_factor(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` (0-based optimiser steps).

    Supervised/unsupervised: linear warm-up over ``optim.warmup_steps``, then cosine
    from 1 to ``optim.min_lr_ratio`` at ``run.steps`` (or, time-budgeted, at the end of
    ``run.max_seconds``: ``time_fraction`` is the share of it used). Online:
    ``lr_decay ** round``.
    """
    if cfg.mode == "online":
        spr = cfg.losses.online.steps_per_round
        return cfg.losses.online.lr_decay ** (step // spr)
    warm = cfg.optim.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    total = max(cfg.run.steps - warm, 1)
    progress = min(max(max(step - warm, 0) / total, time_fraction), 1.0)
    floor = cfg.optim.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` that can start part-way into an epoch (resume)."""

    start: int = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def select_device(want: str, local_rank: int) -> torch.device:
    """``run.device`` (``auto``, ``cuda``, ``cpu``, ...) as a device; cuda: this rank's GPU."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise TrainConfigError("run.device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(want)


def training_contract(cfg: TrainConfig, current: InputContract, *,
                      from_checkpoint: bool) -> InputContract:
    """The input contract the trained network will carry (and its data is prepared with).

    From a checkpoint (``--init``) its contract stands, and a config value that
    contradicts it is refused (the weights were trained on those inputs). A fresh
    network takes the config's ``arrangement``/``voxel_normalize`` (``causal``/``none``
    when unset) on top of its own channels and bins.
    """
    asked = {"arrangement": cfg.data.arrangement, "voxel_normalize": cfg.data.voxel_normalize}
    if from_checkpoint:
        try:
            current.refuse_overrides("--init checkpoint", **asked)
        except InputContractError as err:
            raise TrainConfigError(str(err)) from err
        return current
    return current.replace(arrangement=asked["arrangement"] or "causal",
                           voxel_normalize=asked["voxel_normalize"] or "none")


def build_model(cfg: TrainConfig, init: Path | None,
                device: torch.device) -> tuple[DerainNet, dict[str, Any]]:
    """The network (in train mode, on ``device``) and what loading ``init`` reported."""
    model = create_model(cfg.model.name, **cfg.model.overrides)
    init_info: dict[str, Any] = {}
    if init is not None:
        init_info = load_weights(model, init)  # raises for another size
    model.input_contract = training_contract(cfg, model.input_contract,
                                             from_checkpoint=init is not None)
    model.train()
    return model.to(device), init_info


def build_datasets(cfg: TrainConfig, bags: Sequence[Path], model: DerainNet, *,
                   needs_clean: bool, with_val: bool,
                   progress: bool) -> tuple[ClipDataset, ClipDataset | None]:
    """The training clips and (``with_val``: rank 0) the validation clips.

    Raises :class:`TrainConfigError` when the bags' frames do not have the model's
    channel count.
    """
    mc = model.config
    dataset = ClipDataset(
        bags, cfg.data, contract=model.input_contract,
        require_truth=cfg.mode == "supervised", seed=cfg.run.seed,
        clean_bags=cfg.data.clean_bags if needs_clean else (),
        progress=progress,
    )
    if dataset.chans != mc.in_chans:
        raise TrainConfigError(
            f"the bags have {dataset.chans}-channel frames but {mc.name} takes "
            f"{mc.in_chans} (set model.overrides.in_chans)")
    val = None
    if cfg.data.val_bags and with_val:
        val = ClipDataset(cfg.data.val_bags, cfg.data, contract=model.input_contract,
                          require_truth=True, crop=0,
                          augment=False, max_clips=cfg.data.val_max_clips,
                          progress=progress)
    return dataset, val


def build_objective(cfg: TrainConfig, model: DerainNet, device: torch.device, *,
                    has_init: bool, main: bool) -> tuple[Objective, nn.Module | None]:
    """The generator objective and, when the adversarial loss is on, its discriminator.

    The anchor loss gets a frozen copy of the starting network as its reference.
    """
    mc = model.config
    objective = Objective(model, cfg).to(device)
    if objective.dropped_terms and main:
        _log.warning("%s has no event branch: contrastive terms %s are off", mc.name,
                     objective.dropped_terms)
    if "anchor" in objective.weights:
        if not has_init:
            raise TrainConfigError("the anchor loss needs a starting network (--init)")
        objective.set_reference(copy.deepcopy(model).eval().requires_grad_(False))
    disc: nn.Module | None = None
    if "adversarial" in objective.weights:
        d = cfg.discriminator
        disc = PatchDiscriminator(mc.in_chans, d.width, d.layers, d.spectral_norm).to(device)
        objective.set_discriminator(disc)
    return objective, disc


def wrap_for_ddp(cfg: TrainConfig, objective: nn.Module, disc: nn.Module | None,
                 device: torch.device, world: int) -> tuple[nn.Module, nn.Module | None]:
    """The modules the loop calls: DDP-wrapped when ``world > 1``, else as they are."""
    if world <= 1:
        return objective, disc
    ddp_kw: dict[str, Any] = {"find_unused_parameters": cfg.run.find_unused_parameters}
    if device.type == "cuda":
        ddp_kw["device_ids"] = [device.index]
    g_module = DistributedDataParallel(objective, **ddp_kw)
    d_module = DistributedDataParallel(disc, **ddp_kw) if disc is not None else None
    return g_module, d_module


@dataclass
class Optimisers:
    """Adam and its schedule for the generator, and for the discriminator if any."""

    opt_g: torch.optim.Optimizer
    sched_g: Any
    opt_d: torch.optim.Optimizer | None
    sched_d: Any


def build_optimisers(cfg: TrainConfig, objective: nn.Module, disc: nn.Module | None,
                     time_fraction: Callable[[], float] = lambda: 0.0) -> Optimisers:
    """Adam with :func:`lr_factor` as schedule (generator; discriminator at ``disc_lr``).

    ``time_fraction`` tells a time-budgeted run's schedule how much of its time is used.
    """
    o = cfg.optim
    betas = (float(o.betas[0]), float(o.betas[1]))
    opt_g = torch.optim.Adam(objective.parameters(), lr=o.lr, betas=betas,
                             weight_decay=o.weight_decay)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_factor(s, cfg, time_fraction()))
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=o.disc_lr, betas=betas)
        sched_d = torch.optim.lr_scheduler.LambdaLR(
            opt_d, lambda s: lr_factor(s, cfg, time_fraction()))
    return Optimisers(opt_g, sched_g, opt_d, sched_d)


def build_sampler(cfg: TrainConfig, dataset: ClipDataset, rank: int,
                  world: int) -> tuple[ResumableSampler, int]:
    """This rank's sampler and the optimiser steps in one epoch.

    Raises :class:`TrainConfigError` when the clips do not fill one batch per rank.
    """
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                               seed=cfg.run.seed, drop_last=True)
    steps_per_epoch = len(dataset) // world // cfg.data.batch_size
    if steps_per_epoch == 0:
        raise TrainConfigError(
            f"the bags give {len(dataset)} clips: too few for batch size "
            f"{cfg.data.batch_size} on {world} rank(s)")
    return sampler, steps_per_epoch
