"""Loss functions of the three training modes.

- supervised: :func:`charbonnier` and :func:`ssim_loss` on the background ``B``,
  :func:`charbonnier` on the rain layer ``R``;
- unsupervised (ICCV 2023 recipe): :func:`reconstruction_loss` ``L1(R + B, rainy)``, a
  hinge GAN on ``B`` with a :class:`PatchDiscriminator` (:func:`hinge_d_loss`,
  :func:`hinge_g_loss`), the cross-modal contrastive terms of
  :func:`cross_modal_contrastive`, and the non-local patch contrast
  :class:`NonLocalContrast` (NLCL);
- online (AAAI 2022 online update): L1 to the previous round's output plus
  :func:`kl_rain_prior`.

Every function takes ``[N, C, H, W]`` tensors and returns a scalar; the trainer weighs
and switches them from the YAML config. Written for this project from the papers'
descriptions (``docs/background.md`` §1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain_ros.eval.metrics import ssim

__all__ = [
    "CONTRAST_TERMS",
    "NonLocalContrast",
    "PatchDiscriminator",
    "charbonnier",
    "cross_modal_contrastive",
    "hinge_d_loss",
    "hinge_g_loss",
    "kl_rain_prior",
    "reconstruction_loss",
    "soft_histogram",
    "ssim_loss",
]


# -- pixel losses ----------------------------------------------------------------------
def charbonnier(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier (smooth L1) distance ``mean(sqrt((x - y)^2 + eps^2))``."""
    return torch.sqrt((x - y).pow(2) + eps * eps).mean()


def ssim_loss(x: Tensor, y: Tensor) -> Tensor:
    """``1 - SSIM(x, y)`` for images in [0, 1] (see :func:`derain_ros.eval.metrics.ssim`)."""
    return 1.0 - ssim(x, y)


def reconstruction_loss(rain: Tensor, background: Tensor, rainy: Tensor) -> Tensor:
    """``L1(R + B, rainy)``: the two layers must add up to the observed rainy frame."""
    return F.l1_loss(rain + background, rainy)


# -- adversarial prior -----------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """PatchGAN critic: one realness score per overlapping patch (~70 px receptive field).

    4x4 convolutions (stride 2 for the first ``layers``, then two stride-1 layers), leaky
    ReLU, spectral normalisation for a stable hinge game (no batch statistics, so DDP
    ranks and batch sizes do not change its output).
    """

    def __init__(self, in_chans: int = 3, width: int = 32, layers: int = 3,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        mods: list[nn.Module] = []
        prev = in_chans
        for i in range(layers):
            out = width * 2 ** min(i, 3)
            mods += [sn(nn.Conv2d(prev, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            prev = out
        out = width * 2 ** min(layers, 3)
        mods += [sn(nn.Conv2d(prev, out, 3, stride=1, padding=1)), nn.LeakyReLU(0.2)]
        mods += [sn(nn.Conv2d(out, 1, 3, stride=1, padding=1))]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``[N, 1, H / 2**layers, W / 2**layers]`` (positive: looks clean/real)."""
        return self.net(x)


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Discriminator hinge loss ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_g_loss(fake_scores: Tensor) -> Tensor:
    """Generator hinge loss ``-mean(D(fake))``."""
    return -fake_scores.mean()


# -- cross-modal contrast (ICCV 2023) --------------------------------------------------
#: Term name -> (anchor, other, pull?) over the four per-scale feature maps. "Pull" terms
#: are ``1 - cos`` (drive the two towards the same direction), "push" terms are
#: ``relu(cos)`` (drive them apart: mutually exclusive channel support).
CONTRAST_TERMS: dict[str, tuple[str, str, bool]] = {
    "frame_rain_event_rain": ("frame_rain", "event_rain", True),
    "frame_rain_event_background": ("frame_rain", "event_background", False),
    "frame_rain_frame_background": ("frame_rain", "frame_background", False),
    "event_rain_event_background": ("event_rain", "event_background", False),
}


