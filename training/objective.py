"""The generator-side objective of each mode, as one ``nn.Module`` DDP can wrap.

Why a module: the NLCL projection head is trained with the network, so the network
and every trainable loss head must sit under one DDP wrapper for their gradients to be
averaged across ranks. The discriminator (trained by its own optimiser) and the frozen
reference network of the ``anchor`` term are held outside the module's parameters.

A batch is the dict :class:`derain_training.data.ClipDataset` yields, stacked:
``frames [N, 3, C, h, w]``, ``events [N, 2, bins, h, w]`` (event models), ``clean`` /
``rain [N, C, h, w]`` (supervised), ``unpaired [N, C, h, w]`` (unsupervised GAN prior),
``pseudo_background`` / ``other_rain [N, C, h, w]`` (online).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain_ros.model import CLIP_TARGET
from derain_ros.model.derain_net import DerainNet, DerainOutput
from derain_training.config import TrainConfig
from derain_training.errors import DatasetError
from derain_training.losses import (
    CONTRAST_TERMS,
    NonLocalContrast,
    charbonnier,
    cross_modal_contrastive,
    hinge_g_loss,
    kl_rain_prior,
    reconstruction_loss,
    ssim_loss,
)

__all__ = ["Objective", "active_weights"]


def active_weights(cfg: TrainConfig) -> dict[str, float]:
    """The non-zero loss weights of ``cfg.mode`` (loss-term name -> weight)."""
    block = getattr(cfg.losses, cfg.mode)
    skip = {"charbonnier_eps", "rounds", "steps_per_round", "lr_decay"}
    return {k: float(v) for k, v in vars(block).items() if k not in skip and float(v) != 0.0}


class Objective(nn.Module):
    """Weighted sum of the active loss terms of one mode.

    ``forward(batch)`` returns ``(total, terms, output)``: the weighted scalar, the
    unweighted terms (for logging), and the network output.
    """

    def __init__(self, model: DerainNet, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.mode = cfg.mode
        self.target_index = CLIP_TARGET
        self.weights = active_weights(cfg)
        self.eps = cfg.losses.supervised.charbonnier_eps
        if not model.config.use_events:
            dropped = [k for k in CONTRAST_TERMS if k in self.weights]
            for k in dropped:  # a frames-only network has no event features to contrast
                self.weights.pop(k)
            self.dropped_terms = dropped
        else:
            self.dropped_terms = []
        n = cfg.nlcl
        self.nlcl = None
        if self.mode == "unsupervised" and ({"nlcl", "nlcl_rain"} & set(self.weights)):
            self.nlcl = NonLocalContrast(
                model.config.in_chans, patch=n.patch, window=n.window, positives=n.positives,
                negatives=n.negatives, dim=n.dim, hidden=n.hidden, temperature=n.temperature,
                anchors=n.anchors, stride=n.stride,
            )
        # Held in lists so they are not registered as sub-modules (not trained, not synced).
        self._disc: list[Callable[[Tensor], Tensor]] = []
        self._reference: list[DerainNet] = []

    def set_discriminator(self, disc: Callable[[Tensor], Tensor]) -> None:
        """The critic whose scores give the adversarial term (frozen during the G step)."""
        self._disc[:] = [disc]

    def set_reference(self, model: DerainNet) -> None:
        """A frozen copy of the starting network, for the ``anchor`` term."""
        self._reference[:] = [model]

    def _need(self, batch: Mapping[str, Tensor], key: str, why: str) -> Tensor:
        if key not in batch:
            raise DatasetError(f"the {self.mode} loss {why!r} needs {key!r} in the batch; "
                               "the bags/dataset do not provide it")
        return batch[key]

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None,
                ) -> tuple[Tensor, dict[str, Tensor], DerainOutput]:
        frames = batch["frames"]
        events = batch.get("events") if self.model.config.use_events else None
        out = self.model(frames, events)
        b, r = out.background, out.rain
        rainy = frames[:, self.target_index]
        w = self.weights
        terms: dict[str, Tensor] = {}
        if "reconstruction" in w:
            terms["reconstruction"] = reconstruction_loss(r, b, rainy)
        if self.mode == "supervised":
            if "charbonnier" in w:
                terms["charbonnier"] = charbonnier(b, self._need(batch, "clean", "charbonnier"),
                                                   self.eps)
            if "ssim" in w:
                terms["ssim"] = ssim_loss(b, self._need(batch, "clean", "ssim"))
            if "rain" in w:
                terms["rain"] = charbonnier(r, self._need(batch, "rain", "rain"), self.eps)
        elif self.mode == "unsupervised":
            if "adversarial" in w:
                if not self._disc:
                    raise RuntimeError("adversarial loss without a discriminator")
                terms["adversarial"] = hinge_g_loss(self._disc[0](b))
            if out.features is not None and any(k in w for k in CONTRAST_TERMS):
                for k, v in cross_modal_contrastive(out.features).items():
                    if k in w:
                        terms[k] = v
            if self.nlcl is not None:
                bg_term, rain_term = self.nlcl(b, r, generator)
                if "nlcl" in w:
                    terms["nlcl"] = bg_term
                if "nlcl_rain" in w:
                    terms["nlcl_rain"] = rain_term
        else:  # online
            if "pseudo_l1" in w:
                terms["pseudo_l1"] = F.l1_loss(
                    b, self._need(batch, "pseudo_background", "pseudo_l1"))
            if "kl_rain" in w:
                terms["kl_rain"] = kl_rain_prior(r, self._need(batch, "other_rain", "kl_rain"))
        if "anchor" in w:  # supervised (adaptation) and unsupervised alike
            if not self._reference:
                raise RuntimeError("anchor loss without a reference network (--init)")
            with torch.no_grad():
                ref = self._reference[0](frames, events).background
            terms["anchor"] = F.l1_loss(b, ref)
        total = sum((w[k] * v for k, v in terms.items()), start=b.new_zeros(()))
        return total, terms, out
