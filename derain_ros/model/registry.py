"""Named network sizes.

Each size is a registered function returning its :class:`ModelConfig`; the
frames-only twin of each size is registered beside it (same config,
``use_events=False``). :func:`derain_ros.model.factory.create_model` builds a network
from a name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from derain_ros.errors import ModelError
from derain_ros.model.config import ModelConfig

#: Folder of the shipped weights (``NAME.safetensors`` + ``NAME.json``), produced by training.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Size used when none is named (real-time on a CPU).
DEFAULT_MODEL = "derain_tiny"

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


class UnknownModelError(ModelError):
    """A model name is not registered."""


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a size: ``fn()`` returns its config; the size's name is ``config.name``."""
    name = fn().name
    if name in _REGISTRY:
        raise ModelError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def _register_with_frames_twin(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a size and its frames-only twin ``NAME_frames``."""
    register_model(fn)

    def twin() -> ModelConfig:
        cfg = fn()
        return cfg.replace(name=f"{cfg.name}_frames", use_events=False)

    register_model(twin)
    return fn


@_register_with_frames_twin
def derain_tiny() -> ModelConfig:
    """Real-time on a 2-core CPU (>= 15 fps at 346x260, batch 1, 2 threads).

    Narrow (16/24/32), a half-resolution working grid (the full-resolution output comes
    from depth-to-space), no residual block in the encoders' first level, and plain
    convs for the fusion and refinement: ~1.4 GMAC per 346x260 clip.
    """
    return ModelConfig(
        name="derain_tiny", widths=(16, 24, 32), blocks=(0, 1, 1), decoder_blocks=(1, 1, 1),
        head_chans=8, fusion_blocks=0, refine_blocks=0, internal_scale=2, reduction=4,
    )


@_register_with_frames_twin
def derain_base() -> ModelConfig:
    """The larger size: what a GPU runs in real time and a lent GPU can train in minutes.

    Twice tiny's width (32/48/64), residual blocks at every level and in the fusion and
    refinement, on the same half-resolution working grid. The paper-sized network
    (32/64/96 at full resolution, ~68 GMAC per 346x260 clip) could not be trained on the
    machines here; this one costs about a fifth of it.
    """
    return ModelConfig(
        name="derain_base", widths=(32, 48, 64), blocks=(1, 2, 2), decoder_blocks=(1, 2, 2),
        head_chans=16, fusion_blocks=1, refine_blocks=1, internal_scale=2, reduction=4,
    )


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of a registered size, with overrides applied (validated)."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None
    cfg = fn()
    return cfg.replace(**overrides) if overrides else cfg


def default_checkpoint_path(name: str = DEFAULT_MODEL, in_chans: int = 3) -> Path:
    """Where the shipped weights of ``name`` live; the file may not exist (yet).

    ``weights/NAME.safetensors`` for colour frames, ``weights/NAME_gray.safetensors``
    for grayscale (``in_chans=1``, e.g. a DAVIS's own frames).
    """
    model_config(name)  # raises UnknownModelError for a bad name
    suffix = "_gray" if in_chans == 1 else ""
    return WEIGHTS_DIR / f"{name}{suffix}.safetensors"


__all__ = [
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "UnknownModelError",
    "default_checkpoint_path",
    "list_models",
    "model_config",
    "register_model",
]
