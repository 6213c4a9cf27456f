"""``lens_drops``: drops on the lens or the windscreen, refracting the scene.

References: Qian et al., "Attentive generative adversarial network for raindrop removal
from a single image" (CVPR 2018); Porav, Bruls and Newman, "I can see clearly now:
image restoration via de-raining" (ICRA 2019: drops on a screen in front of the
camera, defocused); ViMP-Net's VRDS (Wu et al., ACM MM 2023: drop masks in video);
background.md section 5 (d). The rendering is :class:`~derain_ros.sim.lens.LensDrops`
(each drop shows a blurred, inverted, widened view of the scene around it, darker at
its rim, with a soft defocused outline); this family draws its parameters per clip:
6-40 drops (more with intensity), radii 1.5-12 % of the shorter side, sliding at up to
2-20 px/s, 0-30 % of them landing during the first 1-5 s, and a refraction blur of
1-4 px. ``mask`` gives the drops' alpha for the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from derain_ros.sim.families.base import FamilyParams, RainFamily, check_ranges, lerp
from derain_ros.sim.lens import LensDrops, LensView

__all__ = ["LensDropParams", "LensDropRain"]


@dataclass(frozen=True, slots=True)
class LensDropParams(FamilyParams):
    """``count`` drops; ``radius_frac`` (min, max) of min(W, H); ``slide_px_s`` (min, max);
    ``appear_frac`` of the drops land during ``[0, appear_window_s]``; ``blur_px``:
    at least this much blur inside a drop (defocus)."""

    count: int = 12
    radius_frac: tuple[float, float] = (0.02, 0.07)
    slide_px_s: tuple[float, float] = (0.0, 8.0)
    appear_frac: float = 0.2
    appear_window_s: float = 3.0
    blur_px: float = 2.0

    def __post_init__(self) -> None:
        check_ranges(self, {"count": (0, 200), "radius_frac": (0.005, 0.3),
                            "slide_px_s": (0.0, 100.0), "appear_frac": (0.0, 1.0),
                            "appear_window_s": (0.01, 60.0), "blur_px": (0.0, 10.0)})


class LensDropRain(RainFamily[LensDropParams]):
    """Refracting, sliding, landing drops on the lens (see the module)."""

    name = "lens_drops"
    references = ("Qian et al. CVPR 2018; Porav et al. ICRA 2019; ViMP-Net (Wu et al. ACM MM "
                  "2023); background.md section 5 (d)")
    Params = LensDropParams

    def __init__(self, params: LensDropParams, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.drops = LensDrops(params.count, self.width, self.height, kw["rng"],
                               radius_frac=params.radius_frac, slide_px_s=params.slide_px_s,
                               appear_frac=params.appear_frac,
                               appear_window_s=params.appear_window_s)
        self._blur = max(params.blur_px, 1.0)

    @classmethod
    def sample_params(cls, rng: np.random.Generator,
                      intensity: float | None = None) -> LensDropParams:
        u = float(rng.random()) if intensity is None else float(intensity)
        lo = float(rng.uniform(0.015, 0.035))
        return LensDropParams(
            count=round(lerp(u, 6, 40, log=True) * float(rng.uniform(0.8, 1.2))),
            radius_frac=(lo, float(lo + rng.uniform(0.02, lerp(u, 0.04, 0.085)))),
            slide_px_s=(0.0, float(rng.uniform(2.0, 20.0))),
            appear_frac=float(rng.uniform(0.0, 0.3)),
            appear_window_s=float(rng.uniform(1.0, 5.0)), blur_px=float(rng.uniform(1.0, 4.0)))

    def _view(self, t_s: float) -> LensView:
        view = self.drops.at(t_s)
        if view.blur_sigma < self._blur:
            from dataclasses import replace
            view = replace(view, blur_sigma=self._blur)
        return view

    def render(self, clean: np.ndarray, t0_s: float, t1_s: float,
               environment: float) -> np.ndarray:
        return self._view(0.5 * (t0_s + t1_s)).apply(clean)

    def mask(self, t_s: float) -> np.ndarray | None:
        return self.drops.at(t_s).mask

    @property
    def n_drops(self) -> int:
        return self.drops.count
