"""The one factory every caller uses: :func:`create_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from derain_ros.model.checkpoint import load_weights
from derain_ros.model.derain_net import DerainNet
from derain_ros.model.registry import DEFAULT_MODEL, default_checkpoint_path, model_config


def create_model(name: str = DEFAULT_MODEL, *, pretrained: bool = False,
                 checkpoint: str | Path | None = None, **overrides: Any) -> DerainNet:
    """Build a network by name.

    Args:
        name: a registered size (see :func:`list_models`).
        pretrained: load the shipped weights (:func:`default_checkpoint_path`); raises
            :class:`~derain_ros.model.checkpoint.CheckpointNotFoundError` when absent.
        checkpoint: load these weights instead (implies pretrained).
        **overrides: :class:`ModelConfig` fields to change (e.g. ``in_chans=1``). With
            weights, the checkpoint's config must equal the resulting config, else
            :class:`~derain_ros.model.checkpoint.CheckpointConfigMismatchError`.

    Returns:
        The network in eval mode when weights were loaded, train mode otherwise.
    """
    cfg = model_config(name, **overrides)
    model = DerainNet(cfg)
    if pretrained or checkpoint is not None:
        path = checkpoint if checkpoint is not None else default_checkpoint_path(name, cfg.in_chans)
        load_weights(model, path)
        model.eval()
    return model


__all__ = ["create_model"]