def _cosine_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel cosine similarity along channels of two ``[N, C, h, w]`` maps."""
    return F.cosine_similarity(a, b, dim=1, eps=1e-6)


def cross_modal_contrastive(features: Sequence[object]) -> dict[str, Tensor]:
    """The four cross-modal affinity terms, averaged over pixels and scales.

    Args:
        features: one record per encoder scale with attributes ``frame_rain``,
            ``frame_background``, ``event_rain``, ``event_background`` (each
            ``[N, C_s, h_s, w_s]``), i.e. ``DerainOutput.features``.

    Returns:
        ``{term: loss}`` for every name in :data:`CONTRAST_TERMS`. Pull terms lie in
        [0, 2] and push terms in [0, 1]; all are 0 for perfectly aligned rain features
        whose rain and background features are orthogonal.

    Why cosine affinities per pixel: the fusion module adds and subtracts these maps
    channel by channel (rain stream = frame rain + event rain - event background), so
    they already share one channel space per scale and need no projection head.
    """
    if not features:
        raise ValueError("cross_modal_contrastive needs the features of at least one scale")
    out: dict[str, Tensor] = {}
    for name, (a_name, b_name, pull) in CONTRAST_TERMS.items():
        per_scale = []
        for scale in features:
            cos = _cosine_map(getattr(scale, a_name), getattr(scale, b_name))
            per_scale.append((1.0 - cos).mean() if pull else F.relu(cos).mean())
        out[name] = torch.stack(per_scale).mean()
    return out


# -- NLCL: non-local self-similar patch contrast ---------------------------------------
class NonLocalContrast(nn.Module):
    """Non-local contrastive loss of NLCL (Chang et al., CVPR 2022), on image patches.

    For ``anchors`` random anchor patches (``patch`` x ``patch`` px) of the background,
    the ``positives`` most self-similar background patches (smallest pixel distance)
    inside a ``window`` px neighbourhood are the positives and ``negatives`` random rain
    patches are the negatives. Patches are flattened, projected by a 2-layer MLP to
    ``dim`` and L2-normalised; the loss is InfoNCE with ``temperature``, averaged over
    anchor/positive pairs. The asymmetric counterpart (rain anchors, rain positives,
    background negatives) is returned separately so the two can be weighed apart.

    Candidate patches lie on a grid of ``stride`` px (so the search is a fixed number of
    gathers, not a sliding search). The MLP is trained with the generator.
    """

    def __init__(self, in_chans: int = 3, *, patch: int = 16, window: int = 40,
                 positives: int = 8, negatives: int = 128, dim: int = 256, hidden: int = 256,
                 temperature: float = 0.07, anchors: int = 16, stride: int = 4) -> None:
        super().__init__()
        if window < patch or patch < 1 or stride < 1 or positives < 1 or negatives < 1:
            raise ValueError("NLCL needs window >= patch >= 1, stride, positives, negatives >= 1")
        self.patch, self.window, self.stride = patch, window, stride
        self.positives, self.negatives, self.anchors = positives, negatives, anchors
        self.temperature = temperature
        self.proj = nn.Sequential(
            nn.Linear(in_chans * patch * patch, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def _embed(self, patches: Tensor) -> Tensor:
        return F.normalize(self.proj(patches), dim=-1)

    def _one_side(self, anchor_img: Tensor, other_img: Tensor,
                  generator: torch.Generator | None) -> Tensor:
        n = anchor_img.shape[0]
        h, w = anchor_img.shape[-2:]
        p, s = self.patch, self.stride
        gh, gw = (h - p) // s + 1, (w - p) // s + 1
        radius = min((self.window - p) // 2 // s, (gh - 1) // 2, (gw - 1) // 2)
        if radius < 1 or h < p or w < p:
            return anchor_img.new_zeros(())
        pa = F.unfold(anchor_img, p, stride=s).transpose(1, 2)  # [N, gh*gw, D]
        po = F.unfold(other_img, p, stride=s).transpose(1, 2)
        dev = anchor_img.device
        # Anchors where the whole window lies inside the grid.
        ay = torch.randint(radius, gh - radius, (n, self.anchors), generator=generator).to(dev)
        ax = torch.randint(radius, gw - radius, (n, self.anchors), generator=generator).to(dev)
        offs = torch.arange(-radius, radius + 1, device=dev)
        oy, ox = torch.meshgrid(offs, offs, indexing="ij")
        keep = (oy != 0) | (ox != 0)
        oy, ox = oy[keep], ox[keep]  # [M]
        cand = (ay[..., None] + oy) * gw + (ax[..., None] + ox)  # [N, A, M]
        anchor_idx = ay * gw + ax  # [N, A]
        batch = torch.arange(n, device=dev)[:, None]
        anchors = pa[batch, anchor_idx]  # [N, A, D]
        cands = pa[batch[..., None], cand]  # [N, A, M, D]
        with torch.no_grad():
            dist = (cands - anchors[:, :, None]).pow(2).sum(-1)
            k = min(self.positives, dist.shape[-1])
            pos_idx = dist.topk(k, dim=-1, largest=False).indices  # [N, A, k]
        positives = torch.gather(cands, 2, pos_idx[..., None].expand(-1, -1, -1, cands.shape[-1]))
        n_neg = min(self.negatives, po.shape[1])
        neg_idx = torch.randint(0, po.shape[1], (n, n_neg), generator=generator).to(dev)
        negatives = po[batch, neg_idx]  # [N, n_neg, D]

        za, zp, zn = self._embed(anchors), self._embed(positives), self._embed(negatives)
        t = self.temperature
        pos_logits = (za[:, :, None] * zp).sum(-1) / t  # [N, A, k]
        neg_logits = torch.einsum("nad,nmd->nam", za, zn) / t  # [N, A, n_neg]
        neg_lse = torch.logsumexp(neg_logits, dim=-1, keepdim=True).expand_as(pos_logits)
        denom = torch.logaddexp(pos_logits, neg_lse)
        return (denom - pos_logits).mean()

    def forward(self, background: Tensor, rain: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(background term, rain term)`` for ``[N, C, H, W]`` layers.

        A crop smaller than two grid steps around a patch gives zeros (nothing to contrast).
        """
        return (self._one_side(background, rain, generator),
                self._one_side(rain, background, generator))


