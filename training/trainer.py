"""The training loop: one process, or one per GPU/CPU rank under torchrun (DDP).

What it does, in order, each step: a batch from a :class:`DistributedSampler` over
:class:`~derain_training.data.ClipDataset`; the generator objective (DDP-wrapped, so
gradients are averaged across ranks); a NaN/inf check agreed by all ranks; Adam
(2e-4, betas (0.5, 0.999)) with a linear warm-up + cosine schedule (online mode: a
constant rate per round, falling by ``lr_decay`` each round); in unsupervised mode a
discriminator step (hinge) on unpaired clean frames. Rank 0 logs to TensorBoard and
writes checkpoints (see :mod:`derain_training.state`); at the end it exports the
network with ``derain_ros.model.save_checkpoint``, which is what the node loads.

Exact resume: the data order depends only on ``(seed, epoch)``, augmentation on
``(seed, epoch, index)``, and NLCL sampling on ``(seed, step, rank)``; weights,
optimiser moments, scheduler and RNG states are restored from the checkpoint, so a
resumed run repeats the uninterrupted one (bit for bit on a CPU).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from derain_ros.eval.metrics import psnr, ssim
from derain_ros.events.render import polarity_rgb
from derain_ros.model import CLIP_TARGET, save_checkpoint
from derain_training.build import (
    ResumableSampler,
    build_datasets,
    build_model,
    build_objective,
    build_optimisers,
    build_sampler,
    lr_factor,
    select_device,
    wrap_for_ddp,
)
from derain_training.config import TrainConfig
from derain_training.errors import NonFiniteLossError, TrainConfigError, TrainingError
from derain_training.losses import hinge_d_loss
from derain_training.state import (
    find_latest,
    get_rng_state,
    load_module,
    load_state,
    module_tensors,
    optimizer_from_flat,
    optimizer_to_flat,
    save_state,
    set_rng_state,
)

__all__ = ["DistInfo", "ResumableSampler", "TrainResult", "Trainer", "events_to_rgb", "lr_factor"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs and saves."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` as set by torchrun."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))


@dataclass
class TrainResult:
    """What a finished run reports."""

    step: int
    losses: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    export: Path | None = None
    seconds: float = 0.0


def events_to_rgb(voxels: Tensor) -> Tensor:
    """``[intervals, bins, H, W]`` voxel grids -> ``[3, H, W]`` image: ON blue, OFF red, on
    black (the project's one convention, :mod:`derain_ros.events.render`).

    The signed sum over all bins (positive: ON), scaled by its 99th percentile magnitude.
    """
    net = voxels.float().sum(dim=(0, 1))
    scale = torch.quantile(net.abs().flatten(), 0.99).clamp_min(1e-6)
    v = (net / scale).clamp(-1, 1).cpu().numpy()
    rgb = polarity_rgb(np.maximum(v, 0.0), np.maximum(-v, 0.0), gain=0.5)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class Trainer:
    """One training run. ``Trainer(cfg, bags, out_dir).fit()``.

    Args:
        cfg: the training config (mode, model, data, losses, ...).
        bags: training bags.
        out_dir: run folder (``checkpoints/``, ``tb/``, ``export/``, ``config.json``).
        init: a ``derain_ros.model`` checkpoint to start from (required for online mode).
        resume: continue from the newest checkpoint in ``out_dir``.
        export_to: also write the final network here (e.g. the shipped weights).
        progress: tqdm bars (rank 0 only).
        dist_info: rank/world (default: from torchrun's environment).
    """

    def __init__(self, cfg: TrainConfig, bags: Sequence[str | Path], out_dir: str | Path, *,
                 init: str | Path | None = None, resume: bool = False,
                 export_to: str | Path | None = None, progress: bool = True,
                 dist_info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.bags = [Path(b) for b in bags]
        self.out = Path(out_dir)
        self.init = Path(init) if init else None
        self.resume = resume
        self.export_to = Path(export_to) if export_to else None
        self.dist = dist_info or DistInfo.from_env()
        self.progress = progress and self.dist.main
        if cfg.mode == "online" and self.init is None and not resume:
            raise TrainConfigError("online mode starts from a trained network: pass --init CKPT")
        self._own_group = False
        self.writer: Any = None

    # -- set-up ----------------------------------------------------------------------
    def _device(self) -> torch.device:
        return select_device(self.cfg.run.device, self.dist.local_rank)

    def _init_dist(self, device: torch.device) -> None:
        if self.dist.world > 1 and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=self.dist.rank,
                                    world_size=self.dist.world)
            self._own_group = True

    def _build(self) -> None:
        """Set the run up: device and process group, seeds, then the parts in order."""
        cfg = self.cfg
        self.device = self._device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._init_dist(self.device)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        self.model, self.init_info = build_model(cfg, self.init, self.device)
        self.dataset, self.val = build_datasets(
            cfg, self.bags, self.model, needs_clean=self._needs_clean(),
            with_val=self.dist.main, progress=self.progress)
        self.objective, self.disc = build_objective(
            cfg, self.model, self.device, has_init=self.init is not None, main=self.dist.main)
        self.g_module, self.d_module = wrap_for_ddp(cfg, self.objective, self.disc,
                                                    self.device, self.dist.world)
        self.train_seconds = 0.0  # training time so far, summed over resumes
        self._clock: float | None = None  # monotonic start of the current stretch
        opts = build_optimisers(cfg, self.objective, self.disc, self._time_fraction)
        self.opt_g, self.sched_g = opts.opt_g, opts.sched_g
        self.opt_d, self.sched_d = opts.opt_d, opts.sched_d
        self.sampler, self.steps_per_epoch = build_sampler(cfg, self.dataset, self.dist.rank,
                                                           self.dist.world)
        self.step = 0
        self.round_start: dict[str, Tensor] | None = None
        self.last_good: Path | None = None

    def _needs_clean(self) -> bool:
        return self.cfg.mode == "unsupervised" and self.cfg.losses.unsupervised.adversarial != 0

    # -- time budget -------------------------------------------------------------------
    def _elapsed(self) -> float:
        """Training seconds so far (all stretches, this one included)."""
        extra = 0.0 if self._clock is None else time.monotonic() - self._clock
        return self.train_seconds + extra

    def _time_fraction(self) -> float:
        """Share of ``run.max_seconds`` used (0 when the run is not time-budgeted)."""
        budget = self.cfg.run.max_seconds
        return min(self._elapsed() / budget, 1.0) if budget > 0 else 0.0

    def _out_of_time(self) -> bool:
        """True once the time budget is spent; every rank agrees (rank 0's clock decides)."""
        budget = self.cfg.run.max_seconds
        if budget <= 0:
            return False
        done = self._elapsed() >= budget
        if self.dist.world > 1:
            flag = torch.tensor([float(done)], device=self.device)
            dist.broadcast(flag, src=0)
            done = bool(flag.item())
        return done

    # -- checkpoints -------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        """Where training-state checkpoints go."""
        return self.out / "checkpoints"

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = module_tensors(self.objective, "objective")
        meta: dict[str, Any] = {"mode": self.cfg.mode, "model": self.model.config.name,
                                "config": self.cfg.to_dict(), "world": self.dist.world,
                                "train_seconds": self._elapsed()}
        t, meta["opt_g"] = optimizer_to_flat(self.opt_g, "opt_g")
        tensors.update(t)
        meta["sched_g"] = self.sched_g.state_dict()
        if self.disc is not None and self.opt_d is not None and self.sched_d is not None:
            tensors.update(module_tensors(self.disc, "disc"))
            t, meta["opt_d"] = optimizer_to_flat(self.opt_d, "opt_d")
            tensors.update(t)
            meta["sched_d"] = self.sched_d.state_dict()
        if self.round_start is not None:
            tensors.update({f"round_start.{k}": v for k, v in self.round_start.items()})
        t, meta["rng"] = get_rng_state()
        tensors.update(t)
        return tensors, meta

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0); returns its folder."""
        if not self.dist.main:
            return None
        tensors, meta = self._state()
        path = save_state(self.ckpt_dir, self.step, tensors, meta, keep=self.cfg.run.keep_ckpts)
        self.last_good = path
        return path

    def _restore(self, path: Path) -> None:
        st = load_state(path)
        tensors, meta = st["tensors"], st["meta"]
        if meta.get("mode") != self.cfg.mode or meta.get("model") != self.model.config.name:
            raise TrainingError(
                f"{path} is a {meta.get('mode')} run of {meta.get('model')}; this run is "
                f"{self.cfg.mode} of {self.model.config.name}")
        load_module(self.objective, "objective", tensors)
        optimizer_from_flat(self.opt_g, "opt_g", tensors, meta["opt_g"])
        self.sched_g.load_state_dict(meta["sched_g"])
        if self.disc is not None and self.opt_d is not None and self.sched_d is not None:
            load_module(self.disc, "disc", tensors)
            optimizer_from_flat(self.opt_d, "opt_d", tensors, meta["opt_d"])
            self.sched_d.load_state_dict(meta["sched_d"])
        rs = {k.removeprefix("round_start."): v for k, v in tensors.items()
              if k.startswith("round_start.")}
        self.round_start = rs or None
        set_rng_state(tensors, meta["rng"])
        self.step = int(meta["step"])
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self.last_good = path

    # -- online pseudo labels ----------------------------------------------------------
    @torch.no_grad()
    def _refresh_pseudo_labels(self, from_state: Mapping[str, Tensor] | None = None) -> None:
        """Outputs of the network at the start of this round become the targets."""
        net = self.model
        if from_state is not None:
            net = copy.deepcopy(self.model)
            net.load_state_dict(dict(from_state))
        else:
            self.round_start = {k: v.detach().cpu().clone() for k, v in
                                self.model.state_dict().items()}
        was_training = net.training
        net.eval()
        bgs, rains = [], []
        for i in tqdm(range(len(self.dataset)), desc="pseudo labels", leave=False,
                      disable=not self.progress):
            clip = {k: v.to(self.device) for k, v in self.dataset.full_clip(i).items()}
            out = net(clip["frames"], clip.get("events"))
            bgs.append(out.background[0].clamp(0, 1).cpu().numpy().astype(np.float16))
            rains.append(out.rain[0].cpu().numpy().astype(np.float16))
        net.train(was_training)
        self.dataset.set_pseudo_labels(bgs, rains)

    # -- validation / logging ----------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM (dB / 0-1) of the derained target vs the clean topic on the val bags."""
        if self.val is None:
            return {}
        net = self.model
        was_training = net.training
        net.eval()
        p, s, p_in, s_in = [], [], [], []
        first = None
        for i in range(len(self.val)):
            clip = {k: v.to(self.device) for k, v in self.val.full_clip(i).items()}
            out = net(clip["frames"], clip.get("events"))
            b = out.background.clamp(0, 1)
            rainy = clip["frames"][:, CLIP_TARGET]
            p.append(psnr(b, clip["clean"]).item())
            s.append(ssim(b, clip["clean"]).item())
            p_in.append(psnr(rainy, clip["clean"]).item())
            s_in.append(ssim(rainy, clip["clean"]).item())
            if first is None:
                first = (clip, out)
        net.train(was_training)
        if first is not None:
            self._log_images("val", *first)
        return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)),
                "input_psnr": float(np.mean(p_in)), "input_ssim": float(np.mean(s_in))}

    def _log_images(self, tag: str, batch: Mapping[str, Tensor], out: Any) -> None:
        if self.writer is None:
            return
        rainy = batch["frames"][0, CLIP_TARGET].float().cpu()
        b = out.background[0].detach().float().clamp(0, 1).cpu()
        r = out.rain[0].detach().float().abs().cpu()
        r = (r / r.max().clamp_min(1e-6)).clamp(0, 1)
        panels = [rainy, b, r]
        if "events" in batch:
            panels.append(events_to_rgb(batch["events"][0].cpu()))
        panels = [x.expand(3, -1, -1) if x.shape[0] == 1 else x for x in panels]
        self.writer.add_image(f"{tag}/rainy|derained|rain|events", torch.cat(panels, dim=2),
                              self.step)

    def _open_writer(self) -> None:
        if not self.dist.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra ("train")
            _log.warning("tensorboard is not installed: no TensorBoard logs")
            return
        self.writer = SummaryWriter(str(self.out / "tb"))

    # -- the loop ----------------------------------------------------------------------
    def _check_finite(self, losses: Mapping[str, Tensor], total: Tensor, what: str) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(total).item() else 1.0], device=self.device)
        if self.dist.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item() > 0:
            names = [k for k, v in losses.items() if not torch.isfinite(v).item()]
            where = (f"the last good checkpoint is {self.last_good}" if self.last_good
                     else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"{what} loss became non-finite at step {self.step + 1}"
                f" (terms: {', '.join(names) or 'total'}; on this or another rank); "
                f"training stopped, {where}")

    def _batches(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        while True:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.start = offset * cfg.data.batch_size
            self.dataset.set_epoch(epoch)
            loader = DataLoader(self.dataset, batch_size=cfg.data.batch_size,
                                sampler=self.sampler, num_workers=cfg.data.num_workers,
                                drop_last=True, pin_memory=self.device.type == "cuda")
            yield from loader

    def _train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        gen = torch.Generator().manual_seed(
            cfg.run.seed * 1_000_003 + self.step * 101 + self.dist.rank)
        if self.disc is not None:
            self.disc.requires_grad_(False)
        total, terms, out = self.g_module(batch, gen)
        self._check_finite(terms, total, "generator")
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), cfg.optim.grad_clip)
        self.opt_g.step()
        self.sched_g.step()
        logged = {k: float(v.detach()) for k, v in terms.items()}
        logged["total"] = float(total.detach())
        if self.disc is not None and self.d_module is not None and self.opt_d is not None:
            self.disc.requires_grad_(True)
            real = batch["unpaired"]
            fake = out.background.detach()
            scores = self.d_module(torch.cat([real, fake]))
            d_loss = hinge_d_loss(scores[: len(real)], scores[len(real):])
            self._check_finite({"discriminator": d_loss}, d_loss, "discriminator")
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if self.sched_d is not None:
                self.sched_d.step()
            logged["discriminator"] = float(d_loss.detach())
        self._last_out = (batch, out)
        return logged

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``run.steps``; returns the final losses, validation and file paths.

        ``stop_after`` ends the run early at that step with a checkpoint and no export
        (an interruption, for resume tests and time-boxed jobs). Raises
        :class:`NonFiniteLossError` when a loss turns NaN/inf (the last good
        checkpoint stays as it was).
        """
        t_start = time.monotonic()
        try:
            self._build()
            return self._fit(t_start, stop_after)
        finally:
            if self.writer is not None:
                self.writer.close()
            if self._own_group and dist.is_initialized():
                dist.destroy_process_group()

    def _fit(self, t_start: float, stop_after: int | None) -> TrainResult:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.resume:
            latest = find_latest(self.ckpt_dir)
            if latest is None:
                raise TrainingError(f"--resume: no checkpoint in {self.ckpt_dir}")
            self._restore(latest)
        elif self.dist.main and find_latest(self.ckpt_dir) is not None:
            raise TrainingError(f"{self.out} already holds checkpoints: pass --resume to "
                                "continue, or choose another --out")
        if self.dist.main:
            (self.out / "config.json").write_text(json.dumps(
                {"config": cfg.to_dict(), "bags": [str(b) for b in self.bags],
                 "init": str(self.init) if self.init else None, "world": self.dist.world},
                indent=1))
        self._open_writer()
        total_steps = cfg.run.steps
        labels_round = -1
        if cfg.mode == "online":
            o = cfg.losses.online
            total_steps = min(total_steps, o.rounds * o.steps_per_round)
            # Resumed mid-round: the pseudo labels come from the round's starting weights.
            if self.step % o.steps_per_round != 0 and self.round_start is not None:
                self._refresh_pseudo_labels(self.round_start)
                labels_round = self.step // o.steps_per_round
        bar = tqdm(total=total_steps, initial=self.step, desc=f"train {cfg.mode}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        logged: dict[str, float] = {}
        val: dict[str, float] = {}
        batches: Iterator[dict[str, Any]] | None = None
        end = total_steps if stop_after is None else min(stop_after, total_steps)
        self._clock = time.monotonic()
        try:
            while self.step < end:
                if cfg.mode == "online":
                    this_round = self.step // cfg.losses.online.steps_per_round
                    if this_round != labels_round:
                        self._refresh_pseudo_labels()
                        labels_round = this_round
                        batches = None  # a fresh loader sees the new labels
                if batches is None:
                    batches = self._batches()
                logged = self._train_step(next(batches))
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{logged['total']:.4f}")
                self._after_step(logged)
                if self.step % cfg.run.val_every == 0 and self.val is not None:
                    val = self.validate()
                    self._log_scalars("val", val)
                out_of_time = self._out_of_time()
                if self.step % cfg.run.ckpt_every == 0 or self.step == end or out_of_time:
                    self.save()
                if out_of_time:
                    total_steps = self.step  # the time budget is the run's length
                    break
        finally:
            bar.close()
            self.train_seconds, self._clock = self._elapsed(), None
        if self.step < total_steps:  # stopped early: resumable, nothing exported
            return TrainResult(self.step, logged, val, self.last_good, None,
                               time.monotonic() - t_start)
        if self.val is not None and not val:
            val = self.validate()
            self._log_scalars("val", val)
        export = self._export(logged, val, time.monotonic() - t_start)
        return TrainResult(self.step, logged, val, self.last_good, export,
                           time.monotonic() - t_start)

    def _after_step(self, logged: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        cfg = self.cfg
        if self.step % cfg.run.log_every == 0:
            self._log_scalars("train", logged)
            self.writer.add_scalar("train/lr", self.opt_g.param_groups[0]["lr"], self.step)
        if self.step % cfg.run.image_every == 0 and getattr(self, "_last_out", None):
            self._log_images("train", *self._last_out)

    def _log_scalars(self, tag: str, values: Mapping[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{tag}/{k}", v, self.step)

    def _export(self, losses: Mapping[str, float], val: Mapping[str, float],
                seconds: float) -> Path | None:
        if not self.dist.main:
            return None
        provenance = self._provenance(losses, val, seconds)
        path = save_checkpoint(self.model, self.out / "export" / self.model.config.name,
                               provenance)
        if self.export_to is not None:
            save_checkpoint(self.model, self.export_to, provenance)
        return path

    def _provenance(self, losses: Mapping[str, float], val: Mapping[str, float],
                    seconds: float) -> dict[str, Any]:
        """What the exported checkpoint records about how it was trained."""
        cfg = self.cfg
        return {
            "trainer": "derain_training",
            "mode": cfg.mode,
            "arrangement": self.model.input_contract.arrangement,
            "steps": self.step,
            "bags": [b.name for b in self.bags],
            "clean_bags": [Path(b).name for b in cfg.data.clean_bags],
            "val_bags": [Path(b).name for b in cfg.data.val_bags],
            "init": str(self.init) if self.init else None,
            "world_size": self.dist.world,
            "device": str(self.device),
            "seconds": round(seconds, 1),
            "final_losses": dict(losses),
            "validation": dict(val),
            "config": cfg.to_dict(),
        }