# -- online update: KL rain prior (AAAI 2022) ------------------------------------------
def soft_histogram(x: Tensor, bins: int = 32, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Differentiable histogram ``[N, bins]`` of each image's values (Gaussian kernel binning).

    Values are clamped to ``[lo, hi]``; each row sums to 1.
    """
    flat = x.flatten(1).clamp(lo, hi)
    centres = torch.linspace(lo, hi, bins, device=x.device, dtype=x.dtype)
    width = (hi - lo) / (bins - 1)
    weights = torch.exp(-0.5 * ((flat[..., None] - centres) / width) ** 2)
    hist = weights.sum(dim=1)
    return hist / hist.sum(dim=1, keepdim=True).clamp_min(1e-12)


def kl_rain_prior(rain: Tensor, other_rain: Tensor, bins: int = 32, eps: float = 1e-6) -> Tensor:
    """``KL(p_rain || p_other)`` of the rain layers' intensity distributions.

    The online update of Wang et al. (AAAI 2022) asks the rain layer of each image to
    follow the rain of another real image; comparing intensity histograms (not pixels)
    makes the prior independent of where the streaks are. ``other_rain`` is a target:
    no gradient flows into it.
    """
    p = soft_histogram(rain, bins) + eps
    q = soft_histogram(other_rain.detach(), bins) + eps
    p, q = p / p.sum(1, keepdim=True), q / q.sum(1, keepdim=True)
    return (p * (p.log() - q.log())).sum(dim=1).mean()
